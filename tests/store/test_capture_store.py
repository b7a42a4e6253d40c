"""Capture's store side on SQLite and PostgreSQL: a burst of room messages kept with one
statement per commit, duplicates and retries collapsing, and one bad event failing alone."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store import Store
from crm_store.chat_events import ChatEvents, ChatMessage
from crm_store.models import DealRoom, ProcessedEvent, TimelineEntry, TranscriptMessage
from handlers.capture import CaptureTexts
from tests.org import Org
from transcripts.capture import Capture, CaptureSettings

SENT = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


def said(n: int, text: str, event: str | None = None, channel: str = "CROOM") -> ChatMessage:
    return ChatMessage(platform="slack", event_id=event or f"Ev{n:05d}", channel_id=channel,
                       message_id=f"{n}.000100", user_id="URITA", text=text, sent_at=SENT)


async def count(store: Store, model: type) -> int:
    async with store.session() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


@pytest.fixture
async def events(store: Store, org: Org) -> ChatEvents:
    async with store.transaction() as s:
        s.add(DealRoom(opportunity_id=org.deals["acme_renewal"], platform="slack", channel_id="CROOM",
                       status="active", listed_absent=[]))
    hub = ChatEvents(store)
    Capture(store, hub, CaptureSettings(mode="explicit"), CaptureTexts())
    return hub


async def test_a_burst_keeps_every_message_once_and_its_markers_once(store: Store, events: ChatEvents) -> None:
    burst = [said(n, f"Decision: option {n}" if n % 10 == 0 else f"message {n}") for n in range(60)]
    copies = [said(n, f"message {n}", event=f"EvCopy{n}") for n in range(1, 60, 7)]  # same messages, new ids
    elsewhere = [said(100 + n, "Decision: not a room", channel="CGENERAL") for n in range(3)]
    results = await asyncio.gather(*(events.receive(e) for e in [*burst, *copies, *elsewhere, *burst[:5]]))
    assert results.count(True) == len(burst) + len(copies) + len(elsewhere)
    assert await count(store, TranscriptMessage) == 60
    async with store.session() as s:
        entries = sorted(e.text for e in (await s.execute(select(TimelineEntry))).scalars())
    assert entries == sorted(f"option {n}" for n in range(0, 60, 10))


async def test_one_failing_event_fails_alone_and_keeps_no_claim(store: Store, events: ChatEvents) -> None:
    async def fussy(s: AsyncSession, batch: list[ChatMessage]) -> None:
        if any(m.text == "boom" for m in batch):
            raise RuntimeError("cannot take this one")

    events.subscribe_batch(ChatMessage, fussy)
    results = await asyncio.gather(*(events.receive(said(n, "boom" if n == 3 else f"fine {n}")) for n in range(8)),
                                   return_exceptions=True)
    assert [isinstance(r, RuntimeError) for r in results] == [n == 3 for n in range(8)]
    assert await count(store, TranscriptMessage) == 7 and await count(store, ProcessedEvent) == 7
