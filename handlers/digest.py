"""`/crm digest`: subscribe to the team digest, see the subscription, turn it off, see a whole list.

    digest                                  what you get, and when the next one comes
    digest daily [HH:MM] [zone]             every day (08:00 unless told)
    digest weekly [weekday] [HH:MM] [zone]  once a week (Monday unless told)
    digest off
    digest more <list>                      a list of the last digest in full

The time zone is the one typed, else the CRM user's, else the chat profile's, else
`DIGEST_DEFAULT_TZ`. A zone from the CRM or the default is not copied onto the subscription, so
a zone set in the CRM later is followed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Literal
from zoneinfo import ZoneInfo, available_timezones

from rapidfuzz import fuzz, process

from crm_store import digests
from crm_store.digest_content import DigestData, Options, Window, team_digest
from crm_store.store import Store
from handlers import texts
from handlers.digest_chart import StageBar
from handlers.digest_reply import SECTION_NAMES, compose, section_for, when
from handlers.digest_schedule import WEEKDAYS, DigestSettings, Schedule
from handlers.invocation import Context
from handlers.registry import CommandError, commands
from handlers.reply import Reply

TIME = re.compile(r"^(\d{1,2})(?::(\d{2}))?(am|pm)?$", re.IGNORECASE)
SHORT_DAYS = {day[:3]: i for i, day in enumerate(WEEKDAYS)} | {day: i for i, day in enumerate(WEEKDAYS)}
DEFAULT_TIME = "08:00"
ZoneSource = Literal["typed", "crm", "profile", "default"]
MORE_LIMIT = 40


@dataclass(frozen=True, slots=True)
class Request:
    cadence: Literal["daily", "weekly"]
    local_time: str = DEFAULT_TIME
    weekday: int | None = None
    zone: str | None = None


@commands.command("digest", usage="digest daily|weekly|off [weekday] [HH:MM] [zone]",
                  summary="A digest of what moved in your team's pipeline, by direct message on your schedule.",
                  example="digest weekly monday 08:30")
async def digest(ctx: Context, args: str) -> Reply:
    if not ctx.actor.is_mapped or ctx.actor.user_id is None:
        raise CommandError(texts.UNMAPPED_HINT)
    words = args.split()
    first = words[0].lower() if words else "show"
    if first == "show" and len(words) <= 1:
        return await _show(ctx, ctx.actor.user_id)
    if first == "off" and len(words) == 1:
        return await _off(ctx, ctx.actor.user_id)
    if first == "more":
        return await _more(ctx, ctx.actor.user_id, words[1:])
    if first not in ("daily", "weekly"):
        raise CommandError(texts.DIGEST_USAGE)
    request = parse("daily" if first == "daily" else "weekly", words[1:])
    zone, source = _zone(ctx, request.zone)
    schedule = Schedule.of(request.cadence, request.local_time, request.weekday, zone)
    upcoming = schedule.next_after(ctx.now)
    await digests.save(ctx.store, {ctx.actor.user_id: digests.Settings(
        request.cadence, request.local_time, request.weekday, zone if source in ("typed", "profile") else None,
        ctx.invocation.platform, upcoming)})
    return Reply(text=texts.DIGEST_SUBSCRIBED.format(schedule=describe(schedule, source),
                                                     next=when(upcoming, schedule.zone)))


def parse(cadence: Literal["daily", "weekly"], words: list[str]) -> Request:
    """The words after ``daily``/``weekly``, in any order; each bad one named in the reply."""
    seen: dict[str, str] = {}  # what -> the word that gave it, to name both when one comes twice
    local_time, weekday, zone = DEFAULT_TIME, 0 if cadence == "weekly" else None, None

    def once(what: str, word: str) -> None:
        if what in seen:
            raise CommandError(texts.DIGEST_TWICE.format(what=what, first=seen[what], second=word))
        seen[what] = word

    for word in words:
        lowered = word.lower()
        if TIME.match(word) or (lowered[:1].isdigit() and ":" in lowered):
            once("time", word)
            local_time = _time(word)
        elif lowered in SHORT_DAYS:
            if cadence == "daily":
                raise CommandError(texts.DIGEST_DAILY_WEEKDAY.format(weekday=WEEKDAYS[SHORT_DAYS[lowered]]))
            once("weekday", word)
            weekday = SHORT_DAYS[lowered]
        elif lowered in _zones():
            once("time zone", word)
            zone = _zones()[lowered]
        else:
            raise CommandError(_unknown(word))
    return Request(cadence, local_time, weekday, zone)


def _time(word: str) -> str:
    match = TIME.match(word)
    if match is None:
        raise CommandError(texts.DIGEST_BAD_TIME.format(value=word))
    hours, minutes, half = int(match.group(1)), int(match.group(2) or 0), (match.group(3) or "").lower()
    if half:
        if not 1 <= hours <= 12:
            raise CommandError(texts.DIGEST_BAD_TIME.format(value=word))
        hours = hours % 12 + (12 if half == "pm" else 0)
    if hours > 23 or minutes > 59:
        raise CommandError(texts.DIGEST_BAD_TIME.format(value=word))
    return f"{hours:02d}:{minutes:02d}"


@cache
def _zones() -> dict[str, str]:
    """IANA zone names by their lower-case spelling (people type europe/berlin too)."""
    return {name.lower(): name for name in available_timezones()}


def _unknown(word: str) -> str:
    """The clearest reply for a word that is no time, weekday or zone: what it looks closest to."""
    lowered = word.lower()
    day = process.extractOne(lowered, WEEKDAYS, scorer=fuzz.ratio, score_cutoff=70)
    if day and "/" not in word:
        return texts.DIGEST_BAD_WEEKDAY.format(value=word, hint=texts.DIGEST_DID_YOU_MEAN.format(suggestion=day[0]))
    zone = process.extractOne(lowered, list(_zones()), scorer=fuzz.ratio, score_cutoff=80)
    hint = texts.DIGEST_DID_YOU_MEAN.format(suggestion=_zones()[zone[0]]) if zone else ""
    if zone or "/" in word:
        return texts.DIGEST_BAD_ZONE.format(value=word, hint=hint)
    return texts.DIGEST_USAGE


def _zone(ctx: Context, typed: str | None) -> tuple[str, ZoneSource]:
    for zone, source in ((typed, "typed"), (ctx.actor.time_zone, "crm"), (ctx.invocation.time_zone, "profile")):
        if zone and (known := known_zone(zone)):
            return known, source  # type: ignore[return-value]
    return ctx.digests.default_zone, "default"


def known_zone(name: str) -> str | None:
    """The IANA name as spelled canonically, whatever its case; None when there is no such zone."""
    return _zones().get(name.strip().lower())


def describe(schedule: Schedule, source: ZoneSource | None = None) -> str:
    zone = str(schedule.zone) + (texts.DIGEST_ZONE_FROM[source] if source else "")
    at = schedule.at.strftime("%H:%M")
    if schedule.weekday is None:
        return texts.DIGEST_DAILY.format(time=at, zone=zone)
    return texts.DIGEST_WEEKLY.format(weekday=WEEKDAYS[schedule.weekday].capitalize(), time=at, zone=zone)


def zone_of(time_zone: str | None, settings: DigestSettings) -> ZoneInfo:
    """A stored zone, or the default when it is unset (or no longer known to this machine)."""
    known = known_zone(time_zone) if time_zone else None
    return ZoneInfo(known or settings.default_zone)


async def _show(ctx: Context, user_id: int) -> Reply:
    sub = await digests.subscription(ctx.store, user_id)
    if sub is None or not sub.enabled:
        return Reply(text=texts.DIGEST_NONE)
    zone = zone_of(sub.time_zone or ctx.actor.time_zone, ctx.digests)
    schedule = Schedule.of(sub.cadence, sub.local_time, sub.weekday, str(zone))
    text = texts.DIGEST_SHOW.format(schedule=describe(schedule), next=when(schedule.next_after(ctx.now), zone))
    last = await digests.last_run(ctx.store, sub.id)
    if last is not None and last.window_end is not None:
        text += texts.DIGEST_LAST_SENT.format(when=when(last.window_end, zone))
    return Reply(text=text)


async def _off(ctx: Context, user_id: int) -> Reply:
    sub = await digests.subscription(ctx.store, user_id)
    if sub is None or not sub.enabled:
        return Reply(text=texts.DIGEST_ALREADY_OFF)
    await digests.save(ctx.store, {user_id: digests.Settings(sub.cadence, sub.local_time, sub.weekday, sub.time_zone,
                                                             sub.platform, None, enabled=False)})
    return Reply(text=texts.DIGEST_OFF)


async def _more(ctx: Context, user_id: int, words: list[str]) -> Reply:
    """One list of the latest digest (or of the last day, without one) in full."""
    names = ", ".join(SECTION_NAMES)
    if len(words) != 1 or words[0].lower() not in SECTION_NAMES:
        raise CommandError(texts.DIGEST_MORE_USAGE.format(names=names))
    name = words[0].lower()
    sub = await digests.subscription(ctx.store, user_id)
    zone = zone_of((sub.time_zone if sub else None) or ctx.actor.time_zone, ctx.digests)
    last = await digests.last_run(ctx.store, sub.id) if sub else None
    if last is not None and last.window_start is not None and last.window_end is not None:
        window = Window(last.window_start, last.window_end)
    else:
        window = Window(ctx.now - digests.PERIOD[sub.cadence if sub else "daily"], ctx.now)
    content = ctx.digests.content
    data = await team_digest(ctx.store, user_id, window,
                             options=Options(content.stale_days, content.amount_change_percent, MORE_LIMIT))
    section = section_for(data, name, zone, stale_days=content.stale_days)
    span = {"start": when(window.start, zone), "end": when(window.end, zone)}
    if section is None:
        return Reply(text=texts.DIGEST_MORE_EMPTY.format(name=name, **span))
    section.heading = texts.DIGEST_MORE_TITLE.format(section=section.heading, **span)
    return Reply(sections=[section], shareable=False)


@dataclass(frozen=True, slots=True)
class Built:
    reply: Reply
    data: DigestData
    zone: ZoneInfo


def chart_bars(data: DigestData) -> tuple[str, list[StageBar]]:
    """The chart's bars: the open amount per stage in the team's main currency (most deals), now
    and at the last digest."""
    counts: dict[str, int] = {}
    for line in data.pipeline:
        counts[line.currency] = counts.get(line.currency, 0) + line.count
    currency = max(counts, key=lambda c: (counts[c], c))
    before = data.previous
    stages = [l for l in data.pipeline if l.currency == currency]
    gone = [stage for (stage, cur) in (before or {}) if cur == currency and stage not in {l.stage for l in stages}]
    bars = [StageBar(l.stage, l.amount, before.get((l.stage, currency), (0, Decimal(0), Decimal(0)))[1]
                     if before is not None else None) for l in stages]
    bars += [StageBar(stage, Decimal(0), before[(stage, currency)][1]) for stage in gone if before is not None]
    return currency, bars


async def build(store: Store, user_id: int, window: Window, settings: DigestSettings, *,
                time_zone: str | None = None, previous: dict[str, object] | None = None) -> Built:
    """The digest of `user_id` for `window`, compared with the `previous` run's snapshot."""
    zone = zone_of(time_zone, settings)
    data = await team_digest(store, user_id, window, previous=previous, options=settings.content)  # type: ignore[arg-type]
    return Built(compose(data, zone, stale_days=settings.content.stale_days), data, zone)
