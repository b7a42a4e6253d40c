"""Benchmark: Slack over HTTP, slash-command ack latency and event throughput of `dealbot serve`.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/slack_http.py                              # 1,000 commands; events 60 s at 600/s
    .venv/bin/python benchmarks/slack_http.py --commands 300 --seconds 10  # a quick run

It starts the Slack stand-in (tests/stand_ins/slack.py) in this process and a real `dealbot serve`
on a fresh SQLite file that talks to it (SLACK_API_URL). It loads 50 users, 2,000 accounts and
5,000 opportunities through the bulk API and gives every user a Slack account with the same email.
Then it runs two phases:

1. *commands*: signed `/crm find <account name with a typo>` slash commands, 50 in flight, each
   with its own response_url. The ack is the HTTP answer to POST /slack/events. The answer is the
   bot's post to the response_url, and every command must get exactly one within 30 s. Baselines
   measured at the same concurrency: GET /healthz, and a signed url_verification (Bolt's
   signature check with no listener).
2. *events*: signed `event_callback` message events at a steady `--rate` for `--seconds`, each
   with its own event_id, at most `--in-flight` (256) POSTs waiting for their answer. About 2%
   are sent again as Slack retries (X-Slack-Retry-Num: 1). The processed_events table must then
   hold one row per distinct id, and /metrics must count the retries as duplicates. The event
   ack latency runs from sending a POST, not from when it was due.

Targets: ack p99 <= 250 ms at 50 concurrent commands, >= 500 events/s processed, none lost,
none doubled. The run is a measurement and exits 0 whatever the verdicts. Progress (with the
server's pid, for a profiler) goes to stderr, the report to stdout; `--log FILE` keeps the
server's log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from benchmarks.ingest import TOKEN as API_TOKEN, free_port, opportunities, post_all, wait_ready  # noqa: E402
from crm_store.sample_names import company_name, noisy_query  # noqa: E402
from handlers import texts  # noqa: E402
from tests.stand_ins.slack import SlackStandIn, sign  # noqa: E402

BOT_TOKEN = "xoxb-bench"
SECRET = "bench-signing-secret"
TEAM = "T0BENCH"
USERS, ACCOUNTS, OPPORTUNITIES = 50, 2000, 5000
CONCURRENCY = 50
ANSWER_WAIT_S = 30.0
RETRY_SHARE = 0.02
TARGET_ACK_P99_MS, TARGET_EVENTS_PER_S = 250.0, 500.0
ERROR_PREFIX = texts.INTERNAL_ERROR.split("{")[0]


class TimedSlack(SlackStandIn):
    """The stand-in, also noting when each response_url key got its first accepted post."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answered_at: dict[str, float] = {}

    async def _on_response_url(self, request: web.Request) -> web.Response:
        response = await super()._on_response_url(request)
        if response.status == 200:
            self.answered_at.setdefault(request.match_info["key"], time.perf_counter())
        return response


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`, in milliseconds."""
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else float("nan")


async def post_signed(session: aiohttp.ClientSession, url: str, body: str, content_type: str,
                      extra: dict[str, str] | None = None) -> int:
    """POST `body` signed as Slack signs it; the HTTP status once the whole answer has arrived."""
    headers = {"Content-Type": content_type, **sign(body, SECRET), **(extra or {})}
    async with session.post(url, data=body.encode(), headers=headers) as response:
        await response.read()
        return response.status


async def load(n: int, concurrency: int, send: Callable[[int], Awaitable[int]]) -> tuple[list[float], Counter[int], float]:
    """Run send(0) ... send(n - 1) with `concurrency` in flight: latencies (s), statuses, elapsed s."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:  # one iterator shared by all workers: each index is taken once
            started = time.perf_counter()
            statuses[await send(i)] += 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses, time.perf_counter() - started


async def seed(session: aiohttp.ClientSession, base: str, slack: SlackStandIn, rng: random.Random) -> list[str]:
    """Users, accounts and opportunities through the bulk API; returns the account names."""
    users = [{"email": f"user{i}@bench.test", "name": f"User {i}"} for i in range(USERS)]
    names = [company_name(rng) for _ in range(ACCOUNTS)]
    accounts = [{"external_id": f"ACC-{i:05d}", "name": name} for i, name in enumerate(names)]
    await post_all(session, f"{base}/api/v1/users/bulk", users, "created")
    await post_all(session, f"{base}/api/v1/accounts/bulk", accounts, "created")
    await post_all(session, f"{base}/api/v1/opportunities/bulk",
                   opportunities(OPPORTUNITIES, ACCOUNTS, USERS, rng.randrange(1 << 30), version=0), "created")
    for i, user in enumerate(users):
        slack.add_user(slack_user(i), user["email"], user["name"])
    return names


def slack_user(i: int) -> str:
    return f"UBENCH{i:03d}"


def command_body(slack: SlackStandIn, key: str, user: str, text: str) -> str:
    """A `/crm` slash command form, exactly as tests/slack_world.py builds it."""
    return urlencode({"token": "legacy", "team_id": TEAM, "team_domain": "bench", "channel_id": "C0GENERAL",
                      "channel_name": "general", "user_id": user, "user_name": user.lower(), "command": "/crm",
                      "text": text, "api_app_id": "A0APP", "is_enterprise_install": "false",
                      "response_url": slack.response_url(key), "trigger_id": slack.new_trigger_id()})


def event_body(i: int, user: str) -> str:
    """A signed-ready `event_callback` carrying a new channel message; event id Ev<i>."""
    ts = f"{1_700_000_000 + i // 1000}.{i % 1000:06d}"
    event = {"type": "message", "channel": "C0ROOM", "user": user, "text": f"bench message {i}", "ts": ts,
             "event_ts": ts, "channel_type": "channel"}
    return json.dumps({"token": "legacy", "team_id": TEAM, "api_app_id": "A0APP", "type": "event_callback",
                       "event_id": f"EvBench{i:07d}", "event_time": int(time.time()), "event": event,
                       "authorizations": [{"team_id": TEAM, "user_id": "U0BOT", "is_bot": True}]})


async def commands_phase(session: aiohttp.ClientSession, base: str, slack: TimedSlack, names: list[str],
                         n: int, rng: random.Random) -> dict[str, Any]:
    """Baselines, then `n` find commands at CONCURRENCY; ack and answer latencies, answer counts."""
    url = f"{base}/slack/events"

    async def health(_: int) -> int:
        async with session.get(f"{base}/healthz") as response:
            await response.read()
            return response.status

    challenge = json.dumps({"token": "legacy", "challenge": "bench", "type": "url_verification"})
    rows = {"GET /healthz (baseline)": await load(n, CONCURRENCY, health),
            "signed url_verification (baseline)": await load(
                n, CONCURRENCY, lambda _: post_signed(session, url, challenge, "application/json"))}
    keys = [f"bench{i}" for i in range(n)]
    bodies = [command_body(slack, key, slack_user(rng.randrange(USERS)), f"find {noisy_query(rng, rng.choice(names))}")
              for key in keys]
    sent_at: dict[str, float] = {}

    async def command(i: int) -> int:
        sent_at[keys[i]] = time.perf_counter()
        return await post_signed(session, url, bodies[i], "application/x-www-form-urlencoded")

    rows["/crm find: ack"] = await load(n, CONCURRENCY, command)
    deadline = time.monotonic() + ANSWER_WAIT_S
    while len(slack.answered_at) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # a second answer to the same command would arrive about now
    answers = [slack.responses.get(key, []) for key in keys]
    to_answer = [slack.answered_at[k] - sent_at[k] for k in keys if k in slack.answered_at]
    return {"rows": rows, "to_answer": to_answer, "missing": sum(not a for a in answers),
            "twice": sum(len(a) > 1 for a in answers),
            "errors": sum(str(a[0].get("text", "")).startswith(ERROR_PREFIX) for a in answers if a),
            "results": sum("Results for" in str(a[0].get("text", "")) for a in answers if a)}


def processed(db: Path) -> tuple[int, int, float | None]:
    """Rows in processed_events for Slack, distinct event ids, and the newest processed_at (epoch s)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        rows, distinct, newest = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT event_id), MAX(processed_at) FROM processed_events "
            "WHERE platform = 'slack'").fetchone()
    when = datetime.fromisoformat(newest).replace(tzinfo=timezone.utc).timestamp() if newest else None
    return rows, distinct, when


async def send_at_rate(session: aiohttp.ClientSession, url: str, rate: float, seconds: float,
                       body_of: Callable[[int], str], rng: random.Random, in_flight: int = 256) -> dict[str, Any]:
    """Signed event bodies ``body_of(0…)`` at a steady `rate` for `seconds` (batches every 10 ms,
    at most `in_flight` POSTs waiting); RETRY_SHARE of them are sent again as Slack retries.
    Statuses, ack latencies (from sending a POST, not from when it was due) and timings."""
    total = int(rate * seconds)
    slots = asyncio.Semaphore(in_flight)
    retried = set(rng.sample(range(total), round(total * RETRY_SHARE)))
    statuses: Counter[int | str] = Counter()
    latencies: list[float] = []

    async def deliver(i: int) -> None:
        body = body_of(i)
        for extra in ([None, {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}]
                      if i in retried else [None]):
            async with slots:
                started = time.perf_counter()
                try:
                    statuses[await post_signed(session, url, body, "application/json", extra)] += 1
                except aiohttp.ClientError as error:
                    statuses[type(error).__name__] += 1
                latencies.append(time.perf_counter() - started)

    tasks: list[asyncio.Task[None]] = []
    first_wall, started = time.time(), time.perf_counter()
    while len(tasks) < total:
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        tasks += [asyncio.create_task(deliver(i)) for i in range(len(tasks), due)]
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    return {"total": total, "retries": len(retried), "statuses": statuses, "latencies": latencies,
            "first_wall": first_wall, "elapsed": time.perf_counter() - started}


async def events_phase(session: aiohttp.ClientSession, base: str, db: Path, args: argparse.Namespace,
                       rng: random.Random) -> dict[str, Any]:
    """Send events at `--rate`/s for `--seconds`, then count what was processed."""
    sent = await send_at_rate(session, f"{base}/slack/events", args.rate, args.seconds,
                              lambda i: event_body(i, slack_user(i % USERS)), rng, args.in_flight)
    total = sent["total"]
    deadline, last, still_since = time.monotonic() + 60, -1, time.monotonic()
    while True:
        rows, distinct, newest = processed(db)
        if rows != last:
            last, still_since = rows, time.monotonic()
        if rows >= total or time.monotonic() - still_since > 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    async with session.get(f"{base}/metrics") as response:
        metrics = await response.text()
    return {"total": total, "retries": sent["retries"], "posts": sum(sent["statuses"].values()),
            "send_s": sent["elapsed"], "statuses": sent["statuses"], "latencies": sent["latencies"], "rows": rows,
            "distinct_rows": distinct,
            "processed_s": (newest - sent["first_wall"]) if newest else float("nan"),
            "metric": counter(metrics, "slack"), "metric_dup": counter(metrics, "slack-duplicate")}


def counter(metrics: str, source: str) -> float:
    """dealbot_events_processed_total{source=...} from Prometheus text (0 when absent)."""
    found = re.search(rf'^dealbot_events_processed_total\{{source="{re.escape(source)}"\}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


def report(args: argparse.Namespace, cmd: dict[str, Any], ev: dict[str, Any], server_errors: int) -> None:
    print(f"\nSlack over HTTP: `dealbot serve` on SQLite (own process) with the Slack stand-in (this process); "
          f"{USERS} users, {ACCOUNTS:,} accounts, {OPPORTUNITIES:,} opportunities\n")
    print(f"{'request, ' + str(CONCURRENCY) + ' in flight':<40}{'n':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'req/s':>9}  statuses")
    for name, (lat, statuses, elapsed) in cmd["rows"].items():
        print(f"{name:<40}{len(lat):>7,}{pct(lat, 50):>9.1f}{pct(lat, 99):>9.1f}{pct(lat, 100):>9.1f}"
              f"{len(lat) / elapsed:>9,.0f}  {dict(statuses)}")
    ta = cmd["to_answer"]
    print(f"{'/crm find: answer on response_url':<40}{len(ta):>7,}{pct(ta, 50):>9.1f}{pct(ta, 99):>9.1f}"
          f"{pct(ta, 100):>9.1f}{'':>9}  (from sending the command)")
    print(f"\nanswers: {args.commands - cmd['missing']:,} of {args.commands:,} commands answered, "
          f"{cmd['missing']} missing, {cmd['twice']} answered more than once, {cmd['errors']} internal errors, "
          f"{cmd['results']:,} with results")
    lat, lost = ev["latencies"], ev["total"] - ev["rows"]
    # Doubled: a second row for an id (the unique constraint forbids it), or an event counted as
    # processed for the first time more often than it has rows.
    doubled = ev["rows"] - ev["distinct_rows"] + max(0, round(ev["metric"]) - ev["rows"])
    events_per_s = ev["rows"] / ev["processed_s"]
    print(f"\nevents at {args.rate:,.0f}/s for {args.seconds:g} s, at most {args.in_flight} in flight: "
          f"{ev['total']:,} distinct + {ev['retries']:,} retries = {ev['posts']:,} POSTs in {ev['send_s']:.1f} s "
          f"({ev['posts'] / ev['send_s']:,.0f}/s achieved)")
    print(f"  HTTP statuses {dict(ev['statuses'])}; ack p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, "
          f"max {pct(lat, 100):.1f} ms")
    print(f"  processed_events rows {ev['rows']:,} (distinct ids {ev['distinct_rows']:,}): lost {lost}, "
          f"doubled {doubled}; {events_per_s:,.0f} events/s processed "
          f"(first send to last row {ev['processed_s']:.1f} s)")
    metric_ok = ev["metric"] == ev["total"] and ev["metric_dup"] == ev["retries"]
    print(f"  /metrics: slack {ev['metric']:,.0f} (distinct sent {ev['total']:,}), slack-duplicate "
          f"{ev['metric_dup']:,.0f} (retries sent {ev['retries']:,}): {'as expected' if metric_ok else 'DIFFERENT'}")
    print(f"  server log lines at level error: {server_errors}\n")
    ack_p99 = pct(cmd["rows"]["/crm find: ack"][0], 99)
    verdicts = [(ack_p99 <= TARGET_ACK_P99_MS, f"ack p99 {ack_p99:.1f} ms at {CONCURRENCY} concurrent commands "
                 f"(target <= {TARGET_ACK_P99_MS:.0f} ms)"),
                (events_per_s >= TARGET_EVENTS_PER_S, f"{events_per_s:,.0f} events/s processed "
                 f"(target >= {TARGET_EVENTS_PER_S:.0f})"),
                (lost == 0 and metric_ok, f"lost {lost} events, metrics {'agree' if metric_ok else 'disagree'} "
                 f"(target 0)"),
                (doubled == 0, f"doubled {doubled} events (target 0)")]
    for ok, text in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="dealbot-slack-") as tmp:
        db, port = Path(tmp) / "bench.db", free_port()
        base = f"http://127.0.0.1:{port}"
        slack = TimedSlack(bot_token=BOT_TOKEN, team_id=TEAM)
        async with slack:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DEALBOT_", "SLACK_"))}
            env.update(DATABASE_URL=f"sqlite+aiosqlite:///{db}", DEALBOT_API_TOKEN=API_TOKEN,
                       SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=slack.api_url)
            log = (Path(tmp) / "server.log").open("w+")
            server = subprocess.Popen([sys.executable, "-c", "from bot.cli import app; app()", "serve", "--port",
                                       str(port)], env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=log)
            print(f"server pid {server.pid}, database {db}", file=sys.stderr, flush=True)
            try:
                await wait_ready(f"{base}/healthz", server)
                connector = aiohttp.TCPConnector(limit=max(CONCURRENCY, args.in_flight))
                timeout = aiohttp.ClientTimeout(total=600)
                async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                                 headers={"Authorization": f"Bearer {API_TOKEN}"}) as session:
                    names = await seed(session, base, slack, rng)
                    print("seeded; commands...", file=sys.stderr, flush=True)
                    cmd = await commands_phase(session, base, slack, names, args.commands, rng)
                    print("events...", file=sys.stderr, flush=True)
                    ev = await events_phase(session, base, db, args, rng)
            finally:
                server.terminate()
                server.wait(timeout=60)
            log.seek(0)
            lines = log.readlines()
            log.close()
            server_errors = sum('"level": "error"' in line for line in lines)
            if args.log:
                Path(args.log).write_text("".join(lines))
    report(args, cmd, ev, server_errors)


def main() -> None:
    parser = argparse.ArgumentParser(description="Slack slash-command ack latency and event throughput over HTTP")
    parser.add_argument("--commands", type=int, default=1000, help="slash commands to send, 50 in flight")
    parser.add_argument("--rate", type=float, default=600.0,
                        help="events per second to send (above the target: a run at exactly the target "
                             "measures a hair under it, the last event being sent at the very end)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to send events")
    parser.add_argument("--in-flight", type=int, default=256, help="most event POSTs waiting for their answer")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--log", help="also keep the server's log (JSON lines) in this file")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
