"""Event times and trailing windows.

Times are integer epoch milliseconds; a day is a day number of the organisation's
calendar (:class:`stream_app.kpi.calendar.Calendar`). A trailing window of N days at
as-of time T holds the N days ending with T's day: days ``day(T) - N + 1 .. day(T)``.
The ``all`` window holds every day up to and including day(T).
"""

from __future__ import annotations

__all__ = [
    "MS_PER_DAY",
    "WindowSpec",
    "datetime_from_ms",
    "ms_from_datetime",
    "window_first_day",
    "window_specs",
]

import datetime as dt
from dataclasses import dataclass

MS_PER_DAY = 86_400_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A trailing window: ``days`` days ending with the as-of day, or all days if None."""

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


def window_first_day(spec: WindowSpec, as_of_day: int) -> int | None:
    """First day included in the window at ``as_of_day``; None for ``all``."""
    if spec.days is None:
        return None
    return as_of_day - spec.days + 1
