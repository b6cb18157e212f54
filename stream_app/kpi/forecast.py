"""Period-end forecast of the won amount, learned in event time from the deals' paths.

At checkpoint day ``t`` (the forecast as of the start of that day: everything before
``t`` is known) the forecast of the won amount of the days ``start .. end-1`` is::

    forecast = won so far (close days start .. t-1)
             + sum over open deals of  amount x P(won on a day t .. end-1 | stage, age)
             + sum over days c = t .. end-1 of  r x P(won by end-1 | created on c) x m

``P`` is a landmark estimate over the stints of the trailing ``window_days`` before
``t``: for an open deal ``a`` days into stage ``s`` with ``H`` days left in the period,
it is the share of the past stints in ``s`` still in ``s`` ``a`` days after they began,
and observed for the ``H`` days after that, whose deal was won in those ``H`` days
(whatever stages it went through); with no such stint, 0: nothing that stayed so long
won in the window. When the CRM gives the deal an expected close ``E`` (the latest
set before ``t``), only the stints whose own expected close, as known at their landmark,
stood in the same place relative to the horizon are counted: passed (``E < t``), before
the period (``E`` in ``t .. start-1``), inside it, or after it. A stratum with fewer
than ``min_stratum_stints`` such stints at that age falls back to every stint. New deals:
``r`` is the deals created per day over the trailing ``rate_days``; their chance is the
same estimate for the stage :data:`CREATED` every deal enters at its creation, and ``m``
the mean won amount over the trailing ``window_days``. The low and high bands are the
10th and 90th percentiles of a normal approximation (each open deal a Bernoulli trial
of its amount; new wins Poisson counts of amount ``m``).
"""

from __future__ import annotations

__all__ = ["AFTER_PERIOD", "ALL", "BEFORE_PERIOD", "CREATED", "DEFAULT_FORECAST", "INSIDE_PERIOD",
           "PASSED", "DealPath", "Forecast", "ForecastSettings", "StageHistory", "date_day",
           "deal_path", "forecast_period", "forecast_period_by", "learn_histories", "plan_stratum"]

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from operator import attrgetter

from stream_app.kpi.calendar import Calendar
from stream_app.kpi.deals import DealState, deal_timeline
from stream_app.kpi.lifecycle import WON
from stream_app.kpi.money import Pricing

#: The group every team's (and owner's) forecast also counts in.
ALL = "all"

#: The pseudo-stage every deal enters at its creation (for deals not yet created).
CREATED = "(created)"
#: Later than any event time (ms): the owner "now" of an open deal.
_END_OF_TIME = 2**62
#: The standard normal quantile of the bands (10th and 90th percentiles).
_Z90 = 1.2815515655446004
_EPOCH = dt.date(1970, 1, 1)
#: Where a deal's expected close lies, seen from a forecast made on day ``t`` for the days
#: ``t + skip .. t + horizon - 1``: passed, before the period, inside it, after it.
PASSED, BEFORE_PERIOD, INSIDE_PERIOD, AFTER_PERIOD = range(4)
_STRATA = 4


def date_day(date_text: str) -> int:
    """The day number (days since 1970-01-01) of an ISO date, as the calendar counts days."""
    return (dt.date.fromisoformat(date_text) - _EPOCH).days


def plan_stratum(expected_in: int, horizon: int, skip: int) -> int:
    """Where an expected close ``expected_in`` days after the forecast's day lies against
    the period ``skip .. horizon - 1`` days after it."""
    if expected_in < 0:
        return PASSED
    if expected_in < skip:
        return BEFORE_PERIOD
    return INSIDE_PERIOD if expected_in < horizon else AFTER_PERIOD


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    """How the forecast learns: trailing days of stage entries and of creations."""

    window_days: int = 365
    rate_days: int = 90
    #: The forecast-below-quota alert's margin (exported for the rule to read).
    alert_margin: float = 0.1
    #: Whether a deal's expected close shifts its chance (False: stage and age alone).
    expected_close: bool = True
    #: Fewest stints of an expected-close stratum at an age before it is used alone.
    min_stratum_stints: int = 30


#: The forecast's settings when none are given.
DEFAULT_FORECAST = ForecastSettings()


@dataclass(frozen=True, slots=True)
class DealPath:
    """A deal as the forecast reads it: its entries into stages (stage, day), the close
    (won or lost, its day, the amount won in cents) and, while open, its amount in cents.
    ``entries`` starts with the creation in :data:`CREATED`."""

    entries: tuple[tuple[str, int], ...]
    close: tuple[bool, int, int] | None
    open_cents: int
    team: str = ""
    #: Who owned the deal at its close, or owns it now while it is open.
    owner: str = ""
    #: The CRM's expected closes: (day it was set, expected close day), in time order.
    plans: tuple[tuple[int, int], ...] = ()

    def expected_close(self, day: int) -> int | None:
        """The expected close day known at the start of ``day`` (the latest set before it)."""
        expected = None
        for set_on, close_day in self.plans:
            if set_on >= day:
                break
            expected = close_day
        return expected


def deal_path(state: DealState, pricing: Pricing, calendar: Calendar) -> DealPath | None:
    """The deal's path as the forecast reads it (None before its creation is known, and
    for a deleted deal)."""
    timeline = deal_timeline(state, pricing.stage_rank)
    if timeline is None or state.created is None or state.deleted:
        return None
    created_at, _, info = state.created
    currency = str(info["currency"])
    day_of = calendar.day_of
    entries = ((CREATED, day_of(created_at)),
               *((stint.stage, day_of(stint.start_ms)) for stint in timeline.stints))
    amount = pricing.to_cents(timeline.amounts[-1], currency)
    close = None
    owner = state.owner_at(_END_OF_TIME)
    if state.closed is not None:
        closed_at, _, kind, won_amount, *_ = state.closed
        won = kind == WON
        won_cents = pricing.to_cents(won_amount, currency) if won and won_amount else amount
        close = (won, day_of(closed_at), won_cents if won else 0)
        owner = state.owner_at(int(closed_at))
    plans = tuple((day_of(at), date_day(expected))
                  for at, _, expected, _ in state.plans if expected is not None)
    return DealPath(entries, close, amount, str(info["team"]), owner, plans)


_Stint = tuple[int, int | None, int | None, tuple[tuple[int, int], ...]]


class StageHistory:
    """The stints of one stage in the trailing window: (start day, day the deal left the
    stage or None, day the deal was won or None, the deal's expected closes)."""

    def __init__(self, day: int, min_stratum_stints: int = DEFAULT_FORECAST.min_stratum_stints):
        self._day = day
        self._min_stratum = min_stratum_stints
        self._stints: list[_Stint] = []
        self._tables: dict[tuple[int, int], list[float]] = {}
        self._strata: dict[tuple[int, int], list[tuple[list[int], list[int]]]] = {}

    def add(self, started: int, left: int | None, won_on: int | None,
            plans: tuple[tuple[int, int], ...] = ()) -> None:
        """One stint; ``left`` and ``won_on`` only as known before the checkpoint;
        ``plans``: the deal's expected closes (day set, expected close day)."""
        self._stints.append((started, left, won_on, plans))
        if self._tables:
            self._tables.clear()
        if self._strata:
            self._strata.clear()

    def win_probability(self, age: int, horizon: int, skip: int = 0,
                        expected_in: int | None = None) -> float:
        """Chance a deal ``age`` days into the stage is won on days ``age + skip`` ..
        ``age + horizon - 1`` of its stint, among the past stints still in the stage at
        ``age`` and observed for ``horizon`` days after it; with ``expected_in`` (its
        expected close, in days after the forecast's day), among those whose expected
        close stood in the same :func:`plan_stratum` then, if there are enough."""
        if horizon <= skip or age < 0:
            return 0.0
        if expected_in is not None:
            strata = self._strata.get((horizon, skip))
            if strata is None:
                strata = self._strata[(horizon, skip)] = self._stratified(horizon, skip)
            eligible, won = strata[plan_stratum(expected_in, horizon, skip)]
            if age < len(eligible) and eligible[age] >= self._min_stratum:
                return won[age] / eligible[age]
        if age == 0 and skip == 0:
            by_horizon = self._horizons()
            return by_horizon[horizon] if horizon < len(by_horizon) else 0.0
        table = self._tables.get((horizon, skip))
        if table is None:
            table = self._tables[(horizon, skip)] = self._table(horizon, skip)
        return table[age] if age < len(table) else 0.0

    def _horizons(self) -> list[float]:
        """The estimate at age 0 for every horizon at once (what deals not created yet
        ask, one horizon per day left): a stint begun on ``s`` is eligible for the
        horizons ``h <= day - s`` and won for those with ``won_on - s < h``."""
        known = self._tables.get((-1, -1))
        if known is not None:
            return known
        size = self._span()
        eligible_ends = [0] * size
        won_steps = [0] * (size + 1)
        for started, _, won_on, _ in self._stints:
            last = self._day - started
            if last < 1:
                continue
            eligible_ends[last] += 1
            if won_on is not None and won_on >= started and won_on - started + 1 <= last:
                won_steps[won_on - started + 1] += 1
                won_steps[last + 1] -= 1
        table = [0.0] * size
        eligible = sum(eligible_ends)
        won = 0
        for horizon in range(size):
            won += won_steps[horizon]
            if horizon >= 1:
                table[horizon] = won / eligible if eligible else 0.0
                eligible -= eligible_ends[horizon]
        self._tables[(-1, -1)] = table
        return table

    def _table(self, horizon: int, skip: int) -> list[float]:
        """The estimate at every age at once. A stint begun on ``s`` is eligible at the
        ages ``a`` with ``s + a + horizon <= day`` and ``a <= left - s``; it counts as won
        at the ages with ``s + a + skip <= won_on < s + a + horizon``."""
        last_ages: list[int] = []
        wins: list[tuple[int, int]] = []
        for started, left, won_on, _ in self._stints:
            last = self._last_age(started, left, horizon)
            if last < 0:
                continue
            last_ages.append(last)
            if won_on is not None:
                first_won, last_won = self._won_ages(started, won_on, last, horizon, skip)
                if first_won <= last_won:
                    wins.append((first_won, last_won))
        if not last_ages:
            return []
        size = max(last_ages) + 2
        eligible_ends = [0] * size
        won_steps = [0] * size
        for last in last_ages:
            eligible_ends[last] += 1
        for first_won, last_won in wins:
            won_steps[first_won] += 1
            won_steps[last_won + 1] -= 1
        table = [0.0] * (size - 1)
        eligible = len(last_ages)
        won = 0
        for age in range(size - 1):
            won += won_steps[age]
            table[age] = won / eligible if eligible else 0.0
            eligible -= eligible_ends[age]
        return table

    def _span(self) -> int:
        """Ages a table covers: up to the oldest stint's age at the checkpoint, plus one."""
        return max((self._day - stint[0] + 2 for stint in self._stints), default=1)

    def _last_age(self, started: int, left: int | None, horizon: int) -> int:
        """The last age at which a stint is eligible (negative: none)."""
        last = self._day - horizon - started
        return last if left is None else min(last, left - started)

    @staticmethod
    def _won_ages(started: int, won_on: int, last: int, horizon: int, skip: int
                  ) -> tuple[int, int]:
        """The ages at which a stint counts as won (empty when first > last)."""
        return max(0, won_on - started - horizon + 1), min(last, won_on - started - skip)

    def _stratified(self, horizon: int, skip: int) -> list[tuple[list[int], list[int]]]:
        """Per :func:`plan_stratum`, the eligible and won stints at every age: a stint's
        expected close set on day ``d`` is known from the landmark ``d + 1`` on, and at
        age ``a`` lies ``E - started - a`` days after its landmark, so as the age grows it
        is after the period, then inside, then before it, then passed."""
        size = self._span()
        eligible_steps = [[0] * (size + 1) for _ in range(_STRATA)]
        won_steps = [[0] * (size + 1) for _ in range(_STRATA)]
        for started, left, won_on, plans in self._stints:
            if not plans:
                continue
            last = self._last_age(started, left, horizon)
            if last < 0:
                continue
            first_won, last_won = (1, 0) if won_on is None else self._won_ages(
                started, won_on, last, horizon, skip)
            count = len(plans)
            for index in range(count):
                set_on, expected = plans[index]
                low = set_on + 1 - started
                if low < 0:
                    low = 0
                high = last if index + 1 == count else plans[index + 1][0] - started
                if high > last:
                    high = last
                due = expected - started
                for stratum, upper in ((AFTER_PERIOD, due - horizon),
                                       (INSIDE_PERIOD, due - skip), (BEFORE_PERIOD, due),
                                       (PASSED, high)):
                    if low > high:
                        break
                    top = upper if upper < high else high
                    if top < low:
                        continue
                    eligible_steps[stratum][low] += 1
                    eligible_steps[stratum][top + 1] -= 1
                    won_low = low if low > first_won else first_won
                    won_high = top if top < last_won else last_won
                    if won_low <= won_high:
                        won_steps[stratum][won_low] += 1
                        won_steps[stratum][won_high + 1] -= 1
                    low = top + 1
        return [(list(accumulate(eligible_steps[stratum][:size])),
                 list(accumulate(won_steps[stratum][:size]))) for stratum in range(_STRATA)]


def learn_histories(paths: Iterable[DealPath], day: int, settings: ForecastSettings
                    ) -> dict[str, StageHistory]:
    """The stints of every stage begun in the trailing window before ``day``."""
    first = day - settings.window_days
    histories: dict[str, StageHistory] = {}
    use_plans = settings.expected_close
    for path in paths:
        if (path.close is not None and path.close[1] < first) or not path.entries \
                or path.entries[-1][1] < first or path.entries[0][1] >= day:
            continue  # every stint began before the window (or after the checkpoint)
        close = path.close if path.close is not None and path.close[1] < day else None
        won_on = close[1] if close is not None and close[0] else None
        entries = [entry for entry in path.entries if entry[1] < day]
        for index, (stage, started) in enumerate(entries):
            if started < first:
                continue
            following = entries[index + 1][1] if index + 1 < len(entries) else None
            left = following if following is not None and stage != CREATED else (
                close[1] if close is not None else None)
            history = histories.get(stage)
            if history is None:
                history = histories[stage] = StageHistory(day, settings.min_stratum_stints)
            history.add(started, left, won_on, path.plans if use_plans else ())
    return histories


@dataclass(frozen=True, slots=True)
class Forecast:
    """The forecast of one period's won amount, in cents, and its parts."""

    won_cents: int
    open_expected_cents: float
    new_expected_cents: float
    variance: float

    @property
    def expected_cents(self) -> float:
        """Won so far + expected from open deals + expected from deals not created yet."""
        return self.won_cents + self.open_expected_cents + self.new_expected_cents

    @property
    def low_cents(self) -> float:
        """10th percentile (never below what is already won)."""
        return max(float(self.won_cents), self.expected_cents - _Z90 * math.sqrt(self.variance))

    @property
    def high_cents(self) -> float:
        """90th percentile."""
        return self.expected_cents + _Z90 * math.sqrt(self.variance)


def forecast_period(paths: Iterable[DealPath], day: int, start: int, end: int,
                    settings: ForecastSettings = DEFAULT_FORECAST,
                    histories: Mapping[str, StageHistory] | None = None,
                    group_of: Callable[[DealPath], str] = attrgetter("team")
                    ) -> dict[str, Forecast]:
    """The forecast at the start of ``day`` of the won amount of days ``start .. end-1``,
    per group (``group_of``: the team by default, or the owner) and ``all`` (new deals
    only for ``all``: they have no team or owner yet)."""
    return forecast_period_by(paths, day, start, end, settings, histories, (group_of,))[0]


def forecast_period_by(paths: Iterable[DealPath], day: int, start: int, end: int,
                       settings: ForecastSettings = DEFAULT_FORECAST,
                       histories: Mapping[str, StageHistory] | None = None,
                       groupings: Sequence[Callable[[DealPath], str]] = (attrgetter("team"),)
                       ) -> list[dict[str, Forecast]]:
    """:func:`forecast_period` for each of ``groupings`` (the team, the owner), each deal's
    chance read once for all of them."""
    paths = list(paths)
    if histories is None:
        histories = learn_histories(paths, day, settings)
    won = [defaultdict[str, int](int) for _ in groupings]
    expected = [defaultdict[str, float](float) for _ in groupings]
    variance = [defaultdict[str, float](float) for _ in groupings]
    created = 0
    won_amounts: list[int] = []
    for path in paths:
        if path.entries and day - settings.rate_days <= path.entries[0][1] < day:
            created += 1
        close = path.close
        if close is not None and close[1] < day:
            if close[0] and start <= close[1] < end:
                for group_of, won_by in zip(groupings, won, strict=True):
                    won_by[group_of(path)] += close[2]
                    won_by[ALL] += close[2]
            if close[0] and day - settings.window_days <= close[1]:
                won_amounts.append(close[2])
            continue
        if not path.entries or path.entries[0][1] >= day:
            continue
        stage, entered = [entry for entry in path.entries if entry[1] < day][-1]
        history = histories.get(stage)
        close_day = path.expected_close(day) if settings.expected_close else None
        chance = 0.0 if history is None else history.win_probability(
            day - entered, end - day, max(0, start - day),
            None if close_day is None else close_day - day)
        amount = chance * path.open_cents
        spread = chance * (1 - chance) * path.open_cents ** 2
        for group_of, expected_by, variance_by in zip(groupings, expected, variance,
                                                     strict=True):
            group = group_of(path)
            expected_by[group] += amount
            expected_by[ALL] += amount
            variance_by[group] += spread
            variance_by[ALL] += spread
    new_expected = new_variance = 0.0
    creation = histories.get(CREATED)
    if creation is not None and won_amounts:
        mean_won = sum(won_amounts) / len(won_amounts)
        rate = created / settings.rate_days
        for created_on in range(max(day, start), end):
            wins = rate * creation.win_probability(0, end - created_on)
            new_expected += wins * mean_won
            new_variance += wins * mean_won ** 2
    return [{group: Forecast(won_by[group], expected_by[group],
                             new_expected if group == ALL else 0.0,
                             variance_by[group] + (new_variance if group == ALL else 0.0))
             for group in sorted(set(won_by) | set(expected_by) | {ALL})}
            for won_by, expected_by, variance_by in zip(won, expected, variance, strict=True)]
