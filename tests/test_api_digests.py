"""The digest-subscription REST endpoints, over HTTP against the real aiohttp app and a real
database: admins subscribe managers in bulk (each item its own result, the valid ones saved even
beside bad ones) and list who gets a digest, when."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from bot.openapi import MAX_BULK
from bot.server import create_app
from bot.settings import load_settings
from crm_store import Store
from crm_store.models import DigestSubscription, User
from tests.org import Org

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PATH = "/api/v1/digest-subscriptions"


@pytest.fixture
async def api(store: Store, org: Org) -> AsyncIterator[TestClient]:
    # No outbox worker: nothing here is delivered, only saved.
    client = TestClient(TestServer(create_app(store, load_settings(dealbot_api_token=TOKEN), outbox=False)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def call(client: TestClient, method: str, body: Any = None, *,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request to the endpoint; the status and the decoded JSON body."""
    kwargs: dict[str, Any] = {"headers": AUTH if headers is None else headers}
    if body is not None:
        kwargs["json"] = body
    async with client.request(method, PATH, **kwargs) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def put(client: TestClient, *items: dict[str, Any]) -> list[dict[str, Any]]:
    status, answer = await call(client, "PUT", {"items": list(items)})
    assert status == 200, answer
    results: list[dict[str, Any]] = answer["results"]
    assert len(results) == len(items)
    return results


async def saved(store: Store) -> dict[str, DigestSubscription]:
    """Every subscription row, by its user's email."""
    async with store.session() as s:
        rows = (await s.execute(select(DigestSubscription, User.email)
                                .join(User, User.id == DigestSubscription.user_id))).all()
    return {email: sub for sub, email in rows}


def due_at(result: dict[str, Any]) -> datetime:
    due = datetime.fromisoformat(result["next_due_at"])
    assert due.utcoffset() == timedelta(0), "an instant in UTC"
    return due


def assert_next(due: datetime, zone: str, wall: str, within: timedelta, weekday: int | None = None) -> None:
    """`due` is the next occurrence: in the future, within one period (an hour more across a DST
    change), at `wall` in `zone`."""
    now = datetime.now(timezone.utc)
    assert now < due <= now + within + timedelta(hours=1)
    local = due.astimezone(ZoneInfo(zone))
    assert local.strftime("%H:%M") == wall
    if weekday is not None:
        assert local.weekday() == weekday


# -- subscribing in bulk -------------------------------------------------------------------------

async def test_a_bulk_saves_the_valid_items_and_names_the_field_of_each_bad_one(
        api: TestClient, store: Store) -> None:
    results = await put(
        api,
        {"email": "mgr1@org.test", "cadence": "daily", "time": "07:30"},
        {"email": "MGR2@org.test", "cadence": "weekly", "weekday": "friday", "time": "17:45",
         "time_zone": "America/New_York"},
        {"email": "vp@org.test", "cadence": "off"},
        {"email": "admin@org.test", "cadence": "weekly", "weekday": "saturday", "time": "09:00",
         "time_zone": "asia/tokyo", "platform": "teams"},
        {"email": "ghost@org.test", "cadence": "daily"},
        {"email": "rep.a@org.test", "cadence": "daily", "time": "25:00"},
        {"email": "rep.b@org.test", "cadence": "weekly", "weekday": "funday"},
        {"email": "rep.c@org.test", "cadence": "daily", "time_zone": "Mars/Olympus"},
        {"email": "se@org.test", "cadence": "daily", "colour": "blue"},
        {"email": "loner@org.test", "cadence": "hourly"},
    )
    mgr1, mgr2, vp, admin, *bad = results
    assert (mgr1["email"], mgr1["status"], mgr1["time_zone"]) == ("mgr1@org.test", "subscribed", "Europe/Berlin")
    assert_next(due_at(mgr1), "Europe/Berlin", "07:30", timedelta(days=1))
    assert (mgr2["email"], mgr2["status"], mgr2["time_zone"]) == ("mgr2@org.test", "subscribed", "America/New_York")
    assert_next(due_at(mgr2), "America/New_York", "17:45", timedelta(days=7), weekday=4)
    assert vp == {"email": "vp@org.test", "status": "off"}
    assert (admin["status"], admin["time_zone"]) == ("subscribed", "Asia/Tokyo")
    assert_next(due_at(admin), "Asia/Tokyo", "09:00", timedelta(days=7), weekday=5)

    assert [(r["email"], r["status"], r["field"]) for r in bad] == [
        ("ghost@org.test", "error", "email"), ("rep.a@org.test", "error", "time"),
        ("rep.b@org.test", "error", "weekday"), ("rep.c@org.test", "error", "time_zone"),
        ("se@org.test", "error", "colour"), ("loner@org.test", "error", "cadence")]
    assert all(r["error"] for r in bad)
    assert "Mars/Olympus" in bad[3]["error"] and "no CRM user" in bad[0]["error"]

    rows = await saved(store)
    assert sorted(rows) == ["admin@org.test", "mgr1@org.test", "mgr2@org.test", "vp@org.test"]
    assert (rows["mgr1@org.test"].cadence, rows["mgr1@org.test"].local_time, rows["mgr1@org.test"].weekday,
            rows["mgr1@org.test"].time_zone, rows["mgr1@org.test"].platform) == ("daily", "07:30", None, None, "slack")
    assert (rows["mgr2@org.test"].weekday, rows["mgr2@org.test"].time_zone) == (4, "America/New_York")
    assert (rows["admin@org.test"].time_zone, rows["admin@org.test"].platform) == ("Asia/Tokyo", "teams")
    assert (rows["vp@org.test"].enabled, rows["vp@org.test"].next_due_at) == (False, None)
    assert rows["mgr2@org.test"].next_due_at == due_at(mgr2)


async def test_the_list_shows_every_subscription_as_saved(api: TestClient) -> None:
    results = await put(
        api,
        {"email": "mgr2@org.test", "cadence": "weekly", "weekday": "friday", "time": "17:45",
         "time_zone": "America/New_York"},
        {"email": "mgr1@org.test", "cadence": "daily", "time": "07:30"},
        {"email": "vp@org.test", "cadence": "off"},
    )
    status, answer = await call(api, "GET")
    assert status == 200
    assert answer["items"] == [  # by email
        {"email": "mgr1@org.test", "cadence": "daily", "time": "07:30", "weekday": None, "time_zone": None,
         "platform": "slack", "next_due_at": results[1]["next_due_at"]},
        {"email": "mgr2@org.test", "cadence": "weekly", "time": "17:45", "weekday": "friday",
         "time_zone": "America/New_York", "platform": "slack", "next_due_at": results[0]["next_due_at"]},
        {"email": "vp@org.test", "cadence": "off", "time": "08:00", "weekday": None, "time_zone": None,
         "platform": "slack", "next_due_at": None},
    ]


async def test_subscribing_again_changes_the_one_subscription(api: TestClient, store: Store, org: Org) -> None:
    [first] = await put(api, {"email": "mgr1@org.test", "cadence": "daily", "time": "08:00"})
    [second] = await put(api, {"email": "mgr1@org.test", "cadence": "weekly", "weekday": "tuesday", "time": "10:15",
                               "time_zone": "Europe/London"})
    assert second["status"] == "subscribed" and second["next_due_at"] != first["next_due_at"]
    assert_next(due_at(second), "Europe/London", "10:15", timedelta(days=7), weekday=1)
    [sub] = (await saved(store)).values()
    assert (sub.user_id, sub.cadence, sub.weekday, sub.local_time, sub.time_zone, sub.enabled) == (
        org.users["mgr1"], "weekly", 1, "10:15", "Europe/London", True)
    assert await put(api, {"email": "mgr1@org.test", "cadence": "off"}) == [{"email": "mgr1@org.test", "status": "off"}]
    _, listed = await call(api, "GET")
    assert [(i["email"], i["cadence"], i["next_due_at"]) for i in listed["items"]] == [("mgr1@org.test", "off", None)]
    [back] = await put(api, {"email": "mgr1@org.test", "cadence": "daily", "time": "06:00"})
    assert_next(due_at(back), "Europe/Berlin", "06:00", timedelta(days=1))
    async with store.session() as s:
        assert (await s.execute(select(func.count()).select_from(DigestSubscription))).scalar_one() == 1
    [sub] = (await saved(store)).values()
    assert (sub.cadence, sub.enabled, sub.weekday, sub.time_zone) == ("daily", True, None, None)


# -- refusals ------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN}],
                         ids=["none", "wrong", "no-scheme"])
async def test_without_the_token_nothing_is_listed_or_saved(api: TestClient, store: Store,
                                                            headers: dict[str, str]) -> None:
    status, answer = await call(api, "GET", headers=headers)
    assert status == 401 and "token" in answer["error"]
    status, answer = await call(api, "PUT", {"items": [{"email": "mgr1@org.test", "cadence": "daily"}]},
                                headers=headers)
    assert status == 401 and "items" not in answer and "results" not in answer
    assert await saved(store) == {}
    assert (await call(api, "GET"))[0] == 200  # the right token is let in


async def test_at_most_5000_items_per_request(api: TestClient, store: Store) -> None:
    assert MAX_BULK == 5000
    first = {"email": "mgr1@org.test", "cadence": "daily"}
    unknown = [{"email": f"nobody{i}@org.test", "cadence": "daily"} for i in range(MAX_BULK)]
    status, answer = await call(api, "PUT", {"items": [first, *unknown]})
    assert status == 413 and "5000" in answer["error"]
    assert await saved(store) == {}  # refused whole: not even the valid item
    results = await put(api, first, *unknown[:MAX_BULK - 1])
    assert results[0]["status"] == "subscribed"
    assert {(r["status"], r["field"]) for r in results[1:]} == {("error", "email")}
    assert sorted(await saved(store)) == ["mgr1@org.test"]


@pytest.mark.parametrize("body", [
    [{"email": "mgr1@org.test", "cadence": "daily"}],
    {"item": [{"email": "mgr1@org.test", "cadence": "daily"}]},
    {"items": {"email": "mgr1@org.test", "cadence": "daily"}},
    {"items": "mgr1@org.test"},
    {"items": [{"email": "mgr1@org.test", "cadence": "daily"}, "mgr2@org.test"]},
    {"items": None},
    "items",
], ids=["list", "wrong-key", "object", "string", "not-an-object-item", "null", "json-string"])
async def test_a_body_that_is_not_a_list_of_items_is_422(api: TestClient, store: Store, body: Any) -> None:
    status, answer = await call(api, "PUT", body)
    assert status == 422 and '"items"' in answer["error"]
    assert await saved(store) == {}


async def test_an_empty_list_is_fine(api: TestClient) -> None:
    assert await put(api) == []


async def test_a_person_given_twice_in_one_bulk_is_subscribed_once_and_the_copy_refused(
        api: TestClient, store: Store, org: Org) -> None:
    items = [{"email": org.email("mgr1"), "cadence": "daily", "time": "07:00"},
             {"email": org.email("mgr1").upper(), "cadence": "weekly"}]
    results = await put(api, *items)
    assert [r["status"] for r in results] == ["subscribed", "error"]
    assert results[1]["error"] == "the same email as item 0; give each person once"
    rows = await saved(store)
    assert list(rows) == [org.email("mgr1")] and (rows[org.email("mgr1")].cadence, rows[org.email("mgr1")].local_time) == (
        "daily", "07:00")
