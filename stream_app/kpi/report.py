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
- per owner (the owner of each ``deal.created``): deals created, won, lost, won amount and
  summed cycle in each window, and open deals, open amount and weighted open amount at T;
- activities (calls, emails, meetings) logged in the window per team and per owner;
  activities per won deal = activities of the team logged in the window / deals of
  the team won in the window.

A ratio whose denominator is zero is None (not exported), never 0.
"""

from __future__ import annotations

__all__ = [
    "REQUIRED_COVERAGE_DAYS",
    "LeadTerms",
    "ReportConfig",
    "build_report",
    "lead_score_kpis",
    "owner_activity_rows",
]

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any

from stream_app.kpi.accounts import ACTIVE_BUYER_DAYS
from stream_app.kpi.activities import ACTIVITY_KINDS
from stream_app.kpi.calendar import UTC_CALENDAR, Calendar
from stream_app.kpi.deals import BUCKET, MOVEMENTS, STINT_BUCKETS_DAYS, STINT_FIELDS, add_vector
from stream_app.kpi.forecast import DEFAULT_FORECAST, ForecastSettings
from stream_app.kpi.forecast_report import OwnerForecastKpis, PathCache, forecast_rows
from stream_app.kpi.leads import ScoreInputs
from stream_app.kpi.owner_kpis import OwnerDealRows, WindowRows
from stream_app.kpi.quota_rows import QuotaRows
from stream_app.kpi.rows import (
    ActivityKpis,
    BottleneckKpis,
    ChurnKpis,
    ClvKpis,
    CompetitorKpis,
    DimensionKpis,
    GrowthKpis,
    LeadBandKpis,
    LeadKpis,
    LeadScoreKpis,
    OwnerActivityKpis,
    OwnerDealKpis,
    OwnerPipelineKpis,
    PerOwner,
    Report,
    RequiredCoverageKpis,
    StageKpis,
    StintKpis,
    WaterfallKpis,
    WindowKpis,
)
from stream_app.kpi.scoring import ScoringRules
from stream_app.kpi.snapshot import (
    ALL_GROUP,
    Snapshot,
)
from stream_app.kpi.trailing import DayCells, groups_of
from stream_app.kpi.windows import WindowSpec

if TYPE_CHECKING:
    from stream_app.kpi.live import ReportMemo

#: Days of the win rate behind the required coverage.
REQUIRED_COVERAGE_DAYS = 90


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
    calendar: Calendar = UTC_CALENDAR
    forecast: ForecastSettings = DEFAULT_FORECAST


@dataclass(frozen=True, slots=True)
class _OpenSums:
    """The open cells read once per report: per (team or ``all``, stage) [count, cents,
    stuck count, stuck cents] (stuck: in the stage since before T's day - stuck_days)."""

    by_stage: dict[tuple[str, str], list[int]]

    def teams(self) -> set[str]:
        """Teams with an open cell."""
        return {team for team, _ in self.by_stage if team != ALL_GROUP}

    def per_group(self, position: int) -> dict[str, int]:
        """Per team and ``all``, the sum over stages of one of the four sums."""
        out: dict[str, int] = defaultdict(int)
        for (team, _), sums in self.by_stage.items():
            out[team] += sums[position]
        return dict(out)


def _open_sums(snap: Snapshot, as_of_day: int, stuck_days: int) -> _OpenSums:
    """Stuck: in the stage since before ``as_of_day - stuck_days``: every day up to T's
    day but the last ``stuck_days + 1`` (the trailing sums the open cells keep); cells
    of days after T's count as open, not stuck."""
    cells = DayCells.of(snap.open)
    specs = (_EVERY_DAY, WindowSpec("not stuck", stuck_days + 1))
    windows, later = cells.window_sums_and_after(specs, as_of_day)
    every_day, recent = windows[_EVERY_DAY.name], windows["not stuck"]
    sums: dict[tuple[str, str], list[int]] = {}
    for group in every_day.keys() | later.keys():
        count, cents = every_day.get(group, _NONE_OPEN)
        fresh_count, fresh_cents = recent.get(group, _NONE_OPEN)
        late_count, late_cents = later.get(group, _NONE_OPEN)
        vector = (count + late_count, cents + late_cents, count - fresh_count,
                  cents - fresh_cents)
        for key in (group, (ALL_GROUP, group[1])):
            add_vector(sums, key, vector)
    return _OpenSums(sums)


#: The trailing sums of every open cell up to T's day, and of no cell.
_EVERY_DAY = WindowSpec("all", None)
_NONE_OPEN = (0, 0)


def _teams(snap: Snapshot, open_sums: _OpenSums) -> list[str]:
    return sorted(groups_of(snap.buckets) | open_sums.teams()
                  | {group[0] for group in groups_of(snap.stints)}
                  | {group[0] for group in groups_of(snap.waterfall)}
                  | set(snap.quota_team.values()))


def _lead_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int) -> list[LeadKpis]:
    sources = sorted({source for source, _ in snap.leads})
    sums = _windowed_sums(snap.leads, cfg, as_of_day, 3, _to_all)
    return [LeadKpis(source, name, *sums[name][source])
            for name in sums for source in (*sources, ALL_GROUP)]


def _windowed_sums(cells: dict[tuple[Any, ...], list[int]], cfg: ReportConfig,
                   as_of_day: int, width: int,
                   total: Callable[[Any], Any] | None = None) -> dict[str, dict[Any, list[int]]]:
    """Per window name: the vectors of cells ``(*group, day)`` summed per group over the
    window's days (zeros for a group without any), and per ``total(group)`` as well when
    given. A snapshot's :class:`DayCells` keep their sums between reports."""
    day_cells = DayCells.of(cells)
    out: dict[str, dict[Any, list[int]]] = {}
    for name, groups in day_cells.window_sums(cfg.specs, as_of_day).items():
        sums: dict[Any, list[int]] = defaultdict(lambda: [0] * width)
        sums.update(groups)
        if total is not None:
            for group, vector in groups.items():
                add_vector(sums, total(group), vector)
        out[name] = sums
    return out


def _to_all(group: Any) -> str:
    return ALL_GROUP


def _stage_to_all(group: tuple[str, str]) -> tuple[str, str]:
    return (ALL_GROUP, group[1])


def _activity_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int,
                   windows: list[WindowKpis]) -> list[ActivityKpis]:
    width = len(ACTIVITY_KINDS)
    teams = sorted(groups_of(snap.activities))
    activities = _windowed_sums(snap.activities, cfg, as_of_day, width, _to_all)
    won = {(w.group, w.window): w.won for w in windows}
    return [ActivityKpis(group, name, tuple(activities[name][group]), won.get((group, name), 0))
            for name in activities for group in (*teams, ALL_GROUP)]


def _lead_band_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int) -> list[LeadBandKpis]:
    if cfg.scoring is None:
        return []
    sums = _windowed_sums(snap.bands, cfg, as_of_day, 2)
    return [LeadBandKpis(band, name, *sums[name][band])
            for name in sums for band in cfg.scoring.bands]


#: Per open lead (by ``id``, the lead kept beside): its engagements' points decayed to
#: the last one's time, and that time (:meth:`ScoringRules.decayed_to_last`).
LeadTerms = dict[int, tuple[ScoreInputs, float, int | None]]


def lead_score_kpis(snap: Snapshot, cfg: ReportConfig, as_of_ms: int,
                    kept: LeadTerms | None = None) -> LeadScoreKpis | None:
    """The open leads' scores at T: the only KPI that depends on T beyond T's day. Each
    lead's score is its fit plus its engagements' points decayed to the last one's time,
    decayed again to T (one power per lead); ``kept`` keeps those points from one report
    to the next for the leads that did not change. A lead with an engagement after T (a
    wall clock behind the events) sums the engagements up to T one by one."""
    rules = cfg.scoring
    if rules is None:
        return None
    bounds = rules.histogram_buckets
    counts = [0] * (len(bounds) + 1)
    total, hot, waiting = 0.0, 0, 0
    score_in_order, threshold = rules.score_in_order, rules.hot_threshold
    decayed, half_life = rules.decayed_to_last, rules.half_life_ms
    terms: LeadTerms = {} if kept is None else kept
    leads = snap.open_leads
    for lead in leads:
        term = terms.get(id(lead))
        if term is None or term[0] is not lead:
            term = terms[id(lead)] = (lead, *decayed(lead.engagements))
        last = term[2]
        if last is None:
            score = lead.fit
        elif last <= as_of_ms:
            score = lead.fit + term[1] * 0.5 ** ((as_of_ms - last) / half_life)
        else:
            score = score_in_order(lead.fit, lead.engagements, as_of_ms)
        total += score
        counts[bisect_left(bounds, score)] += 1  # the first bucket whose bound >= score
        if score >= threshold:
            hot += 1
            since = lead.hot_since_ms
            if since is not None and as_of_ms - since >= cfg.hot_wait_ms:
                waiting += 1
    if kept is not None and len(kept) > 2 * len(leads) + _LEAD_TERMS_SLACK:
        current = {id(lead) for lead in leads}
        for key in [key for key in kept if key not in current]:
            del kept[key]
    return LeadScoreKpis(bounds, tuple(counts), total, len(leads), hot, waiting)


#: Leads closed since their terms were kept, beyond twice the open ones, before the
#: terms of the closed are dropped.
_LEAD_TERMS_SLACK = 1024


def _required_coverage(snap: Snapshot, as_of_day: int,
                       teams: list[str]) -> list[RequiredCoverageKpis]:
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for team, vector in _trailing(snap.buckets, _REQUIRED_COVERAGE_WINDOW, as_of_day).items():
        for group in (team, ALL_GROUP):
            sums[group][0] += vector[BUCKET.won]
            sums[group][1] += vector[BUCKET.won] + vector[BUCKET.lost]
    return [RequiredCoverageKpis(group, *sums[group]) for group in (*teams, ALL_GROUP)]


#: The trailing windows of the required coverage and of CLV, kept by the snapshot's
#: day cells like the configured windows.
_REQUIRED_COVERAGE_WINDOW = (WindowSpec(f"{REQUIRED_COVERAGE_DAYS}d", REQUIRED_COVERAGE_DAYS),)
_CLV_WINDOW = (WindowSpec(f"{ACTIVE_BUYER_DAYS}d", ACTIVE_BUYER_DAYS),)


def _trailing(cells: dict[tuple[Any, ...], list[int]], window: tuple[WindowSpec],
              as_of_day: int) -> dict[Any, list[int]]:
    """Per group, the vectors of ``cells`` summed over one trailing window at
    ``as_of_day`` (groups without a cell in it may be missing)."""
    return DayCells.of(cells).window_sums(window, as_of_day)[window[0].name]


def _window_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int, teams: list[str],
                 open_by_group: dict[str, int]) -> list[WindowKpis]:
    sums = _windowed_sums(snap.buckets, cfg, as_of_day, 6, _to_all)
    kpis = []
    for name in sums:
        for group in (*teams, ALL_GROUP):
            created, won, lost, won_cents, cycle_ms = sums[name][group][:5]
            kpis.append(WindowKpis(group, name, created=created, won=won, lost=lost,
                                   won_cents=won_cents, cycle_ms=cycle_ms,
                                   open_deals=open_by_group.get(group, 0)))
    return kpis


def _dimension_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int) -> list[DimensionKpis]:
    values = sorted({(dim, value) for dim, value, _ in snap.dimensions})
    sums = _windowed_sums(snap.dimensions, cfg, as_of_day, 4)
    return [DimensionKpis(dim, value, name, *sums[name][(dim, value)])
            for name in sums for dim, value in values]


def _stage_kpis(cfg: ReportConfig, teams: list[str], open_sums: _OpenSums
                ) -> list[StageKpis]:
    out: list[StageKpis] = []
    empty = (0, 0, 0, 0)
    for group in (*teams, ALL_GROUP):
        for stage in cfg.stages:
            count, cents, stuck_count, stuck_cents = open_sums.by_stage.get((group, stage),
                                                                            empty)
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
    kpis = []
    for window in sums:
        for name in names:
            won, lost, priced, gap_femto = sums[window][name]
            kpis.append(CompetitorKpis(name, window, won=won, lost=lost, priced=priced,
                                       gap_femto=gap_femto, churned=churned[window][name][0]))
    return kpis


def _growth_kpis(snap: Snapshot, as_of_day: int, teams: list[str], calendar: Calendar
                 ) -> list[GrowthKpis]:
    this_start, _ = calendar.month_bounds(as_of_day)
    last_start, last_end = calendar.previous_month_bounds(as_of_day)
    before_start, before_end = calendar.month_bounds(last_start - 1)
    same_end = min(last_start + (as_of_day - this_start), last_end - 1)
    ranges = ((this_start, as_of_day), (last_start, same_end), (last_start, last_end - 1),
              (before_start, before_end - 1))
    sums: dict[str, list[int]] = defaultdict(lambda: [0] * 4)
    for (team, day), vector in snap.buckets.items():
        cents = vector[BUCKET.won_cents]
        for i, (start, end) in enumerate(ranges):
            if start <= day <= end:
                sums[team][i] += cents
                sums[ALL_GROUP][i] += cents
    return [GrowthKpis(group, *sums[group]) for group in (*teams, ALL_GROUP)]


def _clv_kpis(snap: Snapshot, cfg: ReportConfig, as_of_day: int) -> ClvKpis:
    first = as_of_day - ACTIVE_BUYER_DAYS + 1
    won = [0, 0, 0]
    for vector in _trailing(snap.buckets, _CLV_WINDOW, as_of_day).values():
        won[0] += vector[BUCKET.won_cents]
        won[1] += vector[BUCKET.won]
        won[2] += vector[BUCKET.won_with_account]
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


def _churn_kpis(snap: Snapshot, as_of_day: int, calendar: Calendar) -> list[ChurnKpis]:
    def between(churns: dict[int, int], start: int, end: int) -> int:
        return sum(n for day, n in churns.items() if start <= day < end and day <= as_of_day)

    months = (("month_to_date", calendar.month_bounds(as_of_day)),
              ("last_month", calendar.previous_month_bounds(as_of_day)))
    return [ChurnKpis(period, calendar.day_start_ms(start), between(snap.churned, start, end),
                      _active_at(snap, start), between(snap.new_churned, start, end))
            for period, (start, end) in months]


#: The fields the team list is read from.
_TEAM_FIELDS = ("buckets", "open", "stints", "waterfall", "quota_team")
_QUOTA_FIELDS = ("quota_cents", "quota_team", "owner_won")


def build_report(snap: Snapshot, as_of_ms: int, cfg: ReportConfig,
                 memo: ReportMemo | None = None) -> Report:
    """Compute every KPI at as-of time ``as_of_ms`` from a snapshot (reusing the parts
    ``memo`` kept whose inputs did not change)."""
    calendar = cfg.calendar
    as_of_day = calendar.day_of(as_of_ms)
    periods = calendar.current_periods(as_of_day)

    def part(name: str, fields: tuple[str, ...], compute: Callable[[], Any],
             with_teams: bool = False) -> Any:
        if memo is None:
            return compute()
        return memo.part(name, snap, fields, as_of_day, compute,
                         tuple(teams) if with_teams else ())

    open_sums: _OpenSums = part("open_sums", ("open",), lambda: _open_sums(
        snap, as_of_day, cfg.stuck_days))
    teams: list[str] = part("teams", _TEAM_FIELDS, lambda: _teams(snap, open_sums))
    open_by_group: dict[str, int] = part("open_by_group", ("open",),
                                         lambda: open_sums.per_group(0))
    stints, bottlenecks = part("stints", ("stints",), lambda: _frozen(
        _stint_kpis(snap, cfg, as_of_day, teams)), with_teams=True)
    windows = part("windows", ("buckets", "open"), lambda: tuple(
        _window_kpis(snap, cfg, as_of_day, teams, open_by_group)), with_teams=True)
    def owned(name: str, rows: PerOwner[Any]) -> PerOwner[Any]:
        return rows if memo is None else memo.per_owner(name, rows)

    def owner_activity_part() -> PerOwner[OwnerActivityKpis]:
        kept = owner_activity_rows() if memo is None else memo.owner_activities
        return owned("owner_activities", kept.rows(snap.owner_activities, cfg.specs, as_of_day))

    def owner_deal_parts() -> tuple[PerOwner[OwnerDealKpis], PerOwner[OwnerPipelineKpis]]:
        kept = OwnerDealRows() if memo is None else memo.owner_deals
        deals, pipeline = kept.rows(snap, cfg.specs, cfg.probability, as_of_day)
        return owned("owner_deals", deals), owned("owner_pipeline", pipeline)

    activities = part("activities", ("activities", "buckets", "open"), lambda: tuple(
        _activity_kpis(snap, cfg, as_of_day, list(windows))), with_teams=True)
    owner_activities = part("owner_activities", ("owner_activities",), owner_activity_part)

    @cache
    def quota_rows() -> QuotaRows:
        rows = QuotaRows() if memo is None else memo.quota_rows
        rows.update(snap, periods, calendar)
        return rows

    owner_deals, owner_pipeline = part("owner_deals", ("owner_deals", "owner_open"),
                                       owner_deal_parts)
    report = Report(
        as_of_ms=as_of_ms,
        windows=windows,
        stages=part("stages", ("open",), lambda: tuple(
            _stage_kpis(cfg, teams, open_sums)), with_teams=True),
        churn=part("churn", ("churned", "new_churned", "new_customers"),
                   lambda: tuple(_churn_kpis(snap, as_of_day, calendar))),
        folded={label: len(values) for label, values in snap.folded.items()},
        dimensions=part("dimensions", ("dimensions",),
                        lambda: tuple(_dimension_kpis(snap, cfg, as_of_day))),
        stints=stints,
        bottlenecks=bottlenecks,
        waterfall=part("waterfall", ("waterfall",), lambda: tuple(
            _waterfall_kpis(snap, cfg, as_of_day, teams)), with_teams=True),
        competitors=part("competitors", ("competitors", "churned_to"),
                         lambda: tuple(_competitor_kpis(snap, cfg, as_of_day))),
        growth=part("growth", ("buckets",),
                    lambda: tuple(_growth_kpis(snap, as_of_day, teams, calendar)),
                    with_teams=True),
        clv=part("clv", ("buckets", "buyer_deltas", "churned", "new_churned", "new_customers"),
                 lambda: _clv_kpis(snap, cfg, as_of_day)),
        quotas=part("quotas", (*_QUOTA_FIELDS, "open"), lambda: tuple(
            quota_rows().quotas(teams, open_sums.per_group(1))), with_teams=True),
        attainment=part("attainment", (*_QUOTA_FIELDS, "owner_kept"), lambda: owned(
            "attainment", quota_rows().attainment())),
        required_coverage=part("required_coverage", ("buckets",), lambda: tuple(
            _required_coverage(snap, as_of_day, teams)), with_teams=True),
        leads=part("leads", ("leads",), lambda: tuple(_lead_kpis(snap, cfg, as_of_day))),
        lead_bands=part("lead_bands", ("bands",),
                        lambda: tuple(_lead_band_kpis(snap, cfg, as_of_day))),
        lead_scores=lead_score_kpis(snap, cfg, as_of_ms,
                                    None if memo is None else memo.lead_terms),
        activities=activities,
        owner_activities=owner_activities,
        owner_deals=owner_deals,
        owner_pipeline=owner_pipeline,
        owner_profiles=part("owner_profiles", ("owner_profiles",),
                            lambda: dict(snap.owner_profiles)),
        latest_event_ms=snap.latest_event_ms,
    )
    # last: a forecast computed elsewhere had the rest of the report's time to finish
    if memo is None:
        forecast = forecast_rows(snap.forecast, as_of_day, cfg.forecast,
                                 lambda _, __, compute: compute(), PathCache())
    elif memo.forecasts is not None:
        forecast = memo.forecasts(snap.forecast, as_of_day)
    else:
        forecast = forecast_rows(snap.forecast, as_of_day, cfg.forecast, memo.cached,
                                 memo.paths)
    return replace(
        report,
        forecasts=forecast.live,
        forecast_accuracy=forecast.accuracy,
        forecast_plans=forecast.plans,
        owner_forecasts=_by_owner(forecast.owners) if memo is None else memo.cached(
            "owner_forecasts", forecast.owners,
            lambda: owned("owner_forecasts", _by_owner(forecast.owners))),
        forecast_alert_margin=cfg.forecast.alert_margin if forecast.live else None,
        forecast_stale=forecast.stale if forecast.live or forecast.stale else None,
        forecast_compute_seconds=forecast.compute_seconds,
    )


def owner_activity_rows() -> WindowRows[OwnerActivityKpis]:
    """Owner activity rows kept per owner (see :class:`WindowRows`)."""
    return WindowRows(lambda owner, window, counts: OwnerActivityKpis(
        owner, window, tuple(counts)), len(ACTIVITY_KINDS))


def _by_owner(rows: Iterable[OwnerForecastKpis]) -> dict[str, tuple[OwnerForecastKpis, ...]]:
    out: dict[str, list[OwnerForecastKpis]] = defaultdict(list)
    for row in rows:
        out[row.owner].append(row)
    return {owner: tuple(out[owner]) for owner in sorted(out)}


def _frozen(pair: tuple[list[Any], list[Any]]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    return tuple(pair[0]), tuple(pair[1])
