"""Window arithmetic: parametrised tables of day buckets, trailing windows and months."""

from __future__ import annotations

import datetime as dt

import pytest

from stream_app.kpi.windows import (
    MS_PER_DAY,
    WindowSpec,
    current_periods,
    day_of,
    month_bounds,
    ms_from_datetime,
    period_bounds,
    previous_month_bounds,
    window_first_day,
    window_specs,
)


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
