"""A Microsoft Teams tenant for end-to-end tests: the real `dealbot` app (botbuilder inside our
aiohttp server) on one side, the Teams stand-in (issuer, login, connector, Graph) on the other,
and activities delivered to ``/api/messages`` exactly as the channel sends them: JSON with a
bearer token signed by the channel's (stand-in) key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from bot.server import create_app
from bot.settings import load_settings
from crm_store import Store
from tests.org import PEOPLE, Org
from tests.slack_world import wait_until
from tests.stand_ins.teams import Message, TeamsStandIn

APP_ID = "6d1f3b0e-1c2a-4a7b-9b8e-2f4c5d6e7f80"
PASSWORD = "test-client-secret"
TENANT = "tenant-1"
TEAM = "team-1"
BOT = "Dealbot"


def aad(who: str) -> str:
    return f"aad-{who.replace('_', '-')}"


def seed_people(teams: TeamsStandIn, *extra: tuple[str, str, str]) -> None:
    """Every org person has a Teams account with their CRM email; `extra`: (aad id, email, name)."""
    for who, (name, _, _) in PEOPLE.items():
        teams.add_user(aad(who), Org.email(who), name)
    for aad_id, email, name in extra:
        teams.add_user(aad_id, email, name)


def teams_settings(teams: TeamsStandIn, **overrides: Any) -> dict[str, Any]:
    return {"microsoft_app_id": APP_ID, "microsoft_app_password": PASSWORD, "microsoft_app_tenant_id": TENANT,
            "to_bot_from_channel_openid_metadata_url": teams.openid_metadata_url,
            "to_bot_from_channel_token_issuer": teams.issuer, "to_channel_from_bot_login_url": teams.login_url,
            "teams_service_url": teams.service_url, "graph_api_url": teams.graph_url, "teams_team_id": TEAM,
            **overrides}


async def start_teams_app(store: Store, teams: TeamsStandIn, **settings: Any) -> TestClient:
    app = create_app(store, load_settings(**teams_settings(teams, **settings)))
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


class TeamsWorld:
    def __init__(self, client: TestClient, teams: TeamsStandIn) -> None:
        self.client, self.teams = client, teams

    async def deliver(self, activity: dict[str, Any], *, token: str | None = None,
                      authorization: str | None = None) -> tuple[int, Any]:
        """POST an activity to /api/messages, signed by the channel unless told otherwise."""
        header = authorization if authorization is not None else f"Bearer {token or self.teams.sign()}"
        headers = {"Authorization": header} if header else {}
        async with self.client.post("/api/messages", json=activity, headers=headers) as response:
            body = await response.json(content_type=None) if response.content_length else None
            return response.status, body

    def chat(self, who: str) -> str:
        return f"a:{aad(who)}"

    def bot_messages(self, conversation: str) -> list[Message]:
        return [m for m in self.teams.messages(conversation) if m.from_bot]

    async def say(self, text: str, who: str = "rep_a", where: str | None = None, *,
                  mention: bool = True, reply_to: str | None = None) -> Message:
        """A person writes `text` in their 1:1 chat with the bot (`where` None) or in a channel
        (with an @mention of the bot unless `mention` is False); delivered to the bot."""
        if where is not None and mention:
            text = f"<at>{BOT}</at> {text}"
        message = self.teams.add_message(where or self.chat(who), aad(who), text, reply_to=reply_to)
        status, body = await self.deliver(self.teams.incoming_activity(message))
        assert status in (200, 201), body
        return message

    async def ask(self, text: str, who: str = "rep_a") -> Message:
        """A command in the 1:1 chat; returns the bot's answer (the latest bot message there)."""
        before = len(self.bot_messages(self.chat(who)))
        await self.say(text, who)
        answers = await wait_until(lambda: self.bot_messages(self.chat(who))[before:])
        return answers[-1]

    async def press(self, data: dict[str, Any], who: str = "rep_a", where: str | None = None,
                    **inputs: str) -> tuple[int, Any]:
        """Press an Action.Submit: Teams sends a message activity with the data (plus the card's
        inputs) as its value and no text."""
        message = self.teams.add_message(where or self.chat(who), aad(who), "")
        activity = self.teams.incoming_activity(message)
        activity.pop("text", None)
        activity["value"] = {**data, **inputs}
        return await self.deliver(activity)

    async def invoke(self, name: str, value: dict[str, Any], who: str = "rep_a",
                     where: str | None = None) -> tuple[int, Any]:
        message = self.teams.add_message(where or self.chat(who), aad(who), "")
        activity = self.teams.incoming_activity(message)
        activity.update(type="invoke", name=name, value=value)
        activity.pop("text", None)
        return await self.deliver(activity)


def card_of(message: Message) -> dict[str, Any]:
    return next(a["content"] for a in message.attachments if a["contentType"] == "application/vnd.microsoft.card.adaptive")


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every element of a card, depth first (inside ShowCard forms too)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


def card_text(message: Message) -> str:
    """Every text of a card, flattened, for assertions."""
    return "\n".join(n[key] for n in _nodes(card_of(message)) for key in ("text", "title", "value", "label")
                     if isinstance(n.get(key), str))


def submits(message: Message) -> list[dict[str, Any]]:
    """Every Action.Submit of a card (including those inside ShowCard forms)."""
    return [n for n in _nodes(card_of(message)) if n.get("type") == "Action.Submit"]
