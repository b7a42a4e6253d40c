"""The outbox's contract, on SQLite and PostgreSQL: every row worked once, failures retried then
failed, leases that outlive a crashed worker, and a drain on stop."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, update

from crm_store import Store
from crm_store.engine import session_factory
from crm_store.models import OutboxItem, utcnow
from crm_store.outbox import Claimed, GiveUp, Outbox, Retry


async def enqueue(store: Store, count: int, platform: str = "test", operation: str = "op") -> list[int]:
    now = utcnow()
    async with store.transaction() as s:
        await s.execute(insert(OutboxItem), [
            {"idempotency_key": f"{platform}:{operation}:{i}", "platform": platform, "operation": operation,
             "payload": {"n": i}, "next_attempt_at": now} for i in range(count)])
        return list((await s.execute(select(OutboxItem.id).where(OutboxItem.platform == platform)
                                     .order_by(OutboxItem.id))).scalars())


async def rows(store: Store) -> dict[int, OutboxItem]:
    async with store.session() as s:
        return {r.id: r for r in (await s.execute(select(OutboxItem))).scalars()}


def worker(store: Store, **options: Any) -> Outbox:
    """Another worker on the same database, as a second replica would have."""
    return Outbox(session_factory(store.engine), **options)


async def test_each_row_is_worked_once_and_marked_done_with_its_result(store: Store) -> None:
    ids = await enqueue(store, 5)
    seen: list[tuple[int, str]] = []

    async def handler(item: Claimed) -> dict[str, Any] | None:
        seen.append((item.payload["n"], item.idempotency_key))
        return {"posted": item.payload["n"]} if item.payload["n"] % 2 else None

    box = worker(store, batch=2)
    box.register("test", "op", handler)
    assert [await box.run_once() for _ in range(4)] == [2, 2, 1, 0]
    assert seen == [(n, f"test:op:{n}") for n in range(5)]
    stored = await rows(store)
    assert {stored[i].status for i in ids} == {"done"}
    assert [stored[i].result for i in ids] == [None, {"posted": 1}, None, {"posted": 3}, None]
    assert all(stored[i].locked_by is None and stored[i].done_at is not None for i in ids)


async def test_two_workers_racing_never_work_the_same_row(store: Store) -> None:
    await enqueue(store, 60)
    seen: list[int] = []

    async def handler(item: Claimed) -> None:
        seen.append(item.id)
        await asyncio.sleep(0)

    boxes = [worker(store, batch=7) for _ in range(3)]
    for box in boxes:
        box.register("test", "op", handler)

    async def drain(box: Outbox) -> None:
        while await box.run_once():
            pass

    await asyncio.gather(*(drain(box) for box in boxes))
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 60


async def test_failures_back_off_then_fail_for_good(store: Store) -> None:
    [row_id] = await enqueue(store, 1)

    async def broken(item: Claimed) -> None:
        raise ConnectionError("platform unreachable")

    box = worker(store, max_attempts=3, base_delay_s=60)
    box.register("test", "op", broken)
    assert await box.run_once() == 1
    row = (await rows(store))[row_id]
    assert (row.status, row.attempts, row.locked_by) == ("pending", 1, None)
    assert row.last_error == "ConnectionError: platform unreachable"
    assert timedelta(seconds=50) < row.next_attempt_at - utcnow() <= timedelta(seconds=60)
    assert await box.run_once() == 0  # not due yet
    for attempt in (2, 3):
        async with store.transaction() as s:
            await s.execute(update(OutboxItem).values(next_attempt_at=utcnow()))
        assert await box.run_once() == 1
        row = (await rows(store))[row_id]
        assert row.attempts == attempt
    assert row.status == "failed"  # third attempt of three: given up, kept for an operator
    async with store.transaction() as s:
        await s.execute(update(OutboxItem).values(next_attempt_at=utcnow()))
    assert await box.run_once() == 0


async def test_a_handler_can_ask_for_a_later_retry_or_give_up(store: Store) -> None:
    later, hopeless = await enqueue(store, 2)

    async def handler(item: Claimed) -> None:
        if item.id == later:
            raise Retry("rate limited", after_s=30)
        raise GiveUp("channel_not_found")

    box = worker(store, base_delay_s=1)
    box.register("test", "op", handler)
    assert await box.run_once() == 2
    stored = await rows(store)
    assert stored[later].status == "pending"
    assert timedelta(seconds=25) < stored[later].next_attempt_at - utcnow() <= timedelta(seconds=30)
    assert (stored[hopeless].status, stored[hopeless].attempts) == ("failed", 1)


async def test_a_lease_held_elsewhere_is_respected_until_it_runs_out(store: Store) -> None:
    held, expired = await enqueue(store, 2)
    async with store.transaction() as s:
        await s.execute(update(OutboxItem).where(OutboxItem.id == held)
                        .values(locked_by="other:1", locked_until=utcnow() + timedelta(minutes=5)))
        await s.execute(update(OutboxItem).where(OutboxItem.id == expired)
                        .values(locked_by="crashed:2", locked_until=utcnow() - timedelta(seconds=1)))
    seen: list[int] = []

    async def handler(item: Claimed) -> None:
        seen.append(item.id)

    box = worker(store)
    box.register("test", "op", handler)
    assert await box.run_once() == 1
    assert seen == [expired]
    assert (await rows(store))[held].status == "pending"


async def test_rows_for_platforms_this_worker_does_not_serve_are_left_alone(store: Store) -> None:
    [teams_row] = await enqueue(store, 1, platform="teams")

    async def handler(item: Claimed) -> None:
        raise AssertionError("not mine")

    box = worker(store)
    box.register("slack", "post", handler)
    assert await box.run_once() == 0
    row = (await rows(store))[teams_row]
    assert (row.status, row.locked_by, row.attempts) == ("pending", None, 0)


async def test_started_worker_reacts_to_a_wake_and_stop_drains_what_is_due(store: Store) -> None:
    seen: list[int] = []

    async def handler(item: Claimed) -> None:
        seen.append(item.payload["n"])

    box = worker(store, poll_s=3600)  # only a wake can make it look before stop
    box.register("test", "op", handler)
    box.start()
    await enqueue(store, 3)
    box.wake()
    for _ in range(200):
        if len(seen) == 3:
            break
        await asyncio.sleep(0.01)
    assert sorted(seen) == [0, 1, 2]
    await enqueue(store, 2, operation="later")  # committed without a wake ...
    box.register("test", "later", handler)
    await box.stop(drain_timeout_s=10)
    assert sorted(seen) == [0, 0, 1, 1, 2]  # ... and still worked before stop returned
    assert {r.status for r in (await rows(store)).values()} == {"done"}


async def test_events_written_by_a_running_worker_are_handed_to_it_without_a_second_claim(
        store: Store, org: Any) -> None:
    from crm_store.records import OpportunityRecord
    from crm_store.sync import Sync, Who

    delivered: list[tuple[str, ...]] = []
    release = asyncio.Event()

    async def listener(event: Any) -> None:
        delivered.append(tuple(c["field"] for c in event.changes))
        await release.wait()  # hold the delivery open while the test looks at the row

    store.changes.subscribe(listener)
    other = worker(store)  # another replica, polling the same table
    other.register("dealbot", "opportunity.changed", store.changes.deliver)
    record = OpportunityRecord.model_validate({
        "name": "Handed Over", "account_external_id": "A-acme", "amount": "5000", "currency": "EUR",
        "stage": "Proposal", "owner_email": "rep.a@org.test"})
    store.outbox.start()
    try:
        await Sync(store, Who("api", "test")).upsert("opportunities", [("O-handed", record)])
        for _ in range(200):
            if delivered:
                break
            await asyncio.sleep(0.01)
        assert delivered == [("created",)]
        [row] = (await rows(store)).values()
        assert row.locked_by == store.outbox.owner and row.status == "pending"  # leased when written
        assert row.locked_until is not None and row.locked_until > utcnow()
        assert await other.run_once() == 0  # the lease keeps the other replica off it
    finally:
        release.set()
        await store.outbox.stop(drain_timeout_s=10)
    [row] = (await rows(store)).values()
    assert row.status == "done" and delivered == [("created",)]  # delivered once


async def test_rows_of_one_lane_run_in_order_and_lanes_side_by_side(store: Store) -> None:
    now = utcnow()
    async with store.transaction() as s:
        await s.execute(insert(OutboxItem), [
            {"idempotency_key": f"lane:{i}", "platform": "test", "operation": "op",
             "payload": {"n": i, "lane": "ab"[i % 2]}, "next_attempt_at": now} for i in range(8)])
    busy: set[str] = set()
    most_busy = 0
    order: dict[str, list[int]] = {"a": [], "b": []}

    async def handler(item: Claimed) -> None:
        nonlocal most_busy
        lane = item.payload["lane"]
        assert lane not in busy, "two rows of one lane ran at once"
        busy.add(lane)
        most_busy = max(most_busy, len(busy))
        await asyncio.sleep(0.01)
        busy.discard(lane)
        order[lane].append(item.payload["n"])

    box = worker(store)
    box.register("test", "op", handler)
    assert await box.run_once() == 8
    assert order == {"a": [0, 2, 4, 6], "b": [1, 3, 5, 7]} and most_busy == 2


async def test_stopping_without_a_drain_finishes_the_row_in_hand_and_releases_the_rest(store: Store) -> None:
    await enqueue(store, 5)
    in_hand, go_on = asyncio.Event(), asyncio.Event()
    worked: list[int] = []

    async def slow(item: Claimed) -> None:
        in_hand.set()
        await go_on.wait()
        worked.append(item.payload["n"])

    first = worker(store, batch=5, poll_s=0.05)
    first.register("test", "op", slow)
    first.start()
    await in_hand.wait()
    stopping = asyncio.create_task(first.stop(drain_timeout_s=0))
    await asyncio.sleep(0.05)
    go_on.set()
    await stopping
    assert worked == [0]
    second = worker(store)  # takes the other rows at once, not when the first one's lease runs out
    second.register("test", "op", slow)
    assert await second.run_once() == 4 and worked == [0, 1, 2, 3, 4]
