"""Benchmark: weekly manager digests (issue 8) for 1,000 managers over a large SQLite store.

Run from the repository root with the project's virtualenv::

    python benchmarks/digests.py                          # 1,000 managers, 100k deals, 1M entries
    python benchmarks/digests.py --quick                  # 100 managers, 10k deals, 100k entries
    python benchmarks/digests.py --db /tmp/digests.db     # keep the database; the next run reuses it
    python benchmarks/digests.py --db /tmp/digests.db --concurrency 1,4

(``python -m benchmarks.digests`` works the same.)

What it does:

1. *dataset*: in a child process (so that its memory is not counted below), creates a SQLite file
   with ``Store.open`` (all migrations, so migration 0004's full-text triggers run on every
   timeline entry, as in production) and loads, from a seeded ``random.Random``: an org of one
   CRO, VPs, directors and first-line managers (1 + 9 + 90 + 900 for 1,000 managers), each
   first-line manager with 7-13 reps, time zones from a small set; accounts; `--opportunities`
   deals, 97 % owned by reps, the rest by managers (stage, amount, USD/EUR, close date -- one
   open deal in ten closing in the next 14 days -- and open/won/lost mixes), deal teams on 4 % of
   them; deal rooms for 3 % (a sixth of them opened in the last week); opportunity history for
   the last 90 days (stage, amount, close date, status and owner changes, 30 % of them in the last week,
   close dates slipping up to four times), each with the timeline entry the sync writes beside it;
   and as many notes, decisions and action items as make `--entries` timeline entries over the
   last 90 days (40 % of decisions and action items captured from Slack with a permalink, 3 %
   retracted; some deals quiet for weeks). Rows go in with Core ``insert(table)`` executemany, 50,000
   per statement and 200,000 per transaction, in time order. The cost of the search triggers is
   measured on the first 50,000 entries against a copy of the table without them. With `--db` the
   file is kept, with its parameters beside it (``<db>.params.json``), and reused when they match;
   "now" is a fixed instant (`NOW`), so a kept database stays valid and runs stay comparable;
2. *baseline*: the team pipeline query alone (the first query of every digest: open deals of the
   manager's reporting tree by stage) for every manager, in its own session, as the yardstick;
3. *digests*: for every manager, in a seeded random order, the weekly digest for the 7 days ending
   at `NOW` exactly as the sender builds it (`handlers.digest.build`: every content query and the
   `Reply`), rendered to Block Kit (`bot.slack.render.render`) and its chart drawn
   (`bot.digests.Digests.chart`: `chart_bars` and `pipelinechart` in a worker thread, for every
   digest that says something). Each manager's "last digest" snapshot is their current pipeline
   with every amount moved by up to 15 % (a twelfth of the stages then empty, 5 % of managers on
   their first digest), so charts have both series as they do from the second week on. With
   `--concurrency 1,4` the pass runs once per level, that many digests at a time. The garbage
   collector is set up as `dealbot serve` does it (``bot.server._settle_memory``: start-up objects
   frozen, young collections less often) before the first chart, so matplotlib, imported by the
   first chart, stays in the collector's sight as in the server.

It prints the build time, then per digest (ms) p50/p99/max of content, render, chart and their sum,
the same for the baseline and the ratio, a breakdown by level (CRO … first-line manager, where
the size of the reporting tree shows), the wall time of each pass and the peak RSS of this
process, and verdicts against the targets: all digests in <= 60 s, memory < 1 GiB. The run is a
measurement: it exits 0 whatever the verdicts. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import JSON, MetaData, Table, func, insert, select, text  # noqa: E402

from benchmarks.lookup import percentile  # noqa: E402
from bot.digests import Digests  # noqa: E402
from bot.server import _settle_memory  # noqa: E402
from bot.slack.render import render  # noqa: E402
from crm_store import Store  # noqa: E402
from crm_store.deals import stage_lines  # noqa: E402
from crm_store.digest_content import Window, _Queries  # noqa: E402
from crm_store.models import (  # noqa: E402
    Account,
    DealRoom,
    DealTeamMember,
    Opportunity,
    OpportunityHistory,
    TimelineEntry,
    User,
)
from crm_store.sample_names import company_name, deal_name, person_name  # noqa: E402
from crm_store.stages import DEFAULT_STAGES  # noqa: E402
from handlers.digest import build  # noqa: E402
from handlers.digest_schedule import DigestSettings  # noqa: E402

GENERATOR = 1  # bump when the generated data changes, so that a kept --db is not reused by mistake
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc)  # a Monday, 08:00 UTC: the weekly window ends here
WINDOW = Window(NOW - timedelta(days=7), NOW)
HISTORY_DAYS = 90
RECENT_DAYS = 7
RECENT_SHARE = 0.33  # of history rows, in the last week (when the deal was active then)
CHUNK = 50_000
PER_TRANSACTION = 200_000
TARGET_S = 60.0
TARGET_RSS_MIB = 1024.0
FULL = {"managers": 1_000, "opportunities": 100_000, "entries": 1_000_000}
QUICK = {"managers": 100, "opportunities": 10_000, "entries": 100_000}

STAGES = tuple(DEFAULT_STAGES)
STAGE_WEIGHTS = (22, 22, 18, 16, 12, 10)
ZONES = ("America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/London", "Europe/Berlin",
         "Asia/Singapore", None)
LEVELS = ("CRO", "VP", "director", "first-line")
TEAM_ROLES = ("SE", "Solutions Engineer", "CSM", "Overlay")
PROBABILITIES = (5, 10, 25, 40, 60, 80, 95)

TOPICS = ("pricing", "security review", "the MSA", "the DPA", "SSO", "procurement", "the renewal", "the pilot",
          "onboarding", "the SOW", "legal redlines", "the budget", "seat count", "the integration", "the POC",
          "data residency", "the SLA", "payment terms", "the roadmap", "the rollout plan", "the quote")
WHEN = ("today", "tomorrow", "this week", "by Friday", "next week", "before the QBR", "end of month")
NOTES = ("Call with {p}: went through {t1} and {t2}.", "{p} asked about {t1}; sent the deck on {t2}.",
         "Met {p} on site, {t1} is their main concern.", "Emailed {p} the follow-up on {t1}.",
         "{p} says {t1} is with their legal team; {t2} next.", "Demo for {p}'s team went well, questions on {t1}.")
DECISIONS = ("Decision: we go with {t1} and move {t2} to phase two.",
             "Agreed with {p}: {pct}% discount on {n} seats if signed {w}.",
             "Decision: {p} signs off on {t1}; {t2} deferred.", "We drop {t1} from the proposal, {p} agreed.")
ACTIONS = ("{p} to send {t1} {w}.", "Follow up with {p} on {t1} {w}.", "Book a call about {t2} with {p} {w}.",
           "Prepare {t1} for {p} {w}.", "Chase {p} about {t2} {w}.")
HUMAN_KINDS = ("note",) * 11 + ("decision",) * 4 + ("action_item",) * 5
SYNC_KIND = {"stage": "stage_change", "amount": "amount_change", "close_date": "close_date_change",
             "owner": "owner_change"}


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)



def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass(frozen=True, slots=True)
class Params:
    managers: int
    opportunities: int
    entries: int
    seed: int
    generator: int = GENERATOR
    now: str = NOW.isoformat()


def org_shape(managers: int) -> tuple[int, int, int]:
    """VPs, directors and first-line managers under the CRO, fanning out as 1 + 9 + 90 + 900."""
    vps = max(1, round(managers * 0.009))
    directors = max(1, round(managers * 0.09))
    return vps, directors, managers - 1 - vps - directors


# -- the dataset (built in a child process) -----------------------------------------------------------

@dataclass(slots=True)
class Deal:
    owner: int
    status: str
    stage: int
    amount: Decimal
    close: date
    created_days: float  # days before NOW
    closed_days: float | None
    lo: float  # activity (timeline entries, history) happens between lo and hi days before NOW
    hi: float
    weight: float  # how much activity, relative to other deals


def _stamp(days_ago: float) -> datetime:
    return NOW - timedelta(days=days_ago)


def table_of(model: Any) -> Table:
    """`model`'s table as inserted here: None in a JSON column is SQL NULL, what the ORM writes for
    an attribute left unset, rather than the JSON text 'null' Core would write."""
    table: Table = model.__table__.to_metadata(MetaData())
    for column in table.columns:
        if isinstance(column.type, JSON):
            column.type = JSON(none_as_null=True)
    return table


class Loader:
    """Core ``insert(table)`` executemany on the store's writer connection, CHUNK rows per
    statement and PER_TRANSACTION per transaction; the clock per table."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.times: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    async def load(self, label: str, table: Table, rows: Iterable[dict[str, Any]]) -> None:
        started, done = time.perf_counter(), 0
        source = iter(rows)
        chunk = list(islice(source, CHUNK))
        while chunk:
            async with self.store.writer.begin() as conn:
                for _ in range(PER_TRANSACTION // CHUNK):
                    await conn.execute(insert(table), chunk)
                    done += len(chunk)
                    chunk = list(islice(source, CHUNK))
                    if not chunk:
                        break
            if done >= 200_000:
                progress(f"  {table.name}: {done:,} rows ({time.perf_counter() - started:.0f} s)")
        self.times[label] = self.times.get(label, 0.0) + time.perf_counter() - started
        self.counts[table.name] = self.counts.get(table.name, 0) + done

    async def trigger_probe(self, table: Table, rows: list[dict[str, Any]]) -> float:
        """Seconds to insert `rows` into a copy of `table` (same columns, constraints and indexes)
        without its triggers; the copy is dropped afterwards."""
        probe = f"probe_{table.name}"
        async with self.store.writer.begin() as conn:
            ddl = (await conn.execute(text(
                "SELECT sql FROM sqlite_master WHERE tbl_name = :t AND type IN ('table', 'index') "
                "AND sql IS NOT NULL ORDER BY type = 'index'"), {"t": table.name})).scalars().all()
            for statement in ddl:
                await conn.execute(text(statement.replace(table.name, probe)))
        copy = table.to_metadata(MetaData(), name=probe)
        started = time.perf_counter()
        async with self.store.writer.begin() as conn:
            await conn.execute(insert(copy), rows)
        seconds = time.perf_counter() - started
        async with self.store.writer.begin() as conn:
            await conn.execute(text(f"DROP TABLE {probe}"))
        return seconds


async def build_dataset(path: Path, p: Params) -> dict[str, Any]:
    """Create and fill the database at `path`; the build's figures."""
    rng = random.Random(p.seed)
    started = time.perf_counter()
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    loader = Loader(store)
    loader.times["schema"] = time.perf_counter() - started
    try:
        org = _org(rng, p.managers)
        await loader.load("org and deals", table_of(User), org.rows)
        accounts = [company_name(rng) for _ in range(max(50, p.opportunities // 40))]
        old = _stamp(700)
        await loader.load("org and deals", table_of(Account), (
            {"id": i + 1, "external_id": f"ACC-{i + 1:06d}", "name": name, "domain": None, "industry": None,
             "owner_id": rng.choice(org.reps), "merged_into_id": None, "source_updated_at": None,
             "created_at": old, "updated_at": old} for i, name in enumerate(accounts)))
        deals = [_deal(rng, org) for _ in range(p.opportunities)]
        await loader.load("org and deals", table_of(Opportunity), (
            _opportunity_row(rng, i + 1, d, accounts) for i, d in enumerate(deals)))
        await loader.load("org and deals", table_of(DealTeamMember), _team_rows(rng, org, deals))
        rooms = _rooms(rng, deals)
        await loader.load("org and deals", table_of(DealRoom), (
            _room_row(i + 1, room) for i, room in enumerate(rooms)))

        history = _history(rng, deals, org)
        await loader.load("history", table_of(OpportunityHistory), (
            {"opportunity_id": opp, "field": field, "old_value": old_v, "new_value": new_v,
             "changed_at": NOW + timedelta(seconds=at), "source": "api"} for at, opp, field, old_v, new_v in history))
        human = p.entries - len(history) - len(rooms)
        if human < 0:
            raise SystemExit(f"--entries {p.entries:,} is fewer than the {len(history) + len(rooms):,} entries "
                             "the sync and the rooms write for this many deals; give more")
        entries = _entry_rows(rng, deals, org, history, rooms, human)
        first = list(islice(entries, CHUNK))
        untriggered = await loader.trigger_probe(table_of(TimelineEntry), first)
        probe_started = time.perf_counter()
        await loader.load("timeline entries", table_of(TimelineEntry), first)
        triggered = time.perf_counter() - probe_started
        await loader.load("timeline entries", table_of(TimelineEntry), entries)
        async with store.engine.connect() as conn:
            await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    finally:
        await store.close()
    return {"times": loader.times, "counts": loader.counts, "probe_rows": len(first),
            "probe_with_triggers_s": triggered, "probe_without_triggers_s": untriggered,
            "build_s": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}


@dataclass(slots=True)
class Org:
    rows: list[dict[str, Any]]
    reps: list[int]
    managers_by_level: dict[str, list[int]]
    team_of: dict[int, list[int]]  # first-line manager -> their reps
    manager_of: dict[int, int]


def _org(rng: random.Random, managers: int) -> Org:
    vps, directors, firsts = org_shape(managers)
    if firsts < 1:
        raise SystemExit("--managers must be at least 4 (a CRO, a VP, a director and a first-line manager)")
    rows: list[dict[str, Any]] = []
    stamp = _stamp(800)
    by_level: dict[str, list[int]] = {level: [] for level in LEVELS}
    manager_of: dict[int, int] = {}
    zone_of: dict[int, str | None] = {}

    def add(level: str, role: str, boss: int | None) -> int:
        uid = len(rows) + 1
        zone = zone_of[boss] if boss is not None and rng.random() < 0.8 else rng.choice(ZONES)
        rows.append({"id": uid, "email": f"{level.replace('-', '')}{uid}@bench.test", "name": person_name(rng),
                     "role": role, "manager_id": boss, "time_zone": zone, "slack_user_id": f"U{uid:08d}",
                     "teams_aad_id": None, "erased_at": None, "created_at": stamp, "updated_at": stamp})
        zone_of[uid] = zone
        if boss is not None:
            manager_of[uid] = boss
        if role == "manager":
            by_level[level].append(uid)
        return uid

    cro = add("CRO", "manager", None)
    for _ in range(vps):
        add("VP", "manager", cro)
    for i in range(directors):
        add("director", "manager", by_level["VP"][i % vps])
    for i in range(firsts):
        add("first-line", "manager", by_level["director"][i % directors])
    reps: list[int] = []
    team_of: dict[int, list[int]] = {}
    for manager in by_level["first-line"]:
        team_of[manager] = [add("rep", "rep", manager) for _ in range(rng.randint(7, 13))]
        reps += team_of[manager]
    return Org(rows, reps, by_level, team_of, manager_of)


def _deal(rng: random.Random, org: Org) -> Deal:
    roll = rng.random()
    if roll < 0.97:
        owner = rng.choice(org.reps)
    else:
        level = rng.choices(("first-line", "director", "VP"), weights=(70, 20, 10))[0]
        owner = rng.choice(org.managers_by_level[level])
    created = rng.uniform(1, 540)
    roll = rng.random()
    status = "won" if roll < 0.12 else "lost" if roll < 0.22 else "open"
    closed: float | None = None
    if status == "open":
        stage = rng.choices(range(len(STAGES)), weights=STAGE_WEIGHTS)[0]
        roll = rng.random()
        offset = rng.randint(0, 14) if roll < 0.10 else rng.randint(-30, -1) if roll < 0.18 else rng.randint(15, 200)
        close = NOW.date() + timedelta(days=offset)
    else:
        stage = len(STAGES) - 1 if status == "won" else rng.randrange(len(STAGES))
        closed = rng.uniform(0, HISTORY_DAYS) if rng.random() < 0.5 else rng.uniform(HISTORY_DAYS, 540)
        created = max(created, closed + rng.uniform(20, 200))
        close = _stamp(closed).date()
    amount = Decimal(f"{min(5_000_000, max(1_000, round(rng.lognormvariate(10.6, 1.0), -2))):.2f}")
    hi = min(float(HISTORY_DAYS), created)
    if status != "open":
        lo, weight = min(closed or 0.0, hi), 0.4
    elif rng.random() < 0.16:  # a quiet deal: nothing logged for a few weeks
        lo, weight = min(rng.uniform(15, 45), hi), 0.6
    else:
        lo, weight = 0.0, rng.expovariate(1.0) * (0.6 + 0.15 * stage)
    if hi - lo < 0.01:
        weight = 0.0
    return Deal(owner, status, stage, amount, close, created, closed, lo, hi, weight)


def _opportunity_row(rng: random.Random, opp: int, d: Deal, accounts: list[str]) -> dict[str, Any]:
    account = rng.randrange(len(accounts))
    created = _stamp(d.created_days)
    return {"id": opp, "external_id": f"OPP-{opp:07d}", "name": deal_name(rng, accounts[account], 2026),
            "account_id": account + 1, "amount": d.amount, "currency": "EUR" if rng.random() < 0.12 else "USD",
            "stage": STAGES[d.stage],
            "probability": rng.choice(PROBABILITIES) if rng.random() < 0.1 else None, "close_date": d.close,
            "owner_id": d.owner, "status": d.status,
            "closed_at": _stamp(d.closed_days) if d.closed_days is not None else None, "source_updated_at": None,
            "created_at": created, "updated_at": _stamp(d.lo) if d.weight else created}


def _team_rows(rng: random.Random, org: Org, deals: list[Deal]) -> Iterator[dict[str, Any]]:
    for opp, d in enumerate(deals, 1):
        if rng.random() >= 0.04:
            continue
        manager = org.manager_of.get(d.owner, d.owner)
        pool = [u for u in org.team_of.get(manager, org.reps[:20]) if u != d.owner]
        for user in rng.sample(pool, min(len(pool), rng.choice((1, 1, 2)))):
            yield {"opportunity_id": opp, "user_id": user, "role": rng.choice(TEAM_ROLES),
                   "added_at": _stamp(d.created_days)}


def _rooms(rng: random.Random, deals: list[Deal]) -> list[tuple[int, str, str, float]]:
    """(deal, platform, status, created days ago) of the deals that have a room."""
    rooms = []
    for opp, d in enumerate(deals, 1):
        if rng.random() >= (0.035 if d.status == "open" else 0.015):
            continue
        newest = d.closed_days or 0.0
        if rng.random() < 0.125 and newest < RECENT_DAYS:
            age = rng.uniform(newest, min(RECENT_DAYS, d.created_days))
        else:
            age = rng.uniform(newest, max(newest, min(365, d.created_days)))
        status = "active" if d.status == "open" else rng.choice(("closed", "archived"))
        if rng.random() < 0.02:
            status = "cancelled"
        rooms.append((opp, "teams" if rng.random() < 0.15 else "slack", status, age))
    return rooms


def _room_row(room: int, r: tuple[int, str, str, float]) -> dict[str, Any]:
    opp, platform, status, age = r
    channel = f"C{opp:09d}" if platform == "slack" else f"19:{opp:09d}@thread.tacv2"
    return {"id": room, "opportunity_id": opp, "platform": platform, "channel_id": channel,
            "channel_name": f"deal-{opp}", "status": status, "pinned_message_ref": None, "conversation_ref": None,
            "created_at": _stamp(age), "archived_at": _stamp(max(0.0, age - 30)) if status == "archived" else None,
            "requested_by_id": None, "renamed_by_hand": False, "announced_through": None, "listed_absent": []}


History = tuple[float, int, str, str, str]  # (seconds from NOW, deal, field, old value, new value)


def _history(rng: random.Random, deals: list[Deal], org: Org) -> list[History]:
    """Each deal's changes in the last 90 days, chained so that the last new value is the deal's
    value now; sorted by time."""
    rows: list[History] = []
    for opp, d in enumerate(deals, 1):
        if not d.weight:
            continue

        def times(k: int) -> list[float]:
            def one() -> float:
                if d.lo < RECENT_DAYS and rng.random() < RECENT_SHARE:
                    return rng.uniform(d.lo, min(RECENT_DAYS, d.hi))
                return rng.uniform(d.lo, d.hi)
            return sorted((-one() * 86400 for _ in range(k)))

        def chain(field: str, values: list[str]) -> None:  # values oldest first, the last one is now
            for at, (old, new) in zip(times(len(values) - 1), zip(values, values[1:])):
                rows.append((at, opp, field, old, new))

        stages = [d.stage]
        for _ in range(rng.choices((0, 1, 2, 3), weights=(30, 35, 22, 13))[0]):
            back = stages[0] - 1 if rng.random() > 0.15 else stages[0] + 1
            stages.insert(0, back if 0 <= back < len(STAGES) else (stages[0] + 1) % len(STAGES))
        chain("stage", [STAGES[s] for s in stages])
        amounts = [d.amount]
        for _ in range(rng.choices((0, 1, 2), weights=(65, 25, 10))[0]):
            amounts.insert(0, Decimal(round(float(amounts[0]) * rng.uniform(0.6, 1.4), -2)))
        chain("amount", [f"{a:.2f}" for a in amounts])
        closes = [d.close]
        for _ in range(rng.choices((0, 1, 2, 3, 4), weights=(50, 27, 13, 7, 3))[0]):
            step = timedelta(days=rng.randint(7, 45))
            closes.insert(0, closes[0] - step if rng.random() < 0.85 else closes[0] + step)  # mostly slips
        chain("close_date", [c.isoformat() for c in closes])
        if d.status != "open":
            rows.append((-d.lo * 86400, opp, "status", "open", d.status))
        if rng.random() < 0.02:
            chain("owner", [str(rng.choice(org.reps)), str(d.owner)])
    rows.sort()
    return rows


def _describe(field: str, old: str | None, new: str | None) -> str:
    """The sync's text for a change (crm_store.sync._describe)."""
    if field == "status":
        return {"won": "Deal won", "lost": "Deal lost"}.get(str(new), f"Deal reopened (was {old})")
    if field == "amount":
        old, new = (f"{Decimal(v):,.2f}" if v is not None else None for v in (old, new))
    label = {"owner": "Owner", "close_date": "Close date"}.get(field, field.capitalize())
    return f"{label}: {old or '—'} → {new or '—'}"


def _entry_rows(rng: random.Random, deals: list[Deal], org: Org, history: list[History],
                rooms: list[tuple[int, str, str, float]], human: int) -> Iterator[dict[str, Any]]:
    """All timeline entries in time order: the sync's beside each history row, one per room
    created, and `human` notes, decisions and action items on deals picked by their activity."""
    stubs: list[tuple[float, int, int, int]] = [(at, opp, 0, i) for i, (at, opp, *_) in enumerate(history)]
    stubs += [(-age * 86400, opp, 1, i) for i, (opp, _, _, age) in enumerate(rooms)]
    cumulative, total = [], 0.0
    for d in deals:
        total += d.weight
        cumulative.append(total)
    for index in rng.choices(range(len(deals)), cum_weights=cumulative, k=human):
        d = deals[index]
        stubs.append((-rng.uniform(d.lo, d.hi) * 86400, index + 1, 2, 0))
    stubs.sort()
    names = [row["name"].split()[0] for row in org.rows]
    for serial, (at, opp, source, ref) in enumerate(stubs):
        when = NOW + timedelta(seconds=at)
        row: dict[str, Any] = {"opportunity_id": opp, "author_id": None, "source_platform": None, "source_ref": None,
                               "permalink": None, "data": None, "occurred_at": when, "created_at": when,
                               "retracted_at": None}
        if source == 0:
            _, _, field, old, new = history[ref]
            row["kind"] = SYNC_KIND.get(field) or str(new)
            row["text"] = _describe(field, old, new)
            row["data"] = {"field": field, "old": old, "new": new}
        elif source == 1:
            _, platform, _, _ = rooms[ref]
            row["kind"], row["text"] = "room_created", f"Deal room #deal-{opp} opened in {platform.capitalize()}"
        else:
            owner = deals[opp - 1].owner
            kind = HUMAN_KINDS[rng.randrange(len(HUMAN_KINDS))]
            template = rng.choice(NOTES if kind == "note" else DECISIONS if kind == "decision" else ACTIONS)
            row["kind"] = kind
            row["text"] = template.format(p=names[rng.randrange(len(names))], t1=rng.choice(TOPICS),
                                          t2=rng.choice(TOPICS), w=rng.choice(WHEN), pct=rng.randrange(5, 35),
                                          n=rng.randrange(20, 2000))
            row["author_id"] = owner if rng.random() < 0.85 else org.manager_of.get(owner, owner)
            if kind != "note" and rng.random() < 0.4:
                channel = f"C{opp:09d}"
                ts = f"{int(when.timestamp())}.{serial % 1_000_000:06d}"
                row["source_platform"], row["source_ref"] = "slack", f"{channel}/{ts}"
                row["permalink"] = f"https://bench.slack.com/archives/{channel}/p{ts.replace('.', '')}"
            if kind != "note" and rng.random() < 0.03:
                row["retracted_at"] = min(NOW, when + timedelta(hours=rng.uniform(1, 48)))
        yield row


def _build_in_child(path: str, params: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(build_dataset(Path(path), Params(**params)))


def dataset(path: Path, p: Params, rebuild: bool) -> tuple[dict[str, Any], bool]:
    """Build the database at `path` in a child process, or reuse it when it was built with the same
    parameters; the build's figures (those of the first run when reused) and whether it was reused."""
    sidecar = path.with_name(path.name + ".params.json")
    if rebuild:
        for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"), sidecar):
            stale.unlink(missing_ok=True)
    if path.exists():
        kept = json.loads(sidecar.read_text()) if sidecar.exists() else None
        if kept is None or kept.get("params") != asdict(p):
            raise SystemExit(f"{path} was built with other parameters ({kept and kept.get('params')}); "
                             "give --rebuild or another --db")
        return kept["build"], True
    progress(f"building {path} ({p.managers:,} managers, {p.opportunities:,} deals, {p.entries:,} entries) …")
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        built = pool.submit(_build_in_child, str(path), asdict(p)).result()
    sidecar.write_text(json.dumps({"params": asdict(p), "build": built}, indent=1))
    return built, False


# -- the measurement --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Manager:
    id: int
    level: str
    time_zone: str | None
    deals: int  # in their reporting tree, any status


@dataclass(frozen=True, slots=True)
class Timing:
    manager: Manager
    content_ms: float
    render_ms: float
    chart_ms: float
    blocks: int
    png_bytes: int
    lists: tuple[int, ...]  # totals of moved, won, lost, amounts, slipped, captured, stale, closing, rooms

    @property
    def total_ms(self) -> float:
        return self.content_ms + self.render_ms + self.chart_ms


@dataclass(frozen=True, slots=True)
class Pass:
    concurrency: int
    wall_s: float
    timings: list[Timing]
    rss_mib: float


LIST_NAMES = ("moved", "won", "lost", "amounts", "slipped", "captured", "stale", "closing", "rooms")


async def managers_of(store: Store) -> list[Manager]:
    """Every manager with their level (depth below the top) and the size of their tree."""
    async with store.session() as s:
        users = (await s.execute(select(User.id, User.manager_id, User.role, User.time_zone))).all()
        owned = dict((await s.execute(select(Opportunity.owner_id, func.count())
                                      .group_by(Opportunity.owner_id))).tuples().all())
    children: dict[int | None, list[int]] = {}
    for uid, boss, _, _ in users:
        children.setdefault(boss, []).append(uid)
    deals: dict[int, int] = {}

    def tree(uid: int) -> int:
        deals[uid] = owned.get(uid, 0) + sum(tree(child) for child in children.get(uid, []))
        return deals[uid]

    depth: dict[int, int] = {}
    for root in children.get(None, []):
        tree(root)
        stack = [(root, 0)]
        while stack:
            uid, level = stack.pop()
            depth[uid] = level
            stack += [(child, level + 1) for child in children.get(uid, [])]
    return [Manager(uid, LEVELS[min(depth[uid], len(LEVELS) - 1)], zone, deals[uid])
            for uid, _, role, zone in users if role == "manager"]


def last_snapshot(rows: Sequence[Any], rng: random.Random) -> dict[str, Any] | None:
    """A believable "last digest" snapshot from the pipeline now (see the module note)."""
    if rng.random() < 0.05:
        return None
    lines, _ = stage_lines(rows)
    cent = Decimal("0.01")
    out = []
    for line in lines:
        if rng.random() < 1 / 12:
            continue
        factor = Decimal(str(round(rng.uniform(0.85, 1.15), 3)))
        out.append([line.stage, line.currency, max(1, line.count + rng.randint(-3, 3)),
                    str((line.amount * factor).quantize(cent)), str((line.weighted * factor).quantize(cent))])
    return {"lines": out}


async def baseline(store: Store, managers: Sequence[Manager], settings: DigestSettings,
                   rng: random.Random) -> tuple[list[float], dict[int, dict[str, Any] | None]]:
    """The pipeline query alone per manager (ms), and each manager's "last digest" snapshot."""
    latencies: list[float] = []
    snapshots: dict[int, dict[str, Any] | None] = {}
    for m in managers:
        started = time.perf_counter()
        async with store.session() as s:
            rows = (await s.execute(_Queries(m.id, WINDOW, settings.content).pipeline())).all()
        latencies.append((time.perf_counter() - started) * 1000)
        snapshots[m.id] = last_snapshot(rows, rng)
    return latencies, snapshots


async def one_digest(store: Store, sender: Digests, m: Manager, previous: dict[str, Any] | None) -> Timing:
    """What the sender does for one digest, minus the platform calls: build, render, chart."""
    started = time.perf_counter()
    built = await build(store, m.id, WINDOW, sender.settings, time_zone=m.time_zone, previous=previous)
    built_at = time.perf_counter()
    message = render(built.reply)
    rendered_at = time.perf_counter()
    chart = await sender.chart(built)  # chart_bars, then pipelinechart in a worker thread
    charted_at = time.perf_counter()
    d = built.data
    lists = tuple(getattr(d, name).total for name in LIST_NAMES)
    return Timing(m, (built_at - started) * 1000, (rendered_at - built_at) * 1000, (charted_at - rendered_at) * 1000,
                  len(message.blocks), len(chart.png) if chart else 0, lists)


async def digest_pass(store: Store, sender: Digests, managers: Sequence[Manager],
                      snapshots: dict[int, dict[str, Any] | None], concurrency: int) -> Pass:
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(m: Manager) -> Timing:
        nonlocal done
        async with gate:
            timing = await one_digest(store, sender, m, snapshots[m.id])
        done += 1
        if done % 200 == 0:
            progress(f"  {done:,} digests ({time.perf_counter() - started:.0f} s)")
        return timing

    gc.collect()
    started = time.perf_counter()
    timings = await asyncio.gather(*(one(m) for m in managers))
    return Pass(concurrency, time.perf_counter() - started, list(timings), peak_rss_mib())


def _row(label: str, samples: Sequence[float]) -> str:
    return (f"{label:<34}{percentile(samples, 50):>9.1f}{percentile(samples, 99):>9.1f}{max(samples):>9.1f}"
            f"{sum(samples) / 1000:>10.1f}")


def report(p: Params, path: Path, built: dict[str, Any], reused: bool, base_ms: list[float],
           passes: list[Pass]) -> None:
    managers = [t.manager for t in passes[0].timings]
    shape = ", ".join(f"{sum(1 for m in managers if m.level == level):,} {level}" for level in LEVELS)
    size = sum(f.stat().st_size for f in path.parent.glob(path.name + "*") if not f.name.endswith(".json")) / 1e6
    print(f"Manager digests (SQLite): {p.managers:,} managers ({shape}), {p.opportunities:,} deals, "
          f"{p.entries:,} timeline entries; database {size:,.0f} MB")
    counts, times = built["counts"], built["times"]
    print(f"dataset{f' (reused {path}; figures of the run that built it)' if reused else ''}: seed {p.seed}, built in "
          f"{built['build_s']:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
          + f"); peak RSS of the build {built['peak_rss_mib']:,.0f} MiB")
    print(f"  rows: {counts['users']:,} users, {counts['accounts']:,} accounts, {counts['opportunities']:,} deals, "
          f"{counts['deal_team_members']:,} deal-team members, {counts['deal_rooms']:,} deal rooms, "
          f"{counts['opportunity_history']:,} history rows, {counts['timeline_entries']:,} timeline entries")
    with_t, without_t = built["probe_with_triggers_s"], built["probe_without_triggers_s"]
    share = 1 - without_t / with_t if with_t else 0.0
    print(f"  search triggers: the first {built['probe_rows']:,} entries took {with_t:.1f} s, {without_t:.1f} s "
          f"into a copy of the table without triggers: {share:.0%} of the entry load is the full-text index"
          f" (about {times['timeline entries'] * share:.0f} s of {times['timeline entries']:.0f} s)")
    print(f"window: the 7 days to {NOW:%a %d %b %Y %H:%M} UTC; Options {DigestSettings().content}")

    for run in passes:
        t = run.timings
        print(f"\nconcurrency {run.concurrency}: {len(t):,} digests in {run.wall_s:.1f} s wall "
              f"({len(t) / run.wall_s:.1f} digests/s)")
        print(f"{'per digest (ms)':<34}{'p50':>9}{'p99':>9}{'max':>9}{'sum s':>10}")
        print(_row("content (build: queries + Reply)", [x.content_ms for x in t]))
        print(_row("render (Block Kit)", [x.render_ms for x in t]))
        print(_row("chart (PNG)", [x.chart_ms for x in t]))
        print(_row("digest (all three)", [x.total_ms for x in t]))
        if run is passes[0]:
            print(_row("baseline: pipeline query alone", base_ms))
            ratio = percentile([x.content_ms for x in t], 50) / percentile(base_ms, 50)
            share = sum(base_ms) / sum(x.content_ms for x in t)
            print(f"content p50 is {ratio:.1f}x the baseline p50; "
                  f"the pipeline query is {share:.0%} of all content time")
        charts = [x.png_bytes for x in t if x.png_bytes]
        print(f"messages: {statistics.mean(x.blocks for x in t):.0f} blocks on average, {len(charts):,} charts"
              + (f" of {statistics.mean(charts) / 1000:.1f} KB on average" if charts else ""))

    first = passes[0].timings
    print(f"\nby level, concurrency {passes[0].concurrency} (ms)")
    print(f"{'level':<12}{'managers':>9}{'deals in tree':>15}{'content p50':>13}{'max':>9}{'digest p50':>12}{'max':>9}"
          f"{'sum s':>8}")
    for level in LEVELS:
        rows = [x for x in first if x.manager.level == level]
        if not rows:
            continue
        content, total = [x.content_ms for x in rows], [x.total_ms for x in rows]
        print(f"{level:<12}{len(rows):>9,}{statistics.median(x.manager.deals for x in rows):>15,.0f}"
              f"{statistics.median(content):>13.1f}{max(content):>9.1f}{statistics.median(total):>12.1f}"
              f"{max(total):>9.1f}{sum(total) / 1000:>8.1f}")
    flm = [x.lists for x in first if x.manager.level == "first-line"]
    if flm:
        print("a first-line manager's lists (median total): " + ", ".join(
            f"{name} {statistics.median(lists[i] for lists in flm):g}" for i, name in enumerate(LIST_NAMES)))

    full = (p.managers, p.opportunities, p.entries) == tuple(FULL.values())

    def verdict(ok: bool) -> str:  # the targets are set for the full size; other sizes get "info"
        return ("PASS" if ok else "FAIL") if full else "info"

    print()
    for run in passes:
        p99 = percentile([x.total_ms for x in run.timings], 99)
        print(f"{verdict(run.wall_s <= TARGET_S)}: all {len(run.timings):,} digests in {run.wall_s:.1f} s at "
              f"concurrency {run.concurrency} (target <= {TARGET_S:.0f} s); p99 per digest {p99:.0f} ms")
    rss = max(run.rss_mib for run in passes)
    print(f"{verdict(rss < TARGET_RSS_MIB)}: memory: peak RSS {rss:,.0f} MiB (target < 1 GiB)")


async def measure(path: Path, p: Params, built: dict[str, Any], reused: bool, levels: Sequence[int]) -> None:
    rng = random.Random(p.seed + 1)
    with path.open("rb") as db:  # into the OS cache, as on a server that has been running
        while db.read(1 << 24):
            pass
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    try:
        settings = DigestSettings()
        sender = Digests(store, settings, {})
        managers = await managers_of(store)
        rng.shuffle(managers)
        _settle_memory()  # the server's garbage-collector set-up, made before its first digest as there
        progress("warming up (imports, statement caches) …")
        for m in managers[:3]:
            await one_digest(store, sender, m, None)
        progress(f"baseline: the pipeline query for {len(managers):,} managers …")
        gc.collect()
        base_ms, snapshots = await baseline(store, managers, settings, rng)
        passes = []
        for level in levels:
            progress(f"digests for {len(managers):,} managers, {level} at a time …")
            passes.append(await digest_pass(store, sender, managers, snapshots, level))
    finally:
        await store.close()
    report(p, path, built, reused, base_ms, passes)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100 managers, 10k deals, 100k entries")
    parser.add_argument("--managers", type=int, help=f"default {FULL['managers']:,}")
    parser.add_argument("--opportunities", type=int, help=f"default {FULL['opportunities']:,}")
    parser.add_argument("--entries", type=int, help=f"timeline entries; default {FULL['entries']:,}")
    parser.add_argument("--concurrency", default="1",
                        type=lambda value: [int(part) for part in value.split(",") if part.strip()],
                        help="digests at a time; several (1,4) run one pass each (default 1)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--db", type=Path, help="keep the database here, and reuse it when the parameters match")
    parser.add_argument("--rebuild", action="store_true", help="with --db: build it again even if it matches")
    parser.add_argument("--tmp", help="directory for the temporary database (without --db)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.managers, args.opportunities, args.entries) < 1 or not args.concurrency or min(args.concurrency) < 1:
        parser.error("sizes and --concurrency must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    p = Params(args.managers, args.opportunities, args.entries, args.seed)
    with tempfile.TemporaryDirectory(prefix="dealbot-digests-", dir=args.tmp) as tmp:
        path = args.db.resolve() if args.db else Path(tmp) / "digests.db"
        built, reused = dataset(path, p, args.rebuild)
        asyncio.run(measure(path, p, built, reused, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
