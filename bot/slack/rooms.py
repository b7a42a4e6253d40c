"""The deal-room port on Slack: conversations, invites, pins and posts through slack-sdk.

Only translation happens here: Slack's answers become `deal_rooms.port` values and its errors
the port's exceptions (``name_taken`` -> `NameTaken`, ``ratelimited`` -> `RateLimited`...).
Answers that mean "already so" (``already_in_channel``, ``already_pinned``,
``already_archived``, ``not_archived``) count as success, so every call is safe to repeat.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings, room_settings
from bot.slack.app import web_client
from bot.slack.identity import TOKEN_ERRORS
from bot.slack.render import render
from crm_store import Store
from deal_rooms.rooms import DealRooms
from handlers.rooms import RoomTexts
from crm_store.outbox import PACE_MARGIN
from deal_rooms.port import SLACK_NAMES, Channel, ChannelGone, NameTaken, PlatformError, RateLimited, Refused, Spacing
from handlers.reply import Reply

MAX_TOPIC = 250
PAGE = 1000
GONE = frozenset({"channel_not_found", "is_archived", "not_in_channel", "method_not_supported_for_channel_type"})
REFUSED = TOKEN_ERRORS | {"missing_scope", "restricted_action", "invalid_arguments", "invalid_name",
                          "invalid_name_specials", "invalid_name_maxlength", "invalid_name_required",
                          "no_permission", "user_is_restricted"}
TIER2 = ("create_channel", "set_topic", "pin", "rename", "archive", "unarchive")  # about 20 a minute each
ALREADY = frozenset({"already_in_channel", "already_pinned", "already_archived", "not_archived"})


def slack_deal_rooms(store: Store, settings: Settings) -> DealRooms:
    """Deal rooms on Slack, as the server and the CLI run them: a Web API client that leaves
    retries to the outbox, paced at the workspace's Tier 2."""
    port = SlackRooms(web_client(settings, retries=False), tier2_per_minute=settings.slack_tier2_per_minute)
    return DealRooms(store, port, RoomTexts(store), room_settings(settings))


class SlackRooms:
    platform = "slack"
    names = SLACK_NAMES

    def __init__(self, client: AsyncWebClient, *, tier2_per_minute: float = 20.0) -> None:
        self.client = client
        # Slack's Tier 2 methods are paced; the others are Tier 3 or more, and chat.postMessage
        # allows about one a second per channel, which rooms stay far below.
        self.limits = {call: tier2_per_minute for call in TIER2}
        self._spacing = {call: Spacing(60.0 / tier2_per_minute * PACE_MARGIN) for call in TIER2}
        self._bot_user_id: str | None = None

    @asynccontextmanager
    async def _tier2(self, call: str) -> AsyncIterator[None]:
        async with self._spacing[call].turn(), translated():
            yield

    async def create_channel(self, name: str, *, private: bool, owner_email: str | None = None) -> Channel:
        async with self._tier2("create_channel"):
            answer = await self.client.conversations_create(name=name, is_private=private)
        return Channel(answer["channel"]["id"], answer["channel"]["name"], created_by_us=True)

    async def find_channel(self, name: str) -> Channel | None:
        """Slack has no lookup by name: page through the channels the bot can see."""
        cursor = ""
        while True:
            async with translated():
                answer = await self.client.conversations_list(
                    types="public_channel,private_channel", exclude_archived=False, limit=PAGE, cursor=cursor or None)
            channels: list[dict[str, Any]] = answer.get("channels") or []
            for raw in channels:
                if raw.get("name") == name:
                    return await self._channel(raw)
            cursor = (answer.get("response_metadata") or {}).get("next_cursor") or ""
            if not cursor:
                return None

    async def channel(self, channel_id: str) -> Channel:
        async with translated():
            answer = await self.client.conversations_info(channel=channel_id)
        return await self._channel(answer["channel"])

    async def members(self, channel_id: str) -> set[str]:
        found: set[str] = set()
        cursor = ""
        while True:
            async with translated():
                answer = await self.client.conversations_members(channel=channel_id, limit=PAGE, cursor=cursor or None)
            found.update(answer.get("members", []))
            cursor = (answer.get("response_metadata") or {}).get("next_cursor") or ""
            if not cursor:
                return found

    async def user_for_email(self, email: str | None) -> str | None:
        return await user_for_email(self.client, email)

    async def invite(self, channel_id: str, user_ids: Sequence[str]) -> None:
        async with translated():
            await self.client.conversations_invite(channel=channel_id, users=",".join(user_ids), force=True)

    async def post(self, channel_id: str, message: Reply) -> str:
        rendered = render(message)
        async with translated():
            answer = await self.client.chat_postMessage(channel=channel_id, text=rendered.text, blocks=rendered.blocks,
                                                        unfurl_links=False)
        return str(answer["ts"])

    async def post_ephemeral(self, channel_id: str, user_id: str, message: Reply) -> None:
        rendered = render(message)
        async with translated():
            await self.client.chat_postEphemeral(channel=channel_id, user=user_id, text=rendered.text,
                                                 blocks=rendered.blocks)

    async def update(self, channel_id: str, message_ref: str, message: Reply) -> None:
        rendered = render(message)
        async with translated():
            await self.client.chat_update(channel=channel_id, ts=message_ref, text=rendered.text, blocks=rendered.blocks)

    async def pin(self, channel_id: str, message_ref: str) -> None:
        async with self._tier2("pin"):
            await self.client.pins_add(channel=channel_id, timestamp=message_ref)

    async def set_topic(self, channel_id: str, topic: str) -> None:
        async with self._tier2("set_topic"):
            await self.client.conversations_setTopic(channel=channel_id, topic=topic[:MAX_TOPIC])

    async def rename(self, channel_id: str, name: str) -> None:
        async with self._tier2("rename"):
            await self.client.conversations_rename(channel=channel_id, name=name)

    async def archive(self, channel_id: str) -> None:
        async with self._tier2("archive"):
            await self.client.conversations_archive(channel=channel_id)

    async def unarchive(self, channel_id: str) -> None:
        async with self._tier2("unarchive"):
            await self.client.conversations_unarchive(channel=channel_id)

    async def _channel(self, raw: dict[str, Any]) -> Channel:
        if self._bot_user_id is None:
            async with translated():
                self._bot_user_id = str((await self.client.auth_test())["user_id"])
        return Channel(str(raw["id"]), str(raw.get("name", "")), archived=bool(raw.get("is_archived")),
                       created_by_us=raw.get("creator") == self._bot_user_id)


async def user_for_email(client: AsyncWebClient, email: str | None) -> str | None:
    """The Slack id of the active, human account with this email; None when there is none."""
    if not email:
        return None
    try:
        async with translated():
            answer = await client.users_lookupByEmail(email=email)
    except Refused as refusal:
        if str(refusal) == "users_not_found":
            return None
        raise
    user = answer["user"]
    return None if user.get("deleted") or user.get("is_bot") else str(user["id"])


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Slack errors as the port's exceptions; answers meaning "already so" count as success."""
    try:
        yield
    except SlackApiError as error:
        code = str(error.response.get("error", ""))
        if code in ALREADY:
            return
        if code == "name_taken":
            raise NameTaken(code) from error
        if code == "ratelimited" or error.response.status_code == 429:
            raise RateLimited(float(error.response.headers.get("Retry-After", 30))) from error
        if code in GONE:
            raise ChannelGone(code) from error
        if code in REFUSED or code == "users_not_found":
            raise Refused(code) from error
        raise PlatformError(code or f"HTTP {error.response.status_code}") from error
