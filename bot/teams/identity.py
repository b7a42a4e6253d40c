"""Who a Teams user is in the CRM: the AAD object id remembered on the user row, else the email
(user principal name) Teams reports for the member, then remembered. Answers are cached for a
few minutes, so a burst of messages costs one lookup per person."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from crm_store import Actor, Store

log = logging.getLogger("dealbot.teams")
TTL_S = 300.0
MAX_ENTRIES = 10_000
Lookup = Callable[[], Awaitable[dict[str, Any] | None]]


class TeamsIdentity:
    def __init__(self, store: Store, *, ttl_s: float = TTL_S) -> None:
        self.store, self.ttl_s = store, ttl_s
        self._cache: dict[str, tuple[float, Actor]] = {}

    async def actor(self, aad_id: str | None, name: str = "a Teams user", *, member: Lookup | None = None) -> Actor:
        """The CRM user behind an AAD id. `member` fetches the connector's record of the person
        (email, UPN), called only for someone not yet linked and not looked up lately."""
        if not aad_id:
            return Actor.unmapped(name)
        hit = self._cache.get(aad_id)
        if hit and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        actor = await self.store.actor_for(teams_aad_id=aad_id, display_name=name)
        record = await member() if member is not None and not actor.is_mapped else None
        email = (record or {}).get("email") or (record or {}).get("userPrincipalName")
        if email:
            actor = await self.store.actor_for(email=email, display_name=(record or {}).get("name") or name)
            if actor.is_mapped and actor.user_id is not None:
                await self.store.link_chat_identity(actor.user_id, teams_aad_id=aad_id)
        if len(self._cache) >= MAX_ENTRIES:
            self._cache.clear()
        self._cache[aad_id] = (time.monotonic(), actor)
        return actor
