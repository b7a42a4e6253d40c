"""Digest schedules across DST changes in two zones: every local day or week exactly once, at the
local time asked for (or the next hour when that time does not exist that day)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from handlers.digest_schedule import Schedule

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
UTC = timezone.utc


def run(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    found, moment = [], start
    for _ in range(count):
        moment = schedule.next_after(moment)
        found.append(moment)
    return found


@pytest.mark.parametrize(("zone", "spring", "autumn"), [
    (BERLIN, date(2026, 3, 29), date(2026, 10, 25)), (NEW_YORK, date(2026, 3, 8), date(2026, 11, 1))])
def test_a_daily_digest_keeps_its_local_time_through_both_changes(zone: ZoneInfo, spring: date, autumn: date) -> None:
    daily = Schedule("daily", time(8, 30), zone)
    for change in (spring, autumn):
        runs = run(daily, datetime.combine(change - timedelta(days=3), time(), zone).astimezone(UTC), 7)
        local = [r.astimezone(zone) for r in runs]
        assert [(d.date(), d.time()) for d in local] == [
            (change + timedelta(days=i - 3), time(8, 30)) for i in range(7)]
        assert len({daily.period_key(r) for r in runs}) == 7
    offsets = {r.astimezone(zone).utcoffset() for r in run(daily, datetime(2026, 1, 1, tzinfo=UTC), 365)}
    assert len(offsets) == 2  # the same wall-clock time, two UTC offsets in a year


def test_a_weekly_digest_runs_on_its_weekday_once_a_week_across_the_change() -> None:
    weekly = Schedule("weekly", time(7, 0), NEW_YORK, weekday=0)
    runs = run(weekly, datetime(2026, 10, 20, tzinfo=UTC), 4)
    local = [r.astimezone(NEW_YORK) for r in runs]
    assert [d.date() for d in local] == [date(2026, 10, 26), date(2026, 11, 2), date(2026, 11, 9), date(2026, 11, 16)]
    assert {d.time() for d in local} == {time(7, 0)} and {d.weekday() for d in local} == {0}
    assert [weekly.period_key(r) for r in runs] == ["2026-W44", "2026-W45", "2026-W46", "2026-W47"]


def test_a_time_skipped_by_the_clocks_runs_an_hour_later_and_a_doubled_one_once() -> None:
    skipped = Schedule("daily", time(2, 30), BERLIN)  # 29 March 2026: 02:00 jumps to 03:00
    [day_before, that_day, day_after] = run(skipped, datetime(2026, 3, 27, 12, tzinfo=UTC), 3)
    assert that_day.astimezone(BERLIN).time() == time(3, 30) and that_day - day_before == timedelta(hours=24)
    assert day_after.astimezone(BERLIN).time() == time(2, 30)
    doubled = Schedule("daily", time(2, 30), BERLIN)  # 25 October 2026: 03:00 goes back to 02:00
    runs = run(doubled, datetime(2026, 10, 24, 12, tzinfo=UTC), 2)
    assert [r.astimezone(BERLIN).date() for r in runs] == [date(2026, 10, 25), date(2026, 10, 26)]
    assert runs[0].astimezone(BERLIN).utcoffset() == timedelta(hours=2)  # the first 02:30


def test_the_last_occurrence_is_what_a_server_coming_back_may_still_owe() -> None:
    daily = Schedule("daily", time(8, 0), BERLIN)
    back_at = datetime(2026, 11, 23, 10, 15, tzinfo=UTC)  # 11:15 in Berlin
    owed = daily.last_at_or_before(back_at)
    assert owed == datetime(2026, 11, 23, 7, 0, tzinfo=UTC) and daily.next_after(owed) > back_at
    assert daily.last_at_or_before(owed) == owed
    with pytest.raises(ValueError):
        Schedule("weekly", time(8, 0), BERLIN)
