"""The forecast rows of a report: this month's, this quarter's and next quarter's won
amount forecast at the start of T's day (per team, and for the month and quarter per
owner), how far the forecasts of the last closed month and quarter were from what they
closed at, and the CRM's own plan (:mod:`stream_app.kpi.forecast_plans`).

Every forecast is made as of the start of a day ``c`` (the checkpoint) from the deal
states cut at ``c`` (:func:`stream_app.kpi.deals.state_before`): the events timed before
``c`` and nothing else, however late they arrived. A replay therefore gives the same
numbers, and the forecast of a checkpoint already passed (the accuracy snapshots) is
recomputed, exactly, when an event timed before it arrives late.

- live: checkpoint = T's day; periods month, quarter (fiscal) and next_quarter;
- accuracy: checkpoints days 1, 8, 15 and 22 of the last closed month (``day_1`` ..)
  and the first day of weeks 1-13 of the last closed quarter (``week_1`` ..); the error
  of each is |forecast - won| / won, ``won`` being the period's won amount as known at T.
"""

from __future__ import annotations

__all__ = ["DealSums", "ForecastAccuracyKpis", "ForecastBasis", "ForecastKpis", "ForecastRows",
           "ForecastSource", "OwnerForecastKpis", "Pairs", "PairsPatch", "PathCache",
           "forecast_rows", "team_forecasts"]

from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Generic, TypeVar

from stream_app.kpi.calendar import Calendar
from stream_app.kpi.deals import DealState, state_before
from stream_app.kpi.forecast import (
    ALL,
    DealPath,
    Forecast,
    ForecastSettings,
    deal_path,
    forecast_period_by,
    learn_histories,
)
from stream_app.kpi.forecast_plans import PlanKey, PlanKpis, deal_plan_rows, plan_kpis
from stream_app.kpi.money import Pricing

#: Days of the month the last closed month's forecasts are scored at.
MONTH_CHECKPOINT_DAYS = (1, 8, 15, 22)
#: Weeks of the quarter (their first days) the last closed quarter's forecasts are scored at.
QUARTER_CHECKPOINT_WEEKS = tuple(range(1, 14))
_DAYS_PER_WEEK = 7
_QUARTERS_PER_YEAR = 4


@dataclass(frozen=True, slots=True)
class ForecastKpis:
    """The forecast of one group's won amount for one period, made at the start of T's
    day, in cents: won so far + expected from open deals + expected from deals not
    created yet (``all`` only), with the 10th and 90th percentiles."""

    group: str
    period: str
    name: str
    won_cents: int
    open_expected_cents: float
    new_expected_cents: float
    low_cents: float
    high_cents: float
    #: Days of the period before T's day, and days in the period.
    days_elapsed: int
    days: int

    @property
    def expected_cents(self) -> float:
        """The forecast: the sum of its three parts."""
        return self.won_cents + self.open_expected_cents + self.new_expected_cents

    @property
    def elapsed_ratio(self) -> float:
        """Days elapsed / days in the period."""
        return self.days_elapsed / self.days


@dataclass(frozen=True, slots=True)
class ForecastAccuracyKpis:
    """A forecast of a closed period made at a checkpoint, and the period's won amount."""

    group: str
    period: str
    name: str
    checkpoint: str
    forecast_cents: float
    won_cents: int

    @property
    def error_ratio(self) -> float | None:
        """|forecast - won| / won (None when nothing was won)."""
        if not self.won_cents:
            return None
        return abs(self.forecast_cents - self.won_cents) / self.won_cents


@dataclass(frozen=True, slots=True)
class OwnerForecastKpis:
    """The forecast of one owner's won amount for T's month, quarter or next quarter, in
    cents: won so far by the owner (owner at the close) + the owner's open deals (current
    owner) x their chance; no deals not created yet (nobody owns them)."""

    owner: str
    period: str
    won_cents: int
    expected_cents: float
    low_cents: float
    high_cents: float


@dataclass(frozen=True, slots=True)
class ForecastBasis:
    """What the forecast reads: every deal state of the forecast partition (folded
    without pruning), the days on which they changed, and the exported team names."""

    states: tuple[DealState, ...]
    #: (day, notes): how many state changes had their earliest new event on that day.
    change_days: tuple[tuple[int, int], ...]
    #: Moves when the states were rebuilt (a recovery), so nothing cached survives it.
    generation: int
    #: Team -> the team label it is exported under (``(other)`` past the label cap).
    team_names: Mapping[str, str]
    pricing: Pricing
    calendar: Calendar
    #: Owner -> the owner label it is exported under (``(other)`` past the label cap).
    owner_names: Mapping[str, str] = field(default_factory=dict)

    #: The exported names, sorted: part of every signature (computed once, when first
    #: read: the worker hands bases over without reading them).
    _names: tuple[Hashable, ...] | None = field(default=None, init=False, repr=False,
                                                compare=False)

    def signature_before(self, day: int | None) -> tuple[Hashable, ...]:
        """Changes whenever the states cut at the start of ``day`` (None: not cut) may
        have."""
        changes = sum(count for changed, count in self.change_days
                      if day is None or changed < day)
        return (changes, *self.labelling())

    def labelling(self) -> tuple[Hashable, ...]:
        """Changes when the states were rebuilt or an exported name changed."""
        names = self._names
        if names is None:
            names = (tuple(sorted(self.team_names.items())),
                     tuple(sorted(self.owner_names.items())))
            object.__setattr__(self, "_names", names)
        return (self.generation, *names)


_Key = TypeVar("_Key", bound=Hashable)
#: A deal's rows in a sum: (key, cents); each row also counts the deal once.
DealRows = tuple[tuple[_Key, int], ...]
#: Every deal's state (uncut) and path, in the order of the basis's states.
Pairs = list[tuple[DealState, DealPath | None]]


@dataclass(frozen=True, slots=True)
class PairsPatch:
    """How one list of pairs became the next: only the positions listed were replaced
    or appended (in increasing order), every other entry is the same object."""

    before: Pairs
    after: Pairs
    positions: tuple[int, ...]


@dataclass
class DealSums(Generic[_Key]):
    """Sums of (deals, cents) per key over every deal's rows, kept up to date by the deals
    whose state changed: a deal's rows are read again only when its state is another
    object, and the sums move by the difference. A change of ``context`` (what the rows
    are read with besides the state: T's day, the periods, the exported names) or a deal
    gone from the states sums everything again."""

    context: Hashable = None
    rows: dict[str, tuple[DealState, DealRows[_Key]]] = field(default_factory=dict)
    sums: dict[_Key, list[int]] = field(default_factory=dict)
    #: The pairs the sums are over (None: not known to be any list's).
    synced: Pairs | None = field(default=None, repr=False)

    def update(self, pairs: Pairs, context: Hashable,
               rows_of: Callable[[DealState, DealPath | None], DealRows[_Key]],
               patch: PairsPatch | None = None) -> dict[_Key, list[int]]:
        """The sums over ``pairs`` (every deal's state and path); with a ``patch`` that
        made ``pairs`` from the pairs the sums are over, only its positions are read."""
        if context != self.context:
            self.context, self.rows, self.sums = context, {}, {}
            self.synced = None
        if patch is not None and patch.after is pairs and patch.before is self.synced:
            self._move([pairs[position] for position in patch.positions], rows_of)
        else:
            self._move(pairs, rows_of)
        self.synced = pairs
        if len(self.rows) != len(pairs):  # a deal left while another came
            self.context, self.rows, self.sums = context, {}, {}
            self._move(pairs, rows_of)
        if len(self.rows) != len(pairs):  # a deal twice: its rows cannot be kept apart
            self.context, self.rows, self.sums, self.synced = None, {}, {}, None
            sums: dict[_Key, list[int]] = {}
            for state, path in pairs:
                _add_rows(sums, rows_of(state, path), 1)
            return sums
        return self.sums

    def _move(self, pairs: Pairs,
              rows_of: Callable[[DealState, DealPath | None], DealRows[_Key]]) -> None:
        rows, sums = self.rows, self.sums
        for state, path in pairs:
            known = rows.get(state.deal_id)
            if known is not None and known[0] is state:
                continue
            new = rows_of(state, path)
            if known is not None:
                _add_rows(sums, known[1], -1)
            _add_rows(sums, new, 1)
            rows[state.deal_id] = (state, new)


def _add_rows(sums: dict[_Key, list[int]], rows: DealRows[_Key], sign: int) -> None:
    for key, cents in rows:
        row = sums.get(key)
        if row is None:
            row = sums[key] = [0, 0]
        row[0] += sign
        row[1] += sign * cents
        if not row[0]:
            del sums[key]


@dataclass
class PathCache:
    """Deal paths already read, each kept with the state it was read from: a later report
    reads again only the deals that changed. A deal whose every event lies before a cut
    has its uncut path there, and one created after it has none, so a cut keeps paths
    only for the deals it falls inside."""

    #: Per deal: the state, its uncut path and the time of its latest event.
    whole: dict[str, tuple[DealState, DealPath | None, int]] = field(default_factory=dict)
    #: Per cut day: the deals it falls inside, with the state and the cut path.
    cuts: dict[int, dict[str, tuple[DealState, DealPath | None]]] = field(
        default_factory=dict)
    #: The CRM plan's rows and the won amounts per team and day, over the uncut states.
    plans: DealSums[PlanKey] = field(default_factory=DealSums)
    won: DealSums[tuple[str, int]] = field(default_factory=DealSums)
    #: The uncut pairs last read, with the basis they were read from.
    uncut: tuple[ForecastBasis, Pairs] | None = field(default=None, repr=False)
    #: How the last uncut pairs were made from the ones before (see :meth:`patched`).
    patch: PairsPatch | None = field(default=None, repr=False)

    def patched(self, basis: ForecastBasis, positions: tuple[int, ...]) -> None:
        """``basis`` holds the states of the last basis read uncut except at
        ``positions`` (increasing; replaced, or appended at the end): its uncut pairs are
        made from the last ones by reading those deals alone, and the sums kept over the
        uncut pairs move by those deals alone. Without a last basis, nothing to do."""
        if self.uncut is None:
            return
        before = self.uncut[1]
        states = basis.states
        if len(states) < len(before) or (positions and positions[-1] >= len(states)):
            self.uncut = self.patch = None
            return
        after = list(before)
        for position in positions:
            state = states[position]
            pair = (state, self._uncut_path(basis, state)[1])
            if position < len(after):
                after[position] = pair
            else:
                after.append(pair)
        if len(after) != len(states):
            self.uncut = self.patch = None
            return
        self.uncut = (basis, after)
        self.patch = PairsPatch(before, after, positions)

    def paths(self, basis: ForecastBasis, day: int | None) -> list[DealPath]:
        """Every deal's path as known before the start of ``day`` (None: now)."""
        return [path for _, path in self.pairs(basis, day) if path is not None]

    def pairs(self, basis: ForecastBasis, day: int | None) -> Pairs:
        """Every deal's state (uncut) and path as known before the start of ``day``."""
        out: list[tuple[DealState, DealPath | None]] = []
        if day is None:
            if self.uncut is not None and self.uncut[0] is basis:
                return self.uncut[1]
            for state in basis.states:
                out.append((state, self._uncut_path(basis, state)[1]))
            self.uncut, self.patch = (basis, out), None
            return out
        cutoff = basis.calendar.day_start_ms(day)
        previous = self.cuts.get(day, {})
        inside: dict[str, tuple[DealState, DealPath | None]] = {}
        for state in basis.states:
            known = self._uncut_path(basis, state)
            if known[2] < cutoff:
                out.append((state, known[1]))
            elif state.created is None or int(state.created[0]) >= cutoff:
                out.append((state, None))
            else:
                cut = previous.get(state.deal_id)
                if cut is None or cut[0] is not state:
                    cut = (state, deal_path(state_before(state, cutoff), basis.pricing,
                                            basis.calendar))
                inside[state.deal_id] = cut
                out.append(cut)
        self.cuts[day] = inside
        return out

    def _uncut_path(self, basis: ForecastBasis, state: DealState
                    ) -> tuple[DealState, DealPath | None, int]:
        """The deal's entry in :attr:`whole`, read again if its state changed."""
        known = self.whole.get(state.deal_id)
        return known if known is not None and known[0] is state else self._read(basis, state)

    def _read(self, basis: ForecastBasis, state: DealState
              ) -> tuple[DealState, DealPath | None, int]:
        latest_ms = max((at for at, _ in state.marks()), default=0)
        known = (state, deal_path(state, basis.pricing, basis.calendar), latest_ms)
        self.whole[state.deal_id] = known
        return known

    def keep_only(self, days: set[int | None]) -> None:
        """Forget the cuts no longer read."""
        for day in list(self.cuts):
            if day not in days:
                del self.cuts[day]


#: Computes a value once per key: (name, key, compute) -> value.
Cached = Callable[[str, Hashable, Callable[[], Any]], Any]


def team_forecasts(forecasts: Mapping[str, Forecast], team_names: Mapping[str, str]
                   ) -> dict[str, Forecast]:
    """Per exported team label (teams past the cap summed into ``(other)``) and ``all``."""
    merged: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    for group, forecast in forecasts.items():
        name = ALL if group == ALL else team_names.get(group, group)
        parts = merged[name]
        parts[0] += forecast.won_cents
        parts[1] += forecast.open_expected_cents
        parts[2] += forecast.new_expected_cents
        parts[3] += forecast.variance
    return {name: Forecast(int(won), opened, new, variance)
            for name, (won, opened, new, variance) in merged.items()}


def _periods(calendar: Calendar, day: int) -> dict[str, tuple[str, int, int]]:
    """month, quarter and next_quarter of ``day``: (name, first day, first day after)."""
    month_start, month_end = calendar.month_bounds(day)
    year, quarter = calendar.fiscal_quarter(day)
    next_year, next_quarter = (year, quarter + 1) if quarter < _QUARTERS_PER_YEAR \
        else (year + 1, 1)
    return {
        "month": (calendar.month_name(calendar.day_start_ms(day)), month_start, month_end),
        "quarter": (f"{year}-Q{quarter}", *calendar.quarter_bounds(year, quarter)),
        "next_quarter": (f"{next_year}-Q{next_quarter}",
                         *calendar.quarter_bounds(next_year, next_quarter)),
    }


def _closed_periods(calendar: Calendar, day: int
                    ) -> dict[str, tuple[str, int, int, tuple[tuple[str, int], ...]]]:
    """last_month and last_quarter: (name, first day, first day after, checkpoints)."""
    month_start, month_end = calendar.previous_month_bounds(day)
    year, quarter = calendar.fiscal_quarter(day)
    last_year, last_quarter = (year, quarter - 1) if quarter > 1 else \
        (year - 1, _QUARTERS_PER_YEAR)
    quarter_start, quarter_end = calendar.quarter_bounds(last_year, last_quarter)
    return {
        "last_month": (calendar.month_name(calendar.day_start_ms(month_start)),
                       month_start, month_end,
                       tuple((f"day_{n}", month_start + n - 1) for n in MONTH_CHECKPOINT_DAYS)),
        "last_quarter": (f"{last_year}-Q{last_quarter}", quarter_start, quarter_end,
                         tuple((f"week_{n}", quarter_start + _DAYS_PER_WEEK * (n - 1))
                               for n in QUARTER_CHECKPOINT_WEEKS)),
    }


@dataclass(frozen=True, slots=True)
class ForecastRows:
    """Every forecast row of a report."""

    live: tuple[ForecastKpis, ...] = ()
    accuracy: tuple[ForecastAccuracyKpis, ...] = ()
    plans: tuple[PlanKpis, ...] = ()
    owners: tuple[OwnerForecastKpis, ...] = ()
    #: The rows are of an earlier state: the current one's are still being computed.
    stale: bool = False
    #: How long computing these rows took (None: computed in the report).
    compute_seconds: float | None = None


#: Where a report gets its forecast rows: (basis, T's day) -> rows.
ForecastSource = Callable[[ForecastBasis | None, int], ForecastRows]


def forecast_rows(basis: ForecastBasis | None, as_of_day: int, settings: ForecastSettings,
                  cached: Cached, paths: PathCache) -> ForecastRows:
    """The live forecasts (per team and per owner), the accuracy rows and the CRM plan's
    rows of ``basis`` at T's day."""
    if basis is None or not basis.states:
        return ForecastRows()
    calendar = basis.calendar
    used: set[int | None] = set()

    def forecasts_at(checkpoint: int, start: int, end: int, by: str = "team"
                     ) -> dict[str, Forecast]:
        def compute() -> dict[str, dict[str, Forecast]]:
            known = paths.paths(basis, checkpoint)
            by_team, by_owner = forecast_period_by(
                known, checkpoint, start, end, settings, histories_at(checkpoint, known),
                (attrgetter("team"), attrgetter("owner")))
            return {"team": team_forecasts(by_team, basis.team_names),
                    "owner": team_forecasts(by_owner, basis.owner_names)}
        used.add(checkpoint)
        forecasts: dict[str, dict[str, Forecast]] = cached(
            f"forecast:{checkpoint}:{start}:{end}", basis.signature_before(checkpoint),
            compute)
        return forecasts[by]

    def histories_at(checkpoint: int, known: list[DealPath]) -> Any:
        return cached(f"histories:{checkpoint}", basis.signature_before(checkpoint),
                      lambda: learn_histories(known, checkpoint, settings))

    periods = _periods(calendar, as_of_day)
    plan_periods = {period: periods[period][1:] for period in ("month", "quarter")}
    names = basis.team_names
    plans = cached("plans", (as_of_day, basis.signature_before(None)), lambda: plan_kpis(
        paths.plans.update(paths.pairs(basis, None), (
            as_of_day, tuple(plan_periods.items()), basis.labelling()),
            lambda state, path: deal_plan_rows(
                state, path, as_of_day, plan_periods, calendar, names), paths.patch)))

    def live_rows() -> tuple[tuple[ForecastKpis, ...], tuple[OwnerForecastKpis, ...]]:
        live = []
        for period, (name, start, end) in periods.items():
            for group, forecast in sorted(forecasts_at(as_of_day, start, end).items()):
                live.append(ForecastKpis(
                    group, period, name, forecast.won_cents, forecast.open_expected_cents,
                    forecast.new_expected_cents, forecast.low_cents, forecast.high_cents,
                    max(0, min(as_of_day, end) - start), end - start))
        owners = []
        for period, (_, start, end) in periods.items():
            for owner, forecast in sorted(
                    forecasts_at(as_of_day, start, end, "owner").items()):
                if owner != ALL:
                    owners.append(OwnerForecastKpis(
                        owner, period, forecast.won_cents,
                        forecast.open_expected_cents + forecast.won_cents,
                        forecast.low_cents, forecast.high_cents))
        return tuple(live), tuple(owners)

    used.add(as_of_day)
    live, owners = cached("live rows", (as_of_day, basis.signature_before(as_of_day)),
                          live_rows)
    accuracy = []
    closed = _closed_periods(calendar, as_of_day)
    won_now = cached("won", basis.signature_before(None), lambda: {
        key: cents for key, (_, cents) in paths.won.update(
            paths.pairs(basis, None), basis.labelling(),
            lambda _, path: _won_rows(path, names), paths.patch).items()})
    used.add(None)
    for period, (name, start, end, checkpoints) in closed.items():
        won = _won_between(won_now, start, end)
        for checkpoint_name, checkpoint in checkpoints:
            scored = forecasts_at(checkpoint, start, end)
            for group in sorted(set(scored) | set(won)):
                made = scored.get(group)
                accuracy.append(ForecastAccuracyKpis(
                    group, period, name, checkpoint_name,
                    0.0 if made is None else made.expected_cents, won.get(group, 0)))
    paths.keep_only(used)
    return ForecastRows(live, tuple(accuracy), plans, owners)


def _won_rows(path: DealPath | None, team_names: Mapping[str, str]
              ) -> DealRows[tuple[str, int]]:
    """A deal's won amount under (exported team, close day), if it was won."""
    if path is None or path.close is None or not path.close[0]:
        return ()
    return (((team_names.get(path.team, path.team), path.close[1]), path.close[2]),)


def _won_between(won_by_day: Mapping[tuple[str, int], int], start: int, end: int
                 ) -> dict[str, int]:
    won: dict[str, int] = defaultdict(int)
    for (team, day), cents in won_by_day.items():
        if start <= day < end:
            won[team] += cents
            won[ALL] += cents
    return dict(won)
