"""The deal-room port on Teams: channels through Microsoft Graph, messages through the connector.

- A room is a channel of ``TEAMS_TEAM_ID``: private (the deal owner as its owner, as Teams
  requires) or standard, as ``DEAL_ROOM_PRIVATE`` says. Staffing adds people to the team and,
  for a private channel, to the channel.
- The deal card is the channel's first post, sent proactively (a new thread through the
  connector, with the team's service URL), and updated in place. Teams gives bots no way to pin a
  channel message, so `pin` does nothing: the card stays the room's first thread.
- The topic is the channel's description. Graph does not say who created a channel, so the
  description ends with a marker by which a channel created before a crash is recognised.
- Graph's archive works on a whole team, not a channel. Archiving a room therefore renames it
  with a ``closed-`` prefix, after the closing summary was posted (by the lifecycle); reopening
  takes the prefix off. A channel renamed ``closed-…`` by hand counts as archived by hand.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from botbuilder.schema import ConversationParameters
from msrest.exceptions import HttpOperationError
from sqlalchemy import select, update

from bot.settings import Settings, room_settings
from bot.teams import cards
from bot.teams.connector import TeamsCloudAdapter
from bot.teams.direct import PLATFORM, TeamsDirect, message, translated
from bot.teams.graph import AlreadyThere, Graph, segment
from crm_store import Store
from crm_store.models import DealRoom
from deal_rooms.port import TEAMS_NAMES, Channel, ChannelGone, NameTaken, Refused
from deal_rooms.rooms import DealRooms
from handlers.reply import Reply
from handlers.rooms import RoomTexts

log = logging.getLogger("dealbot.teams.rooms")
CLOSED = "closed-"
MARK = "Dealbot deal room"  # ends every room channel's description
MARKER = " · " + MARK
MAX_DESCRIPTION = 1024
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MEMBER = "#microsoft.graph.aadUserConversationMember"
# Graph's channel writes are throttled per app and tenant; these keep far below, shared by replicas.
LIMITS = {"create_channel": 30.0, "set_topic": 60.0, "rename": 30.0, "archive": 30.0, "unarchive": 30.0}


def teams_deal_rooms(store: Store, settings: Settings, adapter: TeamsCloudAdapter, direct: TeamsDirect,
                     graph: Graph) -> DealRooms:
    assert settings.teams_team_id is not None
    port = TeamsRooms(store, settings.teams_team_id, graph, adapter, direct, graph_base=settings.graph_api_url)
    return DealRooms(store, port, RoomTexts(store), room_settings(settings))


class TeamsRooms:
    platform = PLATFORM
    names = TEAMS_NAMES
    limits = LIMITS

    def __init__(self, store: Store, team_id: str, graph: Graph, adapter: TeamsCloudAdapter, direct: TeamsDirect,
                 *, graph_base: str) -> None:
        self.store, self.team, self.graph, self.adapter, self.direct = store, team_id, graph, adapter, direct
        self._user_bind = graph_base.rstrip("/") + "/users('{}')"
        self._private: dict[str, bool] = {}

    def _channels(self, channel_id: str | None = None) -> str:
        path = f"teams/{segment(self.team)}/channels"
        return f"{path}/{segment(channel_id)}" if channel_id else path

    def _member(self, aad_id: str, roles: Sequence[str] = ()) -> dict[str, Any]:
        return {"@odata.type": MEMBER, "roles": list(roles), "user@odata.bind": self._user_bind.format(aad_id)}

    # -- channels (Graph) ---------------------------------------------------------------------

    async def create_channel(self, name: str, *, private: bool, owner_email: str | None = None) -> Channel:
        body: dict[str, Any] = {"displayName": name, "description": MARK,
                                "membershipType": "private" if private else "standard"}
        if private:
            owner = await self.user_for_email(owner_email)
            if owner is None:
                raise Refused("a private channel needs an owner, and the deal owner has no Teams account")
            await self._join_team(owner)
            body["members"] = [self._member(owner, ["owner"])]
        answer = await self.graph.call("POST", self._channels(), body=body) or {}
        self._private[str(answer["id"])] = private
        return Channel(str(answer["id"]), str(answer.get("displayName", name)), created_by_us=True)

    async def find_channel(self, name: str) -> Channel | None:
        quoted = name.replace("'", "''")
        answer = await self.graph.call("GET", self._channels(), params={"$filter": f"displayName eq '{quoted}'"})
        for raw in (answer or {}).get("value", []):
            if str(raw.get("displayName", "")).lower() == name.lower():
                return _channel(raw)
        return None

    async def channel(self, channel_id: str) -> Channel:
        raw = await self.graph.call("GET", self._channels(channel_id)) or {}
        self._private[channel_id] = raw.get("membershipType") == "private"
        return _channel(raw)

    async def members(self, channel_id: str) -> set[str]:
        answer = await self.graph.call("GET", self._channels(channel_id) + "/members")
        return {str(m["userId"]) for m in (answer or {}).get("value", []) if m.get("userId")}

    async def user_for_email(self, email: str | None) -> str | None:
        """The AAD id of the enabled account with this email; None when there is none."""
        if not email:
            return None
        try:
            user = await self.graph.call("GET", f"users/{segment(email)}",
                                         params={"$select": "id,accountEnabled"}) or {}
        except ChannelGone:  # Graph's 404: no such user
            return None
        return str(user["id"]) if user.get("id") and user.get("accountEnabled", True) else None

    async def invite(self, channel_id: str, user_ids: Sequence[str]) -> None:
        if channel_id not in self._private:
            await self.channel(channel_id)
        private = self._private[channel_id]
        for aad_id in user_ids:
            await self._join_team(aad_id)
            if private:
                await self._add(self._channels(channel_id) + "/members", aad_id)

    async def _join_team(self, aad_id: str) -> None:
        await self._add(f"teams/{segment(self.team)}/members", aad_id)

    async def _add(self, path: str, aad_id: str) -> None:
        try:
            await self.graph.call("POST", path, body=self._member(aad_id))
        except AlreadyThere:
            pass  # already a member, which is what we wanted

    async def set_topic(self, channel_id: str, topic: str) -> None:
        description = topic[:MAX_DESCRIPTION - len(MARKER)] + MARKER
        await self.graph.call("PATCH", self._channels(channel_id), body={"description": description})

    async def rename(self, channel_id: str, name: str) -> None:
        await self.graph.call("PATCH", self._channels(channel_id), body={"displayName": name})

    async def archive(self, channel_id: str) -> None:
        current = await self.channel(channel_id)
        if current.archived:
            return
        await self._rename_to(channel_id, (CLOSED + current.name)[:TEAMS_NAMES.max_len])

    async def unarchive(self, channel_id: str) -> None:
        current = await self.channel(channel_id)
        if current.archived:
            await self._rename_to(channel_id, await self._name_before_archive(channel_id, current.name))

    async def _name_before_archive(self, channel_id: str, name: str) -> str:
        """The room's own name when `archive` made this one of it (it may have cut it to fit the
        prefix, or added a suffix); otherwise the name without the prefix."""
        async with self.store.session() as s:
            stored = (await s.execute(select(DealRoom.channel_name).where(
                DealRoom.platform == PLATFORM, DealRoom.channel_id == channel_id))).scalar_one_or_none()
        if stored and name in _archived_names(channel_id, stored):
            return stored
        return name[len(CLOSED):] or "deal"

    async def _rename_to(self, channel_id: str, name: str) -> None:
        """`name`, or with a short suffix of the channel's own if another channel has it."""
        suffix = "-" + hashlib.sha1(channel_id.encode()).hexdigest()[:4]
        try:
            await self.rename(channel_id, name)
        except NameTaken:
            await self.rename(channel_id, name[:TEAMS_NAMES.max_len - len(suffix)] + suffix)

    # -- messages (connector) -----------------------------------------------------------------

    async def post(self, channel_id: str, reply: Reply) -> str:
        """A new thread in the channel; its message id is the reference for updates."""
        service, tenant = await self.direct.where()
        parameters = ConversationParameters(is_group=True, channel_data={"channel": {"id": channel_id},
                                                                         "tenant": {"id": tenant}},
                                            activity=message(cards.render(reply)), tenant_id=tenant)
        try:
            answer = await self.adapter.create_conversation_paced(service, parameters, key=channel_id)
        except HttpOperationError as error:
            raise translated(error) from error
        await self._remember(channel_id, service, tenant)
        return str(answer.activity_id)

    async def post_ephemeral(self, channel_id: str, user_id: str, reply: Reply) -> None:
        await self.direct.post_ephemeral(channel_id, user_id, reply)

    async def update(self, channel_id: str, message_ref: str, reply: Reply) -> None:
        service, _ = await self.direct.where()
        try:
            await self.adapter.update(service, f"{channel_id};messageid={message_ref}", message_ref,
                                      message(cards.render(reply)))
        except HttpOperationError as error:
            raise translated(error) from error

    async def pin(self, channel_id: str, message_ref: str) -> None:
        return None  # Teams has no pinning of channel messages for bots: the card is the first thread

    async def _remember(self, channel_id: str, service: str, tenant: str | None) -> None:
        """The room's conversation reference, for proactive posts from any replica."""
        reference = {"serviceUrl": service, "channelId": "msteams", "tenantId": tenant,
                     "conversation": {"id": channel_id, "conversationType": "channel", "tenantId": tenant}}
        async with self.store.transaction(renames=False) as s:
            await s.execute(update(DealRoom).where(DealRoom.platform == PLATFORM, DealRoom.channel_id == channel_id,
                                                   DealRoom.conversation_ref.is_(None)).values(conversation_ref=reference))


def _archived_names(channel_id: str, name: str) -> tuple[str, str]:
    """The names `archive` gives a room called `name`: the prefixed name cut to fit, or that with
    `_rename_to`'s suffix when another channel has it."""
    first = (CLOSED + name)[:TEAMS_NAMES.max_len]
    suffix = "-" + hashlib.sha1(channel_id.encode()).hexdigest()[:4]
    return first, first[:TEAMS_NAMES.max_len - len(suffix)] + suffix


def _channel(raw: dict[str, Any]) -> Channel:
    name = str(raw.get("displayName", ""))
    return Channel(str(raw["id"]), name, archived=name.lower().startswith(CLOSED),
                   created_by_us=str(raw.get("description") or "").endswith(MARK))
