"""The local shell adapter: a console that behaves like a chat with Dealbot.

Like every adapter it only translates: a typed line becomes an `Invocation`, the dispatcher
answers with a `Reply`, and the reply is rendered as text. Tests drive the core through it.

Given a `MemoryRooms` it also has deal rooms: the real room lifecycle (`DealRooms`) runs on
the store's outbox against channels kept in memory, `/rooms`, `/enter` and `/leave` move
between them, and what the bot posts into a room is handed to the port's `on_post`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from types import TracebackType

from sqlalchemy import Row, select

from bot.render_text import render
from bot.shell_rooms import PLATFORM, MemoryRooms
from crm_store import Actor, Store
from crm_store.chat_events import ChatEvents, ChatMessage
from crm_store.deals import room_deal
from crm_store.models import DealRoom, Opportunity, OutboxItem, utcnow
from crm_store.visibility import opportunity_visible
from deal_rooms.port import ChannelGone
from deal_rooms.rooms import DealRooms, RoomSettings
from handlers import texts
from handlers.dispatch import Dispatcher
from handlers.invocation import Invocation
from handlers.reply import Reply
from handlers.capture import CaptureTexts
from handlers.rooms import RoomTexts
from transcripts.capture import Capture, CaptureSettings

log = logging.getLogger("dealbot.shell")

SHELL_HELP = """Shell commands:
  /crm <command>   talk to Dealbot (try /crm help)
  /rooms           list the deal rooms you can see
  /enter ROOM      be in a deal room: what you type is posted there, /crm log needs no deal
  /leave           leave the deal room
  /as EMAIL        act as another CRM user
  /whoami          who you are acting as
  /quit            leave (Ctrl-D works too)"""

SETTLE_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 5.0
OUTBOX_PLATFORMS = (PLATFORM, "dealbot")  # room operations, and the change events that start them


def describe(actor: Actor) -> str:
    if not actor.is_mapped:
        return "an unmapped chat user (lookups show nothing until an admin links your email)"
    return f"{actor.name} <{actor.email}>, {'an' if actor.role == 'admin' else 'a'} {actor.role}"


def bot_post(channel: str, text: str) -> str:
    """How the console shows a message the bot posted into a room."""
    body = "\n".join(f"  {line}" if line else "" for line in text.splitlines())
    return f"#{channel} · Dealbot posted:\n{body}\n"


class ShellAdapter:
    """One chat session in the console; `channel_id` lets a test pretend to be in a room.

    With `rooms` the session has deal rooms; use it as ``async with`` so the outbox runs (and
    drains on exit), and `settle()` to wait until the bot has done what the last line started.
    Adapters given the same store should share one `MemoryRooms`: the outbox has one handler
    per operation, the last registered.
    """

    def __init__(self, store: Store, actor: Actor, *, channel_id: str | None = None,
                 rooms: MemoryRooms | None = None, room_settings: RoomSettings | None = None,
                 capture: CaptureSettings | None = None) -> None:
        self.store = store
        self.actor = actor
        self.channel_id = channel_id
        self.port = rooms
        self.rooms = None if rooms is None else DealRooms(store, rooms, RoomTexts(store),
                                                          room_settings or RoomSettings())
        self.dispatcher = Dispatcher(store, rooms=None if self.rooms is None else {PLATFORM: self.rooms})
        self.events = ChatEvents(store)  # what people say in a room goes through capture, as on Slack
        if rooms is not None:
            Capture(store, self.events, capture or CaptureSettings(), CaptureTexts(), whispers=[rooms])
        self._started = False

    # -- running the bot's side --------------------------------------------------------------

    async def start(self) -> None:
        """Run the outbox, where room operations happen (only with deal rooms: without them
        this shell has no business taking other processes' work)."""
        if self.rooms is not None and not self._started:
            self.store.outbox.start()
            self._started = True

    async def stop(self) -> None:
        """Stop the outbox after working off what is due, so no room is left half made."""
        if self._started:
            await self.store.outbox.stop(drain_timeout_s=DRAIN_TIMEOUT_S)
            self._started = False

    async def __aenter__(self) -> ShellAdapter:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.stop()

    async def settle(self, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
        """Work the outbox until nothing of ours is due (later, grouped updates stay queued);
        False when that took longer than `timeout_s`."""
        if self.rooms is None:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    if await self.store.outbox.run_once():
                        continue
                    if not await self._due():
                        return True
                    await asyncio.sleep(0.02)  # the background worker holds a row: let it finish
        except TimeoutError:
            log.warning("the outbox did not settle within %s s", timeout_s)
            return False

    async def _due(self) -> bool:
        async with self.store.session() as s:
            row = (await s.execute(select(OutboxItem.id).where(
                OutboxItem.status == "pending", OutboxItem.platform.in_(OUTBOX_PLATFORMS),
                OutboxItem.next_attempt_at <= utcnow()).limit(1))).first()
        return row is not None

    # -- the user's side ---------------------------------------------------------------------

    async def ask(self, text: str) -> Reply:
        """Run one ``/crm`` line and return the reply (what tests look at)."""
        invocation = Invocation(text=text, actor=self.actor, platform=PLATFORM, channel_id=self.channel_id)
        return await self.dispatcher.dispatch(invocation)

    async def act_as(self, email: str) -> bool:
        actor = await self.store.actor_for(email=email)
        if actor.is_mapped:
            self.actor = actor
        return actor.is_mapped

    async def handle(self, line: str) -> str | None:
        """Answer one typed line as text; None means the user asked to leave."""
        line = line.strip()
        if not line or line == "#" or line.startswith("# "):
            return ""  # a comment (in a script); "#decision …" typed in a room is a message
        parts = line.split(None, 1)
        word, rest = parts[0].lower(), (parts[1].strip() if len(parts) == 2 else "")
        if word in ("/quit", "/exit"):
            return None
        if word == "/crm":
            return render(await self.ask(line))
        if word == "/as":
            if not rest:
                return "Type /as EMAIL, for example /as daniel.kim@example.com"
            if not await self.act_as(rest):
                return f"No CRM user has the email {rest!r}. You are still {describe(self.actor)}."
            return " ".join(filter(None, [f"You are now {describe(self.actor)}.", await self._leave_unseen()]))
        if word == "/whoami":
            return f"You are {describe(self.actor)}."
        if word in ("/help", "/?"):
            return SHELL_HELP
        if word == "/rooms":
            return await self._rooms()
        if word == "/enter":
            return await self._enter(rest)
        if word == "/leave":
            return self._leave()
        if self.port is not None and self.channel_id is not None and not line.startswith("/"):
            return await self._say(line)
        return texts.SHELL_NOT_A_COMMAND

    async def run(self, lines: Iterable[str], write: Callable[[str], None], *, echo: bool) -> None:
        for line in lines:
            if echo and line.strip() and not (line.strip() == "#" or line.lstrip().startswith("# ")):
                write(f"» {line.strip()}")
            answer = await self.handle(line)
            if answer is None:
                return
            if answer:
                write(answer + "\n")
            await self.settle()  # the bot's posts this line caused are shown before the next line

    # -- rooms -------------------------------------------------------------------------------

    async def _visible_rooms(self) -> list[Row[tuple[str | None, str | None, str, str]]]:
        """This platform's rooms whose deal the actor may see: (channel id, name, status, deal)."""
        async with self.store.session() as s:
            return list((await s.execute(
                select(DealRoom.channel_id, DealRoom.channel_name, DealRoom.status, Opportunity.name)
                .join(Opportunity, Opportunity.id == DealRoom.opportunity_id)
                .where(DealRoom.platform == PLATFORM, DealRoom.status != "cancelled", opportunity_visible(self.actor))
                .order_by(DealRoom.channel_name, DealRoom.id))).all())

    async def _rooms(self) -> str:
        if self.port is None:
            return texts.SHELL_ROOMS_OFF
        rows = await self._visible_rooms()
        if not rows:
            return texts.SHELL_ROOMS_NONE
        names = [f"#{name}" if name else texts.SHELL_ROOM_BEING_MADE for _, name, _, _ in rows]
        width = max(map(len, names))
        status_width = max(len(status) for _, _, status, _ in rows)
        lines = [texts.SHELL_ROOMS_TITLE, "─" * len(texts.SHELL_ROOMS_TITLE)]
        for shown, (channel_id, _, status, deal) in zip(names, rows):
            here = f"  ({texts.SHELL_ROOM_HERE})" if channel_id and channel_id == self.channel_id else ""
            lines.append(f"{shown:<{width}}  {status:<{status_width}}  {deal}{here}")
        return "\n".join(lines)

    async def _enter(self, name: str) -> str:
        if self.port is None:
            return texts.SHELL_ROOMS_OFF
        name = name.lstrip("#").strip().lower()
        if not name:
            return texts.SHELL_ENTER_USAGE
        rooms = [row for row in await self._visible_rooms() if row.channel_id and row.channel_name]
        exact = [row for row in rooms if row.channel_name == name]
        chosen = exact or [row for row in rooms if (row.channel_name or "").startswith(name)]
        if not chosen:  # unknown and hidden look the same: a room never reveals a hidden deal
            return texts.SHELL_NO_SUCH_ROOM.format(name=name)
        if len(chosen) > 1:
            listed = ", ".join(f"#{row.channel_name}" for row in chosen)
            return texts.SHELL_SEVERAL_ROOMS.format(name=name, rooms=listed)
        channel_id, name, status, deal = chosen[0]
        self.channel_id = channel_id
        if status != "active":
            return texts.SHELL_ENTERED_CLOSED.format(name=name, deal=deal, status=status)
        return texts.SHELL_ENTERED.format(name=name, deal=deal)

    def _leave(self) -> str:
        name = self._room_name()
        if self.channel_id is None or name is None:
            self.channel_id = None
            return texts.SHELL_NOT_IN_ROOM
        self.channel_id = None
        return texts.SHELL_LEFT.format(name=name)

    async def _leave_unseen(self) -> str:
        """After `/as`: someone who may not see the room's deal is not left in its room."""
        name = self._room_name()
        if self.channel_id is None or name is None:
            return ""
        if await room_deal(self.store, self.actor, PLATFORM, self.channel_id) is not None:
            return ""
        self.channel_id = None
        return texts.SHELL_LEFT_UNSEEN.format(name=name, person=self.actor.name)

    async def _say(self, text: str) -> str:
        """Plain text typed in a room is a person's message in it, captured as on Slack (markers,
        detection); echoed as the room shows it."""
        assert self.port is not None and self.channel_id is not None
        name = self._room_name() or self.channel_id
        author = (self.actor.email or self.actor.name).lower()
        try:
            said = self.port.say(self.channel_id, author, text)
        except ChannelGone:
            return texts.SHELL_ROOM_CLOSED.format(name=name)
        await self.events.receive(ChatMessage(
            platform=PLATFORM, event_id=f"{self.channel_id}/{said.ref}", channel_id=self.channel_id,
            message_id=said.ref, user_id=author, text=text, sent_at=utcnow(), actor_id=self.actor.user_id))
        return f"#{name} · {self.actor.name}: {text}"

    def _room_name(self) -> str | None:
        if self.port is None or self.channel_id is None:
            return None
        channel = self.port.channels.get(self.channel_id)
        return None if channel is None else channel.name
