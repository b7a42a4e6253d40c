"""Deal rooms and proactive messages on Teams, end to end: the real server (botbuilder's adapter,
the outbox worker, `DealRooms` with the Teams port) against the Teams stand-in, which keeps the
channels (Graph) and the messages (connector). Only Microsoft is replaced."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from botbuilder.schema import Activity, ActivityTypes
from sqlalchemy import select

from bot.digests import Digests
from bot.server import ROOMS
from bot.settings import load_settings
from bot.teams.runtime import TeamsRuntime, teams_runtime
from crm_store import Store, conversation_refs, digests
from crm_store.models import DealRoom, OutboxItem, utcnow
from deal_rooms.rooms import DealRooms
from handlers import texts
from handlers.digest_schedule import DigestSettings
from tests.org import Org
from tests.stand_ins.teams import Call, Channel, Message, TeamsStandIn
from tests.teams_world import APP_ID, PASSWORD, TEAM, TENANT, aad, card_of, card_text, seed_people, \
    start_teams_app, teams_settings
from tests.test_deal_rooms import API, Rooms
from tests.test_digests_slack import PNG_SIGNATURE, TITLE, move_a_deal, until_run
from tests.slack_world import wait_until

ROOM = "deal-acme-renewal-2027"
CARD_VERSION = "1.5"


@pytest.fixture
async def teams() -> AsyncIterator[TeamsStandIn]:
    async with TeamsStandIn(APP_ID, PASSWORD, tenant_id=TENANT, team_id=TEAM) as stand_in:
        seed_people(stand_in)
        yield stand_in


class RoomsOnTeams(Rooms):
    """`Rooms` of the Slack suite (deals changed through the REST API), watching the Teams stand-in."""

    def __init__(self, client: TestClient, teams: TeamsStandIn, store: Store) -> None:
        super().__init__(client, teams, store)  # type: ignore[arg-type]  # only put_deal and wait_for are shared
        self.teams = teams

    def channel(self, name: str) -> Channel | None:
        return self.teams.channel_by_name(name)

    def created(self) -> list[Call]:
        return [c for c in channel_creates(self.teams) if c.status == 201]

    def threads(self, channel: Channel) -> list[Message]:
        return self.teams.thread_messages(channel.id)

    async def room_row(self) -> DealRoom:
        async with self.store.session() as s:
            [row] = (await s.execute(select(DealRoom).where(DealRoom.platform == "teams"))).scalars().all()
            return row

    async def settled(self) -> None:
        """No Teams outbox row due now or within a second (grouped updates included)."""
        async def idle() -> bool:
            async with self.store.session() as s:
                row = (await s.execute(select(OutboxItem.id).where(
                    OutboxItem.status == "pending", OutboxItem.platform.in_(("teams", "dealbot")),
                    OutboxItem.next_attempt_at <= utcnow() + timedelta(seconds=1)).limit(1))).first()
            return row is None
        await wait_until(idle, timeout=15)


def channel_creates(teams: TeamsStandIn) -> list[Call]:
    """Graph's ``POST /teams/{team}/channels``, whatever it answered."""
    return [c for c in teams.called("graph", "POST", f"/teams/{TEAM}/channels") if c.path.endswith("/channels")]


async def start(store: Store, teams: TeamsStandIn, **settings: Any) -> TestClient:
    settings.setdefault("deal_room_update_group_seconds", 0.2)
    return await start_teams_app(store, teams, dealbot_api_token=API, **settings)


@pytest.fixture
async def rooms(store: Store, org: Org, teams: TeamsStandIn) -> AsyncIterator[RoomsOnTeams]:
    client = await start(store, teams)
    try:
        yield RoomsOnTeams(client, teams, store)
    finally:
        await client.close()


def deal_rooms_of(client: TestClient) -> DealRooms:
    assert client.app is not None
    [found] = [r for r in client.app[ROOMS] if r.platform == "teams"]
    return found


# -- creation --------------------------------------------------------------------------------------

async def test_one_private_channel_owned_by_the_deal_owner_staffed_with_the_card_as_first_thread(
        rooms: RoomsOnTeams, store: Store, org: Org) -> None:
    teams = rooms.teams
    teams.team_members.discard(aad("se"))  # Sam is not in the team yet: staffing adds him
    deal_rooms = deal_rooms_of(rooms.client)
    opportunity_id = org.deals["acme_renewal"]  # 250k, open, Negotiation: qualifies, no room yet
    await asyncio.gather(*(deal_rooms.react(opportunity_id) for _ in range(10)))
    channel = await rooms.wait_for(lambda: rooms.channel(ROOM))
    await rooms.wait_for(lambda: rooms.threads(channel) and aad("se") in channel.members)
    await rooms.settled()
    await asyncio.gather(*(deal_rooms.react(opportunity_id) for _ in range(10)))  # again, once it exists
    await rooms.settled()

    assert len(rooms.created()) == 1
    assert channel.membership == "private" and channel.owners == {aad("rep_a")}
    assert channel.members == {aad("rep_a"), aad("se")} and aad("se") in teams.team_members
    [create] = rooms.created()
    assert create.body["membershipType"] == "private"
    [owner] = create.body["members"]
    assert owner["roles"] == ["owner"] and owner["user@odata.bind"].endswith(f"/users('{aad('rep_a')}')")
    sam = f"/users('{aad('se')}')"
    added = [c.path.split(f"/teams/{TEAM}/")[1] for c in teams.called("graph", "POST", "/members")
             if c.status == 201 and c.body["user@odata.bind"].endswith(sam)]
    assert added == ["members", f"channels/{channel.id}/members"]  # into the team, then the channel; once
    [card] = rooms.threads(channel)
    assert card.from_bot and card_of(card)["version"] == CARD_VERSION
    shown = card_text(card)
    assert "ACME Renewal 2027" in shown and "Rita Rep" in shown
    assert "Negotiation" in channel.description and channel.description.endswith("Dealbot deal room")
    row = await rooms.room_row()
    assert (row.status, row.channel_id, row.channel_name) == ("active", channel.id, ROOM)
    assert row.pinned_message_ref == card.id
    assert row.conversation_ref is not None
    assert row.conversation_ref["conversation"]["id"] == channel.id
    assert row.conversation_ref["serviceUrl"] == teams.service_url
    creates = [c for c in teams.called("connector", "POST", "/v3/conversations") if c.path.endswith("conversations")]
    assert len(creates) == 1 and creates[0].status == 201  # the card went through the connector, once


async def test_a_standard_channel_room_lists_no_members_and_adds_the_people_to_the_team(
        store: Store, org: Org, teams: TeamsStandIn) -> None:
    teams.team_members -= {aad("rep_a"), aad("se")}  # neither is in the team yet
    client = await start(store, teams, deal_room_private=False)
    try:
        rooms = RoomsOnTeams(client, teams, store)
        await rooms.put_deal("O-standard")
        await rooms.put_deal("O-standard")  # the same change, delivered again
        channel = await rooms.wait_for(lambda: rooms.channel(ROOM))
        await rooms.wait_for(lambda: rooms.threads(channel) and {aad("rep_a"), aad("se")} <= teams.team_members)
        await rooms.settled()
        [create] = rooms.created()
        assert create.body["membershipType"] == "standard" and "members" not in create.body
        assert channel.membership == "standard" and channel.members == set()
        joined = [c.body["user@odata.bind"] for c in teams.called("graph", "POST", f"/teams/{TEAM}/members")
                  if c.status == 201]
        assert sorted(joined) == sorted(f"{teams.graph_url.rstrip('/')}/users('{aad(w)}')" for w in ("rep_a", "se"))
        assert not [c for c in teams.called("graph", "POST", "/members") if "/channels/" in c.path]
        assert len(rooms.threads(channel)) == 1 and (await rooms.room_row()).conversation_ref is not None
    finally:
        await client.close()


# -- keeping the room current, closing, reopening ------------------------------------------------

async def ready_room(rooms: RoomsOnTeams, key: str) -> tuple[Channel, Message]:
    await rooms.put_deal(key)
    channel = await rooms.wait_for(lambda: rooms.channel(ROOM))
    [card] = await rooms.wait_for(lambda: rooms.threads(channel))
    await rooms.settled()
    return channel, card


async def test_a_stage_change_is_posted_and_the_card_and_description_follow_in_place(rooms: RoomsOnTeams) -> None:
    channel, card = await ready_room(rooms, "O-moving")
    await rooms.put_deal("O-moving", stage="Commit", amount="300000")
    update = await rooms.wait_for(lambda: next((m for m in rooms.threads(channel)
                                                if "What changed" in card_text(m)), None))
    await rooms.settled()
    shown = card_text(update)
    assert "Commit" in shown and "300" in shown and card_of(update)["version"] == CARD_VERSION
    assert [m.id for m in rooms.threads(channel)] == [card.id, update.id]  # a new thread; the card stays first
    assert card.updated_count >= 1 and "Commit" in card_text(card) and "$300,000" in card_text(card)
    puts = rooms.teams.called("connector", "PUT", f"/activities/{card.id}")
    assert puts and all(c.status == 200 for c in puts)
    assert puts[0].path.endswith(f"/v3/conversations/{channel.id};messageid={card.id}/activities/{card.id}")
    assert channel.description.startswith("$300k · Commit") and "Rita Rep" in channel.description
    assert channel.description.endswith("Dealbot deal room")


async def test_a_won_deal_gets_its_summary_then_the_channel_is_renamed_closed_once_and_back_on_reopening(
        store: Store, org: Org, teams: TeamsStandIn) -> None:
    client = await start(store, teams, deal_room_archive_delay_hours=0)
    try:
        rooms = RoomsOnTeams(client, teams, store)
        channel, card = await ready_room(rooms, "O-win")
        await rooms.put_deal("O-win", stage="Closed Won", status="won", amount="275000")
        await rooms.wait_for(lambda: channel.display_name == "closed-" + ROOM)
        await rooms.wait_for(lambda: room_status(store, "archived"))
        await rooms.settled()
        [summary] = [m for m in rooms.threads(channel) if "was won" in card_text(m)]
        assert "$275,000" in card_text(summary) and "0 decisions" in card_text(summary)
        renames = [c for c in teams.called("graph", "PATCH", f"/channels/{channel.id}")
                   if "displayName" in (c.body or {})]
        assert [(c.body["displayName"], c.status) for c in renames] == [("closed-" + ROOM, 204)]
        # the summary went out before the rename
        order = [c for c in teams.calls if c in renames or (c.service == "connector" and c.method == "POST"
                                                             and c.response and c.response.get("activityId") == summary.id)]
        assert [c.service for c in order] == ["connector", "graph"]

        await rooms.put_deal("O-win", stage="Negotiation", status="open")  # reopened
        await rooms.wait_for(lambda: channel.display_name == ROOM)
        await rooms.wait_for(lambda: room_status(store, "active"))
        await rooms.settled()
        renames = [c.body["displayName"] for c in teams.called("graph", "PATCH", f"/channels/{channel.id}")
                   if "displayName" in (c.body or {})]
        assert renames == ["closed-" + ROOM, ROOM] and len(rooms.created()) == 1
    finally:
        await client.close()


async def room_status(store: Store, status: str) -> bool:
    async with store.session() as s:
        return (await s.execute(select(DealRoom.status).where(DealRoom.platform == "teams"))).scalar_one() == status


# -- Graph's refusals ------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["any graph call", "the channel create"])
async def test_graph_429_waits_for_retry_after_and_the_room_is_still_created_once(
        rooms: RoomsOnTeams, store: Store, where: str) -> None:
    teams = rooms.teams
    if where == "any graph call":
        teams.throttle_graph(1, retry_after=1)
    else:
        teams.fail_next("graph", "POST", f"/teams/{TEAM}/channels", 429, retry_after=1)
    await rooms.put_deal("O-throttled")
    refused = await rooms.wait_for(lambda: [c for c in teams.called("graph") if c.status == 429])
    throttled_at, seen = time.monotonic(), len(teams.called("graph"))
    await rooms.wait_for(lambda: len(teams.called("graph")) > seen)
    assert time.monotonic() - throttled_at >= 0.9  # nothing asked of Graph before Retry-After passed
    channel = await rooms.wait_for(lambda: rooms.channel(ROOM))
    await rooms.wait_for(lambda: rooms.threads(channel) and aad("se") in channel.members)
    await rooms.settled()
    assert len(refused) == 1 and len(rooms.created()) == 1
    assert [c.status for c in channel_creates(teams)] == ([201] if where == "any graph call" else [429, 201])
    async with store.session() as s:
        [row] = (await s.execute(select(OutboxItem).where(OutboxItem.operation == "room.create"))).scalars().all()
    assert (row.status, row.attempts) == ("done", 0)  # a 429 pauses; it is no failed attempt
    assert len(rooms.threads(channel)) == 1


async def test_a_taken_name_gives_the_room_the_next_candidate(rooms: RoomsOnTeams, store: Store) -> None:
    teams = rooms.teams
    theirs = teams.add_channel(ROOM)  # somebody's channel already has the name
    await rooms.put_deal("O-taken")
    row = await rooms.wait_for(lambda: _active_room(store))
    channel = teams.channels[row.channel_id]
    await rooms.wait_for(lambda: rooms.threads(channel))
    await rooms.settled()
    assert channel.id != theirs and channel.display_name == row.channel_name
    assert channel.display_name.startswith(ROOM + "-") and len(channel.display_name) <= 50
    assert [c.status for c in channel_creates(teams)] == [409, 201]
    assert teams.channels[theirs].display_name == ROOM and teams.thread_messages(theirs) == []


async def _active_room(store: Store) -> DealRoom | None:
    async with store.session() as s:
        row = (await s.execute(select(DealRoom).where(DealRoom.platform == "teams"))).scalar_one_or_none()
    return row if row is not None and row.status == "active" else None


# -- proactive messages: digests -------------------------------------------------------------------

@pytest.fixture
async def runtime(store: Store, org: Org, teams: TeamsStandIn) -> TeamsRuntime:
    return teams_runtime(store, load_settings(**teams_settings(teams)))


@pytest.fixture
async def sender(store: Store, runtime: TeamsRuntime) -> AsyncIterator[Digests]:
    """`Digests` with the Teams port, the outbox worker running for Teams (as `dealbot serve`)."""
    sender = Digests(store, DigestSettings(default_zone="UTC"), {"teams": runtime.direct})
    store.outbox.base_delay_s = 0.05
    store.outbox.start(platforms={"teams"})
    try:
        yield sender
    finally:
        await store.outbox.stop(drain_timeout_s=2)


async def subscribe(store: Store, org: Org, who: str) -> None:
    later = utcnow() + timedelta(days=1)  # not due by the schedule meanwhile
    await digests.save(store, {org.users[who]: digests.Settings("daily", "08:00", None, None, "teams", later)})
    await store.link_chat_identity(org.users[who], teams_aad_id=aad(who))


def assert_digest_with_inline_chart(message: Message) -> None:
    card = card_of(message)
    assert message.from_bot and card["version"] == CARD_VERSION
    assert TITLE in card_text(message) and "ACME Pilot" in card_text(message)
    images = [n for n in _nodes(card) if n.get("type") == "Image"]
    [image] = images
    assert image["url"].startswith("data:image/png;base64,")
    png = base64.b64decode(image["url"].split(",", 1)[1])
    assert png[:8] == PNG_SIGNATURE and len(png) > 2_000
    assert image.get("altText") == texts.DIGEST_CHART_ALT


def _nodes(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(n for value in node.values() for n in _nodes(value))]
    if isinstance(node, list):
        return [n for value in node for n in _nodes(value)]
    return []


async def test_a_digest_is_a_card_with_its_chart_inline_in_the_one_to_one_chat(
        sender: Digests, store: Store, org: Org, teams: TeamsStandIn) -> None:
    await move_a_deal(store)
    await subscribe(store, org, "mgr1")
    run_id = await sender.send_now(org.users["mgr1"])
    run = await until_run(store, "sent")
    assert run.id == run_id
    chat = f"a:{aad('mgr1')}"
    [message] = teams.messages(chat)
    assert_digest_with_inline_chart(message)
    assert run.message_ref == message.id and run.file_ref is None
    [opened] = [c for c in teams.called("connector", "POST", "/v3/conversations") if c.path.endswith("conversations")]
    assert opened.status == 201 and opened.body["members"][0]["id"] == aad("mgr1")
    assert opened.body["channelData"]["tenant"]["id"] == TENANT


async def test_a_digest_uses_the_stored_conversation_reference(
        sender: Digests, store: Store, org: Org, teams: TeamsStandIn) -> None:
    chat = f"a:{aad('mgr1')}"
    teams.add_message(chat, aad("mgr1"), "hello")  # Mona wrote to the bot once: her chat exists
    await conversation_refs.remember(store, "teams", "user", aad("mgr1"), {
        "serviceUrl": teams.service_url, "channelId": "msteams",
        "conversation": {"id": chat, "conversationType": "personal", "tenantId": TENANT}})
    await move_a_deal(store)
    await subscribe(store, org, "mgr1")
    assert await sender.send_now(org.users["mgr1"]) is not None
    await until_run(store, "sent")
    [message] = [m for m in teams.messages(chat) if m.from_bot]
    assert_digest_with_inline_chart(message)
    assert [c for c in teams.called("connector", "POST", "/v3/conversations") if c.path.endswith("conversations")] == []
    assert [c.status for c in teams.called("connector", "POST", f"/v3/conversations/{chat}/activities")] == [201]


# -- the connector's pace and retries --------------------------------------------------------------

def note(n: int) -> Activity:
    return Activity(type=ActivityTypes.message, text=f"note {n}")


async def test_twenty_messages_at_once_to_one_chat_are_paced_never_refused(
        runtime: TeamsRuntime, teams: TeamsStandIn) -> None:
    chat = f"a:{aad('rep_a')}"
    teams.add_message(chat, aad("rep_a"), "hi")
    started = time.monotonic()
    ids = await asyncio.gather(*(runtime.cloud.send(teams.service_url, chat, note(n)) for n in range(20)))
    elapsed = time.monotonic() - started
    sent = [m for m in teams.messages(chat) if m.from_bot]
    assert sorted(m.text for m in sent) == sorted(f"note {n}" for n in range(20))
    assert sorted(ids) == sorted(m.id for m in sent)
    posts = teams.called("connector", "POST", "/activities")
    assert [c.status for c in posts] == [201] * 20  # no 429: the bot waited instead
    assert elapsed >= 2.0  # 7 a second: the 15th message goes out two seconds after the first


@pytest.mark.parametrize(("status", "retry_after"), [(502, None), (412, None), (504, None), (429, 1)])
async def test_a_busy_connector_is_retried_and_the_message_delivered_once(
        runtime: TeamsRuntime, teams: TeamsStandIn, status: int, retry_after: int | None) -> None:
    chat = f"a:{aad('rep_a')}"
    teams.add_message(chat, aad("rep_a"), "hi")
    teams.fail_next("connector", "POST", "/activities", status, retry_after=retry_after)
    started = time.monotonic()
    ref = await runtime.cloud.send(teams.service_url, chat, note(1))
    elapsed = time.monotonic() - started
    [sent] = [m for m in teams.messages(chat) if m.from_bot]
    assert (sent.id, sent.text) == (ref, "note 1")
    assert [c.status for c in teams.called("connector", "POST", "/activities")] == [status, 201]
    if retry_after is not None:
        assert elapsed >= retry_after * 0.95


async def test_a_long_room_name_cut_to_fit_the_closed_prefix_is_restored_whole_on_reopening(
        store: Store, org: Org, teams: TeamsStandIn) -> None:
    client = await start(store, teams, deal_room_archive_delay_hours=0)
    try:
        rooms = RoomsOnTeams(client, teams, store)
        long_deal = "Enterprise Platform Migration Phase Two"
        await rooms.put_deal("O-long", name=long_deal)
        row = await rooms.wait_for(lambda: _active_room(store))
        channel = teams.channels[row.channel_id]
        name = channel.display_name
        assert len(name) > 50 - len("closed-")  # too long to keep whole behind the prefix
        await rooms.wait_for(lambda: rooms.threads(channel))
        await rooms.settled()
        await rooms.put_deal("O-long", name=long_deal, stage="Closed Lost", status="lost")
        await rooms.wait_for(lambda: channel.display_name.startswith("closed-"))
        assert channel.display_name == ("closed-" + name)[:50]
        await rooms.wait_for(lambda: room_status(store, "archived"))
        await rooms.put_deal("O-long", name=long_deal, stage="Negotiation", status="open")
        await rooms.wait_for(lambda: not channel.display_name.startswith("closed-"))
        await rooms.wait_for(lambda: room_status(store, "active"))
        await rooms.settled()
        assert channel.display_name == name
        row = await rooms.room_row()
        assert (row.channel_name, row.renamed_by_hand) == (name, False)  # still the bot's name: still followed
    finally:
        await client.close()
