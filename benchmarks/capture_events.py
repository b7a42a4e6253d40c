"""Capture throughput: deal-room message events through `/slack/events` into transcripts and the
timeline, end to end. A phase of `benchmarks/search.py` (run it on the database that benchmark
built, so every kept message also updates the full-text index); runnable alone on any migrated
SQLite file with users and open opportunities::

    .venv/bin/python benchmarks/capture_events.py --db path/to/dealbot.db --rate 600 --seconds 30

A real `dealbot serve` (its own process, CAPTURE_MODE=suggest) talks to the Slack stand-in in this
process. 20 deals get a deal room (a channel in the stand-in with their people as members). Signed
`message` events are sent at `--rate` for `--seconds`, spread over the rooms: 70 % chatter, 10 %
explicit markers, 10 % decisions the detector should find (each one is offered to its author as
an ephemeral message through the outbox), 10 % questions; 2 % are sent twice as Slack retries.
The baseline, measured in the same run, is the same pipeline for a channel that is no deal room
(claimed once, then ignored). Counted afterwards: transcript rows (none may be missing), timeline
entries, suggestions posted, and the rate at which events were processed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from benchmarks.ingest import free_port, wait_ready  # noqa: E402
from benchmarks.slack_http import BOT_TOKEN, SECRET, TEAM, pct, send_at_rate  # noqa: E402
from tests.stand_ins.slack import SlackStandIn  # noqa: E402

ROOMS = 20
TARGET_PER_S = 500.0
CHATTER = ["Kickoff notes are in the doc", "thanks, reading now", "Who is joining the call on Thursday?",
           "Their security team has more questions about SSO", "Updated the mutual action plan"]
MARKED = ["Decision: 3-year term with a 5% cap", "#action send the order form to procurement",
          "Decision: net-45 payment terms", "Action: Sam books the onsite"]
DETECTED = ["Legal signed off on the DPA", "their CFO approved the budget", "3-year term it is",
            "We're going with the annual plan"]
QUESTIONS = ["should we go with 3 years?", "if procurement approves we'd go annual", "no decision yet on pricing"]


def seed_rooms(db: Path, slack: SlackStandIn) -> tuple[list[str], list[str]]:
    """Deal rooms for open deals (rows in the database, channels in the stand-in; a deal that has
    a room already gets it moved to the stand-in's channel), the deals' owners as Slack users.
    Returns the rooms' channel ids and Slack user ids."""
    with closing(sqlite3.connect(db)) as conn:
        deals = conn.execute(
            "SELECT o.id, u.email, u.name FROM opportunities o JOIN users u ON u.id = o.owner_id "
            "WHERE o.status = 'open' AND u.email IS NOT NULL ORDER BY o.id LIMIT ?", (ROOMS,)).fetchall()
        channels, users = [], []
        for n, (opp_id, email, name) in enumerate(deals):
            user = f"UCAP{n:03d}"
            slack.add_user(user, email, name)
            channel = slack.add_channel(f"deal-capture-{n}", {slack.bot_user_id, user}, is_private=True)
            moved = conn.execute("UPDATE deal_rooms SET channel_id = ?, status = 'active' WHERE opportunity_id = ? "
                                 "AND platform = 'slack'", (channel, opp_id)).rowcount
            if not moved:
                conn.execute("INSERT INTO deal_rooms (opportunity_id, platform, channel_id, channel_name, status, "
                             "created_at, renamed_by_hand, listed_absent) VALUES (?, 'slack', ?, ?, 'active', "
                             "datetime('now'), 0, '[]')", (opp_id, channel, f"deal-capture-{n}"))
            channels.append(channel)
            users.append(user)
        conn.commit()
    if len(channels) < ROOMS:
        raise SystemExit(f"need {ROOMS} open deals with an owner in {db}, found {len(channels)}")
    return channels, users


def event_body(i: int, channel: str, user: str, text: str) -> str:
    ts = f"{1_800_000_000 + i // 1000}.{i % 1000:06d}"
    event = {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts, "event_ts": ts,
             "channel_type": "group"}
    return json.dumps({"token": "legacy", "team_id": TEAM, "api_app_id": "A0APP", "type": "event_callback",
                       "event_id": f"EvCap{i:08d}", "event_time": int(time.time()), "event": event,
                       "authorizations": [{"team_id": TEAM, "user_id": "U0BOT", "is_bot": True}]})


def counts(db: Path) -> dict[str, int]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        one = lambda sql: int(conn.execute(sql).fetchone()[0])  # noqa: E731
        return {"kept": one("SELECT COUNT(*) FROM transcript_messages WHERE platform = 'slack'"),
                "entries": one("SELECT COUNT(*) FROM timeline_entries WHERE source_platform = 'slack'"),
                "claims": one("SELECT COUNT(*) FROM processed_events WHERE platform = 'slack'")}


async def capture_phase(db: Path, rate: float, seconds: float, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    async with SlackStandIn(bot_token=BOT_TOKEN, team_id=TEAM) as slack:
        channels, users = seed_rooms(db, slack)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DEALBOT_", "SLACK_",
                                                                        "DEAL_ROOM", "CAPTURE_"))}
        env.update(PYTHONPATH=str(ROOT), DATABASE_URL=f"sqlite+aiosqlite:///{db}", SLACK_BOT_TOKEN=BOT_TOKEN,
                   SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=slack.api_url, DEAL_ROOM_MIN_AMOUNT="1000000000000",
                   CAPTURE_MODE=os.environ.get("BENCH_CAPTURE_MODE", "suggest"))
        server = subprocess.Popen([sys.executable, "-c", "from bot.cli import app; app()", "serve", "--port",
                                   str(port)], env=env, cwd=db.parent, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            await wait_ready(f"{base}/healthz", server)
            url = f"{base}/slack/events"
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256),
                                             timeout=aiohttp.ClientTimeout(total=600)) as session:
                outsider = slack.add_channel("general", {slack.bot_user_id, *users})
                before = counts(db)
                baseline = await send_at_rate(session, url, rate, max(3.0, seconds / 5), lambda i: event_body(
                    i, outsider, users[i % len(users)], CHATTER[i % len(CHATTER)]), rng)
                await asyncio.sleep(1)
                middle = counts(db)
                kinds: list[str] = []

                def message(i: int) -> tuple[str, str, str]:
                    room = i % len(channels)
                    pick = rng.random()
                    pool = CHATTER if pick < 0.7 else MARKED if pick < 0.8 else DETECTED if pick < 0.9 else QUESTIONS
                    kinds.append("marked" if pool is MARKED else "detected" if pool is DETECTED else "other")
                    return channels[room], users[room], f"{rng.choice(pool)} ({i})"

                started = time.perf_counter()
                captured = await send_at_rate(session, url, rate, seconds,
                                              lambda i: event_body(10_000_000 + i, *message(i)), rng)
                deadline, last, still = time.monotonic() + 60, -1, time.monotonic()
                while True:
                    now = counts(db)
                    if now["kept"] != last:
                        last, still = now["kept"], time.monotonic()
                    done = now["kept"] - middle["kept"] >= captured["total"]
                    if done or time.monotonic() - still > 3 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
                processed_s = (time.perf_counter() - started) if done else float("nan")
                await asyncio.sleep(3)  # suggestions go out through the outbox after the commits
                after = counts(db)
        finally:
            await stop(server)
        kind_counts = Counter(kinds)
        return {"rate": rate, "seconds": seconds, "baseline": baseline, "captured": captured,
                "baseline_claims": middle["claims"] - before["claims"], "baseline_kept": middle["kept"] - before["kept"],
                "kept": after["kept"] - middle["kept"], "entries": after["entries"] - middle["entries"],
                "marked": kind_counts["marked"], "detected": kind_counts["detected"],
                "suggested": len(slack.ephemerals), "processed_s": processed_s}


async def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then wait without blocking this loop: the stand-in in it must keep answering while
    the server drains its outbox."""
    server.terminate()
    for _ in range(600):
        if server.poll() is not None:
            return
        await asyncio.sleep(0.1)
    server.kill()


def report(result: dict[str, Any]) -> None:
    cap, base = result["captured"], result["baseline"]
    total = cap["total"]
    lost = total - result["kept"]
    per_s = total / result["processed_s"] if result["processed_s"] == result["processed_s"] else 0.0
    print(f"\nCapture through /slack/events: {total:,} deal-room message events at {result['rate']:g}/s for "
          f"{result['seconds']:g} s ({ROOMS} rooms, 2 % sent twice as Slack retries)")
    print(f"{'':36}{'events':>9}{'ack p50 ms':>12}{'ack p99 ms':>12}  statuses")
    print(f"{'baseline: channel that is no room':36}{base['total']:>9,}{pct(base['latencies'], 50):>12.1f}"
          f"{pct(base['latencies'], 99):>12.1f}  {dict(base['statuses'])}")
    print(f"{'deal-room messages':36}{total:>9,}{pct(cap['latencies'], 50):>12.1f}"
          f"{pct(cap['latencies'], 99):>12.1f}  {dict(cap['statuses'])}")
    print(f"kept {result['kept']:,} of {total:,} (lost {lost:,}); baseline kept {result['baseline_kept']} "
          f"(claimed {result['baseline_claims']:,})")
    print(f"timeline entries {result['entries']:,} (explicit markers sent {result['marked']:,}); "
          f"suggestions posted {result['suggested']:,} (detectable decisions sent {result['detected']:,})")
    print(f"processed: {per_s:,.0f} messages/s end to end (target >= {TARGET_PER_S:g}/s, none lost): "
          f"{'met' if per_s >= TARGET_PER_S and lost == 0 else 'MISSED'}")


async def standalone(args: argparse.Namespace) -> None:
    if args.db:
        report(await capture_phase(Path(args.db), args.rate, args.seconds))
        return
    from benchmarks.ingest import TOKEN as API_TOKEN, opportunities, post_all

    with tempfile.TemporaryDirectory(prefix="dealbot-capture-") as tmp:
        db, port = Path(tmp) / "capture.db", free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DEALBOT_", "SLACK_"))}
        env.update(PYTHONPATH=str(ROOT), DATABASE_URL=f"sqlite+aiosqlite:///{db}", DEALBOT_API_TOKEN=API_TOKEN)
        server = subprocess.Popen([sys.executable, "-c", "from bot.cli import app; app()", "serve", "--port", str(port)],
                                  env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await wait_ready(f"http://127.0.0.1:{port}/healthz", server)
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_TOKEN}"}) as session:
                base = f"http://127.0.0.1:{port}/api/v1"
                await post_all(session, f"{base}/users/bulk",
                               [{"email": f"user{i}@bench.test", "name": f"User {i}"} for i in range(50)], "created")
                await post_all(session, f"{base}/accounts/bulk",
                               [{"external_id": f"ACC-{i:05d}", "name": f"Account {i}"} for i in range(100)], "created")
                await post_all(session, f"{base}/opportunities/bulk", opportunities(500, 100, 50, 7, 0), "created")
        finally:
            server.terminate()
            server.wait(timeout=60)
        report(await capture_phase(db, args.rate, args.seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="a migrated SQLite file with users and open deals (default: a small new one)")
    parser.add_argument("--rate", type=float, default=600.0, help="message events per second (default 600)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to send (default 30)")
    asyncio.run(standalone(parser.parse_args()))


if __name__ == "__main__":
    main()
