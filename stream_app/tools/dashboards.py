"""Grafana dashboards as code (grafana-foundation-sdk): one function per dashboard.

``stream-app dashboards`` writes the JSON under ``deploy/grafana/dashboards/``; a test
fails when the committed files and this module drift apart, and the end-to-end
alerting test evaluates every panel query through a real Prometheus. Panels read
the recording rules (global values summed over workers) wherever one exists.
"""

from __future__ import annotations

__all__ = ["DASHBOARDS", "PROMETHEUS_UID", "dashboard_files", "panel_queries"]

import json
from collections.abc import Callable, Iterator
from typing import Any

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

PROMETHEUS_UID = "pulse-prometheus"
_SOURCE = DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
Panel = stat.Panel | timeseries.Panel | bargauge.Panel


def _query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).datasource(_SOURCE).ref_id(ref)
    return query.legend_format(legend) if legend else query


def _stat(title: str, expr: str, unit: str, description: str) -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(_SOURCE)
            .unit(unit).with_target(_query(expr)).height(5).span(6))


def _series(title: str, queries: list[tuple[str, str]], unit: str,
            description: str, span: int = 12) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(_SOURCE)
             .unit(unit).height(8).span(span))
    for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(_query(expr, legend, ref))
    return panel


def _bars(title: str, expr: str, legend: str, unit: str, description: str,
          span: int = 12) -> bargauge.Panel:
    return (bargauge.Panel().title(title).description(description).datasource(_SOURCE)
            .unit(unit).with_target(_query(expr, legend)).height(8).span(span))


def _board(uid: str, title: str, panels: list[Panel]) -> dashboard.Dashboard:
    board = (dashboard.Dashboard(title).uid(uid).tags(["pipeline-pulse", "generated"])
             .refresh("30s").time("now-6h", "now").timezone("utc"))
    for number, panel in enumerate(panels, start=1):
        board = board.with_panel(panel.id(number))
    return board


def executive() -> dashboard.Dashboard:
    """Coverage, attainment, win rate, velocity, growth, churn, CLV."""
    return _board("pulse-executive", "Pipeline Pulse / Executive overview", [
        _stat("Coverage this quarter",
              'team_period:pulse_pipeline_coverage:ratio{team="all",period="quarter"}', "x",
              "Open pipeline / this quarter's quota (all teams)."),
        _stat("Required coverage", 'team:pulse_required_coverage:ratio{team="all"}', "x",
              "1 / win rate of the last 90 days."),
        _stat("Reps at quota, last month",
              'team_period:pulse_quota_owners_at_quota:ratio{team="all",period="last_month"}',
              "percentunit", "Owners whose won amount reached their quota / owners with one."),
        _stat("Win rate, 90 days", 'team_window:pulse_win_rate:ratio{team="all",window="90d"}',
              "percentunit", "won / (won + lost) over 90 days."),
        _stat("Sales velocity, 90 days (per day)",
              'team_window:pulse_sales_velocity_amount_per_second:ratio{team="all",'
              'window="90d"} * 86400', "currencyUSD",
              "open deals x win rate x average deal size / sales cycle."),
        _stat("Sales growth, last month", 'team:pulse_last_month_sales_growth:ratio{team="all"}',
              "percentunit", "(last month - the month before) / the month before."),
        _stat("Customer churn, last month",
              'period:pulse_customer_churn_rate:ratio{period="last_month"}', "percentunit",
              "Customers active at the month's start who churned in it / customers active at "
              "its start. Customers won and lost inside the month are not in the rate: "
              "period:pulse_new_customers_churned:sum."),
        _stat("Customer lifetime value", "job:pulse_customer_lifetime_value:ratio",
              "currencyUSD", "APV x PF x CL over the last 365 days."),
        _series("Win rate by team, 90 days",
                [('team_window:pulse_win_rate:ratio{window="90d"}', "{{team}}")],
                "percentunit", "won / (won + lost) per team."),
        _series("Attainment by owner, this month",
                [('owner_period:pulse_quota_attainment:ratio{period="month"}', "{{owner}}")],
                "percentunit", "Won amount / quota per owner."),
    ])


def pipeline() -> dashboard.Dashboard:
    """Funnel, time in stage, stuck deals, waterfall, activities."""
    return _board("pulse-pipeline", "Pipeline Pulse / Pipeline", [
        _bars("Open pipeline by stage", 'team_stage:pulse_open_pipeline_amount:sum{team="all"}',
              "{{stage}}", "currencyUSD", "Open amount at T by current stage."),
        _bars("Mean time in stage, 90 days",
              'team_stage_window:pulse_stage_mean_stint_seconds:ratio{team="all",window="90d"}',
              "{{stage}}", "s", "Mean length of the stints that ended in the last 90 days."),
        _bars("Moved forward, 90 days",
              'team_stage_window:pulse_stage_forward:ratio{team="all",window="90d"}',
              "{{stage}}", "percentunit", "Stints that left to a later stage or won."),
        _bars("Stuck deals by stage", 'team_stage:pulse_stuck_deals:sum{team="all"}',
              "{{stage}}", "none", "Open deals without a stage change for PULSE_STUCK_DAYS."),
        _stat("Stuck share of the pipeline", 'team:pulse_stuck_pipeline_share:ratio{team="all"}',
              "percentunit", "Stuck amount / open amount."),
        _bars("Pipeline waterfall, 30 days",
              'team_movement_window:pulse_pipeline_waterfall_amount:sum{team="all",'
              'window="30d"}', "{{movement}}", "currencyUSD",
              "Amount created, advanced, regressed, won, lost, increased, decreased in the "
              "last 30 days (event time)."),
        _series("Bottleneck stage, 90 days",
                [('max by (stage) (pulse_stage_bottleneck_mean_stint_seconds{team="all",'
                  'window="90d"})', "{{stage}}")], "s", "Stage with the longest mean stint."),
        _bars("Activities by kind, 30 days",
              'team_window_kind:pulse_activities:sum{team="all",window="30d"}', "{{kind}}",
              "none", "Calls, emails and meetings logged in the last 30 days."),
        _bars("Activities per won deal, 90 days",
              'team_window:pulse_activities_per_won_deal:ratio{window="90d"}', "{{team}}",
              "none", "Activities logged / deals won, both in the last 90 days."),
        _bars("Most active owners, 30 days",
              'topk(10, sum by (owner) (pulse_owner_activities{window="30d"}))', "{{owner}}",
              "none", "Owners with the most activities logged in the last 30 days."),
    ])


def leads() -> dashboard.Dashboard:
    """Conversion by source, score distribution, hot leads."""
    return _board("pulse-leads", "Pipeline Pulse / Leads", [
        _bars("Lead conversion by source",
              'source_window:pulse_lead_conversion:ratio{window="all"}', "{{source}}",
              "percentunit", "Leads converted / created."),
        _bars("Conversion by score band, 90 days",
              'band_window:pulse_lead_band_conversion:ratio{window="90d"}', "{{band}}",
              "percentunit", "Over leads closed in 90 days, by score at the close."),
        _bars("Open leads by score", "sum by (le) (pulse_lead_score_bucket)", "<= {{le}}",
              "none", "Cumulative count of open leads with a score at most le."),
        _stat("Hot leads", "job:pulse_hot_leads:sum", "none", "Open leads at or above the "
              "hot threshold."),
        _stat("Hot leads waiting", "job:pulse_hot_leads_waiting:sum", "none",
              "Hot for PULSE_HOT_LEAD_WAIT_HOURS and still open."),
    ])


def competitors() -> dashboard.Dashboard:
    """Win rate, losses, price gap and churn per competitor."""
    return _board("pulse-competitors", "Pipeline Pulse / Competitors", [
        _bars("Win rate against each competitor, 90 days",
              'competitor_window:pulse_competitor_win_rate:ratio{window="90d"}',
              "{{competitor}}", "percentunit", "Over closed deals naming the competitor."),
        _bars("Losses to each competitor, 90 days",
              'sum by (competitor) (pulse_competitor_deals_lost{window="90d"})',
              "{{competitor}}", "none", "Lost deals naming the competitor."),
        _bars("Price gap, all time", 'competitor_window:pulse_competitor_price_gap:ratio'
              '{window="all"}', "{{competitor}}", "percentunit",
              "Mean of our amount / competitor price - 1."),
        _bars("Customers lost to each competitor, all time",
              'competitor_window:pulse_competitor_customers_churned:sum{window="all"}',
              "{{competitor}}", "none", "Churned customers naming the competitor."),
    ])


def operations() -> dashboard.Dashboard:
    """Throughput, lag, rejects, recovery."""
    return _board("pulse-operations", "Pipeline Pulse / Operations", [
        _series("Events applied per second", [("job:pulse_events_processed:rate5m", "all")],
                "ops", "Valid events folded, all workers."),
        _series("Consumer lag", [("sum by (topic) (pulse_consumer_lag_messages)", "{{topic}}")],
                "none", "Messages behind the high watermark."),
        _series("Rejected share", [("job:pulse_events_rejected:ratio_rate5m or vector(0)",
                                    "rejected")], "percentunit",
                "Dead-lettered / (dead-lettered + applied), 5 minutes."),
        _series("Recovery", [("sum(pulse_recovery_remaining_records)", "records left"),
                             ("sum(pulse_recovery_in_progress)", "workers recovering")],
                "none", "Changelog records still to restore."),
        _stat("Workers up", 'sum(up{job="pipeline-pulse"})', "none", "Scraped workers."),
        _stat("Dedup store up", "min(pulse_dedup_store_up)", "none",
              "0 while a worker cannot reach Redis."),
    ])


DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "executive": executive, "pipeline": pipeline, "leads": leads,
    "competitors": competitors, "operations": operations,
}


def dashboard_files() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    return {f"{name}.json": encoder.encode(build().build()) + "\n"
            for name, build in DASHBOARDS.items()}


def panel_queries(text: str) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every target of a dashboard's JSON."""
    board: dict[str, Any] = json.loads(text)
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
