"""The store: one object that owns the engine, the sessions and the fuzzy name indexes.

Name indexes are kept in memory for speed and refreshed from the database by `updated_at`
watermark, so several replicas sharing one database each see the others' writes within
`INDEX_REFRESH_SECONDS`. Rows found by the index are always re-read from the database with
the visibility predicate, so a stale index can cost a candidate, never reveal a hidden row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import selectinload

from crm_store import migrate
from crm_store.actors import Actor
from crm_store.engine import create_engine, session_factory
from crm_store.models import Account, Base, Contact, DealTeamMember, Opportunity, User, utcnow
from crm_store.name_index import Match, NameIndex
from crm_store.visibility import directory_visible, opportunity_visible

Kind = Literal["account", "contact", "opportunity"]
T = TypeVar("T")

INDEX_REFRESH_SECONDS = 2.0
# Re-read rows changed this long before the watermark, to absorb clock skew between replicas.
WATERMARK_OVERLAP = timedelta(seconds=30)
CANDIDATES = 400
MAX_QUERY_CHARS = 200


@dataclass(frozen=True, slots=True)
class Found(Generic[T]):
    row: T
    match: Match


class _IndexState:
    def __init__(self, index: NameIndex) -> None:
        self.index = index
        self.loaded = False
        self.watermark: datetime | None = None
        self.checked_at = 0.0
        self.lock = asyncio.Lock()


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)
        self._indexes: dict[Kind, _IndexState] = {
            "account": _IndexState(NameIndex()),
            "contact": _IndexState(NameIndex(strip_suffixes=False)),
            "opportunity": _IndexState(NameIndex()),
        }

    @classmethod
    async def open(cls, url: str, *, upgrade: bool = True) -> Store:
        """Connect to `url`, migrating the schema to head first unless told not to."""
        engine = create_engine(url)
        if upgrade:
            await migrate.upgrade(engine)
        return cls(engine)

    async def close(self) -> None:
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
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work is committed as a whole, or not at all."""
        async with self._sessions() as session, session.begin():
            yield session
        self.names_changed()

    def names_changed(self) -> None:
        """Make the next lookup pick up writes made by this process at once."""
        for state in self._indexes.values():
            state.checked_at = 0.0

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
        query = select(Account).where(Account.merged_into_id.is_(None), directory_visible(actor))
        return await self._find("account", text, limit, Account, query.options(selectinload(Account.owner)))

    async def find_contacts(self, actor: Actor, text: str, limit: int = 10) -> list[Found[Contact]]:
        query = select(Contact).where(Contact.erased_at.is_(None), directory_visible(actor))
        return await self._find("contact", text, limit, Contact, query.options(selectinload(Contact.account)))

    async def find_opportunities(
        self, actor: Actor, text: str, limit: int = 10
    ) -> list[Found[Opportunity]]:
        query = select(Opportunity).where(opportunity_visible(actor)).options(
            selectinload(Opportunity.account), selectinload(Opportunity.owner)
        )
        return await self._find("opportunity", text, limit, Opportunity, query)

    async def _find(
        self, kind: Kind, text: str, limit: int, model: Any, visible: Select[Any]
    ) -> list[Found[Any]]:
        text = text[:MAX_QUERY_CHARS]
        index = await self._fresh_index(kind)
        candidates = index.candidates(text, CANDIDATES)
        if not candidates:
            return []
        async with self.session() as s:
            rows = {r.id: r for r in (await s.execute(visible.where(model.id.in_(candidates)))).scalars()}
        matches = index.rank(text, rows, limit=len(rows))
        found = [Found(rows[m.id], m) for m in matches]
        # Equal normalised matches ("Acme S.A." and "ACME Corp" for "acme corp") are told apart
        # by how close the raw names are, then by the row's own tie-break.
        raw = text.lower()
        found.sort(key=lambda f: (f.match.tier, f.match.score,
                                  fuzz.WRatio(raw, f.row.name, processor=default_process),
                                  *_tie_break(f.row)), reverse=True)
        return found[:limit]

    async def _fresh_index(self, kind: Kind) -> NameIndex:
        state = self._indexes[kind]
        if state.loaded and time.monotonic() - state.checked_at < INDEX_REFRESH_SECONDS:
            return state.index
        async with state.lock:
            if not state.loaded or time.monotonic() - state.checked_at >= INDEX_REFRESH_SECONDS:
                await self._refresh(kind, state)
        return state.index

    async def _refresh(self, kind: Kind, state: _IndexState) -> None:
        started = utcnow()
        since = state.watermark - WATERMARK_OVERLAP if state.watermark else None
        query = _index_query(kind, since)
        async with self.session() as s:
            result = await s.stream(query.execution_options(yield_per=20_000))
            async for row_id, name, extra, removed in result:
                if removed is not None:
                    state.index.remove(row_id)
                else:
                    state.index.add(row_id, _label(name, extra))
        state.watermark = started
        state.loaded = True
        state.checked_at = time.monotonic()

    # -- direct reads -----------------------------------------------------------------------

    async def opportunity(self, actor: Actor, opportunity_id: int) -> Opportunity | None:
        """One opportunity with account, owner and team, or None when hidden or missing."""
        query = (
            select(Opportunity)
            .where(Opportunity.id == opportunity_id, opportunity_visible(actor))
            .options(
                selectinload(Opportunity.account),
                selectinload(Opportunity.owner),
                selectinload(Opportunity.team).selectinload(DealTeamMember.user),
            )
        )
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


def _label(name: str, account: str | None) -> str:
    """An opportunity is found by its own name and its account's ("acme renewal")."""
    if not account:
        return name
    have = set(name.lower().split())
    extra = [w for w in account.split() if w.lower() not in have]
    return f"{name} {' '.join(extra)}" if extra else name


def _tie_break(row: Any) -> tuple[Any, ...]:
    """Among equal matches: open deals, then larger amount, then the most recently updated."""
    if isinstance(row, Opportunity):
        return (row.status == "open", row.amount or 0, row.updated_at)
    return (row.updated_at,)


def _index_query(kind: Kind, since: datetime | None) -> Select[Any]:
    """``(id, name, account name, removed marker)`` of rows of `kind` changed since `since`."""
    if kind == "account":
        query = select(Account.id, Account.name, None, Account.merged_into_id)
        changed: Sequence[Any] = [Account.updated_at]
    elif kind == "contact":
        query = select(Contact.id, Contact.name, None, Contact.erased_at)
        changed = [Contact.updated_at]
    else:
        query = select(Opportunity.id, Opportunity.name, Account.name, None).join(Account)
        changed = [Opportunity.updated_at, Account.updated_at]
    if since is not None:
        cond = changed[0] >= since
        for col in changed[1:]:
            cond = cond | (col >= since)
        query = query.where(cond)
    return query
