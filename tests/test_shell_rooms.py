"""Deal rooms in the local shell: the real room lifecycle on the real outbox, channels in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.shell import ShellAdapter
from bot.shell_rooms import MemoryChannel, MemoryRooms
from crm_store import Store
from crm_store.models import DealRoom
from deal_rooms.port import ChannelGone, NameTaken, Refused
from handlers import texts
from handlers.reply import Reply
from tests.org import Org
from tests.test_cli import run

ROOM = "deal-acme-renewal-2027"  # ACME Corporation, Inc. / ACME Renewal 2027: the account is not said twice


class Console:
    """A shell session with deal rooms, as `dealbot shell --demo` runs it, plus what the bot posted."""

    def __init__(self, adapter: ShellAdapter, port: MemoryRooms, posts: list[tuple[str, str]]) -> None:
        self.adapter, self.port, self.posts = adapter, port, posts

    async def type(self, line: str) -> str:
        """One typed line, then wait until the bot has done what it started."""
        answer = await self.adapter.handle(line)
        assert await self.adapter.settle(), "the outbox did not settle"
        return answer or ""

    def only_channel(self) -> MemoryChannel:
        assert len(self.port.channels) == 1, self.port.channels
        return next(iter(self.port.channels.values()))


Open = Callable[..., Awaitable[Console]]


@pytest.fixture
async def console(store: Store, org: Org) -> AsyncIterator[Open]:
    """``await console("rep_a", absent=["se"])`` -> a started session; stopped after the test."""
    opened: list[ShellAdapter] = []

    async def make(who: str = "rep_a", absent: Iterable[str] = ()) -> Console:
        posts: list[tuple[str, str]] = []
        port = MemoryRooms(absent=[org.email(a) for a in absent], on_post=lambda room, text: posts.append((room, text)))
        adapter = ShellAdapter(store, await store.actor_for(email=org.email(who)), rooms=port)
        await adapter.start()
        opened.append(adapter)
        return Console(adapter, port, posts)

    yield make
    for adapter in opened:
        await adapter.stop()


async def test_crm_room_makes_one_staffed_room_with_a_topic_and_a_pinned_card(
        console: Open, store: Store, org: Org) -> None:
    rita = await console()
    answer = await rita.type("/crm room acme renewal")
    assert answer == texts.ROOM_ON_ITS_WAY.format(deal="ACME Renewal 2027")
    channel = rita.only_channel()
    assert channel.name == ROOM and channel.private and not channel.archived
    assert channel.members == {org.email("rep_a"), org.email("se")}  # the owner and the deal team
    assert "Negotiation" in channel.topic and "owner Rita Rep" in channel.topic
    [card] = channel.pinned_messages()
    assert card.author is None and card.reply.title == "ACME Renewal 2027" and "ACME Renewal 2027" in card.text
    assert ("Owner       Rita Rep" in card.text) and ("Sam Engineer" in card.text)
    assert rita.posts == [(ROOM, card.text)]  # what the console prints: the card, as text
    async with store.session() as s:
        room = (await s.execute(select(DealRoom))).scalar_one()
    assert (room.platform, room.status, room.channel_id, room.channel_name) == ("shell", "active", channel.id, ROOM)
    assert room.pinned_message_ref == card.ref and room.requested_by_id == org.users["rep_a"]


async def test_asking_again_says_the_room_exists_and_makes_nothing_new(console: Open) -> None:
    rita = await console()
    await rita.type("/crm room acme renewal")
    messages = len(rita.only_channel().messages)
    again = await rita.type("/crm room acme renewal")
    assert again == texts.ROOM_EXISTS.format(deal="ACME Renewal 2027", channel=ROOM)
    assert len(rita.only_channel().messages) == messages and len(rita.posts) == 1


async def test_rooms_lists_only_the_rooms_of_deals_one_may_see(console: Open) -> None:
    rita = await console()
    assert await rita.type("/rooms") == texts.SHELL_ROOMS_NONE
    await rita.type("/crm room acme renewal")
    listing = (await rita.type("/rooms")).splitlines()
    assert listing[0] == texts.SHELL_ROOMS_TITLE
    assert listing[2].split() == [f"#{ROOM}", "active", "ACME", "Renewal", "2027"]
    await rita.type("/as " + Org.email("rep_b"))  # Ben may not see Rita's deal, so not its room either
    assert await rita.type("/rooms") == texts.SHELL_ROOMS_NONE
    await rita.type("/as " + Org.email("mgr1"))  # Rita's manager may
    assert f"#{ROOM}" in await rita.type("/rooms")


async def test_entering_a_room_posts_plain_text_into_it_and_scopes_crm_commands(console: Open) -> None:
    rita = await console()
    await rita.type("/crm room acme renewal")
    channel = rita.only_channel()
    assert await rita.type("/enter #deal-acme-renewal") == texts.SHELL_ENTERED.format(  # a unique start will do
        name=ROOM, deal="ACME Renewal 2027")
    assert rita.adapter.channel_id == channel.id
    echo = await rita.type("Kickoff notes are in the doc")
    assert echo == f"#{ROOM} · Rita Rep: Kickoff notes are in the doc"
    said = channel.messages[-1]
    assert (said.author, said.text) == (Org.email("rep_a"), "Kickoff notes are in the doc")
    assert said.ref not in channel.pinned and len(rita.posts) == 1  # a person's message is no bot post
    logged = await rita.adapter.ask("/crm log sent the revised quote")  # no deal named: the room's
    assert logged.text == "Noted on ACME Renewal 2027." and logged.kind == "info"
    timeline = await rita.adapter.ask("/crm timeline")
    assert timeline.title.endswith("ACME Renewal 2027")
    assert timeline.sections[0].items[0].detail == "sent the revised quote"
    assert "(you are here)" in await rita.type("/rooms")
    assert await rita.type("/leave") == texts.SHELL_LEFT.format(name=ROOM)
    assert rita.adapter.channel_id is None
    before = len(channel.messages)
    assert await rita.type("no longer in the room") == texts.SHELL_NOT_A_COMMAND
    assert len(channel.messages) == before
    assert await rita.type("/leave") == texts.SHELL_NOT_IN_ROOM


async def test_entering_an_unknown_or_hidden_room_says_so_and_stays_put(console: Open) -> None:
    rita = await console()
    await rita.type("/crm room acme renewal")
    assert await rita.type("/enter deal-nope") == texts.SHELL_NO_SUCH_ROOM.format(name="deal-nope")
    assert await rita.type("/enter") == texts.SHELL_ENTER_USAGE
    await rita.type("/crm room societe eaux")
    several = await rita.type("/enter deal-")
    assert several.startswith("Several rooms start with #deal-:") and f"#{ROOM}" in several
    assert rita.adapter.channel_id is None
    await rita.type("/as " + Org.email("rep_b"))
    assert await rita.type(f"/enter {ROOM}") == texts.SHELL_NO_SUCH_ROOM.format(name=ROOM)  # as unknown: no leak
    assert rita.adapter.channel_id is None


async def test_switching_to_someone_who_may_not_see_the_deal_leaves_the_room(console: Open) -> None:
    rita = await console()
    await rita.type("/crm room acme renewal")
    await rita.type(f"/enter {ROOM}")
    answer = await rita.type("/as " + Org.email("rep_b"))
    assert answer.endswith(texts.SHELL_LEFT_UNSEEN.format(name=ROOM, person="Ben Rep"))
    assert rita.adapter.channel_id is None
    assert await rita.type("trying to post anyway") == texts.SHELL_NOT_A_COMMAND
    assert all(m.author != Org.email("rep_b") for m in rita.only_channel().messages)


async def test_a_deal_team_member_not_on_the_shell_is_named_in_the_room(console: Open, store: Store, org: Org) -> None:
    rita = await console(absent=["se"])
    await rita.type("/crm room acme renewal")
    channel = rita.only_channel()
    assert channel.members == {org.email("rep_a")}
    notices = [m for m in channel.messages if m.ref not in channel.pinned]
    assert [m.text for m in notices] == [texts.ROOM_ABSENT.format(platform="this chat",
                                                                  people=f"Sam Engineer ({org.email('se')})")]
    assert (ROOM, notices[0].text) in rita.posts
    async with store.session() as s:
        assert (await s.execute(select(DealRoom.listed_absent))).scalar_one() == [org.users["se"]]


async def test_leaving_the_session_stops_the_outbox_and_a_shell_without_rooms_never_runs_it(
        store: Store, org: Org) -> None:
    rita = await store.actor_for(email=org.email("rep_a"))
    async with ShellAdapter(store, rita, rooms=MemoryRooms()) as with_rooms:
        assert store.outbox.running
        assert (await with_rooms.ask("/crm room acme renewal")).text.startswith("Opening a room")
    assert not store.outbox.running
    async with store.session() as s:  # stopping drained what was due: the room was made
        assert (await s.execute(select(DealRoom.status))).scalar_one() == "active"
    async with ShellAdapter(store, rita) as plain:
        assert not store.outbox.running  # it would take change events meant for a server's rooms
        assert await plain.handle("/rooms") == texts.SHELL_ROOMS_OFF
        assert (await plain.ask("/crm room acme renewal")).text == texts.ROOM_NOT_HERE


async def test_memory_rooms_keep_the_platform_rules() -> None:
    port = MemoryRooms()
    made = await port.create_channel("deal-x", private=True)
    with pytest.raises(NameTaken):
        await port.create_channel("deal-x", private=False)
    for bad in ("Deal-X", "deal x", "", "d" * 81):
        with pytest.raises(Refused):
            await port.create_channel(bad, private=True)
    with pytest.raises(ChannelGone):
        await port.channel("C99999")
    ref = await port.post(made.id, Reply(text="hello"))
    await port.pin(made.id, ref)
    await port.pin(made.id, ref)  # pinning again is harmless, as on Slack
    await port.invite(made.id, ["a@x.test"])
    await port.invite(made.id, ["a@x.test"])
    assert port.channels[made.id].pinned == [ref] and await port.members(made.id) == {"a@x.test"}
    await port.archive(made.id)
    assert (await port.channel(made.id)).archived
    with pytest.raises(ChannelGone):
        await port.post(made.id, Reply(text="into an archived room"))
    await port.unarchive(made.id)
    other = await port.create_channel("deal-y", private=True)
    with pytest.raises(NameTaken):
        await port.rename(other.id, "deal-x")
    assert await port.user_for_email("Some.One@X.test") == "some.one@x.test"
    assert await MemoryRooms(absent=["some.one@x.test"]).user_for_email("Some.One@X.test") is None


def test_demo_shell_opens_a_room_and_lists_it(tmp_path: Path) -> None:
    result = run(["shell", "--demo"], "/crm room acme pilot\n/rooms\n/enter deal-acme-pilot-2027\n"
                                      "we agreed on the pilot scope\n/crm log scope agreed\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Opening a room for ACME Pilot 2027" in out
    assert "#deal-acme-pilot-2027 · Dealbot posted:\n  ACME Pilot 2027\n" in out  # the card, as the bot posts it
    listing = out[out.index("» /rooms"):]
    assert "#deal-acme-pilot-2027  active  ACME Pilot 2027" in listing
    assert "#deal-acme-pilot-2027 · Maya Patel: we agreed on the pilot scope" in out
    assert "Noted on ACME Pilot 2027." in out
    assert "went wrong" not in out and result.stderr == ""


async def test_what_people_say_in_a_shell_room_is_captured_as_on_slack(console: Open, store: Store) -> None:
    from crm_store.models import TimelineEntry, TranscriptMessage

    session = await console("rep_a")
    await session.type("/crm room acme renewal")
    await session.type(f"/enter {ROOM}")
    await session.type("Kickoff notes are in the doc")
    await session.type("Legal signed off on the DPA")
    [(room, user, offer)] = session.port.whispers
    assert (room, user) == (ROOM, Org.email("rep_a")) and "Log it" in [a.label for a in offer.actions]
    log_it = next(a.command for a in offer.actions if a.label == "Log it")
    assert "Logged as a decision on ACME Renewal 2027" in await session.type(f"/crm {log_it}")
    await session.type("#action send the order form to procurement")
    async with store.session() as s:
        kept = [m.text for m in (await s.execute(select(TranscriptMessage).order_by(TranscriptMessage.id))).scalars()]
        entries = [(e.kind, e.text) for e in (await s.execute(select(TimelineEntry).where(
            TimelineEntry.source_ref.is_not(None)).order_by(TimelineEntry.id))).scalars()]
    assert kept == ["Kickoff notes are in the doc", "Legal signed off on the DPA",
                    "#action send the order form to procurement"]
    assert entries == [("decision", "Legal signed off on the DPA"), ("action_item", "send the order form to procurement")]
