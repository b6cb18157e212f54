"""Event-time arithmetic on UTC day buckets and calendar months.

Times are integer epoch milliseconds; a day bucket is ``ms // MS_PER_DAY``.
A trailing window of N days at as-of time T holds the N UTC days ending with
T's day: days ``day(T) - N + 1 .. day(T)``. The ``all`` window holds every day
up to and including day(T).
"""

from __future__ import annotations

__all__ = [
    "MS_PER_DAY",
    "WindowSpec",
    "current_periods",
    "datetime_from_ms",
    "day_of",
    "month_bounds",
    "ms_from_datetime",
    "period_bounds",
    "previous_month_bounds",
    "window_first_day",
    "window_specs",
]

import datetime as dt
from dataclasses import dataclass

MS_PER_DAY = 86_400_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A trailing window: ``days`` UTC days ending with the as-of day, or all days if None."""

    name: str
    days: int | None


def window_specs(days: tuple[int, ...]) -> tuple[WindowSpec, ...]:
    """The configured trailing windows followed by ``all``."""
    return (*(WindowSpec(f"{n}d", n) for n in days), WindowSpec("all", None))


def ms_from_datetime(value: dt.datetime) -> int:
    """Epoch milliseconds of an aware datetime (microseconds truncated toward the past)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: an offset is required")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def datetime_from_ms(ms: int) -> dt.datetime:
    """The UTC datetime of an epoch-ms timestamp (inverse of :func:`ms_from_datetime`)."""
    return _EPOCH + dt.timedelta(milliseconds=ms)


def day_of(ms: int) -> int:
    """UTC day number (days since 1970-01-01) of an epoch-millisecond time."""
    return ms // MS_PER_DAY


def window_first_day(spec: WindowSpec, as_of_day: int) -> int | None:
    """First day included in the window at ``as_of_day``; None for ``all``."""
    if spec.days is None:
        return None
    return as_of_day - spec.days + 1


def _day_number(date: dt.date) -> int:
    return (date - dt.date(1970, 1, 1)).days


def month_bounds(as_of_day: int) -> tuple[int, int]:
    """First day of the calendar month (UTC) holding ``as_of_day`` and of the next month."""
    date = dt.date(1970, 1, 1) + dt.timedelta(days=as_of_day)
    start = date.replace(day=1)
    nxt = (start.replace(year=start.year + 1, month=1) if start.month == 12
           else start.replace(month=start.month + 1))
    return _day_number(start), _day_number(nxt)


def previous_month_bounds(as_of_day: int) -> tuple[int, int]:
    """First day of the last complete month before ``as_of_day``'s month, and of the next."""
    start, _ = month_bounds(as_of_day)
    return month_bounds(start - 1)


def period_bounds(period: str) -> tuple[int, int]:
    """First day of a calendar month ("2026-11") or quarter ("2026-Q4") and of the next."""
    year, _, rest = period.partition("-")
    if rest.startswith("Q"):
        first_month = 3 * (int(rest[1:]) - 1) + 1
        start = dt.date(int(year), first_month, 1)
        end_month = first_month + 3
        end = (dt.date(int(year) + 1, 1, 1) if end_month > 12
               else dt.date(int(year), end_month, 1))
        return _day_number(start), _day_number(end)
    start = dt.date(int(year), int(rest), 1)
    return month_bounds(_day_number(start))


def current_periods(as_of_day: int) -> dict[str, str]:
    """Names of the month and quarter holding ``as_of_day`` and of the ones before them,
    keyed month, quarter, last_month and last_quarter."""
    date = dt.date(1970, 1, 1) + dt.timedelta(days=as_of_day)
    last = date.replace(day=1) - dt.timedelta(days=1)
    quarter = (date.month - 1) // 3 + 1
    last_quarter = (date.year, quarter - 1) if quarter > 1 else (date.year - 1, 4)
    return {
        "month": f"{date.year}-{date.month:02d}",
        "quarter": f"{date.year}-Q{quarter}",
        "last_month": f"{last.year}-{last.month:02d}",
        "last_quarter": f"{last_quarter[0]}-Q{last_quarter[1]}",
    }
