"""Keeps the in-memory name indexes in step with the database, off the request path.

- The first lookup of a kind loads its index (fetching rows in large partitions).
- Writes made by this process mark the indexes dirty: the next lookup applies them first, so a
  user finds what they just wrote.
- Writes made by other replicas are picked up by a background refresh at most every
  `REFRESH_SECONDS`, reading rows changed since the last refresh minus `OVERLAP` (a transaction
  may commit a little after the time it stamped on its rows). Lookups never wait for it.
- Every `REBUILD_SECONDS` a fresh index is built in the background and swapped in, which drops
  stale postings and anything the overlap could have missed (deleted rows included).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Select, null, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_store.models import Account, Contact, Opportunity, utcnow
from crm_store.name_index import NameIndex

Kind = Literal["account", "contact", "opportunity"]
KINDS: tuple[Kind, ...] = ("account", "contact", "opportunity")

REFRESH_SECONDS = 2.0
OVERLAP = timedelta(seconds=10)
REBUILD_SECONDS = 15 * 60
FETCH_PARTITION = 20_000

log = logging.getLogger("dealbot.name_index")


def new_index(kind: Kind) -> NameIndex:
    return NameIndex(strip_suffixes=kind != "contact")  # people's names have no legal suffixes


def label(name: str, account: str | None) -> str:
    """An opportunity is found by its own name and its account's ("acme renewal")."""
    if not account:
        return name
    have = set(name.lower().split())
    extra = [w for w in account.split() if w.lower() not in have]
    return f"{name} {' '.join(extra)}" if extra else name


def changed_rows(kind: Kind, since: datetime | None) -> Select[Any]:
    """``(id, name, account name, removed marker)`` of rows of `kind` changed since `since`."""
    query: Select[Any]
    if kind == "account":
        query = select(Account.id, Account.name, null(), Account.merged_into_id)
        stamps = [Account.updated_at]
    elif kind == "contact":
        query = select(Contact.id, Contact.name, null(), Contact.erased_at)
        stamps = [Contact.updated_at]
    else:
        query = select(Opportunity.id, Opportunity.name, Account.name, null()).join(Account)
        stamps = [Opportunity.updated_at, Account.updated_at]
    if since is not None:
        changed = stamps[0] >= since
        for stamp in stamps[1:]:
            changed = changed | (stamp >= since)
        query = query.where(changed)
    return query


class _State:
    def __init__(self, kind: Kind) -> None:
        self.index = new_index(kind)
        self.loaded = False
        self.dirty = False
        self.watermark: datetime | None = None
        self.refreshed_at = 0.0
        self.built_at = 0.0
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None


class NameIndexes:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions = sessions
        self._clock = clock
        self._states = {kind: _State(kind) for kind in KINDS}

    def mark_dirty(self) -> None:
        for state in self._states.values():
            state.dirty = True

    async def get(self, kind: Kind) -> NameIndex:
        """The index of `kind`, loaded and with this process's own writes applied."""
        state = self._states[kind]
        if not state.loaded or state.dirty:
            async with state.lock:
                if not state.loaded:
                    await self._rebuild(kind, state)
                elif state.dirty:
                    await self._apply_changes(kind, state)
        elif state.task is None:
            age = self._clock() - state.refreshed_at
            if self._clock() - state.built_at >= REBUILD_SECONDS:
                state.task = asyncio.create_task(self._in_background(kind, state, rebuild=True))
            elif age >= REFRESH_SECONDS:
                state.task = asyncio.create_task(self._in_background(kind, state, rebuild=False))
        return state.index

    async def load_all(self) -> None:
        for kind in KINDS:
            await self.get(kind)

    async def close(self) -> None:
        tasks = [s.task for s in self._states.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _in_background(self, kind: Kind, state: _State, *, rebuild: bool) -> None:
        try:
            async with state.lock:
                await (self._rebuild(kind, state) if rebuild else self._apply_changes(kind, state))
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed refresh must not break lookups; the next one retries
            log.exception("refreshing the %s name index failed", kind)
            state.refreshed_at = self._clock()
        finally:
            state.task = None

    async def _rebuild(self, kind: Kind, state: _State) -> None:
        state.dirty = False  # set first: a write during the read marks it again
        index = new_index(kind)
        state.watermark = await self._read(kind, index, since=None)
        state.index, state.loaded = index, True
        state.built_at = state.refreshed_at = self._clock()

    async def _apply_changes(self, kind: Kind, state: _State) -> None:
        state.dirty = False  # set first: a write during the read marks it again
        since = state.watermark - OVERLAP if state.watermark else None
        state.watermark = await self._read(kind, state.index, since)
        state.refreshed_at = self._clock()

    async def _read(self, kind: Kind, index: NameIndex, since: datetime | None) -> datetime:
        """Apply rows changed since `since` to `index`; return the new watermark."""
        started = utcnow()
        async with self._sessions() as session:
            result = await session.stream(changed_rows(kind, since).execution_options(yield_per=FETCH_PARTITION))
            async for rows in result.partitions():
                for row_id, name, account, removed in rows:
                    if removed is not None:
                        index.remove(row_id)
                    else:
                        index.add(row_id, label(name, account))
        return started
