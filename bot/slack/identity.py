"""Who a Slack user is in the CRM: the Slack id remembered on the user row, else the verified
profile email from ``users.info`` (then remembered). Answers are cached for a few minutes and
concurrent lookups of one user share a single one, so a burst of commands costs one lookup, and
a user added to the CRM is recognised soon after."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from crm_store import Actor, Store

log = logging.getLogger("dealbot.slack")
TTL_S = 300.0
MAX_ENTRIES = 10_000
TOKEN_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"})


@dataclass(frozen=True, slots=True)
class SlackUser:
    actor: Actor
    is_bot: bool
    time_zone: str | None = None  # the Slack profile's, looked up when the CRM has none


class SlackIdentity:
    def __init__(self, client: AsyncWebClient, store: Store, *, ttl_s: float = TTL_S) -> None:
        self.client = client
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, SlackUser]] = {}
        self._looking: dict[str, asyncio.Future[SlackUser]] = {}

    async def actor(self, user_id: str) -> Actor:
        return (await self.user(user_id)).actor

    async def user(self, user_id: str) -> SlackUser:
        hit = self._cache.get(user_id)
        if hit and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        looking = self._looking.get(user_id)
        if looking is None:
            looking = self._looking[user_id] = asyncio.ensure_future(self._look_up(user_id))
            looking.add_done_callback(lambda done: self._remember(user_id, done))
        return await asyncio.shield(looking)  # one caller giving up must not cancel the others' lookup

    def _remember(self, user_id: str, done: asyncio.Future[SlackUser]) -> None:
        if self._looking.get(user_id) is not done:
            return  # forgotten while it ran: its answer may be out of date
        del self._looking[user_id]
        if done.cancelled() or done.exception() is not None:
            return  # not cached: the next command asks again
        if len(self._cache) >= MAX_ENTRIES:
            self._cache.clear()
        self._cache[user_id] = (time.monotonic(), done.result())

    def forget(self, user_id: str | None = None) -> None:
        """Drop cached answers (one user's, or all: the app was reinstalled, a profile changed)."""
        if user_id is None:
            self._cache.clear()
            self._looking.clear()
        else:
            self._cache.pop(user_id, None)
            self._looking.pop(user_id, None)

    async def _look_up(self, user_id: str) -> SlackUser:
        actor = await self.store.actor_for(slack_user_id=user_id)
        if actor.is_mapped and actor.time_zone:
            return SlackUser(actor, is_bot=False)
        try:
            info = (await self.client.users_info(user=user_id))["user"]
        except SlackApiError as error:
            if error.response.get("error") in TOKEN_ERRORS:
                raise  # the workspace must hear that the app needs reinstalling, not "who are you?"
            log.warning("users.info failed", extra={"error": error.response.get("error")})
            return SlackUser(actor if actor.is_mapped else Actor.unmapped("a Slack user"), is_bot=False)
        if actor.is_mapped:  # known, but without a zone in the CRM: the profile's helps digests
            return SlackUser(actor, is_bot=False, time_zone=info.get("tz"))
        profile = info.get("profile") or {}
        name = profile.get("real_name") or info.get("real_name") or info.get("name") or "a Slack user"
        is_bot = bool(info.get("is_bot")) or user_id == "USLACKBOT"
        email = profile.get("email")
        if is_bot or not email:
            return SlackUser(Actor.unmapped(name), is_bot=is_bot)
        actor = await self.store.actor_for(email=email, display_name=name)
        if actor.is_mapped and actor.user_id is not None:
            await self.store.link_chat_identity(actor.user_id, slack_user_id=user_id)
        return SlackUser(actor, is_bot=False, time_zone=info.get("tz"))
