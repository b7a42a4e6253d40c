"""REST: admins subscribe managers to digests in bulk, and list who gets one.

    PUT /api/v1/digest-subscriptions   {"items": [{"email", "cadence", "time", "weekday", "time_zone", "platform"}]}
    GET /api/v1/digest-subscriptions

Each item gets a result (subscribed, off, or error naming the field); the valid ones are saved in
one transaction, so a bulk with a bad item still subscribes the others. No zone: the user's zone
in the CRM applies (followed when it changes), else `DIGEST_DEFAULT_TZ`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator
from sqlalchemy import func, select

from bot.api import STORE, json_body, problem
from bot.openapi import MAX_BULK
from crm_store import digests
from crm_store.models import DigestSubscription, User
from crm_store.records import Email
from handlers.digest import known_zone, zone_of
from handlers.digest_schedule import WEEKDAYS, DigestSettings, Schedule

SETTINGS = web.AppKey("digest_settings", DigestSettings)
PATH = "/api/v1/digest-subscriptions"
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class SubscriptionItem(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: Email
    cadence: Literal["daily", "weekly", "off"]
    time: Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] = "08:00"
    weekday: Weekday | None = None
    time_zone: Annotated[str, StringConstraints(max_length=64)] | None = None
    platform: Literal["slack", "teams"] = "slack"

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        known = known_zone(value)
        if known is None:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin")
        return known


class SubscriptionBulk(BaseModel):
    items: list[dict[str, Any]]


async def put_subscriptions(request: web.Request) -> web.Response:
    body = await json_body(request)
    if isinstance(body, dict) and isinstance(body.get("items"), list) and len(body["items"]) > MAX_BULK:
        return problem(413, f"at most {MAX_BULK} items per request; split this one ({len(body['items'])})")
    try:
        bulk = SubscriptionBulk.model_validate(body)
    except ValidationError:
        return problem(422, 'expected {"items": [{"email": ..., "cadence": "daily|weekly|off", ...}]}')
    store, settings = request.app[STORE], request.app[SETTINGS]
    results: list[dict[str, Any]] = []
    valid: list[tuple[int, SubscriptionItem]] = []
    first_item: dict[str, int] = {}  # email -> the item that has it
    for i, raw in enumerate(bulk.items):
        try:
            item = SubscriptionItem.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            results.append({"email": str(raw.get("email", ""))[:320], "status": "error",
                            "field": ".".join(str(p) for p in first["loc"]) or "item", "error": first["msg"]})
            continue
        earlier = first_item.setdefault(item.email.lower(), i)
        if earlier != i:
            results.append({"email": item.email, "status": "error", "field": "email",
                            "error": f"the same email as item {earlier}; give each person once"})
            continue
        valid.append((i, item))
        results.append({})
    async with store.session() as s:
        emails = {item.email for _, item in valid}
        users = {email.lower(): (user_id, zone) for user_id, email, zone in (await s.execute(
            select(User.id, User.email, User.time_zone).where(func.lower(User.email).in_(emails),
                                                              User.erased_at.is_(None)))).all()}
    now = datetime.now(timezone.utc)
    wanted: dict[int, digests.Settings] = {}
    for i, item in valid:
        found = users.get(item.email.lower())
        if found is None:
            results[i] = {"email": item.email, "status": "error", "field": "email", "error": "no CRM user with this email"}
            continue
        user_id, user_zone = found
        wanted[user_id], results[i] = _subscription(item, user_zone, now, settings)
    await digests.save(store, wanted)
    return web.json_response({"results": results})


def _subscription(item: SubscriptionItem, user_zone: str | None, now: datetime,
                  settings: DigestSettings) -> tuple[digests.Settings, dict[str, Any]]:
    if item.cadence == "off":
        return (digests.Settings("daily", item.time, None, item.time_zone, item.platform, None, enabled=False),
                {"email": item.email, "status": "off"})
    weekday = WEEKDAYS.index(item.weekday or "monday") if item.cadence == "weekly" else None
    zone = zone_of(item.time_zone or user_zone, settings)
    upcoming = Schedule.of(item.cadence, item.time, weekday, str(zone)).next_after(now)
    return (digests.Settings(item.cadence, item.time, weekday, item.time_zone, item.platform, upcoming),
            {"email": item.email, "status": "subscribed", "time_zone": str(zone),
             "next_due_at": upcoming.isoformat()})


async def get_subscriptions(request: web.Request) -> web.Response:
    async with request.app[STORE].session() as s:
        rows = (await s.execute(select(DigestSubscription, User.email).join(User, User.id == DigestSubscription.user_id)
                                .order_by(User.email))).all()
    return web.json_response({"items": [{
        "email": email, "cadence": sub.cadence if sub.enabled else "off", "time": sub.local_time,
        "weekday": WEEKDAYS[sub.weekday] if sub.weekday is not None else None, "time_zone": sub.time_zone,
        "platform": sub.platform, "next_due_at": sub.next_due_at.isoformat() if sub.next_due_at else None,
    } for sub, email in rows]})


def add_routes(app: web.Application, settings: DigestSettings) -> None:
    app[SETTINGS] = settings
    app.router.add_put(PATH, put_subscriptions)
    app.router.add_get(PATH, get_subscriptions)
