"""The organisation's calendar and trailing windows: parametrised tables of local days
(time zones across DST changes), months, fiscal quarters and window edges. Expected
dates are worked out by hand from the zones' published offsets."""

from __future__ import annotations

import datetime as dt

import pytest

from stream_app.kpi.calendar import UTC_CALENDAR, Calendar
from stream_app.kpi.windows import (
    MS_PER_DAY,
    WindowSpec,
    ms_from_datetime,
    window_first_day,
    window_specs,
)

day_of = UTC_CALENDAR.day_of
month_bounds = UTC_CALENDAR.month_bounds
previous_month_bounds = UTC_CALENDAR.previous_month_bounds
period_bounds = UTC_CALENDAR.period_bounds
current_periods = UTC_CALENDAR.current_periods


def _day(text: str) -> int:
    return (dt.date.fromisoformat(text) - dt.date(1970, 1, 1)).days


@pytest.mark.parametrize(("moment", "day"), [
    ("1970-01-01T00:00:00+00:00", "1970-01-01"),
    ("2026-03-01T00:00:00+00:00", "2026-03-01"),
    ("2026-02-28T23:59:59.999+00:00", "2026-02-28"),
    ("2026-03-01T00:30:00+01:00", "2026-02-28"),
    ("2024-02-29T12:00:00-05:00", "2024-02-29"),
    ("1969-12-31T23:59:59+00:00", "1969-12-31"),
])
def test_day_of_is_the_utc_calendar_day(moment: str, day: str) -> None:
    assert day_of(ms_from_datetime(dt.datetime.fromisoformat(moment))) == _day(day)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        ms_from_datetime(dt.datetime(2026, 1, 1))  # noqa: DTZ001


@pytest.mark.parametrize(("days", "as_of", "first"), [
    (1, "2026-03-10", "2026-03-10"),
    (30, "2026-03-30", "2026-03-01"),
    (30, "2026-03-01", "2026-01-31"),
    (90, "2026-03-31", "2026-01-01"),
])
def test_trailing_window_first_day(days: int, as_of: str, first: str) -> None:
    assert window_first_day(WindowSpec(f"{days}d", days), _day(as_of)) == _day(first)


def test_all_window_has_no_first_day() -> None:
    assert window_first_day(WindowSpec("all", None), 123) is None


def test_window_specs_end_with_all() -> None:
    assert [s.name for s in window_specs((30, 90))] == ["30d", "90d", "all"]


@pytest.mark.parametrize(("as_of", "this_month", "last_month"), [
    ("2026-03-15", ("2026-03-01", "2026-04-01"), ("2026-02-01", "2026-03-01")),
    ("2026-03-01", ("2026-03-01", "2026-04-01"), ("2026-02-01", "2026-03-01")),
    ("2026-12-31", ("2026-12-01", "2027-01-01"), ("2026-11-01", "2026-12-01")),
    ("2027-01-01", ("2027-01-01", "2027-02-01"), ("2026-12-01", "2027-01-01")),
    ("2024-03-01", ("2024-03-01", "2024-04-01"), ("2024-02-01", "2024-03-01")),
])
def test_month_bounds(as_of: str, this_month: tuple[str, str], last_month: tuple[str, str]) -> None:
    assert month_bounds(_day(as_of)) == (_day(this_month[0]), _day(this_month[1]))
    assert previous_month_bounds(_day(as_of)) == (_day(last_month[0]), _day(last_month[1]))


def test_ms_per_day() -> None:
    assert MS_PER_DAY == 24 * 3600 * 1000


@pytest.mark.parametrize(("period", "first", "after"), [
    ("2026-11", "2026-11-01", "2026-12-01"),
    ("2026-12", "2026-12-01", "2027-01-01"),
    ("2024-02", "2024-02-01", "2024-03-01"),
    ("2026-Q1", "2026-01-01", "2026-04-01"),
    ("2026-Q3", "2026-07-01", "2026-10-01"),
    ("2026-Q4", "2026-10-01", "2027-01-01"),
])
def test_period_bounds(period: str, first: str, after: str) -> None:
    assert period_bounds(period) == (_day(first), _day(after))


@pytest.mark.parametrize(("day", "month", "quarter", "last_month", "last_quarter"), [
    ("2026-11-23", "2026-11", "2026-Q4", "2026-10", "2026-Q3"),
    ("2026-01-01", "2026-01", "2026-Q1", "2025-12", "2025-Q4"),
    ("2026-03-31", "2026-03", "2026-Q1", "2026-02", "2025-Q4"),
    ("2026-04-01", "2026-04", "2026-Q2", "2026-03", "2026-Q1"),
])
def test_current_periods(day: str, month: str, quarter: str, last_month: str,
                         last_quarter: str) -> None:
    assert current_periods(_day(day)) == {"month": month, "quarter": quarter,
                                          "last_month": last_month,
                                          "last_quarter": last_quarter}


def _ms(moment: str) -> int:
    return ms_from_datetime(dt.datetime.fromisoformat(moment))


@pytest.mark.parametrize(("zone", "moment", "day"), [
    # Oslo: CEST (UTC+2) from 2026-03-29 01:00 UTC to 2026-10-25 01:00 UTC, else CET (+1)
    ("Europe/Oslo", "2026-03-31T21:30:00+00:00", "2026-03-31"),  # 23:30, quarter's last day
    ("Europe/Oslo", "2026-03-31T22:00:00+00:00", "2026-04-01"),  # 00:00 CEST
    ("Europe/Oslo", "2026-03-28T22:59:59+00:00", "2026-03-28"),  # 23:59:59 CET
    ("Europe/Oslo", "2026-03-28T23:00:00+00:00", "2026-03-29"),  # the day the clocks go on
    ("Europe/Oslo", "2026-10-24T21:59:59+00:00", "2026-10-24"),
    ("Europe/Oslo", "2026-10-24T22:00:00+00:00", "2026-10-25"),  # 00:00 CEST
    ("Europe/Oslo", "2026-10-25T22:59:59+00:00", "2026-10-25"),  # a 25-hour day
    ("Europe/Oslo", "2026-10-25T23:00:00+00:00", "2026-10-26"),
    # Los Angeles: PDT (UTC-7) from 2026-03-08 10:00 UTC to 2026-11-01 09:00 UTC, else PST
    ("America/Los_Angeles", "2026-01-01T07:59:59+00:00", "2025-12-31"),
    ("America/Los_Angeles", "2026-01-01T08:00:00+00:00", "2026-01-01"),
    ("America/Los_Angeles", "2026-03-09T06:59:59+00:00", "2026-03-08"),
    ("America/Los_Angeles", "2026-03-09T07:00:00+00:00", "2026-03-09"),
    ("America/Los_Angeles", "2026-11-02T07:59:59+00:00", "2026-11-01"),
    ("Asia/Kolkata", "2026-06-30T18:29:59+00:00", "2026-06-30"),  # UTC+5:30
    ("Asia/Kolkata", "2026-06-30T18:30:00+00:00", "2026-07-01"),
    ("Pacific/Kiritimati", "2026-06-30T10:00:00+00:00", "2026-07-01"),  # UTC+14
    ("Etc/UTC", "2026-06-30T23:59:59.999+00:00", "2026-06-30"),
])
def test_a_day_is_the_local_date_in_the_organisations_zone(zone: str, moment: str,
                                                            day: str) -> None:
    assert Calendar(zone).day_of(_ms(moment)) == _day(day)


@pytest.mark.parametrize(("zone", "day", "start"), [
    ("UTC", "2026-03-29", "2026-03-29T00:00:00+00:00"),
    ("Europe/Oslo", "2026-03-29", "2026-03-28T23:00:00+00:00"),
    ("Europe/Oslo", "2026-03-30", "2026-03-29T22:00:00+00:00"),
    ("Europe/Oslo", "2026-10-26", "2026-10-25T23:00:00+00:00"),
    ("America/Los_Angeles", "2026-11-01", "2026-11-01T07:00:00+00:00"),
    # Santiago skips midnight: 2026-09-06 00:00 -04 becomes 01:00 -03 (04:00 UTC)
    ("America/Santiago", "2026-09-06", "2026-09-06T04:00:00+00:00"),
])
def test_a_day_starts_at_its_first_local_instant(zone: str, day: str, start: str) -> None:
    calendar = Calendar(zone)
    assert calendar.day_start_ms(_day(day)) == _ms(start)
    assert calendar.day_of(_ms(start) - 1) == _day(day) - 1


@pytest.mark.parametrize(("start_month", "day", "fiscal_year", "quarter"), [
    (1, "2026-01-01", 2026, 1),
    (1, "2026-12-31", 2026, 4),
    (2, "2026-01-31", 2026, 4),  # FY2026 runs Feb 2025 - Jan 2026
    (2, "2026-02-01", 2027, 1),
    (2, "2026-04-30", 2027, 1),
    (2, "2026-05-01", 2027, 2),
    (2, "2026-12-15", 2027, 4),
    (4, "2026-03-31", 2026, 4),
    (4, "2026-04-01", 2027, 1),
    (7, "2026-06-30", 2026, 4),
    (7, "2026-07-01", 2027, 1),
    (7, "2026-10-01", 2027, 2),
    (12, "2026-11-30", 2026, 4),
    (12, "2026-12-01", 2027, 1),
])
def test_fiscal_quarters_are_named_after_the_year_the_fiscal_year_ends(
        start_month: int, day: str, fiscal_year: int, quarter: int) -> None:
    assert Calendar(fiscal_year_start_month=start_month).fiscal_quarter(_day(day)) == \
        (fiscal_year, quarter)


@pytest.mark.parametrize(("start_month", "period", "first", "after", "months"), [
    (1, "2026-Q4", "2026-10-01", "2027-01-01", ("2026-10", "2026-11", "2026-12")),
    (2, "2027-Q1", "2026-02-01", "2026-05-01", ("2026-02", "2026-03", "2026-04")),
    (2, "2027-Q4", "2026-11-01", "2027-02-01", ("2026-11", "2026-12", "2027-01")),
    (2, "2026-Q4", "2025-11-01", "2026-02-01", ("2025-11", "2025-12", "2026-01")),
    (7, "2027-Q2", "2026-10-01", "2027-01-01", ("2026-10", "2026-11", "2026-12")),
    (2, "2026-11", "2026-11-01", "2026-12-01", ("2026-11",)),
])
def test_fiscal_period_bounds_and_months(start_month: int, period: str, first: str,
                                         after: str, months: tuple[str, ...]) -> None:
    calendar = Calendar(fiscal_year_start_month=start_month)
    assert calendar.period_bounds(period) == (_day(first), _day(after))
    assert calendar.period_months(period) == months


@pytest.mark.parametrize(("start_month", "day", "quarter", "last_quarter"), [
    (2, "2026-02-10", "2027-Q1", "2026-Q4"),
    (2, "2026-01-10", "2026-Q4", "2026-Q3"),
    (4, "2026-05-10", "2027-Q1", "2026-Q4"),
    (10, "2026-11-30", "2027-Q1", "2026-Q4"),
])
def test_current_fiscal_periods(start_month: int, day: str, quarter: str,
                                last_quarter: str) -> None:
    periods = Calendar(fiscal_year_start_month=start_month).current_periods(_day(day))
    assert (periods["quarter"], periods["last_quarter"]) == (quarter, last_quarter)
    assert periods["month"] == day[:7]


@pytest.mark.parametrize(("zone", "moment", "month"), [
    ("Europe/Oslo", "2026-03-31T21:59:59+00:00", "2026-03"),
    ("Europe/Oslo", "2026-03-31T22:00:00+00:00", "2026-04"),
    ("America/New_York", "2027-01-01T04:59:59+00:00", "2026-12"),
    ("America/New_York", "2027-01-01T05:00:00+00:00", "2027-01"),
])
def test_month_names_are_local(zone: str, moment: str, month: str) -> None:
    assert Calendar(zone).month_name(_ms(moment)) == month


def test_a_trailing_window_counts_local_days_across_a_clock_change() -> None:
    """30 days at 00:30 local on 2026-04-15 in Oslo start on 2026-03-17 local, the
    clock change of 29 March inside: 30 dates, not 30 x 24 hours."""
    oslo = Calendar("Europe/Oslo")
    as_of_day = oslo.day_of(_ms("2026-04-14T22:30:00+00:00"))
    first = window_first_day(WindowSpec("30d", 30), as_of_day)
    assert (as_of_day, first) == (_day("2026-04-15"), _day("2026-03-17"))
    assert oslo.day_of(_ms("2026-03-16T23:00:00+00:00")) == first  # 00:00 CET, inside
    assert oslo.day_of(_ms("2026-03-16T22:59:59+00:00")) == first - 1  # 23:59:59, outside


@pytest.mark.parametrize(("zone", "start_month", "match"), [
    ("Mars/Olympus_Mons", 1, "unknown time zone 'Mars/Olympus_Mons'"),
    ("../etc/passwd", 1, "unknown time zone"),
    ("UTC", 13, "fiscal year start month 13"),
    ("UTC", 0, "fiscal year start month 0"),
])
def test_a_bad_calendar_is_refused_naming_what_was_expected(zone: str, start_month: int,
                                                             match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Calendar(zone, start_month)
