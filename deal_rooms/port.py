"""The narrow port through which deal rooms reach a chat platform.

The Slack and Teams adapters (in `bot/`) implement `ChatPort`; the shell adapter implements it
in memory. Messages are opaque here: the room's `RoomMessages` composes them (a `Reply`) and
the port renders them for its platform. Platform failures arrive as the exceptions below, so
the room lifecycle decides what to retry without knowing any SDK.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class NameRules:
    """What a platform accepts as a channel name."""

    max_len: int
    disallowed: re.Pattern[str]  # runs of characters replaced by the separator
    lowercase: bool = True


SLACK_NAMES = NameRules(max_len=80, disallowed=re.compile(r"[^a-z0-9_-]+"))
# Teams display names: at most 50 characters, none of ~#%&*{}+/\\:<>?|'" (plain slugs avoid them all).
TEAMS_NAMES = NameRules(max_len=50, disallowed=re.compile(r"[^a-z0-9_-]+"))


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    name: str
    archived: bool = False
    created_by_us: bool = False


class Spacing:
    """One call at a time, each started at least `interval_s` after the previous one started.
    The outbox books slots shared by every replica; this keeps one process's calls apart even
    when a slot's work ran late (a late call and a punctual one would make a burst)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last = -interval_s
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        async with self._lock:
            wait = self._last + self.interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last = time.monotonic()
            yield


class PlatformError(Exception):
    """A platform call failed; worth retrying unless a subclass says otherwise."""


class RateLimited(PlatformError):
    def __init__(self, after_s: float) -> None:
        super().__init__(f"rate limited; retry after {after_s:g} s")
        self.after_s = after_s


class NameTaken(PlatformError):
    """The channel name belongs to another channel (ours or not, archived or not)."""


class ChannelGone(PlatformError):
    """The channel was deleted, or the app can no longer reach it."""


class Refused(PlatformError):
    """The platform refused for a reason retrying cannot fix (no permission, bad argument)."""


class ChatPort(Protocol):
    platform: str
    names: NameRules

    @property
    def limits(self) -> Mapping[str, float]:
        """Calls a minute the platform allows, by the method names below (unlisted: unpaced)."""

    async def create_channel(self, name: str, *, private: bool, owner_email: str | None = None) -> Channel:
        """`owner_email`: the deal owner, for platforms whose private channels need an owner (Teams)."""
    async def find_channel(self, name: str) -> Channel | None: ...
    async def channel(self, channel_id: str) -> Channel: ...
    async def members(self, channel_id: str) -> set[str]: ...
    async def user_for_email(self, email: str) -> str | None: ...
    async def invite(self, channel_id: str, user_ids: Sequence[str]) -> None: ...
    async def post(self, channel_id: str, message: Any) -> str: ...
    async def post_ephemeral(self, channel_id: str, user_id: str, message: Any) -> None: ...
    async def update(self, channel_id: str, message_ref: str, message: Any) -> None: ...
    async def pin(self, channel_id: str, message_ref: str) -> None: ...
    async def set_topic(self, channel_id: str, topic: str) -> None: ...
    async def rename(self, channel_id: str, name: str) -> None: ...
    async def archive(self, channel_id: str) -> None: ...
    async def unarchive(self, channel_id: str) -> None: ...
