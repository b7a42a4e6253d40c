"""Manager digests delivered on Slack, end to end: the real `Digests` scheduler and sender, the real
`SlackDirect` port on the real slack-sdk client, and the store's real outbox worker, against the
Slack stand-in. Nothing of ours is replaced; failures are Slack's (a 500, a 429 with Retry-After)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.digests import Digests
from bot.settings import load_settings
from bot.slack.app import web_client
from bot.slack.digests import CHART_FILE, SlackDirect
from crm_store import Store, digests
from crm_store.models import DigestRun, OutboxItem
from crm_store.records import OpportunityRecord
from crm_store.sync import Sync, Who
from handlers import texts
from handlers.digest_schedule import DigestSettings
from tests.org import DEALS, PEOPLE, Org, utc_today
from tests.slack_world import SECRET, TOKEN, slack_id, wait_until
from tests.stand_ins.slack import Call, Channel, Message, SlackStandIn

ZONE = "Asia/Kolkata"  # no DST (a due time always exists once), and a half-hour offset from UTC
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NOT_ON_SLACK = "mgr2"  # in the CRM, but no Slack account with their email (and no Slack id)
TITLE = texts.DIGEST_TITLE.format(manager=PEOPLE["mgr1"][0])


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(bot_token=TOKEN) as stand_in:
        for who, (name, _, _) in PEOPLE.items():
            if who != NOT_ON_SLACK:
                stand_in.add_user(slack_id(who), Org.email(who), name)
        yield stand_in


@pytest.fixture
async def sender(store: Store, org: Org, slack: SlackStandIn) -> AsyncIterator[Digests]:
    """`Digests` wired as `dealbot serve` wires it, with the outbox worker running for Slack."""
    client = web_client(load_settings(slack_bot_token=TOKEN, slack_signing_secret=SECRET,
                                      slack_api_url=slack.api_url), retries=False)
    sender = Digests(store, DigestSettings(default_zone="UTC"), {"slack": SlackDirect(client)})
    store.outbox.base_delay_s = 0.05  # back-off after a 5xx, shortened; a 429 waits its Retry-After
    store.outbox.start(platforms={"slack"})
    try:
        yield sender
    finally:
        await store.outbox.stop(drain_timeout_s=2)


# -- helpers -----------------------------------------------------------------------------------

async def move_a_deal(store: Store) -> None:
    """Rep Ben (mgr1's team) moves ACME Pilot from Discovery to Proposal, through the sync."""
    name, account, owner, amount, currency, stage, days, status, _ = DEALS["acme_pilot"]
    assert stage == "Discovery"
    record = OpportunityRecord.model_validate({
        "name": name, "account_external_id": f"A-{account}", "amount": amount, "currency": currency,
        "stage": "Proposal", "owner_email": Org.email(owner), "status": status,
        "close_date": (utc_today() + timedelta(days=days)).isoformat()})
    [result] = await Sync(store, Who("api", "test")).upsert("opportunities", [("O-acme_pilot", record)])
    assert result.status == "updated"


async def subscribe_due_soon(store: Store, org: Org, who: str) -> datetime:
    """A daily Slack digest for `who` at the next whole minute at least a minute from now (wall
    time in `ZONE`): the instant it falls due, after every change made so far."""
    due = (datetime.now(timezone.utc) + timedelta(minutes=2)).replace(second=0, microsecond=0)
    local_time = due.astimezone(ZoneInfo(ZONE)).strftime("%H:%M")
    await digests.save(store, {org.users[who]: digests.Settings("daily", local_time, None, ZONE, "slack", due)})
    return due


async def runs(store: Store) -> list[DigestRun]:
    async with store.session() as s:
        return list((await s.execute(select(DigestRun).order_by(DigestRun.id))).scalars())


async def send_rows(store: Store) -> list[OutboxItem]:
    async with store.session() as s:
        return list((await s.execute(select(OutboxItem).where(OutboxItem.operation == digests.SEND)
                                     .order_by(OutboxItem.id))).scalars())


async def until_run(store: Store, status: str) -> DigestRun:
    """The only run, once it reached `status`, and its outbox row is done."""
    async def reached() -> DigestRun | None:
        found = await runs(store)
        rows = await send_rows(store)
        if len(found) == 1 and found[0].status == status and rows and all(r.status == "done" for r in rows):
            return found[0]
        return None
    return await wait_until(reached, timeout=10)


def dms(slack: SlackStandIn) -> list[Channel]:
    return [c for c in slack.channels.values() if c.is_im]


def dm_with(slack: SlackStandIn, who: str) -> Channel:
    [dm] = dms(slack)
    assert dm.members == {slack.bot_user_id, slack_id(who)}
    return dm


def digest_messages(slack: SlackStandIn, channel: Channel) -> list[Message]:
    return [m for m in slack.messages[channel.id] if m.blocks]


def completed_files(slack: SlackStandIn) -> list[dict[str, Any]]:
    return [f for f in slack.files.values() if f["completed"]]


def statuses(slack: SlackStandIn, method: str) -> list[int]:
    return [c.status for c in slack.called(method)]


def assert_one_digest_with_its_chart(slack: SlackStandIn, run: DigestRun) -> None:
    dm = dm_with(slack, "mgr1")
    [message] = digest_messages(slack, dm)
    header = message.blocks[0] if message.blocks else {}
    assert header["type"] == "header" and header["text"]["text"] == TITLE
    shown = json.dumps(message.blocks, ensure_ascii=False)
    moved = texts.DIGEST_SECTIONS["moved"].format(n=1)
    step = texts.DIGEST_MOVE.format(old="Discovery", new="Proposal")
    assert moved in shown and "ACME Pilot" in shown and step in shown  # the stage change is in it
    assert TITLE in message.text  # the plain-text fallback says what it is, too
    [chart] = completed_files(slack)
    assert chart["channel"] == dm.id and chart["filename"] == CHART_FILE
    assert chart["title"] == texts.DIGEST_CHART_TITLE
    png: bytes = chart["bytes"]
    assert png[:8] == PNG_SIGNATURE and len(png) > 2_000 and chart["length"] == len(png)
    # The DM holds exactly these two: the digest, then the chart shared into it.
    first, second = slack.messages[dm.id]
    assert first is message and (second.files, second.blocks) == ([chart["id"]], None)
    assert (run.message_ref, run.file_ref, run.sent_at is not None) == (message.ts, chart["id"], True)


# -- tests -------------------------------------------------------------------------------------

async def test_a_due_digest_is_one_dm_with_block_kit_and_the_chart_as_a_png(
        sender: Digests, store: Store, org: Org, slack: SlackStandIn) -> None:
    await move_a_deal(store)
    due = await subscribe_due_soon(store, org, "mgr1")
    assert await sender.tick(due - timedelta(seconds=1)) == 0  # not yet
    assert await sender.tick(due + timedelta(minutes=1)) == 1
    assert await sender.tick(due + timedelta(minutes=2)) == 0  # claimed once per period
    run = await until_run(store, "sent")
    assert (run.window_end, run.window_start) == (due, due - timedelta(days=1))
    assert_one_digest_with_its_chart(slack, run)
    called = [c.method for c in slack.calls]
    assert called == ["users.lookupByEmail", "conversations.open", "chat.postMessage",
                      "files.getUploadURLExternal", "files.completeUploadExternal"]
    assert all(c.ok for c in slack.calls)
    assert slack.called("users.lookupByEmail")[0].args["email"] == Org.email("mgr1")
    [row] = await send_rows(store)
    assert (row.attempts, row.result) == (0, {"status": "sent"})


async def test_a_failed_chart_upload_is_retried_without_posting_the_digest_again(
        sender: Digests, store: Store, org: Org, slack: SlackStandIn) -> None:
    slack.fail_next("files.completeUploadExternal", "internal_error", 500)
    await move_a_deal(store)
    due = await subscribe_due_soon(store, org, "mgr1")
    assert await sender.tick(due) == 1
    run = await until_run(store, "sent")
    assert statuses(slack, "files.completeUploadExternal") == [500, 200]
    assert statuses(slack, "chat.postMessage") == [200]  # the retry carried on after the message
    assert_one_digest_with_its_chart(slack, run)
    [row] = await send_rows(store)
    assert row.attempts == 1 and "internal_error" in (row.last_error or "")


async def test_a_429_on_the_message_waits_for_retry_after_then_posts_once(
        sender: Digests, store: Store, org: Org, slack: SlackStandIn) -> None:
    answered: list[tuple[str, int, float]] = []

    def clock(call: Call) -> None:
        answered.append((call.method, call.status, time.monotonic()))

    slack.before_answer = clock
    slack.retry_after_s = 1
    slack.fail_next("chat.postMessage", "ratelimited", 429)
    await move_a_deal(store)
    due = await subscribe_due_soon(store, org, "mgr1")
    assert await sender.tick(due) == 1
    run = await until_run(store, "sent")
    posts = [(status, at) for method, status, at in answered if method == "chat.postMessage"]
    assert [status for status, _ in posts] == [429, 200]
    assert posts[1][1] - posts[0][1] >= 0.95 * slack.retry_after_s  # not the 0.05 s back-off
    assert_one_digest_with_its_chart(slack, run)
    assert len(slack.called("conversations.open")) == 2  # the retry opened the (same) DM again


async def test_a_manager_not_on_slack_is_undeliverable_and_nothing_is_posted(
        sender: Digests, store: Store, org: Org, slack: SlackStandIn) -> None:
    await move_a_deal(store)
    due = await subscribe_due_soon(store, org, NOT_ON_SLACK)
    assert await sender.tick(due) == 1
    run = await until_run(store, "undeliverable")
    assert run.message_ref is None and run.sent_at is None
    [lookup] = slack.called("users.lookupByEmail")
    assert (lookup.args["email"], lookup.error) == (Org.email(NOT_ON_SLACK), "users_not_found")
    assert [c.method for c in slack.calls] == ["users.lookupByEmail"]
    assert dms(slack) == [] and slack.files == {}
    assert all(messages == [] for messages in slack.messages.values())
    [row] = await send_rows(store)
    assert (row.attempts, row.result) == (0, {"status": "undeliverable"})


async def test_send_now_twice_in_the_same_minute_sends_one_digest(
        sender: Digests, store: Store, org: Org, slack: SlackStandIn) -> None:
    await move_a_deal(store)
    later = datetime.now(timezone.utc) + timedelta(days=1)  # not due by the schedule meanwhile
    await digests.save(store, {org.users["mgr1"]: digests.Settings("daily", "08:00", None, None, "slack", later)})
    minute = (datetime.now(timezone.utc) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    first = await sender.send_now(org.users["mgr1"], minute + timedelta(seconds=5))
    second = await sender.send_now(org.users["mgr1"], minute + timedelta(seconds=55))
    assert isinstance(first, int) and second is None
    run = await until_run(store, "sent")
    assert run.id == first and run.period_key == f"now:{minute:%Y-%m-%dT%H:%M}"
    assert len(await send_rows(store)) == 1
    assert statuses(slack, "chat.postMessage") == [200]
    assert_one_digest_with_its_chart(slack, run)
    assert await sender.send_now(org.users["vp"]) is None  # no subscription: nothing to send
