"""The sales organisation's calendar: days, months and fiscal quarters in its time zone.

Every KPI buckets event times into the organisation's days: a day number counts the
local calendar dates since 1970-01-01 (``Calendar.day_of``), so a deal won at 23:30 in
Oslo on 31 March counts on 31 March, in March and in that quarter, even though it is
21:30 UTC. Months are calendar months of those dates. Quarters are fiscal: the fiscal
year starts on the first day of ``fiscal_year_start_month`` and is named after the
calendar year in which it ends (with a February start, FY2027 runs from 1 February 2026
to 31 January 2027, and "2027-Q1" is February to April 2026). With a January start,
fiscal and calendar quarters are the same.
"""

from __future__ import annotations

__all__ = ["MONTHS_PER_QUARTER", "UTC_CALENDAR", "UTC_ZONE", "Calendar"]

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stream_app.kpi.windows import MS_PER_DAY

#: The zone name that stands for UTC days in state written by the worker.
UTC_ZONE = "UTC"
_EPOCH_DATE = dt.date(1970, 1, 1)
_EPOCH_ORDINAL = _EPOCH_DATE.toordinal()
#: Months in a (fiscal) quarter.
MONTHS_PER_QUARTER = 3
_QUARTERS_PER_YEAR = 4
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Zulu", "Etc/Zulu", "Universal",
                        "Etc/Universal", "GMT", "Etc/GMT"})


def _date(day: int) -> dt.date:
    return dt.date.fromordinal(day + _EPOCH_ORDINAL)


def _day(date: dt.date) -> int:
    return date.toordinal() - _EPOCH_ORDINAL


def _month_start(year: int, month: int) -> dt.date:
    """The first day of ``month`` months after January of ``year`` (month 1 = January;
    any integer)."""
    years, index = divmod(month - 1, 12)
    return dt.date(year + years, index + 1, 1)


@dataclass(frozen=True, slots=True)
class Calendar:
    """Days, months and fiscal quarters of the time zone ``zone`` (an IANA name)."""

    zone: str = "UTC"
    fiscal_year_start_month: int = 1
    _tz: ZoneInfo | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            tz = ZoneInfo(self.zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.zone!r}: expected an IANA name such "
                             f"as 'Europe/Oslo' or 'UTC'") from exc
        if not 1 <= self.fiscal_year_start_month <= 12:
            raise ValueError(f"fiscal year start month {self.fiscal_year_start_month}: "
                             f"expected 1 (January) to 12 (December)")
        object.__setattr__(self, "_tz", None if self.zone in _UTC_NAMES else tz)

    @property
    def state_zone(self) -> str:
        """The zone name recorded with state folded on this calendar (``UTC_ZONE`` for
        every name of UTC)."""
        return UTC_ZONE if self._tz is None else self.zone

    def day_of(self, ms: int) -> int:
        """The local date of an epoch-millisecond time, as days since 1970-01-01."""
        tz = self._tz
        if tz is None:
            return ms // MS_PER_DAY
        local = dt.datetime.fromtimestamp(ms // 1000, tz)
        return local.toordinal() - _EPOCH_ORDINAL

    def day_start_ms(self, day: int) -> int:
        """The epoch milliseconds at which the local day ``day`` begins (its first
        existing instant, should a clock change skip midnight)."""
        tz = self._tz
        if tz is None:
            return day * MS_PER_DAY
        date = _date(day)
        midnight = dt.datetime(date.year, date.month, date.day, tzinfo=tz)
        start = int(midnight.timestamp() * 1000)
        if self.day_of(start) != day:  # midnight skipped: the day begins at the jump
            start = _first_instant_of(self, day, start)
        return start

    def month_name(self, ms: int) -> str:
        """The local month of an epoch-millisecond time, as "YYYY-MM"."""
        date = _date(self.day_of(ms))
        return f"{date.year}-{date.month:02d}"

    def month_bounds(self, day: int) -> tuple[int, int]:
        """First day of the month holding ``day`` and of the next month."""
        date = _date(day)
        return _day(date.replace(day=1)), _day(_month_start(date.year, date.month + 1))

    def previous_month_bounds(self, day: int) -> tuple[int, int]:
        """First day of the last complete month before ``day``'s month, and of the next."""
        start, _ = self.month_bounds(day)
        return self.month_bounds(start - 1)

    def fiscal_quarter(self, day: int) -> tuple[int, int]:
        """(fiscal year, quarter 1-4) holding ``day``."""
        date = _date(day)
        months_in = (date.month - self.fiscal_year_start_month) % 12
        start_year = date.year if date.month >= self.fiscal_year_start_month else date.year - 1
        fiscal_year = start_year + (1 if self.fiscal_year_start_month > 1 else 0)
        return fiscal_year, months_in // MONTHS_PER_QUARTER + 1

    def quarter_bounds(self, fiscal_year: int, quarter: int) -> tuple[int, int]:
        """First day of the fiscal quarter and of the next one."""
        start_year = fiscal_year - (1 if self.fiscal_year_start_month > 1 else 0)
        first = self.fiscal_year_start_month + MONTHS_PER_QUARTER * (quarter - 1)
        return (_day(_month_start(start_year, first)),
                _day(_month_start(start_year, first + MONTHS_PER_QUARTER)))

    def period_bounds(self, period: str) -> tuple[int, int]:
        """First day of a month ("2026-11") or fiscal quarter ("2027-Q1") and of the next."""
        year, _, rest = period.partition("-")
        if rest.startswith("Q"):
            return self.quarter_bounds(int(year), int(rest[1:]))
        return self.month_bounds(_day(dt.date(int(year), int(rest), 1)))

    def period_months(self, period: str) -> tuple[str, ...]:
        """The months ("YYYY-MM") of a period: itself for a month, three for a quarter."""
        year, _, rest = period.partition("-")
        if not rest.startswith("Q"):
            return (period,)
        first, _ = self.quarter_bounds(int(year), int(rest[1:]))
        start = _date(first)
        months = (_month_start(start.year, start.month + n) for n in range(MONTHS_PER_QUARTER))
        return tuple(f"{m.year}-{m.month:02d}" for m in months)

    def current_periods(self, day: int) -> dict[str, str]:
        """Names of the month and fiscal quarter holding ``day`` and of the ones before
        them, keyed month, quarter, last_month and last_quarter."""
        date = _date(day)
        last = date.replace(day=1) - dt.timedelta(days=1)
        year, quarter = self.fiscal_quarter(day)
        last_year, last_quarter = (year, quarter - 1) if quarter > 1 else \
            (year - 1, _QUARTERS_PER_YEAR)
        return {
            "month": f"{date.year}-{date.month:02d}",
            "quarter": f"{year}-Q{quarter}",
            "last_month": f"{last.year}-{last.month:02d}",
            "last_quarter": f"{last_year}-Q{last_quarter}",
        }


def _first_instant_of(calendar: Calendar, day: int, guess_ms: int) -> int:
    """The first millisecond whose local date is ``day``, searched near ``guess_ms``
    (a clock change can skip a local midnight by up to a day)."""
    low, high = guess_ms - MS_PER_DAY, guess_ms + MS_PER_DAY
    while calendar.day_of(low) >= day:
        low -= MS_PER_DAY
    while calendar.day_of(high) < day:
        high += MS_PER_DAY
    while high - low > 1:
        middle = (low + high) // 2
        if calendar.day_of(middle) >= day:
            high = middle
        else:
            low = middle
    return high


#: Days, months and calendar quarters in UTC (the default).
UTC_CALENDAR = Calendar()
