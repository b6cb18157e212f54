"""The rows of a report: one frozen dataclass per KPI family, each holding the
numerators and denominators its ratios are computed from."""

from __future__ import annotations

__all__ = [
    "ActivityKpis",
    "AttainmentKpis",
    "BottleneckKpis",
    "ChurnKpis",
    "ClvKpis",
    "CompetitorKpis",
    "DimensionKpis",
    "GrowthKpis",
    "LeadBandKpis",
    "LeadKpis",
    "LeadScoreKpis",
    "OwnerActivityKpis",
    "OwnerDealKpis",
    "OwnerPipelineKpis",
    "PerOwner",
    "QuotaKpis",
    "Report",
    "RequiredCoverageKpis",
    "StageKpis",
    "StintKpis",
    "WaterfallKpis",
    "WindowKpis",
]

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from stream_app.kpi.forecast_plans import PlanKpis
from stream_app.kpi.forecast_report import ForecastAccuracyKpis, ForecastKpis, OwnerForecastKpis

_MS_PER_S = 1000

_Row = TypeVar("_Row")
#: Per owner label, in order, the owner's rows: an owner whose rows did not change is
#: the very same tuple in the next report of a changing state (what lets the exporter
#: write only the owners that changed).
PerOwner = Mapping[str, tuple[_Row, ...]]


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


class _WinRatios:
    """Win rate and average deal size of rows holding ``won``, ``lost`` and
    ``won_cents``."""

    __slots__ = ()
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


class _DealRatios(_WinRatios):
    """Also the sales cycle, of rows holding ``cycle_ms`` too."""

    __slots__ = ()
    cycle_ms: int

    @property
    def sales_cycle_seconds(self) -> float | None:
        """Mean seconds from created to won over the deals won in the window."""
        return _ratio(self.cycle_ms / _MS_PER_S, self.won)


@dataclass(frozen=True, slots=True)
class WindowKpis(_DealRatios):
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
    def conversion(self) -> float | None:
        """won / created."""
        return _ratio(self.won, self.created)

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
class DimensionKpis(_WinRatios):
    """Deals of one lead source or product (``dimension``) over one window."""

    dimension: str
    value: str
    window: str
    created: int
    won: int
    lost: int
    won_cents: int


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
class OwnerDealKpis(_DealRatios):
    """Deals of one owner (the owner their ``deal.created`` names) over one window.

    The ratios are for a single worker's view; an owner's deals are spread over every
    worker's partitions, so the exported series are the sums, and the recording rules
    divide the sums over workers.
    """

    owner: str
    window: str
    created: int
    won: int
    lost: int
    won_cents: int
    cycle_ms: int


@dataclass(frozen=True, slots=True)
class OwnerPipelineKpis:
    """One owner's open deals at T: count, amount (cents) and amount x stage
    probability (cents)."""

    owner: str
    open_deals: int
    cents: int
    weighted_cents: float


@dataclass(frozen=True, slots=True)
class ChurnKpis:
    """Customer churn of one calendar month: ``month_to_date`` or ``last_month``.

    ``churned`` counts the customers active at the month's start who churned in it (the
    rate's numerator); ``new_customers_churned`` those won and churned inside the month.
    """

    period: str
    #: When the month began (epoch ms), in the organisation's time zone.
    start_ms: int
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
    attainment: PerOwner[AttainmentKpis] = field(default_factory=dict)
    required_coverage: tuple[RequiredCoverageKpis, ...] = ()
    leads: tuple[LeadKpis, ...] = ()
    lead_bands: tuple[LeadBandKpis, ...] = ()
    lead_scores: LeadScoreKpis | None = None
    activities: tuple[ActivityKpis, ...] = ()
    owner_activities: PerOwner[OwnerActivityKpis] = field(default_factory=dict)
    owner_deals: PerOwner[OwnerDealKpis] = field(default_factory=dict)
    owner_pipeline: PerOwner[OwnerPipelineKpis] = field(default_factory=dict)
    #: The roster: owner -> (name, team), for the owners the caps admit.
    owner_profiles: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Latest event time folded into the snapshot's partitions (None when none has one).
    latest_event_ms: int | None = None
    #: This month's, quarter's and next quarter's forecasts, made at the start of T's day.
    forecasts: tuple[ForecastKpis, ...] = ()
    #: The forecasts of the last closed month and quarter against what they closed at.
    forecast_accuracy: tuple[ForecastAccuracyKpis, ...] = ()
    #: The CRM's plan for the open deals: slipped, pushed out of and closing in a period.
    forecast_plans: tuple[PlanKpis, ...] = ()
    #: This month's, quarter's and next quarter's forecast per owner.
    owner_forecasts: PerOwner[OwnerForecastKpis] = field(default_factory=dict)
    #: Whether the forecast rows are of an earlier state (None: this worker holds no
    #: forecast), and how long they took to compute (None: unknown).
    forecast_stale: bool | None = None
    forecast_compute_seconds: float | None = None
    #: The forecast alert's margin, beside the forecasts (None without them).
    forecast_alert_margin: float | None = None
