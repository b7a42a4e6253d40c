"""Deal-room conversation into the CRM: the transcript, and decisions and action items on the timeline.

`Capture` listens to `ChatEvents`. Its listeners run inside the event's own transaction, next to
the claim on the event id, so an event is captured exactly once or not at all:

- every human message in a deal room is kept with its author, thread and file links; an edit
  keeps the text before it, a deletion drops the text (so search forgets it) and retracts what
  the message produced; messages in other channels are not kept;
- an explicit marker (``Decision:``, ``#action``…) always puts an entry on the timeline;
- otherwise the detector's finding is suggested to the author, logged at once with an Undo, or
  ignored, as `CAPTURE_MODE` says; the offer is an outbox operation, sent after the commit;
- the capture reaction by a member of the deal team logs the message as a decision; when the
  last such reaction is removed by whoever added it, the entry is retracted.

One entry per source message whatever the path (marker, reaction, shortcut, button, retries):
``(source_platform, source_ref)`` is unique, with ``source_ref = "<channel>/<message>"``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store import Actor, Store
from crm_store.deals import MAX_NOTE_CHARS, EntryKind, entry_from
from crm_store.engine import claim_statement, insert_unless_present
from crm_store.events import timeline_changed
from crm_store.models import (
    AuditLog,
    DealRoom,
    DealTeamMember,
    Opportunity,
    TimelineEntry,
    TranscriptMessage,
    utcnow,
)
from crm_store.outbox import Claimed, Outbox, Queued
from crm_store.visibility import opportunity_visible
from crm_store.chat_events import WAKE_OUTBOX, ChatEvents, ChatMessage, ReactionChanged
from transcripts.detect import detect, explicit

log = logging.getLogger("dealbot.capture")

Mode = Literal["suggest", "auto", "explicit"]
ROOM_CACHE_S = 60.0  # which channels are deal rooms changes only when a room is made
ROOM_STATES = ("active", "closed")  # rooms whose conversation is kept (not archived or left)
NOTICE = "capture.notice"


@dataclass(frozen=True)
class CaptureSettings:
    mode: Mode = "suggest"
    reaction: str = "white_check_mark"


class Whisper(Protocol):
    """The one platform call capture makes: a message only one person in a channel sees."""

    platform: str

    async def post_ephemeral(self, channel_id: str, user_id: str, message: Any) -> None: ...


class CaptureMessages(Protocol):
    """What capture says to the author; composed where the texts live (handlers)."""

    def suggestion(self, kind: EntryKind, deal: str, excerpt: str, message_id: int) -> Any: ...
    def logged(self, kind: EntryKind, deal: str, excerpt: str, message_id: int) -> Any: ...


@dataclass(frozen=True, slots=True)
class Room:
    id: int
    opportunity_id: int


class Capture:
    def __init__(self, store: Store, events: ChatEvents, settings: CaptureSettings, messages: CaptureMessages,
                 whispers: Sequence[Whisper] = ()) -> None:
        self.store, self.settings, self.messages = store, settings, messages
        self._rooms: dict[tuple[str, str], tuple[float, Room | None]] = {}
        self._whispers = {w.platform: w for w in whispers}
        for whisper in whispers:
            store.outbox.register(whisper.platform, NOTICE, self._notice)
        events.subscribe_batch(ChatMessage, self.on_messages)
        events.subscribe(ReactionChanged, self.on_reaction)

    # -- messages -------------------------------------------------------------------------------

    async def on_messages(self, s: AsyncSession, messages: list[ChatMessage]) -> None:
        """The messages of one commit: new ones kept with one statement, then what they say."""
        in_rooms = []
        for msg in messages:
            room = None if msg.from_bot else await self._room(s, msg.platform, msg.channel_id)
            if room is not None:  # the bot's own posts and other bots are not people speaking
                in_rooms.append((msg, room))
        new = [(msg, room) for msg, room in in_rooms if msg.change == "new"]
        kept = await self._keep(s, new)
        for msg, room in in_rooms:
            if msg.change == "deleted":
                await self._deleted(s, msg)
            elif msg.change == "edited":
                await self._edited(s, msg, room)
            elif (msg.platform, msg.channel_id, msg.message_id) in kept:
                await self._said(s, msg, room, kept.pop((msg.platform, msg.channel_id, msg.message_id)))

    async def _new(self, s: AsyncSession, msg: ChatMessage, room: Room) -> None:
        kept = await self._keep(s, [(msg, room)])
        if kept:
            await self._said(s, msg, room, kept[(msg.platform, msg.channel_id, msg.message_id)])

    async def _said(self, s: AsyncSession, msg: ChatMessage, room: Room, message_id: int) -> None:
        """A message kept for the first time: what it says may go on the timeline."""
        marked = explicit(msg.text)
        if marked is not None:
            await _entry(s, self.store.outbox, msg, room, marked.kind, marked.text, captured="marker")
            return
        if self.settings.mode == "explicit" or msg.actor_id is None:
            return
        found = detect(msg.text)
        if found is None or found.kind not in ("decision", "action_item"):
            return
        kind: EntryKind = "decision" if found.kind == "decision" else "action_item"
        if self.settings.mode == "auto":
            await _entry(s, self.store.outbox, msg, room, kind, msg.text, captured="detected")
        if msg.platform in self._whispers:
            await self._offer(s, msg, room, kind, message_id)

    async def _keep(self, s: AsyncSession, new: list[tuple[ChatMessage, Room]]) -> dict[tuple[str, str, str], int]:
        """Insert the messages not kept before (another event id may carry the same message);
        their ids, by (platform, channel, message)."""
        if not new:
            return {}
        rows = [{"deal_room_id": room.id, "opportunity_id": room.opportunity_id, "platform": msg.platform,
                 "channel_id": msg.channel_id, "message_ref": msg.message_id, "thread_ref": msg.thread_id,
                 "author_id": msg.actor_id, "author_platform_id": msg.user_id, "text": msg.text,
                 "files": list(msg.files) or None, "permalink": msg.permalink, "posted_at": msg.sent_at}
                for msg, room in new]
        keep = claim_statement(s, TranscriptMessage).returning(
            TranscriptMessage.id, TranscriptMessage.platform, TranscriptMessage.channel_id, TranscriptMessage.message_ref)
        return {(platform, channel, ref): row_id for row_id, platform, channel, ref in await s.execute(keep, rows)}

    async def _edited(self, s: AsyncSession, msg: ChatMessage, room: Room) -> None:
        kept = await _kept(s, msg.platform, msg.channel_id, msg.message_id)
        if kept is None:  # said before Dealbot listened: keep it from now on
            await self._new(s, msg, room)
            return
        if kept.deleted_at is not None:
            return
        kept.previous_versions = [*(kept.previous_versions or []),
                                  {"text": kept.text, "until": utcnow().isoformat()}]
        kept.text, kept.edited_at = msg.text, utcnow()
        entry = await entry_from(s, msg.platform, _ref(msg))
        marked = explicit(msg.text)
        if entry is not None and entry.retracted_at is None:
            entry.text = (marked.text if marked else msg.text)[:MAX_NOTE_CHARS]
            await _announce(s, self.store.outbox, room.opportunity_id, entry.kind)
        elif entry is None and marked is not None:
            await _entry(s, self.store.outbox, msg, room, marked.kind, marked.text, captured="marker")

    async def _deleted(self, s: AsyncSession, msg: ChatMessage) -> None:
        kept = await _kept(s, msg.platform, msg.channel_id, msg.message_id)
        now = utcnow()
        if kept is not None and kept.deleted_at is None:
            kept.text, kept.previous_versions, kept.deleted_at = None, None, now  # gone from search too
        entry = await entry_from(s, msg.platform, _ref(msg))
        if entry is not None and entry.retracted_at is None:
            entry.retracted_at = now
            entry.data = {**(entry.data or {}), "retracted": "message deleted"}
            await _announce(s, self.store.outbox, entry.opportunity_id, entry.kind)

    async def _offer(self, s: AsyncSession, msg: ChatMessage, room: Room, kind: EntryKind, message_id: int) -> None:
        payload = {"channel_id": msg.channel_id, "user_id": msg.user_id, "message_id": message_id, "kind": kind,
                   "mode": self.settings.mode, "lane": f"capture:{msg.channel_id}"}
        await self.store.outbox.enqueue(s, [Queued(msg.platform, NOTICE, f"{msg.platform}:{NOTICE}:{_ref(msg)}",
                                                   payload)])
        s.info[WAKE_OUTBOX] = True

    async def _notice(self, item: Claimed) -> dict[str, Any] | None:
        """Tell the author what was found: "Log this?" (suggest) or "Logged, Undo" (auto)."""
        async with self.store.session() as s:
            row = (await s.execute(select(TranscriptMessage.text, Opportunity.name)
                                   .join(Opportunity, Opportunity.id == TranscriptMessage.opportunity_id)
                                   .where(TranscriptMessage.id == item.payload["message_id"]))).first()
        if row is None or row.text is None:
            return {"skipped": "message gone"}
        kind: EntryKind = item.payload["kind"]
        compose = self.messages.logged if item.payload["mode"] == "auto" else self.messages.suggestion
        message = compose(kind, row.name, row.text, item.payload["message_id"])
        await self._whispers[item.platform].post_ephemeral(item.payload["channel_id"], item.payload["user_id"],
                                                           message)
        return None

    # -- reactions ------------------------------------------------------------------------------

    async def on_reaction(self, s: AsyncSession, event: ReactionChanged) -> None:
        if event.reaction != self.settings.reaction or event.actor_id is None:
            return
        room = await self._room(s, event.platform, event.channel_id)
        if room is None or not await _on_team(s, room.opportunity_id, event.actor_id):
            return  # an outsider's reaction decides nothing
        ref = f"{event.channel_id}/{event.message_id}"
        entry = await entry_from(s, event.platform, ref)
        if event.added:
            await self._reacted(s, event, room, ref, entry)
        elif entry is not None and _unreacted(entry, event.actor_id):
            await _announce(s, self.store.outbox, room.opportunity_id, entry.kind)

    async def _reacted(self, s: AsyncSession, event: ReactionChanged, room: Room, ref: str,
                       entry: TimelineEntry | None) -> None:
        if entry is None:
            kept = await _kept(s, event.platform, event.channel_id, event.message_id)
            if kept is None or kept.text is None:
                return  # a message Dealbot never heard (or deleted): nothing to log
            marked = explicit(kept.text)
            text = marked.text if marked else kept.text
            await _write(s, self.store.outbox, room, event.platform, ref, "decision", text,
                         author_id=kept.author_id, permalink=kept.permalink, occurred_at=kept.posted_at,
                         data={"captured": "reaction", "reactors": [event.actor_id]})
            return
        reactors = list((entry.data or {}).get("reactors", []))
        if event.actor_id not in reactors:
            entry.data = {**(entry.data or {}), "reactors": [*reactors, event.actor_id]}
        if entry.retracted_at is not None and (entry.data or {}).get("captured") == "reaction":
            entry.retracted_at = None  # reacted again after a retraction
            await _announce(s, self.store.outbox, room.opportunity_id, entry.kind)

    # -- rooms ----------------------------------------------------------------------------------

    async def _room(self, s: AsyncSession, platform: str, channel_id: str) -> Room | None:
        key = (platform, channel_id)
        hit = self._rooms.get(key)
        if hit is not None and time.monotonic() - hit[0] < ROOM_CACHE_S:
            return hit[1]
        found = (await s.execute(select(DealRoom.id, DealRoom.opportunity_id).where(
            DealRoom.platform == platform, DealRoom.channel_id == channel_id,
            DealRoom.status.in_(ROOM_STATES)))).first()
        room = Room(found.id, found.opportunity_id) if found else None
        if len(self._rooms) > 10_000:
            self._rooms.clear()
        self._rooms[key] = (time.monotonic(), room)
        return room


# -- what the buttons do (the hidden `capture` command) ---------------------------------------

@dataclass(frozen=True, slots=True)
class Outcome:
    deal: str
    kind: EntryKind
    done: bool  # False: nothing to do (logged before, or nothing to undo)


async def log_message(store: Store, actor: Actor, message_id: int, kind: EntryKind) -> Outcome | None:
    """The author pressed "Log": the message becomes an entry (once). None: not theirs to log."""
    async with store.transaction(renames=False) as s:
        found = await _visible_message(s, actor, message_id)
        if found is None or found[0].text is None:
            return None
        kept, deal = found
        text, ref = kept.text or "", f"{kept.channel_id}/{kept.message_ref}"
        if await entry_from(s, kept.platform, ref) is not None:
            return Outcome(deal, kind, done=False)
        room = Room(kept.deal_room_id, kept.opportunity_id)
        marked = explicit(text)
        await _write(s, store.outbox, room, kept.platform, ref, kind, marked.text if marked else text,
                     author_id=kept.author_id or actor.user_id, permalink=kept.permalink,
                     occurred_at=kept.posted_at, data={"captured": "suggested", "confirmed_by": actor.user_id})
    store.outbox.wake()
    return Outcome(deal, kind, done=True)


async def undo(store: Store, actor: Actor, message_id: int) -> Outcome | None:
    """"Undo" on an automatic capture: the entry is retracted (and stays visible as such)."""
    async with store.transaction(renames=False) as s:
        found = await _visible_message(s, actor, message_id)
        if found is None:
            return None
        kept, deal = found
        entry = await entry_from(s, kept.platform, f"{kept.channel_id}/{kept.message_ref}")
        if entry is None or entry.retracted_at is not None or not _may_undo(actor, entry):
            return Outcome(deal, "decision", done=False)
        entry.retracted_at = utcnow()
        entry.data = {**(entry.data or {}), "retracted": "undone", "retracted_by": actor.user_id}
        kind: EntryKind = "action_item" if entry.kind == "action_item" else "decision"
        s.add(AuditLog(actor_user_id=actor.user_id, actor=actor.email or actor.name, via="capture",
                       action=f"{entry.kind}.retract", entity_type="opportunity", entity_id=str(kept.opportunity_id),
                       details={"timeline_entry_id": entry.id}))
        await _announce(s, store.outbox, kept.opportunity_id, entry.kind)
    store.outbox.wake()
    return Outcome(deal, kind, done=True)


def _may_undo(actor: Actor, entry: TimelineEntry) -> bool:
    """Whose Undo counts: the author of what was logged, whoever confirmed it, or an admin."""
    return actor.role == "admin" or actor.user_id in (entry.author_id, (entry.data or {}).get("confirmed_by"))


async def _visible_message(s: AsyncSession, actor: Actor, message_id: int) -> tuple[TranscriptMessage, str] | None:
    row = (await s.execute(select(TranscriptMessage, Opportunity.name)
                           .join(Opportunity, Opportunity.id == TranscriptMessage.opportunity_id)
                           .where(TranscriptMessage.id == message_id, opportunity_visible(actor)))).first()
    return (row[0], row[1]) if row else None


# -- rows ----------------------------------------------------------------------------------------

def _ref(msg: ChatMessage) -> str:
    return f"{msg.channel_id}/{msg.message_id}"


async def _kept(s: AsyncSession, platform: str, channel_id: str, message_ref: str) -> TranscriptMessage | None:
    return (await s.execute(select(TranscriptMessage).where(
        TranscriptMessage.platform == platform, TranscriptMessage.channel_id == channel_id,
        TranscriptMessage.message_ref == message_ref))).scalar_one_or_none()


async def _on_team(s: AsyncSession, opportunity_id: int, user_id: int) -> bool:
    owner = (await s.execute(select(Opportunity.owner_id).where(Opportunity.id == opportunity_id))).scalar_one()
    if owner == user_id:
        return True
    member = await s.execute(select(DealTeamMember.user_id).where(
        DealTeamMember.opportunity_id == opportunity_id, DealTeamMember.user_id == user_id))
    return member.first() is not None


async def _entry(s: AsyncSession, outbox: Outbox, msg: ChatMessage, room: Room, kind: EntryKind, text: str, *,
                 captured: str) -> None:
    thread = {"thread": msg.thread_id} if msg.thread_id else {}
    await _write(s, outbox, room, msg.platform, _ref(msg), kind, text, author_id=msg.actor_id,
                 permalink=msg.permalink, occurred_at=msg.sent_at, data={"captured": captured, **thread})


async def _write(s: AsyncSession, outbox: Outbox, room: Room, platform: str, ref: str, kind: EntryKind, text: str, *,
                 author_id: int | None, permalink: str | None, occurred_at: datetime, data: dict[str, Any]) -> None:
    """One entry per source message: a second writer (another path, a replica) inserts nothing."""
    row = {"opportunity_id": room.opportunity_id, "kind": kind, "text": text.strip()[:MAX_NOTE_CHARS],
           "author_id": author_id, "source_platform": platform, "source_ref": ref, "permalink": permalink,
           "data": {"via": platform, **data}, "occurred_at": occurred_at, "created_at": utcnow()}
    inserted = (await s.execute(insert_unless_present(s, TimelineEntry, [row]).returning(TimelineEntry.id))
                ).scalar_one_or_none()
    if inserted is not None:
        s.add(AuditLog(actor_user_id=author_id, actor=f"{platform}:{ref}", via=platform, action=f"{kind}.capture",
                       entity_type="opportunity", entity_id=str(room.opportunity_id),
                       details={"timeline_entry_id": inserted, "captured": data.get("captured")}))
        await _announce(s, outbox, room.opportunity_id, kind)


async def _announce(s: AsyncSession, outbox: Outbox, opportunity_id: int, kind: str) -> None:
    """The deal's timeline changed: its room refreshes the pinned card (latest decisions)."""
    await outbox.enqueue(s, [timeline_changed(opportunity_id, kind)])
    s.info[WAKE_OUTBOX] = True


def _unreacted(entry: TimelineEntry, user_id: int) -> bool:
    """The reaction was taken back: an entry the reaction made goes when its last reactor
    leaves. True when that retracted it."""
    data = dict(entry.data or {})
    reactors = [r for r in data.get("reactors", []) if r != user_id]
    if len(reactors) == len(data.get("reactors", [])):
        return False  # this person's reaction never counted
    data["reactors"] = reactors
    retract = not reactors and data.get("captured") == "reaction" and entry.retracted_at is None
    if retract:
        entry.retracted_at = utcnow()
        data["retracted"] = "reaction removed"
    entry.data = data
    return retract


async def purge_transcripts(store: Store, older_than: datetime, chunk: int = 5_000) -> int:
    """Retention: drop the text of messages said before `older_than` (timeline entries stay)."""
    purged = 0
    while True:
        async with store.transaction(renames=False) as s:
            old = select(TranscriptMessage.id).where(TranscriptMessage.posted_at < older_than,
                                                     TranscriptMessage.purged_at.is_(None)).limit(chunk)
            ids = list((await s.execute(old)).scalars())
            if not ids:
                return purged
            await s.execute(update(TranscriptMessage).where(TranscriptMessage.id.in_(ids)).values(
                text=None, previous_versions=None, files=None, purged_at=utcnow()))
        purged += len(ids)
