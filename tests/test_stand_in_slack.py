"""The Slack stand-in itself: driven by the real slack-sdk, it refuses what Slack refuses.

Other suites trust it to catch bugs, so each rule they rely on is checked here once.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any

import pytest
from slack_bolt.async_app import AsyncApp, AsyncAck, AsyncRespond, AsyncSay
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.stand_ins.slack import Message, SlackStandIn, sign

MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "new_deal",
    "title": {"type": "plain_text", "text": "New deal"},
    "submit": {"type": "plain_text", "text": "Save"},
    "blocks": [{"type": "input", "block_id": "name", "label": {"type": "plain_text", "text": "Name"},
                "element": {"type": "plain_text_input", "action_id": "value"}}],
}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def refusal(call: Awaitable[Any]) -> str:
    """The error code Slack answered with (slack-sdk raises on ok=false)."""
    with pytest.raises(SlackApiError) as info:
        await call
    return str(info.value.response["error"])


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as stand_in:
        stand_in.add_user("U1", "ann@example.com", "Ann Rep")
        stand_in.add_user("U2", "bob@example.com", "Bob Manager")
        yield stand_in


@pytest.fixture
def client(slack: SlackStandIn) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)


async def test_channel_name_rules_and_name_taken(slack: SlackStandIn, client: AsyncWebClient) -> None:
    created = await client.conversations_create(name="deal-acme_42", is_private=True)
    channel = created["channel"]
    assert channel["id"].startswith("C") and channel["is_private"] and channel["is_member"]
    assert slack.channels[channel["id"]].members == {slack.bot_user_id}

    assert await refusal(client.conversations_create(name="Deal Acme")) == "invalid_name_specials"
    assert await refusal(client.conversations_create(name="deal.acme")) == "invalid_name_specials"
    assert await refusal(client.conversations_create(name="d" * 81)) == "invalid_name_maxlength"
    assert await refusal(client.conversations_create(name="")) == "invalid_name_required"

    await client.conversations_archive(channel=channel["id"])
    assert await refusal(client.conversations_create(name="deal-acme_42")) == "name_taken"
    other = (await client.conversations_create(name="deal-other"))["channel"]["id"]
    assert await refusal(client.conversations_rename(channel=other, name="deal-acme_42")) == "name_taken"
    assert [c.error for c in slack.called("conversations.create")] == [
        None, "invalid_name_specials", "invalid_name_specials", "invalid_name_maxlength",
        "invalid_name_required", "name_taken", None,
    ]


async def test_invite_rules(slack: SlackStandIn, client: AsyncWebClient) -> None:
    room = (await client.conversations_create(name="deal-room"))["channel"]["id"]
    await client.conversations_invite(channel=room, users=["U1"])
    assert slack.channels[room].members == {slack.bot_user_id, "U1"}

    with pytest.raises(SlackApiError) as info:
        await client.conversations_invite(channel=room, users=["U2", "U1"])
    assert info.value.response["error"] == "already_in_channel"
    assert info.value.response["errors"] == [{"user": "U1", "ok": False, "error": "already_in_channel"}]
    assert "U2" not in slack.channels[room].members  # refused as a whole

    assert await refusal(client.conversations_invite(channel=room, users="U404")) == "user_not_found"
    assert await refusal(client.conversations_invite(channel=room, users=slack.bot_user_id)) == "cant_invite_self"

    elsewhere = slack.add_channel("general", {"U1"})
    assert await refusal(client.conversations_invite(channel=elsewhere, users="U2")) == "not_in_channel"
    hidden = slack.add_channel("secret", {"U1"}, is_private=True)
    assert await refusal(client.conversations_invite(channel=hidden, users="U2")) == "channel_not_found"
    assert await refusal(client.conversations_kick(channel=room, user="U2")) == "not_in_channel"
    assert await refusal(client.conversations_kick(channel=room, user=slack.bot_user_id)) == "cant_kick_self"


async def test_posting_into_an_archived_channel_is_refused(slack: SlackStandIn, client: AsyncWebClient) -> None:
    room = (await client.conversations_create(name="deal-closed"))["channel"]["id"]
    posted = await client.chat_postMessage(channel=room, text="Closed won")
    await client.conversations_archive(channel=room)
    assert await refusal(client.chat_postMessage(channel=room, text="again")) == "is_archived"
    assert await refusal(client.conversations_archive(channel=room)) == "already_archived"
    assert [m.ts for m in slack.messages[room]] == [posted["ts"]]

    public = slack.add_channel("sales", {"U1"})
    assert await refusal(client.chat_postMessage(channel=public, text="hi")) == "not_in_channel"
    await client.conversations_join(channel=public)
    assert (await client.chat_postMessage(channel=public, text="hi"))["message"]["bot_id"] == slack.bot_id
    assert await refusal(client.api_call("chat.postMessage", json={"channel": public})) == "no_text"


async def test_auth(slack: SlackStandIn, client: AsyncWebClient) -> None:
    me = await client.auth_test()
    assert (me["user_id"], me["team_id"], me["bot_id"]) == (slack.bot_user_id, slack.team_id, "B0BOT")
    assert await refusal(AsyncWebClient(base_url=slack.api_url).auth_test()) == "not_authed"
    assert await refusal(AsyncWebClient(token="xoxb-wrong", base_url=slack.api_url).auth_test()) == "invalid_auth"
    slack.revoke_token()
    assert await refusal(client.users_info(user="U1")) == "invalid_auth"


async def test_rate_limit_answers_429_then_the_retry_succeeds_once(
    slack: SlackStandIn, client: AsyncWebClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sleep exactly Retry-After (slack-sdk adds up to a second of jitter).
    monkeypatch.setattr("slack_sdk.http_retry.builtin_async_handlers.random.random", lambda: 0.0)
    room = (await client.conversations_create(name="deal-busy"))["channel"]["id"]
    slack.rate_limits["chat.postMessage"] = 1
    await client.chat_postMessage(channel=room, text="one")

    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel=room, text="refused")
    assert info.value.response.status_code == 429
    assert info.value.response.headers["Retry-After"] == "1"
    assert info.value.response["error"] == "ratelimited"

    retrying = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url,
                              retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
    started = time.monotonic()
    await retrying.chat_postMessage(channel=room, text="two")
    assert time.monotonic() - started >= 1.0
    assert [c.status for c in slack.called("chat.postMessage")] == [200, 429, 429, 200]
    assert [m.text for m in slack.messages[room]] == ["one", "two"]


async def test_injected_failures(slack: SlackStandIn, client: AsyncWebClient) -> None:
    slack.fail_next("users.info", "internal_error", status=500)
    with pytest.raises(SlackApiError) as info:
        await client.users_info(user="U1")
    assert (info.value.response.status_code, info.value.response["error"]) == (500, "internal_error")
    assert (await client.users_info(user="U1"))["user"]["profile"]["email"] == "ann@example.com"
    assert (await client.users_lookupByEmail(email="BOB@example.com"))["user"]["id"] == "U2"
    assert await refusal(client.users_lookupByEmail(email="nobody@example.com")) == "users_not_found"
    assert await refusal(client.api_call("nope.nope")) == "unknown_method"
    assert slack.calls[-1].status == 404


async def test_block_kit_limits(slack: SlackStandIn, client: AsyncWebClient) -> None:
    room = (await client.conversations_create(name="deal-blocks"))["channel"]["id"]
    await client.chat_postMessage(channel=room, text="ok", blocks=[section("x")] * 50)
    assert await refusal(client.chat_postMessage(channel=room, text="x", blocks=[section("x")] * 51)) == "invalid_blocks"
    header = {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}
    assert await refusal(client.chat_postMessage(channel=room, text="x", blocks=[header])) == "invalid_blocks"
    button = {"type": "button", "text": {"type": "plain_text", "text": "b" * 76}, "action_id": "go"}
    actions = {"type": "actions", "elements": [button]}
    assert await refusal(client.chat_postMessage(channel=room, text="x", blocks=[actions])) == "invalid_blocks"
    assert await refusal(client.chat_postMessage(channel=room, text="x" * 40_001)) == "msg_too_long"
    # Form-encoded blocks (a JSON string) follow the same rules.
    form = {"channel": room, "text": "x", "blocks": json.dumps([section("y" * 3001)])}
    assert await refusal(client.api_call("chat.postMessage", data=form)) == "invalid_blocks"
    assert len(slack.messages[room]) == 1


async def test_messages_update_pin_and_permalink(slack: SlackStandIn, client: AsyncWebClient) -> None:
    room = (await client.conversations_create(name="deal-pins"))["channel"]["id"]
    posted = await client.chat_postMessage(channel=room, text="Deal card", blocks=[section("card")])
    await client.chat_update(channel=room, ts=posted["ts"], text="Deal card v2")
    message = slack.messages[room][0]
    assert (message.text, message.edited, message.blocks) == ("Deal card v2", True, [section("card")])
    await client.pins_add(channel=room, timestamp=posted["ts"])
    assert await refusal(client.pins_add(channel=room, timestamp=posted["ts"])) == "already_pinned"
    link = await client.chat_getPermalink(channel=room, message_ts=posted["ts"])
    assert link["permalink"] == f"https://standin.slack.test/archives/{room}/p{posted['ts'].replace('.', '')}"

    slack.channels[room].members.add("U1")
    theirs = slack.add_message(room, "U1", "my note")
    assert slack.messages[room][-1] == Message(ts=theirs, user="U1", text="my note")
    assert await refusal(client.chat_update(channel=room, ts=theirs, text="edited")) == "cant_update_message"
    assert await refusal(client.chat_delete(channel=room, ts="1.000001")) == "message_not_found"
    await client.chat_postEphemeral(channel=room, user="U1", text="only you")
    assert await refusal(client.chat_postEphemeral(channel=room, user="U2", text="x")) == "user_not_in_channel"
    assert slack.ephemerals[0]["text"] == "only you"


async def test_views_need_a_fresh_trigger_and_a_valid_modal(slack: SlackStandIn, client: AsyncWebClient) -> None:
    trigger = slack.new_trigger_id()
    opened = (await client.views_open(trigger_id=trigger, view=MODAL))["view"]
    assert opened["id"] in slack.views and opened["callback_id"] == "new_deal"
    assert await refusal(client.views_open(trigger_id=trigger, view=MODAL)) == "exchanged_trigger_id"
    assert await refusal(client.views_open(trigger_id="1.2.made-up", view=MODAL)) == "invalid_trigger_id"
    slack.trigger_lifetime_s = 0.0
    assert await refusal(client.views_open(trigger_id=slack.new_trigger_id(), view=MODAL)) == "expired_trigger_id"
    slack.trigger_lifetime_s = 3.0

    long_title = {**MODAL, "title": {"type": "plain_text", "text": "t" * 25}}
    assert await refusal(client.views_open(trigger_id=slack.new_trigger_id(), view=long_title)) == "invalid_arguments"
    no_submit = {key: value for key, value in MODAL.items() if key != "submit"}
    assert await refusal(client.views_open(trigger_id=slack.new_trigger_id(), view=no_submit)) == "invalid_arguments"

    updated = (await client.views_update(view_id=opened["id"], hash=opened["hash"], view=MODAL))["view"]
    assert updated["id"] == opened["id"] and updated["hash"] != opened["hash"]
    stale = client.views_update(view_id=opened["id"], hash="0.stale", view=MODAL)
    assert await refusal(stale) == "hash_conflict"


async def test_response_url_takes_five_posts(slack: SlackStandIn) -> None:
    webhook = AsyncWebhookClient(slack.response_url("cmd-1"))
    bad = await webhook.send(text="x", blocks=[{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}])
    assert (bad.status_code, bad.body) == (400, "invalid_blocks")
    for n in range(5):
        sent = await webhook.send(text=f"reply {n}", response_type="ephemeral")
        assert (sent.status_code, sent.body) == (200, "ok")
    refused = await webhook.send(text="sixth")
    assert (refused.status_code, refused.body) == (404, "used_url")
    assert [r["text"] for r in slack.responses["cmd-1"]] == [f"reply {n}" for n in range(5)]


async def test_members_paginate(slack: SlackStandIn, client: AsyncWebClient) -> None:
    for n in range(3, 7):
        slack.add_user(f"U{n}", f"u{n}@example.com", f"User {n}")
    room = slack.add_channel("deal-big", {slack.bot_user_id, "U1", "U2", "U3", "U4", "U5", "U6"}, is_private=True)
    pages = [page["members"] async for page in await client.conversations_members(channel=room, limit=3)]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(m for p in pages for m in p) == sorted(slack.channels[room].members)
    slack.channels[room].members.discard(slack.bot_user_id)
    assert await refusal(client.conversations_members(channel=room)) == "channel_not_found"


async def test_file_upload_flow(slack: SlackStandIn, client: AsyncWebClient) -> None:
    room = (await client.conversations_create(name="deal-files"))["channel"]["id"]
    done = await client.files_upload_v2(channel=room, content="stage,amount\n", filename="deal.csv",
                                        title="Deal export", initial_comment="Here it is")
    file_id = done["file"]["id"]
    stored = slack.files[file_id]
    assert (stored["filename"], stored["bytes"], stored["channel"], stored["title"]) == (
        "deal.csv", b"stage,amount\n", room, "Deal export")
    assert slack.messages[room][-1].files == [file_id]
    assert [c.method for c in slack.calls] == [
        "conversations.create", "files.getUploadURLExternal", "files.completeUploadExternal"]
    files = json.dumps([{"id": file_id}])
    assert await refusal(client.api_call("files.completeUploadExternal", params={"files": files})) == "file_not_found"


def test_sign_matches_slacks_verifier() -> None:
    body = "command=%2Fcrm&text=pipeline"
    headers = sign(body, "s3cret")
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid_request(body, headers)
    assert verifier.is_valid_request(body.encode(), sign(body.encode(), "s3cret"))
    assert not verifier.is_valid_request(body, sign(body, "other"))
    assert sign(body, "s3cret", timestamp=1)["X-Slack-Request-Timestamp"] == "1"


async def test_bolt_runs_against_the_stand_in(slack: SlackStandIn, client: AsyncWebClient) -> None:
    room = slack.add_channel("general", {slack.bot_user_id, "U1"})
    app = AsyncApp(signing_secret="s3cret", client=client, process_before_response=True)

    @app.command("/crm")
    async def crm(ack: AsyncAck, say: AsyncSay, respond: AsyncRespond) -> None:
        await ack()
        await say("in the channel")
        await respond("just for you")

    body = urllib.parse.urlencode({
        "command": "/crm", "text": "pipeline", "user_id": "U1", "channel_id": room, "team_id": slack.team_id,
        "response_url": slack.response_url("cmd-2"), "trigger_id": slack.new_trigger_id(),
    })
    headers: dict[str, str | Sequence[str]] = {**sign(body, "s3cret"), "Content-Type": "application/x-www-form-urlencoded"}
    answer = await app.async_dispatch(AsyncBoltRequest(body=body, headers=headers))
    assert answer.status == 200
    assert [c.method for c in slack.calls] == ["auth.test", "chat.postMessage"]
    assert [m.text for m in slack.messages[room]] == ["in the channel"]
    assert slack.responses["cmd-2"] == [{"text": "just for you"}]
