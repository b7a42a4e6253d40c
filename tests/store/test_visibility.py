"""Visibility is enforced in the store's queries: owner, deal team, manager chain, admins."""

from __future__ import annotations

import pytest

from crm_store import Actor, Store
from crm_store.deals import account_card, pipeline, recent_entries
from tests.org import Org, utc_today


async def actor(store: Store, who: str) -> Actor:
    return await store.actor_for(email=Org.email(who))


SEES_ACME_RENEWAL = ["rep_a", "se", "mgr1", "vp", "admin"]
BLIND_TO_ACME_RENEWAL = ["rep_b", "rep_c", "mgr2", "loner"]


@pytest.mark.parametrize("who", SEES_ACME_RENEWAL)
async def test_owner_team_manager_chain_and_admin_see_the_deal(store: Store, org: Org, who: str) -> None:
    me = await actor(store, who)
    assert await store.opportunity(me, org.deals["acme_renewal"]) is not None
    found = await store.find_opportunities(me, "acme renewal")
    assert org.deals["acme_renewal"] in [f.row.id for f in found]


@pytest.mark.parametrize("who", BLIND_TO_ACME_RENEWAL)
async def test_others_cannot_find_open_or_list_the_deal(store: Store, org: Org, who: str) -> None:
    me = await actor(store, who)
    deal_id = org.deals["acme_renewal"]
    assert await store.opportunity(me, deal_id) is None
    assert deal_id not in [f.row.id for f in await store.find_opportunities(me, "ACME Renewal 2027")]
    assert await recent_entries(store, me, deal_id) == []
    card = await account_card(store, me, org.accounts["acme"])
    assert card is not None and deal_id not in [o.id for o in card.open_deals]


async def test_manager_of_a_different_branch_does_not_see_it(store: Store, org: Org) -> None:
    max_ = await actor(store, "mgr2")
    assert await store.opportunity(max_, org.deals["globex_expansion"]) is not None  # Cara reports to Max
    assert await store.opportunity(max_, org.deals["acme_pilot"]) is None  # Ben reports to Mona


async def test_pipeline_totals_never_include_hidden_deals(store: Store, org: Org) -> None:
    rita = await actor(store, "rep_a")
    # Rita asks for Ben's pipeline: Ben's deal is not hers to see, so it is empty, not a count.
    data = await pipeline(store, rita, org.users["rep_b"], "user", utc_today())
    assert data.lines == [] and data.totals == {}
    victor = await actor(store, "vp")
    team = await pipeline(store, victor, org.users["vp"], "team", utc_today())
    assert sum(line.count for line in team.lines) == 4  # Rita's 2 open, Ben's 1, Cara's 1; not Lou's


async def test_unmapped_users_see_nothing(store: Store, org: Org) -> None:
    nobody = Actor.unmapped("stranger")
    assert await store.find_accounts(nobody, "acme") == []
    assert await store.find_opportunities(nobody, "acme") == []
    assert await store.opportunity(nobody, org.deals["acme_renewal"]) is None


async def test_cyclic_manager_chain_terminates(store: Store, org: Org) -> None:
    from crm_store.models import User

    async with store.transaction() as s:
        vp = await s.get(User, org.users["vp"])
        assert vp is not None
        vp.manager_id = org.users["rep_a"]  # bad data from a source CRM: a loop
    rita = await actor(store, "rep_a")
    # Rita is now "above" Victor and so above everyone below him; the query must still end.
    assert await store.opportunity(rita, org.deals["globex_expansion"]) is not None
    assert await store.opportunity(rita, org.deals["initech_secret"]) is None
