"""The Teams parts `dealbot serve` (and the CLI) run: botbuilder's adapter with our
authentication, the 1:1-chat port, and deal rooms when a team is configured. Built once per
process from the settings; nothing here is global."""

from __future__ import annotations

from dataclasses import dataclass

from bot.settings import Settings
from bot.teams.auth import teams_auth
from bot.teams.connector import TeamsCloudAdapter
from bot.teams.direct import TeamsDirect
from bot.teams.graph import Graph
from bot.teams.rooms import GRAPH_SCOPE, teams_deal_rooms
from bot.teams.tokens import Authority, ClientCredentials
from crm_store import Store
from deal_rooms.rooms import DealRooms


@dataclass(frozen=True, slots=True)
class TeamsRuntime:
    cloud: TeamsCloudAdapter
    direct: TeamsDirect
    rooms: DealRooms | None


def teams_runtime(store: Store, settings: Settings) -> TeamsRuntime:
    assert settings.microsoft_app_id and settings.microsoft_app_password
    auth = teams_auth(settings)
    cloud = TeamsCloudAdapter(auth.authentication, settings.microsoft_app_id, auth.bot_scope)
    direct = TeamsDirect(store, cloud, settings)
    rooms = None
    if settings.teams_team_id:
        tokens = ClientCredentials(Authority(auth.login_url).for_tenant(settings.microsoft_app_tenant_id),
                                   settings.microsoft_app_id, settings.microsoft_app_password.get_secret_value(),
                                   GRAPH_SCOPE)
        rooms = teams_deal_rooms(store, settings, cloud, direct, Graph(settings.graph_api_url, tokens))
        direct.directory = rooms.port.user_for_email
    return TeamsRuntime(cloud, direct, rooms)
