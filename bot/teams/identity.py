"""Who a Teams user is in the CRM: the AAD object id remembered on the user row, else the email
(user principal name) Teams reports for the member, then remembered. Answers are cached for a
few minutes, so a burst of messages costs one lookup per person."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from crm_store import Actor, Store

log = logging.getLogger("dealbot.teams")
TTL_S = 300.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class TeamsUser:
    actor: Actor
    time_zone: str | None = None


class TeamsIdentity:
    def __init__(self, store: Store, *, ttl_s: float = TTL_S) -> None:
        self.store, self.ttl_s = store, ttl_s
        self._cache: dict[str, tuple[float, Actor]] = {}

    async def actor(self, aad_id: str | None, member: dict[str, Any] | None = None, name: str = "a Teams user") -> Actor:
        """The CRM user behind an AAD id; `member` (the connector's record: email, UPN, name) maps
        someone seen for the first time."""
        if not aad_id:
            return Actor.unmapped(name)
        hit = self._cache.get(aad_id)
        if hit and time.monotonic() - hit[0] < self.ttl_s and (hit[1].is_mapped or member is None):
            return hit[1]
        actor = await self.store.actor_for(teams_aad_id=aad_id, display_name=name)
        if not actor.is_mapped and member:
            email = member.get("email") or member.get("userPrincipalName")
            if email:
                actor = await self.store.actor_for(email=email, display_name=member.get("name") or name)
                if actor.is_mapped and actor.user_id is not None:
                    await self.store.link_chat_identity(actor.user_id, teams_aad_id=aad_id)
        if len(self._cache) >= MAX_ENTRIES:
            self._cache.clear()
        self._cache[aad_id] = (time.monotonic(), actor)
        return actor

    def forget(self) -> None:
        self._cache.clear()
