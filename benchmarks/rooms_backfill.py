"""Benchmark: a deal-room backfill at Slack's pace, `dealbot rooms sync` on a CRM full of
qualifying deals, interrupted part-way and resumed.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/rooms_backfill.py                   # 500 deals, Slack's minute in 3 s
    .venv/bin/python benchmarks/rooms_backfill.py --deals 100 --speedup 40

Slack allows about 20 `conversations.create` a minute (Tier 2), per method and workspace. To
measure in minutes, not hours, the clock is sped up `--speedup` times (default 20): the Slack
stand-in (tests/stand_ins/slack.py, in this process) refuses a Tier-2 call (create, setTopic,
pins.add) with HTTP 429 and `Retry-After` once 20 of them came within the last 60/speedup
seconds, and the bot is told SLACK_TIER2_PER_MINUTE = 20 x speedup.

The CRM (50 users, 100 accounts, `--deals` open deals above the threshold, each with an owner
and two team members, all on Slack) is loaded through the bulk API of a `dealbot serve` without
Slack. Then two runs, each on its own copy of that database and its own empty workspace:

1. *baseline*: the same sync with pacing off (SLACK_TIER2_PER_MINUTE very high). It still
   creates every room once (each 429 pauses the calls for its Retry-After), but shows how often
   Slack would have said no.
2. *paced*: the sync is stopped with SIGINT (Ctrl-C) when 40% of the rooms exist, then run again.

Printed per run: rooms created, creation rate as a fraction of the limit (20 x speedup a minute) (first to last creation
of each sync process, the stop between them excluded), 429 answers, duplicate channels, rooms
not staffed or without a pinned card. Targets: paced rate >= 0.9 of the limit, 0 answers 429,
0 duplicates, every room staffed and pinned. The run is a measurement and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from benchmarks.ingest import TOKEN as API_TOKEN, free_port, post_all, wait_ready  # noqa: E402
from tests.stand_ins.slack import SlackStandIn  # noqa: E402

BOT_TOKEN = "xoxb-bench"
SECRET = "bench-signing-secret"
USERS, ACCOUNTS = 50, 100
TIER2 = ("conversations.create", "conversations.setTopic", "pins.add")
TIER2_PER_MINUTE = 20
STOP_AT = 0.4
TARGET_SHARE = 0.9
DEALBOT = [sys.executable, "-c", "from bot.cli import app; app()"]


class TimedSlack(SlackStandIn):
    """The stand-in, also noting when each channel was created (monotonic seconds)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.created_at: list[float] = []

    def _dispatch(self, method: str, token: str | None, args: dict[str, Any]) -> dict[str, Any]:
        answer = super()._dispatch(method, token, args)  # a refusal raises and is not noted
        if method == "conversations.create":
            self.created_at.append(time.monotonic())
        return answer


def environment(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DEALBOT_", "SLACK_", "DEAL_"))}
    env.update(PYTHONPATH=str(ROOT), DATABASE_URL=f"sqlite+aiosqlite:///{db}", **extra)
    return env


async def load_crm(db: Path, deals: int, rng: random.Random) -> None:
    """The CRM through the bulk API of a server without Slack (so no room reacts yet)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*DEALBOT, "serve", "--port", str(port)], env=environment(db, DEALBOT_API_TOKEN=API_TOKEN),
                              cwd=db.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_ready(f"{base}/healthz", server)
        users = [{"email": f"user{i}@bench.test", "name": f"User {i}"} for i in range(USERS)]
        accounts = [{"external_id": f"ACC-{i:03d}", "name": f"Account {i}"} for i in range(ACCOUNTS)]
        opportunities = [{
            "external_id": f"OPP-{i:05d}", "name": f"Deal {i}", "account_external_id": f"ACC-{i % ACCOUNTS:03d}",
            "amount": f"{rng.randrange(100_000, 2_000_000)}.00", "currency": "USD", "stage": "Negotiation",
            "close_date": "2027-03-31", "status": "open", "owner_email": f"user{i % USERS}@bench.test",
            "team_emails": [f"user{(i + k) % USERS}@bench.test" for k in (7, 19)],
        } for i in range(deals)]
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_TOKEN}"}) as session:
            await post_all(session, f"{base}/api/v1/users/bulk", users, "created")
            await post_all(session, f"{base}/api/v1/accounts/bulk", accounts, "created")
            await post_all(session, f"{base}/api/v1/opportunities/bulk", opportunities, "created")
    finally:
        server.terminate()
        server.wait(timeout=60)


async def sync(db: Path, slack: TimedSlack, per_minute: float, stop_when: int | None = None) -> tuple[int, float]:
    """One `dealbot rooms sync`; with `stop_when`, SIGINT once that many channels exist. Returns
    the exit code and the creations per second of this process (first to last)."""
    env = environment(db, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=slack.api_url,
                      SLACK_TIER2_PER_MINUTE=f"{per_minute:g}")
    before = len(slack.created_at)
    proc = await asyncio.create_subprocess_exec(*DEALBOT, "rooms", "sync", env=env, cwd=db.parent,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    if stop_when is not None:
        while len(slack.created_at) < stop_when and proc.returncode is None:
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGINT)
    out, err = await proc.communicate()
    stamps = slack.created_at[before:]
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else 0.0
    code = proc.returncode if proc.returncode is not None else -1
    if code not in (0, 130):
        print(f"sync exited {code}:\n{out.decode()}\n{err.decode()[-2000:]}", file=sys.stderr)
    return code, rate


def outcome(db: Path, slack: TimedSlack, deals: int) -> dict[str, Any]:
    channels = [c for c in slack.channels.values() if c.creator == slack.bot_user_id and not c.is_im]
    with closing(sqlite3.connect(db)) as conn:
        active = conn.execute("SELECT count(*) FROM deal_rooms WHERE status = 'active'").fetchone()[0]
        recorded = conn.execute("SELECT count(DISTINCT channel_id) FROM deal_rooms").fetchone()[0]
    return {
        "rooms": len(channels), "active": active,
        "duplicates": len(channels) - recorded + max(0, len([c for c in slack.called("conversations.create")
                                                             if c.ok]) - deals),
        "unstaffed": sum(len(c.members) < 2 for c in channels),
        "unpinned": sum(not any(m.pinned for m in slack.messages.get(c.id, [])) for c in channels),
        "429": sum(c.status == 429 for c in slack.calls),
    }


async def one_run(seeded: Path, tmp: Path, name: str, args: argparse.Namespace, per_minute: float,
                  interrupt: bool) -> dict[str, Any]:
    db = tmp / f"{name}.db"
    shutil.copy(seeded, db)
    slack = TimedSlack(bot_token=BOT_TOKEN, rate_limits={method: TIER2_PER_MINUTE for method in TIER2},
                       rate_window_s=60 / args.speedup)
    async with slack:
        for i in range(USERS):
            slack.add_user(f"UBENCH{i:03d}", f"user{i}@bench.test", f"User {i}")
        started = time.monotonic()
        rates, codes = [], []
        if interrupt:
            code, rate = await sync(db, slack, per_minute, stop_when=int(args.deals * STOP_AT))
            codes.append(code)
            rates.append((rate, len(slack.created_at)))
            print(f"{name}: stopped with {len(slack.created_at)} rooms made; resuming", file=sys.stderr, flush=True)
        made = len(slack.created_at)
        code, rate = await sync(db, slack, per_minute)
        codes.append(code)
        rates.append((rate, len(slack.created_at) - made))
        elapsed = time.monotonic() - started
        result = outcome(db, slack, args.deals)
    weighted = sum(r * n for r, n in rates) / max(1, sum(n for _, n in rates))
    return {**result, "rate": weighted, "share": weighted / limit_per_s(args), "seconds": elapsed, "codes": codes}


def limit_per_s(args: argparse.Namespace) -> float:
    return TIER2_PER_MINUTE * args.speedup / 60


def report(args: argparse.Namespace, baseline: dict[str, Any], paced: dict[str, Any]) -> None:
    print(f"Deal-room backfill: {args.deals} qualifying deals, `dealbot rooms sync`, Slack's Tier 2 "
          f"(20 a minute) sped up {args.speedup}x: {limit_per_s(args):.2f} creations/s allowed")
    print(f"{'':34}{'baseline (unpaced)':>20}{'paced, stopped + resumed':>28}")
    rows = [("rooms created", "rooms", "{:,}"), ("rooms active in the database", "active", "{:,}"),
            ("creations per second", "rate", "{:.2f}"), ("  as a share of the limit", "share", "{:.2f}"),
            ("answers 429 from Slack", "429", "{:,}"), ("duplicate channels", "duplicates", "{:,}"),
            ("rooms not staffed", "unstaffed", "{:,}"), ("rooms without a pinned card", "unpinned", "{:,}"),
            ("wall time, s", "seconds", "{:.1f}")]
    for label, key, fmt in rows:
        print(f"{label:34}{fmt.format(baseline[key]):>20}{fmt.format(paced[key]):>28}")
    print(f"exit codes: baseline {baseline['codes']}, paced {paced['codes']} (130 = stopped by Ctrl-C)")
    ok = (paced["share"] >= TARGET_SHARE and paced["429"] == 0 and paced["duplicates"] == 0
          and paced["rooms"] == args.deals and not paced["unstaffed"] and not paced["unpinned"])
    print(f"target (paced: share >= {TARGET_SHARE}, no 429, no duplicate, all staffed and pinned): "
          f"{'met' if ok else 'MISSED'}")


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="dealbot-rooms-") as name:
        tmp = Path(name)
        seeded = tmp / "seeded.db"
        await load_crm(seeded, args.deals, random.Random(args.seed))
        print("CRM loaded; baseline run...", file=sys.stderr, flush=True)
        baseline = await one_run(seeded, tmp, "baseline", args, per_minute=1e6, interrupt=False)
        print("paced run...", file=sys.stderr, flush=True)
        paced = await one_run(seeded, tmp, "paced", args, per_minute=TIER2_PER_MINUTE * args.speedup, interrupt=True)
    report(args, baseline, paced)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deals", type=int, default=500, help="qualifying deals in the CRM (default 500)")
    parser.add_argument("--speedup", type=float, default=20, help="how much faster than Slack's clock (default 20)")
    parser.add_argument("--seed", type=int, default=7)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
