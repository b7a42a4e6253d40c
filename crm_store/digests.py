"""Digest subscriptions and runs: the claim that makes each digest go out once.

A run is unique per (subscription, period). Whoever inserts it — any replica's scheduler, after
any restart — also queues the send in the same transaction; everyone else's insert is a no-op.
Each run records the window it covers, so the next digest starts exactly where this one ended:
nothing is reported twice, nothing falls between two digests (a skipped period's changes go into
the next digest that is sent).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import selectinload

from crm_store.engine import insert_unless_present
from crm_store.models import DigestRun, DigestSubscription, User, utcnow
from crm_store.outbox import Queued
from crm_store.store import Store

SEND = "digest.send"
SENT_STATES = ("claimed", "posted", "sent")  # a run that was (or is being) delivered
PERIOD = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}


@dataclass(frozen=True, slots=True)
class Due:
    """A subscription whose next digest is due, with what scheduling it needs."""

    subscription_id: int
    user_id: int
    cadence: str
    local_time: str
    weekday: int | None
    time_zone: str | None  # the subscription's own, else the user's; None: the default zone
    platform: str
    next_due_at: datetime


@dataclass(frozen=True, slots=True)
class Claim:
    subscription_id: int
    period_key: str
    window_end: datetime
    status: str = "claimed"  # or "skipped": claimed so nobody sends it, but not sent
    next_due_at: datetime | None = None  # where the subscription goes next (None: unchanged)
    expected_due: datetime | None = None  # ... unless someone changed it meanwhile


async def subscription(store: Store, user_id: int) -> DigestSubscription | None:
    async with store.session() as s:
        return (await s.execute(select(DigestSubscription).where(DigestSubscription.user_id == user_id)
                                .options(selectinload(DigestSubscription.user)))).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class Settings:
    """A subscription as saved: `next_due_at` is computed from the schedule by the caller."""

    cadence: str
    local_time: str
    weekday: int | None
    time_zone: str | None
    platform: str
    next_due_at: datetime | None
    enabled: bool = True


async def save(store: Store, subscriptions: dict[int, Settings]) -> None:
    """Create or change the subscriptions of these users (one each) in one transaction; every
    replica's scheduler sees them at its next tick, since `next_due_at` is in the database."""
    async with store.transaction(renames=False) as s:
        for user_id, wanted in subscriptions.items():
            values: dict[str, Any] = {"cadence": wanted.cadence, "local_time": wanted.local_time,
                                      "weekday": wanted.weekday, "time_zone": wanted.time_zone,
                                      "platform": wanted.platform, "enabled": wanted.enabled,
                                      "next_due_at": wanted.next_due_at if wanted.enabled else None}
            await s.execute(insert_unless_present(s, DigestSubscription, [{"user_id": user_id, **values}]))
            await s.execute(update(DigestSubscription).where(DigestSubscription.user_id == user_id)
                            .values(**values, updated_at=utcnow()))


async def due(store: Store, now: datetime, platforms: Collection[str], limit: int = 500) -> list[Due]:
    """Enabled subscriptions on `platforms` whose time has come, oldest first."""
    async with store.session() as s:
        rows = (await s.execute(
            select(DigestSubscription, User.time_zone).join(User, User.id == DigestSubscription.user_id)
            .where(DigestSubscription.enabled.is_(True), DigestSubscription.next_due_at <= now,
                   DigestSubscription.platform.in_(platforms),
                   User.erased_at.is_(None))
            .order_by(DigestSubscription.next_due_at).limit(limit)
        )).all()
    return [Due(sub.id, sub.user_id, sub.cadence, sub.local_time, sub.weekday, sub.time_zone or user_zone,
                sub.platform, sub.next_due_at) for sub, user_zone in rows if sub.next_due_at is not None]


async def last_run(store: Store, subscription_id: int) -> DigestRun | None:
    """The latest digest delivered (or on its way) for this subscription."""
    async with store.session() as s:
        return await _last_delivered(s, subscription_id)


async def _last_delivered(s: Any, subscription_id: int, before: datetime | None = None) -> DigestRun | None:
    query = (select(DigestRun).where(DigestRun.subscription_id == subscription_id, DigestRun.status.in_(SENT_STATES),
                                     DigestRun.window_end.is_not(None)))
    if before is not None:
        query = query.where(DigestRun.window_end < before)
    return (await s.execute(query.order_by(DigestRun.window_end.desc(), DigestRun.id.desc()).limit(1))
            ).scalar_one_or_none()


async def claim(store: Store, c: Claim, *, owner: str, send: Callable[[int, str], Queued] | None = None) -> int | None:
    """Claim the digest of (subscription, period): the run's id if this call made the claim,
    None if it existed. With status "claimed", `send(run_id, platform)` is queued with it."""
    async with store.transaction(renames=False) as s:
        sub = (await s.execute(select(DigestSubscription).where(DigestSubscription.id == c.subscription_id))
               ).scalar_one()
        previous = await _last_delivered(s, sub.id, before=c.window_end)
        start = previous.window_end if previous and previous.window_end else c.window_end - PERIOD[sub.cadence]
        inserted = (await s.execute(
            insert_unless_present(s, DigestRun, [{
                "subscription_id": sub.id, "period_key": c.period_key, "status": c.status, "claimed_at": utcnow(),
                "claimed_by": owner, "window_start": start, "window_end": c.window_end}])
            .returning(DigestRun.id)
        )).scalar_one_or_none()
        if c.next_due_at is not None:
            await s.execute(update(DigestSubscription).where(
                DigestSubscription.id == sub.id, DigestSubscription.next_due_at == c.expected_due,
            ).values(next_due_at=c.next_due_at))
        if inserted is not None and c.status == "claimed" and send is not None:
            await store.outbox.enqueue(s, [send(inserted, sub.platform)])
    if inserted is not None:
        store.outbox.wake()
    return inserted


async def run(store: Store, run_id: int) -> DigestRun | None:
    """A run with its subscription and user, for the send."""
    async with store.session() as s:
        return (await s.execute(
            select(DigestRun).where(DigestRun.id == run_id)
            .options(selectinload(DigestRun.subscription).selectinload(DigestSubscription.user))
        )).scalar_one_or_none()


async def record(store: Store, run_id: int, **values: Any) -> None:
    """How far a send got (its message, its chart, done), so a retry carries on from there."""
    async with store.transaction(renames=False) as s:
        await s.execute(update(DigestRun).where(DigestRun.id == run_id).values(**values))


async def fail(store: Store, run_id: int) -> None:
    """A send given up: the run no longer counts as delivered, unless its message was posted."""
    async with store.transaction(renames=False) as s:
        await s.execute(update(DigestRun).where(DigestRun.id == run_id, DigestRun.message_ref.is_(None))
                        .values(status="failed"))


async def claim_nothing(store: Store, subscription_id: int, next_due_at: datetime, expected_due: datetime) -> None:
    """Move a subscription on without a digest (its schedule now falls later)."""
    async with store.transaction(renames=False) as s:
        await s.execute(update(DigestSubscription).where(
            DigestSubscription.id == subscription_id, DigestSubscription.next_due_at == expected_due,
        ).values(next_due_at=next_due_at))


async def previous_snapshot(store: Store, current: DigestRun) -> dict[str, Any] | None:
    """The pipeline the digest before `current` showed, to compare with."""
    if current.window_end is None:
        return None
    async with store.session() as s:
        earlier = (await s.execute(
            select(DigestRun.snapshot).where(
                DigestRun.subscription_id == current.subscription_id, DigestRun.id != current.id,
                DigestRun.snapshot.is_not(None), DigestRun.window_end < current.window_end)
            .order_by(DigestRun.window_end.desc()).limit(1))).scalar_one_or_none()
    return earlier
