"""Proactive messages to one person on Teams: digests, capture suggestions, private answers.

A bot reaches a person through their 1:1 chat. Its reference is remembered when they install the
app or write to the bot (`crm_store.conversation_refs`); without one, the chat is created with
their AAD id (Teams allows it once the app is installed for them or in a team they belong to).
The conversation a port hands around is an opaque string: the service URL and the chat id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from botbuilder.schema import Activity, ActivityTypes, Attachment
from msrest.exceptions import HttpOperationError

from bot.digests import Chart
from bot.settings import Settings
from bot.teams import cards
from bot.teams.connector import TeamsCloudAdapter, one_to_one, retry_after, status_of
from crm_store import Store, conversation_refs
from crm_store.models import User
from deal_rooms.port import ChannelGone, PlatformError, RateLimited, Refused
from handlers.reply import Reply

log = logging.getLogger("dealbot.teams")
PLATFORM = "teams"


def message(card: cards.CardMessage) -> Activity:
    return Activity(type=ActivityTypes.message, text=card.text,
                    attachments=[Attachment(content_type=cards.CONTENT_TYPE, content=card.card)])


def translated(error: HttpOperationError) -> PlatformError:
    """Connector failures as the deal-room port's exceptions (retries are already spent)."""
    status = status_of(error)
    if status == 429:
        return RateLimited(retry_after(error) or 5.0)
    if status == 404:
        return ChannelGone(f"HTTP {status}")
    if status in (400, 401, 403, 413):
        return Refused(f"HTTP {status}")
    return PlatformError(f"HTTP {status}")


class TeamsDirect:
    """Implements `bot.digests.DirectMessages` and capture's `Whisper` for Teams."""

    platform = PLATFORM

    def __init__(self, store: Store, adapter: TeamsCloudAdapter, settings: Settings) -> None:
        self.store, self.adapter, self.settings = store, adapter, settings
        self.directory: Callable[[str], Awaitable[str | None]] | None = None  # email -> AAD id (Graph)

    async def where(self) -> tuple[str, str | None]:
        """Service URL and tenant for a conversation nobody has written in yet: a team's, if the
        app was installed in one, else the settings'."""
        team = await conversation_refs.any_reference(self.store, PLATFORM, "team")
        service = (team or {}).get("serviceUrl") or self.settings.teams_service_url
        tenant = (team or {}).get("tenantId") or self.settings.microsoft_app_tenant_id
        return service, tenant

    async def open_dm(self, user: User) -> str | None:
        """Their remembered 1:1 chat; else one opened with their AAD id (from the CRM row, or
        found by email in the directory when Graph is set up); None when Teams does not know them."""
        aad_id = user.teams_aad_id or (await self.directory(user.email) if self.directory and user.email else None)
        if not aad_id:
            return None
        known = await conversation_refs.reference(self.store, PLATFORM, "user", aad_id)
        if known and (known.get("conversation") or {}).get("id"):
            return _pack(known["serviceUrl"], known["conversation"]["id"])
        return await self.open_chat(aad_id)

    async def open_chat(self, member_id: str) -> str:
        """The 1:1 chat with a Teams user id (``29:…``) or AAD id; created (or found) by Teams."""
        service, tenant = await self.where()
        try:
            answer = await self.adapter.create_conversation_paced(
                service, one_to_one(member_id, tenant, self.adapter.app_id), key=f"create:{member_id}")
        except HttpOperationError as error:
            raise translated(error) from error
        return _pack(service, str(answer.id))

    async def post_dm(self, conversation: str, reply: Reply, chart: Chart | None) -> str:
        rendered = cards.render(reply, image=chart.png if chart else None, image_alt=chart.alt if chart else "")
        service, conversation_id = _unpack(conversation)
        try:
            return await self.adapter.send(service, conversation_id, message(rendered))
        except HttpOperationError as error:
            raise translated(error) from error

    async def attach_chart(self, conversation: str, chart: Chart) -> str | None:
        return None  # the chart is inline in the card

    async def post_ephemeral(self, channel_id: str, user_id: str, reply: Any) -> None:
        """Teams has no message only one person in a channel sees: their 1:1 chat instead."""
        await self.post_dm(await self.open_chat(user_id), reply, None)


def _pack(service_url: str, conversation_id: str) -> str:
    return json.dumps({"serviceUrl": service_url, "id": conversation_id}, separators=(",", ":"))


def _unpack(conversation: str) -> tuple[str, str]:
    data = json.loads(conversation)
    return str(data["serviceUrl"]), str(data["id"])
