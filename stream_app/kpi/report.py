"""From summed aggregates to every KPI of a scrape.

Definitions (the README repeats them with their formulas):

- win rate = won / (won + lost); pipeline conversion = won / created;
- average deal size = won amount / won;
- sales cycle = sum of (won time - created time) / won, over deals won in the window;
- velocity (deals) = won / sales cycle; velocity (amount) = open deals at T x win rate
  x average deal size / sales cycle;
- weighted pipeline = sum over stages of open amount x stage probability;
- stuck deals = open deals whose current stage began more than ``stuck_days`` UTC
  days before T's day;
- stage stints: per stage, stints that ended in the window, their mean length, the
  share that left forward (a later stage or won); bottleneck = stage with the
  longest mean stint;
- churn rate of a month = customers churned in it / customers active at its start;
- monthly growth = (won amount of a month - the month before) / the month before;
- CLV = APV x PF x CL over the trailing 365 days (see :class:`ClvKpis`);
- coverage = open pipeline / quota of the period; remaining coverage = open pipeline /
  (quota - won); required coverage = 1 / win rate (90 days); attainment = won / quota
  per owner, and the share of owners with a quota at or above 100%;
- lead conversion = leads converted / leads created in the window, per source;
  conversion by score band over leads closed in the window; the live score of
  each open lead at T (see :mod:`stream_app.kpi.scoring`);
- activities (calls, emails, meetings) logged in the window per team and per owner;
  activities per won deal = activities of the team logged in the window / deals of
  the team won in the window.

A ratio whose denominator is zero is None (not exported), never 0.
"""

from __future__ import annotations

__all__ = [
    "ALL_GROUP",
    "KIND_LABEL",
    "OTHER_GROUP",
    "REQUIRED_COVERAGE_DAYS",
    "RESERVED_GROUPS",
    "ActivityKpis",
    "AttainmentKpis",
    "BottleneckKpis",
    "Cell",
    "ChurnKpis",
    "ClvKpis",
    "CompetitorKpis",
    "DimensionKpis",
    "GrowthKpis",
    "LeadBandKpis",
    "LeadKpis",
    "LeadScoreKpis",
    "OwnerActivityKpis",
    "QuotaKpis",
    "Report",
    "ReportConfig",
    "RequiredCoverageKpis",
    "Snapshot",
    "StageKpis",
    "StintKpis",
    "WaterfallKpis",
    "WindowKpis",
    "build_report",
    "merge_cells",
    "snapshot_from_aggregates",
    "snapshot_from_cells",
    "update_cell",
]

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from stream_app.kpi.accounts import ACTIVE_BUYER_DAYS, CHURN_KIND, NEW_CUSTOMER_CHURN
from stream_app.kpi.activities import ACTIVITY_KINDS
from stream_app.kpi.deals import MOVEMENTS, STINT_BUCKETS_DAYS, STINT_FIELDS, add_vector
from stream_app.kpi.fold import parse_aggregate_key
from stream_app.kpi.leads import ScoreInputs
from stream_app.kpi.scoring import ScoringRules
from stream_app.kpi.windows import (
    WindowSpec,
    current_periods,
    day_of,
    month_bounds,
    previous_month_bounds,
    window_first_day,
)

ALL_GROUP = "all"
#: Where label values beyond their cap are summed.
OTHER_GROUP = "(other)"
#: Label values the exporter uses itself; a data value equal to one gets a trailing "_".
RESERVED_GROUPS = frozenset({ALL_GROUP, OTHER_GROUP})
#: The label each aggregate kind's group is exported under.
KIND_LABEL = {"b": "team", "o": "team", "f": "team", "w": "team", "a": "owner", "y": "owner",
              "r": "source", "e": "source", "u": "product", "k": "competitor",
              "m": "competitor", "v": "team", "z": "owner"}
#: Days of the win rate behind the required coverage.
REQUIRED_COVERAGE_DAYS = 90
_DIMENSION = {"r": "source", "u": "product"}
_MS_PER_S = 1000


@dataclass(slots=True)
class Snapshot:
    """Aggregates of the partitions a worker owns, summed over partitions."""

    buckets: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    open: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)
    dimensions: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)
    stints: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)
    waterfall: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)
    competitors: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    churned_to: dict[tuple[str, int], int] = field(default_factory=dict)
    new_customers: dict[int, int] = field(default_factory=dict)
    churned: dict[int, int] = field(default_factory=dict)
    new_churned: dict[int, int] = field(default_factory=dict)
    buyer_deltas: dict[int, int] = field(default_factory=dict)
    quota_cents: dict[tuple[str, str], int] = field(default_factory=dict)
    quota_team: dict[tuple[str, str], str] = field(default_factory=dict)
    owner_won: dict[tuple[str, str], int] = field(default_factory=dict)
    owner_kept: dict[str, bool] = field(default_factory=dict)
    leads: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    bands: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    activities: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    owner_activities: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    open_leads: list[ScoreInputs] = field(default_factory=list)
    latest_event_ms: int | None = None
    partitions: frozenset[int] = frozenset()
    folded: dict[str, set[str]] = field(default_factory=dict)

    def merge(self, other: Snapshot) -> None:
        """Take the account and owner aggregates of another table's snapshot."""
        for name in ("new_customers", "churned", "new_churned", "churned_to", "buyer_deltas",
                     "quota_cents", "quota_team", "owner_won", "owner_kept", "leads", "bands",
                     "activities", "owner_activities"):
            if getattr(other, name):
                setattr(self, name, getattr(other, name))
        for label, values in other.folded.items():
            self.folded[label] = self.folded.get(label, set()) | values


def _split(part: str) -> tuple[int, str]:
    day, _, name = part.partition(":")
    return int(day), name


def _count(target: dict[Any, int], key: Any, n: int) -> None:
    target[key] = target.get(key, 0) + n


#: An aggregate summed over partitions: (kind, group, part).
Cell = tuple[str, str, str]


def update_cell(cells: dict[Cell, Any], parsed: tuple[str, int, str, str], old: Any,
                new: Any) -> None:
    """Move the sum over partitions of one aggregate from a partition's ``old`` value
    (None: the record did not exist) to its ``new`` one. Clocks (``t``) take the max:
    a partition's clock only moves forward."""
    kind, _, group, part = parsed
    cell = (kind, group, part)
    current = cells.get(cell)
    if kind == "t":
        cells[cell] = new if current is None or new > current else current
    elif current is None:
        cells[cell] = list(new) if old is None else [n - o for n, o in zip(new, old, strict=True)]
    elif old is None:
        cells[cell] = [c + n for c, n in zip(current, new, strict=True)]
    else:
        cells[cell] = [c + n - o for c, n, o in zip(current, new, old, strict=True)]


def merge_cells(items: Iterable[tuple[str | tuple[str, int, str, str], Any]],
                active_partitions: Iterable[int]) -> dict[Cell, Any]:
    """Sum aggregate records ``(key, {"g":..., "v":...})`` of the given partitions per
    cell; a key may come already parsed (see :func:`~stream_app.kpi.fold.parse_aggregate_key`).
    Position marks (``p``) are not KPIs and are left out."""
    owned = frozenset(active_partitions)
    cells: dict[Cell, Any] = {}
    for key, record in items:
        if record is None:
            continue
        parsed = key if isinstance(key, tuple) else parse_aggregate_key(key)
        if parsed is None or parsed[1] not in owned or parsed[0] == "p":
            continue
        update_cell(cells, parsed, None, record["v"])
    return cells


def snapshot_from_aggregates(
    items: Iterable[tuple[str | tuple[str, int, str, str], Any]],
    active_partitions: Iterable[int],
    keep: Callable[[str, str], bool] | None = None,
) -> Snapshot:
    """The snapshot of aggregate records of the given partitions (see
    :func:`merge_cells` and :func:`snapshot_from_cells`)."""
    owned = frozenset(active_partitions)
    return snapshot_from_cells(merge_cells(items, owned), owned, keep)


def snapshot_from_cells(
    cells: Mapping[Cell, Any],
    partitions: Iterable[int],
    keep: Callable[[str, str], bool] | None = None,
) -> Snapshot:
    """The snapshot of cells already summed over ``partitions``.

    A group whose label value ``keep(label, value)`` refuses is summed into
    :data:`OTHER_GROUP`; :attr:`Snapshot.folded` holds such values per label (a value
    folded in several tables counts once). A data value equal to a reserved one
    (``all``, ``(other)``) is exported with a trailing "_".
    """
    snap = Snapshot(partitions=frozenset(partitions))
    folded: dict[str, set[str]] = defaultdict(set)
    for (kind, group, part), value in cells.items():
        if kind in ("a", "y"):
            _owner_aggregate(snap, kind, group, part, value, keep, folded)
            continue
        label = KIND_LABEL.get(kind)
        if label is not None:
            if keep is not None and not keep(label, group):
                folded[label].add(group)
                group = OTHER_GROUP
            elif group in RESERVED_GROUPS:
                group += "_"
        if kind == "b":
            add_vector(snap.buckets, (group, int(part)), value)
        elif kind == "o":
            day, stage = _split(part)
            add_vector(snap.open, (group, stage, day), value)
        elif kind in _DIMENSION:
            add_vector(snap.dimensions, (_DIMENSION[kind], group, int(part)), value)
        elif kind == "f":
            day, stage = _split(part)
            add_vector(snap.stints, (group, stage, day), value)
        elif kind == "w" and ":" in part:
            day, movement = _split(part)
            add_vector(snap.waterfall, (group, movement, day), value)
        elif kind == "k":
            add_vector(snap.competitors, (group, int(part)), value)
        elif kind == "m":
            _count(snap.churned_to, (group, int(part)), value[0])
        elif kind == "n":
            _count(snap.new_customers, int(part), value[0])
        elif kind == CHURN_KIND:
            _count(snap.new_churned if group == NEW_CUSTOMER_CHURN else snap.churned, int(part),
                   value[0])
        elif kind == "l":
            _count(snap.buyer_deltas, int(part), value[0])
        elif kind == "e":
            add_vector(snap.leads, (group, int(part)), value)
        elif kind == "h":
            add_vector(snap.bands, (group, int(part)), value)
        elif kind == "v":
            add_vector(snap.activities, (group, int(part)), value)
        elif kind == "z":
            add_vector(snap.owner_activities, (group, int(part)), value)
        elif kind == "t" and (snap.latest_event_ms is None or value > snap.latest_event_ms):
            snap.latest_event_ms = value
    snap.folded = dict(folded)
    return snap


def _owner_aggregate(snap: Snapshot, kind: str, owner: str, part: str, value: list[int],
                     keep: Callable[[str, str], bool] | None,
                     folded: dict[str, set[str]]) -> None:
    """Quotas and wins stay per owner (attainment is decided per owner); the owner and
    team caps are applied when they are exported."""
    if owner not in snap.owner_kept:
        snap.owner_kept[owner] = keep is None or keep("owner", owner)
        if not snap.owner_kept[owner]:
            folded["owner"].add(owner)
    if kind == "y":
        _count(snap.owner_won, (owner, part), value[0])
        return
    if not value[1]:
        return
    period, _, team = part.partition("|")
    if keep is not None and not keep("team", team):
        folded["team"].add(team)
        team = OTHER_GROUP
    elif team in RESERVED_GROUPS:
        team += "_"
    _count(snap.quota_cents, (owner, period), value[0])
    snap.quota_team[(owner, period)] = team


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True, slots=True)
class ReportConfig:
    """What a report needs besides the snapshot: windows, stages, thresholds."""

    specs: tuple[WindowSpec, ...]
    stages: tuple[str, ...]
    probability: dict[str, Decimal]
    stuck_days: int = 30
    clv_max_years: float = 10.0
    scoring: ScoringRules | None = None
    hot_wait_ms: int = 86_400_000


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
        return _ratio(self.cycle_ms / _MS_PER_S, self.won)

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
class DimensionKpis:
    """Deals of one lead source or product (``dimension``) over one window."""

    dimension: str
    value: str
    window: str
    created: int
    won: int
    lost: int
    won_cents: int

    @property
    def win_rate(self) -> float | None:
        """won / (won + lost)."""
        return _ratio(self.won, self.won + self.lost)

    @property
    def average_deal_cents(self) -> float | None:
        """won amount / won, in cents."""
        return _ratio(self.won_cents, self.won)


@dataclass(frozen=True, slots=True)
class StageKpis:
    """Open pipeline of one group in one stage at T, and the part of it that is stuck."""

    group: str
    stage: str
    count: int
    cents: int
    weighted_cents: float
    stuck_count: int = 0
    stuck_cents: int = 0


@dataclass(frozen=True, slots=True)
class StintKpis:
    """Stints in one stage that ended in the window, for one group."""

    group: str
    stage: str
    window: str
    stints: int
    stint_ms: int
    forward: int
    backward: int
    lost: int
    buckets: tuple[int, ...]

    @property
    def mean_seconds(self) -> float | None:
        """Mean stint length in seconds."""
        return _ratio(self.stint_ms / _MS_PER_S, self.stints)

    @property
    def forward_ratio(self) -> float | None:
        """Exits to a later stage or won / all exits."""
        return _ratio(self.forward, self.stints)


@dataclass(frozen=True, slots=True)
class BottleneckKpis:
    """The stage with the longest mean stint (first in pipeline order on ties)."""

    group: str
    window: str
    stage: str
    mean_seconds: float


@dataclass(frozen=True, slots=True)
class WaterfallKpis:
    """Count and amount (cents) of one pipeline movement of one group in one window."""

    group: str
    movement: str
    window: str
    count: int
    cents: int


@dataclass(frozen=True, slots=True)
class CompetitorKpis:
    """Deals closed naming a competitor, and customers who left for it, in the window."""

    competitor: str
    window: str
    won: int
    lost: int
    priced: int
    gap_femto: int
    churned: int

    @property
    def win_rate(self) -> float | None:
        """won / (won + lost) over closed deals naming the competitor."""
        return _ratio(self.won, self.won + self.lost)

    @property
    def mean_price_gap(self) -> float | None:
        """Mean of (our amount / competitor price - 1) where both are known."""
        return _ratio(self.gap_femto / 10**15, self.priced)


@dataclass(frozen=True, slots=True)
class GrowthKpis:
    """Won amount (cents) by calendar month for one group, and month-over-month growth.

    ``same_days_cents`` is last month's won amount over its first as many days as
    have begun this month (the month-to-date comparison).
    """

    group: str
    month_to_date_cents: int
    same_days_cents: int
    last_month_cents: int
    month_before_cents: int

    @property
    def last_month_growth(self) -> float | None:
        """(last month - the month before) / the month before."""
        return _ratio(self.last_month_cents - self.month_before_cents, self.month_before_cents)

    @property
    def month_to_date_growth(self) -> float | None:
        """(month to date - same days of last month) / same days of last month."""
        return _ratio(self.month_to_date_cents - self.same_days_cents, self.same_days_cents)


@dataclass(frozen=True, slots=True)
class ClvKpis:
    """Customer lifetime value over the trailing 365 days (T's day and 364 before).

    APV = won amount / won deals; PF = won deals of accounts / distinct accounts
    with a won deal; CL (years) = 1 / (churned / active at the window's start),
    capped at ``max_years`` and equal to it when nobody churned.
    """

    won_cents: int
    won: int
    won_with_account: int
    buyers: int
    churned: int
    active_at_start: int
    max_years: float

    @property
    def average_purchase_cents(self) -> float | None:
        """APV, in cents."""
        return _ratio(self.won_cents, self.won)

    @property
    def purchase_frequency(self) -> float | None:
        """PF, purchases per customer per year."""
        return _ratio(self.won_with_account, self.buyers)

    @property
    def lifespan_years(self) -> float | None:
        """CL: 1 / annual churn rate, capped."""
        if self.churned == 0:
            return self.max_years
        if self.active_at_start == 0:
            return None
        return min(self.active_at_start / self.churned, self.max_years)

    @property
    def lifetime_value_cents(self) -> float | None:
        """APV x PF x CL, in cents."""
        apv, pf, cl = self.average_purchase_cents, self.purchase_frequency, self.lifespan_years
        if apv is None or pf is None or cl is None:
            return None
        return apv * pf * cl


@dataclass(frozen=True, slots=True)
class QuotaKpis:
    """Quotas of one group (a team of the quota events, or ``all``) for one period.

    ``period`` is month, quarter, last_month or last_quarter (``name`` is e.g.
    "2026-11"); ``open_cents`` is the group's open pipeline at T.
    """

    group: str
    period: str
    name: str
    quota_cents: int
    owners: int
    owners_at_quota: int
    won_cents: int
    open_cents: int

    @property
    def remaining_cents(self) -> int:
        """quota - won by the owners with a quota in the period."""
        return self.quota_cents - self.won_cents

    @property
    def coverage(self) -> float | None:
        """open pipeline / quota."""
        return _ratio(self.open_cents, self.quota_cents)

    @property
    def remaining_coverage(self) -> float | None:
        """open pipeline / remaining quota, while some quota remains."""
        return self.open_cents / self.remaining_cents if self.remaining_cents > 0 else None

    @property
    def share_at_quota(self) -> float | None:
        """Owners at or above 100% of quota / owners with a quota."""
        return _ratio(self.owners_at_quota, self.owners)


@dataclass(frozen=True, slots=True)
class AttainmentKpis:
    """One owner's quota and won amount (cents) for one period."""

    owner: str
    period: str
    quota_cents: int
    won_cents: int

    @property
    def attainment(self) -> float | None:
        """won / quota."""
        return _ratio(self.won_cents, self.quota_cents)


@dataclass(frozen=True, slots=True)
class RequiredCoverageKpis:
    """1 / win rate over the trailing 90 days, for one group."""

    group: str
    won: int
    closed: int

    @property
    def required_coverage(self) -> float | None:
        """(won + lost) / won."""
        return _ratio(self.closed, self.won)


@dataclass(frozen=True, slots=True)
class LeadKpis:
    """Leads of one source (or ``all``) in one window."""

    source: str
    window: str
    created: int
    converted: int
    disqualified: int

    @property
    def conversion(self) -> float | None:
        """converted / created (both in the window)."""
        return _ratio(self.converted, self.created)


@dataclass(frozen=True, slots=True)
class LeadBandKpis:
    """Leads closed in the window whose score at the close fell in one band."""

    band: str
    window: str
    closed: int
    converted: int

    @property
    def conversion(self) -> float | None:
        """converted / closed."""
        return _ratio(self.converted, self.closed)


@dataclass(frozen=True, slots=True)
class LeadScoreKpis:
    """Open leads at T: histogram of current scores (non-cumulative counts per bucket,
    the last one unbounded), their sum, hot leads and hot leads waiting."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    score_sum: float
    open_leads: int
    hot: int
    waiting: int


@dataclass(frozen=True, slots=True)
class ActivityKpis:
    """Activities of one team (or ``all``) logged in one window, by kind, and the deals
    the team won in the window."""

    group: str
    window: str
    counts: tuple[int, ...]
    won: int

    @property
    def total(self) -> int:
        """Activities of every kind."""
        return sum(self.counts)

    @property
    def per_won_deal(self) -> float | None:
        """activities / deals won (both in the window)."""
        return _ratio(self.total, self.won)


@dataclass(frozen=True, slots=True)
class OwnerActivityKpis:
    """Activities of one owner logged in one window, by kind (:data:`ACTIVITY_KINDS`)."""

    owner: str
    window: str
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ChurnKpis:
    """Customer churn of one calendar month: ``month_to_date`` or ``last_month``.

    ``churned`` counts the customers active at the month's start who churned in it (the
    rate's numerator); ``new_customers_churned`` those won and churned inside the month.
    """

    period: str
    start_day: int
    churned: int
    active_at_start: int
    new_customers_churned: int = 0

    @property
    def rate(self) -> float | None:
        """churned / active at the start of the month (never above 1)."""
        return _ratio(self.churned, self.active_at_start)


@dataclass(frozen=True, slots=True)
class Report:
    """Every KPI value of one scrape."""

    as_of_ms: int
    windows: tuple[WindowKpis, ...]
    stages: tuple[StageKpis, ...]
    churn: tuple[ChurnKpis, ...]
    folded: dict[str, int] = field(default_factory=dict)
    dimensions: tuple[DimensionKpis, ...] = ()
    stints: tuple[StintKpis, ...] = ()
    bottlenecks: tuple[BottleneckKpis, ...] = ()
    waterfall: tuple[WaterfallKpis, ...] = ()
    competitors: tuple[CompetitorKpis, ...] = ()
    growth: tuple[GrowthKpis, ...] = ()
    clv: ClvKpis | None = None
    quotas: tuple[QuotaKpis, ...] = ()
    attainment: tuple[AttainmentKpis, ...] = ()
    required_coverage: tuple[RequiredCoverageKpis, ...] = ()
    leads: tuple[LeadKpis, ...] = ()
    lead_bands: tuple[LeadBandKpis, ...] = ()
    lead_scores: LeadScoreKpis | None = None
    activities: tuple[ActivityKpis, ...] = ()
    owner_activities: tuple[OwnerActivityKpis, ...] = ()
    #: Latest event time folded into the snapshot's partitions (None when none has one).
    latest_event_ms: int | None = None


def _teams(snap: Snapshot) -> list[str]:
    return sorted({team for team, _ in snap.buckets} | {key[0] for key in snap.open}
                  | {key[0] for key in snap.stints} | {key[0] for key in snap.waterfall}
                  | set(snap.quota_team.values()))


def _period_months(name: str) -> tuple[str, ...]:
    """The months of a period: itself for a month, three for a quarter."""
    year, _, rest = name.partition("-")
    if not rest.startswith("Q"):
        return (name,)
    first = 3 * (int(rest[1:]) - 1) + 1
    return tuple(f"{year}-{m:02d}" for m in range(first, first + 3))


def _owner_rows(snap: Snapshot,
                names: Iterable[str]) -> dict[str, list[tuple[str, str, int, int]]]:
    """Per period name: (owner, team, quota cents, won cents) of the owners with a quota
    for it, by owner."""
    rows: dict[str, list[tuple[str, str, int, int]]] = {name: [] for name in names}
    months = {name: _period_months(name) for name in rows}
    for (owner, period), quota in sorted(snap.quota_cents.items()):
        if period in rows:
            won = sum(snap.owner_won.get((owner, m), 0) for m in months[period])
            rows[period].append((owner, snap.quota_team[(owner, period)], quota, won))
    return rows


def _quota_kpis(snap: Snapshot, as_of_day: int, teams: list[str],
                owner_rows: dict[str, list[tuple[str, str, int, int]]]) -> list[QuotaKpis]:
    open_cents: dict[str, int] = defaultdict(int)
    for (team, _, _), (_, cents) in snap.open.items():
        open_cents[team] += cents
        open_cents[ALL_GROUP] += cents
    out: list[QuotaKpis] = []
    for period, name in current_periods(as_of_day).items():
        sums: dict[str, list[int]] = defaultdict(lambda: [0] * 4)
        for _, team, quota, won in owner_rows[name]:
            vector = (quota, 1, int(won >= quota), won)
            add_vector(sums, team, vector)
            add_vector(sums, ALL_GROUP, vector)
        for group in (*teams, ALL_GROUP):
            if group in sums:
                quota, owners, at_quota, won = sums[group]
                out.append(QuotaKpis(group, period, name, quota, owners, at_quota, won,
                                     open_cents[group]))
    return out


def _lead_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int) -> list[LeadKpis]:
    sources = sorted({source for source, _ in snap.leads})
    sums = _windowed_sums(snap.leads, cfg, as_of_day, 3, _to_all)
    return [LeadKpis(source, name, *sums[name][source])
            for name in sums for source in (*sources, ALL_GROUP)]


def _windowed_sums(cells: dict[tuple[Any, ...], list[int]], cfg: ReportConfig,
                   as_of_day: int, width: int,
                   total: Callable[[Any], Any] | None = None) -> dict[str, dict[Any, list[int]]]:
    """Per window name: the vectors of cells ``(*group, day)`` summed per group over the
    window's days, and per ``total(group)`` as well when given.

    Trailing windows all end at the as-of day, so they nest: each cell is added once,
    to the narrowest window holding it, and each window is the running sum of those.
    """
    ordered = sorted(((spec.name, window_first_day(spec, as_of_day)) for spec in cfg.specs),
                     key=lambda item: -item[1] if item[1] is not None else float("inf"))
    bands: list[dict[Any, list[int]]] = [{} for _ in ordered]
    band_of_day: dict[int, dict[Any, list[int]] | None] = {}
    for key, vector in cells.items():
        day = key[-1]
        if day in band_of_day:
            band = band_of_day[day]
        else:
            band = band_of_day[day] = next(
                (candidate for candidate, (_, first) in zip(bands, ordered, strict=True)
                 if day <= as_of_day and (first is None or day >= first)), None)
        if band is None:
            continue
        add_vector(band, key[0] if len(key) == 2 else key[:-1], vector)
    out: dict[str, dict[Any, list[int]]] = {}
    running: dict[Any, list[int]] = {}
    for band, (name, _) in zip(bands, ordered, strict=True):
        for group, vector in band.items():
            add_vector(running, group, vector)
        sums: dict[Any, list[int]] = defaultdict(lambda: [0] * width)
        for group, vector in running.items():
            sums[group] = list(vector)
            if total is not None:
                add_vector(sums, total(group), vector)
        out[name] = sums
    return {spec.name: out[spec.name] for spec in cfg.specs}


def _to_all(group: Any) -> str:
    return ALL_GROUP


def _stage_to_all(group: tuple[str, str]) -> tuple[str, str]:
    return (ALL_GROUP, group[1])


def _activity_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int,
                   windows: list[WindowKpis]
                   ) -> tuple[list[ActivityKpis], list[OwnerActivityKpis]]:
    width = len(ACTIVITY_KINDS)
    teams = sorted({team for team, _ in snap.activities})
    owners = sorted({owner for owner, _ in snap.owner_activities})
    activities = _windowed_sums(snap.activities, cfg, as_of_day, width, _to_all)
    by_owner = _windowed_sums(snap.owner_activities, cfg, as_of_day, width)
    won = {(w.group, w.window): w.won for w in windows}
    team_rows = [ActivityKpis(group, name, tuple(activities[name][group]),
                              won.get((group, name), 0))
                 for name in activities for group in (*teams, ALL_GROUP)]
    owner_rows = [OwnerActivityKpis(owner, name, tuple(by_owner[name][owner]))
                  for name in by_owner for owner in owners]
    return team_rows, owner_rows


def _lead_band_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int) -> list[LeadBandKpis]:
    if cfg.scoring is None:
        return []
    sums = _windowed_sums(snap.bands, cfg, as_of_day, 2)
    return [LeadBandKpis(band, name, *sums[name][band])
            for name in sums for band in cfg.scoring.bands]


def _lead_score_kpis(snap: Snapshot, cfg: ReportConfig, as_of_ms: int) -> LeadScoreKpis | None:
    rules = cfg.scoring
    if rules is None:
        return None
    bounds = rules.histogram_buckets
    counts = [0] * (len(bounds) + 1)
    total, hot, waiting = 0.0, 0, 0
    for lead in snap.open_leads:
        score = rules.score(lead.fit, lead.engagements, as_of_ms)
        total += score
        counts[next((i for i, b in enumerate(bounds) if score <= b), len(bounds))] += 1
        if score >= rules.hot_threshold:
            hot += 1
            since = lead.hot_since_ms
            if since is not None and as_of_ms - since >= cfg.hot_wait_ms:
                waiting += 1
    return LeadScoreKpis(bounds, tuple(counts), total, len(snap.open_leads), hot, waiting)


def _attainment_kpis(snap: Snapshot, as_of_day: int,
                     owner_rows: dict[str, list[tuple[str, str, int, int]]]
                     ) -> list[AttainmentKpis]:
    out: list[AttainmentKpis] = []
    for period, name in current_periods(as_of_day).items():
        sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for owner, _, quota, won in owner_rows[name]:
            if not snap.owner_kept.get(owner, True):
                group = OTHER_GROUP
            else:
                group = owner + "_" if owner in RESERVED_GROUPS else owner
            add_vector(sums, group, (quota, won))
        out.extend(AttainmentKpis(owner, period, quota, won)
                   for owner, (quota, won) in sorted(sums.items()))
    return out


def _required_coverage(snap: Snapshot, as_of_day: int,
                       teams: list[str]) -> list[RequiredCoverageKpis]:
    first = as_of_day - REQUIRED_COVERAGE_DAYS + 1
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (team, day), vector in snap.buckets.items():
        if first <= day <= as_of_day:
            for group in (team, ALL_GROUP):
                sums[group][0] += vector[1]
                sums[group][1] += vector[1] + vector[2]
    return [RequiredCoverageKpis(group, *sums[group]) for group in (*teams, ALL_GROUP)]


def _in_window(day: int, first: int | None, as_of_day: int) -> bool:
    return day <= as_of_day and (first is None or day >= first)


def _window_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int, teams: list[str],
                 open_by_group: dict[str, int]) -> list[WindowKpis]:
    sums = _windowed_sums(snap.buckets, cfg, as_of_day, 6, _to_all)
    return [WindowKpis(group, name, *sums[name][group][:5], open_by_group.get(group, 0))
            for name in sums for group in (*teams, ALL_GROUP)]


def _dimension_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int) -> list[DimensionKpis]:
    values = sorted({(dim, value) for dim, value, _ in snap.dimensions})
    sums = _windowed_sums(snap.dimensions, cfg, as_of_day, 4)
    return [DimensionKpis(dim, value, name, *sums[name][(dim, value)])
            for name in sums for dim, value in values]


def _stage_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int,
                teams: list[str]) -> list[StageKpis]:
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * 4)
    for (team, stage, since_day), (count, cents) in snap.open.items():
        stuck = as_of_day - since_day > cfg.stuck_days
        vector = (count, cents, count if stuck else 0, cents if stuck else 0)
        add_vector(sums, (team, stage), vector)
        add_vector(sums, (ALL_GROUP, stage), vector)
    out: list[StageKpis] = []
    for group in (*teams, ALL_GROUP):
        for stage in cfg.stages:
            count, cents, stuck_count, stuck_cents = sums[(group, stage)]
            weighted = float(Decimal(cents) * cfg.probability.get(stage, Decimal(0)))
            out.append(StageKpis(group, stage, count, cents, weighted, stuck_count, stuck_cents))
    return out


def _stint_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int,
                teams: list[str]) -> tuple[list[StintKpis], list[BottleneckKpis]]:
    width = len(STINT_FIELDS) + len(STINT_BUCKETS_DAYS) + 1
    stints: list[StintKpis] = []
    bottlenecks: list[BottleneckKpis] = []
    windowed = _windowed_sums(snap.stints, cfg, as_of_day, width, _stage_to_all)
    for name, sums in windowed.items():
        for group in (*teams, ALL_GROUP):
            rows = []
            for stage in cfg.stages:
                v = sums[(group, stage)]
                rows.append(StintKpis(group, stage, name, v[0], v[1], v[2], v[3], v[4],
                                      tuple(v[len(STINT_FIELDS):])))
            stints.extend(rows)
            timed = [row for row in rows if row.mean_seconds is not None]
            if timed:
                worst = max(timed, key=lambda row: row.mean_seconds or 0.0)
                bottlenecks.append(BottleneckKpis(group, name, worst.stage,
                                                  worst.mean_seconds or 0.0))
    return stints, bottlenecks


def _waterfall_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int,
                    teams: list[str]) -> list[WaterfallKpis]:
    sums = _windowed_sums(snap.waterfall, cfg, as_of_day, 2, _stage_to_all)
    return [WaterfallKpis(group, movement, window, *sums[window][(group, movement)])
            for window in sums for group in (*teams, ALL_GROUP) for movement in MOVEMENTS]


def _competitor_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int) -> list[CompetitorKpis]:
    names = sorted({name for name, _ in snap.competitors} | {name for name, _ in snap.churned_to})
    sums = _windowed_sums(snap.competitors, cfg, as_of_day, 4)
    churned = _windowed_sums({key: [n] for key, n in snap.churned_to.items()}, cfg, as_of_day, 1)
    return [CompetitorKpis(name, window, *sums[window][name], churned[window][name][0])
            for window in sums for name in names]


def _growth_kpis(snap: Snapshot, as_of_day: int, teams: list[str]) -> list[GrowthKpis]:
    this_start, _ = month_bounds(as_of_day)
    last_start, last_end = previous_month_bounds(as_of_day)
    before_start, before_end = month_bounds(last_start - 1)
    same_end = min(last_start + (as_of_day - this_start), last_end - 1)
    ranges = ((this_start, as_of_day), (last_start, same_end), (last_start, last_end - 1),
              (before_start, before_end - 1))
    sums: dict[str, list[int]] = defaultdict(lambda: [0] * 4)
    for (team, day), vector in snap.buckets.items():
        cents = vector[3]
        for i, (start, end) in enumerate(ranges):
            if start <= day <= end:
                sums[team][i] += cents
                sums[ALL_GROUP][i] += cents
    return [GrowthKpis(group, *sums[group]) for group in (*teams, ALL_GROUP)]


def _clv_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int) -> ClvKpis:
    first = as_of_day - ACTIVE_BUYER_DAYS + 1
    won = [0, 0, 0]
    for (_, day), vector in snap.buckets.items():
        if first <= day <= as_of_day:
            won[0] += vector[3]
            won[1] += vector[1]
            won[2] += vector[5]
    buyers = sum(n for day, n in snap.buyer_deltas.items() if day <= as_of_day)
    churned = sum(n for churns in (snap.churned, snap.new_churned)
                  for day, n in churns.items() if first <= day <= as_of_day)
    return ClvKpis(won[0], won[1], won[2], buyers, churned, _active_at(snap, first),
                   cfg.clv_max_years)


def _active_at(snap: Snapshot, start: int) -> int:
    new = sum(n for day, n in snap.new_customers.items() if day < start)
    gone = sum(n for churns in (snap.churned, snap.new_churned)
               for day, n in churns.items() if day < start)
    return new - gone


def _churn_kpis(snap: Snapshot, as_of_day: int) -> list[ChurnKpis]:
    def between(churns: dict[int, int], start: int, end: int) -> int:
        return sum(n for day, n in churns.items() if start <= day < end and day <= as_of_day)

    months = (("month_to_date", month_bounds(as_of_day)),
              ("last_month", previous_month_bounds(as_of_day)))
    return [ChurnKpis(period, start, between(snap.churned, start, end),
                      _active_at(snap, start), between(snap.new_churned, start, end))
            for period, (start, end) in months]


def build_report(snap: Snapshot, as_of_ms: int, cfg: ReportConfig) -> Report:
    """Compute every KPI at as-of time ``as_of_ms`` from a snapshot."""
    as_of_day = day_of(as_of_ms)
    teams = _teams(snap)
    open_by_group: dict[str, int] = defaultdict(int)
    for (team, _, _), (count, _) in snap.open.items():
        open_by_group[team] += count
        open_by_group[ALL_GROUP] += count
    stints, bottlenecks = _stint_kpis(snap, cfg, as_of_day, teams)
    windows = _window_kpis(snap, cfg, as_of_day, teams, open_by_group)
    activities, owner_activities = _activity_kpis(snap, cfg, as_of_day, windows)
    owner_rows = _owner_rows(snap, current_periods(as_of_day).values())
    return Report(
        as_of_ms=as_of_ms,
        windows=tuple(windows),
        stages=tuple(_stage_kpis(snap, cfg, as_of_day, teams)),
        churn=tuple(_churn_kpis(snap, as_of_day)),
        folded={label: len(values) for label, values in snap.folded.items()},
        dimensions=tuple(_dimension_kpis(snap, cfg, as_of_day)),
        stints=tuple(stints),
        bottlenecks=tuple(bottlenecks),
        waterfall=tuple(_waterfall_kpis(snap, cfg, as_of_day, teams)),
        competitors=tuple(_competitor_kpis(snap, cfg, as_of_day)),
        growth=tuple(_growth_kpis(snap, as_of_day, teams)),
        clv=_clv_kpis(snap, cfg, as_of_day),
        quotas=tuple(_quota_kpis(snap, as_of_day, teams, owner_rows)),
        attainment=tuple(_attainment_kpis(snap, as_of_day, owner_rows)),
        required_coverage=tuple(_required_coverage(snap, as_of_day, teams)),
        leads=tuple(_lead_kpis(snap, cfg, as_of_day)),
        lead_bands=tuple(_lead_band_kpis(snap, cfg, as_of_day)),
        lead_scores=_lead_score_kpis(snap, cfg, as_of_ms),
        activities=tuple(activities),
        owner_activities=tuple(owner_activities),
        latest_event_ms=snap.latest_event_ms,
    )
