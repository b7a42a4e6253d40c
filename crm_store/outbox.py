"""The outbox: work that must happen after a commit, at least once, by whichever replica is free.

A row is written in the same transaction as the change that calls for it, so a crash between
commit and reaction loses nothing. Workers claim due rows with a lease (`locked_by`,
`locked_until`) in one conditional UPDATE, so two replicas never work on the same row at once
and a crashed worker's rows come back when its lease runs out. Handlers must be idempotent: the
platform call carries the row's idempotency key, the reaction is a claim in the database.

Failures are retried with exponential backoff; after `max_attempts` a row is marked `failed`
and logged, never silently dropped.

Operations that make a rate-limited platform call are paced (`pace`): each row books a slot in
its bucket (a `RateBucket` row, so every replica shares one pace) and waits in the table until
then; a 429 pauses the bucket. Waiting for a slot or a pause never uses up an attempt, and a
booked slot survives a restart, so a backfill resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import heapq
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
from crm_store.models import OutboxItem, RateBucket, utcnow

log = logging.getLogger("dealbot.outbox")

Handler = Callable[["Claimed"], Awaitable[dict[str, Any] | None]]
MAX_ERROR_CHARS = 500
# Calls spaced exactly at the limit reach the platform a few ms closer together now and then
# (network jitter) and a strict window refuses one; 3% slower costs little and avoids that.
PACE_MARGIN = 1.03


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
    slot_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Pace:
    """Calls in `bucket` at most once per `interval`; a slot older than `stale` is booked anew
    (the process was down), so a restart does not fire a burst of old slots at once."""

    bucket: str
    interval: timedelta

    @property
    def stale(self) -> timedelta:
        return 5 * self.interval


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
                 poll_s: float = 2.0, max_attempts: int = 8, base_delay_s: float = 2.0, concurrency: int = 8) -> None:
        self._sessions = sessions
        self._handlers: dict[tuple[str, str], Handler] = {}
        self._paces: dict[tuple[str, str], Pace] = {}
        self._only: set[str] | None = None
        self.owner = worker_name()
        self.batch, self.lease_s, self.poll_s = batch, lease_s, poll_s
        self.local_batch = 5 * batch  # handed-over rows need no claim: fewer, larger completions
        self.max_attempts, self.base_delay_s, self.concurrency = max_attempts, base_delay_s, concurrency
        self._wake = asyncio.Event()
        self._stopping = False
        self._halted = False  # stopping without a drain: lanes leave their remaining rows
        self._task: asyncio.Task[None] | None = None
        self._local: deque[Claimed] = deque()  # rows written here, leased to this worker already
        self._due: list[datetime] = []  # heap: when rows known to be waiting fall due

    def register(self, platform: str, operation: str, handler: Handler) -> None:
        self._handlers[(platform, operation)] = handler

    def pace(self, platform: str, operation: str, bucket: str, per_minute: float) -> None:
        """Run `operation` no faster than `per_minute` per `bucket`, across every replica
        (operations making the same rate-limited call share a bucket)."""
        self._paces[(platform, operation)] = Pace(bucket, timedelta(seconds=60.0 / per_minute * PACE_MARGIN))

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

    async def revive(self, s: AsyncSession, keys: list[str]) -> int:
        """Give rows that failed for good another full set of attempts (their cause was fixed)."""
        if not keys:
            return 0
        result = await s.execute(update(OutboxItem).where(OutboxItem.idempotency_key.in_(keys),
                                                          OutboxItem.status == "failed")
                                 .values(status="pending", attempts=0, next_attempt_at=utcnow(), slot_at=None))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def wake(self, at: datetime | None = None) -> None:
        """New rows were committed: look now (or at `at`, when they fall due) rather than at the
        next poll."""
        if at is None or at <= utcnow():
            self._wake.set()
        else:
            heapq.heappush(self._due, at)

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

    def start(self, *, platforms: set[str] | None = None) -> None:
        """Work rows in the background; only `platforms`' rows when given (a CLI reconciling
        Slack rooms leaves other work to the servers)."""
        self._only = platforms
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name="outbox")

    async def stop(self, drain_timeout_s: float) -> None:
        """Stop polling, then work off what is due now (bounded by `drain_timeout_s`; 0: only
        finish the rows being worked). Rows this worker still holds are then released, so the
        next worker takes them at once rather than when their lease runs out."""
        self._stopping = True
        self._halted = drain_timeout_s <= 0
        self._wake.set()
        try:
            if self._task is not None:
                await asyncio.gather(self._task, return_exceptions=True)
                self._task = None
            if not self._halted:
                async with asyncio.timeout(drain_timeout_s):
                    while await self.run_once():
                        pass
        except TimeoutError:
            log.warning("outbox not drained before shutdown; the rest runs on the next start")
        except Exception as error:  # the database is away: the rows wait in it for the next start
            log.warning("outbox not drained: the database failed", extra={"error": type(error).__name__})
        finally:
            self._halted = False
            await self._release()

    async def _release(self) -> None:
        self._local.clear()
        try:
            async with self._sessions() as s, s.begin():
                await s.execute(update(OutboxItem).where(OutboxItem.locked_by == self.owner,
                                                         OutboxItem.status == "pending")
                                .values(locked_by=None, locked_until=None))
        except Exception as error:  # the leases run out by themselves
            log.warning("outbox leases not released", extra={"error": type(error).__name__})

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
        now = utcnow()
        if self._due and self._due[0] <= now:
            while self._due and self._due[0] <= now:
                heapq.heappop(self._due)
            return 0.0
        if not self._due:
            return self.poll_s
        return min(self.poll_s, (self._due[0] - now).total_seconds())

    async def run_once(self) -> int:
        """Work one batch: rows handed over, else due rows claimed; the number of rows worked.

        Rows of one lane (a payload's ``lane``, say one deal room; rows without one share their
        platform's lane) run in order; lanes run side by side, at most `concurrency` at once."""
        local = min(self.local_batch, len(self._local))
        claimed = [self._local.popleft() for _ in range(local)] or await self._claim()
        lanes: dict[tuple[str, str], list[Claimed]] = {}
        for item in await self._booked(claimed):
            lanes.setdefault((item.platform, str(item.payload.get("lane", ""))), []).append(item)
        done: list[tuple[int, dict[str, Any] | None]] = []
        running = asyncio.Semaphore(self.concurrency)

        async def work(lane: list[Claimed]) -> None:
            async with running:
                for item in lane:
                    if self._halted:
                        return  # released when the worker stops
                    try:
                        done.append((item.id, await self._handlers[(item.platform, item.operation)](item)))
                    except Exception as error:  # every failure is recorded on the row and retried or failed
                        await self._failed(item, error)

        await asyncio.gather(*(work(lane) for lane in lanes.values()))
        await self._complete(done)
        return len(claimed)

    # -- the rows ---------------------------------------------------------------------------

    async def _claim(self) -> list[Claimed]:
        if not self._handlers:
            return []
        now = utcnow()
        due = and_(OutboxItem.status == "pending", OutboxItem.next_attempt_at <= now,
                   or_(OutboxItem.locked_until.is_(None), OutboxItem.locked_until < now),
                   OutboxItem.platform.in_({p for p, _ in self._handlers if self._only is None or p in self._only}))
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
                           OutboxItem.attempts, OutboxItem.idempotency_key, OutboxItem.slot_at))).all()
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
        pace = self._paces.get((item.platform, item.operation))
        if pace is not None and isinstance(error, Retry) and error.after_s is not None:
            await self._pause(item, pace, error.after_s)
            return
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
        if not give_up:
            self.wake(values["next_attempt_at"])

    # -- pacing -----------------------------------------------------------------------------

    async def _booked(self, claimed: list[Claimed]) -> list[Claimed]:
        """The claimed rows that may run now. A paced row runs in its booked slot; one without a
        valid slot books the bucket's next free one, and if that is later it goes back to the
        table until then (its attempts untouched)."""
        paced = [c for c in claimed if (c.platform, c.operation) in self._paces]
        if not paced:
            return claimed
        now = utcnow()
        later: dict[int, datetime] = {}
        async with self._sessions() as s, s.begin():
            for (platform, bucket), items in _grouped(paced, self._paces).items():
                pace = self._paces[(items[0].platform, items[0].operation)]
                row = await _bucket(s, platform, bucket, now)
                paused = row.paused_until
                free = max(now, row.next_free_at, paused or now)
                for item in items:
                    slot = item.slot_at
                    if slot is not None and slot <= now and slot >= now - pace.stale \
                            and (paused is None or slot >= paused):
                        continue  # its own slot: run it
                    slot, free = free, free + pace.interval
                    if slot > now:
                        later[item.id] = slot
                row.next_free_at = free
            for row_id, slot in later.items():
                await s.execute(update(OutboxItem).where(OutboxItem.id == row_id, OutboxItem.locked_by == self.owner)
                                .values(slot_at=slot, next_attempt_at=slot, locked_by=None, locked_until=None))
        for slot in later.values():
            self.wake(slot)
        if later:
            log.debug("paced rows wait for their slots", extra={"waiting": len(later)})
        return [c for c in claimed if c.id not in later]

    async def _pause(self, item: Claimed, pace: Pace, after_s: float) -> None:
        """A 429: nobody calls this bucket until the platform's `Retry-After` has passed, and the
        row books a new slot after it (slots booked before fall inside the pause and re-book)."""
        until = utcnow() + timedelta(seconds=after_s)
        log.warning("rate limited: pausing", extra={"outbox_id": item.id, "operation": item.operation,
                                                    "bucket": pace.bucket, "retry_in_s": round(after_s, 1)})
        async with self._sessions() as s, s.begin():
            row = await _bucket(s, item.platform, pace.bucket, utcnow())
            if row.paused_until is None or row.paused_until < until:
                row.paused_until = until
            await s.execute(update(OutboxItem).where(OutboxItem.id == item.id, OutboxItem.locked_by == self.owner)
                            .values(slot_at=None, next_attempt_at=until, locked_by=None, locked_until=None))
        self.wake(until)


def _grouped(items: list[Claimed], paces: dict[tuple[str, str], Pace]) -> dict[tuple[str, str], list[Claimed]]:
    groups: dict[tuple[str, str], list[Claimed]] = {}
    for item in sorted(items, key=lambda c: c.id):
        groups.setdefault((item.platform, paces[(item.platform, item.operation)].bucket), []).append(item)
    return groups


async def _bucket(s: AsyncSession, platform: str, bucket: str, now: datetime) -> RateBucket:
    """The bucket's row, locked until commit (PostgreSQL; SQLite writes one at a time anyway)."""
    await s.execute(insert_unless_present(s, RateBucket, [{"platform": platform, "bucket": bucket,
                                                           "next_free_at": now}]))
    return (await s.execute(select(RateBucket).where(RateBucket.platform == platform, RateBucket.bucket == bucket)
                            .with_for_update())).scalar_one()
