"""Decision capture end to end: signed Slack events over HTTP into the real server, transcripts
and timeline entries in the database, suggestions and buttons through the Slack stand-in."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.housekeeping import apply_retention
from crm_store import Store
from crm_store.models import DealRoom, TimelineEntry, TranscriptMessage
from tests.org import Org
from tests.slack_world import TOKEN, SlackWorld, button, seed_people, slack_id, start_app, wait_until
from tests.stand_ins.slack import PERMALINK_HOST, SlackStandIn

API = "capture-test-token"
_ts = itertools.count(1)
_events = itertools.count(1)


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(bot_token=TOKEN) as stand_in:
        seed_people(stand_in)
        yield stand_in


class Room:
    """ACME Renewal 2027's deal room (owner Rita, team Sam), people talking in it."""

    def __init__(self, world: SlackWorld, store: Store, channel: str) -> None:
        self.world, self.store, self.channel = world, store, channel

    async def say(self, text: str, who: str = "rep_a", *, channel: str | None = None, **extra: Any) -> str:
        ts = f"17000{next(_ts):05d}.000100"
        event = {"type": "message", "channel": channel or self.channel, "user": slack_id(who), "text": text,
                 "ts": ts, "event_ts": ts, "channel_type": "group", **extra}
        await self.send(event)
        return ts

    async def send(self, event: dict[str, Any], event_id: str | None = None) -> None:
        status, body = await self.world.event(event, event_id or f"Ev{next(_events)}")
        assert status == 200, body

    async def react(self, ts: str, who: str, added: bool = True, reaction: str = "white_check_mark") -> None:
        await self.send({"type": "reaction_added" if added else "reaction_removed", "user": slack_id(who),
                         "reaction": reaction, "item": {"type": "message", "channel": self.channel, "ts": ts},
                         "event_ts": f"17100{next(_ts):05d}.0"})

    async def kept(self) -> list[TranscriptMessage]:
        async with self.store.session() as s:
            return list((await s.execute(select(TranscriptMessage).order_by(TranscriptMessage.id))).scalars())

    async def entries(self) -> list[TimelineEntry]:
        async with self.store.session() as s:
            return list((await s.execute(select(TimelineEntry).where(TimelineEntry.source_ref.is_not(None))
                                         .order_by(TimelineEntry.id))).scalars())

    def whispers(self, who: str) -> list[dict[str, Any]]:
        return [e for e in self.world.slack.ephemerals if e["user"] == slack_id(who) and e["channel"] == self.channel]


async def open_room(store: Store, org: Org, slack: SlackStandIn, **settings: Any) -> tuple[Room, Any]:
    channel = slack.add_channel("deal-acme-renewal-2027", {slack.bot_user_id, slack_id("rep_a"), slack_id("se"),
                                                           slack_id("rep_b")}, is_private=True)
    async with store.transaction() as s:
        s.add(DealRoom(opportunity_id=org.deals["acme_renewal"], platform="slack", channel_id=channel,
                       channel_name="deal-acme-renewal-2027", status="active", listed_absent=[]))
    settings.setdefault("deal_room_min_amount", "100000000")  # no other rooms in these tests
    client = await start_app(store, slack, dealbot_api_token=API, **settings)
    return Room(SlackWorld(client, slack), store, channel), client


@pytest.fixture
async def room(store: Store, org: Org, slack: SlackStandIn) -> AsyncIterator[Room]:
    made, client = await open_room(store, org, slack, capture_mode="explicit")
    try:
        yield made
    finally:
        await client.close()


async def test_room_messages_are_kept_with_author_thread_and_files_and_nothing_else(room: Room, org: Org) -> None:
    top = await room.say("Kickoff notes are in the doc")
    await room.say("Thanks, reading now", "se", thread_ts=top)
    await room.say("Here is the MSA", "rep_a", subtype="file_share",
                   files=[{"name": "msa.pdf", "permalink": f"{PERMALINK_HOST}/files/F1/msa.pdf"}])
    await room.say("Lunch anyone?", channel="C0GENERAL")  # not a deal room
    await room.send({"type": "message", "subtype": "bot_message", "bot_id": "B0OTHER", "channel": room.channel,
                     "text": "Build passed", "ts": "1799999999.000100"})
    kept = await room.kept()
    assert [(k.text, k.author_id) for k in kept] == [
        ("Kickoff notes are in the doc", org.users["rep_a"]), ("Thanks, reading now", org.users["se"]),
        ("Here is the MSA", org.users["rep_a"])]
    assert kept[1].thread_ref == top and kept[1].permalink.endswith(f"?thread_ts={top}&cid={room.channel}")
    assert kept[0].permalink == f"{PERMALINK_HOST}/archives/{room.channel}/p{top.replace('.', '')}"
    assert kept[2].files == [f"{PERMALINK_HOST}/files/F1/msa.pdf"]
    assert {k.opportunity_id for k in kept} == {org.deals["acme_renewal"]} and await room.entries() == []


async def test_markers_make_one_entry_each_whatever_the_retries(room: Room, org: Org) -> None:
    ts = await room.say("Decision: 3-year term with a 5% cap")
    await room.say("#action Sam sends the DPA by Friday", "se")
    repeat = {"type": "message", "channel": room.channel, "user": slack_id("rep_a"),
              "text": "Decision: 3-year term with a 5% cap", "ts": ts, "event_ts": ts}
    await room.send(repeat, "EvRepeat")  # the same message under another event id
    assert (await room.world.event(repeat, "EvRepeat", retry=1))[0] == 200  # and Slack's retry of that
    await room.react(ts, "se")  # a reaction on it logs nothing more
    entries = await room.entries()
    assert [(e.kind, e.text, e.author_id) for e in entries] == [
        ("decision", "3-year term with a 5% cap", org.users["rep_a"]),
        ("action_item", "Sam sends the DPA by Friday", org.users["se"])]
    assert entries[0].permalink == f"{PERMALINK_HOST}/archives/{room.channel}/p{ts.replace('.', '')}"
    async with room.world.client.get("/api/v1/opportunities/O-acme_renewal/timeline",
                                     headers={"Authorization": f"Bearer {API}"}) as answer:
        items = (await answer.json())["items"]
    assert {"kind": "decision", "text": "3-year term with a 5% cap", "permalink": entries[0].permalink} \
        .items() <= next(i for i in items if i["kind"] == "decision").items()
    [answer] = await room.world.command("deal acme renewal")
    assert "3-year term with a 5% cap" in answer["text"]


async def test_an_edit_updates_text_and_entry_and_a_deletion_retracts_and_forgets(room: Room) -> None:
    ts = await room.say("Decision: annual billing")
    edited = {"type": "message", "subtype": "message_changed", "channel": room.channel, "ts": "1790000000.000100",
              "message": {"type": "message", "user": slack_id("rep_a"), "text": "Decision: quarterly billing", "ts": ts},
              "previous_message": {"type": "message", "user": slack_id("rep_a"), "text": "Decision: annual billing",
                                   "ts": ts}}
    await room.send(edited)
    [kept], [entry] = await room.kept(), await room.entries()
    assert kept.text == "Decision: quarterly billing" and kept.edited_at is not None
    assert [v["text"] for v in kept.previous_versions] == ["Decision: annual billing"]
    assert entry.text == "quarterly billing" and entry.retracted_at is None
    await room.send({"type": "message", "subtype": "message_deleted", "channel": room.channel, "deleted_ts": ts,
                     "ts": "1790000001.000100", "previous_message": {"type": "message", "user": slack_id("rep_a"),
                                                                     "text": "Decision: quarterly billing", "ts": ts}})
    [kept], [entry] = await room.kept(), await room.entries()
    assert kept.deleted_at is not None and kept.text is None and kept.previous_versions is None
    assert entry.retracted_at is not None and entry.data["retracted"] == "message deleted"


async def test_the_reaction_of_a_team_member_logs_a_decision_and_taking_it_back_retracts(room: Room, org: Org) -> None:
    ts = await room.say("We go with the 3-year term and the ramp")
    await room.react(ts, "rep_b")  # in the channel, but not on the deal team
    assert await room.entries() == []
    await room.react(ts, "se")
    await room.react(ts, "rep_a")
    [entry] = await room.entries()
    assert (entry.kind, entry.text, entry.author_id) == ("decision", "We go with the 3-year term and the ramp",
                                                         org.users["rep_a"])
    assert entry.data["reactors"] == [org.users["se"], org.users["rep_a"]]
    await room.react(ts, "se", added=False)  # Rita's reaction still stands
    assert (await room.entries())[0].retracted_at is None
    await room.react(ts, "rep_a", added=False)
    assert (await room.entries())[0].retracted_at is not None
    await room.react(ts, "rep_a")  # changed her mind again
    assert (await room.entries())[0].retracted_at is None
    await room.react(ts, "se", reaction="thumbsup")  # other reactions mean nothing
    assert len(await room.entries()) == 1


async def test_suggest_mode_offers_log_and_dismiss_to_the_author(store: Store, org: Org, slack: SlackStandIn) -> None:
    room, client = await open_room(store, org, slack)  # CAPTURE_MODE defaults to suggest
    try:
        await room.say("Legal signed off on the DPA")
        [offer] = await wait_until(lambda: room.whispers("rep_a"))
        assert "Legal signed off on the DPA" in offer["text"] and await room.entries() == []
        key = await room.world.click(button(offer, "Log it"), "rep_a", room.channel)
        [said] = await wait_until(lambda: slack.responses.get(key))
        assert "Logged as a decision on ACME Renewal 2027" in said["text"]
        [entry] = await room.entries()
        assert (entry.kind, entry.data["captured"]) == ("decision", "suggested")
        await room.world.click(button(offer, "Log it"), "rep_a", room.channel)  # pressed twice: still one
        await room.say("Can you send the order form to procurement by Friday?", "se")
        [offer] = await wait_until(lambda: room.whispers("se"))
        assert "an action item" in offer["text"]
        key = await room.world.click(button(offer, "Dismiss"), "se", room.channel)
        await wait_until(lambda: slack.responses.get(key))
        await room.say("should we go with 3 years?")  # a question: nothing offered
        await room.say("Kickoff notes are in the doc")
        assert len(await room.entries()) == 1 and len(room.whispers("rep_a")) == 1
    finally:
        await client.close()


async def test_auto_mode_logs_at_once_with_an_undo(store: Store, org: Org, slack: SlackStandIn) -> None:
    room, client = await open_room(store, org, slack, capture_mode="auto")
    try:
        await room.say("their CFO approved the budget")
        [entry] = await room.entries()
        assert (entry.kind, entry.data["captured"]) == ("decision", "detected")
        [notice] = await wait_until(lambda: room.whispers("rep_a"))
        key = await room.world.click(button(notice, "Undo"), "rep_a", room.channel)
        [said] = await wait_until(lambda: slack.responses.get(key))
        assert "retracted" in said["text"]
        [entry] = await room.entries()
        assert entry.retracted_at is not None and entry.data["retracted"] == "undone"
    finally:
        await client.close()


async def test_explicit_mode_detects_nothing_but_markers_still_count(room: Room) -> None:
    await room.say("3-year term it is")
    await room.say("decided: annual uplift capped at 3%")
    assert [e.text for e in await room.entries()] == ["annual uplift capped at 3%"]
    assert room.world.slack.ephemerals == []


async def test_crm_decision_in_the_room_needs_no_deal_name(room: Room) -> None:
    [answer] = await room.world.command("decision we go annual", "rep_a", room.channel)
    assert "ACME Renewal 2027" in answer["text"]
    async with room.store.session() as s:
        kinds = [(e.kind, e.text) for e in (await s.execute(select(TimelineEntry))).scalars() if e.kind == "decision"]
    assert ("decision", "we go annual") in kinds


async def test_retention_drops_old_text_and_keeps_the_timeline(room: Room) -> None:
    await room.say("Decision: the old way")
    await apply_retention(room.store, timedelta(days=-1))  # everything counts as old
    [kept], [entry] = await room.kept(), await room.entries()
    assert kept.text is None and kept.purged_at is not None and entry.text == "the old way"


async def test_the_shortcut_on_a_message_already_captured_adds_no_second_entry(room: Room, org: Org) -> None:
    from tests.test_slack import submission

    slack = room.world.slack
    ts = await room.say("We go with the 3-year term")
    await room.react(ts, "se")
    shortcut = room.world.payload("message_action", "rep_a", callback_id="log_as_decision",
                                  trigger_id=slack.new_trigger_id(), channel={"id": room.channel, "name": "deal"},
                                  message={"type": "message", "ts": ts, "user": slack_id("rep_a"),
                                           "text": "We go with the 3-year term"},
                                  response_url=slack.response_url("shortcut"))
    assert (await room.world.interact(shortcut))[0] == 200
    [view] = await wait_until(lambda: list(slack.views.values()))
    status, body = await room.world.interact(submission(room.world, view, str(org.deals["acme_renewal"]),
                                                        "We go with the 3-year term"))
    assert status == 200 and not body
    [entry] = await room.entries()
    assert entry.data["captured"] == "reaction" and entry.source_ref == f"{room.channel}/{ts}"


async def test_only_the_author_can_undo_an_automatic_capture(store: Store, org: Org, slack: SlackStandIn) -> None:
    room, client = await open_room(store, org, slack, capture_mode="auto")
    try:
        await room.say("their CFO approved the budget")
        [notice] = await wait_until(lambda: room.whispers("rep_a"))
        undo = button(notice, "Undo")
        key = await room.world.click(undo, "se", room.channel)  # Sam presses a copy of Rita's button
        [said] = await wait_until(lambda: slack.responses.get(key))
        assert "nothing to undo" in said["text"] and (await room.entries())[0].retracted_at is None
    finally:
        await client.close()


async def test_search_finds_captured_words_only_for_people_who_may_see_the_room(room: Room) -> None:
    await room.say("The security questionnaire is back from their CISO")
    await room.say("Decision: security review passed, pen test report shared")
    [rita] = await room.world.command("search security review", "rep_a", "C0GENERAL")
    assert "ACME Renewal 2027" in rita["text"] and "pen test report shared" in rita["text"]
    assert f"{PERMALINK_HOST}/archives/{room.channel}/p" in rita["text"]
    assert f"<{PERMALINK_HOST}/archives/{room.channel}/p" in json.dumps(rita["blocks"])  # a link in Slack
    [mona] = await room.world.command("search questionnaire", "mgr1", "C0GENERAL")  # Rita's manager
    assert "questionnaire" in mona["text"] and "CISO" in mona["text"]
    [carl] = await room.world.command("search security questionnaire", "rep_c", "C0GENERAL")  # another team
    assert "ACME" not in carl["text"] and "CISO" not in carl["text"]
    await room.send({"type": "message", "subtype": "message_deleted", "channel": room.channel,
                     "deleted_ts": (await room.kept())[0].message_ref, "ts": "1790000009.000100"})
    [again] = await room.world.command("search questionnaire", "rep_a", "C0GENERAL")
    assert "CISO" not in again["text"]
