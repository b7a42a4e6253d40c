"""The deal-room port of the local shell: channels kept in memory, no chat platform involved.

`MemoryRooms` implements `deal_rooms.port.ChatPort` so the real room lifecycle (`DealRooms`,
driven by the outbox) runs unchanged in `dealbot shell` and in tests. It follows Slack's rules
where they matter to the lifecycle (name rules, ``name_taken``, no posting into an archived
channel, repeated invites and pins are harmless), so what works here works the same way there.
Channels live as long as the process: the shell uses them on a throw-away database only.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bot.render_text import render
from deal_rooms.port import SLACK_NAMES, Channel, ChannelGone, NameTaken, Refused
from handlers.reply import Reply

PLATFORM = "shell"
MAX_TOPIC = 250  # as on Slack, so a topic that fits here fits there

PostHook = Callable[[str, str], None]  # (channel name, rendered text)


@dataclass(slots=True)
class Message:
    """One message in a room: the bot's (`author` None) or a person's (their shell user id)."""

    ref: str
    reply: Reply
    author: str | None = None

    @property
    def text(self) -> str:
        return render(self.reply)


@dataclass(slots=True)
class MemoryChannel:
    id: str
    name: str
    private: bool
    archived: bool = False
    members: set[str] = field(default_factory=set)
    topic: str = ""
    messages: list[Message] = field(default_factory=list)
    pinned: list[str] = field(default_factory=list)  # message refs, in pinning order

    def message(self, ref: str) -> Message | None:
        return next((m for m in self.messages if m.ref == ref), None)

    def pinned_messages(self) -> list[Message]:
        return [m for ref in self.pinned if (m := self.message(ref)) is not None]


class MemoryRooms:
    """Channels in memory. A shell user id is the lower-cased email: everyone with an email is
    "on" the shell unless listed in `absent`, which lets tests and demos show people who are not."""

    platform = PLATFORM
    names = SLACK_NAMES

    def __init__(self, *, absent: Iterable[str] = (), on_post: PostHook | None = None) -> None:
        self.absent = {email.strip().lower() for email in absent}
        self.on_post = on_post
        self.limits: Mapping[str, float] = {}  # nothing to pace: memory has no rate limits
        self.channels: dict[str, MemoryChannel] = {}
        self.whispers: list[tuple[str, str, Reply]] = []  # (channel name, user id, message) seen by one person
        self._ids = itertools.count(1)
        self._refs = itertools.count(1)

    # -- what the shell and tests look at ------------------------------------------------------

    def by_name(self, name: str) -> MemoryChannel | None:
        return next((c for c in self.channels.values() if c.name == name), None)

    def get(self, channel_id: str) -> MemoryChannel:
        """The channel, or `ChannelGone` as a platform says of an id it does not know."""
        found = self.channels.get(channel_id)
        if found is None:
            raise ChannelGone("channel_not_found")
        return found

    def say(self, channel_id: str, author: str, text: str) -> Message:
        """A person's message typed into the room (not announced: the shell echoes it itself)."""
        channel = self._open(channel_id)
        message = Message(self._ref(), Reply(text=text, ephemeral=False), author)
        channel.messages.append(message)
        return message

    # -- ChatPort ----------------------------------------------------------------------------

    async def create_channel(self, name: str, *, private: bool, owner_email: str | None = None) -> Channel:
        self._check_name(name)
        channel = MemoryChannel(f"C{next(self._ids):05d}", name, private)
        self.channels[channel.id] = channel
        return Channel(channel.id, channel.name, created_by_us=True)

    async def find_channel(self, name: str) -> Channel | None:
        found = self.by_name(name)
        return None if found is None else Channel(found.id, found.name, found.archived, created_by_us=True)

    async def channel(self, channel_id: str) -> Channel:
        found = self.get(channel_id)
        return Channel(found.id, found.name, found.archived, created_by_us=True)

    async def members(self, channel_id: str) -> set[str]:
        return set(self.get(channel_id).members)

    async def user_for_email(self, email: str) -> str | None:
        address = (email or "").strip().lower()
        return address if address and address not in self.absent else None

    async def invite(self, channel_id: str, user_ids: Sequence[str]) -> None:
        self._open(channel_id).members.update(user_ids)

    async def post(self, channel_id: str, message: Reply) -> str:
        channel = self._open(channel_id)
        posted = Message(self._ref(), message)
        channel.messages.append(posted)
        if self.on_post is not None:
            self.on_post(channel.name, posted.text)
        return posted.ref

    async def post_ephemeral(self, channel_id: str, user_id: str, message: Reply) -> None:
        """Only `user_id` would see it: kept aside, and shown in the console like a post."""
        channel = self._open(channel_id)
        self.whispers.append((channel.name, user_id, message))
        if self.on_post is not None:
            self.on_post(channel.name, f"(only {user_id} sees this) {render(message)}")

    async def update(self, channel_id: str, message_ref: str, message: Reply) -> None:
        found = self._open(channel_id).message(message_ref)
        if found is None:
            raise Refused("message_not_found")
        found.reply = message

    async def pin(self, channel_id: str, message_ref: str) -> None:
        channel = self.get(channel_id)
        if channel.message(message_ref) is None:
            raise Refused("message_not_found")
        if message_ref not in channel.pinned:
            channel.pinned.append(message_ref)

    async def set_topic(self, channel_id: str, topic: str) -> None:
        self._open(channel_id).topic = topic[:MAX_TOPIC]

    async def rename(self, channel_id: str, name: str) -> None:
        channel = self.get(channel_id)
        if name != channel.name:
            self._check_name(name)
            channel.name = name

    async def archive(self, channel_id: str) -> None:
        self.get(channel_id).archived = True

    async def unarchive(self, channel_id: str) -> None:
        self.get(channel_id).archived = False

    # -- rules ---------------------------------------------------------------------------------

    def _open(self, channel_id: str) -> MemoryChannel:
        """An archived channel takes no messages, as on Slack (``is_archived``)."""
        channel = self.get(channel_id)
        if channel.archived:
            raise ChannelGone("is_archived")
        return channel

    def _check_name(self, name: str) -> None:
        rules = self.names
        if (not name or len(name) > rules.max_len or rules.disallowed.search(name)
                or (rules.lowercase and name != name.lower())):
            raise Refused("invalid_name")
        if self.by_name(name) is not None:  # archived channels keep their names too
            raise NameTaken("name_taken")

    def _ref(self) -> str:
        return f"m{next(self._refs)}"
