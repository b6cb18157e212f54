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
won in the window. New deals:
``r`` is the deals created per day over the trailing ``rate_days``; their chance is the
same estimate for the stage :data:`CREATED` every deal enters at its creation, and ``m``
the mean won amount over the trailing ``window_days``. The low and high bands are the
10th and 90th percentiles of a normal approximation (each open deal a Bernoulli trial
of its amount; new wins Poisson counts of amount ``m``).
"""

from __future__ import annotations

__all__ = ["CREATED", "DEFAULT_FORECAST", "DealPath", "Forecast", "ForecastSettings",
           "StageHistory", "deal_path", "forecast_period", "learn_histories"]

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter

from stream_app.kpi.calendar import Calendar
from stream_app.kpi.deals import DealState, deal_timeline
from stream_app.kpi.lifecycle import WON
from stream_app.kpi.money import Pricing

#: The pseudo-stage every deal enters at its creation (for deals not yet created).
CREATED = "(created)"
#: Later than any event time (ms): the owner "now" of an open deal.
_END_OF_TIME = 2**62
#: The standard normal quantile of the bands (10th and 90th percentiles).
_Z90 = 1.2815515655446004


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    """How the forecast learns: trailing days of stage entries and of creations."""

    window_days: int = 365
    rate_days: int = 90
    #: The forecast-below-quota alert's margin (exported for the rule to read).
    alert_margin: float = 0.1


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
    return DealPath(entries, close, amount, str(info["team"]), owner)


class StageHistory:
    """The stints of one stage in the trailing window: (start day, day the deal left the
    stage or None, day the deal was won or None)."""

    def __init__(self, day: int):
        self._day = day
        self._stints: list[tuple[int, int | None, int | None]] = []
        self._tables: dict[tuple[int, int], list[float]] = {}

    def add(self, started: int, left: int | None, won_on: int | None) -> None:
        """One stint; ``left`` and ``won_on`` only as known before the checkpoint."""
        self._stints.append((started, left, won_on))
        if self._tables:
            self._tables.clear()

    def win_probability(self, age: int, horizon: int, skip: int = 0) -> float:
        """Chance a deal ``age`` days into the stage is won on days ``age + skip`` ..
        ``age + horizon - 1`` of its stint, among the past stints still in the stage at
        ``age`` and observed for ``horizon`` days after it."""
        if horizon <= skip or age < 0:
            return 0.0
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
        size = max((self._day - started + 2 for started, _, _ in self._stints), default=1)
        eligible_ends = [0] * size
        won_steps = [0] * (size + 1)
        for started, _, won_on in self._stints:
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
        for started, left, won_on in self._stints:
            last = self._day - horizon - started
            if left is not None:
                last = min(last, left - started)
            if last < 0:
                continue
            last_ages.append(last)
            if won_on is not None:
                first_won = max(0, won_on - started - horizon + 1)
                last_won = min(last, won_on - started - skip)
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


def learn_histories(paths: Iterable[DealPath], day: int, settings: ForecastSettings
                    ) -> dict[str, StageHistory]:
    """The stints of every stage begun in the trailing window before ``day``."""
    first = day - settings.window_days
    histories: dict[str, StageHistory] = {}
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
                history = histories[stage] = StageHistory(day)
            history.add(started, left, won_on)
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
    paths = list(paths)
    if histories is None:
        histories = learn_histories(paths, day, settings)
    won: dict[str, int] = defaultdict(int)
    expected: dict[str, float] = defaultdict(float)
    variance: dict[str, float] = defaultdict(float)
    created = 0
    won_amounts: list[int] = []
    for path in paths:
        if path.entries and day - settings.rate_days <= path.entries[0][1] < day:
            created += 1
        close = path.close
        if close is not None and close[1] < day:
            if close[0] and start <= close[1] < end:
                for group in (group_of(path), "all"):
                    won[group] += close[2]
            if close[0] and day - settings.window_days <= close[1]:
                won_amounts.append(close[2])
            continue
        if not path.entries or path.entries[0][1] >= day:
            continue
        stage, entered = [entry for entry in path.entries if entry[1] < day][-1]
        history = histories.get(stage)
        chance = 0.0 if history is None else history.win_probability(
            day - entered, end - day, max(0, start - day))
        for group in (group_of(path), "all"):
            expected[group] += chance * path.open_cents
            variance[group] += chance * (1 - chance) * path.open_cents ** 2
    new_expected = new_variance = 0.0
    creation = histories.get(CREATED)
    if creation is not None and won_amounts:
        mean_won = sum(won_amounts) / len(won_amounts)
        rate = created / settings.rate_days
        for created_on in range(max(day, start), end):
            wins = rate * creation.win_probability(0, end - created_on)
            new_expected += wins * mean_won
            new_variance += wins * mean_won ** 2
    groups = sorted(set(won) | set(expected) | {"all"})
    return {group: Forecast(won[group], expected[group],
                            new_expected if group == "all" else 0.0,
                            variance[group] + (new_variance if group == "all" else 0.0))
            for group in groups}
