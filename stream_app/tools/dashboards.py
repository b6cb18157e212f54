"""Grafana dashboards as code (grafana-foundation-sdk): one function per dashboard.

``stream-app dashboards`` writes the JSON under ``deploy/grafana/dashboards/`` for the
settings in the environment (currency unit, stage order, score buckets); a test fails
when the committed files and this module drift apart, and the end-to-end alerting test
evaluates every panel query, for every value of its variables, through a real
Prometheus. Panels read the recording rules (global values summed over workers)
wherever one exists. The SDK writes Grafana 10.1's dashboard schema; compose runs that
Grafana.
"""

from __future__ import annotations

__all__ = ["DASHBOARDS", "PROMETHEUS_UID", "BoardSettings", "dashboard_files", "panel_queries",
           "variable_queries"]

import json
from collections.abc import Callable, Iterator
from typing import Any

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from stream_app.config import Settings
from stream_app.kpi.deals import STINT_BUCKETS_DAYS
from stream_app.tools.board_parts import (
    AMBER,
    GREEN,
    GRID_COLUMNS,
    NOTHING_CLOSED,
    NOTHING_WON,
    OWNER,
    PROMETHEUS_UID,
    RED,
    SOURCE,
    STINT_BUCKETS,
    TEAM,
    WINDOW,
    WITH_NAME,
    BoardSettings,
    bars,
    board,
    bound,
    figure,
    name_panel,
    series,
    table_panel,
    thresholds,
)
from stream_app.tools.forecast_dashboard import forecast


def executive(cfg: BoardSettings) -> dashboard.Dashboard:
    """Will we make the number: coverage, attainment, win rate, velocity, growth, churn."""
    team, window = 'team="$team"', 'window="$window"'
    return board("pulse-executive", "Pipeline Pulse / Executive overview", [
        figure("Coverage against required, this quarter",
              f'team_period:pulse_pipeline_coverage:ratio{{{team},period="quarter"}} '
              f"/ ignoring(period) team:pulse_required_coverage:ratio{{{team}}}", "percentunit",
              "Coverage / required coverage: red below 100% (the pipeline cannot make the "
              "quota at the 90-day win rate).", thresholds((None, RED), (1, GREEN))),
        figure("Coverage this quarter",
              f'team_period:pulse_pipeline_coverage:ratio{{{team},period="quarter"}}', "x",
              "Open pipeline / this quarter's quota."),
        figure("Required coverage", f"team:pulse_required_coverage:ratio{{{team}}}", "x",
              "1 / win rate of the last 90 days."),
        figure("Reps at quota, last month",
              f'team_period:pulse_quota_owners_at_quota:ratio{{{team},period="last_month"}}',
              "percentunit", "Owners whose won amount reached their quota / owners with one; "
              "red below 60%.", thresholds((None, RED), (0.6, AMBER), (0.8, GREEN))),
        figure("Win rate", f"team_window:pulse_win_rate:ratio{{{team},{window}}}",
              "percentunit", "won / (won + lost) in the window."),
        figure("Average deal size", f"team_window:pulse_average_deal_size:ratio{{{team},{window}}}",
              cfg.money, "Won amount / deals won in the window."),
        figure("Sales cycle", f"team_window:pulse_sales_cycle_seconds:ratio{{{team},{window}}}",
              "s", "Mean time from creation to won, over the deals won in the window."),
        figure("Deals created", f"team_window:pulse_created_deals:sum{{{team},{window}}}",
              "none", "Deals created in the window."),
        figure("Sales velocity per day",
              f"team_window:pulse_sales_velocity_amount_per_second:ratio{{{team},{window}}}"
              " * 86400", cfg.money, "open deals x win rate x average deal size / cycle."),
        figure("Sales growth, last month", f"team:pulse_last_month_sales_growth:ratio{{{team}}}",
              "percentunit", "(last month - the month before) / the month before; empty when "
              "the month before had no revenue."),
        figure("Customer churn, last month",
              'period:pulse_customer_churn_rate:ratio{period="last_month"}', "percentunit",
              "Customers active at the month's start who churned in it / those active at its "
              "start (all teams); red above 5%.", thresholds((None, GREEN), (0.05, RED))),
        figure("Customer lifetime value", "job:pulse_customer_lifetime_value:ratio", cfg.money,
              "APV x PF x CL over the last 365 days (all teams)."),
        series("Won revenue against quota",
                [(f'team_period:pulse_quota_won_amount:sum{{{team},period="month"}}',
                  "won this month"),
                 (f'team_period:pulse_quota_amount:sum{{{team},period="month"}}', "quota"),
                 (f'team_period:pulse_quota_won_amount:sum{{{team},period="quarter"}}',
                  "won this quarter"),
                 (f'team_period:pulse_quota_amount:sum{{{team},period="quarter"}}',
                  "quarter quota")], cfg.money,
                "Won by the owners with a quota, next to their summed quota."),
        series("Win rate by team", [(f"team_window:pulse_win_rate:ratio{{{window}}}",
                                      "{{team}}")], "percentunit", "won / (won + lost)."),
        table_panel("Attainment by owner, this month",
               'sort_desc(owner_period:pulse_quota_attainment:ratio{period="month"}'
               f"{WITH_NAME})", "percentunit",
               "Won amount / quota per owner (with the roster's name), highest first.",
               span=24),
    ], (TEAM, WINDOW))


def pipeline(cfg: BoardSettings) -> dashboard.Dashboard:
    """Funnel in stage order, time in stage, stuck deals, waterfall, activities."""
    team, window = 'team="$team"', 'window="$window"'
    stages = cfg.stages
    return board("pulse-pipeline", "Pipeline Pulse / Pipeline", [
        bars("Open pipeline by stage",
              [(f'team_stage:pulse_open_pipeline_amount:sum{{{team},stage="{s}"}}', s)
               for s in stages], cfg.money, "Open amount at T by current stage, in order."),
        bars("Mean time in stage",
              [(f"team_stage_window:pulse_stage_mean_stint_seconds:ratio{{{team},{window},"
                f'stage="{s}"}}', s) for s in stages], "s",
              "Mean length of the stints that ended in the window."),
        bars("Moved forward",
              [(f'team_stage_window:pulse_stage_forward:ratio{{{team},{window},stage="{s}"}}',
                s) for s in stages], "percentunit", "Stints that left to a later stage or won."),
        bars("Stuck deals by stage",
              [(f'team_stage:pulse_stuck_deals:sum{{{team},stage="{s}"}}', s) for s in stages],
              "none", "Open deals without a stage change for PULSE_STUCK_DAYS."),
        figure("Stuck share of the pipeline", f"team:pulse_stuck_pipeline_share:ratio{{{team}}}",
              "percentunit", "Stuck amount / open amount; red above 25%.",
              thresholds((None, GREEN), (0.25, RED))),
        bars("Pipeline waterfall",
              [(f"team_movement_window:pulse_pipeline_waterfall_amount:sum{{{team},{window}}}",
                "{{movement}}")], cfg.money,
              "Amount created, advanced, regressed, won, lost, increased, decreased in the "
              "window (event time)."),
        bars("Stint length, all teams",
              [(f'sum({STINT_BUCKETS}{{{window},le="{le}"}})', legend)
               for le, legend in [*((bound(d * 86400), f"<= {d} d") for d in STINT_BUCKETS_DAYS),
                                  ("+Inf", "all")]],
              "none", "Stints that ended in the window, cumulative by length."),
        series("Bottleneck stage",
                [(f"max by (stage) (pulse_stage_bottleneck_mean_stint_seconds{{{team},"
                  f"{window}}})", "{{stage}}")], "s", "Stage with the longest mean stint."),
        bars("Activities by kind",
              [(f"team_window_kind:pulse_activities:sum{{{team},{window}}}", "{{kind}}")],
              "none", "Calls, emails and meetings logged in the window."),
        bars("Activities per won deal",
              [(f"team_window:pulse_activities_per_won_deal:ratio{{{window}}}", "{{team}}")],
              "none", "Activities logged / deals won, both in the window."),
        bars("Most active owners",
              [(f"topk(10, sum by (owner) (pulse_owner_activities{{{window}}})){WITH_NAME}",
                "{{name}}")],
              "none", "Owners with the most activities logged in the window."),
    ], (TEAM, WINDOW))


def leads(cfg: BoardSettings) -> dashboard.Dashboard:
    """Conversion by source and over time, score distribution, hot leads."""
    window = 'window="$window"'
    buckets = [*(bound(b) for b in cfg.score_buckets), "+Inf"]
    return board("pulse-leads", "Pipeline Pulse / Leads", [
        bars("Lead conversion by source",
              [(f"source_window:pulse_lead_conversion:ratio{{{window}}}", "{{source}}")],
              "percentunit", "Leads converted / created in the window."),
        series("Lead conversion of the source",
                [('source_window:pulse_lead_conversion:ratio{source="$source"}', "{{window}}")],
                "percentunit", "Conversion of the chosen source, per window, over time."),
        bars("Conversion by score band",
              [(f"band_window:pulse_lead_band_conversion:ratio{{{window}}}", "{{band}}")],
              "percentunit", "Over leads closed in the window, by score at the close."),
        bars("Open leads by score",
              [(f'sum(pulse_lead_score_bucket{{le="{le}"}})', f"<= {le}") for le in buckets],
              "none", "Open leads with a score at most the bound (cumulative)."),
        figure("Hot leads", "job:pulse_hot_leads:sum", "none",
              "Open leads at or above the hot threshold."),
        figure("Hot leads waiting", "job:pulse_hot_leads_waiting:sum", "none",
              "Hot for PULSE_HOT_LEAD_WAIT_HOURS and still open; red above 0.",
              thresholds((None, GREEN), (1, RED))),
    ], (WINDOW, SOURCE))


def competitors(cfg: BoardSettings) -> dashboard.Dashboard:
    """Win rate, losses, price gap and churn per competitor."""
    window = 'window="$window"'
    return board("pulse-competitors", "Pipeline Pulse / Competitors", [
        bars("Win rate against each competitor",
              [(f"competitor_window:pulse_competitor_win_rate:ratio{{{window}}}",
                "{{competitor}}")], "percentunit", "Over closed deals naming the competitor."),
        bars("Losses to each competitor",
              [(f"sum by (competitor) (pulse_competitor_deals_lost{{{window}}})",
                "{{competitor}}")], "none", "Lost deals naming the competitor."),
        bars("Price gap", [(f"competitor_window:pulse_competitor_price_gap:ratio{{{window}}}",
                             "{{competitor}}")], "percentunit",
              "Mean of our amount / competitor price - 1."),
        bars("Customers lost to each competitor",
              [(f"competitor_window:pulse_competitor_customers_churned:sum{{{window}}}",
                "{{competitor}}")], "none", "Churned customers naming the competitor."),
    ], (WINDOW,))


def rep(cfg: BoardSettings) -> dashboard.Dashboard:
    """One rep's scorecard: attainment, pipeline, win rate, cycle, deals, activities."""
    owner, window = 'owner="$owner"', 'window="$window"'
    owner_forecast = f'owner_period:pulse_owner_forecast_won_amount:sum{{{owner},period="month"}}'
    return board("pulse-rep", "Pipeline Pulse / Rep scorecard", [
        name_panel(f"owner:pulse_owner_info:latest{{{owner}}}",
              "The rep's name and team from the roster (rep.updated); the owner id when "
              "the CRM sent no profile."),
        figure("Attainment this month",
              f'owner_period:pulse_quota_attainment:ratio{{{owner},period="month"}}',
              "percentunit", "Won amount / quota this month; red below 60%.",
              thresholds((None, RED), (0.6, AMBER), (1, GREEN))),
        figure("Attainment this quarter",
              f'owner_period:pulse_quota_attainment:ratio{{{owner},period="quarter"}}',
              "percentunit", "Won amount / quota this quarter.",
              thresholds((None, RED), (0.6, AMBER), (1, GREEN))),
        figure("Won this month", f'sum(pulse_owner_won_amount{{{owner},period="month"}})',
              cfg.money, "Won amount of the owner's deals this month."),
        figure("Quota this month", f'sum(pulse_owner_quota_amount{{{owner},period="month"}})',
              cfg.money, "The owner's quota for this month."),
        figure("Forecast this month", f"{owner_forecast} or on () vector(0)", cfg.money,
               "Won so far + the owner's open deals x their chance to win this month, made "
               "at the start of today (0: nothing won and nothing open)."),
        figure("Forecast / quota this month",
               f"({owner_forecast} or on () vector(0)) / on () "
               f'(sum(pulse_owner_quota_amount{{{owner},period="month"}}) > 0)', "percentunit",
               "Red below 90%.", thresholds((None, RED), (0.9, AMBER), (1, GREEN))),
        figure("Open pipeline", f"owner:pulse_owner_open_pipeline_amount:sum{{{owner}}}",
              cfg.money, "Open amount of the owner's deals now."),
        figure("Weighted pipeline",
              f"owner:pulse_owner_open_pipeline_weighted_amount:sum{{{owner}}}", cfg.money,
              "Open amount x the stage's win probability (PULSE_STAGES)."),
        figure("Open deals", f"owner:pulse_owner_open_deals:sum{{{owner}}}", "none",
              "The owner's deals not yet won or lost."),
        figure("Deals created", f"owner_window:pulse_owner_created_deals:sum{{{owner},{window}}}",
              "none", "Deals the owner created in the window."),
        figure("Win rate", f"owner_window:pulse_owner_win_rate:ratio{{{owner},{window}}}",
              "percentunit", "won / (won + lost) of the owner's deals closed in the window.",
              no_value=NOTHING_CLOSED),
        figure("Average deal size",
              f"owner_window:pulse_owner_average_deal_size:ratio{{{owner},{window}}}",
              cfg.money, "Won amount / deals won in the window.", no_value=NOTHING_WON),
        figure("Sales cycle",
              f"owner_window:pulse_owner_sales_cycle_seconds:ratio{{{owner},{window}}}", "s",
              "Mean time from creation to won, over the owner's deals won in the window.",
              no_value=NOTHING_WON),
        figure("Won in the window",
              f"owner_window:pulse_owner_won_deals_amount:sum{{{owner},{window}}}", cfg.money,
              "Won amount of the owner's deals won in the window."),
        series("Won against quota",
                [(f"sum by (period) (pulse_owner_won_amount{{{owner}}})", "won {{period}}"),
                 (f"sum by (period) (pulse_owner_quota_amount{{{owner}}})", "quota {{period}}")],
                cfg.money, "Won amount and quota per period."),
        bars("Deals closed",
              [(f"owner_window:pulse_owner_deals_won:sum{{{owner},{window}}}", "won"),
               (f"owner_window:pulse_owner_deals_lost:sum{{{owner},{window}}}", "lost")],
              "none", "The owner's deals won and lost in the window."),
        bars("Activities by kind",
              [(f'sum by (kind) (pulse_owner_activities{{{owner},{window}}})',
                "{{kind}}")], "none", "Calls, emails and meetings the owner logged."),
    ], (OWNER, WINDOW))


def operations(cfg: BoardSettings) -> dashboard.Dashboard:
    """Throughput, lag, rejects, recovery, dependencies."""
    return board("pulse-operations", "Pipeline Pulse / Operations", [
        series("Events applied per second", [("job:pulse_events_processed:rate5m", "all")],
                "ops", "Valid events folded, all workers."),
        series("Consumer lag", [("sum by (topic) (pulse_consumer_lag_messages)", "{{topic}}")],
                "none", "Messages behind the high watermark."),
        series("Rejected share", [("job:pulse_events_rejected:ratio_rate5m or vector(0)",
                                    "rejected")], "percentunit",
                "Dead-lettered / (dead-lettered + applied), 5 minutes."),
        series("Recovery", [("sum(pulse_recovery_remaining_records)", "records left"),
                             ("sum(pulse_recovery_in_progress)", "workers recovering")],
                "none", "Changelog records still to restore."),
        series("Records restored per second",
                [("sum(rate(pulse_changelog_records_read_in_bulk_total[5m])) or vector(0)",
                  "read from changelogs"),
                 ("sum(rate(pulse_checkpoint_records_loaded_total[5m])) or vector(0)",
                  "loaded from local checkpoints")],
                "ops", "Where restarting workers restore their tables from."),
        figure("Slowest last recovery", "max(pulse_last_recovery_duration_seconds)", "s",
              "Longest of the workers' last table recoveries."),
        series("Event-loop lag", [("max by (instance) (pulse_event_loop_lag_seconds)",
                                    "{{instance}}")], "s",
                "Largest lateness of each worker's event loop over 10 s."),
        figure("Workers up", 'sum(up{job="pipeline-pulse"})', "none", "Scraped workers."),
        figure("Dedup store up", "min(pulse_dedup_store_up)", "none",
              "0 while a worker cannot reach Redis.", thresholds((None, RED), (1, GREEN))),
        figure("Kafka connections", "min(pulse_kafka_connected_brokers)", "none",
              "Fewest broker connections of a worker; 0: Kafka unreachable.",
              thresholds((None, RED), (1, GREEN))),
    ])


DASHBOARDS: dict[str, Callable[[BoardSettings], dashboard.Dashboard]] = {
    "executive": executive, "pipeline": pipeline, "leads": leads,
    "competitors": competitors, "rep": rep, "operations": operations, "forecast": forecast,
}


def dashboard_files(cfg: BoardSettings | None = None) -> dict[str, str]:
    """File name -> JSON text of every dashboard (for ``cfg``, default: the settings of
    the environment)."""
    cfg = cfg or BoardSettings.from_settings(Settings())
    encoder = JSONEncoder(sort_keys=True, indent=2)
    return {f"{name}.json": encoder.encode(_laid_out(build(cfg).build())) + "\n"
            for name, build in DASHBOARDS.items()}


def _laid_out(built: Any) -> Any:
    """Panels left to right in rows of Grafana's 24 columns, a panel that does not fit
    starting the next row below the tallest of the current one."""
    x = y = row_height = 0
    for panel in built.panels:
        pos = panel.grid_pos
        if x + pos.w > GRID_COLUMNS:
            x, y, row_height = 0, y + row_height, 0
        pos.x, pos.y = x, y
        x, row_height = x + pos.w, max(row_height, pos.h)
    return built


def panel_queries(text: str) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every target of a dashboard's JSON."""
    parsed: dict[str, Any] = json.loads(text)
    for panel in parsed.get("panels", []):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def variable_queries(text: str) -> dict[str, str]:
    """Variable name -> its ``label_values(metric, label)`` query, of a dashboard's JSON."""
    parsed: dict[str, Any] = json.loads(text)
    found = {}
    for each in parsed.get("templating", {}).get("list", []):
        text_or_query = each["query"]
        found[each["name"]] = (text_or_query if isinstance(text_or_query, str)
                               else text_or_query["query"])
    return found
