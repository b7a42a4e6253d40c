"""Teams end to end: real Bot Framework activities, signed by a local issuer, delivered over HTTP to
``/api/messages`` of the real server (botbuilder inside), answered through the connector stand-in.

Thin on purpose: what commands, capture and forms *do* is tested once, platform-neutrally (the
shell and the store suites); here, that Teams traffic reaches them and comes back right.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from bot.teams.ids import LOG_AS_DECISION
from crm_store import Store, conversation_refs
from crm_store.models import DealRoom, TimelineEntry, TranscriptMessage, User
from handlers import texts
from tests.org import Org
from tests.slack_world import wait_until
from tests.stand_ins.teams import TeamsStandIn
from tests.teams_world import (
    APP_ID,
    PASSWORD,
    TEAM,
    TENANT,
    TeamsWorld,
    aad,
    card_of,
    card_text,
    seed_people,
    start_teams_app,
    submits,
)

NO_ROOMS = {"deal_room_min_amount": "100000000"}  # rooms are tested in test_teams_rooms.py


@pytest.fixture
async def teams() -> AsyncIterator[TeamsStandIn]:
    async with TeamsStandIn(APP_ID, PASSWORD, tenant_id=TENANT, team_id=TEAM) as stand_in:
        seed_people(stand_in, ("aad-guest", "guest@partner.test", "Gus Guest"))
        yield stand_in


@pytest.fixture
async def world(store: Store, org: Org, teams: TeamsStandIn) -> AsyncIterator[TeamsWorld]:
    client = await start_teams_app(store, teams, capture_mode="explicit", **NO_ROOMS)
    try:
        yield TeamsWorld(client, teams)
    finally:
        await client.close()


def posts(teams: TeamsStandIn) -> list[Any]:
    return [c for c in teams.called("connector") if c.method in ("POST", "PUT")]


# -- authentication ------------------------------------------------------------------------------

async def test_a_signed_activity_is_answered_at_its_service_url(world: TeamsWorld, teams: TeamsStandIn) -> None:
    answer = await world.ask("help")
    assert answer.conversation_id == world.chat("rep_a")
    card = card_of(answer)
    assert card["version"] == "1.5" and answer.text  # a card, and a text fallback
    assert "deal" in card_text(answer)
    # the connector token of a multi-tenant bot comes from the botframework.com tenant
    assert teams.token_requests == [("botframework.com", "https://api.botframework.com/.default")]


FORGERIES = {
    "no header": {"authorization": ""},
    "not a bearer token": {"authorization": "Basic dXNlcjpwYXNz"},
    "garbage token": {"authorization": "Bearer not.a.jwt"},
    "expired": {"expires_in": -3600},
    "wrong audience": {"audience": "someone-elses-app"},
    "wrong issuer": {"issuer": "https://evil.example"},
    "bad signature": {"foreign_key": True},
    "unknown key": {"kid": "unknown"},
    "service url not in the token": {"service_url": "https://elsewhere.example/"},
}


@pytest.mark.parametrize("forgery", FORGERIES)
async def test_unauthenticated_activities_get_401_and_cause_nothing(
        world: TeamsWorld, teams: TeamsStandIn, store: Store, forgery: str) -> None:
    message = teams.add_message(world.chat("rep_a"), aad("rep_a"), "log acme renewal: forged")
    activity = teams.incoming_activity(message)
    how = dict(FORGERIES[forgery])
    if "authorization" in how:
        status, body = await world.deliver(activity, authorization=how["authorization"])
    else:
        status, body = await world.deliver(activity, token=teams.sign(**how))
    assert status == 401, body
    assert teams.called("connector") == [] and teams.token_requests == []
    counts = await store.counts()
    assert counts["timeline_entries"] == 0
    assert await conversation_refs.reference(store, "teams", "user", aad("rep_a")) is None


@pytest.mark.parametrize("body, content_type, status", [
    (b"{not json", "application/json", 400), (b'{"text": "no type"}', "application/json", 400),
    (b"type=message", "application/x-www-form-urlencoded", 415)])
async def test_malformed_requests_are_refused_with_a_reason(
        world: TeamsWorld, teams: TeamsStandIn, body: bytes, content_type: str, status: int) -> None:
    async with world.client.post("/api/messages", data=body, headers={
            "Content-Type": content_type, "Authorization": f"Bearer {teams.sign()}"}) as response:
        assert response.status == status
        assert (await response.json())["error"]


# -- commands ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ("help", "timeline"), ("find acme", "ACME"), ("deal acme renewal", "ACME Renewal 2027"),
    ("account acme corp", "ACME Corporation"), ("contact coyote", "Coyote"), ("pipeline", "Negotiation"),
    ("log acme renewal: called the CFO", "ACME Renewal 2027"), ("decision acme renewal: 3-year term", "decision"),
    ("timeline acme renewal", "3-year term"), ("search pricing", "pricing"), ("room acme renewal", "room"),
    ("digest", "digest"), ("acme renewl", "ACME"), ("frobnicate acme", "frobnicate"),
])
async def test_every_command_of_the_grammar_answers_in_the_personal_chat(
        world: TeamsWorld, line: str, expected: str) -> None:
    if line.startswith("timeline"):
        await world.ask("decision acme renewal: 3-year term")
    answer = await world.ask(line)
    assert expected.lower() in (card_text(answer) + answer.text).lower(), (line, card_text(answer))


async def test_an_unmapped_teams_user_is_told_why(world: TeamsWorld) -> None:
    answer = await world.ask("log acme renewal: hello", who="guest")
    assert texts.LOG_UNMAPPED.format(noun="note") in card_text(answer)


async def test_the_mention_is_stripped_and_an_answer_everyone_may_see_goes_into_the_thread(
        world: TeamsWorld, teams: TeamsStandIn) -> None:
    channel = teams.add_channel("sales")
    asked = await world.say("help", "rep_a", channel)
    thread = asked.conversation_id
    answer = await wait_until(lambda: world.bot_messages(thread))
    assert "deal" in card_text(answer[0])
    assert world.bot_messages(world.chat("rep_a")) == []


async def test_a_deal_not_everyone_here_may_see_goes_to_the_1to1_chat_with_a_note(
        world: TeamsWorld, teams: TeamsStandIn) -> None:
    channel = teams.add_channel("sales")  # standard: the whole team, guest and other reps included
    asked = await world.say("deal acme renewal", "rep_a", channel)
    note = await wait_until(lambda: world.bot_messages(asked.conversation_id))
    assert note[0].text == texts.TEAMS_SENT_PRIVATELY
    private = await wait_until(lambda: world.bot_messages(world.chat("rep_a")))
    assert "ACME Renewal 2027" in card_text(private[0])


async def test_a_channel_message_without_a_mention_is_not_a_command(world: TeamsWorld, teams: TeamsStandIn) -> None:
    channel = teams.add_channel("sales")
    await world.say("deal acme renewal", "rep_a", channel, mention=False)
    assert posts(teams) == []


async def test_1to1_chats_are_remembered_for_proactive_messages(world: TeamsWorld, store: Store, org: Org) -> None:
    await world.ask("help", who="rep_b")
    reference = await conversation_refs.reference(store, "teams", "user", aad("rep_b"))
    assert reference and reference["conversation"]["id"] == world.chat("rep_b")
    assert reference["serviceUrl"] == world.teams.service_url
    async with store.session() as s:  # the first command also linked the person's Teams id
        user = (await s.execute(select(User).where(User.teams_aad_id == aad("rep_b")))).scalar_one()
    assert user.email == org.email("rep_b")


# -- buttons and forms -------------------------------------------------------------------------------

async def test_did_you_mean_buttons_complete_the_command(world: TeamsWorld) -> None:
    answer = await world.ask("dael acme renewal")
    button = next(s for s in submits(answer) if s["data"].get("command", "").startswith("deal"))
    before = len(world.bot_messages(world.chat("rep_a")))
    status, _ = await world.press(button["data"])
    assert status in (200, 201)
    pressed = await wait_until(lambda: world.bot_messages(world.chat("rep_a"))[before:])
    assert "Negotiation" in card_text(pressed[-1])


async def test_a_log_note_form_logs_once_and_an_empty_one_says_what_is_missing(
        world: TeamsWorld, store: Store) -> None:
    card = await world.ask("deal acme renewal")
    form = next(s for s in submits(card) if s["data"].get("command", "").startswith("log"))
    data = form["data"]
    before = len(world.bot_messages(world.chat("rep_a")))
    await world.press(data, **{data["input"]: "   "})
    refused = await wait_until(lambda: world.bot_messages(world.chat("rep_a"))[before:])
    assert "empty" in card_text(refused[-1]).lower() or "write" in card_text(refused[-1]).lower()
    await world.press(data, **{data["input"]: "Sent the revised quote"})
    await wait_until(lambda: len(world.bot_messages(world.chat("rep_a"))) > before + 1)
    async with store.session() as s:
        notes = (await s.execute(select(TimelineEntry.text).where(TimelineEntry.kind == "note"))).scalars().all()
    assert notes == ["Sent the revised quote"]


# -- deal-room conversation ----------------------------------------------------------------------------

async def room_channel(store: Store, org: Org, teams: TeamsStandIn) -> str:
    channel = teams.add_channel("deal-acme-renewal-2027", membership="private",
                                members=[aad("rep_a"), aad("se"), aad("rep_b")])
    async with store.transaction() as s:
        s.add(DealRoom(opportunity_id=org.deals["acme_renewal"], platform="teams", channel_id=channel,
                       channel_name="deal-acme-renewal-2027", status="active", listed_absent=[]))
    return channel


async def entries(store: Store) -> list[TimelineEntry]:
    async with store.session() as s:
        return list((await s.execute(select(TimelineEntry).where(TimelineEntry.source_ref.is_not(None))
                                     .order_by(TimelineEntry.id))).scalars())


async def test_room_messages_markers_edits_and_deletes_are_captured_once_with_a_link_back(
        world: TeamsWorld, teams: TeamsStandIn, store: Store, org: Org) -> None:
    channel = await room_channel(store, org, teams)
    said = await world.say("Decision: we go with the 3-year term", "rep_a", channel, mention=False)
    await world.say("thanks", "se", channel, mention=False, reply_to=said.id)
    activity = teams.incoming_activity(said)
    status, _ = await world.deliver(copy.deepcopy(activity))  # Teams delivering the same message again
    assert status in (200, 201)
    [entry] = await entries(store)
    assert entry.kind == "decision" and entry.source_ref == f"{channel}/{said.id}"
    assert entry.permalink and entry.permalink.startswith("https://teams.microsoft.com/l/message/")
    async with store.session() as s:
        kept = (await s.execute(select(TranscriptMessage).order_by(TranscriptMessage.id))).scalars().all()
    assert [m.text for m in kept] == ["Decision: we go with the 3-year term", "thanks"]
    assert kept[1].thread_ref == said.id

    edit = {**copy.deepcopy(activity), "type": "messageUpdate", "text": "Decision: we go with the 2-year term",
            "timestamp": "2026-11-23T12:00:00Z", "channelData": {**activity["channelData"], "eventType": "editMessage"}}
    assert (await world.deliver(edit))[0] in (200, 201)
    [entry] = await entries(store)
    assert "2-year" in entry.text

    delete = {**copy.deepcopy(activity), "type": "messageDelete", "text": "",
              "channelData": {**activity["channelData"], "eventType": "softDeleteMessage"}}
    assert (await world.deliver(delete))[0] in (200, 201)
    [entry] = await entries(store)
    assert entry.retracted_at is not None


async def test_log_as_decision_prefills_the_form_validates_and_logs_once(
        world: TeamsWorld, teams: TeamsStandIn, store: Store, org: Org) -> None:
    channel = await room_channel(store, org, teams)
    said = teams.add_message(channel, aad("se"), "Legal signed off on the <b>DPA</b>")
    payload = {"id": said.id, "body": {"contentType": "html", "content": "Legal signed off on the <b>DPA</b>"},
               "from": {"user": {"id": aad("se"), "displayName": "Sam Engineer"}},
               "linkToMessage": f"https://teams.microsoft.com/l/message/{channel}/{said.id}"}
    value = {"commandId": LOG_AS_DECISION, "commandContext": "message", "messagePayload": payload}
    status, body = await world.invoke("composeExtension/fetchTask", value, "rep_a", channel)
    assert status == 200
    form = body["task"]["value"]["card"]["content"]
    inputs = {i["id"]: i.get("value") for i in form["body"] if i["type"].startswith("Input.")}
    assert inputs == {"text": "Legal signed off on the DPA", "deal": f"#{org.deals['acme_renewal']}"}

    status, body = await world.invoke("composeExtension/submitAction",
                                      {**value, "data": {"text": "Legal signed off", "deal": "no such deal xyz"}},
                                      "rep_a", channel)
    assert status == 200 and body["task"]["type"] == "continue"  # the form again, saying what is wrong
    assert "no such deal xyz" in str(body["task"]["value"]["card"]["content"])
    for _ in range(2):  # submitted twice: one entry
        status, body = await world.invoke("composeExtension/submitAction",
                                          {**value, "data": {"text": "Legal signed off on the DPA",
                                                             "deal": f"#{org.deals['acme_renewal']}"}},
                                          "rep_a", channel)
        assert status == 200 and body["task"]["type"] == "message"
    [entry] = await entries(store)
    assert entry.kind == "decision" and entry.source_ref == f"{channel}/{said.id}"
    assert entry.permalink == payload["linkToMessage"]


async def test_a_single_tenant_bot_gets_its_tokens_from_its_own_tenant(
        store: Store, org: Org, teams: TeamsStandIn) -> None:
    client = await start_teams_app(store, teams, microsoft_app_type="SingleTenant", **NO_ROOMS)
    try:
        answer = await TeamsWorld(client, teams).ask("help")
    finally:
        await client.close()
    assert card_text(answer)
    assert teams.token_requests == [(TENANT, "https://api.botframework.com/.default")]


async def test_a_detected_decision_is_suggested_in_the_authors_1to1_chat_and_its_button_logs_it(
        store: Store, org: Org, teams: TeamsStandIn) -> None:
    client = await start_teams_app(store, teams, **NO_ROOMS)  # CAPTURE_MODE defaults to suggest
    try:
        world = TeamsWorld(client, teams)
        channel = await room_channel(store, org, teams)
        await world.say("Legal signed off on the DPA", "rep_a", channel, mention=False)
        [offer] = await wait_until(lambda: world.bot_messages(world.chat("rep_a")))
        assert "Legal signed off on the DPA" in card_text(offer) and await entries(store) == []
        log_it = next(s for s in submits(offer) if s["data"]["command"].startswith("capture log"))
        await world.press(log_it["data"])
        said = await wait_until(lambda: world.bot_messages(world.chat("rep_a"))[1:])
        assert "ACME Renewal 2027" in card_text(said[0])
        [entry] = await entries(store)
        assert (entry.kind, entry.data["captured"]) == ("decision", "suggested")
        assert teams.thread_messages(channel)[0].from_bot is False  # nothing was said in the room itself
    finally:
        await client.close()


async def test_installing_the_app_in_a_team_remembers_how_to_reach_it(
        world: TeamsWorld, teams: TeamsStandIn, store: Store) -> None:
    activity = teams.incoming_activity(teams.add_message(teams.add_channel("general-2"), aad("mgr1"), ""))
    activity.update(type="conversationUpdate", text=None,
                    membersAdded=[{"id": f"28:{APP_ID}", "name": "Dealbot"}])
    activity["channelData"]["eventType"] = "teamMemberAdded"
    status, _ = await world.deliver(activity)
    assert status in (200, 201)
    reference = await conversation_refs.reference(store, "teams", "team", TEAM)
    assert reference and reference["serviceUrl"] == teams.service_url
    assert reference["tenantId"] == TENANT
    assert posts(teams) == []  # nothing said in the team on install
