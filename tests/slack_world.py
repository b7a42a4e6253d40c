"""A Slack workspace for end-to-end tests: the real `dealbot` app (slack-bolt inside our aiohttp
server) on one side, the Slack stand-in on the other, and requests signed exactly as Slack signs
them: form-encoded slash commands, ``payload=`` interactivity and JSON event callbacks."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp.test_utils import TestClient, TestServer

from bot.server import create_app
from bot.settings import load_settings
from crm_store import Store

from tests.org import PEOPLE, Org
from tests.stand_ins.slack import SlackStandIn, sign

SECRET = "test-signing-secret"
TOKEN = "xoxb-test"
TEAM = "T0TEST"


def slack_id(who: str) -> str:
    return f"U{who.upper().replace('_', '')}"


def seed_people(slack: SlackStandIn, *extra: tuple[str, str | None, str]) -> None:
    """Every org person has a Slack account with their CRM email; `extra`: (id, email, name)."""
    for who, (name, _, _) in PEOPLE.items():
        slack.add_user(slack_id(who), Org.email(who), name)
    for user_id, email, name in extra:
        slack.add_user(user_id, email, name)


class SlackWorld:
    def __init__(self, client: TestClient, slack: SlackStandIn) -> None:
        self.client = client
        self.slack = slack
        self._keys = itertools.count(1)
        self.last_ack = ""  # the HTTP answer to the last command (Slack shows a non-empty one)

    async def post(self, body: str | bytes, content_type: str, *, secret: str = SECRET, timestamp: int | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, str]:
        signed = sign(body, secret, timestamp)
        async with self.client.post("/slack/events", data=body, headers={
                "Content-Type": content_type, **signed, **(headers or {})}) as response:
            return response.status, await response.text()

    async def command(self, text: str, who: str = "rep_a", channel: str = "C0GENERAL", *,
                      wait: bool = True) -> list[dict[str, Any]]:
        """Type ``/crm text``; returns what the bot posted to the command's response_url."""
        key = f"cmd{next(self._keys)}"
        form = self.command_form(text, who, channel, key)
        status, body = await self.post(urlencode(form), "application/x-www-form-urlencoded")
        assert status == 200, body
        self.last_ack = body
        if wait:
            await self.wait_for(lambda: self.slack.responses.get(key))
        return self.slack.responses.get(key, [])

    def payload(self, kind: str, who: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "team": {"id": TEAM, "domain": "test"}, "api_app_id": "A0APP", "token": "legacy",
                "user": {"id": slack_id(who) if not who.startswith("U") else who, "team_id": TEAM}, **fields}

    async def interact(self, payload: dict[str, Any], **kwargs: Any) -> tuple[int, str]:
        return await self.post(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded",
                               **kwargs)

    async def click(self, button: dict[str, Any], who: str = "rep_a", channel: str = "C0GENERAL") -> str:
        """Press a Block Kit button; returns the response_url key the answer goes to."""
        key = f"act{next(self._keys)}"
        payload = self.payload("block_actions", who, trigger_id=self.slack.new_trigger_id(),
                               channel={"id": channel, "name": "general"},
                               container={"type": "message", "is_ephemeral": True},
                               response_url=self.slack.response_url(key),
                               actions=[{"type": "button", "action_id": button["action_id"], "block_id": "b",
                                         "value": button["value"], "action_ts": str(time.time())}])
        status, body = await self.interact(payload)
        assert status == 200, body
        return key

    def command_form(self, text: str, who: str, channel: str, key: str) -> dict[str, str]:
        """The fields of a ``/crm text`` slash command whose answers go to response_url `key`."""
        return {"token": "legacy", "team_id": TEAM, "team_domain": "test", "channel_id": channel,
                "channel_name": "general", "user_id": slack_id(who) if not who.startswith("U") else who,
                "user_name": who, "command": "/crm", "text": text, "api_app_id": "A0APP",
                "is_enterprise_install": "false", "response_url": self.slack.response_url(key),
                "trigger_id": self.slack.new_trigger_id()}

    def event_callback(self, event: dict[str, Any], event_id: str) -> dict[str, Any]:
        return {"token": "legacy", "team_id": TEAM, "api_app_id": "A0APP", "type": "event_callback",
                "event_id": event_id, "event_time": int(time.time()), "event": event,
                "authorizations": [{"team_id": TEAM, "user_id": self.slack.bot_user_id, "is_bot": True}]}

    async def event(self, event: dict[str, Any], event_id: str, *, retry: int | None = None) -> tuple[int, str]:
        body = json.dumps(self.event_callback(event, event_id))
        headers = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"} if retry else None
        return await self.post(body, "application/json", headers=headers)

    async def wait_for(self, check: Callable[[], Any], timeout: float = 10.0) -> Any:
        return await wait_until(check, timeout)


async def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `check` (a function, or a coroutine function) until it returns something truthy
    (which is returned), or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, "timed out waiting for the bot"
        await asyncio.sleep(0.01)


async def start_app(store: Store, slack: SlackStandIn, **settings: Any) -> TestClient:
    """`dealbot`'s server app on a test port, talking to `slack`."""
    app = create_app(store, load_settings(slack_bot_token=TOKEN, slack_signing_secret=SECRET,
                                          slack_api_url=slack.api_url, **settings))
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Every button of a Block Kit message (accessories and actions blocks)."""
    found = []
    for block in message.get("blocks") or []:
        if block.get("accessory", {}).get("type") == "button":
            found.append(block["accessory"])
        found += [e for e in block.get("elements", []) if e.get("type") == "button"]
    return found


def button(message: dict[str, Any], label: str) -> dict[str, Any]:
    return next(b for b in buttons(message) if b["text"]["text"] == label)
