"""What an adapter hands to the core: who asked, where, and the words after ``/crm``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from crm_store import Actor, Store
from deal_rooms.rooms import DealRooms
from handlers.digest_schedule import DigestSettings


@dataclass(frozen=True, slots=True)
class Invocation:
    text: str
    actor: Actor
    platform: str = "shell"
    channel_id: str | None = None
    time_zone: str | None = None  # the chat profile's, when the platform tells


@dataclass(slots=True)
class Context:
    """Everything a handler may use; built per invocation by the dispatcher, no globals."""

    store: Store
    invocation: Invocation
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    rooms: DealRooms | None = None  # deal rooms on the invocation's platform, where there are any
    digests: DigestSettings = field(default_factory=DigestSettings)

    @property
    def actor(self) -> Actor:
        return self.invocation.actor

    @property
    def today(self) -> date:
        return self.now.date()
