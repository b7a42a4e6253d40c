"""Paced outbox operations, on SQLite and PostgreSQL: slots shared by every replica, waits that
use up no attempt, and a 429 that pauses the bucket for everyone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from crm_store import Store
from crm_store.engine import session_factory, writer_for
from crm_store.models import OutboxItem, RateBucket, utcnow
from crm_store.outbox import Claimed, Outbox, Queued, Retry
from tests.store.test_outbox import rows

INTERVAL = timedelta(milliseconds=100)
PER_MINUTE = 60 / INTERVAL.total_seconds()


@pytest.fixture
async def replicas(store: Store) -> AsyncIterator[list[Outbox]]:
    """Two outbox workers with their own write connections, as two processes would have."""
    engines = [writer_for(store.engine) for _ in range(2)]
    boxes = [Outbox(session_factory(engine), poll_s=0.05, batch=3) for engine in engines]  # booking in turns
    yield boxes
    for box in boxes:
        await box.stop(drain_timeout_s=1)
    for engine in engines:
        await engine.dispose()


async def queue(store: Store, count: int) -> None:
    async with store.transaction() as s:
        await store.outbox.enqueue(s, [Queued("test", "create", f"create:{n}", {"n": n}) for n in range(count)])


async def until_done(store: Store, count: int) -> dict[int, OutboxItem]:
    async with asyncio.timeout(15):
        while True:
            found = await rows(store)
            if sum(r.status == "done" for r in found.values()) == count:
                return found
            await asyncio.sleep(0.02)


async def test_two_replicas_share_one_pace(store: Store, replicas: list[Outbox]) -> None:
    ran: list[tuple[int, datetime]] = []

    async def create(item: Claimed) -> None:
        ran.append((item.payload["n"], utcnow()))

    for box in replicas:
        box.register("test", "create", create)
        box.pace("test", "create", "conversations.create", PER_MINUTE)
    await queue(store, 12)
    for box in replicas:
        box.start()
    found = await until_done(store, 12)
    assert sorted(n for n, _ in ran) == list(range(12))  # each once
    times = sorted(at for _, at in ran)
    # Twelve slots 100 ms apart span 1.1 s, whichever replica ran them (a lower bound: a slow
    # machine only stretches it). Replicas booking the same slots would finish in about half.
    assert times[-1] - times[0] >= 11 * INTERVAL - timedelta(milliseconds=30)
    assert {r.attempts for r in found.values()} == {0}  # waiting for a slot is no attempt
    slots = sorted(r.slot_at for r in found.values() if r.slot_at is not None)
    assert len(slots) >= 10 and all(b - a >= INTERVAL for a, b in zip(slots, slots[1:]))


async def test_a_429_pauses_the_bucket_and_slots_booked_before_are_booked_again(
        store: Store, replicas: list[Outbox]) -> None:
    box = replicas[0]
    ran: dict[int, datetime] = {}
    refused: list[datetime] = []

    async def create(item: Claimed) -> None:
        if item.payload["n"] == 1 and not refused:
            refused.append(utcnow())
            raise Retry("ratelimited", after_s=0.5)
        ran[item.payload["n"]] = utcnow()

    box.register("test", "create", create)
    box.pace("test", "create", "conversations.create", PER_MINUTE)
    await queue(store, 4)
    box.start()
    found = await until_done(store, 4)
    pause_end = refused[0] + timedelta(seconds=0.5)
    # Row 0 ran before the 429; rows 1-3 all waited out the pause, though 2 and 3 had slots in it.
    assert ran[0] < refused[0] and all(ran[n] >= pause_end for n in (1, 2, 3))
    assert {r.attempts for r in found.values()} == {0}
    async with store.session() as s:
        bucket = (await s.execute(select(RateBucket))).scalar_one()
    assert bucket.paused_until is not None and abs(bucket.paused_until - pause_end) < timedelta(seconds=0.1)
