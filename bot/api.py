"""The REST API under /api/v1: source systems push users, accounts, contacts and opportunities,
and read timelines. JSON in and out; every call needs ``Authorization: Bearer DEALBOT_API_TOKEN``.

This module only translates HTTP to the sync engine and back; the rules live in `crm_store`.
"""

from __future__ import annotations

import csv
from collections import Counter
import hmac
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from crm_store import Actor, Store
from crm_store.admin_ops import NotFound, erase_contact, erase_user
from crm_store.deals import recent_entries
from crm_store.models import Opportunity, TimelineEntry
from crm_store.records import KEY_FIELD, RECORDS, Record
from crm_store.sync import ItemResult, Sync, Who
from bot.metrics import Metrics
from bot.openapi import BULK_REQUESTS, KEY_TYPES, MAX_BULK, openapi_document

MAX_BODY = 8 * 1024 * 1024
KINDS = tuple(RECORDS)
STORE = web.AppKey("store", Store)
TOKEN = web.AppKey("api_token", str)
METRICS = web.AppKey("metrics", Metrics)
MAX_ROW_ID = 2**63 - 1  # the largest id a database can hold; larger cursors are refused, not sent to SQL
NUL_MESSAGE = "must not contain NUL characters"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse every /api/v1 call without the right bearer token (compared in constant time)."""
    if request.path.startswith("/api/v1/"):
        expected = request.app[TOKEN]
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if not expected or scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
            reason = "missing or wrong bearer token" if expected else "the API is off: DEALBOT_API_TOKEN is not set"
            return problem(401, reason)
    return await handler(request)


async def json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text=json.dumps({"error": "send JSON with Content-Type: application/json"}),
                                           content_type="application/json")
    try:
        return await request.json()
    except (ValueError, RecursionError) as error:  # bad syntax or encoding, absurd nesting, a 5,000-digit number
        raise web.HTTPBadRequest(text=json.dumps({"error": f"malformed JSON: {error}"}), content_type="application/json")


def _key(kind: str, raw: str) -> str:
    """The record key from the path or an item, checked like the references to it; ValueError if bad."""
    if "\x00" in raw:
        raise ValueError(f"{KEY_FIELD[kind]} {NUL_MESSAGE}")
    try:
        return KEY_TYPES[kind].validate_python(raw)
    except ValidationError as error:
        detail = error.errors()[0]["msg"]
        raise ValueError(f"invalid {KEY_FIELD[kind]}: {detail}") from None


def _validation_details(error: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in error.errors()]


def _parse(kind: str, body: Any) -> Record:
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    return RECORDS[kind].model_validate(body)  # refuses NUL characters too, naming the field


async def _actor(request: web.Request) -> Actor:
    """The acting user (``X-Dealbot-User``), or admin scope when the header is absent."""
    email = request.headers.get("X-Dealbot-User")
    if not email:
        return Actor(user_id=0, name="API", role="admin")
    actor = await request.app[STORE].actor_for(email=email)
    if not actor.is_mapped:
        raise web.HTTPForbidden(text=json.dumps({"error": f"no CRM user with email {email!r}"}), content_type="application/json")
    return actor


def _who(request: web.Request) -> Who:
    return Who(via="api", actor=request.headers.get("X-Dealbot-User") or "api")


def _item_response(result: ItemResult) -> web.Response:
    body = result.as_json()
    if result.status == "error":
        return web.json_response({**body, "error": result.error["message"] if result.error else "invalid",
                                  "field": result.error["field"] if result.error else None}, status=422)
    if result.status == "stale":
        body["stale"] = True
    return web.json_response(body, status=201 if result.status == "created" else 200)


async def put_one(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    body = await json_body(request)
    try:
        record = _parse(kind, body)
    except ValidationError as error:
        return problem(422, "invalid fields", details=_validation_details(error))
    except ValueError as error:
        return problem(422, str(error))
    try:
        key = _key(kind, request.match_info["key"])
    except ValueError as error:
        field = KEY_FIELD[kind]
        return problem(422, str(error), field=field, details=[{"field": field, "message": str(error)}])
    [result] = await Sync(request.app[STORE], _who(request)).upsert(kind, [(key, record)])
    request.app[METRICS].upserts.labels(kind=kind, status=result.status).inc()
    return _item_response(result)


async def post_bulk(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    if request.content_type == "application/json" and (whole := _valid_bulk(kind, await request.read())) is not None:
        return _bulk_response(request, kind, await Sync(request.app[STORE], _who(request)).upsert(kind, whole))
    body = await json_body(request)
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return problem(422, 'expected {"items": [...]}')
    if len(items) > MAX_BULK:
        return problem(413, f"at most {MAX_BULK} items per request; split this one ({len(items)})")
    key_field = KEY_FIELD[kind]
    results: list[ItemResult | None] = [None] * len(items)
    valid: list[tuple[int, str, Record]] = []
    for i, item in enumerate(items):
        raw = item.get(key_field) if isinstance(item, dict) else None
        if not isinstance(raw, str) or not raw.strip():
            shown = raw if isinstance(raw, str) else "" if raw is None else json.dumps(raw)[:128]
            results[i] = ItemResult(shown.replace("\x00", ""), "error",
                                    {"field": key_field, "message": f"each item needs a non-empty {key_field}"})
            continue
        try:
            key = _key(kind, raw)
        except ValueError as error:
            results[i] = ItemResult(raw.replace("\x00", "")[:200], "error", {"field": key_field, "message": str(error)})
            continue
        fields = {k: v for k, v in item.items() if k != key_field}
        try:
            valid.append((i, key, _parse(kind, fields)))
        except ValidationError as error:
            results[i] = ItemResult(key, "error", _validation_details(error)[0])
    applied = await Sync(request.app[STORE], _who(request)).upsert(kind, [(k, r) for _, k, r in valid])
    by_key = {r.key: r for r in applied}
    for i, key, _ in valid:
        results[i] = by_key[key]
    return _bulk_response(request, kind, [r for r in results if r is not None])


def _valid_bulk(kind: str, body: bytes) -> list[tuple[str, Record]] | None:
    """The fast path: a bulk without a single bad item is validated in one pydantic-core call
    straight from the bytes. None when anything is wrong; the item-by-item path then says what."""
    try:
        bulk = BULK_REQUESTS[kind].model_validate_json(body)
    except ValidationError:
        return None
    key_field = KEY_FIELD[kind]
    return [(getattr(item, key_field), item) for item in getattr(bulk, "items")]


def _bulk_response(request: web.Request, kind: str, results: list[ItemResult]) -> web.Response:
    for status, count in Counter(r.status for r in results).items():
        request.app[METRICS].upserts.labels(kind=kind, status=status).inc(count)
    return web.json_response({"results": [r.as_json() for r in results]})


def _opportunity_json(opp: Opportunity) -> dict[str, Any]:
    return {
        "external_id": opp.external_id, "name": opp.name,
        "account": {"external_id": opp.account.external_id, "name": opp.account.name},
        "amount": f"{opp.amount:.2f}", "currency": opp.currency, "stage": opp.stage, "probability": opp.probability,
        "close_date": opp.close_date.isoformat() if opp.close_date else None, "owner_email": opp.owner.email,
        "team_emails": sorted(m.user.email for m in opp.team), "status": opp.status,
        "source_updated_at": opp.source_updated_at.isoformat() if opp.source_updated_at else None,
        "updated_at": opp.updated_at.isoformat(),
    }


async def _visible_opportunity(request: web.Request) -> Opportunity:
    actor = await _actor(request)
    try:
        key = _key("opportunities", request.match_info["key"])
    except ValueError:  # no such key can exist; the database is not asked
        opp = None
    else:
        opp = await request.app[STORE].opportunity(actor, external_id=key)
    if opp is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such opportunity"}), content_type="application/json")
    return opp


async def get_opportunity(request: web.Request) -> web.Response:
    return web.json_response(_opportunity_json(await _visible_opportunity(request)))


def _entry_json(entry: TimelineEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"id": entry.id, "kind": entry.kind, "text": entry.text,
                           "author": entry.author.name if entry.author else None,
                           "occurred_at": entry.occurred_at.isoformat()}
    if entry.permalink:
        out["permalink"] = entry.permalink
    if entry.data:
        out["data"] = entry.data
    if entry.retracted_at:
        out["retracted_at"] = entry.retracted_at.isoformat()
    return out


async def get_timeline(request: web.Request) -> web.StreamResponse:
    opp = await _visible_opportunity(request)
    store, actor = request.app[STORE], await _actor(request)
    try:
        limit = int(request.query.get("limit", "50"))
        before = int(request.query["before"]) if "before" in request.query else None
    except ValueError:
        return problem(422, "limit and before must be integers")
    if not 1 <= limit <= 500:
        return problem(422, "limit must be between 1 and 500")
    if before is not None and not 1 <= before <= MAX_ROW_ID:
        return problem(422, "before must be an entry id from next_before")
    if request.query.get("format") == "csv":
        return await _timeline_csv(request, store, actor, opp)
    entries = await recent_entries(store, actor, opp.id, limit=limit + 1, before_id=before)
    page = entries[:limit]
    return web.json_response({"items": [_entry_json(e) for e in page],
                              "next_before": page[-1].id if len(entries) > limit else None})


CSV_COLUMNS = ["id", "occurred_at", "kind", "author", "text", "permalink"]


def timeline_rows(entries: list[TimelineEntry]) -> list[list[str]]:
    return [[str(e.id), e.occurred_at.isoformat(), e.kind, e.author.name if e.author else "", e.text or "",
              e.permalink or ""] for e in entries]


async def _timeline_csv(request: web.Request, store: Store, actor: Actor, opp: Opportunity) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="timeline-{opp.external_id}.csv"',
    })
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    before: int | None = None
    while True:
        entries = await recent_entries(store, actor, opp.id, limit=1000, before_id=before)
        writer.writerows(timeline_rows(entries))
        await response.write(buffer.getvalue().encode())
        buffer.seek(0)
        buffer.truncate()
        if len(entries) < 1000:
            break
        before = entries[-1].id
    await response.write_eof()
    return response


async def search(request: web.Request) -> web.Response:
    query = request.query.get("q", "").strip()
    if not query or len(query) > 200:
        return problem(422, "q must be 1 to 200 characters")
    store, actor = request.app[STORE], await _actor(request)
    items: list[dict[str, Any]] = []
    for kind, results in (("account", await store.find_accounts(actor, query, 10)),
                          ("opportunity", await store.find_opportunities(actor, query, 10)),
                          ("contact", await store.find_contacts(actor, query, 10))):
        items += [{"type": kind, "external_id": f.row.external_id, "name": f.row.name,
                   "score": round(f.match.score, 1)} for f in results]
    items.sort(key=lambda i: -i["score"])
    return web.json_response({"items": items})


async def delete_person(request: web.Request) -> web.Response:
    kind, key = request.match_info["kind"], request.match_info["key"]
    erase = erase_contact if kind == "contacts" else erase_user
    try:
        erased = await erase(request.app[STORE], _key(kind, key), _who(request))
    except (NotFound, ValueError):  # ValueError: no record can have such a key
        return problem(404, f"no such {kind[:-1]}")
    return web.json_response({"key": key, "status": "erased" if erased else "already_erased"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def add_routes(app: web.Application) -> None:
    kinds = "|".join(KINDS)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_post(f"/api/v1/{{kind:{kinds}}}/bulk", post_bulk)
    app.router.add_put(f"/api/v1/{{kind:{kinds}}}/{{key}}", put_one)
    app.router.add_get("/api/v1/opportunities/{key}", get_opportunity)
    app.router.add_get("/api/v1/opportunities/{key}/timeline", get_timeline)
    app.router.add_get("/api/v1/search", search)
    app.router.add_delete("/api/v1/{kind:contacts|users}/{key}", delete_person)
