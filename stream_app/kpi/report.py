"""From summed aggregates to every KPI of a scrape: windows x groups, stages, churn.

Definitions (the README repeats them with their formulas):

- win rate = won / (won + lost); pipeline conversion = won / created;
- average deal size = won amount / won;
- sales cycle = sum of (won time - created time) / won, over deals won in the window;
- velocity (deals) = won / sales cycle; velocity (amount) = open deals at T x win rate
  x average deal size / sales cycle;
- weighted pipeline = sum over stages of open amount x stage probability;
- churn rate of a month = customers churned in it / customers active at its start.

A ratio whose denominator is zero is None (not exported), never 0.
"""

from __future__ import annotations

__all__ = [
    "ALL_GROUP",
    "OTHER_GROUP",
    "ChurnKpis",
    "Report",
    "Snapshot",
    "StageKpis",
    "WindowKpis",
    "build_report",
    "snapshot_from_aggregates",
]

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from stream_app.kpi.deals import add_vector
from stream_app.kpi.fold import parse_aggregate_key
from stream_app.kpi.windows import (
    WindowSpec,
    day_of,
    month_bounds,
    previous_month_bounds,
    window_first_day,
)

ALL_GROUP = "all"
#: Where teams beyond the label cap are summed.
OTHER_GROUP = "other"


@dataclass(slots=True)
class Snapshot:
    """Aggregates of the partitions a worker owns, summed over partitions."""

    buckets: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    open: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    new_customers: dict[int, int] = field(default_factory=dict)
    churned: dict[int, int] = field(default_factory=dict)
    latest_event_ms: int | None = None
    partitions: frozenset[int] = frozenset()
    folded_groups: int = 0


def snapshot_from_aggregates(
    items: Iterable[tuple[str, Any]],
    active_partitions: Iterable[int],
    keep_group: Callable[[str], bool] | None = None,
) -> Snapshot:
    """Sum aggregate records ``(key, {"g":..., "v":...})`` of the given partitions.

    Groups (teams) for which ``keep_group`` is false are summed into
    :data:`OTHER_GROUP`, and counted in :attr:`Snapshot.folded_groups`.
    """
    owned = frozenset(active_partitions)
    snap = Snapshot(partitions=owned)
    folded: set[str] = set()
    for key, record in items:
        if record is None:
            continue
        parsed = parse_aggregate_key(key)
        if parsed is None or parsed[1] not in owned:
            continue
        kind, _, group, part = parsed
        value = record["v"]
        if kind in ("b", "o") and keep_group is not None and not keep_group(group):
            folded.add(group)
            group = OTHER_GROUP
        if kind == "b":
            add_vector(snap.buckets, (group, int(part)), value)
        elif kind == "o":
            add_vector(snap.open, (group, part), value)
        elif kind == "n":
            snap.new_customers[int(part)] = snap.new_customers.get(int(part), 0) + value[0]
        elif kind == "c":
            snap.churned[int(part)] = snap.churned.get(int(part), 0) + value[0]
        elif kind == "t" and (snap.latest_event_ms is None or value > snap.latest_event_ms):
            snap.latest_event_ms = value
    snap.folded_groups = len(folded)
    return snap


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True, slots=True)
class WindowKpis:
    """Deal KPIs of one group (a team or ``all``) over one window."""

    group: str
    window: str
    created: int
    won: int
    lost: int
    won_cents: int
    cycle_ms: int
    open_deals: int

    @property
    def closed(self) -> int:
        """won + lost: the win-rate denominator."""
        return self.won + self.lost

    @property
    def win_rate(self) -> float | None:
        """won / (won + lost)."""
        return _ratio(self.won, self.closed)

    @property
    def conversion(self) -> float | None:
        """won / created."""
        return _ratio(self.won, self.created)

    @property
    def average_deal_cents(self) -> float | None:
        """won amount / won, in cents."""
        return _ratio(self.won_cents, self.won)

    @property
    def sales_cycle_seconds(self) -> float | None:
        """Mean seconds from created to won over deals won in the window."""
        return _ratio(self.cycle_ms / 1000, self.won)

    @property
    def velocity_deals_per_second(self) -> float | None:
        """won / sales cycle (deals per second; x 86400 for deals per day)."""
        cycle = self.sales_cycle_seconds
        return self.won / cycle if cycle else None

    @property
    def velocity_cents_per_second(self) -> float | None:
        """open deals at T x win rate x average deal size / sales cycle."""
        rate, size, cycle = self.win_rate, self.average_deal_cents, self.sales_cycle_seconds
        if rate is None or size is None or not cycle:
            return None
        return self.open_deals * rate * size / cycle


@dataclass(frozen=True, slots=True)
class StageKpis:
    """Open pipeline of one group in one stage at T."""

    group: str
    stage: str
    count: int
    cents: int
    weighted_cents: float


@dataclass(frozen=True, slots=True)
class ChurnKpis:
    """Customer churn of one calendar month: ``month_to_date`` or ``last_month``."""

    period: str
    start_day: int
    churned: int
    active_at_start: int

    @property
    def rate(self) -> float | None:
        """churned / active at the start of the month."""
        return _ratio(self.churned, self.active_at_start)


@dataclass(frozen=True, slots=True)
class Report:
    """Every KPI value of one scrape."""

    as_of_ms: int
    windows: tuple[WindowKpis, ...]
    stages: tuple[StageKpis, ...]
    churn: tuple[ChurnKpis, ...]
    folded_groups: int = 0


def _window_kpis(
    snap: Snapshot, specs: tuple[WindowSpec, ...], as_of_day: int, open_by_group: dict[str, int]
) -> list[WindowKpis]:
    teams = {team for team, _ in snap.buckets} | {team for team, _ in snap.open}
    out: list[WindowKpis] = []
    for spec in specs:
        first = window_first_day(spec, as_of_day)
        sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        for (team, day), vector in snap.buckets.items():
            if day > as_of_day or (first is not None and day < first):
                continue
            for target in (sums[team], sums[ALL_GROUP]):
                for i, value in enumerate(vector):
                    target[i] += value
        for group in (*sorted(teams), ALL_GROUP):
            created, won, lost, won_cents, cycle_ms = sums[group]
            out.append(
                WindowKpis(
                    group, spec.name, created, won, lost, won_cents, cycle_ms,
                    open_by_group.get(group, 0),
                )
            )
    return out


def _stage_kpis(
    snap: Snapshot, stages: tuple[str, ...], probability: dict[str, Decimal]
) -> list[StageKpis]:
    teams = sorted({team for team, _ in snap.open} | {team for team, _ in snap.buckets})
    out: list[StageKpis] = []
    for group in (*teams, ALL_GROUP):
        for stage in stages:
            if group == ALL_GROUP:
                count = sum(v[0] for (_, s), v in snap.open.items() if s == stage)
                cents = sum(v[1] for (_, s), v in snap.open.items() if s == stage)
            else:
                count, cents = snap.open.get((group, stage), (0, 0))
            weighted = float(Decimal(cents) * probability.get(stage, Decimal(0)))
            out.append(StageKpis(group, stage, count, cents, weighted))
    return out


def _churn_kpis(snap: Snapshot, as_of_day: int) -> list[ChurnKpis]:
    def active_at(start: int) -> int:
        new = sum(n for day, n in snap.new_customers.items() if day < start)
        gone = sum(n for day, n in snap.churned.items() if day < start)
        return new - gone

    def churned_between(start: int, end: int) -> int:
        return sum(n for day, n in snap.churned.items() if start <= day < end and day <= as_of_day)

    this_start, this_end = month_bounds(as_of_day)
    last_start, last_end = previous_month_bounds(as_of_day)
    return [
        ChurnKpis("month_to_date", this_start, churned_between(this_start, this_end),
                  active_at(this_start)),
        ChurnKpis("last_month", last_start, churned_between(last_start, last_end),
                  active_at(last_start)),
    ]


def build_report(
    snap: Snapshot,
    as_of_ms: int,
    specs: tuple[WindowSpec, ...],
    stages: tuple[str, ...],
    probability: dict[str, Decimal],
) -> Report:
    """Compute every KPI at as-of time ``as_of_ms`` from a snapshot."""
    as_of_day = day_of(as_of_ms)
    open_by_group: dict[str, int] = defaultdict(int)
    for (team, _), (count, _) in snap.open.items():
        open_by_group[team] += count
        open_by_group[ALL_GROUP] += count
    return Report(
        as_of_ms,
        tuple(_window_kpis(snap, specs, as_of_day, open_by_group)),
        tuple(_stage_kpis(snap, stages, probability)),
        tuple(_churn_kpis(snap, as_of_day)),
        snap.folded_groups,
    )

