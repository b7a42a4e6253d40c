"""Benchmark: bulk upsert throughput of opportunities through the REST API on SQLite.

Run from the repository root with the project's virtualenv::

    python benchmarks/ingest.py                 # 100,000 opportunities in bulks of 5,000, 3 rounds
    python benchmarks/ingest.py --count 20000 --rounds 1

It starts a real `dealbot serve` process on a fresh SQLite file, loads 50 users and 5,000
accounts through the bulk endpoints, then sends the opportunities three times over HTTP:

1. *create*: every opportunity is new;
2. *update*: every opportunity changes stage and amount (two history rows, two timeline
   entries and one outbox event each);
3. *repeat*: the same payload again, which must change nothing.

Each round starts a fresh server and database. For each pass it prints the median items/s over
the rounds (the target is at least 5,000 upserts/s) and checks every item got the expected status. A client-side baseline measured in the same run — the time to build and
JSON-encode the same requests — shows how much of the time is the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

TOKEN = "bench-token"
BULK = 5000
STAGES = ["Prospecting", "Qualification", "Discovery", "Proposal", "Negotiation", "Commit"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def opportunities(count: int, accounts: int, users: int, seed: int, version: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    items = []
    for i in range(count):
        items.append({
            "external_id": f"OPP-{i:07d}", "name": f"Deal {i}", "account_external_id": f"ACC-{rng.randrange(accounts):05d}",
            "amount": f"{rng.randrange(5_000, 2_000_000) + version * 1000}.00", "currency": "USD",
            "stage": STAGES[(rng.randrange(len(STAGES)) + version) % len(STAGES)],
            "close_date": f"2027-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "owner_email": f"user{rng.randrange(users)}@bench.test", "status": "open",
        })
    return items


async def post_all(session: aiohttp.ClientSession, url: str, items: list[dict[str, Any]], expect: str) -> float:
    """Send `items` in bulks; return elapsed seconds; fail loudly on any unexpected status."""
    started = time.perf_counter()
    for start in range(0, len(items), BULK):
        body = json.dumps({"items": items[start : start + BULK]})
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
            payload = await response.json()
            if response.status != 200:
                raise SystemExit(f"bulk request failed: HTTP {response.status}: {payload}")
            wrong = [r for r in payload["results"] if r["status"] != expect]
            if wrong:
                raise SystemExit(f"expected every item {expect}, got e.g. {wrong[:3]}")
    return time.perf_counter() - started


def encode_baseline(items: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for start in range(0, len(items), BULK):
        json.dumps({"items": items[start : start + BULK]}).encode()
    return time.perf_counter() - started


async def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit("the server exited during start-up")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the server did not become healthy")


async def one_round(count: int, seed: int) -> dict[str, tuple[float, float]]:
    """One fresh server and database; for each pass, (items/s, client encode seconds)."""
    with tempfile.TemporaryDirectory(prefix="dealbot-ingest-") as tmp:
        port = free_port()
        env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{Path(tmp) / 'ingest.db'}", "DEALBOT_API_TOKEN": TOKEN}
        server = subprocess.Popen([sys.executable, "-c", "from bot.cli import app; app()", "serve", "--port", str(port)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_ready(f"{base}/healthz", server)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            timeout = aiohttp.ClientTimeout(total=600)
            async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
                users = [{"email": f"user{i}@bench.test", "name": f"User {i}"} for i in range(50)]
                accounts = [{"external_id": f"ACC-{i:05d}", "name": f"Account {i}"} for i in range(5000)]
                await post_all(session, f"{base}/api/v1/users/bulk", users, "created")
                await post_all(session, f"{base}/api/v1/accounts/bulk", accounts, "created")
                url = f"{base}/api/v1/opportunities/bulk"
                first = opportunities(count, 5000, 50, seed, version=0)
                second = opportunities(count, 5000, 50, seed, version=1)
                passes = [("create", first, "created"), ("update", second, "updated"), ("repeat", second, "unchanged")]
                figures = {}
                for name, items, expect in passes:
                    elapsed = await post_all(session, url, items, expect)
                    figures[name] = (count / elapsed, encode_baseline(items))
                return figures
        finally:
            server.terminate()
            server.wait(timeout=60)


async def run(count: int, seed: int, rounds: int) -> None:
    results = []
    for r in range(rounds):
        results.append(await one_round(count, seed))
        print(f"round {r + 1}: " + ", ".join(f"{name} {rate:,.0f}/s" for name, (rate, _) in results[-1].items()),
              flush=True)
    print(f"\nBulk upsert of {count:,} opportunities through POST /api/v1/opportunities/bulk "
          f"({BULK:,} per request, SQLite, server in its own process), median of {rounds} round(s)\n")
    print(f"{'pass':<8}{'items/s':>10}{'min':>10}{'max':>10}{'client encode s':>17}")
    medians = {}
    for name in results[0]:
        rates = [figures[name][0] for figures in results]
        medians[name] = statistics.median(rates)
        baseline = statistics.median(figures[name][1] for figures in results)
        print(f"{name:<8}{medians[name]:>10,.0f}{min(rates):>10,.0f}{max(rates):>10,.0f}{baseline:>17.2f}")
    worst = min(medians, key=medians.__getitem__)
    verdict = "PASS" if medians[worst] >= 5000 else "FAIL"
    print(f"\n{verdict}: slowest pass ({worst}) median {medians[worst]:,.0f} upserts/s (target >= 5,000)")


def main() -> None:
    parser = argparse.ArgumentParser(description="Bulk upsert throughput through the REST API")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=3, help="fresh server and database per round")
    args = parser.parse_args()
    asyncio.run(run(args.count, args.seed, args.rounds))


if __name__ == "__main__":
    main()
