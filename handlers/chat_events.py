"""Chat events as plain objects, received exactly once whatever the platform retries.

Adapters translate a platform's event (a Slack ``message``, ``reaction_added``…) into one of
these and call `ChatEvents.receive`. The claim on ``(platform, event_id)`` is inserted in the
same transaction as whatever the listeners write, so a retried delivery is dropped, and a
delivery that failed half-way leaves no claim and is processed again when the platform retries.
Listeners (transcripts, deal rooms) are subscribed by type.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store import Store
from crm_store.models import AuditLog, ProcessedEvent

log = logging.getLogger("dealbot.chat_events")


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A human message in a channel: new, edited (with the text before) or deleted."""

    platform: str
    event_id: str
    channel_id: str
    message_id: str  # Slack: the message ts
    user_id: str
    text: str
    sent_at: datetime
    thread_id: str | None = None  # the thread's parent message id, for replies
    change: Literal["new", "edited", "deleted"] = "new"
    previous_text: str | None = None
    files: tuple[str, ...] = ()  # links, never the bytes
    from_bot: bool = False


@dataclass(frozen=True, slots=True)
class ReactionChanged:
    platform: str
    event_id: str
    channel_id: str
    message_id: str
    user_id: str
    reaction: str
    added: bool


@dataclass(frozen=True, slots=True)
class MemberJoined:
    platform: str
    event_id: str
    channel_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class AppRemoved:
    """The app was uninstalled or its tokens revoked: stop calling the platform."""

    platform: str
    event_id: str
    workspace_id: str
    reason: str


ChatEvent = ChatMessage | ReactionChanged | MemberJoined | AppRemoved
E = TypeVar("E", ChatMessage, ReactionChanged, MemberJoined, AppRemoved)
Listener = Callable[[AsyncSession, Any], Awaitable[None]]


async def audit_removal(s: AsyncSession, event: AppRemoved) -> None:
    s.add(AuditLog(actor=f"{event.platform}:{event.workspace_id}", via=event.platform, action=f"app.{event.reason}",
                   entity_type="workspace", entity_id=event.workspace_id, details={}))


@dataclass
class ChatEvents:
    store: Store
    on_received: Callable[[ChatEvent, bool], None] | None = None  # (event, first time?) for metrics
    received: int = 0
    duplicates: int = 0
    _listeners: dict[type, list[Listener]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.subscribe(AppRemoved, audit_removal)

    def subscribe(self, kind: type[E], listener: Callable[[AsyncSession, E], Awaitable[None]]) -> None:
        self._listeners.setdefault(kind, []).append(listener)

    async def receive(self, event: ChatEvent) -> bool:
        """Process `event` once; False when it was processed before (a platform retry)."""
        async with self.store.transaction() as s:
            try:
                async with s.begin_nested():  # the claim; on PostgreSQL a concurrent twin waits here
                    await s.execute(insert(ProcessedEvent).values(platform=event.platform, event_id=event.event_id))
            except IntegrityError:
                log.info("duplicate event dropped", extra={"platform": event.platform, "event_id": event.event_id})
                self._count(event, first=False)
                return False
            for listener in self._listeners.get(type(event), []):
                await listener(s, event)
        self._count(event, first=True)
        return True

    def _count(self, event: ChatEvent, *, first: bool) -> None:
        if first:
            self.received += 1
        else:
            self.duplicates += 1
        if self.on_received is not None:
            self.on_received(event, first)
