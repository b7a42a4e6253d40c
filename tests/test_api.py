"""The REST API under /api/v1, driven over HTTP against the real aiohttp app and a real database.

Every test builds the app with `create_app(store, settings)` and talks to it through aiohttp's
TestServer/TestClient; nothing of ours is replaced. The small organisation of `tests/org.py` is
the starting data (accounts `A-acme`…, deals `O-acme_renewal`…, users `rep.a@org.test`…).
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select
from sqlalchemy.orm import selectinload

from bot.openapi import openapi_document
from bot.server import create_app
from bot.settings import load_settings
from crm_store import Store
from crm_store.models import (
    Account,
    AuditLog,
    Contact,
    DealRoom,
    Opportunity,
    OpportunityHistory,
    OutboxItem,
    TimelineEntry,
    TranscriptMessage,
    User,
    utcnow,
)
from crm_store.records import KEY_FIELD, RECORDS
from tests.org import Org, snapshot

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
V1 = "/api/v1"


async def start_client(store: Store, token: str | None = TOKEN) -> TestClient:
    # No outbox worker: these tests inspect the outbox rows exactly as the sync wrote them.
    client = TestClient(TestServer(create_app(store, load_settings(dealbot_api_token=token), outbox=False)))
    await client.start_server()
    return client


@pytest.fixture
async def api(store: Store, org: Org) -> AsyncIterator[TestClient]:
    client = await start_client(store)
    try:
        yield client
    finally:
        await client.close()


async def call(client: TestClient, method: str, path: str, body: Any = None,
               headers: dict[str, str] | None = None, *, auth: bool = True) -> tuple[int, Any]:
    """One request; returns the status and the decoded JSON body (or the text when not JSON)."""
    all_headers = {**(AUTH if auth else {}), **(headers or {})}
    kwargs: dict[str, Any] = {"headers": all_headers}
    if body is not None:
        kwargs["json"] = body
    async with client.request(method, path, **kwargs) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def count(store: Store, model: Any, *where: Any) -> int:
    async with store.session() as s:
        return (await s.execute(select(func.count()).select_from(model).where(*where))).scalar_one()


async def audited(store: Store, entity: str) -> set[str]:
    """Keys of `entity` that audit rows of upserts name (one row per item, or a chunk's keys in details)."""
    async with store.session() as s:
        rows = list((await s.execute(select(AuditLog).where(AuditLog.entity_type == entity))).scalars())
    keys = {r.entity_id for r in rows if r.entity_id}
    for r in rows:
        for value in (r.details or {}).values():
            keys |= set(value) if isinstance(value, list) else set()
    return keys


async def load_opp(store: Store, external_id: str) -> Opportunity:
    async with store.session() as s:
        return (await s.execute(select(Opportunity).where(Opportunity.external_id == external_id).options(
            selectinload(Opportunity.owner), selectinload(Opportunity.account)))).scalar_one()


async def deal_payload(store: Store, external_id: str, **changes: Any) -> dict[str, Any]:
    """The opportunity as it is stored now, as an API payload, with `changes` applied."""
    async with store.session() as s:
        opp = (await s.execute(select(Opportunity).where(Opportunity.external_id == external_id).options(
            selectinload(Opportunity.owner), selectinload(Opportunity.account),
            selectinload(Opportunity.team)))).scalar_one()
        team_ids = [m.user_id for m in opp.team]
        team = sorted((await s.execute(select(User.email).where(User.id.in_(team_ids)))).scalars()) if team_ids else []
    payload = {
        "name": opp.name, "account_external_id": opp.account.external_id, "amount": f"{opp.amount:.2f}",
        "currency": opp.currency, "stage": opp.stage,
        "close_date": opp.close_date.isoformat() if opp.close_date else None,
        "owner_email": opp.owner.email, "team_emails": team, "status": opp.status,
    }
    payload.update(changes)
    return payload


def new_deal(**changes: Any) -> dict[str, Any]:
    return {"name": "Initech Expansion", "account_external_id": "A-initech", "amount": "125000.50",
            "currency": "usd", "stage": "Discovery", "close_date": "2031-03-31", "owner_email": "rep.c@org.test",
            "team_emails": ["se@org.test"], **changes}


WHEN = datetime(2030, 6, 1, 12, 0, tzinfo=timezone.utc)


def ts(hours: float) -> str:
    return (WHEN + timedelta(hours=hours)).isoformat()


# -- authentication ----------------------------------------------------------------------------

ENDPOINTS: list[tuple[str, str, Any]] = [
    ("PUT", f"{V1}/users/new.person@org.test", {"name": "New Person", "manager_email": "mgr1@org.test"}),
    ("PUT", f"{V1}/accounts/A-new", {"name": "Brand New Co"}),
    ("PUT", f"{V1}/contacts/C-new", {"name": "Nina New", "account_external_id": "A-acme"}),
    ("PUT", f"{V1}/opportunities/O-new", new_deal()),
    ("POST", f"{V1}/users/bulk", {"items": [{"email": "bulk.person@org.test", "name": "Bulk Person"}]}),
    ("POST", f"{V1}/accounts/bulk", {"items": [{"external_id": "A-bulk", "name": "Bulk Co"}]}),
    ("POST", f"{V1}/contacts/bulk", {"items": [{"external_id": "C-bulk", "name": "Bo Bulk",
                                                "account_external_id": "A-acme"}]}),
    ("POST", f"{V1}/opportunities/bulk", {"items": [{"external_id": "O-bulk", **new_deal()}]}),
    ("GET", f"{V1}/opportunities/O-acme_renewal", None),
    ("GET", f"{V1}/opportunities/O-acme_renewal/timeline", None),
    ("GET", f"{V1}/opportunities/O-acme_renewal/timeline?format=csv", None),
    ("GET", f"{V1}/search?q=acme", None),
    ("DELETE", f"{V1}/contacts/C-coyote", None),
    ("DELETE", f"{V1}/users/loner@org.test", None),
    ("GET", f"{V1}/openapi.json", None),
]
ENDPOINT_IDS = [f"{m} {p.removeprefix(V1)}" for m, p, _ in ENDPOINTS]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
async def test_every_endpoint_refuses_a_missing_or_wrong_token(
    api: TestClient, store: Store, method: str, path: str, body: Any
) -> None:
    before = await snapshot(store)
    wrong = [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Bearer {TOKEN}x"},
             {"Authorization": "Bearer"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN},
             {"X-Api-Key": TOKEN}]
    for headers in wrong:
        status, answer = await call(api, method, path, body, headers, auth=False)
        assert status == 401, (headers, answer)
        assert answer == {"error": "missing or wrong bearer token"}
    assert await snapshot(store) == before
    # The same request with the right token is accepted (so the 401s were about the token).
    status, answer = await call(api, method, path, body)
    assert 200 <= status < 300, answer
    # The scheme is case-insensitive, as HTTP says.
    status, _ = await call(api, "GET", f"{V1}/openapi.json", headers={"Authorization": f"bearer {TOKEN}"}, auth=False)
    assert status == 200


@pytest.mark.parametrize("token", [None, ""], ids=["unset", "empty"])
async def test_the_api_is_off_when_no_token_is_configured(store: Store, org: Org, token: str | None) -> None:
    client = await start_client(store, token=token)
    try:
        before = await snapshot(store)
        for method, path, body in ENDPOINTS:
            for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer {TOKEN}"}):
                status, answer = await call(client, method, path, body, headers, auth=False)
                assert status == 401, (method, path, headers)
                assert "DEALBOT_API_TOKEN is not set" in answer["error"]
        assert await snapshot(store) == before
        status, answer = await call(client, "GET", "/healthz", auth=False)
        assert (status, answer) == (200, {"status": "ok"})  # health stays open
    finally:
        await client.close()


# -- PUT one record ----------------------------------------------------------------------------

async def test_put_user_creates_updates_and_repeats_without_writing(api: TestClient, store: Store, org: Org) -> None:
    body = {"name": "Nora New", "role": "manager", "manager_email": "VP@org.test", "time_zone": "Europe/Paris",
            "slack_user_id": "U0NORA"}
    status, answer = await call(api, "PUT", f"{V1}/users/Nora.New@Org.Test", body)
    assert (status, answer) == (201, {"key": "nora.new@org.test", "status": "created"})
    async with store.session() as s:
        nora = (await s.execute(select(User).where(User.email == "nora.new@org.test"))).scalar_one()
    assert (nora.name, nora.role, nora.manager_id, nora.time_zone, nora.slack_user_id) == (
        "Nora New", "manager", org.users["vp"], "Europe/Paris", "U0NORA")
    assert await audited(store, "user") == {"nora.new@org.test"}

    before = await snapshot(store)
    status, answer = await call(api, "PUT", f"{V1}/users/nora.new@org.test", body)
    assert (status, answer) == (200, {"key": "nora.new@org.test", "status": "unchanged"})
    assert await snapshot(store) == before

    status, answer = await call(api, "PUT", f"{V1}/users/nora.new@org.test", {**body, "manager_email": "mgr2@org.test"})
    assert (status, answer["status"]) == (200, "updated")
    async with store.session() as s:
        assert (await s.get(User, nora.id)).manager_id == org.users["mgr2"]  # type: ignore[union-attr]


async def test_put_account_creates_and_updates(api: TestClient, store: Store, org: Org) -> None:
    body = {"name": "Hooli Holdings", "domain": "HOOLI.example", "industry": "Search", "owner_email": "rep.b@org.test"}
    status, answer = await call(api, "PUT", f"{V1}/accounts/A-hooli", body)
    assert (status, answer) == (201, {"key": "A-hooli", "status": "created"})
    async with store.session() as s:
        acct = (await s.execute(select(Account).where(Account.external_id == "A-hooli"))).scalar_one()
    assert (acct.name, acct.domain, acct.industry, acct.owner_id) == ("Hooli Holdings", "hooli.example", "Search",
                                                                      org.users["rep_b"])
    status, answer = await call(api, "PUT", f"{V1}/accounts/A-hooli", {**body, "industry": "Video"})
    assert (status, answer) == (200, {"key": "A-hooli", "status": "updated"})
    status, answer = await call(api, "PUT", f"{V1}/accounts/A-hooli", {**body, "industry": "Video"})
    assert (status, answer) == (200, {"key": "A-hooli", "status": "unchanged"})


async def test_put_contact_creates_and_updates(api: TestClient, store: Store, org: Org) -> None:
    body = {"name": "Gavin Belson", "email": "Gavin@Hooli.example", "title": "CEO", "phone": "+1 555 0100",
            "account_external_id": "A-globex"}
    status, answer = await call(api, "PUT", f"{V1}/contacts/C-gavin", body)
    assert (status, answer) == (201, {"key": "C-gavin", "status": "created"})
    async with store.session() as s:
        contact = (await s.execute(select(Contact).where(Contact.external_id == "C-gavin"))).scalar_one()
    assert (contact.name, contact.email, contact.phone, contact.account_id) == (
        "Gavin Belson", "gavin@hooli.example", "+1 555 0100", org.accounts["globex"])
    status, answer = await call(api, "PUT", f"{V1}/contacts/C-gavin", {**body, "account_external_id": "A-acme"})
    assert (status, answer["status"]) == (200, "updated")
    async with store.session() as s:
        assert (await s.get(Contact, contact.id)).account_id == org.accounts["acme"]  # type: ignore[union-attr]


async def test_put_opportunity_creates_it_with_its_team_and_get_returns_it(api: TestClient, store: Store) -> None:
    status, answer = await call(api, "PUT", f"{V1}/opportunities/O-initech_exp", new_deal(probability=40))
    assert (status, answer) == (201, {"key": "O-initech_exp", "status": "created"})
    status, got = await call(api, "GET", f"{V1}/opportunities/O-initech_exp")
    assert status == 200
    assert {k: got[k] for k in ("external_id", "name", "amount", "currency", "stage", "probability", "close_date",
                                "owner_email", "team_emails", "status")} == {
        "external_id": "O-initech_exp", "name": "Initech Expansion", "amount": "125000.50", "currency": "USD",
        "stage": "Discovery", "probability": 40, "close_date": "2031-03-31", "owner_email": "rep.c@org.test",
        "team_emails": ["se@org.test"], "status": "open"}
    assert got["account"] == {"external_id": "A-initech", "name": "Initech LLC"}
    # Creation is no change of a tracked field: no history, one event for the deal rooms.
    opp = await load_opp(store, "O-initech_exp")
    assert await count(store, OpportunityHistory, OpportunityHistory.opportunity_id == opp.id) == 0
    assert await count(store, OutboxItem, OutboxItem.operation == "opportunity.changed") == 1
    assert await audited(store, "opportunity") == {"O-initech_exp"}


async def test_get_opportunity_of_an_existing_deal(api: TestClient, store: Store) -> None:
    status, got = await call(api, "GET", f"{V1}/opportunities/O-acme_renewal")
    assert status == 200
    assert (got["name"], got["amount"], got["owner_email"], got["team_emails"], got["stage"]) == (
        "ACME Renewal 2027", "250000.00", "rep.a@org.test", ["se@org.test"], "Negotiation")


# -- 404 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", f"{V1}/opportunities/O-nope"),
    ("GET", f"{V1}/opportunities/O-nope/timeline"),
    ("GET", f"{V1}/opportunities/O-nope/timeline?format=csv"),
    ("DELETE", f"{V1}/contacts/C-nope"),
    ("DELETE", f"{V1}/users/nobody@org.test"),
    ("GET", f"{V1}/widgets/1"),
    ("PUT", f"{V1}/widgets/1"),
    ("POST", f"{V1}/widgets/bulk"),
    ("DELETE", f"{V1}/accounts/A-acme"),  # only contacts and users can be erased
    ("GET", f"{V1}/opportunities"),
])
async def test_unknown_things_are_404_with_a_reason(api: TestClient, store: Store, method: str, path: str) -> None:
    before = await snapshot(store)
    status, answer = await call(api, method, path, {"name": "x"} if method in ("PUT", "POST") else None)
    assert status in (404, 405), answer
    assert isinstance(answer, dict) and answer["error"]
    assert await snapshot(store) == before


# -- 422 with the field named ------------------------------------------------------------------

INVALID = [
    ("users", "x@org.test", {"role": "rep"}, "name"),
    ("users", "x@org.test", {"name": "X", "role": "boss"}, "role"),
    ("users", "x@org.test", {"name": "X", "manager_email": "not-an-email"}, "manager_email"),
    ("users", "x@org.test", {"name": "X", "time_zone": "Mars/Olympus"}, "time_zone"),
    ("users", "x@org.test", {"name": "X", "nickname": "Xy"}, "nickname"),
    ("accounts", "A-x", {"name": ""}, "name"),
    ("accounts", "A-x", {"name": "X", "owner_email": "nobody"}, "owner_email"),
    ("accounts", "A-x", {"name": "X", "source_updated_at": "yesterday"}, "source_updated_at"),
    ("accounts", "A-x", {"name": "X", "external_id": "A-x"}, "external_id"),
    ("contacts", "C-x", {"name": "X"}, "account_external_id"),
    ("contacts", "C-x", {"name": "X", "account_external_id": "A-acme", "email": "x@"}, "email"),
    ("opportunities", "O-x", new_deal(amount="-5"), "amount"),
    ("opportunities", "O-x", new_deal(amount="1.234"), "amount"),
    ("opportunities", "O-x", new_deal(currency="dollars"), "currency"),
    ("opportunities", "O-x", new_deal(close_date="2031-02-30"), "close_date"),
    ("opportunities", "O-x", new_deal(status="pending"), "status"),
    ("opportunities", "O-x", new_deal(probability=101), "probability"),
    ("opportunities", "O-x", new_deal(team_emails=["se@org.test", "bad"]), "team_emails.1"),
    ("opportunities", "O-x", {k: v for k, v in new_deal().items() if k != "stage"}, "stage"),
    ("opportunities", "O-x", new_deal(colour="red"), "colour"),
]


@pytest.mark.parametrize(("kind", "key", "body", "field"), INVALID,
                         ids=[f"{k}-{f}" for k, _, _, f in INVALID])
async def test_invalid_fields_are_422_naming_the_field(
    api: TestClient, store: Store, kind: str, key: str, body: dict[str, Any], field: str
) -> None:
    before = await snapshot(store)
    status, answer = await call(api, "PUT", f"{V1}/{kind}/{key}", body)
    assert status == 422, answer
    assert field in [d["field"] for d in answer["details"]], answer
    assert await snapshot(store) == before


@pytest.mark.parametrize(("kind", "key", "body", "field"), [
    ("users", "x@org.test", {"name": "X", "manager_email": "ghost@org.test"}, "manager_email"),
    ("accounts", "A-x", {"name": "X", "owner_email": "ghost@org.test"}, "owner_email"),
    ("contacts", "C-x", {"name": "X", "account_external_id": "A-ghost"}, "account_external_id"),
    ("opportunities", "O-x", new_deal(account_external_id="A-ghost"), "account_external_id"),
    ("opportunities", "O-x", new_deal(owner_email="ghost@org.test"), "owner_email"),
    ("opportunities", "O-x", new_deal(team_emails=["ghost@org.test"]), "team_emails"),
])
async def test_references_to_unknown_records_are_422_naming_the_field(
    api: TestClient, store: Store, kind: str, key: str, body: dict[str, Any], field: str
) -> None:
    before = await snapshot(store)
    status, answer = await call(api, "PUT", f"{V1}/{kind}/{key}", body)
    assert status == 422, answer
    assert answer["status"] == "error" and answer["field"] == field and "ghost" in answer["error"]
    assert await snapshot(store) == before


@pytest.mark.parametrize(("kind", "key"), [
    ("users", "not-an-email"), ("users", "two@@org.test"), ("accounts", "a" * 129), ("contacts", "has%20space"),
    ("opportunities", "a%2Fb"), ("accounts", "%20"),
])
async def test_invalid_keys_in_the_path_are_422(api: TestClient, store: Store, kind: str, key: str) -> None:
    body = {"users": {"name": "X"}, "accounts": {"name": "X"}, "contacts": {"name": "X", "account_external_id": "A-acme"},
            "opportunities": new_deal()}[kind]
    before = await snapshot(store)
    status, answer = await call(api, "PUT", f"{V1}/{kind}/{key}", body)
    assert status in (404, 422), answer  # a slash in the key may not even route
    assert answer["error"]
    if status == 422:
        assert answer["field"] == KEY_FIELD[kind]
    assert await snapshot(store) == before


# -- stale updates -----------------------------------------------------------------------------

STALE_CASES = [
    ("accounts", "A-stale", {"name": "Stale Co", "industry": "New"}, {"industry": "Old"}),
    ("contacts", "C-stale", {"name": "Stan Stale", "title": "CFO", "account_external_id": "A-acme"}, {"title": "Intern"}),
    ("opportunities", "O-stale", new_deal(stage="Commit"), {"stage": "Discovery", "amount": "1.00"}),
]


@pytest.mark.parametrize(("kind", "key", "newer", "older_changes"), STALE_CASES, ids=[c[0] for c in STALE_CASES])
async def test_an_older_update_is_answered_stale_and_changes_nothing(
    api: TestClient, store: Store, kind: str, key: str, newer: dict[str, Any], older_changes: dict[str, Any]
) -> None:
    status, answer = await call(api, "PUT", f"{V1}/{kind}/{key}", {**newer, "source_updated_at": ts(2)})
    assert status == 201, answer
    stored_before = await snapshot(store)

    older = {**newer, **older_changes, "source_updated_at": ts(1)}
    status, answer = await call(api, "PUT", f"{V1}/{kind}/{key}", older)
    assert (status, answer) == (200, {"key": key, "status": "stale", "stale": True})
    assert await snapshot(store) == stored_before  # not a row, not a timestamp

    # Same timestamp in another zone is not older; a newer one is applied.
    same_instant = (WHEN + timedelta(hours=2)).astimezone(timezone(timedelta(hours=5))).isoformat()
    status, answer = await call(api, "PUT", f"{V1}/{kind}/{key}", {**newer, "source_updated_at": same_instant})
    assert (status, answer["status"]) == (200, "unchanged")
    status, answer = await call(api, "PUT", f"{V1}/{kind}/{key}", {**older, "source_updated_at": ts(3)})
    assert (status, answer["status"]) == (200, "updated")

    # Bulk answers stale items the same way.
    status, answer = await call(api, "POST", f"{V1}/{kind}/bulk",
                                {"items": [{KEY_FIELD[kind]: key, **newer, "source_updated_at": ts(2.5)}]})
    assert status == 200 and answer["results"] == [{"key": key, "status": "stale"}]


async def test_stale_opportunity_update_keeps_stored_values_visible_in_get(api: TestClient, store: Store) -> None:
    await call(api, "PUT", f"{V1}/opportunities/O-s", new_deal(stage="Commit", source_updated_at=ts(10)))
    status, answer = await call(api, "PUT", f"{V1}/opportunities/O-s",
                                new_deal(stage="Closed Lost", status="lost", source_updated_at=ts(9)))
    assert status == 200 and answer["stale"] is True
    status, got = await call(api, "GET", f"{V1}/opportunities/O-s")
    assert (got["stage"], got["status"]) == ("Commit", "open")
    assert datetime.fromisoformat(got["source_updated_at"]) == WHEN + timedelta(hours=10)
    opp = await load_opp(store, "O-s")
    assert await count(store, OpportunityHistory, OpportunityHistory.opportunity_id == opp.id) == 0


# -- idempotent repeats ------------------------------------------------------------------------

REPEATS = [
    ("users", "repeat@org.test", {"name": "Rae Peat", "manager_email": "mgr1@org.test", "time_zone": "UTC"}),
    ("accounts", "A-rep", {"name": "Repeat Co", "domain": "repeat.example", "owner_email": "rep.a@org.test",
                           "source_updated_at": ts(1)}),
    ("contacts", "C-rep", {"name": "Rea Peat", "email": "rea@repeat.example", "account_external_id": "A-acme",
                           "source_updated_at": ts(1)}),
    ("opportunities", "O-rep", new_deal(source_updated_at=ts(1), probability=30)),
]


@pytest.mark.parametrize(("kind", "key", "body"), REPEATS, ids=[r[0] for r in REPEATS])
async def test_the_same_payload_twice_is_unchanged_and_writes_nothing(
    api: TestClient, store: Store, kind: str, key: str, body: dict[str, Any]
) -> None:
    status, answer = await call(api, "PUT", f"{V1}/{kind}/{key}", body)
    assert status == 201
    before = await snapshot(store)
    counts = [await count(store, m) for m in (OpportunityHistory, TimelineEntry, OutboxItem, AuditLog)]
    for _ in range(2):
        status, answer = await call(api, "PUT", f"{V1}/{kind}/{key}", body)
        assert (status, answer) == (200, {"key": key, "status": "unchanged"})
        status, answer = await call(api, "POST", f"{V1}/{kind}/bulk", {"items": [{KEY_FIELD[kind]: key, **body}]})
        assert answer == {"results": [{"key": key, "status": "unchanged"}]}
    assert [await count(store, m) for m in (OpportunityHistory, TimelineEntry, OutboxItem, AuditLog)] == counts
    assert await snapshot(store) == before


async def test_an_existing_deal_sent_as_stored_is_unchanged(api: TestClient, store: Store) -> None:
    before = await snapshot(store)
    status, answer = await call(api, "PUT", f"{V1}/opportunities/O-acme_renewal",
                                await deal_payload(store, "O-acme_renewal"))
    assert (status, answer["status"]) == (200, "unchanged")
    # An amount written differently but equal in value is no change either.
    status, answer = await call(api, "PUT", f"{V1}/opportunities/O-acme_renewal",
                                await deal_payload(store, "O-acme_renewal", amount=250000))
    assert (status, answer["status"]) == (200, "unchanged")
    assert await snapshot(store) == before


# -- change history ----------------------------------------------------------------------------

CHANGES = [
    ("stage", {"stage": "Commit"}, "stage", "stage_change", "Negotiation", "Commit"),
    ("amount", {"amount": "300000.5"}, "amount", "amount_change", "250000.00", "300000.50"),
    ("close_date", {"close_date": "2031-12-31"}, "close_date", "close_date_change", None, "2031-12-31"),
    ("owner", {"owner_email": "rep.b@org.test"}, "owner", "owner_change", None, None),
    ("team", {"team_emails": ["se@org.test", "rep.c@org.test"]}, "team", "team_change", None, None),
    ("won", {"status": "won"}, "status", "won", "open", "won"),
    ("lost", {"status": "lost"}, "status", "lost", "open", "lost"),
]


async def change_rows(store: Store, opp_id: int) -> tuple[list[OpportunityHistory], list[TimelineEntry], list[OutboxItem]]:
    async with store.session() as s:
        history = list((await s.execute(select(OpportunityHistory).where(OpportunityHistory.opportunity_id == opp_id)
                                        .order_by(OpportunityHistory.id))).scalars())
        timeline = list((await s.execute(select(TimelineEntry).where(TimelineEntry.opportunity_id == opp_id)
                                         .order_by(TimelineEntry.id))).scalars())
        outbox = [o for o in (await s.execute(select(OutboxItem).order_by(OutboxItem.id))).scalars()
                  if o.payload.get("opportunity_id") == opp_id]
    return history, timeline, outbox


@pytest.mark.parametrize(("changes", "field", "kind", "old", "new"), [c[1:] for c in CHANGES],
                         ids=[c[0] for c in CHANGES])
async def test_each_tracked_change_gives_one_history_row_one_timeline_entry_and_one_event(
    api: TestClient, store: Store, org: Org, changes: dict[str, Any], field: str, kind: str, old: Any, new: Any
) -> None:
    opp_id = org.deals["acme_renewal"]
    status, answer = await call(api, "PUT", f"{V1}/opportunities/O-acme_renewal",
                                await deal_payload(store, "O-acme_renewal", **changes))
    assert (status, answer) == (200, {"key": "O-acme_renewal", "status": "updated"})
    history, timeline, outbox = await change_rows(store, opp_id)
    assert [(h.field, h.source) for h in history] == [(field, "api")]
    if old is not None:
        assert history[0].old_value == old
    if new is not None:
        assert history[0].new_value == new
    assert [t.kind for t in timeline] == [kind]
    assert [(o.operation, o.status) for o in outbox] == [("opportunity.changed", "pending")]
    assert outbox[0].payload["opportunity_id"] == opp_id and len(outbox[0].payload["changes"]) == 1
    # The entry is what GET …/timeline shows.
    status, page = await call(api, "GET", f"{V1}/opportunities/O-acme_renewal/timeline")
    assert status == 200 and [i["kind"] for i in page["items"]] == [kind]
    # Sending the new state again changes nothing more.
    status, answer = await call(api, "PUT", f"{V1}/opportunities/O-acme_renewal",
                                await deal_payload(store, "O-acme_renewal", **changes))
    assert answer["status"] == "unchanged"
    assert tuple(len(rows) for rows in await change_rows(store, opp_id)) == (1, 1, 1)


async def test_change_texts_name_people_and_values(api: TestClient, store: Store, org: Org) -> None:
    for changes in ({"owner_email": "rep.b@org.test"}, {"team_emails": ["rep.c@org.test", "se@org.test"]},
                    {"amount": "1234567.8"}, {"stage": "Commit"}):
        status, _ = await call(api, "PUT", f"{V1}/opportunities/O-acme_renewal",
                               await deal_payload(store, "O-acme_renewal", **changes))
        assert status == 200
    _, timeline, _ = await change_rows(store, org.deals["acme_renewal"])
    assert [t.text for t in timeline] == [
        "Owner: Rita Rep → Ben Rep",
        "Deal team: Sam Engineer → Cara Rep, Sam Engineer",
        "Amount: 250,000.00 → 1,234,567.80",
        "Stage: Negotiation → Commit",
    ]


async def test_reopening_a_won_deal_is_a_reopened_entry(api: TestClient, store: Store, org: Org) -> None:
    opp_id = org.deals["umbrella_platform"]
    status, answer = await call(api, "PUT", f"{V1}/opportunities/O-umbrella_platform",
                                await deal_payload(store, "O-umbrella_platform", status="open"))
    assert (status, answer["status"]) == (200, "updated")
    history, timeline, outbox = await change_rows(store, opp_id)
    assert [(h.field, h.old_value, h.new_value) for h in history] == [("status", "won", "open")]
    assert [t.kind for t in timeline] == ["reopened"] and "was won" in (timeline[0].text or "")
    assert len(outbox) == 1
    assert (await load_opp(store, "O-umbrella_platform")).closed_at is None


async def test_a_sequence_of_changes_is_recorded_in_order(api: TestClient, store: Store, org: Org) -> None:
    steps: list[dict[str, Any]] = [{"stage": "Commit"}, {"amount": "260000"}, {"close_date": "2032-01-15"},
             {"owner_email": "rep.b@org.test"}, {"team_emails": []}, {"status": "won", "stage": "Closed Won"},
             {"status": "open"}, {"status": "lost"}]
    for step in steps:
        status, answer = await call(api, "PUT", f"{V1}/opportunities/O-acme_renewal",
                                    await deal_payload(store, "O-acme_renewal", **step))
        assert (status, answer["status"]) == (200, "updated")
    history, timeline, outbox = await change_rows(store, org.deals["acme_renewal"])
    assert [h.field for h in history] == ["stage", "amount", "close_date", "owner", "team", "stage", "status",
                                          "status", "status"]
    assert [t.kind for t in timeline] == ["stage_change", "amount_change", "close_date_change", "owner_change",
                                          "team_change", "stage_change", "won", "reopened", "lost"]
    assert len(outbox) == len(steps)  # one event per touched deal per request, however many fields
    assert len(outbox[5].payload["changes"]) == 2
    status, page = await call(api, "GET", f"{V1}/opportunities/O-acme_renewal/timeline?limit=500")
    assert [i["kind"] for i in page["items"]] == [t.kind for t in reversed(timeline)]


async def test_a_name_change_is_an_update_without_history(api: TestClient, store: Store, org: Org) -> None:
    status, answer = await call(api, "PUT", f"{V1}/opportunities/O-acme_renewal",
                                await deal_payload(store, "O-acme_renewal", name="ACME Renewal 2028", probability=70))
    assert (status, answer["status"]) == (200, "updated")
    history, timeline, _ = await change_rows(store, org.deals["acme_renewal"])
    assert history == [] and timeline == []
    assert (await load_opp(store, "O-acme_renewal")).name == "ACME Renewal 2028"


async def test_bulk_changes_give_one_event_per_touched_deal(api: TestClient, store: Store, org: Org) -> None:
    items = [
        {"external_id": "O-acme_renewal", **await deal_payload(store, "O-acme_renewal", stage="Commit")},
        {"external_id": "O-acme_pilot", **await deal_payload(store, "O-acme_pilot", stage="Proposal", amount="45000")},
        {"external_id": "O-globex_expansion", **await deal_payload(store, "O-globex_expansion")},
    ]
    status, answer = await call(api, "POST", f"{V1}/opportunities/bulk", {"items": items})
    assert status == 200
    assert [r["status"] for r in answer["results"]] == ["updated", "updated", "unchanged"]
    assert await count(store, OpportunityHistory) == 3
    assert await count(store, TimelineEntry) == 3
    events = await count(store, OutboxItem, OutboxItem.operation == "opportunity.changed")
    assert events == 2


# -- bulk --------------------------------------------------------------------------------------

async def test_users_bulk_applies_good_items_and_names_the_field_of_bad_ones(
    api: TestClient, store: Store, org: Org
) -> None:
    items: list[Any] = [
        {"email": "Report@Org.Test", "name": "Rhea Report", "manager_email": "boss@org.test"},  # boss comes later
        {"email": "boss@org.test", "name": "Bo Boss", "role": "manager", "manager_email": "vp@org.test"},
        {"email": "bad-email", "name": "Bad Email"},
        {"email": "king@org.test", "name": "King", "role": "king"},
        {"email": "orphan@org.test", "name": "Orphan", "manager_email": "ghost@org.test"},
        {"name": "No Key"},
        {"email": "extra@org.test", "name": "Extra", "shoe_size": 44},
        "not an object",
    ]
    status, answer = await call(api, "POST", f"{V1}/users/bulk", {"items": items})
    assert status == 200
    results = answer["results"]
    assert len(results) == len(items)
    assert [r["status"] for r in results] == ["created", "created"] + ["error"] * 6
    assert results[0]["key"] == "report@org.test"
    fields = [r["error"]["field"] for r in results[2:]]
    assert fields == ["email", "role", "manager_email", "email", "shoe_size", "email"]
    assert all(r["error"]["message"] for r in results[2:])
    async with store.session() as s:
        users = {u.email: u for u in (await s.execute(select(User))).scalars()}
    assert users["report@org.test"].manager_id == users["boss@org.test"].id
    assert users["boss@org.test"].manager_id == org.users["vp"]
    assert not {"bad-email", "king@org.test", "orphan@org.test", "extra@org.test"} & set(users)
    assert await audited(store, "user") == {"report@org.test", "boss@org.test"}


async def test_opportunities_bulk_partial_failure(api: TestClient, store: Store, org: Org) -> None:
    items = [
        {"external_id": "O-good", **new_deal()},
        {"external_id": "O-acme_renewal", **await deal_payload(store, "O-acme_renewal", stage="Commit")},
        {"external_id": "O-lots", **new_deal(amount="lots")},
        {"external_id": "O-date", **new_deal(close_date="31/12/2026")},
        {"external_id": "O-acct", **new_deal(account_external_id="A-ghost")},
        {"external_id": "O-team", **new_deal(team_emails=["ghost@org.test"])},
        {**new_deal()},
        {"external_id": "  ", **new_deal()},
        {"external_id": "has space", **new_deal()},
        {"external_id": 42, **new_deal()},
    ]
    status, answer = await call(api, "POST", f"{V1}/opportunities/bulk", {"items": items})
    assert status == 200
    results = answer["results"]
    assert [(r["key"], r["status"]) for r in results[:2]] == [("O-good", "created"), ("O-acme_renewal", "updated")]
    assert [r["status"] for r in results[2:]] == ["error"] * 8
    assert [r["error"]["field"] for r in results[2:]] == [
        "amount", "close_date", "account_external_id", "team_emails", "external_id", "external_id", "external_id",
        "external_id"]
    async with store.session() as s:
        keys = set((await s.execute(select(Opportunity.external_id))).scalars())
    assert "O-good" in keys and not {"O-lots", "O-date", "O-acct", "O-team", "has space"} & keys
    assert (await load_opp(store, "O-acme_renewal")).stage == "Commit"


@pytest.mark.parametrize("kind", list(RECORDS))
async def test_bulk_validated_at_once_or_item_by_item_stores_the_same(api: TestClient, store: Store, kind: str) -> None:
    """A bulk with no bad item is validated in one call from the bytes; one bad item sends the
    whole bulk down the item-by-item path. Both must normalise keys and fields identically."""
    messy_key = {"users": "  Full@Org.TEST ", "accounts": " A-full ", "contacts": " C-full", "opportunities": "O-full "}
    clean_key = {"users": "full@org.test", "accounts": "A-full", "contacts": "C-full", "opportunities": "O-full"}
    good = {KEY_FIELD[kind]: messy_key[kind], **FULL[kind], "name": f"  {FULL[kind]['name']}  "}
    status, fast = await call(api, "POST", f"{V1}/{kind}/bulk", {"items": [good]})
    assert status == 200 and fast["results"] == [{"key": clean_key[kind], "status": "created"}]
    after_fast = await snapshot(store)
    status, slow = await call(api, "POST", f"{V1}/{kind}/bulk", {"items": [good, {KEY_FIELD[kind]: "bad key"}]})
    assert status == 200
    assert slow["results"][0] == {"key": clean_key[kind], "status": "unchanged"}
    assert slow["results"][1]["status"] == "error"
    assert await snapshot(store) == after_fast


async def test_bulk_constraint_conflict_fails_only_the_offending_item(api: TestClient, store: Store, org: Org) -> None:
    items = [{"email": "one@org.test", "name": "One", "slack_user_id": "U0SAME"},
             {"email": "two@org.test", "name": "Two", "slack_user_id": "U0SAME"},
             {"email": "three@org.test", "name": "Three"}]
    status, answer = await call(api, "POST", f"{V1}/users/bulk", {"items": items})
    assert status == 200
    assert [r["status"] for r in answer["results"]] == ["created", "error", "created"]
    assert "slack_user_id" in answer["results"][1]["error"]["message"]
    assert await count(store, User, User.email.in_(["one@org.test", "three@org.test"])) == 2
    assert await count(store, User, User.email == "two@org.test") == 0


async def test_bulk_contacts_and_accounts(api: TestClient, store: Store) -> None:
    status, answer = await call(api, "POST", f"{V1}/accounts/bulk", {"items": [
        {"external_id": "A-b1", "name": "Bulk One"}, {"external_id": "A-b2", "name": "Bulk Two", "owner_email": "x"}]})
    assert [r["status"] for r in answer["results"]] == ["created", "error"]
    assert answer["results"][1]["error"]["field"] == "owner_email"
    status, answer = await call(api, "POST", f"{V1}/contacts/bulk", {"items": [
        {"external_id": "C-b1", "name": "Cee One", "account_external_id": "A-b1"},
        {"external_id": "C-b2", "name": "Cee Two", "account_external_id": "A-b2"}]})
    assert [r["status"] for r in answer["results"]] == ["created", "error"]
    assert answer["results"][1]["error"]["field"] == "account_external_id"
    assert await count(store, Contact, Contact.external_id == "C-b1") == 1


# -- visibility --------------------------------------------------------------------------------

@pytest.mark.parametrize(("who", "sees"), [
    ("rep_a", True), ("se", True), ("mgr1", True), ("vp", True), ("admin", True),
    ("rep_b", False), ("rep_c", False), ("mgr2", False), ("loner", False),
])
async def test_opportunity_visibility_follows_the_acting_user(
    api: TestClient, store: Store, who: str, sees: bool
) -> None:
    as_who = {"X-Dealbot-User": Org.email(who)}
    _, missing = await call(api, "GET", f"{V1}/opportunities/O-nope", headers=as_who)
    for path in ("O-acme_renewal", "O-acme_renewal/timeline", "O-acme_renewal/timeline?format=csv"):
        status, answer = await call(api, "GET", f"{V1}/opportunities/{path}", headers=as_who)
        if sees:
            assert status == 200
        else:
            assert (status, answer) == (404, missing)  # a hidden deal looks exactly like a missing one
    _, found = await call(api, "GET", f"{V1}/search?q=acme renewal", headers=as_who)
    assert ("O-acme_renewal" in [i["external_id"] for i in found["items"]]) is sees


async def test_search_respects_visibility(api: TestClient) -> None:
    _, as_b = await call(api, "GET", f"{V1}/search?q=acme", headers={"X-Dealbot-User": "rep.b@org.test"})
    keys = {i["external_id"] for i in as_b["items"]}
    assert {"A-acme", "O-acme_pilot"} <= keys and "O-acme_renewal" not in keys
    _, as_api = await call(api, "GET", f"{V1}/search?q=initech")
    assert "O-initech_secret" in {i["external_id"] for i in as_api["items"]}  # no header: admin scope
    _, as_a = await call(api, "GET", f"{V1}/search?q=initech", headers={"X-Dealbot-User": "rep.a@org.test"})
    assert "O-initech_secret" not in {i["external_id"] for i in as_a["items"]}


@pytest.mark.parametrize("path", ["opportunities/O-acme_renewal", "opportunities/O-acme_renewal/timeline",
                                  "opportunities/O-nope", "search?q=acme"])
async def test_an_unknown_acting_user_is_403(api: TestClient, path: str) -> None:
    status, answer = await call(api, "GET", f"{V1}/{path}", headers={"X-Dealbot-User": "stranger@else.where"})
    assert status == 403 and "stranger@else.where" in answer["error"]


async def test_search_finds_all_kinds_with_typos_and_validates_q(api: TestClient) -> None:
    status, answer = await call(api, "GET", f"{V1}/search?q=globx")
    assert status == 200
    found = {(i["type"], i["external_id"]) for i in answer["items"]}
    assert {("account", "A-globex"), ("opportunity", "O-globex_expansion")} <= found
    assert answer["items"] == sorted(answer["items"], key=lambda i: -i["score"])
    _, answer = await call(api, "GET", f"{V1}/search?q=peter gibons")
    assert ("contact", "C-gibbons") in {(i["type"], i["external_id"]) for i in answer["items"]}
    for q in ("", "%20%20", "x" * 201):
        status, answer = await call(api, "GET", f"{V1}/search?q={q}")
        assert status == 422 and "q must be" in answer["error"]
    status, _ = await call(api, "GET", f"{V1}/search")
    assert status == 422


# -- timeline ----------------------------------------------------------------------------------

async def add_entries(store: Store, opp_id: int, texts: list[str], start: datetime | None = None,
                      step: timedelta = timedelta(minutes=1), author_id: int | None = None) -> None:
    start = start or utcnow() - timedelta(days=1)
    async with store.transaction() as s:
        for i, text in enumerate(texts):
            s.add(TimelineEntry(opportunity_id=opp_id, kind="note", text=text, author_id=author_id,
                                occurred_at=start + step * i, created_at=utcnow()))


async def test_timeline_pages_with_limit_and_before(api: TestClient, store: Store, org: Org) -> None:
    opp_id = org.deals["acme_renewal"]
    await add_entries(store, opp_id, [f"note {i}" for i in range(11)], author_id=org.users["rep_a"])
    seen: list[dict[str, Any]] = []
    pages = 0
    path = f"{V1}/opportunities/O-acme_renewal/timeline?limit=4"
    while True:
        status, page = await call(api, "GET", path)
        assert status == 200 and len(page["items"]) <= 4
        seen += page["items"]
        pages += 1
        if page["next_before"] is None:
            break
        assert page["next_before"] == page["items"][-1]["id"]
        path = f"{V1}/opportunities/O-acme_renewal/timeline?limit=4&before={page['next_before']}"
    assert pages == 3
    assert [i["text"] for i in seen] == [f"note {i}" for i in reversed(range(11))]
    assert {i["author"] for i in seen} == {"Rita Rep"}
    # An exact multiple of the page size does not promise a page that is not there.
    _, page = await call(api, "GET", f"{V1}/opportunities/O-acme_renewal/timeline?limit=11")
    assert len(page["items"]) == 11 and page["next_before"] is None
    _, page = await call(api, "GET", f"{V1}/opportunities/O-acme_renewal/timeline")
    assert len(page["items"]) == 11  # default limit 50


async def test_timeline_paging_sees_every_entry_once_when_times_are_not_in_id_order(
    api: TestClient, store: Store, org: Org
) -> None:
    opp_id = org.deals["acme_renewal"]
    base = utcnow() - timedelta(days=2)
    async with store.transaction() as s:  # a message captured late: a newer id with an older time
        for minutes, text in ((10, "b"), (5, "a"), (20, "c"), (1, "first")):
            s.add(TimelineEntry(opportunity_id=opp_id, kind="note", text=text,
                                occurred_at=base + timedelta(minutes=minutes)))
    seen: list[str] = []
    path = f"{V1}/opportunities/O-acme_renewal/timeline?limit=1"
    for _ in range(10):
        _, page = await call(api, "GET", path)
        seen += [i["text"] for i in page["items"]]
        if page["next_before"] is None:
            break
        path = f"{V1}/opportunities/O-acme_renewal/timeline?limit=1&before={page['next_before']}"
    assert seen == ["c", "b", "a", "first"]


async def test_timeline_parameters_are_validated(api: TestClient) -> None:
    for query in ("limit=0", "limit=501", "limit=ten", "before=x", "limit=1.5", "before=99999999999999999999999",
                  "before=-1"):
        status, answer = await call(api, "GET", f"{V1}/opportunities/O-acme_renewal/timeline?{query}")
        assert status == 422, (query, answer)
        assert answer["error"]
    status, page = await call(api, "GET", f"{V1}/opportunities/O-acme_renewal/timeline?limit=500&before=1")
    assert (status, page) == (200, {"items": [], "next_before": None})


async def test_timeline_csv_export_has_every_entry_quoted_properly(api: TestClient, store: Store, org: Org) -> None:
    opp_id = org.deals["acme_renewal"]
    tricky = ['He said "yes", then left', "line one\nline two", "=HYPERLINK(\"x\")", "plain"]
    await add_entries(store, opp_id, tricky, author_id=org.users["se"])
    await call(api, "PUT", f"{V1}/opportunities/O-acme_renewal", await deal_payload(store, "O-acme_renewal", stage="Commit"))
    async with api.get(f"{V1}/opportunities/O-acme_renewal/timeline?format=csv", headers=AUTH) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/csv")
        assert 'filename="timeline-O-acme_renewal.csv"' in response.headers["Content-Disposition"]
        body = await response.text()
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == ["id", "occurred_at", "kind", "author", "text", "permalink"]
    assert [r[4] for r in rows[1:]] == ["Stage: Negotiation → Commit", *reversed(tricky)]
    assert [r[2] for r in rows[1:]] == ["stage_change"] + ["note"] * 4
    assert rows[2][3] == "Sam Engineer"
    async with store.session() as s:
        ids = sorted((await s.execute(select(TimelineEntry.id))).scalars())
    assert sorted(int(r[0]) for r in rows[1:]) == ids


async def test_timeline_csv_export_goes_past_one_page(api: TestClient, store: Store, org: Org) -> None:
    # 2,100 entries whose times are a permutation of their ids: the export must follow time, not id.
    base = utcnow() - timedelta(days=3)
    minute = [(i * 7919) % 2100 for i in range(2100)]
    async with store.transaction() as s:
        await s.execute(insert(TimelineEntry), [
            {"opportunity_id": org.deals["acme_pilot"], "kind": "note", "text": f"n{minute[i]}",
             "occurred_at": base + timedelta(minutes=minute[i]), "created_at": base} for i in range(2100)])
    async with api.get(f"{V1}/opportunities/O-acme_pilot/timeline?format=csv", headers=AUTH) as response:
        rows = list(csv.reader(io.StringIO(await response.text())))
    assert len(rows) == 2101
    assert [r[4] for r in rows[1:]] == [f"n{m}" for m in reversed(range(2100))]


# -- duplicates --------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "domain", "expected"), [
    ("Acme GmbH", None, [("A-acme", "same name")]),
    ("ÀCME, S.A.", None, [("A-acme", "same name")]),
    ("acme corp", None, [("A-acme", "same name")]),
    ("SOCIETE GENERALE DES EAUX SARL", None, [("A-societe", "same name")]),
    ("Totally Different Widgets", "GLOBEX.example", [("A-globex", "same domain")]),
    ("Blue Harbor Logistics", "blueharbor.example", []),
    ("Acme Rockets Unlimited", None, []),
])
async def test_new_accounts_that_look_like_existing_ones_are_flagged(
    api: TestClient, store: Store, name: str, domain: str | None, expected: list[tuple[str, str]]
) -> None:
    body = {"name": name, **({"domain": domain} if domain else {})}
    status, answer = await call(api, "PUT", f"{V1}/accounts/A-new", body)
    assert status == 201 and answer["status"] == "created"  # flagged, still stored
    found = [(d["external_id"], d["reason"]) for d in answer.get("possible_duplicates", [])]
    assert found == expected
    if not expected:
        assert "possible_duplicates" not in answer
    assert await count(store, Account, Account.external_id == "A-new") == 1
    # An update of the account is not flagged again.
    status, answer = await call(api, "PUT", f"{V1}/accounts/A-new", {**body, "industry": "Other"})
    assert answer == {"key": "A-new", "status": "updated"}


async def test_duplicates_within_one_bulk_are_flagged(api: TestClient) -> None:
    status, answer = await call(api, "POST", f"{V1}/accounts/bulk", {"items": [
        {"external_id": "A-n1", "name": "Nova Labs Ltd", "domain": "nova.example"},
        {"external_id": "A-n2", "name": "NOVA LABS, Inc."},
        {"external_id": "A-n3", "name": "Other Thing", "domain": "nova.example"},
        {"external_id": "A-n4", "name": "Acme AG"},
        {"external_id": "A-n5", "name": "Unrelated Ventures"},
    ]})
    assert status == 200
    flagged = [[(d["external_id"], d["reason"]) for d in r.get("possible_duplicates", [])] for r in answer["results"]]
    assert flagged == [[], [("A-n1", "same name")], [("A-n1", "same domain")], [("A-acme", "same name")], []]


async def test_new_contact_with_a_known_email_is_flagged(api: TestClient) -> None:
    status, answer = await call(api, "PUT", f"{V1}/contacts/C-dup", {
        "name": "W. Coyote", "email": "COYOTE@acme.example", "account_external_id": "A-acme"})
    assert status == 201
    assert answer["possible_duplicates"] == [{"external_id": "C-coyote", "name": "Wile E. Coyote", "reason": "same email"}]
    _, answer = await call(api, "PUT", f"{V1}/contacts/C-other", {
        "name": "Road Runner", "email": "beep@acme.example", "account_external_id": "A-acme"})
    assert "possible_duplicates" not in answer


# -- erasure -----------------------------------------------------------------------------------

async def test_erasing_a_contact_removes_personal_data_everywhere(api: TestClient, store: Store, org: Org) -> None:
    await call(api, "PUT", f"{V1}/contacts/C-coyote", {"name": "Wile E. Coyote", "email": "coyote@acme.example",
                                                       "phone": "+1 555 0199", "title": "Head of Procurement",
                                                       "account_external_id": "A-acme"})
    _, found = await call(api, "GET", f"{V1}/search?q=wile coyote")
    assert "C-coyote" in [i["external_id"] for i in found["items"]]  # found before
    counts = await store.counts()

    status, answer = await call(api, "DELETE", f"{V1}/contacts/C-coyote", headers={"X-Dealbot-User": "dpo@org.test"})
    assert (status, answer) == (200, {"key": "C-coyote", "status": "erased"})

    async with store.session() as s:
        contact = (await s.execute(select(Contact).where(Contact.external_id == "C-coyote"))).scalar_one()
        audit = list((await s.execute(select(AuditLog).where(AuditLog.action == "contact.erase"))).scalars())
    assert "Coyote" not in contact.name and "Wile" not in contact.name
    assert (contact.email, contact.phone, contact.title) == (None, None, None)
    assert contact.erased_at is not None and contact.account_id == org.accounts["acme"]
    assert [(a.entity_id, a.actor, a.via) for a in audit] == [("C-coyote", "dpo@org.test", "api")]
    after = await store.counts()
    assert after == {**counts, "audit_log": counts["audit_log"] + 1}  # rows kept, anonymised

    for q in ("wile coyote", "coyote", "Wile E. Coyote"):
        _, found = await call(api, "GET", f"{V1}/search?q={q}")
        assert "C-coyote" not in [i["external_id"] for i in found["items"]]
        assert not any("Coyote" in i["name"] for i in found["items"])
    admin = await store.actor_for(email="admin@org.test")
    assert await store.find_contacts(admin, "Wile E. Coyote") == []
    assert await store.find_contacts(admin, "coyote") == []

    before = await snapshot(store)
    status, answer = await call(api, "DELETE", f"{V1}/contacts/C-coyote")
    assert (status, answer) == (200, {"key": "C-coyote", "status": "already_erased"})
    # The source CRM pushing the contact again does not bring the data back.
    status, answer = await call(api, "PUT", f"{V1}/contacts/C-coyote", {"name": "Wile E. Coyote",
                                                                       "account_external_id": "A-acme"})
    assert status == 422 and answer["field"] == "external_id"
    assert await snapshot(store) == before


async def add_transcript(store: Store, org: Org) -> None:
    opp_id = org.deals["acme_renewal"]
    async with store.transaction() as s:
        room = DealRoom(opportunity_id=opp_id, platform="slack", channel_id="C0ROOM", channel_name="deal-acme",
                        status="active")
        s.add(room)
        await s.flush()
        for ref, author, text in (("1.1", "rep_a", "Rita here: CFO said yes, call me on +1 555 0111"),
                                  ("1.2", "se", "Sam: the POC is done"), ("1.3", "rep_a", "second message by Rita")):
            s.add(TranscriptMessage(deal_room_id=room.id, opportunity_id=opp_id, platform="slack", channel_id="C0ROOM",
                                    message_ref=ref, author_id=org.users[author], text=text,
                                    previous_versions=[{"text": "earlier draft"}] if author == "rep_a" else None,
                                    posted_at=utcnow()))


async def test_erasing_a_user_replaces_identity_and_purges_their_transcript(
    api: TestClient, store: Store, org: Org
) -> None:
    await add_transcript(store, org)
    counts = await store.counts()
    status, answer = await call(api, "DELETE", f"{V1}/users/Rep.A@org.test")
    assert status == 200 and answer["status"] == "erased"

    async with store.session() as s:
        rita = await s.get(User, org.users["rep_a"])
        messages = {m.message_ref: m for m in (await s.execute(select(TranscriptMessage))).scalars()}
        audit = list((await s.execute(select(AuditLog).where(AuditLog.action == "user.erase"))).scalars())
    assert rita is not None and "Rita" not in rita.name and "rep.a" not in rita.email
    assert rita.erased_at is not None and rita.time_zone is None
    for ref in ("1.1", "1.3"):
        assert messages[ref].text is None and messages[ref].previous_versions is None
        assert messages[ref].purged_at is not None
    assert messages["1.2"].text == "Sam: the POC is done" and messages["1.2"].purged_at is None
    assert [(a.entity_type, a.entity_id, a.via) for a in audit] == [("user", str(org.users["rep_a"]), "api")]
    assert await store.counts() == {**counts, "audit_log": counts["audit_log"] + 1}

    # Their deals stay (pipelines still add up) and show the anonymised owner.
    _, got = await call(api, "GET", f"{V1}/opportunities/O-acme_renewal")
    assert got["owner_email"] == rita.email
    # They can no longer act through the API, and a second erasure writes nothing.
    status, _ = await call(api, "GET", f"{V1}/search?q=acme", headers={"X-Dealbot-User": "rep.a@org.test"})
    assert status == 403
    before = await snapshot(store)
    status, answer = await call(api, "DELETE", f"{V1}/users/rep.a@org.test")
    assert status in (200, 404) and answer.get("status", "already_erased") == "already_erased"
    assert await snapshot(store) == before


async def test_an_erased_user_is_not_recreated_by_the_source(api: TestClient, store: Store, org: Org) -> None:
    await call(api, "DELETE", f"{V1}/users/rep.c@org.test")
    status, answer = await call(api, "PUT", f"{V1}/users/rep.c@org.test", {"name": "Cara Rep"})
    assert status == 422 and answer["field"] == "email"


async def test_an_erased_users_name_leaves_the_timeline(api: TestClient, store: Store, org: Org) -> None:
    await call(api, "PUT", f"{V1}/opportunities/O-acme_renewal",
               await deal_payload(store, "O-acme_renewal", owner_email="rep.b@org.test"))
    await call(api, "DELETE", f"{V1}/users/rep.a@org.test")
    _, page = await call(api, "GET", f"{V1}/opportunities/O-acme_renewal/timeline")
    assert page["items"] and not any("Rita" in (i["text"] or "") for i in page["items"])


# -- OpenAPI -----------------------------------------------------------------------------------

FULL = {
    "users": {"name": "Full User", "role": "manager", "manager_email": "vp@org.test", "time_zone": "Asia/Tokyo",
              "slack_user_id": "U0FULL", "teams_aad_id": "00000000-0000-0000-0000-000000000001"},
    "accounts": {"name": "Full Account", "domain": "full.example", "industry": "Retail",
                 "owner_email": "rep.a@org.test", "source_updated_at": ts(0)},
    "contacts": {"name": "Full Contact", "email": "full@full.example", "title": "CTO", "phone": "+49 30 1234",
                 "account_external_id": "A-acme", "source_updated_at": ts(0)},
    "opportunities": {**new_deal(), "status": "won", "probability": 100, "source_updated_at": ts(0)},
}
SAMPLE_KEY = {"users": "full@org.test", "accounts": "A-full", "contacts": "C-full", "opportunities": "O-full"}


async def test_openapi_document_is_served(api: TestClient) -> None:
    status, doc = await call(api, "GET", f"{V1}/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc == openapi_document()


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _object_admits(doc: dict[str, Any], schema: dict[str, Any], item: dict[str, Any]) -> list[str]:
    """Why `item` is refused by `schema`, for the object keywords the document uses (allOf,
    properties, required, additionalProperties); empty when it is admitted."""
    schema = _resolve(doc, schema)
    problems: list[str] = []
    for part in schema.get("allOf", []):
        problems += _object_admits(doc, part, item)
    properties = schema.get("properties", {})
    problems += [f"{name} is required" for name in schema.get("required", []) if name not in item]
    if schema.get("additionalProperties") is False:
        problems += [f"{name} is not allowed" for name in item if name not in properties]
    return problems


@pytest.mark.parametrize("kind", list(RECORDS))
async def test_openapi_schema_matches_what_the_server_accepts(api: TestClient, store: Store, kind: str) -> None:
    doc = (await call(api, "GET", f"{V1}/openapi.json"))[1]
    key_name = KEY_FIELD[kind]
    put = doc["paths"][f"/api/v1/{kind}/{{{key_name}}}"]["put"]
    schema = _resolve(doc, put["requestBody"]["content"]["application/json"]["schema"])
    assert schema["additionalProperties"] is False
    properties, required = set(schema["properties"]), set(schema.get("required", []))
    assert set(FULL[kind]) == properties, "FULL must exercise every documented property"
    assert [p["name"] for p in put["parameters"] if p["in"] == "path"] == [key_name]

    # Every documented property is accepted, all at once.
    status, answer = await call(api, "PUT", f"{V1}/{kind}/{SAMPLE_KEY[kind]}", FULL[kind])
    assert status == 201, answer
    # Each property the schema calls optional can be left out; each required one cannot.
    for name in sorted(properties):
        status, answer = await call(api, "PUT", f"{V1}/{kind}/{SAMPLE_KEY[kind]}",
                                    {k: v for k, v in FULL[kind].items() if k != name})
        if name in required:
            assert status == 422 and name in [d["field"] for d in answer["details"]], (name, answer)
        else:
            assert status == 200, (name, answer)
    # Anything undocumented is refused, naming the field (additionalProperties: false).
    status, answer = await call(api, "PUT", f"{V1}/{kind}/{SAMPLE_KEY[kind]}", {**FULL[kind], "undocumented": 1})
    assert status == 422 and [d["field"] for d in answer["details"]] == ["undocumented"]

    # The bulk item schema admits the same record plus its key, and nothing else.
    bulk = doc["paths"][f"/api/v1/{kind}/bulk"]["post"]
    body_schema = _resolve(doc, bulk["requestBody"]["content"]["application/json"]["schema"])
    assert body_schema["properties"]["items"]["maxItems"] == 5000
    item_schema = body_schema["properties"]["items"]["items"]
    item = {key_name: SAMPLE_KEY[kind], **FULL[kind]}
    assert _object_admits(doc, item_schema, item) == []
    assert _object_admits(doc, item_schema, {**item, "undocumented": 1}) == ["undocumented is not allowed"]
    assert _object_admits(doc, item_schema, FULL[kind]) == [f"{key_name} is required"]
    await call(api, "PUT", f"{V1}/{kind}/{SAMPLE_KEY[kind]}", FULL[kind])
    status, answer = await call(api, "POST", f"{V1}/{kind}/bulk", {"items": [item]})
    assert status == 200 and answer["results"][0]["status"] == "unchanged", answer


SAMPLE_PARAMS = {"email": "rep.b@org.test", "external_id": "O-acme_renewal"}


def _concrete(template: str, operation: dict[str, Any], method: str) -> str:
    path = template
    for param in operation.get("parameters", []):
        if param["in"] == "path":
            path = path.replace(f"{{{param['name']}}}", SAMPLE_PARAMS[param["name"]])
    assert "{" not in path, f"undocumented path parameter in {template}"
    if method == "delete":
        path = path.replace("O-acme_renewal", "C-coyote")
    return path


async def test_every_documented_path_is_routed_by_the_app_and_every_route_documented(api: TestClient) -> None:
    doc = (await call(api, "GET", f"{V1}/openapi.json"))[1]
    documented: list[tuple[str, str]] = []
    for template, operations in doc["paths"].items():
        for method, operation in operations.items():
            path = _concrete(template, operation, method)
            documented.append((method.upper(), path))
            query = "?q=acme" if path.endswith("/search") else ""
            bulk = path.endswith(("/bulk", "/digest-subscriptions")) and method != "get"
            status, answer = await call(api, method.upper(), path + query, {"items": []} if bulk else None)
            assert status != 405 and answer != {"error": "no such endpoint"}, (method, path, answer)
            assert status < 500, (method, path, answer)
    # PUT and bulk per kind, 2 erasures, deal, timeline, search, digest subscriptions (PUT, GET)
    assert len(documented) == 4 * 2 + 2 + 2 + 1 + 2

    # Conversely, every API route of the app answers at least one documented request.
    app = api.app
    assert app is not None
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        if route.method == "HEAD" or not (info.get("path") or info.get("formatter", "")).startswith("/api/v1/"):
            continue
        if info.get("path") == "/api/v1/openapi.json":
            continue
        pattern = info.get("pattern")
        hits = [p for m, p in documented if m == route.method and (pattern.fullmatch(p) if pattern else p == info["path"])]
        assert hits, f"{route.method} {info} is not in the OpenAPI document"


# -- property: ordering by source_updated_at ---------------------------------------------------

TRACKED_VALUES: dict[str, list[Any]] = {
    "stage": ["Discovery", "Proposal", "Commit"],
    "amount": ["1000.00", "2500.50", "1000000.00"],
    "close_date": ["2031-01-01", "2031-06-30", None],
    "owner_email": ["rep.a@org.test", "rep.b@org.test"],
    "status": ["open", "won", "lost"],
    "team_emails": [[], ["se@org.test"], ["se@org.test", "rep.c@org.test"]],
}
version_strategy = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in TRACKED_VALUES.items()}
                                         | {"name": st.sampled_from(["Deal", "Deal v2"])})
_example_ids = itertools.count()


def _tracked_changes(old: dict[str, Any], new: dict[str, Any]) -> int:
    changed = sum(old[f] != new[f] for f in ("stage", "amount", "close_date", "owner_email", "status"))
    return changed + (set(old["team_emails"]) != set(new["team_emails"]))


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(versions=st.lists(version_strategy, min_size=1, max_size=6), data=st.data())
async def test_out_of_order_updates_end_at_the_newest_version(
    api: TestClient, store: Store, versions: list[dict[str, Any]], data: st.DataObject
) -> None:
    key = f"O-prop-{next(_example_ids)}"
    # Version i carries source time i; send them shuffled, some more than once.
    order = data.draw(st.permutations(range(len(versions))), label="order")
    repeats = data.draw(st.lists(st.integers(0, len(order)), max_size=4), label="repeat positions")
    sent = list(order)
    for position in repeats:
        sent.insert(position, sent[min(position, len(sent) - 1)])

    expected_status, stored, history = [], None, 0
    for i in sent:
        if stored is None:
            expected_status.append("created")
            stored = i
        elif i < stored:
            expected_status.append("stale")
        else:
            changes = _tracked_changes(versions[stored], versions[i])
            untracked = versions[stored]["name"] != versions[i]["name"]
            expected_status.append("updated" if changes or untracked else "unchanged")
            history += changes
            stored = i

    statuses = []
    for i in sent:
        body = {**versions[i], "account_external_id": "A-acme", "currency": "EUR",
                "source_updated_at": ts(i)}
        status, answer = await call(api, "PUT", f"{V1}/opportunities/{key}", body)
        assert status in (200, 201), answer
        statuses.append(answer["status"])
    assert statuses == expected_status

    newest = versions[max(sent)]
    _, got = await call(api, "GET", f"{V1}/opportunities/{key}")
    assert {f: got[f] for f in ("stage", "amount", "close_date", "owner_email", "status", "name")} == {
        f: newest[f] for f in ("stage", "amount", "close_date", "owner_email", "status", "name")}
    assert set(got["team_emails"]) == set(newest["team_emails"])
    assert datetime.fromisoformat(got["source_updated_at"]) == WHEN + timedelta(hours=max(sent))
    opp = await load_opp(store, key)
    assert await count(store, OpportunityHistory, OpportunityHistory.opportunity_id == opp.id) == history
    assert await count(store, TimelineEntry, TimelineEntry.opportunity_id == opp.id) == history
