"""Visibility rules, as SQL predicates that every query about deals includes.

Accounts and contacts: every mapped user. An opportunity (and its room, transcript and
timeline): its owner, its deal team, everyone above the owner in the manager chain, and admins.
Hidden rows are filtered in SQL, so no caller can forget the rule and no count leaks them.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, exists, false, select, true

from crm_store.actors import Actor
from crm_store.models import DealTeamMember, Opportunity, User


def reporting_tree(user_id: int, name: str = "reporting_tree") -> Select[tuple[int]]:
    """Ids of `user_id` and everyone below them. UNION (not ALL) ends even on a cyclic chain.

    Give a distinct `name` when a statement needs two trees (SQL wants distinct CTE names).
    """
    tree = select(User.id.label("id")).where(User.id == user_id).cte(name, recursive=True)
    tree = tree.union(select(User.id).where(User.manager_id == tree.c.id))
    return select(tree.c.id)


def opportunity_visible(actor: Actor) -> ColumnElement[bool]:
    if actor.is_admin:
        return true()
    if actor.user_id is None:
        return false()
    on_team = exists().where(
        DealTeamMember.opportunity_id == Opportunity.id, DealTeamMember.user_id == actor.user_id
    )
    return Opportunity.owner_id.in_(reporting_tree(actor.user_id)) | on_team


def directory_visible(actor: Actor) -> ColumnElement[bool]:
    """Accounts and contacts: visible to every mapped user."""
    return true() if actor.is_mapped else false()
