"""Chat events as plain objects, received exactly once whatever the platform retries.

Adapters translate a platform's event (a Slack ``message``, ``reaction_added``…) into one of
these and call `ChatEvents.receive`, which answers only once the event is durably handled.
The claim on ``(platform, event_id)`` is inserted in the same transaction as whatever the
listeners write, so a retried delivery is dropped, and a delivery that failed half-way leaves no
claim and is processed again when the platform retries. Listeners (transcripts, deal rooms)
are subscribed by type.

Events that arrive while a transaction is being committed are claimed together in the next one
(group commit): under a burst the cost of a commit is shared by the whole batch, and when
events trickle in each is committed on its own without waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store import Store
from crm_store.engine import insert_unless_present
from crm_store.models import AuditLog, ProcessedEvent, utcnow

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
    actor_id: int | None = None  # the author's CRM user, when the adapter knows them
    permalink: str | None = None


@dataclass(frozen=True, slots=True)
class ReactionChanged:
    platform: str
    event_id: str
    channel_id: str
    message_id: str
    user_id: str
    reaction: str
    added: bool
    actor_id: int | None = None  # who reacted, as a CRM user, when the adapter knows them


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
BatchListener = Callable[[AsyncSession, list[Any]], Awaitable[None]]


async def audit_removal(s: AsyncSession, event: AppRemoved) -> None:
    s.add(AuditLog(actor=f"{event.platform}:{event.workspace_id}", via=event.platform, action=f"app.{event.reason}",
                   entity_type="workspace", entity_id=event.workspace_id, details={}))


MAX_BATCH = 500  # events claimed in one transaction
WAKE_OUTBOX = "wake_outbox"  # a listener sets this in the session's info when it queued outbox rows
# Claims are kept well past the platforms' retry windows (Slack retries for about 5 minutes).
KEEP_CLAIMS = timedelta(hours=24)
PURGE_CHUNK = 5_000  # rows per delete, so event claims never wait long behind a purge


@dataclass
class _Pending:
    event: ChatEvent
    done: asyncio.Future[bool]


@dataclass
class ChatEvents:
    store: Store
    on_received: Callable[[ChatEvent, bool], None] | None = None  # (event, first time?) for metrics
    received: int = 0
    duplicates: int = 0
    _listeners: dict[type, list[Listener]] = field(default_factory=dict)
    _batch_listeners: dict[type, list[BatchListener]] = field(default_factory=dict)
    _queue: list[_Pending] = field(default_factory=list)
    _committer: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.subscribe(AppRemoved, audit_removal)

    def subscribe(self, kind: type[E], listener: Callable[[AsyncSession, E], Awaitable[None]]) -> None:
        self._listeners.setdefault(kind, []).append(listener)

    def subscribe_batch(self, kind: type[E], listener: Callable[[AsyncSession, list[E]], Awaitable[None]]) -> None:
        """A listener given all new events of `kind` in a commit at once, so it can write them with
        a few statements (a transcript row per message). If it fails, it is called again for each
        event alone, so one bad event fails alone."""
        self._batch_listeners.setdefault(kind, []).append(listener)

    async def receive(self, event: ChatEvent) -> bool:
        """Process `event` once; False when it was processed before (a platform retry).

        Returns after the commit; raises when the event could not be handled (nothing of it is
        kept, so the platform's retry gets another chance).
        """
        pending = _Pending(event, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_queued())
        first = await asyncio.shield(pending.done)  # a caller giving up must not cancel the batch
        self._count(event, first=first)
        return first

    async def _commit_queued(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    outcomes = await self._commit(batch)
                except Exception as exc:  # the whole transaction is gone: every event in it failed
                    for pending in batch:
                        pending.done.set_exception(exc)
                    continue
                except asyncio.CancelledError:  # shutting down: nothing of this batch was kept
                    for pending in batch + self._queue:
                        pending.done.cancel()
                    self._queue.clear()
                    raise
                for pending, outcome in zip(batch, outcomes):
                    if isinstance(outcome, BaseException):
                        pending.done.set_exception(outcome)
                    else:
                        pending.done.set_result(outcome)
        finally:
            self._committer = None

    async def _commit(self, batch: list[_Pending]) -> list[bool | BaseException]:
        """Claim and handle `batch` in one transaction; one outcome per event, in order."""
        keys = sorted({(p.event.platform, p.event.event_id) for p in batch})  # one lock order for all replicas
        outcomes: list[bool | BaseException] = []
        async with self.store.transaction(renames=False) as s:
            s.info.pop(WAKE_OUTBOX, None)
            claimed = await self._claim(s, keys)
            fresh = {(p.event.platform, p.event.event_id): p.event for p in batch}
            batched = await self._run_batched(s, [e for key, e in fresh.items() if key in claimed])
            handled: dict[tuple[str, str], bool | BaseException] = {}
            for pending in batch:
                key = (pending.event.platform, pending.event.event_id)
                if key in handled:  # the same event twice in one batch: the copy shares the outcome
                    outcome = handled[key]
                    outcomes.append(False if outcome is True else outcome)
                    continue
                handled[key] = outcome = await self._handle(s, pending.event, batched) if key in claimed else False
                outcomes.append(outcome)
        if s.info.pop(WAKE_OUTBOX, False):
            self.store.outbox.wake()  # a listener queued work: do it now, not at the next poll
        for pending, outcome in zip(batch, outcomes):
            if outcome is False:
                log.info("duplicate event dropped",
                         extra={"platform": pending.event.platform, "event_id": pending.event.event_id})
        return outcomes

    async def _claim(self, s: AsyncSession, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Insert the claims; the keys inserted now (the others were claimed before)."""
        rows = [{"platform": platform, "event_id": event_id} for platform, event_id in keys]
        result = await s.execute(insert_unless_present(s, ProcessedEvent, rows)
                                 .returning(ProcessedEvent.platform, ProcessedEvent.event_id))
        return {(platform, event_id) for platform, event_id in result}

    async def _run_batched(self, s: AsyncSession, events: list[ChatEvent]) -> bool:
        """The batch listeners over `events`, in one savepoint; False (nothing kept) if one failed."""
        kinds = [kind for kind in self._batch_listeners if any(type(e) is kind for e in events)]
        if not kinds:
            return True
        try:
            async with s.begin_nested():
                for kind in kinds:
                    for listener in self._batch_listeners[kind]:
                        await listener(s, [e for e in events if type(e) is kind])
        except Exception:
            log.warning("a batch listener failed; handling its events one by one", exc_info=True)
            return False
        return True

    async def _handle(self, s: AsyncSession, event: ChatEvent, batched: bool = True) -> bool | BaseException:
        """Run the listeners (and, when the batch did not run, the batch listeners on this event
        alone); on failure undo their work and the claim, and return the error."""
        listeners = self._listeners.get(type(event), [])
        alone = [] if batched else self._batch_listeners.get(type(event), [])
        if not listeners and not alone:
            return True
        try:
            async with s.begin_nested():
                for batch_listener in alone:
                    await batch_listener(s, [event])
                for listener in listeners:
                    await listener(s, event)
        except Exception as exc:
            await s.execute(delete(ProcessedEvent).where(ProcessedEvent.platform == event.platform,
                                                         ProcessedEvent.event_id == event.event_id))
            return exc
        return True

    async def purge(self, keep: timedelta = KEEP_CLAIMS) -> int:
        """Forget claims older than `keep` (a retry that late is not coming); rows deleted."""
        before, deleted = utcnow() - keep, 0
        while True:
            async with self.store.transaction(renames=False) as s:
                old = select(ProcessedEvent.id).where(ProcessedEvent.processed_at < before).limit(PURGE_CHUNK)
                result = await s.execute(delete(ProcessedEvent).where(ProcessedEvent.id.in_(old.scalar_subquery())))
            count = result.rowcount or 0  # type: ignore[attr-defined]
            deleted += count
            if count < PURGE_CHUNK:
                return deleted

    def _count(self, event: ChatEvent, *, first: bool) -> None:
        if first:
            self.received += 1
        else:
            self.duplicates += 1
        if self.on_received is not None:
            self.on_received(event, first)
