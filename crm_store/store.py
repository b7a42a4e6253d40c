"""The store: one object that owns the engine, the sessions and the fuzzy name indexes.

A lookup takes a few hundred candidates from the in-memory name index (kept fresh by
`name_sync`), filters them by visibility in SQL (ids only), re-ranks them with WRatio, and loads
full rows just for the best few. Rows are always re-read with the visibility predicate, so a
stale index can cost a candidate, never reveal a hidden row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process
from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import selectinload

from crm_store import migrate
from crm_store.actors import Actor
from crm_store.engine import create_engine, session_factory, writer_for
from crm_store.events import ChangeHub
from crm_store.models import Account, Base, Contact, DealTeamMember, Opportunity, User
from crm_store.name_index import Match
from crm_store.name_sync import Kind, NameIndexes
from crm_store.outbox import Outbox
from crm_store.visibility import directory_visible, opportunity_visible

T = TypeVar("T")

CANDIDATES = 400
MAX_QUERY_CHARS = 200
MAX_TIED = 100


@dataclass(frozen=True, slots=True)
class Found(Generic[T]):
    row: T
    match: Match


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.writer = writer_for(engine)
        self._sessions = session_factory(engine)
        self._write_sessions = session_factory(self.writer)
        self.names = NameIndexes(self._sessions)
        self.changes = ChangeHub()
        self.outbox = Outbox(self._write_sessions)
        self.outbox.register("dealbot", "opportunity.changed", self.changes.deliver)

    @classmethod
    async def open(cls, url: str, *, upgrade: bool = True) -> Store:
        """Connect to `url`, migrating the schema to head first unless told not to."""
        engine = create_engine(url)
        if upgrade:
            await migrate.upgrade(engine)
        return cls(engine)

    async def warm_up(self) -> None:
        """Load the name indexes now rather than on the first lookup (server start-up)."""
        await self.names.load_all()

    async def close(self) -> None:
        await self.names.close()
        if self.writer is not self.engine:
            await self.writer.dispose()
        await self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session for reads."""
        async with self._sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self, *, renames: bool = True) -> AsyncIterator[AsyncSession]:
        """A session whose work is committed as a whole, or not at all.

        `renames=False` promises the work adds or renames no account, contact or deal, so the
        name indexes need not look for changes before the next lookup.
        """
        async with self._write_sessions() as session, session.begin():
            yield session
        if renames:
            self.names.mark_dirty()  # the next lookup sees what was just written

    # -- people -----------------------------------------------------------------------------

    async def actor_for(
        self, *, email: str | None = None, slack_user_id: str | None = None,
        teams_aad_id: str | None = None, display_name: str = "unknown user",
    ) -> Actor:
        """The CRM user behind a chat identity; unmapped when none matches."""
        query = select(User).where(User.erased_at.is_(None))
        if slack_user_id:
            query = query.where(User.slack_user_id == slack_user_id)
        elif teams_aad_id:
            query = query.where(User.teams_aad_id == teams_aad_id)
        elif email:
            query = query.where(func.lower(User.email) == email.strip().lower())
        else:
            return Actor.unmapped(display_name)
        async with self.session() as s:
            user = (await s.execute(query)).scalar_one_or_none()
        if user is None:
            return Actor.unmapped(display_name)
        return Actor(user.id, user.name, user.email, user.role, user.time_zone)

    async def link_chat_identity(self, user_id: int, *, slack_user_id: str | None = None,
                                 teams_aad_id: str | None = None) -> None:
        """Remember a chat id on the CRM user found by verified email, so later lookups need no
        platform call. An id another row still holds (a re-created account) moves to this one."""
        column = User.slack_user_id if slack_user_id else User.teams_aad_id
        chat_id = slack_user_id or teams_aad_id
        if not chat_id:
            return
        async with self.transaction(renames=False) as s:
            await s.execute(update(User).where(column == chat_id, User.id != user_id).values({column.key: None}))
            await s.execute(update(User).where(User.id == user_id).values({column.key: chat_id}))

    async def who_cannot_see(self, opportunity_ids: tuple[int, ...], actors: list[Actor]) -> list[Actor]:
        """The actors for whom at least one of the opportunities is hidden (sharing checks)."""
        wanted = set(opportunity_ids)
        hidden: list[Actor] = []
        async with self.session() as s:
            for actor in actors:
                seen = set((await s.execute(select(Opportunity.id).where(
                    Opportunity.id.in_(wanted), opportunity_visible(actor)))).scalars())
                if seen != wanted:
                    hidden.append(actor)
        return hidden

    async def find_users(self, text: str, limit: int = 5) -> list[User]:
        """Users by email, Slack id or name (exact first, then contains); erased users excluded."""
        needle = text.strip().lower()
        async with self.session() as s:
            exact = select(User).where(
                User.erased_at.is_(None),
                (func.lower(User.email) == needle) | (User.slack_user_id == text.strip())
                | (func.lower(User.name) == needle),
            )
            users = list((await s.execute(exact.limit(limit))).scalars())
            if not users and needle:
                like = select(User).where(
                    User.erased_at.is_(None), func.lower(User.name).contains(needle, autoescape=True)
                )
                users = list((await s.execute(like.order_by(User.name).limit(limit))).scalars())
        return users

    # -- fuzzy lookups ----------------------------------------------------------------------

    async def find_accounts(self, actor: Actor, text: str, limit: int = 10) -> list[Found[Account]]:
        rows = select(Account).where(Account.merged_into_id.is_(None), directory_visible(actor))
        return await self._find("account", actor, text, limit, rows.options(selectinload(Account.owner)))

    async def find_contacts(self, actor: Actor, text: str, limit: int = 10) -> list[Found[Contact]]:
        rows = select(Contact).where(Contact.erased_at.is_(None), directory_visible(actor))
        return await self._find("contact", actor, text, limit, rows.options(selectinload(Contact.account)))

    async def find_opportunities(
        self, actor: Actor, text: str, limit: int = 10
    ) -> list[Found[Opportunity]]:
        rows = select(Opportunity).where(opportunity_visible(actor)).options(
            selectinload(Opportunity.account), selectinload(Opportunity.owner)
        )
        return await self._find("opportunity", actor, text, limit, rows)

    async def _find(self, kind: Kind, actor: Actor, text: str, limit: int, rows: Select[Any]) -> list[Found[Any]]:
        if not actor.is_mapped:
            return []
        index = await self.names.get(kind)
        text = text[:MAX_QUERY_CHARS]
        candidates = index.candidates(text, CANDIDATES)
        if not candidates:
            return []
        model = rows.column_descriptions[0]["entity"]
        if kind == "opportunity" and not actor.is_admin:
            async with self.session() as s:
                ids = select(Opportunity.id).where(Opportunity.id.in_(candidates), opportunity_visible(actor))
                candidates = list((await s.execute(ids)).scalars())
        ranked = index.rank(text, candidates, limit=len(candidates))
        found: list[Found[Any]] = []
        start = 0
        while len(found) < limit and start < len(ranked):
            # The best still wanted, plus every match tied with the last of them, so that the
            # tie-break below sees the whole tie.
            end = min(len(ranked), start + limit - len(found) + 2)
            while end < len(ranked) and end - start < MAX_TIED and ranked[end].rank == ranked[end - 1].rank:
                end += 1
            batch = ranked[start:end]
            async with self.session() as s:
                loaded = {r.id: r for r in (await s.execute(rows.where(model.id.in_([m.id for m in batch])))).scalars()}
            found += [Found(loaded[m.id], m) for m in batch if m.id in loaded]
            start = end
        # Equal normalised matches ("Acme S.A." and "ACME Corp" for "acme corp") are told apart
        # by how close the raw names are, then by the row's own tie-break.
        raw = text.lower()
        found.sort(key=lambda f: (f.match.tier, f.match.score,
                                  fuzz.WRatio(raw, f.row.name, processor=default_process),
                                  *_tie_break(f.row)), reverse=True)
        return found[:limit]

    # -- direct reads -----------------------------------------------------------------------

    async def opportunity(self, actor: Actor, opportunity_id: int | None = None, *,
                          external_id: str | None = None) -> Opportunity | None:
        """One opportunity (by id or external id) with account, owner and team; None when hidden."""
        which = Opportunity.id == opportunity_id if external_id is None else Opportunity.external_id == external_id
        query = (
            select(Opportunity)
            .where(which, opportunity_visible(actor))
            .options(
                selectinload(Opportunity.account),
                selectinload(Opportunity.owner),
                selectinload(Opportunity.team).selectinload(DealTeamMember.user),
            )
        )
        async with self.session() as s:
            return (await s.execute(query)).scalar_one_or_none()

    async def account(self, actor: Actor, account_id: int) -> Account | None:
        query = select(Account).where(
            Account.id == account_id, Account.merged_into_id.is_(None), directory_visible(actor)
        ).options(selectinload(Account.owner))
        async with self.session() as s:
            return (await s.execute(query)).scalar_one_or_none()

    async def contact(self, actor: Actor, contact_id: int) -> Contact | None:
        query = select(Contact).where(
            Contact.id == contact_id, Contact.erased_at.is_(None), directory_visible(actor)
        ).options(selectinload(Contact.account))
        async with self.session() as s:
            return (await s.execute(query)).scalar_one_or_none()

    async def counts(self) -> dict[str, int]:
        """Row counts of every table (used by the CLI and by tests that check nothing changed)."""
        out: dict[str, int] = {}
        async with self.session() as s:
            for table in Base.metadata.sorted_tables:
                out[table.name] = (await s.execute(select(func.count()).select_from(table))).scalar_one()
        return out


def _tie_break(row: Any) -> tuple[Any, ...]:
    """Among equal matches: open deals, then larger amount, then the most recently updated."""
    if isinstance(row, Opportunity):
        return (row.status == "open", row.amount or 0, row.updated_at)
    return (row.updated_at,)
