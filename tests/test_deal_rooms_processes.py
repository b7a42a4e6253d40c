"""Deal rooms across real processes: `dealbot serve` run as separate OS processes on one database,
talking to the Slack stand-in that runs in the test process.

- Two servers sharing one database (the SQLite file, or PostgreSQL when ``TEST_DATABASE_URL`` is
  set: the ``db_url`` fixture picks it) get the same deals and the same changes pushed to both at
  once: one channel per opportunity, one invite per person, one pinned card, one update post.
- A server SIGKILLed after Slack created the channel but before it heard the answer, then a new
  server on the same database: the room is adopted (not made twice), staffed and pinned.

The database is migrated before any server starts (``db_url`` hands out a migrated one), so the
servers' own upgrade on open finds the schema at head and two of them never migrate at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from crm_store import Store
from crm_store.models import DealRoom, Opportunity, OutboxItem, TimelineEntry, utcnow
from tests.org import Org
from tests.slack_world import SECRET, TOKEN, seed_people, slack_id
from tests.stand_ins.slack import Call, Channel, SlackStandIn

ROOT = Path(__file__).resolve().parents[1]
API = "process-test-token"
MIN_AMOUNT = "1000000"  # above every deal of the org, so only the deals pushed here get rooms
AMOUNT, NEW_AMOUNT = "2500000", "3100000"
LEASE_S = 5  # OUTBOX_LEASE_SECONDS: the smallest the settings allow
# external id: (deal name, account external id, owner, deal team)
DEALS = {
    "O-proc-1": ("Alpha Rollout", "A-acme", "rep_a", ["se", "rep_b"]),
    "O-proc-2": ("Beta Migration", "A-globex", "rep_c", ["se"]),
    "O-proc-3": ("Gamma Platform", "A-initech", "loner", ["rep_a", "mgr1"]),
    "O-proc-4": ("Delta Expansion", "A-umbrella", "rep_b", []),
    "O-proc-5": ("Epsilon Renewal", "A-societe", "rep_a", ["rep_c", "se", "vp"]),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One `dealbot serve` process; its stderr (JSON log lines) kept for failure messages."""

    def __init__(self, name: str, db_url: str, slack: SlackStandIn, workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.stderr.log"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DATABASE_URL", "DEALBOT_", "SLACK_", "MICROSOFT_", "DEAL_ROOM_", "OUTBOX_"))}
        env.update(PYTHONPATH=str(ROOT), DATABASE_URL=db_url, SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET,
                   SLACK_API_URL=slack.api_url, DEALBOT_API_TOKEN=API, DEAL_ROOM_MIN_AMOUNT=MIN_AMOUNT,
                   DEAL_ROOM_UPDATE_GROUP_SECONDS="0.2", OUTBOX_LEASE_SECONDS=str(LEASE_S),
                   SLACK_TIER2_PER_MINUTE="1200")  # paced, but 20 calls a second: the test stays quick
        with self.log_path.open("w") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from bot.cli import app; app()", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port)], cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=log)

    def log(self) -> str:
        return f"--- {self.name} (exit {self.proc.poll()}) ---\n{self.log_path.read_text()[-6000:]}"

    async def ready(self, http: aiohttp.ClientSession, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"the server exited at start-up\n{self.log()}"
            try:
                async with http.get(f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as answer:
                    if answer.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"the server did not come up\n{self.log()}"
            await asyncio.sleep(0.05)

    async def put_deal(self, http: aiohttp.ClientSession, key: str, amount: str, clock: int) -> None:
        name, account, owner, team = DEALS[key]
        body = {"name": name, "account_external_id": account, "amount": amount, "currency": "USD",
                "stage": "Negotiation", "close_date": "2026-12-31", "owner_email": Org.email(owner),
                "team_emails": [Org.email(who) for who in team],
                "source_updated_at": f"2026-11-20T10:00:{clock:02d}Z"}
        async with http.put(f"{self.url}/api/v1/opportunities/{key}", json=body,
                            headers={"Authorization": f"Bearer {API}"}) as answer:
            text = await answer.text()
            assert answer.status in (200, 201), f"{self.name}: PUT {key} -> {answer.status} {text}\n{self.log()}"

    async def exited(self, timeout: float) -> int | None:
        """Wait (without blocking the stand-in, which shares this event loop) for the exit."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.proc.poll()

    async def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if await self.exited(30) is None:
                self.proc.kill()
                await self.exited(10)
        return self.proc.returncode

    async def kill(self) -> None:
        self.proc.kill()
        assert await self.exited(10) is not None, "SIGKILL did not end the server"


class Cluster:
    """The stand-in, the servers started so far, and the test's own view of the database."""

    def __init__(self, store: Store, slack: SlackStandIn, http: aiohttp.ClientSession, db_url: str,
                 workdir: Path) -> None:
        self.store, self.slack, self.http, self.db_url, self.workdir = store, slack, http, db_url, workdir
        self.servers: list[Server] = []

    async def start(self, count: int = 1) -> list[Server]:
        started = [Server(f"server{len(self.servers) + i + 1}", self.db_url, self.slack, self.workdir)
                   for i in range(count)]
        self.servers += started
        await asyncio.gather(*(server.ready(self.http) for server in started))
        return started

    def logs(self) -> str:
        return "\n".join(server.log() for server in self.servers)

    async def until(self, check: Callable[[], Awaitable[Any]], what: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = await check()
            if result:
                return result
            assert time.monotonic() < deadline, f"timed out waiting: {what}\n{self.logs()}"
            await asyncio.sleep(0.05)

    async def rooms(self) -> dict[str, DealRoom]:
        """Room rows by the deal's external id."""
        async with self.store.session() as s:
            rows = (await s.execute(select(Opportunity.external_id, DealRoom).join(
                DealRoom, DealRoom.opportunity_id == Opportunity.id))).all()
        return {key: room for key, room in rows}

    async def all_rooms_done(self, keys: list[str]) -> bool:
        rooms = await self.rooms()
        return all(k in rooms and rooms[k].status == "active" and rooms[k].pinned_message_ref for k in keys)

    async def idle(self) -> bool:
        """Nothing in the outbox is due (or about to be: grouped updates), nor being worked on."""
        async with self.store.session() as s:
            busy = (await s.execute(select(OutboxItem.id).where(
                OutboxItem.status == "pending",
                OutboxItem.next_attempt_at <= utcnow() + timedelta(seconds=1)).limit(1))).first()
        return busy is None

    async def failures(self) -> list[tuple[str, str, int, str | None]]:
        async with self.store.session() as s:
            rows = (await s.execute(select(OutboxItem.operation, OutboxItem.status, OutboxItem.attempts,
                                           OutboxItem.last_error).where(
                (OutboxItem.status == "failed") | (OutboxItem.attempts > 0)))).all()
        return [tuple(row) for row in rows]

    def channels(self) -> list[Channel]:
        return [c for c in self.slack.channels.values() if c.creator == self.slack.bot_user_id and not c.is_im]

    def calls(self, method: str, channel_id: str) -> list[Call]:
        return [c for c in self.slack.called(method) if c.args.get("channel") == channel_id]

    def invited(self, channel_id: str) -> Counter[str]:
        """Every user id in every invite to `channel_id`, whatever Slack answered."""
        return Counter(u for c in self.calls("conversations.invite", channel_id)
                       for u in str(c.args.get("users", "")).split(",") if u)

    def pinned(self, channel_id: str) -> list[Any]:
        return [m for m in self.slack.messages.get(channel_id, []) if m.pinned]

    def posts(self, channel_id: str, text: str) -> list[Any]:
        return [m for m in self.slack.messages.get(channel_id, []) if text in m.text]


def team_of(key: str) -> set[str]:
    _, _, owner, team = DEALS[key]
    return {slack_id(owner), *(slack_id(who) for who in team)}


@pytest.fixture
async def cluster(store: Store, org: Org, db_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with SlackStandIn(bot_token=TOKEN) as slack, aiohttp.ClientSession() as http:
        seed_people(slack)
        world = Cluster(store, slack, http, db_url, tmp_path)
        try:
            yield world
        finally:
            slack.before_answer = None
            await asyncio.gather(*(server.stop() for server in world.servers))


async def test_two_servers_on_one_database_give_one_room_one_invite_and_one_card_per_deal(cluster: Cluster) -> None:
    first, second = await cluster.start(2)
    keys = list(DEALS)
    # Every deal pushed to both servers at the same moment, as a source CRM retrying through a
    # load balancer would.
    await asyncio.gather(*(server.put_deal(cluster.http, key, AMOUNT, 1) for key in keys
                           for server in (first, second)))
    await cluster.until(lambda: cluster.all_rooms_done(keys), "every deal's room active with a pinned card")
    await cluster.until(cluster.idle, "the outbox to settle")

    rooms = await cluster.rooms()
    assert sorted(rooms) == keys, "only the pushed deals qualify"
    channels = {c.id: c for c in cluster.channels()}
    assert sorted(channels) == sorted(r.channel_id for r in rooms.values()), "one channel per opportunity"
    creates = cluster.slack.called("conversations.create")
    assert [c.ok for c in creates] == [True] * len(keys), [(c.args.get("name"), c.error) for c in creates]
    assert sorted(c.args["name"] for c in creates) == sorted(r.channel_name for r in rooms.values())
    for key, room in rooms.items():
        channel = channels[room.channel_id]
        assert channel.name == room.channel_name and channel.is_private
        assert cluster.invited(channel.id) == Counter(team_of(key)), (key, cluster.invited(channel.id))
        assert channel.members == team_of(key) | {cluster.slack.bot_user_id}
        [card] = cluster.pinned(channel.id)
        assert card.ts == room.pinned_message_ref and DEALS[key][0] in card.text
        assert len(cluster.calls("pins.add", channel.id)) == 1

    # The same change, again to both servers at once: one timeline entry, one update post per room.
    await asyncio.gather(*(server.put_deal(cluster.http, key, NEW_AMOUNT, 2) for key in keys
                           for server in (first, second)))

    async def announced() -> bool:
        return all(cluster.posts(r.channel_id, "What changed") for r in rooms.values())
    await cluster.until(announced, "the amount change posted in every room")
    await cluster.until(cluster.idle, "the outbox to settle after the change")
    async with cluster.store.session() as s:
        entries = Counter((await s.execute(select(Opportunity.external_id).join(
            TimelineEntry, TimelineEntry.opportunity_id == Opportunity.id).where(
            TimelineEntry.kind == "amount_change"))).scalars())
    assert entries == Counter(keys), entries
    for key, room in rooms.items():
        [update] = cluster.posts(room.channel_id, "What changed")
        assert update.text.count("Amount:") == 1 and "3,100,000" in update.text, (key, update.text)
        [card] = cluster.pinned(room.channel_id)
        assert "3,100,000" in card.text, card.text
        assert cluster.invited(room.channel_id) == Counter(team_of(key))  # no re-staffing
    assert len(cluster.channels()) == len(keys)
    assert await cluster.failures() == [], cluster.logs()
    assert [await server.stop() for server in (first, second)] == [0, 0], cluster.logs()


async def test_a_server_killed_between_slack_creating_the_channel_and_recording_it_is_adopted_on_restart(
        cluster: Cluster) -> None:
    [doomed] = await cluster.start()
    killed: list[Call] = []

    async def kill_on_create(call: Call) -> None:
        """Slack made the channel; the server dies before it hears so."""
        if call.method == "conversations.create" and call.ok and not killed:
            killed.append(call)
            await doomed.kill()
    cluster.slack.before_answer = kill_on_create

    key = "O-proc-1"
    await doomed.put_deal(cluster.http, key, AMOUNT, 1)
    assert await doomed.exited(20) is not None, f"the server never created the channel\n{cluster.logs()}"
    assert doomed.proc.returncode == -signal.SIGKILL
    cluster.slack.before_answer = None
    [made] = cluster.channels()
    room = (await cluster.rooms())[key]
    # The database knows only the name it asked for: the outcome of the create is unknown to it.
    assert (room.status, room.channel_id, room.channel_name) == ("creating", None, made.name)

    await cluster.start()  # a fresh server; the dead one's lease on the work runs out after LEASE_S
    await cluster.until(lambda: cluster.all_rooms_done([key]), "the room adopted and its card pinned",
                        timeout=LEASE_S + 20)
    await cluster.until(cluster.idle, "the outbox to settle")

    room = (await cluster.rooms())[key]
    assert (room.status, room.channel_id, room.channel_name) == ("active", made.id, made.name)
    assert cluster.channels() == [made], "adopted, not made a second time"
    assert [c.ok for c in cluster.slack.called("conversations.create")] == [True]
    assert made.members == team_of(key) | {cluster.slack.bot_user_id}
    assert cluster.invited(made.id) == Counter(team_of(key))
    [card] = cluster.pinned(made.id)
    assert card.ts == room.pinned_message_ref and "Alpha Rollout" in card.text
    assert len(cluster.calls("pins.add", made.id)) == 1
    assert await cluster.failures() == [], cluster.logs()
    assert await cluster.servers[-1].stop() == 0, cluster.logs()
