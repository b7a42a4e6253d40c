"""`dealbot serve`: health, Prometheus metrics, and a graceful stop on SIGTERM during a bulk upsert.

The health and metrics tests drive the real app over HTTP; the SIGTERM test starts the real
`dealbot serve` process and signals it while it is writing.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, insert, select

from bot.server import create_app
from bot.settings import load_settings
from crm_store import Store
from crm_store.models import OutboxItem, utcnow
from crm_store.sync import CHUNK
from tests.org import Org

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SETTINGS = load_settings(dealbot_api_token=TOKEN)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def client(store: Store, org: Org) -> AsyncIterator[TestClient]:
    c = TestClient(TestServer(create_app(store, SETTINGS)))
    await c.start_server()
    try:
        yield c
    finally:
        await c.close()


# -- /healthz ----------------------------------------------------------------------------------

async def test_healthz_is_ok_with_a_working_database(client: TestClient) -> None:
    async with client.get("/healthz") as response:  # no token needed
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


async def test_healthz_is_503_when_the_sqlite_directory_is_gone(sqlite_template: Path, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(sqlite_template, folder / "dealbot.db")
    store = await Store.open(f"sqlite+aiosqlite:///{folder / 'dealbot.db'}", upgrade=False)
    c = TestClient(TestServer(create_app(store, SETTINGS)))
    await c.start_server()
    try:
        async with c.get("/healthz") as response:
            assert response.status == 200
        shutil.rmtree(folder)
        await store.engine.dispose()  # pooled connections would still hold the deleted file open
        async with c.get("/healthz") as response:
            assert response.status == 503
            assert response.content_type == "application/json"
            body = await response.json()
        assert body["status"] == "unavailable" and body["database"]
        # Metrics are still served (the request counters show the outage); the outbox depth is unknown.
        async with c.get("/metrics") as response:
            assert response.status == 200
            families = {f.name: f for f in text_string_to_metric_families(await response.text())}
        depth = families["dealbot_outbox_depth"].samples[0].value
        assert depth != depth  # NaN
        statuses = {s.labels["status"] for s in families["dealbot_http_requests"].samples
                    if s.labels.get("route") == "/healthz" and s.name.endswith("_total")}
        assert statuses == {"200", "503"}
    finally:
        await c.close()
        await store.close()


async def test_healthz_is_503_quickly_when_postgresql_is_unreachable() -> None:
    store = await Store.open("postgresql+asyncpg://u:p@127.0.0.1:1/x", upgrade=False)
    c = TestClient(TestServer(create_app(store, SETTINGS)))
    await c.start_server()
    try:
        started = time.monotonic()
        async with c.get("/healthz") as response:
            assert response.status == 503
            body = await response.json()
        assert time.monotonic() - started < 5
        assert body["status"] == "unavailable" and body["database"]
        # The API answers with a JSON reason too, not a stack trace.
        async with c.get("/api/v1/opportunities/O-x", headers=AUTH) as response:
            assert response.status == 500
            answer = await response.json()
        assert answer["error"].startswith("internal error (reference ")
        assert "Traceback" not in answer["error"] and "asyncpg" not in answer["error"]
    finally:
        await c.close()
        await store.close()


# -- /metrics ----------------------------------------------------------------------------------

def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def deal(i: int) -> dict[str, Any]:
    return {"external_id": f"O-m{i}", "name": f"Metric Deal {i}", "account_external_id": "A-acme", "amount": "10",
            "currency": "USD", "stage": "Proposal", "owner_email": "rep.a@org.test"}


async def test_metrics_count_requests_time_them_and_report_upserts_and_outbox_depth(
    client: TestClient, store: Store
) -> None:
    async def request(method: str, path: str, body: Any = None, auth: bool = True) -> int:
        async with client.request(method, path, json=body, headers=AUTH if auth else {}) as response:
            await response.read()
            return response.status

    assert await request("PUT", "/api/v1/accounts/A-m1", {"name": "Metric One"}) == 201
    assert await request("PUT", "/api/v1/accounts/A-m1", {"name": "Metric One"}) == 200
    assert await request("PUT", "/api/v1/accounts/A-m2", {"name": ""}) == 422
    assert await request("PUT", "/api/v1/accounts/A-m3", {"name": "X"}, auth=False) == 401
    assert await request("GET", "/api/v1/opportunities/O-secret-key-123") == 404
    assert await request("GET", "/no/such/page?token=hunter2") == 404
    assert await request("GET", "/healthz") == 200
    items = [deal(i) for i in range(3)] + [{**deal(9), "amount": "lots"}, {**deal(8), "owner_email": "ghost@org.test"}]
    assert await request("POST", "/api/v1/opportunities/bulk", {"items": items}) == 200
    assert await request("POST", "/api/v1/opportunities/bulk", {"items": items[:2]}) == 200  # unchanged now
    # The app's outbox worker delivers the three change events; two rows it has no handler for
    # (another platform) stay pending, one that failed for good is counted apart.
    for _ in range(500):
        async with store.session() as s:
            pending = (await s.execute(select(func.count()).select_from(OutboxItem)
                                       .where(OutboxItem.status == "pending"))).scalar_one()
        if not pending:
            break
        await asyncio.sleep(0.01)
    assert pending == 0
    now = utcnow()
    async with store.transaction() as s:
        await s.execute(insert(OutboxItem), [
            {"idempotency_key": f"elsewhere:{i}", "platform": "elsewhere", "operation": "post", "payload": {},
             "next_attempt_at": now, "created_at": now - timedelta(seconds=30), "status": status}
            for i, status in enumerate(["pending", "pending", "failed"])])

    async with client.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")  # Prometheus text format
        text = await response.text()
    m = samples(text)

    put = "/api/v1/{kind}/{key}"
    requests = "dealbot_http_requests_total"
    assert value(m, requests, route=put, method="PUT", status="201") == 1
    assert value(m, requests, route=put, method="PUT", status="200") == 1
    assert value(m, requests, route=put, method="PUT", status="422") == 1
    assert value(m, requests, route=put, method="PUT", status="401") == 1
    assert value(m, requests, route="/api/v1/opportunities/{key}", method="GET", status="404") == 1
    assert value(m, requests, route="/api/v1/{kind}/bulk", method="POST", status="200") == 2
    assert value(m, requests, route="/healthz", method="GET", status="200") == 1
    assert value(m, requests, route="unmatched", method="GET", status="404") == 1
    # Labels carry route patterns only: no keys, query strings or tokens.
    assert "O-secret-key-123" not in text and "hunter2" not in text and "A-m1" not in text

    # Latency histogram: cumulative buckets per route, ending in +Inf == count.
    buckets = sorted(((float(dict(labels)["le"]), v) for (name, labels), v in m.items()
                      if name == "dealbot_http_request_duration_seconds_bucket" and dict(labels)["route"] == put))
    assert [le for le, _ in buckets][:3] == [0.005, 0.01, 0.025] and buckets[-1][0] == float("inf")
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    assert buckets[-1][1] == value(m, "dealbot_http_request_duration_seconds_count", route=put) == 4
    assert value(m, "dealbot_http_request_duration_seconds_sum", route=put) > 0

    upserts = "dealbot_upserts_total"
    assert value(m, upserts, kind="accounts", status="created") == 1
    assert value(m, upserts, kind="accounts", status="unchanged") == 1
    assert value(m, upserts, kind="opportunities", status="created") == 3
    assert value(m, upserts, kind="opportunities", status="error") == 2
    assert value(m, upserts, kind="opportunities", status="unchanged") == 2
    # Each created opportunity announced one change event; the unchanged repeats announced none.
    assert value(m, "dealbot_events_processed_total", source="sync") == 3

    assert value(m, "dealbot_outbox_depth") == 2
    assert value(m, "dealbot_outbox_oldest_age_seconds") >= 30
    assert value(m, "dealbot_outbox_failed") == 1

    # The metrics request itself is counted once it is done.
    async with client.get("/metrics") as response:
        again = samples(await response.text())
    assert value(again, requests, route="/metrics", method="GET", status="200") == 1


async def test_outbox_depth_is_zero_without_pending_items(client: TestClient) -> None:
    async with client.get("/metrics") as response:
        m = samples(await response.text())
    assert value(m, "dealbot_outbox_depth") == 0 and value(m, "dealbot_outbox_oldest_age_seconds") == 0


async def test_each_app_has_its_own_metrics(store: Store, org: Org) -> None:
    apps = [TestClient(TestServer(create_app(store, SETTINGS))) for _ in range(2)]
    for c in apps:
        await c.start_server()
    try:
        async with apps[0].get("/healthz"):
            pass
        async with apps[1].get("/metrics") as response:
            m = samples(await response.text())
        assert value(m, "dealbot_http_requests_total", route="/healthz", method="GET", status="200") == 0
    finally:
        for c in apps:
            await c.close()


# -- SIGTERM during a bulk upsert --------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call_api(port: int, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={**AUTH, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def stored_keys(db: Path, prefix: str) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        rows = conn.execute("SELECT external_id FROM opportunities WHERE external_id LIKE ?", (f"{prefix}%",))
        return {r[0] for r in rows}


def test_sigterm_during_a_bulk_upsert_finishes_it_and_the_outbox_then_exits_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DEALBOT_", "SLACK_", "MICROSOFT_"))}
    env.update(DATABASE_URL=f"sqlite+aiosqlite:///{db}", DEALBOT_API_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    stderr = (tmp_path / "stderr.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-c", "from bot.cli import app; app()", "serve", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.05)

        people = [{"email": f"owner{i}@org.test", "name": f"Owner {i}"} for i in range(3)]
        assert call_api(port, "POST", "/api/v1/users/bulk", {"items": people})[0] == 200
        assert call_api(port, "PUT", "/api/v1/accounts/A-sig", {"name": "Signal Corp"})[0] == 201

        n = 5 * CHUNK
        items = [{"external_id": f"O-sig-{i:05d}", "name": f"Signal deal {i}", "account_external_id": "A-sig",
                  "amount": f"{1000 + i}.50", "currency": "EUR", "stage": "Proposal", "close_date": "2031-01-31",
                  "owner_email": f"owner{i % 3}@org.test", "team_emails": [f"owner{(i + 1) % 3}@org.test"]}
                 for i in range(n)]
        body = json.dumps({"items": items}).encode()
        outcome: dict[str, Any] = {}

        def post() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                conn.request("POST", "/api/v1/opportunities/bulk", body,
                             {**AUTH, "Content-Type": "application/json"})
                response = conn.getresponse()
                outcome["status"] = response.status
                outcome["body"] = response.read()
            except Exception as error:  # noqa: BLE001 - recorded and asserted on below
                outcome["error"] = repr(error)
            finally:
                conn.close()

        sender = threading.Thread(target=post)
        sender.start()
        # Signal as soon as the first chunk is committed, i.e. while the upsert is under way.
        deadline = time.monotonic() + 60
        while not stored_keys(db, "O-sig-") and sender.is_alive():
            assert time.monotonic() < deadline, "the bulk upsert never started"
            time.sleep(0.002)
        in_flight = sender.is_alive()
        proc.send_signal(signal.SIGTERM)
        sender.join(timeout=90)
        assert not sender.is_alive()
        returncode = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.seek(0)
        log = stderr.read()
        stderr.close()

    assert in_flight, "the request finished before the signal; nothing was tested"
    assert returncode == 0, log
    # Graceful stop: the request in flight was finished and answered completely.
    assert "error" not in outcome, (outcome, log)
    assert outcome["status"] == 200
    results = json.loads(outcome["body"])["results"]
    assert len(results) == n and {r["status"] for r in results} == {"created"}
    # Whatever happened, each chunk (one transaction) is in the database entirely or not at all.
    keys = stored_keys(db, "O-sig-")
    for start in range(0, n, CHUNK):
        chunk = {f"O-sig-{i:05d}" for i in range(start, start + CHUNK)}
        assert len(keys & chunk) in (0, CHUNK), f"partial chunk at {start}: {len(keys & chunk)}"
    assert len(keys) == n
    messages = [json.loads(line).get("msg") for line in log.splitlines() if line.startswith("{")]
    assert "stopping: finishing in-flight requests, then due outbox work" in messages and messages[-1] == "stopped"
    # ... and the change events of everything it wrote were delivered before it exited.
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        statuses = dict(conn.execute("SELECT status, count(*) FROM outbox WHERE operation = 'opportunity.changed' "
                                     "GROUP BY status").fetchall())
    assert statuses == {"done": n}
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
