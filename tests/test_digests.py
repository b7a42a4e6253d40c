"""Digests, platform-neutral: subscribing, what a digest says, and when it goes out — once.

The scheduler is driven with an explicit clock (`Digests.tick(now)`); delivery goes to a
recording inbox in place of a chat platform (Slack's own path is in test_digests_slack.py).
Runs on SQLite, and on PostgreSQL when TEST_DATABASE_URL is set (the CI's second leg).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from bot.digests import Chart, Digests
from deal_rooms.port import Refused
from bot.render_text import render
from crm_store import Store, digests
from crm_store.deals import Source, add_entry
from crm_store.digest_content import Options, Window, team_digest
from crm_store.models import DealRoom, DigestRun, DigestSubscription, Opportunity, OutboxItem, TimelineEntry, User
from crm_store.records import OpportunityRecord
from crm_store.sync import Sync, Who
from handlers import texts
from handlers.digest_reply import compose
from handlers.digest_schedule import DigestSettings
from handlers.reply import Reply
from tests.org import DEALS, Org

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
UTC = timezone.utc


class Inbox:
    """A chat platform's direct messages, recorded (what a person would find in their DMs)."""

    def __init__(self, platform: str = "slack") -> None:
        self.platform = platform
        self.posted: list[tuple[str, Reply]] = []
        self.charts: list[tuple[str, Chart]] = []

    async def open_dm(self, user: User) -> str | None:
        return f"D-{user.id}" if user.slack_user_id != "absent" else None

    async def post_dm(self, conversation: str, message: Reply, chart: Chart | None) -> str:
        self.posted.append((conversation, message))
        return f"m{len(self.posted)}"

    async def attach_chart(self, conversation: str, chart: Chart) -> str | None:
        self.charts.append((conversation, chart))
        return f"F{len(self.charts)}"


def local(zone: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone).astimezone(UTC)


async def subscribe(store: Store, user_id: int, cadence: str = "daily", at: str = "08:00", weekday: int | None = None,
                    zone: str | None = None, next_due: datetime | None = None) -> int:
    await digests.save(store, {user_id: digests.Settings(cadence, at, weekday, zone, "slack", next_due)})
    sub = await digests.subscription(store, user_id)
    assert sub is not None
    return sub.id


async def runs(store: Store, sub_id: int) -> list[DigestRun]:
    async with store.session() as s:
        return list((await s.execute(select(DigestRun).where(DigestRun.subscription_id == sub_id)
                                     .order_by(DigestRun.window_end))).scalars())


async def deliver(store: Store) -> None:
    while await store.outbox.run_once():
        pass


async def change(store: Store, org: Org, key: str, **fields: Any) -> None:
    name, acct, owner, amount, cur, stage, days, status, team = DEALS[key]
    async with store.session() as s:
        opp = (await s.execute(select(Opportunity).where(Opportunity.id == org.deals[key]))).scalar_one()
    values: dict[str, Any] = {
        "name": name, "account_external_id": f"A-{acct}", "amount": opp.amount, "currency": cur, "stage": opp.stage,
        "close_date": opp.close_date, "owner_email": org.email(owner), "team_emails": [org.email(t) for t in team],
        "status": opp.status, **fields}
    await Sync(store, Who("api", "test")).upsert("opportunities", [(f"O-{key}", OpportunityRecord(**values))])


# -- the command --------------------------------------------------------------------------------

async def test_subscribe_show_and_turn_off(shell: Any, store: Store, org: Org) -> None:
    me = await shell("mgr1")
    assert (await me.ask("/crm digest")).text == texts.DIGEST_NONE
    reply = await me.ask("/crm digest weekly friday 17:30")
    assert "weekly digest on Fridays at 17:30 (Europe/Berlin — from the CRM)" in reply.text
    sub = await digests.subscription(store, org.users["mgr1"])
    assert sub is not None and (sub.cadence, sub.local_time, sub.weekday, sub.platform) == ("weekly", "17:30", 4, "shell")
    assert sub.time_zone is None  # the CRM's zone is followed, not copied
    assert sub.next_due_at is not None
    due = sub.next_due_at.astimezone(BERLIN)
    assert (due.weekday(), due.hour, due.minute) == (4, 17, 30) and sub.next_due_at > datetime.now(UTC)
    assert "next one comes" in (await me.ask("/crm digest")).text

    reply = await me.ask("/crm digest daily 6:15pm america/new_york")  # changes it: still one subscription
    assert "daily digest at 18:15 (America/New_York)" in reply.text
    sub = await digests.subscription(store, org.users["mgr1"])
    assert sub is not None and (sub.cadence, sub.local_time, sub.weekday, sub.time_zone) == (
        "daily", "18:15", None, "America/New_York")

    assert (await me.ask("/crm digest off")).text == texts.DIGEST_OFF
    assert (await me.ask("/crm digest off")).text == texts.DIGEST_ALREADY_OFF
    sub = await digests.subscription(store, org.users["mgr1"])
    assert sub is not None and not sub.enabled and sub.next_due_at is None


@pytest.mark.parametrize(("words", "expected"), [
    ("daily 25:00", texts.DIGEST_BAD_TIME.format(value="25:00")),
    ("daily 8:61", texts.DIGEST_BAD_TIME.format(value="8:61")),
    ("daily 13pm", texts.DIGEST_BAD_TIME.format(value="13pm")),
    ("weekly mondy", texts.DIGEST_BAD_WEEKDAY.format(value="mondy", hint=" Did you mean monday?")),
    ("weekly monday Europe/Berln", texts.DIGEST_BAD_ZONE.format(value="Europe/Berln", hint=" Did you mean Europe/Berlin?")),
    ("daily Mars/Olympus", texts.DIGEST_BAD_ZONE.format(value="Mars/Olympus", hint="")),
    ("daily monday", texts.DIGEST_DAILY_WEEKDAY.format(weekday="monday")),
    ("weekly monday tuesday", texts.DIGEST_TWICE.format(what="weekday", first="monday", second="tuesday")),
    ("hourly", texts.DIGEST_USAGE),
    ("daily 08:00 please", texts.DIGEST_USAGE),
    ("more", texts.DIGEST_MORE_USAGE.format(names="won, lost, moved, amounts, slipped, decisions, stale, closing, rooms")),
])
async def test_bad_words_get_a_clear_reply_and_change_nothing(shell: Any, store: Store, org: Org, words: str,
                                                              expected: str) -> None:
    reply = await (await shell("mgr1")).ask(f"/crm digest {words}")
    assert reply.kind == "error" and reply.text == expected
    assert await digests.subscription(store, org.users["mgr1"]) is None


# -- what a digest says -------------------------------------------------------------------------

@pytest.fixture
async def moved(store: Store, org: Org) -> Window:
    """A week in mgr1's team (Rita, Ben) and mgr2's (Cara): every kind of news, each once."""
    start = datetime.now(UTC) - timedelta(seconds=1)
    await change(store, org, "acme_renewal", stage="Commit")  # Rita: moved stage
    await change(store, org, "acme_pilot", amount=Decimal(60000))  # Ben: +50 %
    pilot_close = date.today() + timedelta(days=40)
    await change(store, org, "acme_pilot", close_date=pilot_close + timedelta(days=30))  # slipped ...
    await change(store, org, "acme_pilot", close_date=pilot_close + timedelta(days=60))  # ... twice
    await change(store, org, "societe_eaux", status="won", stage="Closed Won")  # Rita: won
    await change(store, org, "globex_expansion", stage="Negotiation")  # Cara: mgr2's team, not mgr1's
    rita = await store.actor_for(email=org.email("rep_a"))
    link = "https://example.slack.com/archives/C1/p1"
    await add_entry(store, rita, org.deals["acme_renewal"], "decision", "3-year term agreed", "capture",
                    source=Source("slack", "C1:1", link))
    gone = await add_entry(store, rita, org.deals["acme_renewal"], "action_item", "send nothing", "capture")
    async with store.transaction() as s:
        await s.execute(update(TimelineEntry).where(TimelineEntry.id == gone.entry.id)
                        .values(retracted_at=datetime.now(UTC)))
        old = datetime.now(UTC) - timedelta(days=30)
        quiet = Opportunity(external_id="O-quiet", name="Quiet Deal", account_id=org.accounts["globex"],
                            amount=Decimal(5000), currency="USD", stage="Discovery", owner_id=org.users["rep_b"],
                            status="open", created_at=old, updated_at=old)
        s.add(quiet)
        await s.flush()
        s.add(TimelineEntry(opportunity_id=quiet.id, kind="note", text="last words", occurred_at=old + timedelta(days=1)))
        s.add(DealRoom(opportunity_id=org.deals["acme_renewal"], platform="slack", channel_id="C1",
                       channel_name="deal-acme-renewal", status="active"))
    return Window(start, datetime.now(UTC) + timedelta(seconds=1))


async def test_every_section_of_a_managers_digest(store: Store, org: Org, moved: Window) -> None:
    data = await team_digest(store, org.users["mgr1"], moved)
    names = lambda listed: [item.deal.name for item in listed.items]  # noqa: E731
    assert names(data.moved) == ["ACME Renewal 2027"]
    assert (data.moved.items[0].old, data.moved.items[0].new) == ("Negotiation", "Commit")
    assert names(data.won) == ["Société Eaux Migration"] and not data.lost
    assert names(data.amounts) == ["ACME Pilot"]
    assert [(c.old, c.new) for c in data.amounts.items] == [("40000.00", "60000.00")]
    assert names(data.slipped) == ["ACME Pilot"] and data.slipped.items[0].times == 2
    assert [(c.kind, c.text, c.permalink) for c in data.captured.items] == [
        ("decision", "3-year term agreed", "https://example.slack.com/archives/C1/p1")]  # not the retracted one
    assert [s.deal.name for s in data.stale.items] == ["Quiet Deal"]
    assert [d.name for d in data.closing.items] == ["ACME Renewal 2027"]  # in 3 days; Société was won
    assert [r.channel for r in data.rooms.items] == ["deal-acme-renewal"]
    assert {(l.stage, l.count) for l in data.pipeline} == {("Commit", 1), ("Discovery", 2)}
    # Visibility: Cara's move (mgr2's team) and Lou's deal (no manager) are not in mgr1's digest.
    everything = render(compose(data, BERLIN, stale_days=14))
    assert "Globex Expansion" not in everything and "Initech" not in everything
    assert "slipped twice" in everything and "+50 %" in everything and "3-year term agreed" in everything
    assert "https://example.slack.com/archives/C1/p1" in everything

    above = await team_digest(store, org.users["vp"], moved)  # the VP sees both teams
    assert set(names(above.moved)) == {"ACME Renewal 2027", "Globex Expansion"}
    cara = await team_digest(store, org.users["rep_c"], moved)
    assert names(cara.moved) == ["Globex Expansion"] and not cara.won and not cara.captured


async def test_long_lists_end_with_and_n_more_and_a_command_for_the_rest(store: Store, org: Org,
                                                                        moved: Window, shell: Any) -> None:
    data = await team_digest(store, org.users["vp"], moved, options=Options(limit=1))
    assert data.moved.total == 2 and len(data.moved.items) == 1 and data.moved.more == 1
    reply = compose(data, BERLIN, stale_days=14)
    [section] = [s for s in reply.sections if s.heading.startswith("Moved stage")]
    assert section.footer == texts.DIGEST_MORE.format(n=1, name="moved")
    full = await (await shell("vp")).ask("/crm digest more moved")  # no digest yet: the last day
    assert {i.title.split(" · ")[0] for s in full.sections for i in s.items} == {"ACME Renewal 2027", "Globex Expansion"}


async def test_a_digest_with_nothing_new_is_one_line(store: Store, org: Org) -> None:
    window = Window(datetime.now(UTC) - timedelta(days=1), datetime.now(UTC))
    first = await team_digest(store, org.users["rep_c"], window)
    assert first.pipeline and not first.nothing_moved  # the first digest shows the pipeline
    again = await team_digest(store, org.users["rep_c"], window, previous=first.snapshot())
    reply = compose(again, BERLIN, stale_days=14)
    assert again.nothing_moved and reply.sections == [] and reply.text.startswith("Nothing moved")
    changed = await team_digest(store, org.users["rep_c"], window, previous={"lines": []})
    assert not changed.nothing_moved  # the pipeline differs from the last digest's: that is news


async def test_the_pipeline_compares_with_the_last_digest(store: Store, org: Org) -> None:
    window = Window(datetime.now(UTC) - timedelta(days=1), datetime.now(UTC))
    before = await team_digest(store, org.users["mgr1"], window)
    await change(store, org, "acme_pilot", stage="Proposal")
    after = await team_digest(store, org.users["mgr1"], window, previous=before.snapshot())
    reply = compose(after, BERLIN, stale_days=14)
    [pipeline] = [s for s in reply.sections if s.heading == texts.DIGEST_PIPELINE]
    details = {i.title.split(":")[0]: i.detail for i in pipeline.items}
    assert details["Proposal"] == texts.DIGEST_SINCE_LAST.format(deals="+1", amount="+$40k")
    assert details["Discovery"] == texts.DIGEST_SINCE_LAST.format(deals="-1", amount="−$40k")
    assert details["Negotiation"] == texts.DIGEST_UNCHANGED


# -- when it goes out ---------------------------------------------------------------------------

def _service(store: Store, platform: str = "slack") -> tuple[Digests, Inbox]:
    inbox = Inbox(platform)
    return Digests(store, DigestSettings(default_zone="UTC", grace=timedelta(hours=6)), {platform: inbox}), inbox


async def _tick_through(service: Digests, start: datetime, end: datetime, step: timedelta) -> None:
    now = start
    while now <= end:
        await service.tick(now)
        now += step


async def test_daily_and_weekly_local_times_hold_across_dst_in_two_zones(store: Store, org: Org) -> None:
    """Berlin leaves summer time on 25 Oct 2026, New York on 1 Nov 2026; the clock ticks hourly."""
    service, _ = _service(store)
    start = local(BERLIN, 2026, 10, 20, 0, 0)
    daily = await subscribe(store, org.users["mgr1"], "daily", "08:00", zone="Europe/Berlin",
                            next_due=local(BERLIN, 2026, 10, 20, 8, 0))
    weekly = await subscribe(store, org.users["mgr2"], "weekly", "08:30", weekday=0, zone="America/New_York",
                             next_due=local(NEW_YORK, 2026, 10, 26, 8, 30))
    await _tick_through(service, start, local(BERLIN, 2026, 11, 11, 0, 0), timedelta(minutes=60))
    berlin = await runs(store, daily)
    assert [r.period_key for r in berlin] == [(date(2026, 10, 20) + timedelta(days=d)).isoformat() for d in range(22)]
    assert {r.window_end.astimezone(BERLIN).strftime("%H:%M") for r in berlin if r.window_end} == {"08:00"}
    assert all(r.status == "claimed" for r in berlin)
    gaps = {(b.window_start, a.window_end) for a, b in zip(berlin, berlin[1:])}
    assert all(start_ == end_ for start_, end_ in gaps)  # each digest starts where the last ended
    ny = await runs(store, weekly)
    assert [r.period_key for r in ny] == ["2026-W44", "2026-W45", "2026-W46"]
    assert [r.window_end.astimezone(NEW_YORK).strftime("%a %H:%M") for r in ny if r.window_end] == ["Mon 08:30"] * 3
    # The UTC instants shift by an hour across the change, the local time does not.
    assert [r.window_end.hour for r in ny if r.window_end] == [12, 13, 13]


async def test_a_digest_missed_while_down_is_sent_once_inside_the_grace_window(store: Store, org: Org,
                                                                                caplog: pytest.LogCaptureFixture) -> None:
    service, inbox = _service(store)
    sub = await subscribe(store, org.users["mgr1"], "daily", "08:00", zone="Europe/Berlin",
                          next_due=local(BERLIN, 2026, 11, 2, 8, 0))
    await service.tick(local(BERLIN, 2026, 11, 2, 7, 59))  # then the server is down until 13:00
    assert await runs(store, sub) == []
    for minute in range(5):  # back at 13:00, five minutes of ticks (and another replica's)
        await service.tick(local(BERLIN, 2026, 11, 2, 13, minute))
    await deliver(store)
    [run] = await runs(store, sub)
    assert (run.period_key, run.status) == ("2026-11-02", "sent") and len(inbox.posted) == 1

    # Down from 3 Nov 07:00 to 15:00: seven hours late, beyond the grace window: skipped, logged.
    with caplog.at_level(logging.WARNING, logger="dealbot.digests"):
        await service.tick(local(BERLIN, 2026, 11, 3, 15, 0))
    await deliver(store)
    assert [(r.period_key, r.status) for r in await runs(store, sub)] == [("2026-11-02", "sent"), ("2026-11-03", "skipped")]
    assert len(inbox.posted) == 1 and "digest skipped" in caplog.text
    # The next one is sent on time and covers the skipped day too: nothing falls between digests.
    await service.tick(local(BERLIN, 2026, 11, 4, 8, 0))
    await deliver(store)
    last = (await runs(store, sub))[-1]
    assert (last.period_key, last.status, last.window_start) == ("2026-11-04", "sent", local(BERLIN, 2026, 11, 2, 8, 0))
    assert len(inbox.posted) == 2


async def test_a_changed_subscription_counts_at_the_next_tick(store: Store, org: Org, shell: Any) -> None:
    service, _ = _service(store, "shell")  # subscribed in the shell: delivered there
    assert await _service(store)[0].tick(datetime.now(UTC) + timedelta(days=2)) == 0  # not by Slack
    now = datetime.now(UTC)
    me = await shell("mgr1")
    await me.ask("/crm digest daily 08:00 UTC")
    sub = await digests.subscription(store, org.users["mgr1"])
    assert sub is not None and sub.next_due_at is not None
    await me.ask("/crm digest daily 10:00 UTC")  # changed before it was due: the new time holds
    sub = await digests.subscription(store, org.users["mgr1"])
    assert sub is not None and sub.next_due_at is not None and sub.next_due_at.astimezone(UTC).hour == 10
    assert await service.tick(sub.next_due_at - timedelta(minutes=1)) == 0
    assert await service.tick(sub.next_due_at) == 1
    assert sub.next_due_at > now
    await me.ask("/crm digest off")
    assert await service.tick(sub.next_due_at + timedelta(days=1)) == 0


async def test_two_schedulers_on_one_database_send_one_digest_per_period(db_url: str, store: Store, org: Org) -> None:
    """Two replicas (their own store, scheduler and outbox worker each) tick at the same moments."""
    for key in ("mgr1", "mgr2", "vp"):
        await subscribe(store, org.users[key], "daily", "08:00", zone="Europe/Berlin",
                        next_due=local(BERLIN, 2026, 11, 2, 8, 0))
    replicas = [await Store.open(db_url, upgrade=False) for _ in range(2)]
    try:
        services = [_service(replica) for replica in replicas]
        for day in range(2, 5):
            for minute in (0, 1):
                now = local(BERLIN, 2026, 11, day, 8, minute)
                await asyncio.gather(*(service.tick(now) for service, _ in services))
            await asyncio.gather(*(deliver(replica) for replica in replicas))
        delivered = [conv for _, inbox in services for conv, _ in inbox.posted]
        assert sorted(delivered) == sorted(f"D-{org.users[k]}" for k in ("mgr1", "mgr2", "vp") for _ in range(3))
        async with store.session() as s:
            statuses = list((await s.execute(select(DigestRun.status))).scalars())
            sends = (await s.execute(select(OutboxItem.status).where(OutboxItem.operation == digests.SEND))).scalars()
            assert statuses == ["sent"] * 9 and list(sends) == ["done"] * 9
    finally:
        for replica in replicas:
            await replica.close()


async def test_a_failed_send_is_retried_and_never_doubled(store: Store, org: Org) -> None:
    service, inbox = _service(store)
    due = local(BERLIN, 2026, 11, 2, 8, 0)
    sub = await subscribe(store, org.users["mgr1"], next_due=due)
    failures = [RuntimeError("chart upload failed")]

    async def flaky(conversation: str, chart: Chart) -> str | None:
        if failures:
            raise failures.pop()
        return await Inbox.attach_chart(inbox, conversation, chart)

    inbox.attach_chart = flaky  # type: ignore[method-assign]
    store.outbox.base_delay_s = 0.01
    assert await service.tick(due) == 1
    await deliver(store)
    await asyncio.sleep(0.05)
    await deliver(store)
    [run] = await runs(store, sub)
    assert run.status == "sent" and run.message_ref == "m1" and run.file_ref == "F1"
    assert len(inbox.posted) == 1 and len(inbox.charts) == 1  # the retry did not post the digest again
    png = inbox.charts[0][1].png
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000


async def test_undeliverable_and_unsubscribed_digests_are_not_sent(store: Store, org: Org) -> None:
    service, inbox = _service(store)
    due = local(BERLIN, 2026, 11, 2, 8, 0)
    absent = await subscribe(store, org.users["mgr1"], next_due=due)
    async with store.transaction() as s:
        await s.execute(update(User).where(User.id == org.users["mgr1"]).values(slack_user_id="absent"))
    gone = await subscribe(store, org.users["mgr2"], next_due=due)
    assert await service.tick(due) == 2
    async with store.transaction() as s:  # turned off after the claim, before the send
        await s.execute(update(DigestSubscription).where(DigestSubscription.id == gone).values(enabled=False))
    await deliver(store)
    assert [r.status for r in await runs(store, absent)] == ["undeliverable"]
    assert [r.status for r in await runs(store, gone)] == ["cancelled"]
    assert inbox.posted == []


async def test_a_digest_that_fails_for_good_is_covered_by_the_next_one(store: Store, org: Org) -> None:
    service, inbox = _service(store)
    sub = await subscribe(store, org.users["mgr1"], zone="Europe/Berlin", next_due=local(BERLIN, 2026, 11, 1, 8, 0))
    posts = 0

    async def second_refused(conversation: str, message: Reply, chart: Chart | None) -> str:
        nonlocal posts
        posts += 1
        if posts == 2:
            raise Refused("not_allowed_token_type")
        return await Inbox.post_dm(inbox, conversation, message, chart)

    inbox.post_dm = second_refused  # type: ignore[method-assign]
    for day in (1, 2, 3):
        await service.tick(local(BERLIN, 2026, 11, day, 8, 0))
        await deliver(store)
    first, failed, third = await runs(store, sub)
    assert (first.status, failed.status, third.status) == ("sent", "failed", "sent") and len(inbox.posted) == 2
    assert third.window_start == first.window_end  # the failed day is in the next digest


async def test_a_digest_fits_block_kit_and_an_adaptive_card_with_its_chart(store: Store, org: Org,
                                                                           moved: Window) -> None:
    from bot.slack.render import MAX_BLOCKS, render as block_kit
    from bot.teams.cards import MAX_CARD_BYTES, activity_bytes, render as adaptive_card

    service, _ = _service(store)
    built = await service.preview(await _user(store, org.users["vp"]))
    data = built.data
    assert data.moved and data.captured  # a digest with many sections
    chart = await service.chart(built)
    assert chart is not None
    blocks = block_kit(built.reply).blocks
    assert len(blocks) <= MAX_BLOCKS and blocks[0]["text"]["text"] == "Pipeline digest for Victor Vance"
    card = adaptive_card(built.reply, image=chart.png, image_alt=chart.alt)
    assert activity_bytes(card) <= MAX_CARD_BYTES
    images = [e for e in card.card["body"] if e.get("type") == "Image"]
    assert [i["url"][:22] for i in images] == ["data:image/png;base64,"]  # the chart inline


async def _user(store: Store, user_id: int) -> User:
    async with store.session() as s:
        return (await s.execute(select(User).where(User.id == user_id))).scalar_one()
