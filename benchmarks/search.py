"""Benchmark: `/crm search` over 1,000,000 transcript messages and 200,000 timeline entries (SQLite).

Run from the repository root with the project's virtualenv::

    python benchmarks/search.py                                   # full size; about five minutes
    python benchmarks/search.py --messages 100000 --entries 20000 --queries 100   # a quick run

What it does:

1. *build*: creates a fresh SQLite database with ``Store.open`` (so migration 0004's FTS5 tables
   and triggers are there) and loads an organisation (an admin, a VP, 20 managers each with 10
   reps and one sales engineer), `--opportunities` deals owned by the reps (a quarter of them
   with their team's engineer on the deal team), a deal room per deal, then `--messages`
   transcript messages and `--entries` timeline entries with deal-room vocabulary (templates
   filled from word lists: common words such as "pricing" in a few percent of the messages,
   names, companies and ticket numbers rare). Rows go in with big ``executemany`` inserts, 50,000
   per transaction, and the search triggers run for every row, exactly as in production;
2. *search*: runs `--queries` queries of 1–3 words (common, middling and rare words, and
   mixtures) through the real command path -- the shell adapter's `Dispatcher`, parsing,
   visibility, ranking, snippets and the `Reply` -- as a rep (owner of 1/200 of the deals), their
   manager (10 reps and an engineer), the team's sales engineer (on the deal teams of a quarter
   of the team's deals, owner of none) and an admin, and prints p50/p99 latency per role.
   Beside it, measured in the same run for the same people: the same store function kept to one
   of their deals (the fixed cost of a search), and a ``/crm find`` of a deal name (the fuzzy
   lookup people already use).

It prints the build time, the database size (and the part that is the full-text index), the
latencies, and a verdict against the target: p99 <= 50 ms for every role. The run is a
measurement: it exits 0 whatever the verdict. Progress goes to stderr, results to stdout.

`run()` runs the phases named in `PHASES` on one built database: `search`, then `capture`
(deal-room message events at 600/s for 30 s through ``POST /slack/events`` of a real `dealbot
serve` on the same file, see benchmarks/capture_events.py; target >= 500 messages/s, none lost).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select, text  # noqa: E402

from benchmarks import capture_events  # noqa: E402
from benchmarks.lookup import percentile  # noqa: E402
from bot.shell import ShellAdapter  # noqa: E402
from crm_store import Actor, Store  # noqa: E402
from crm_store.models import (  # noqa: E402
    Account,
    DealRoom,
    DealTeamMember,
    Opportunity,
    TimelineEntry,
    TranscriptMessage,
    User,
)
from crm_store.sample_names import FIRST, company_name  # noqa: E402
from crm_store.search import search  # noqa: E402

CHUNK = 50_000
MANAGERS = 20
REPS_PER_MANAGER = 10
TARGET_P99_MS = 50.0
START = datetime(2025, 1, 1, tzinfo=timezone.utc)
SPAN = timedelta(days=700)
STAGES = ["Prospecting", "Qualification", "Discovery", "Proposal", "Negotiation", "Commit"]

# -- deal-room vocabulary --------------------------------------------------------------------------

TOPICS = """pricing security review contract legal procurement budget renewal discount proposal
demo pilot rollout integration onboarding timeline kickoff stakeholder champion sponsor invoice
payment terms seats licenses expansion upsell risk blocker redlines MSA SOW DPA NDA GDPR SOC2 audit
questionnaire architecture SSO SAML Okta API migration sandbox production support SLA uptime
escalation forecast negotiation discovery training workshop POC evaluation requirements scope
amendment liability indemnity warranty termination uplift roadmap dashboard reporting analytics
connector Salesforce HubSpot Snowflake webhook latency throughput failover encryption backup
retention residency subprocessor pentest vulnerability insurance W-9 vendor portal PO approval
signature countersigned quote discount tier volume commitment prepay milestone acceptance""".split()
STATUS = ["is blocked", "is done", "slipped a week", "looks good", "needs another pass", "is with legal",
          "is waiting on them", "got approved", "was rejected", "is scheduled", "is on track", "is at risk"]
ACTIONS = ["send", "review", "update", "sign", "schedule", "share", "chase", "prepare", "confirm", "escalate"]
WHEN = ["today", "tomorrow", "this week", "next week", "by Friday", "before the QBR", "end of month",
        "after the holidays", "on Monday", "in Q3"]
CHATTER = ["Thanks {name}!", "Sounds good.", "On it.", "Joining in 5.", "+1", "Can someone take notes?",
           "Great call today, thanks all.", "Looping in {name}.", "Who owns this?", "Let's sync tomorrow."]
TEMPLATES = [
    "{name} said the {t1} {status} {when}.",
    "Can we {action} the {t1} {when}? {company} is asking about {t2}.",
    "Quick update on {t1}: {name} from {company} wants the {t2} {when}.",
    "I'll {action} the {t1} and {t2} {when} and loop in {name}.",
    "{company} wants {n} seats with {pct}% discount if we {action} the {t1} {when}.",
    "Ticket {code} is blocking the {t1}; {name} is looking into the {t2}.",
    "Call notes: {t1}, {t2} and {t3}. Next steps: {name} to {action} the {t1} {when}.",
    "The {t1} {status}. {t2} {status2}.",
    "Heads up: {company} moved the {t1} to {when}, {t2} {status}.",
    "Do we have the {t1} for {company}? {name} needs it for the {t2}.",
]
ENTRY_TEMPLATES = {
    "decision": "Decision: {company} goes with the {t1} and {t2}; {pct}% discount on {n} seats.",
    "action_item": "Action: {name} to {action} the {t1} {when}.",
    "note": "{name} confirmed the {t1}; {t2} {status}.",
    "stage_change": "Stage: {s1} → {s2}",
    "amount_change": "Amount: ${a1},000 → ${a2},000",
    "close_date_change": "Close date moved {when} because the {t1} {status}.",
}
ENTRY_KINDS = (["decision"] * 20 + ["action_item"] * 15 + ["note"] * 25 + ["stage_change"] * 25
               + ["amount_change"] * 10 + ["close_date_change"] * 5)


class Words:
    """Fills templates; topic words follow a Zipf curve, so a few are common and most are not."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        topics = TOPICS[:]
        self.rng.shuffle(topics)
        self.topics = topics
        self.weights = [1 / (rank + 1) ** 0.8 for rank in range(len(topics))]
        self.companies = [company_name(self.rng).split(" ")[0] for _ in range(3000)]
        self.names = list(FIRST)

    def topic(self, k: int) -> list[str]:
        return self.rng.choices(self.topics, weights=self.weights, k=k)

    def fill(self, template: str) -> str:
        rng = self.rng
        t1, t2, t3 = self.topic(3)
        return template.format(
            name=rng.choice(self.names), company=rng.choice(self.companies), t1=t1, t2=t2, t3=t3,
            status=rng.choice(STATUS), status2=rng.choice(STATUS), action=rng.choice(ACTIONS),
            when=rng.choice(WHEN), n=rng.randrange(10, 5000), pct=rng.randrange(5, 40),
            code=f"{rng.choice(['JIRA', 'SUP', 'INV', 'PO'])}-{rng.randrange(10_000, 99_999)}",
            s1=rng.choice(STAGES), s2=rng.choice(STAGES), a1=rng.randrange(50, 900), a2=rng.randrange(50, 900))

    def message(self) -> str:
        if self.rng.random() < 0.15:
            return self.rng.choice(CHATTER).format(name=self.rng.choice(self.names))
        return self.fill(self.rng.choice(TEMPLATES))

    def entry(self, kind: str) -> str:
        return self.fill(ENTRY_TEMPLATES[kind])

    def queries(self, count: int) -> list[str]:
        """1–3 words: common topics (top 15), middling ones, rare (names, companies, ticket numbers), mixed."""
        rng = self.rng
        common, middling = self.topics[:15], self.topics[15:]

        def rare() -> str:
            return rng.choice([rng.choice(self.names), rng.choice(self.companies), str(rng.randrange(10_000, 99_999))])

        makers: list[Callable[[], list[str]]] = [
            lambda: [rng.choice(common)],
            lambda: rng.sample(common, 2),
            lambda: [rng.choice(middling)],
            lambda: [rng.choice(common), rng.choice(middling)],
            lambda: [rare()],
            lambda: [rare(), rng.choice(common)],
            lambda: rng.sample(common, 2) + [rng.choice(middling)],
            lambda: [rng.choice(middling), rare(), rng.choice(common)],
        ]
        return [" ".join(rng.choice(makers)()) for _ in range(count)]


# -- the database ---------------------------------------------------------------------------------

@dataclass
class Bench:
    """A built database and who is in it."""

    store: Store
    path: Path
    people: dict[str, Actor]  # role -> a typical person in it
    deals_of: dict[str, list[int]]  # role -> ids of deals that person may see (for the baseline)
    deal_names: list[str]
    words: Words
    build_s: dict[str, float] = field(default_factory=dict)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def at(i: int, n: int) -> datetime:
    return START + SPAN * (i / max(n, 1))


async def build(path: Path, opportunities: int, messages: int, entries: int, seed: int) -> Bench:
    words = Words(seed)
    rng = random.Random(seed + 1)
    times: dict[str, float] = {}
    started = time.perf_counter()
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    stamp = START
    async with store.transaction() as s:
        admin = User(email="admin@bench.test", name="Ada Admin", role="admin")
        vp = User(email="vp@bench.test", name="Victor VP", role="manager")
        s.add_all([admin, vp])
        await s.flush()
        reps: list[int] = []
        engineers: dict[int, int] = {}  # manager -> their team's engineer
        manager_of: dict[int, int] = {}
        first_manager = None
        for m in range(MANAGERS):
            manager = User(email=f"mgr{m}@bench.test", name=f"Manager {m}", role="manager", manager_id=vp.id)
            s.add(manager)
            await s.flush()
            first_manager = first_manager or manager.id
            engineer = User(email=f"se{m}@bench.test", name=f"Engineer {m}", role="rep", manager_id=manager.id)
            s.add(engineer)
            await s.flush()
            engineers[manager.id] = engineer.id
            for r in range(REPS_PER_MANAGER):
                rep = User(email=f"rep{m}-{r}@bench.test", name=f"{rng.choice(words.names)} Rep{m}-{r}",
                           role="rep", manager_id=manager.id)
                s.add(rep)
                await s.flush()
                reps.append(rep.id)
                manager_of[rep.id] = manager.id
        accounts = [{"external_id": f"A{i}", "name": f"{words.companies[i % len(words.companies)]} {i}",
                     "created_at": stamp, "updated_at": stamp} for i in range(max(opportunities // 10, 1))]
        await s.execute(insert(Account), accounts)
        account_ids = list((await s.execute(select(Account.id))).scalars())
        deal_names = [f"{words.companies[i % len(words.companies)]} {rng.choice(['Renewal', 'Expansion', 'Pilot', 'Platform', 'New Logo'])} {i}"
                      for i in range(opportunities)]
        await s.execute(insert(Opportunity), [
            {"external_id": f"O{i}", "name": deal_names[i], "account_id": account_ids[i % len(account_ids)],
             "owner_id": reps[i % len(reps)], "amount": 100_000 + i, "currency": "USD", "stage": rng.choice(STAGES),
             "status": "open", "created_at": stamp, "updated_at": stamp} for i in range(opportunities)])
        opp_ids = list((await s.execute(select(Opportunity.id).order_by(Opportunity.id))).scalars())
        owner = {opp: reps[i % len(reps)] for i, opp in enumerate(opp_ids)}
        team = [(opp, engineers[manager_of[owner[opp]]]) for opp in opp_ids if rng.random() < 0.25]
        if team:
            await s.execute(insert(DealTeamMember), [{"opportunity_id": opp, "user_id": user, "role": "SE"}
                                                     for opp, user in team])
        await s.execute(insert(DealRoom), [
            {"opportunity_id": opp, "platform": "slack", "channel_id": f"C{opp:07d}", "channel_name": f"deal-{opp}",
             "status": "active", "created_at": stamp} for opp in opp_ids])
        room_of = dict((await s.execute(select(DealRoom.opportunity_id, DealRoom.id))).tuples().all())
    times["org and deals"] = time.perf_counter() - started

    progress(f"loading {messages:,} messages …")
    started = time.perf_counter()
    for start in range(0, messages, CHUNK):
        rows = []
        for i in range(start, min(start + CHUNK, messages)):
            opp = opp_ids[rng.randrange(len(opp_ids))]
            when = at(i, messages)
            ref = f"{int(when.timestamp())}.{i % 1_000_000:06d}"
            channel = f"C{opp:07d}"
            rows.append({"deal_room_id": room_of[opp], "opportunity_id": opp, "platform": "slack",
                         "channel_id": channel, "message_ref": ref, "author_id": owner[opp], "text": words.message(),
                         "permalink": f"https://bench.slack.com/archives/{channel}/p{ref.replace('.', '')}",
                         "posted_at": when})
        async with store.transaction(renames=False) as s:
            await s.execute(insert(TranscriptMessage), rows)
        progress(f"  {min(start + CHUNK, messages):,} messages ({time.perf_counter() - started:.0f} s)")
    times["messages"] = time.perf_counter() - started

    progress(f"loading {entries:,} timeline entries …")
    started = time.perf_counter()
    for start in range(0, entries, CHUNK):
        rows = []
        for i in range(start, min(start + CHUNK, entries)):
            opp = opp_ids[rng.randrange(len(opp_ids))]
            kind = rng.choice(ENTRY_KINDS)
            captured = kind in ("decision", "action_item") and rng.random() < 0.6
            rows.append({"opportunity_id": opp, "kind": kind, "text": words.entry(kind), "author_id": owner[opp],
                         "source_platform": "slack" if captured else None,
                         "source_ref": f"C{opp:07d}/{i}" if captured else None,
                         "permalink": f"https://bench.slack.com/archives/C{opp:07d}/p{i}" if captured else None,
                         "occurred_at": at(i, entries), "created_at": at(i, entries)})
        async with store.transaction(renames=False) as s:
            await s.execute(insert(TimelineEntry), rows)
    times["entries"] = time.perf_counter() - started
    async with store.engine.connect() as conn:
        await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))

    rep_id, manager_id = reps[0], first_manager
    assert manager_id is not None
    on_team = [opp for opp, user in team if user == engineers[manager_id]]
    people = {"rep": await store.actor_for(email="rep0-0@bench.test"),
              "manager": await store.actor_for(email="mgr0@bench.test"),
              "engineer": await store.actor_for(email="se0@bench.test"),
              "admin": await store.actor_for(email="admin@bench.test")}
    deals_of = {"rep": [o for o in opp_ids if owner[o] == rep_id],
                "manager": [o for o in opp_ids if manager_of[owner[o]] == manager_id],
                "engineer": on_team,
                "admin": opp_ids}
    return Bench(store, path, people, deals_of, deal_names, words, times)


def sizes(bench: Bench) -> tuple[float, float | None]:
    """Database file size and the full-text index's share of it, in MB (None without dbstat)."""
    total = sum(p.stat().st_size for p in bench.path.parent.glob(bench.path.name + "*")) / 1e6
    with sqlite3.connect(bench.path) as db:
        try:
            fts = db.execute("SELECT sum(pgsize) FROM dbstat WHERE name LIKE '%\\_fts%' ESCAPE '\\'").fetchone()[0]
        except sqlite3.OperationalError:
            return total, None
    return total, (fts or 0) / 1e6


# -- timing -------------------------------------------------------------------------------------


async def timed(calls: Sequence[Callable[[], Awaitable[Any]]], warm_up: int = 10) -> tuple[list[float], list[Any]]:
    for call in calls[:warm_up]:
        await call()
    latencies, results = [], []
    for call in calls:
        started = time.perf_counter()
        results.append(await call())
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, results


@dataclass
class RoleResult:
    role: str
    deals: int
    search_ms: list[float]
    answered: int  # queries with at least one hit
    one_deal_ms: list[float]
    find_ms: list[float]


async def search_phase(bench: Bench, args: argparse.Namespace) -> None:
    queries = bench.words.queries(args.queries)
    rng = random.Random(args.seed + 2)
    await bench.store.warm_up()  # /crm find's name index, as a server does at start-up
    gc.collect()
    results: list[RoleResult] = []
    for role, person in bench.people.items():
        progress(f"searching as the {role} ({len(bench.deals_of[role]):,} deals visible) …")
        shell = ShellAdapter(bench.store, person)
        ms, replies = await timed([partial(shell.ask, f"/crm search {q}") for q in queries])
        failed = [r.text for r in replies if r.kind == "error" and "Nothing you can see" not in r.text]
        if failed:
            raise SystemExit(f"/crm search failed as the {role}: {failed[:3]}")
        answered = sum(1 for r in replies if r.kind != "error")
        deals = bench.deals_of[role]
        one_deal, _ = await timed([partial(search, bench.store, person, q, opportunity_id=rng.choice(deals))
                                   for q in queries])
        names = [bench.deal_names[rng.randrange(len(bench.deal_names))] for _ in queries]
        find, _ = await timed([partial(shell.ask, f"/crm find {' '.join(n.split()[:2])}") for n in names])
        results.append(RoleResult(role, len(deals), ms, answered, one_deal, find))

    print(f"\n/crm search through the shell adapter's Dispatcher, {len(queries)} queries of 1–3 words per role")
    print(f"{'role':<10}{'deals seen':>11}{'answered':>10}{'search p50':>12}{'p99':>9}"
          f"{'one deal p50':>14}{'p99':>9}{'/crm find p50':>15}{'p99':>9}   (ms)")
    for r in results:
        print(f"{r.role:<10}{r.deals:>11,}{r.answered / len(queries):>10.0%}{percentile(r.search_ms, 50):>12.1f}"
              f"{percentile(r.search_ms, 99):>9.1f}{percentile(r.one_deal_ms, 50):>14.1f}"
              f"{percentile(r.one_deal_ms, 99):>9.1f}{percentile(r.find_ms, 50):>15.1f}{percentile(r.find_ms, 99):>9.1f}")
    worst = max(results, key=lambda r: percentile(r.search_ms, 99))
    p99 = percentile(worst.search_ms, 99)
    verdict = "PASS" if p99 <= TARGET_P99_MS else "FAIL"
    print(f"\n{verdict}: worst p99 {p99:.1f} ms (the {worst.role}); target p99 <= {TARGET_P99_MS:.0f} ms")


Phase = Callable[[Bench, argparse.Namespace], Awaitable[None]]
async def capture_phase(bench: Bench, args: argparse.Namespace) -> None:
    """Deal-room messages through `POST /slack/events` of a real server on this database
    (benchmarks/capture_events.py): every kept message also goes into the full-text index."""
    progress(f"capture: {args.capture_rate:g} messages/s for {args.capture_seconds:g} s through /slack/events")
    capture_events.report(await capture_events.capture_phase(bench.path, args.capture_rate, args.capture_seconds))


PHASES: dict[str, Phase] = {
    "search": search_phase,
    "capture": capture_phase,
}


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="dealbot-search-", dir=args.tmp) as tmp:
        path = Path(tmp) / "search.db"
        started = time.perf_counter()
        bench = await build(path, args.opportunities, args.messages, args.entries, args.seed)
        build_s = time.perf_counter() - started
        try:
            total, fts = sizes(bench)
            print(f"Search benchmark (SQLite): {args.messages:,} transcript messages, {args.entries:,} timeline "
                  f"entries, {args.opportunities:,} deals")
            print(f"build {build_s:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in bench.build_s.items())
                  + ", search triggers included)")
            print(f"database {total:,.0f} MB" + (f", of which the full-text index {fts:,.0f} MB" if fts is not None else ""))
            for name in args.phases.split(","):
                await PHASES[name](bench, args)
        finally:
            await bench.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="/crm search latency over a large SQLite store")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--opportunities", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of: {', '.join(PHASES)}")
    parser.add_argument("--tmp", default=None, help="directory for the temporary database")
    parser.add_argument("--capture-rate", type=float, default=600.0, help="capture phase: messages per second")
    parser.add_argument("--capture-seconds", type=float, default=30.0, help="capture phase: how long to send")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
