"""Every call Dealbot makes to the Bot Framework connector, paced per conversation and retried.

Teams allows a bot about 7 messages a second and 60 per 30 seconds in one conversation, and
answers 429 beyond (https://learn.microsoft.com/microsoftteams/platform/bots/how-to/rate-limit);
it also answers 412, 502 and 504 when busy, which are worth retrying. `TeamsCloudAdapter` is
botbuilder's `CloudAdapter` with its sends and updates going through `Pacing` (waits before a
burst would be refused) and `retrying` (back-off, honouring ``Retry-After``), so replies inside a
turn and proactive messages (deal rooms, digests, capture suggestions) follow the same rules.
Pacing is per process; several replicas rely on the retries.
"""

from __future__ import annotations

import asyncio
import json
import random
from functools import partial
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from botbuilder.core import TurnContext
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    ChannelAccount,
    ConversationParameters,
    ConversationResourceResponse,
    ResourceResponse,
)
from botframework.connector.aio import ConnectorClient
from msrest.exceptions import HttpOperationError

from bot.teams.auth import StrictAuthentication

T = TypeVar("T")
RETRIED = frozenset({429, 412, 502, 504})
WINDOWS = ((1.0, 7), (30.0, 60))  # (seconds, messages) per conversation
ATTEMPTS = 4
BASE_BACKOFF_S = 0.5
MAX_WAIT_S = 30.0
MAX_KEYS = 10_000
PAGE = 200
UNPACED = (ActivityTypes.invoke_response, ActivityTypes.trace, "delay")


class Pacing:
    """Sliding windows per conversation: a call waits until it would not exceed any window."""

    def __init__(self, windows: Sequence[tuple[float, int]] = WINDOWS) -> None:
        self.windows = tuple(windows)
        self._sent: dict[str, deque[float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        if len(self._locks) > MAX_KEYS:
            self._forget_idle()
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            sent = self._sent.setdefault(key, deque())
            while (wait := self._wait(sent, time.monotonic())) > 0:
                await asyncio.sleep(wait)
            try:
                yield
            finally:
                # Stamped once answered: Teams counted the call when it arrived, which is earlier,
                # so the windows hold on its side too (stamped before sending, a call delayed on its
                # way, e.g. by a token fetch, let the next ones arrive less than a window apart).
                sent.append(time.monotonic())

    def _wait(self, sent: deque[float], now: float) -> float:
        longest = max(span for span, _ in self.windows)
        while sent and sent[0] <= now - longest:
            sent.popleft()
        wait = 0.0
        for span, limit in self.windows:
            inside = [t for t in sent if t > now - span]
            if len(inside) >= limit:
                wait = max(wait, inside[-limit] + span - now)
        return wait

    def _forget_idle(self) -> None:
        for key in [k for k, lock in self._locks.items() if not lock.locked()]:
            del self._locks[key]
            self._sent.pop(key, None)


def status_of(error: HttpOperationError) -> int | None:
    response = error.response
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    return int(status) if status else None


def retry_after(error: HttpOperationError) -> float | None:
    headers = getattr(error.response, "headers", None) or {}
    try:
        return float(str(headers["Retry-After"])) if headers.get("Retry-After") else None
    except (TypeError, ValueError):
        return None


async def retrying(call: Callable[[], Awaitable[T]], *, attempts: int = ATTEMPTS) -> T:
    """`call`, again after a back-off when the connector answers 429/412/502/504."""
    for attempt in range(attempts):
        try:
            return await call()
        except HttpOperationError as error:
            if status_of(error) not in RETRIED or attempt == attempts - 1:
                raise
            told = retry_after(error)
            delay = told if told is not None else BASE_BACKOFF_S * 2 ** attempt * (1 + random.random() / 4)
            await asyncio.sleep(min(delay, MAX_WAIT_S))
    raise AssertionError("unreachable")


class TeamsCloudAdapter(CloudAdapter):  # type: ignore[misc]
    def __init__(self, auth: StrictAuthentication, app_id: str, bot_scope: str, pacing: Pacing | None = None) -> None:
        super().__init__(auth)
        self.app_id, self.bot_scope = app_id, bot_scope
        self.pacing = pacing or Pacing()

    async def paced(self, conversation_id: str, call: Callable[[], Awaitable[T]]) -> T:
        async def once() -> T:
            async with self.pacing.turn(conversation_id):
                return await call()
        return await retrying(once)

    # -- inside a turn (botbuilder calls these for TurnContext.send_activity / update_activity) --

    async def send_activities(self, context: TurnContext, activities: list[Activity]) -> list[ResourceResponse]:
        answers: list[ResourceResponse] = []
        base: Any = super(TeamsCloudAdapter, self)
        for activity in activities:
            if activity.type in UNPACED:
                answers += await base.send_activities(context, [activity])
                continue
            answers += await self.paced(activity.conversation.id, partial(base.send_activities, context, [activity]))
        return answers

    async def update_activity(self, context: TurnContext, activity: Activity) -> ResourceResponse | None:
        base: Any = super(TeamsCloudAdapter, self)
        return await self.paced(activity.conversation.id, lambda: base.update_activity(context, activity))

    # -- proactive (outside a turn: deal rooms, digests, suggestions) -----------------------------

    @asynccontextmanager
    async def connector(self, service_url: str) -> AsyncIterator[ConnectorClient]:
        factory = self.bot_framework_authentication.create_connector_factory(self.create_claims_identity(self.app_id))
        async with await factory.create(service_url, self.bot_scope) as client:  # closes its HTTP session
            yield client

    async def create_conversation_paced(self, service_url: str, parameters: ConversationParameters,
                                        key: str) -> ConversationResourceResponse:
        async with self.connector(service_url) as client:
            return await self.paced(key, lambda: client.conversations.create_conversation(parameters))

    async def send(self, service_url: str, conversation_id: str, activity: Activity) -> str:
        async with self.connector(service_url) as client:
            answer = await self.paced(conversation_id,
                                      lambda: client.conversations.send_to_conversation(conversation_id, activity))
        return str(answer.id)

    async def update(self, service_url: str, conversation_id: str, activity_id: str, activity: Activity) -> None:
        async with self.connector(service_url) as client:
            await self.paced(conversation_id,
                             lambda: client.conversations.update_activity(conversation_id, activity_id, activity))

    async def member(self, service_url: str, conversation_id: str, user_id: str) -> dict[str, Any] | None:
        """One person's record in a conversation (email, UPN); None when they are not in it."""
        async with self.connector(service_url) as client:
            try:  # raw: botbuilder reads it as a ChannelAccount, which drops Teams' email and UPN
                answer = await retrying(lambda: client.conversations.get_conversation_member(conversation_id, user_id,
                                                                                            raw=True))
            except HttpOperationError as error:
                if status_of(error) == 404:
                    return None
                raise
        found = json.loads(answer.response.text or "null")
        return found if isinstance(found, dict) else None

    async def members(self, service_url: str, conversation_id: str) -> list[dict[str, Any]]:
        """Everyone in a conversation (a channel's are the team's, or the private channel's)."""
        found: list[dict[str, Any]] = []
        token: str | None = None
        async with self.connector(service_url) as client:
            while True:
                page = await retrying(lambda: client.conversations.get_teams_conversation_paged_members(
                    conversation_id, PAGE, token))
                found += [m.serialize() for m in page.members or []]
                token = page.continuation_token
                if not token:
                    return found


def one_to_one(user_id: str, tenant_id: str | None, bot_id: str) -> ConversationParameters:
    return ConversationParameters(is_group=False, bot=ChannelAccount(id=f"28:{bot_id}"),
                                  members=[ChannelAccount(id=user_id)], tenant_id=tenant_id,
                                  channel_data={"tenant": {"id": tenant_id}} if tenant_id else None)
