"""Deal rooms end to end: deals pushed through the REST API, the real server's outbox worker,
the Slack port over slack-sdk, and the Slack stand-in keeping the channels."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bot.server import ROOMS
from crm_store import Store
from crm_store.models import DealRoom, OutboxItem, utcnow
from tests.org import Org
from tests.slack_world import TOKEN, SlackWorld, seed_people, slack_id, start_app, wait_until
from tests.stand_ins.slack import Channel, SlackStandIn

API = "rooms-test-token"
SOURCE_TIME = iter(f"2026-11-{d:02d}T10:00:00Z" for d in range(1, 29))


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(bot_token=TOKEN) as stand_in:
        seed_people(stand_in)
        yield stand_in


class Rooms:
    """The server and the stand-in, with helpers to change deals and wait for the rooms."""

    def __init__(self, client: TestClient, slack: SlackStandIn, store: Store) -> None:
        self.client, self.slack, self.store = client, slack, store
        self._clock = 0

    async def put_deal(self, key: str, **fields: Any) -> None:
        self._clock += 1
        body = {"name": "ACME Renewal 2027", "account_external_id": "A-acme", "amount": "250000",
                "currency": "USD", "stage": "Negotiation", "close_date": "2026-12-31",
                "owner_email": Org.email("rep_a"), "team_emails": [Org.email("se")],
                "source_updated_at": f"2026-11-20T10:{self._clock // 60:02d}:{self._clock % 60:02d}Z", **fields}
        async with self.client.put(f"/api/v1/opportunities/{key}", json=body,
                                   headers={"Authorization": f"Bearer {API}"}) as response:
            assert response.status in (200, 201), await response.text()

    async def wait_for(self, check: Callable[[], Any], timeout: float = 10.0) -> Any:
        return await wait_until(check, timeout)

    def rooms(self) -> list[Channel]:
        return [c for c in self.slack.channels.values() if c.creator == self.slack.bot_user_id and not c.is_im]

    def room(self, name_part: str) -> Channel | None:
        return next((c for c in self.rooms() if name_part in c.name), None)

    def pinned(self, channel: Channel) -> list[Any]:
        return [m for m in self.slack.messages.get(channel.id, []) if m.pinned]

    async def settled(self) -> None:
        """Wait until the outbox has nothing left that is due or about to be (grouped updates)."""
        async def busy() -> bool:
            async with self.store.session() as s:
                rows = (await s.execute(select(OutboxItem.id).where(
                    OutboxItem.status == "pending", OutboxItem.platform.in_(("slack", "dealbot")),
                    OutboxItem.next_attempt_at <= utcnow() + timedelta(seconds=1)).limit(1))).first()
            return rows is not None
        deadline = time.monotonic() + 10
        while await busy():
            assert time.monotonic() < deadline, "the outbox did not settle"
            await asyncio.sleep(0.05)


async def start(store: Store, slack: SlackStandIn, **settings: Any) -> TestClient:
    settings.setdefault("deal_room_update_group_seconds", 0.2)
    settings.setdefault("slack_tier2_per_minute", 6000)  # Slack's pace, sped up; see test_pacing
    return await start_app(store, slack, dealbot_api_token=API, **settings)


@pytest.fixture
async def rooms(store: Store, org: Org, slack: SlackStandIn) -> AsyncIterator[Rooms]:
    client = await start(store, slack)
    try:
        yield Rooms(client, slack, store)
    finally:
        await client.close()


async def test_a_qualifying_new_deal_gets_a_private_staffed_room_with_a_pinned_card(rooms: Rooms) -> None:
    await rooms.put_deal("O-new-big")
    channel = await rooms.wait_for(lambda: rooms.room("deal-acme-renewal-2027"))
    await rooms.wait_for(lambda: rooms.pinned(channel))
    assert channel.name == "deal-acme-renewal-2027" and channel.is_private
    await rooms.wait_for(lambda: {slack_id("rep_a"), slack_id("se")} <= channel.members)
    [card] = rooms.pinned(channel)
    assert "ACME Renewal 2027" in card.text and "Rita Rep" in card.text
    labels = [e["text"]["text"] for b in card.blocks or [] if b["type"] == "actions" for e in b["elements"]]
    assert labels == ["Log decision", "Log note", "Open timeline"]
    assert "$250k" in channel.topic and "Negotiation" in channel.topic and "Rita Rep" in channel.topic
    assert len(rooms.rooms()) == 1


async def test_deals_below_the_threshold_or_at_other_stages_get_no_room(
        store: Store, org: Org, slack: SlackStandIn) -> None:
    client = await start(store, slack, deal_room_stages="Negotiation,Commit", deal_room_min_amounts="EUR=50000")
    try:
        world = Rooms(client, slack, store)
        await world.put_deal("O-small", name="Small Deal", amount="99999")
        await world.put_deal("O-early", name="Early Deal", stage="Discovery")
        await world.put_deal("O-euro", name="Euro Deal", amount="60000", currency="EUR")
        await world.wait_for(lambda: world.room("euro-deal"))
        await world.settled()
        assert [c.name for c in world.rooms()] == ["deal-acme-euro-deal"]
        await world.put_deal("O-small", name="Small Deal", amount="150000")  # grew past the threshold
        await world.put_deal("O-early", name="Early Deal", stage="Commit")  # moved into a chosen stage
        await world.wait_for(lambda: len(world.rooms()) == 3)
    finally:
        await client.close()


async def test_a_taken_name_gets_a_short_suffix_and_odd_names_stay_valid(rooms: Rooms) -> None:
    rooms.slack.add_channel("deal-acme-renewal-2027", {slack_id("rep_b")})  # someone else's channel
    await rooms.put_deal("O-taken")
    await rooms.put_deal("O-odd", name="Ünïcödé 🚀 Expansion ✨ " + "very long words " * 10)
    taken = await rooms.wait_for(lambda: rooms.room("deal-acme-renewal-2027-"))
    odd = await rooms.wait_for(lambda: rooms.room("unicode-expansion"))
    assert taken.name.startswith("deal-acme-renewal-2027-") and len(taken.name) <= 26
    assert odd.name.startswith("deal-acme-unicode-expansion-very-long-words") and len(odd.name) <= 80
    assert not odd.name.endswith("-")


async def test_people_without_slack_are_listed_in_the_room_not_failed_on(
        store: Store, org: Org) -> None:
    async with SlackStandIn(bot_token=TOKEN) as slack:
        seed_people(slack)
        del slack.users[slack_id("se")]  # Sam has no Slack account
        client = await start(store, slack)
        try:
            world = Rooms(client, slack, store)
            await world.put_deal("O-absent")
            channel = await world.wait_for(lambda: world.room("deal-acme"))
            note = await world.wait_for(lambda: next(
                (m for m in slack.messages[channel.id] if "not on Slack" in m.text), None))
            assert "Sam Engineer" in note.text and slack_id("rep_a") in channel.members
        finally:
            await client.close()


async def test_the_same_change_delivered_twenty_times_gives_one_room_and_one_invite_each(
        rooms: Rooms, store: Store, org: Org) -> None:
    [deal_rooms] = rooms.client.server.app[ROOMS]
    opportunity_id = org.deals["acme_renewal"]  # 250k, open, Negotiation: qualifies, no room yet
    await asyncio.gather(*(deal_rooms.react(opportunity_id) for _ in range(20)))
    channel = await rooms.wait_for(lambda: rooms.room("deal-acme"))
    await rooms.wait_for(lambda: rooms.pinned(channel))
    await rooms.settled()
    await asyncio.gather(*(deal_rooms.react(opportunity_id) for _ in range(20)))  # and again, once it exists
    await rooms.settled()
    assert len(rooms.rooms()) == 1
    invites = [u for c in rooms.slack.called("conversations.invite") if c.ok for u in c.args["users"].split(",")]
    assert sorted(invites) == sorted([slack_id("rep_a"), slack_id("se")])
    assert len(rooms.pinned(channel)) == 1
    async with store.session() as s:
        assert len((await s.execute(select(DealRoom))).scalars().all()) == 1


async def room_status(store: Store, status: str) -> bool:
    async with store.session() as s:
        return (await s.execute(select(DealRoom.status))).scalar_one() == status


def texts_in(rooms: Rooms, channel: Channel) -> list[str]:
    return [m.text for m in rooms.slack.messages.get(channel.id, [])]


async def test_changes_are_posted_grouped_and_the_topic_and_card_follow(rooms: Rooms) -> None:
    await rooms.put_deal("O-moving")
    channel = await rooms.wait_for(lambda: rooms.room("deal-acme"))
    await rooms.wait_for(lambda: rooms.pinned(channel))
    await rooms.settled()
    await rooms.put_deal("O-moving", stage="Commit", amount="300000")  # two changes at once
    await rooms.put_deal("O-moving", stage="Commit", amount="300000", close_date="2027-01-15")
    update = await rooms.wait_for(lambda: next((t for t in texts_in(rooms, channel) if "What changed" in t), None))
    await rooms.settled()
    updates = [t for t in texts_in(rooms, channel) if "What changed" in t]
    assert len(updates) == 1, updates  # grouped into one post
    assert "Commit" in update and "300" in update and "15 Jan 2027" in update
    assert "Commit" in channel.topic and "$300k" in channel.topic
    [card] = rooms.pinned(channel)
    assert "Commit" in card.text and "$300,000" in card.text


async def test_a_renamed_deal_renames_its_room_unless_people_renamed_it(rooms: Rooms) -> None:
    await rooms.put_deal("O-named")
    channel = await rooms.wait_for(lambda: rooms.room("deal-acme-renewal"))
    await rooms.wait_for(lambda: rooms.pinned(channel))
    await rooms.put_deal("O-named", name="ACME Enterprise Upgrade")
    await rooms.wait_for(lambda: channel.name == "deal-acme-enterprise-upgrade")
    channel.name = "acme-war-room"  # renamed by hand in Slack
    await rooms.put_deal("O-named", name="ACME Enterprise Upgrade 2028", stage="Commit")
    await rooms.wait_for(lambda: any("What changed" in t and "Commit" in t for t in texts_in(rooms, channel)))
    await rooms.settled()
    assert channel.name == "acme-war-room"


async def test_a_won_deal_gets_a_closing_summary_then_the_room_is_archived_and_reopening_unarchives(
        store: Store, org: Org, slack: SlackStandIn) -> None:
    client = await start(store, slack, deal_room_archive_delay_hours=0.0003)  # about a second
    try:
        world = Rooms(client, slack, store)
        await world.put_deal("O-win")
        channel = await world.wait_for(lambda: world.room("deal-acme"))
        await world.wait_for(lambda: world.pinned(channel))
        await world.settled()
        await world.put_deal("O-win", stage="Closed Won", status="won", amount="275000")
        summary = await world.wait_for(lambda: next((t for t in texts_in(world, channel) if "was won" in t), None))
        assert "$275,000" in summary and "0 decisions" in summary and "0 days" in summary
        await world.wait_for(lambda: channel.is_archived)
        await world.wait_for(lambda: room_status(store, "archived"))  # recorded after Slack did it
        await world.put_deal("O-win", stage="Negotiation", status="open")  # reopened
        await world.wait_for(lambda: not channel.is_archived)
        await world.settled()
        async with store.session() as s:
            assert (await s.execute(select(DealRoom.status))).scalar_one() == "active"
        assert len(world.rooms()) == 1
    finally:
        await client.close()


async def test_a_room_archived_by_hand_is_left_alone(rooms: Rooms, store: Store) -> None:
    await rooms.put_deal("O-hand")
    channel = await rooms.wait_for(lambda: rooms.room("deal-acme"))
    await rooms.wait_for(lambda: rooms.pinned(channel))
    await rooms.settled()
    channel.is_archived = True  # people archived it in Slack
    posted = len(texts_in(rooms, channel))
    await rooms.put_deal("O-hand", stage="Commit")
    await rooms.settled()
    async with store.session() as s:
        assert (await s.execute(select(DealRoom.status))).scalar_one() == "left"
    assert channel.is_archived and len(texts_in(rooms, channel)) == posted
    assert not rooms.slack.called("conversations.unarchive")
    await rooms.put_deal("O-hand", stage="Closed Lost", status="lost")
    await rooms.settled()
    assert len(texts_in(rooms, channel)) == posted and len(rooms.rooms()) == 1


async def test_crm_room_opens_a_room_by_hand_even_below_the_threshold(rooms: Rooms) -> None:
    world = SlackWorld(rooms.client, rooms.slack)
    [answer] = await world.command("room acme pilot", who="rep_b")  # 40k: below the 100k threshold
    assert "Opening a room for ACME Pilot" in answer["text"]
    channel = await rooms.wait_for(lambda: rooms.room("deal-acme-pilot"))
    await rooms.wait_for(lambda: slack_id("rep_b") in channel.members and rooms.pinned(channel))
    [again] = await world.command("room acme pilot", who="rep_b")
    assert "already has a room: #deal-acme-pilot" in again["text"]
    [hidden] = await world.command("room acme pilot", who="rep_c")  # not Cara's deal: no room, no hint
    assert "No deal" in hidden["text"] and len(rooms.rooms()) == 1
    [closed] = await world.command("room umbrella platform", who="rep_a")
    assert "won" in closed["text"] and len(rooms.rooms()) == 1


# -- pacing and faults ---------------------------------------------------------------------------

async def _create_rows(store: Store) -> list[OutboxItem]:
    async with store.session() as s:
        return list((await s.execute(select(OutboxItem).where(OutboxItem.operation == "room.create"))).scalars())


def _staffed_and_pinned(world: Rooms, channel: Channel) -> bool:
    return {slack_id("rep_a"), slack_id("se")} <= channel.members and len(world.pinned(channel)) == 1


async def test_a_backfill_goes_at_the_platform_pace_never_faster_and_resumes_after_a_restart(
        store: Store, org: Org, slack: SlackStandIn) -> None:
    """Slack's Tier 2, sped up: the stand-in refuses a sixth call within any second, the bot is
    told 4.5 a second. Ten deals at once: no 429, every room made once, no attempt used up."""
    for method in ("conversations.create", "conversations.setTopic", "pins.add"):
        slack.rate_limits[method] = 5
    names = [f"Backfill {n}" for n in range(10)]
    client = await start(store, slack, slack_tier2_per_minute=270)
    world = Rooms(client, slack, store)
    try:
        await asyncio.gather(*(world.put_deal(f"O-bf-{n}", name=name) for n, name in enumerate(names)))
        await world.wait_for(lambda: len(world.rooms()) >= 3)
    finally:
        await client.close()  # a restart part-way: the waiting rows keep their booked slots
    made_before = len(world.rooms())
    assert made_before < len(names), "the pace let everything through at once"
    client = await start(store, slack, slack_tier2_per_minute=270)
    world = Rooms(client, slack, store)
    try:
        await world.wait_for(lambda: len(world.rooms()) == len(names) and all(
            _staffed_and_pinned(world, c) for c in world.rooms()), timeout=15)
    finally:
        await client.close()
    assert sorted(c.name for c in world.rooms()) == sorted(f"deal-acme-backfill-{n}" for n in range(10))
    assert [c.status for c in slack.calls if c.status == 429] == []
    assert len([c for c in slack.called("conversations.create") if c.ok]) == len(names)
    assert {(row.status, row.attempts) for row in await _create_rows(store)} == {("done", 0)}


@pytest.mark.parametrize(("error", "status"), [("ratelimited", 429), ("internal_error", 500)])
async def test_conversations_create_failing_still_ends_in_one_staffed_pinned_room(
        rooms: Rooms, store: Store, error: str, status: int) -> None:
    store.outbox.base_delay_s = 0.05  # back-off after a 5xx, shortened; a 429 waits its Retry-After
    rooms.slack.fail_next("conversations.create", error, status, times=2)
    await rooms.put_deal("O-flaky")
    channel = await rooms.wait_for(lambda: rooms.room("deal-acme-renewal-2027"))
    await rooms.wait_for(lambda: _staffed_and_pinned(rooms, channel))
    await rooms.settled()
    creates = rooms.slack.called("conversations.create")
    assert [c.status for c in creates] == [status, status, 200] and len(rooms.rooms()) == 1
    [row] = await _create_rows(store)
    # A 429 pauses the pace and is no fault of the row; a 500 is a failed attempt, retried.
    assert (row.status, row.attempts) == ("done", 0 if status == 429 else 2)


async def test_a_failed_pin_is_retried_alone_and_the_card_is_posted_once(rooms: Rooms, store: Store) -> None:
    store.outbox.base_delay_s = 0.05
    rooms.slack.fail_next("pins.add", "internal_error", 500)
    await rooms.put_deal("O-pin")
    channel = await rooms.wait_for(lambda: rooms.room("deal-acme-renewal-2027"))
    await rooms.wait_for(lambda: rooms.pinned(channel))
    await rooms.settled()
    assert [c.status for c in rooms.slack.called("pins.add")] == [500, 200]
    assert len([c for c in rooms.slack.called("chat.postMessage") if c.args.get("channel") == channel.id]) == 1
