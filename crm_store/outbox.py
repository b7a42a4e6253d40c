"""The outbox: work that must happen after a commit, at least once, by whichever replica is free.

A row is written in the same transaction as the change that calls for it, so a crash between
commit and reaction loses nothing. Workers claim due rows with a lease (`locked_by`,
`locked_until`) in one conditional UPDATE, so two replicas never work on the same row at once
and a crashed worker's rows come back when its lease runs out. Handlers must be idempotent: the
platform call carries the row's idempotency key, the reaction is a claim in the database.

Failures are retried with exponential backoff; after `max_attempts` a row is marked `failed`
and logged, never silently dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from collections import deque
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_store.engine import insert_unless_present
from crm_store.models import OutboxItem, utcnow

log = logging.getLogger("dealbot.outbox")

Handler = Callable[["Claimed"], Awaitable[dict[str, Any] | None]]
MAX_ERROR_CHARS = 500


class Retry(Exception):
    """Raised by a handler for a failure worth retrying at a known time (a 429's Retry-After)."""

    def __init__(self, message: str, after_s: float | None = None) -> None:
        super().__init__(message)
        self.after_s = after_s


class GiveUp(Exception):
    """Raised by a handler when retrying cannot help (the channel is gone); the row fails at once."""


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    platform: str
    operation: str
    payload: dict[str, Any]
    attempts: int
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class Queued:
    """A row to write: `idempotency_key` makes writing it again (a repeated event) a no-op."""

    platform: str
    operation: str
    idempotency_key: str
    payload: dict[str, Any]
    due: datetime | None = None


def worker_name() -> str:
    """Who holds a lease: host, process and a random tag (pids repeat across containers)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(3)}"


class Outbox:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, batch: int = 200, lease_s: float = 120.0,
                 poll_s: float = 2.0, max_attempts: int = 8, base_delay_s: float = 2.0) -> None:
        self._sessions = sessions
        self._handlers: dict[tuple[str, str], Handler] = {}
        self.owner = worker_name()
        self.batch, self.lease_s, self.poll_s = batch, lease_s, poll_s
        self.local_batch = 5 * batch  # handed-over rows need no claim: fewer, larger completions
        self.max_attempts, self.base_delay_s = max_attempts, base_delay_s
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._local: deque[Claimed] = deque()  # rows written here, leased to this worker already
        self._soonest: datetime | None = None  # when a row known to be waiting falls due

    def register(self, platform: str, operation: str, handler: Handler) -> None:
        self._handlers[(platform, operation)] = handler

    async def enqueue(self, s: AsyncSession, items: list[Queued]) -> None:
        """Write `items` in the caller's transaction, skipping keys already queued or done; after
        the commit, `wake` the worker (at each row's due time)."""
        if not items:
            return
        now = utcnow()
        rows = [{"idempotency_key": q.idempotency_key, "platform": q.platform, "operation": q.operation,
                 "payload": q.payload, "status": "pending", "attempts": 0, "next_attempt_at": q.due or now,
                 "created_at": now} for q in items]
        await s.execute(insert_unless_present(s, OutboxItem, rows))

    def wake(self, at: datetime | None = None) -> None:
        """New rows were committed: look now (or at `at`, when they fall due) rather than at the
        next poll."""
        if at is None or at <= utcnow():
            self._wake.set()
        elif self._soonest is None or at < self._soonest:
            self._soonest = at

    @property
    def running(self) -> bool:
        return self._task is not None and not self._stopping

    def lease(self, now: datetime) -> dict[str, Any]:
        """Columns for a row written in this process that this worker will work itself (then
        `hand_over` it after commit); empty when no worker runs here (say, the CLI), so any
        server's worker takes the row at once."""
        if not self.running:
            return {}
        return {"locked_by": self.owner, "locked_until": now + timedelta(seconds=self.lease_s)}

    def hand_over(self, items: list[Claimed]) -> None:
        """Committed rows written with `lease`: worked without claiming them again. Should this
        process die first, the lease runs out and another worker takes them."""
        self._local.extend(items)
        self._wake.set()

    # -- running ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name="outbox")

    async def stop(self, drain_timeout_s: float) -> None:
        """Stop polling, then work off what is due now (bounded by `drain_timeout_s`)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            async with asyncio.timeout(drain_timeout_s):
                while await self.run_once():
                    pass
        except TimeoutError:
            log.warning("outbox not drained before shutdown; the rest runs on the next start")
        except Exception as error:  # the database is away: the rows wait in it for the next start
            log.warning("outbox not drained: the database failed", extra={"error": type(error).__name__})

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()  # before the pass: a wake arriving during it is not lost
            try:
                worked = await self.run_once()
            except Exception:  # the database is away; try again at the next poll
                log.exception("outbox pass failed")
                worked = 0
            if worked or self._stopping:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), self._idle_s())
            except TimeoutError:
                pass

    def _idle_s(self) -> float:
        """How long to wait for a wake: the poll interval, or less when a row falls due sooner."""
        if self._soonest is None:
            return self.poll_s
        until = (self._soonest - utcnow()).total_seconds()
        if until <= self.poll_s:
            self._soonest = None  # this wait covers it
        return max(0.0, min(self.poll_s, until))

    async def run_once(self) -> int:
        """Work one batch: rows handed over, else due rows claimed; the number of rows worked."""
        local = min(self.local_batch, len(self._local))
        claimed = [self._local.popleft() for _ in range(local)] or await self._claim()
        done: list[tuple[int, dict[str, Any] | None]] = []
        for item in claimed:
            try:
                done.append((item.id, await self._handlers[(item.platform, item.operation)](item)))
            except Exception as error:  # every failure is recorded on the row and retried or failed
                await self._failed(item, error)
        await self._complete(done)
        return len(claimed)

    # -- the rows ---------------------------------------------------------------------------

    async def _claim(self) -> list[Claimed]:
        if not self._handlers:
            return []
        now = utcnow()
        due = and_(OutboxItem.status == "pending", OutboxItem.next_attempt_at <= now,
                   or_(OutboxItem.locked_until.is_(None), OutboxItem.locked_until < now),
                   OutboxItem.platform.in_({platform for platform, _ in self._handlers}))
        # Pick candidates (PostgreSQL skips rows other workers hold), then take them with an
        # UPDATE that re-checks `due`: of two workers racing for a row exactly one gets it.
        pick = select(OutboxItem.id).where(due).order_by(OutboxItem.id).limit(self.batch) \
            .with_for_update(skip_locked=True)
        async with self._sessions() as s, s.begin():
            ids = list((await s.execute(pick)).scalars())
            if not ids:
                return []
            rows = (await s.execute(
                update(OutboxItem).where(OutboxItem.id.in_(ids), due)
                .values(locked_by=self.owner, locked_until=now + timedelta(seconds=self.lease_s))
                .returning(OutboxItem.id, OutboxItem.platform, OutboxItem.operation, OutboxItem.payload,
                           OutboxItem.attempts, OutboxItem.idempotency_key))).all()
        known = [Claimed(*row) for row in rows if (row.platform, row.operation) in self._handlers]
        return sorted(known, key=lambda c: c.id)

    async def _complete(self, done: list[tuple[int, dict[str, Any] | None]]) -> None:
        if not done:
            return
        now = utcnow()
        async with self._sessions() as s, s.begin():
            plain = [row_id for row_id, result in done if result is None]
            if plain:
                await s.execute(update(OutboxItem).where(OutboxItem.id.in_(plain), OutboxItem.locked_by == self.owner)
                                .values(status="done", done_at=now, locked_by=None, locked_until=None))
            for row_id, result in done:
                if result is not None:
                    await s.execute(update(OutboxItem).where(OutboxItem.id == row_id,
                                                             OutboxItem.locked_by == self.owner)
                                    .values(status="done", done_at=now, result=result, locked_by=None,
                                            locked_until=None))

    async def _failed(self, item: Claimed, error: Exception) -> None:
        attempts = item.attempts + 1
        give_up = isinstance(error, GiveUp) or attempts >= self.max_attempts
        delay = error.after_s if isinstance(error, Retry) and error.after_s is not None \
            else self.base_delay_s * 2 ** (attempts - 1)
        values: dict[str, Any] = {
            "attempts": attempts, "locked_by": None, "locked_until": None,
            "last_error": f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS],
            "next_attempt_at": utcnow() + timedelta(seconds=delay),
        }
        if give_up:
            values["status"] = "failed"
            log.error("outbox item failed for good", exc_info=error,
                      extra={"outbox_id": item.id, "operation": item.operation, "attempts": attempts})
        else:
            log.warning("outbox item will be retried", extra={
                "outbox_id": item.id, "operation": item.operation, "attempts": attempts,
                "error": type(error).__name__, "retry_in_s": round(delay, 1)})
        async with self._sessions() as s, s.begin():
            await s.execute(update(OutboxItem).where(OutboxItem.id == item.id, OutboxItem.locked_by == self.owner)
                            .values(**values))
