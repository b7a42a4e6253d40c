"""Slack end to end: the real slack-bolt app inside `dealbot`'s server, driven over HTTP with
signed requests, talking to the Slack stand-in through the real slack-sdk client."""

from __future__ import annotations

import asyncio

import json
import time
from datetime import datetime, timedelta, timezone
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, update

from bot.digests import TICK_JOB
from bot.housekeeping import PURGE_JOB
from bot.server import SCHEDULER, SLACK, create_app
from bot.settings import load_settings
from crm_store import Store
from crm_store.models import AuditLog, DealRoom, DigestRun, DigestSubscription, ProcessedEvent, TimelineEntry
from handlers import texts
from crm_store.chat_events import KEEP_CLAIMS
from tests.org import Org
from tests.slack_world import SECRET, TOKEN, SlackWorld, button, buttons, seed_people, slack_id, start_app
from tests.stand_ins.slack import SlackStandIn


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(bot_token=TOKEN) as stand_in:
        seed_people(stand_in, ("UOUTSIDER", "guest@partner.test", "Gus Guest"))
        yield stand_in


start = start_app


@pytest.fixture
async def world(store: Store, org: Org, slack: SlackStandIn) -> AsyncIterator[SlackWorld]:
    client = await start(store, slack)
    try:
        yield SlackWorld(client, slack)
    finally:
        await client.close()


# -- slash commands ----------------------------------------------------------------------------

async def test_a_command_answers_ephemerally_with_blocks_a_fallback_and_a_share_button(
        world: SlackWorld, slack: SlackStandIn) -> None:
    [answer] = await world.command("deal acme renewal")
    assert answer["response_type"] == "ephemeral"
    assert "ACME Renewal 2027" in answer["text"] and answer["blocks"][0]["type"] == "header"
    labels = [b["text"]["text"] for b in buttons(answer)]
    assert labels == ["Log decision", "Log note", "Open timeline", "Share in channel"]
    # The user was recognised by the email of their Slack profile, and remembered.
    assert [c.args["user"] for c in slack.called("users.info")] == [slack_id("rep_a")]
    await world.command("deal acme renewal")
    assert len(slack.called("users.info")) == 1


async def test_a_burst_of_commands_from_a_new_user_looks_them_up_once(world: SlackWorld, slack: SlackStandIn) -> None:
    answers = await asyncio.gather(*(world.command("deal acme renewal") for _ in range(8)))
    assert all("ACME Renewal 2027" in answer["text"] for [answer] in answers)
    assert len(slack.called("users.info")) == 1  # the other seven waited for the first lookup


async def test_every_command_of_the_grammar_answers_over_slack(world: SlackWorld) -> None:
    for line in ("help", "find acme", "account acme corp", "contact coyote", "pipeline", "pipeline team",
                 "log acme renewal: called the CFO", "decision acme renewal: 3-year term", "timeline acme renewal",
                 "search pricing", "room acme renewal", "digest", "acme renewl", "frobnicate acme"):
        [answer] = await world.command(line, who="mgr1" if "team" in line else "rep_a")
        assert answer["text"] and answer["blocks"], line
    [help_] = await world.command("help")
    assert "/crm deal" in json.dumps(help_["blocks"])


async def test_slack_escaping_is_undone_and_user_text_cannot_ping(world: SlackWorld, store: Store) -> None:
    [answer] = await world.command("log acme renewal: cost &lt; budget &amp; <!channel> ok")
    assert answer["text"].startswith("Noted on ACME Renewal 2027.")
    async with store.session() as s:
        note = (await s.execute(select(TimelineEntry.text))).scalar_one()
    assert note == "cost < budget & <!channel> ok"
    [timeline] = await world.command("timeline acme renewal")
    shown = json.dumps(timeline["blocks"])
    assert "&lt;!channel&gt;" in shown and "<!channel>" not in shown


async def test_an_unmapped_slack_user_is_told_why(world: SlackWorld) -> None:
    [answer] = await world.command("find acme", who="UOUTSIDER")
    assert " ".join(answer["text"].split()).endswith(texts.UNMAPPED_HINT)


# -- buttons, sharing --------------------------------------------------------------------------

async def test_did_you_mean_buttons_complete_the_command(world: SlackWorld, slack: SlackStandIn) -> None:
    [choice] = await world.command("deal acme", who="admin")
    key = await world.click(button(choice, "Choose"), who="admin")
    [card] = await world.wait_for(lambda: slack.responses.get(key))
    assert card["blocks"][0]["text"]["text"] in ("ACME Renewal 2027", "ACME Pilot")


async def test_sharing_a_card_into_a_channel_everyone_may_see_posts_it(world: SlackWorld, slack: SlackStandIn) -> None:
    room = slack.add_channel("acme-deal", {slack_id("rep_a"), slack_id("se"), slack_id("mgr1"), slack.bot_user_id})
    [card] = await world.command("deal acme renewal", channel=room)
    key = await world.click(button(card, "Share in channel"), channel=room)
    [shared] = await world.wait_for(lambda: slack.responses.get(key))
    assert shared["response_type"] == "in_channel" and "ACME Renewal 2027" in shared["text"]
    assert "Share in channel" not in json.dumps(shared["blocks"])


@pytest.mark.parametrize("intruder", ["UOUTSIDER", slack_id("rep_c")])
async def test_sharing_is_refused_when_someone_in_the_channel_may_not_see_the_deal(
        world: SlackWorld, slack: SlackStandIn, intruder: str) -> None:
    channel = slack.add_channel("general-sales", {slack_id("rep_a"), intruder, slack.bot_user_id})
    [card] = await world.command("deal acme renewal", channel=channel)
    key = await world.click(button(card, "Share in channel"), channel=channel)
    [answer] = await world.wait_for(lambda: slack.responses.get(key))
    assert answer["response_type"] == "ephemeral" and answer["text"].startswith("Not shared:")
    assert slack.users[intruder]["real_name"] in answer["text"]
    assert not any(r.get("response_type") == "in_channel" for rs in slack.responses.values() for r in rs)


async def test_sharing_into_a_private_channel_the_bot_is_not_in_is_refused(world: SlackWorld, slack: SlackStandIn) -> None:
    secret = slack.add_channel("secret", {slack_id("rep_a")}, is_private=True)
    [card] = await world.command("deal acme renewal", channel=secret)
    key = await world.click(button(card, "Share in channel"), channel=secret)
    [answer] = await world.wait_for(lambda: slack.responses.get(key))
    assert answer["text"] == texts.SHARE_CANNOT_SEE_MEMBERS


# -- forms -------------------------------------------------------------------------------------

async def open_form(world: SlackWorld, slack: SlackStandIn, label: str) -> dict[str, Any]:
    [card] = await world.command("deal acme renewal")
    await world.click(button(card, label))
    await world.wait_for(lambda: slack.views)
    return list(slack.views.values())[-1]


def submission(world: SlackWorld, view: dict[str, Any], deal: str | None, text: str, who: str = "rep_a") -> dict[str, Any]:
    values: dict[str, Any] = {"text": {"text": {"type": "plain_text_input", "value": text}},
                              "deal": {"dealbot:deal_picker": {"type": "external_select", "selected_option":
                                       {"text": {"type": "plain_text", "text": "x"}, "value": deal} if deal else None}}}
    return world.payload("view_submission", who, trigger_id=world.slack.new_trigger_id(), view={
        "id": view["id"], "type": "modal", "callback_id": view["callback_id"],
        "private_metadata": view["private_metadata"], "state": {"values": values}, "hash": "h"})


async def test_log_note_button_opens_a_modal_and_its_submission_is_validated_inline(
        world: SlackWorld, slack: SlackStandIn, store: Store, org: Org) -> None:
    view = await open_form(world, slack, "Log note")
    assert view["title"]["text"] == "Log note"
    picker = view["blocks"][0]["element"]
    assert picker["type"] == "external_select" and picker["initial_option"]["value"] == str(org.deals["acme_renewal"])
    status, body = await world.interact(submission(world, view, None, " "))
    assert status == 200
    errors = json.loads(body)
    assert errors["response_action"] == "errors" and set(errors["errors"]) == {"deal", "text"}
    status, body = await world.interact(submission(world, view, str(org.deals["initech_secret"]), "x" * 3001))
    errors = json.loads(body)["errors"]
    assert errors["deal"] == texts.FORM_DEAL_NOT_VISIBLE and "3,001" in errors["text"]
    assert (await store.counts())["timeline_entries"] == 0
    status, body = await world.interact(submission(world, view, str(org.deals["acme_renewal"]), "Sent the MSA"))
    assert status == 200 and not body
    await world.wait_for(lambda: slack.ephemerals or slack.called("chat.postMessage"))
    async with store.session() as s:
        entry = (await s.execute(select(TimelineEntry))).scalar_one()
    assert (entry.kind, entry.text) == ("note", "Sent the MSA")


async def test_the_deal_picker_loads_options_from_the_fuzzy_lookup(world: SlackWorld, org: Org) -> None:
    payload = world.payload("block_suggestion", "rep_a", action_id="dealbot:deal_picker", block_id="deal",
                            value="acme renwal")
    status, body = await world.interact(payload)
    options = json.loads(body)["options"]
    assert status == 200 and options[0]["value"] == str(org.deals["acme_renewal"])
    hidden = world.payload("block_suggestion", "rep_a", action_id="dealbot:deal_picker", block_id="deal",
                           value="initech secret")
    assert json.loads((await world.interact(hidden))[1])["options"] == []


async def test_log_as_decision_shortcut_prefills_the_message_and_links_back_once(
        world: SlackWorld, slack: SlackStandIn, store: Store, org: Org) -> None:
    room = slack.add_channel("deal-acme-renewal", {slack_id("rep_a"), slack.bot_user_id}, is_private=True)
    async with store.transaction() as s:
        s.add(DealRoom(opportunity_id=org.deals["acme_renewal"], platform="slack", channel_id=room))
    ts = slack.add_message(room, slack_id("se"), "Legal signed off on the DPA")
    shortcut = world.payload("message_action", "rep_a", callback_id="log_as_decision",
                             trigger_id=slack.new_trigger_id(), channel={"id": room, "name": "deal-acme-renewal"},
                             message={"type": "message", "ts": ts, "user": slack_id("se"),
                                      "text": "Legal signed off on the DPA"},
                             response_url=slack.response_url("shortcut"))
    assert (await world.interact(shortcut))[0] == 200
    view = await world.wait_for(lambda: list(slack.views.values()))
    view = view[-1]
    assert view["blocks"][1]["element"]["initial_value"] == "Legal signed off on the DPA"
    assert view["blocks"][0]["element"]["initial_option"]["value"] == str(org.deals["acme_renewal"])
    for _ in range(2):  # submitted twice (a double click, a retry): one entry
        status, body = await world.interact(submission(world, view, str(org.deals["acme_renewal"]),
                                                       "Legal signed off on the DPA"))
        assert status == 200 and not body
    async with store.session() as s:
        entry = (await s.execute(select(TimelineEntry))).scalar_one()
    assert entry.kind == "decision" and entry.source_ref == f"{room}/{ts}"
    assert entry.permalink and entry.permalink.endswith(f"/archives/{room}/p{ts.replace('.', '')}")


# -- events ------------------------------------------------------------------------------------

def message(text: str, user: str, ts: str, channel: str = "C0ROOM", **extra: Any) -> dict[str, Any]:
    return {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
            "event_ts": ts, "channel_type": "channel", **extra}


async def test_each_event_type_is_received_once_even_when_slack_retries(
        world: SlackWorld, store: Store) -> None:
    from crm_store.chat_events import ChatMessage, MemberJoined, ReactionChanged

    app_events = world.client.server.app[SLACK].events
    seen: list[Any] = []

    async def record(_session: Any, event: Any) -> None:
        seen.append(event)

    for kind in (ChatMessage, ReactionChanged, MemberJoined):
        app_events.subscribe(kind, record)
    ts = "1700000000.000100"
    deliveries = [
        (message("Let's go annual", "URITA", ts), "Ev1"),
        (message("Thread reply", "URITA", "1700000001.000200", thread_ts=ts), "Ev2"),
        ({"type": "message", "subtype": "message_changed", "channel": "C0ROOM", "ts": "1700000002.0",
          "message": {"type": "message", "user": "URITA", "text": "Let's go 3 years", "ts": ts},
          "previous_message": {"type": "message", "user": "URITA", "text": "Let's go annual", "ts": ts}}, "Ev3"),
        ({"type": "message", "subtype": "message_deleted", "channel": "C0ROOM", "deleted_ts": ts, "ts": "1700000003.0",
          "previous_message": {"type": "message", "user": "URITA", "text": "Let's go 3 years", "ts": ts}}, "Ev4"),
        ({"type": "reaction_added", "user": "USE", "reaction": "white_check_mark",
          "item": {"type": "message", "channel": "C0ROOM", "ts": ts}, "event_ts": "1700000004.0"}, "Ev5"),
        ({"type": "reaction_removed", "user": "USE", "reaction": "white_check_mark",
          "item": {"type": "message", "channel": "C0ROOM", "ts": ts}, "event_ts": "1700000005.0"}, "Ev6"),
        ({"type": "member_joined_channel", "user": "UMGR1", "channel": "C0ROOM", "event_ts": "1700000006.0"}, "Ev7"),
        (message("beep", "UBOTTY", "1700000007.0", bot_id="B0OTHER", subtype="bot_message"), "Ev8"),
        ({"type": "message", "subtype": "channel_topic", "channel": "C0ROOM", "user": "URITA",
          "ts": "1700000008.0", "topic": "x"}, "Ev9"),
    ]
    for event, event_id in deliveries:
        assert (await world.event(event, event_id))[0] == 200
        assert (await world.event(event, event_id, retry=1))[0] == 200  # Slack's retry
    await world.wait_for(lambda: app_events.received + app_events.duplicates == 14)
    assert (app_events.received, app_events.duplicates) == (7, 7)
    seen.sort(key=lambda e: e.event_id)  # Bolt runs listeners concurrently: order is not kept
    kinds = [(type(e).__name__, getattr(e, "change", getattr(e, "added", None))) for e in seen]
    assert kinds == [("ChatMessage", "new"), ("ChatMessage", "new"), ("ChatMessage", "edited"),
                     ("ChatMessage", "deleted"), ("ReactionChanged", True), ("ReactionChanged", False),
                     ("MemberJoined", None)]
    assert seen[1].thread_id == ts and seen[2].previous_text == "Let's go annual" and seen[3].message_id == ts
    async with store.session() as s:
        claimed = set((await s.execute(select(ProcessedEvent.event_id))).scalars())
    assert claimed == {f"Ev{i}" for i in range(1, 8)}


async def test_a_retry_after_a_restart_is_still_dropped(store: Store, org: Org, slack: SlackStandIn) -> None:
    from crm_store.chat_events import ChatMessage

    event = message("Decision: annual billing", "URITA", "1700000100.000100")
    first = await start(store, slack)
    try:
        assert (await SlackWorld(first, slack).event(event, "EvRestart"))[0] == 200
        await SlackWorld(first, slack).wait_for(lambda: first.server.app[SLACK].events.received)
    finally:
        await first.close()
    second = await start(store, slack)
    seen: list[Any] = []

    async def record(_session: Any, e: Any) -> None:
        seen.append(e)

    second.server.app[SLACK].events.subscribe(ChatMessage, record)
    try:
        assert (await SlackWorld(second, slack).event(event, "EvRestart", retry=2))[0] == 200
    finally:
        await second.close()
    assert seen == []


async def test_a_digest_subscribed_in_slack_comes_by_dm_from_the_servers_scheduler(
        world: SlackWorld, slack: SlackStandIn, store: Store, org: Org) -> None:
    now = datetime.now(timezone.utc)
    [answer] = await world.command(f"digest daily {now:%H:%M} UTC", who="mgr1")
    assert f"daily digest at {now:%H:%M} (UTC)" in answer["text"]
    async with store.transaction() as s:  # due this minute (as if subscribed yesterday)
        await s.execute(update(DigestSubscription).values(next_due_at=now.replace(second=0, microsecond=0)))
    world.client.server.app[SCHEDULER].get_job(TICK_JOB).modify(next_run_time=now)  # not at the next minute
    await world.wait_for(lambda: slack.called("files.completeUploadExternal"))
    [dm] = [c for c in slack.channels.values() if c.is_im and slack_id("mgr1") in c.members]
    digest, chart = slack.messages[dm.id]
    assert "Pipeline digest for Mona Manager" in digest.text and digest.blocks
    assert [slack.files[f]["bytes"][:4] for f in chart.files] == [b"\x89PNG"]
    assert await world.wait_for(lambda: _run_statuses(store)) == ["sent"]


async def _run_statuses(store: Store) -> list[str]:
    async with store.session() as s:
        return [status for status in (await s.execute(select(DigestRun.status))).scalars() if status == "sent"]


async def test_the_server_forgets_event_ids_once_slack_can_no_longer_retry(
        world: SlackWorld, store: Store) -> None:
    long_ago = datetime.now(timezone.utc) - KEEP_CLAIMS - timedelta(hours=1)
    async with store.transaction() as s:
        s.add(ProcessedEvent(platform="slack", event_id="EvAncient", processed_at=long_ago))
    assert (await world.event(message("Fresh", "URITA", "1700000200.000100"), "EvFresh"))[0] == 200
    job = world.client.server.app[SCHEDULER].get_job(PURGE_JOB)
    job.modify(next_run_time=datetime.now(timezone.utc))  # due now instead of in a minute

    async def claimed() -> set[str]:
        async with store.session() as s:
            return set((await s.execute(select(ProcessedEvent.event_id))).scalars())

    deadline = time.monotonic() + 10
    while await claimed() != {"EvFresh"}:
        assert time.monotonic() < deadline, await claimed()
        await asyncio.sleep(0.05)


async def test_uninstalling_the_app_is_audited(world: SlackWorld, store: Store) -> None:
    assert (await world.event({"type": "app_uninstalled", "event_ts": "1700000200.0"}, "EvBye"))[0] == 200
    await world.wait_for(lambda: world.client.server.app[SLACK].events.received)
    async with store.session() as s:
        assert "app.app_uninstalled" in set((await s.execute(select(AuditLog.action))).scalars())


# -- security and failures ---------------------------------------------------------------------

@pytest.mark.parametrize("forgery", ["wrong secret", "stale timestamp", "no signature"])
async def test_forged_or_stale_requests_get_401_and_do_nothing(
        world: SlackWorld, slack: SlackStandIn, store: Store, forgery: str) -> None:
    body = "command=%2Fcrm&text=log+acme+renewal%3A+forged&user_id=URITA&team_id=T0TEST&response_url=" + \
        slack.response_url("forged")
    if forgery == "no signature":
        async with world.client.post("/slack/events", data=body,
                                     headers={"Content-Type": "application/x-www-form-urlencoded"}) as response:
            status = response.status
    else:
        status, _ = await world.post(body, "application/x-www-form-urlencoded",
                                     secret="not-the-secret" if forgery == "wrong secret" else SECRET,
                                     timestamp=int(time.time()) - 6 * 60 if forgery == "stale timestamp" else None)
    assert status == 401
    assert slack.calls == [] and not slack.responses
    assert (await store.counts())["timeline_entries"] == 0


async def test_a_429_storm_is_waited_out_and_the_call_made_once(world: SlackWorld, slack: SlackStandIn) -> None:
    slack.fail_next("users.info", "ratelimited", status=429, times=2)
    [answer] = await world.command("deal acme pilot", who="rep_b")
    assert "ACME Pilot" in answer["text"]
    assert [c.status for c in slack.called("users.info")] == [429, 429, 200]


async def test_slack_refusing_the_token_is_reported_politely(world: SlackWorld, slack: SlackStandIn) -> None:
    await world.command("help")  # installed and working
    slack.revoke_token()
    [answer] = await world.command("deal acme renewal", who="rep_b")  # users.info: invalid_auth
    assert answer["text"] == texts.TOKEN_INVALID


async def test_a_token_refused_from_the_start_is_answered_in_the_ack(store: Store, org: Org) -> None:
    async with SlackStandIn(bot_token=TOKEN) as slack:
        seed_people(slack)
        slack.revoke_token()
        client = await start(store, slack)
        try:
            world = SlackWorld(client, slack)
            assert await world.command("help", wait=False) == []
        finally:
            await client.close()
    assert world.last_ack == texts.NOT_AUTHORIZED


async def test_socket_mode_takes_no_http_route(store: Store, slack: SlackStandIn) -> None:
    app = create_app(store, load_settings(slack_bot_token=TOKEN, slack_app_token="xapp-1-test",
                                          slack_api_url=slack.api_url))
    routes = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert "/slack/events" not in routes and SLACK in app
    http = create_app(store, load_settings(slack_bot_token=TOKEN, slack_signing_secret=SECRET,
                                           slack_api_url=slack.api_url))
    assert "/slack/events" in {r.resource.canonical for r in http.router.routes() if r.resource is not None}


async def test_socket_mode_serves_commands_and_events_over_the_websocket(
        store: Store, org: Org, slack: SlackStandIn) -> None:
    app = create_app(store, load_settings(slack_bot_token=TOKEN, slack_app_token=slack.app_token,
                                          slack_api_url=slack.api_url))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        await slack.wait_socket()
        world = SlackWorld(client, slack)
        command = await slack.socket_send("slash_commands", world.command_form("deal acme renewal", "rep_a",
                                                                                "C0GENERAL", "sock1"))
        [answer] = await world.wait_for(lambda: slack.responses.get("sock1"))
        assert "ACME Renewal 2027" in answer["text"] and answer["response_type"] == "ephemeral"
        assert command in slack.socket_acks  # acknowledged on the socket, as Slack requires within 3 s

        body = world.event_callback(message("Socket hello", "URITA", "1700000100.000100"), "EvSock1")
        sent = [await slack.socket_send("events_api", body), await slack.socket_send("events_api", body, retry_attempt=1)]
        await world.wait_for(lambda: all(e in slack.socket_acks for e in sent))
        events = app[SLACK].events
        assert (events.received, events.duplicates) == (1, 1)
        async with store.session() as s:
            assert list((await s.execute(select(ProcessedEvent.event_id))).scalars()) == ["EvSock1"]
        assert slack.called("apps.connections.open")[0].ok  # with the app-level token, not the bot token
    finally:
        await client.close()
    assert slack.sockets_open == 0  # shutting down closed the connection


async def test_a_form_failing_on_our_side_stays_open_with_a_reference(
        world: SlackWorld, slack: SlackStandIn, store: Store, org: Org) -> None:
    view = await open_form(world, slack, "Log decision")
    slack.revoke_token()  # Ben's identity is not cached yet: users.info fails while submitting
    status, body = await world.interact(submission(world, view, str(org.deals["acme_pilot"]), "ok", who="rep_b"))
    assert status == 200
    errors = json.loads(body)
    assert errors["response_action"] == "errors" and "reference" in errors["errors"]["text"]
    assert (await store.counts())["timeline_entries"] == 0
