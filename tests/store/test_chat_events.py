"""Chat events are handled exactly once, committed in groups, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store import Store
from crm_store.models import AuditLog, ProcessedEvent
from crm_store.chat_events import KEEP_CLAIMS, ChatEvents, ChatMessage

SENT = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


def message(n: int, text: str = "hello") -> ChatMessage:
    return ChatMessage(platform="slack", event_id=f"Ev{n:05d}", channel_id="C1", message_id=f"{n}.000100",
                       user_id="U1", text=text, sent_at=SENT)


async def note_it(s: AsyncSession, event: ChatMessage) -> None:
    """A listener that writes: its row must exist exactly when the event's claim does."""
    if event.text == "boom":
        raise RuntimeError("listener failed")
    s.add(AuditLog(actor="test", via="slack", action="message.seen", entity_type="message",
                   entity_id=event.event_id, details={}))


async def count(store: Store, model: type, **where: str) -> int:
    async with store.session() as s:
        query = select(func.count()).select_from(model).filter_by(**where)
        return int((await s.execute(query)).scalar_one())


async def test_a_burst_is_claimed_once_per_event_even_when_copies_arrive_together(store: Store) -> None:
    events = ChatEvents(store)
    events.subscribe(ChatMessage, note_it)
    burst = [message(n) for n in range(300)] + [message(n) for n in range(0, 300, 10)]  # 30 copies in flight
    results = await asyncio.gather(*(events.receive(e) for e in burst))

    firsts = [e.event_id for e, first in zip(burst, results) if first]
    assert sorted(firsts) == sorted({e.event_id for e in burst})  # each event handled once, by one delivery
    assert (events.received, events.duplicates) == (300, 30)
    assert await count(store, ProcessedEvent) == 300
    assert await count(store, AuditLog, action="message.seen") == 300

    assert await events.receive(message(7)) is False  # a retry long after: still a duplicate
    assert await count(store, AuditLog, action="message.seen") == 300


async def test_a_failing_event_keeps_nothing_and_does_not_sink_its_batch(store: Store) -> None:
    events = ChatEvents(store)
    events.subscribe(ChatMessage, note_it)
    batch = [message(1), message(2, "boom"), message(3), message(2, "boom")]
    results = await asyncio.gather(*(events.receive(e) for e in batch), return_exceptions=True)

    assert results[0] is True and results[2] is True
    assert isinstance(results[1], RuntimeError) and isinstance(results[3], RuntimeError)  # its copy fails too
    assert await count(store, ProcessedEvent, event_id="Ev00002") == 0  # no claim: the retry gets a chance
    assert await count(store, AuditLog, action="message.seen") == 2

    assert await events.receive(message(2, "fixed on retry")) is True
    assert await count(store, AuditLog, action="message.seen", entity_id="Ev00002") == 1


async def test_two_replicas_receiving_the_same_events_handle_each_once(store: Store, db_url: str) -> None:
    other = await Store.open(db_url, upgrade=False)
    try:
        replicas = [ChatEvents(store), ChatEvents(other)]
        for replica in replicas:
            replica.subscribe(ChatMessage, note_it)
        deliveries = [(replicas[n % 2], message(n // 2)) for n in range(200)]  # every event sent to both
        results = await asyncio.gather(*(r.receive(e) for r, e in deliveries))
    finally:
        await other.close()
    assert sum(results) == 100
    assert await count(store, AuditLog, action="message.seen") == 100


@pytest.mark.parametrize("copies", [1, 3])
async def test_a_lone_event_is_committed_without_waiting_for_company(store: Store, copies: int) -> None:
    events = ChatEvents(store)
    results = await asyncio.wait_for(asyncio.gather(*(events.receive(message(42)) for _ in range(copies))), 5)
    assert sorted(results) == [False] * (copies - 1) + [True]


async def test_claims_are_forgotten_after_a_day_in_chunks(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("crm_store.chat_events.PURGE_CHUNK", 3)  # several deletes for 7 old rows
    events = ChatEvents(store)
    long_ago = datetime.now(timezone.utc) - KEEP_CLAIMS - timedelta(minutes=1)
    async with store.transaction() as s:
        s.add_all(ProcessedEvent(platform="slack", event_id=f"EvOld{n}", processed_at=long_ago) for n in range(7))
    await events.receive(message(1))

    assert await events.purge() == 7
    async with store.session() as s:
        assert list((await s.execute(select(ProcessedEvent.event_id))).scalars()) == ["Ev00001"]
    assert await events.receive(message(1)) is False  # a recent claim still stops a retry
