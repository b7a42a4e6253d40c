"""When a manager's digest is due: local wall-clock times turned into instants, DST included.

A schedule is a local time (and, weekly, a weekday) in the manager's zone. Each occurrence has a
period key (the local date, or the ISO week) that the sending claim is made on, so a digest goes
out once per period whichever replica or restart gets to it. Around DST changes:

- a time that does not exist that day (clocks jump from 02:00 to 03:00) is sent an hour later
  by the wall clock, at the same instant it would have had without the jump;
- a time that exists twice (clocks go back) is sent at the first of the two.

"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo

from crm_store.digest_content import Options

Cadence = Literal["daily", "weekly"]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True)
class DigestSettings:
    """The digest part of the settings, as handlers and the scheduler take it."""

    default_zone: str = "UTC"
    grace: timedelta = timedelta(hours=6)  # a digest missed by less is sent late; by more, skipped
    content: Options = field(default_factory=Options)


def instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of wall-clock `at` on `day` in `zone` (see the module note for DST)."""
    return datetime.combine(day, at).replace(tzinfo=zone, fold=0).astimezone(timezone.utc)


@dataclass(frozen=True, slots=True)
class Schedule:
    cadence: Cadence
    at: time
    zone: ZoneInfo
    weekday: int | None = None  # 0 = Monday; weekly only

    def __post_init__(self) -> None:
        if (self.cadence == "weekly") != (self.weekday is not None):
            raise ValueError("a weekly schedule needs a weekday, a daily one none")

    @classmethod
    def of(cls, cadence: str, local_time: str, weekday: int | None, zone: str) -> Schedule:
        """The schedule of a stored subscription (its values were checked when it was saved)."""
        hours, minutes = (int(part) for part in local_time.split(":"))
        return cls("weekly" if cadence == "weekly" else "daily", time(hours, minutes), ZoneInfo(zone),
                   weekday if cadence == "weekly" else None)

    def _days_from(self, day: date, step: int) -> date:
        """`day` or the nearest day in direction `step` (±1) that the schedule runs on."""
        while self.cadence == "weekly" and day.weekday() != self.weekday:
            day += timedelta(days=step)
        return day

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (UTC instant)."""
        day = self._days_from(moment.astimezone(self.zone).date() - timedelta(days=1), 1)
        while (when := instant(day, self.at, self.zone)) <= moment:
            day = self._days_from(day + timedelta(days=1), 1)
        return when

    def last_at_or_before(self, moment: datetime) -> datetime:
        """The latest occurrence at or before `moment` (what a server coming back may still owe)."""
        day = self._days_from(moment.astimezone(self.zone).date() + timedelta(days=1), -1)
        while (when := instant(day, self.at, self.zone)) > moment:
            day = self._days_from(day - timedelta(days=1), -1)
        return when

    def period_key(self, occurrence: datetime) -> str:
        """``2026-11-23`` (daily) or ``2026-W48`` (weekly), by the local calendar of the occurrence."""
        local = occurrence.astimezone(self.zone).date()
        if self.cadence == "daily":
            return local.isoformat()
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
