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
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueTextMode
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from stream_app.config import Settings
from stream_app.kpi.deals import STINT_BUCKETS_DAYS
from stream_app.kpi.scoring import load_rules

PROMETHEUS_UID = "pulse-prometheus"
_SOURCE = DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
Panel = stat.Panel | timeseries.Panel | bargauge.Panel | table.Panel

#: Currencies Grafana has a unit for; any other is shown with its code as a suffix.
_GRAFANA_CURRENCIES = frozenset({
    "USD", "GBP", "EUR", "JPY", "RUB", "UAH", "BRL", "DKK", "ISK", "NOK", "SEK", "CZK",
    "CHF", "PLN", "ZAR", "INR", "KRW", "IDR", "PHP", "VND", "TRY", "MYR", "XPF", "BGN",
    "PYG", "UYU", "ILS"})
RED, AMBER, GREEN = "red", "orange", "green"
STINT_BUCKETS = "pulse_stage_stint_duration_seconds_bucket"
GRID_COLUMNS = 24
#: What a rep's ratio panels show when the window holds no deal to divide by.
NOTHING_WON, NOTHING_CLOSED = "no deal won", "no deal closed"


@dataclass(frozen=True)
class BoardSettings:
    """What the dashboards take from the settings."""

    currency: str
    stages: tuple[str, ...]
    score_buckets: tuple[float, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> BoardSettings:
        """The dashboards' view of ``settings``."""
        rules = load_rules(settings.lead_scoring_file)
        return cls(settings.reporting_currency, settings.stage_names, rules.histogram_buckets)

    @property
    def money(self) -> str:
        """Grafana's unit for amounts in the reporting currency."""
        if self.currency in _GRAFANA_CURRENCIES:
            return f"currency{self.currency}"
        return f"suffix: {self.currency}"


def _bound(value: float) -> str:
    """A bucket bound as the exporter writes ``le``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _variable(name: str, label: str, query: str, default: str) -> dashboard.QueryVariable:
    return (dashboard.QueryVariable(name).label(label).query(query).datasource(_SOURCE)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
            .current(VariableOption(selected=True, text=default, value=default)))


TEAM = _variable("team", "Team", "label_values(team_window:pulse_win_rate:ratio, team)", "all")
WINDOW = _variable("window", "Window",
                   "label_values(team_window:pulse_win_rate:ratio, window)", "90d")
OWNER = _variable("owner", "Owner", "label_values(owner:pulse_owner_info:latest, owner)", "")
#: Joined to a per-owner query: adds the owner's roster name (the id when it has none).
WITH_NAME = " * on (owner) group_left (name) owner:pulse_owner_info:latest"
SOURCE = _variable("source", "Lead source",
                   "label_values(source_window:pulse_lead_conversion:ratio, source)", "all")


def _thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=value, color=color) for value, color in steps]))


def _query(expr: str, legend: str = "", ref: str = "A", instant: bool = False
           ) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).datasource(_SOURCE).ref_id(ref)
    if instant:
        query = query.instant().format(PromQueryFormat.TABLE)
    return query.legend_format(legend) if legend else query


def _stat(title: str, expr: str, unit: str, description: str,
          thresholds: dashboard.ThresholdsConfig | None = None, span: int = 6,
          no_value: str | None = None) -> stat.Panel:
    """A single value; ``no_value`` is shown when the ratio has no denominator (the
    panel's query is then rightly empty)."""
    panel = (stat.Panel().title(title).description(description).datasource(_SOURCE)
             .unit(unit).with_target(_query(expr)).height(5).span(span))
    if no_value is not None:
        panel = panel.no_value(no_value)
    return panel.thresholds(thresholds) if thresholds is not None else panel


def _name(expr: str, description: str) -> stat.Panel:
    """The series' ``name`` and ``team`` labels as text (the roster)."""
    return (stat.Panel().title("Rep").description(description).datasource(_SOURCE)
            .unit("none").with_target(_query(expr, "{{name}} ({{team}})"))
            .text_mode(BigValueTextMode.NAME)
            .height(5).span(24))


def _series(title: str, queries: list[tuple[str, str]], unit: str,
            description: str, span: int = 12) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(_SOURCE)
             .unit(unit).height(8).span(span))
    for ref, (expr, legend) in zip("ABCDEFGHIJKLMNOP", queries, strict=False):
        panel = panel.with_target(_query(expr, legend, ref))
    return panel


def _bars(title: str, queries: list[tuple[str, str]], unit: str, description: str,
          span: int = 12) -> bargauge.Panel:
    """Bars in the order of ``queries`` (one query per bar keeps an order PromQL cannot)."""
    panel = (bargauge.Panel().title(title).description(description).datasource(_SOURCE)
             .unit(unit).height(8).span(span))
    for ref, (expr, legend) in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", queries, strict=False):
        panel = panel.with_target(_query(expr, legend, ref))
    return panel


def _table(title: str, expr: str, unit: str, description: str, span: int = 12) -> table.Panel:
    return (table.Panel().title(title).description(description).datasource(_SOURCE)
            .unit(unit).with_target(_query(expr, instant=True)).height(10).span(span))


def _board(uid: str, title: str, panels: list[Panel],
           variables: tuple[dashboard.QueryVariable, ...] = ()) -> dashboard.Dashboard:
    board = (dashboard.Dashboard(title).uid(uid).tags(["pipeline-pulse", "generated"])
             .refresh("1m").time("now-90d", "now").timezone("utc"))
    for variable in variables:
        board = board.with_variable(variable)
    for number, panel in enumerate(panels, start=1):
        board = board.with_panel(panel.id(number))
    return board


def executive(cfg: BoardSettings) -> dashboard.Dashboard:
    """Will we make the number: coverage, attainment, win rate, velocity, growth, churn."""
    team, window = 'team="$team"', 'window="$window"'
    return _board("pulse-executive", "Pipeline Pulse / Executive overview", [
        _stat("Coverage against required, this quarter",
              f'team_period:pulse_pipeline_coverage:ratio{{{team},period="quarter"}} '
              f"/ ignoring(period) team:pulse_required_coverage:ratio{{{team}}}", "percentunit",
              "Coverage / required coverage: red below 100% (the pipeline cannot make the "
              "quota at the 90-day win rate).", _thresholds((None, RED), (1, GREEN))),
        _stat("Coverage this quarter",
              f'team_period:pulse_pipeline_coverage:ratio{{{team},period="quarter"}}', "x",
              "Open pipeline / this quarter's quota."),
        _stat("Required coverage", f"team:pulse_required_coverage:ratio{{{team}}}", "x",
              "1 / win rate of the last 90 days."),
        _stat("Reps at quota, last month",
              f'team_period:pulse_quota_owners_at_quota:ratio{{{team},period="last_month"}}',
              "percentunit", "Owners whose won amount reached their quota / owners with one; "
              "red below 60%.", _thresholds((None, RED), (0.6, AMBER), (0.8, GREEN))),
        _stat("Win rate", f"team_window:pulse_win_rate:ratio{{{team},{window}}}",
              "percentunit", "won / (won + lost) in the window."),
        _stat("Average deal size", f"team_window:pulse_average_deal_size:ratio{{{team},{window}}}",
              cfg.money, "Won amount / deals won in the window."),
        _stat("Sales cycle", f"team_window:pulse_sales_cycle_seconds:ratio{{{team},{window}}}",
              "s", "Mean time from creation to won, over the deals won in the window."),
        _stat("Deals created", f"team_window:pulse_created_deals:sum{{{team},{window}}}",
              "none", "Deals created in the window."),
        _stat("Sales velocity per day",
              f"team_window:pulse_sales_velocity_amount_per_second:ratio{{{team},{window}}}"
              " * 86400", cfg.money, "open deals x win rate x average deal size / cycle."),
        _stat("Sales growth, last month", f"team:pulse_last_month_sales_growth:ratio{{{team}}}",
              "percentunit", "(last month - the month before) / the month before; empty when "
              "the month before had no revenue."),
        _stat("Customer churn, last month",
              'period:pulse_customer_churn_rate:ratio{period="last_month"}', "percentunit",
              "Customers active at the month's start who churned in it / those active at its "
              "start (all teams); red above 5%.", _thresholds((None, GREEN), (0.05, RED))),
        _stat("Customer lifetime value", "job:pulse_customer_lifetime_value:ratio", cfg.money,
              "APV x PF x CL over the last 365 days (all teams)."),
        _series("Won revenue against quota",
                [(f'team_period:pulse_quota_won_amount:sum{{{team},period="month"}}',
                  "won this month"),
                 (f'team_period:pulse_quota_amount:sum{{{team},period="month"}}', "quota"),
                 (f'team_period:pulse_quota_won_amount:sum{{{team},period="quarter"}}',
                  "won this quarter"),
                 (f'team_period:pulse_quota_amount:sum{{{team},period="quarter"}}',
                  "quarter quota")], cfg.money,
                "Won by the owners with a quota, next to their summed quota."),
        _series("Win rate by team", [(f"team_window:pulse_win_rate:ratio{{{window}}}",
                                      "{{team}}")], "percentunit", "won / (won + lost)."),
        _table("Attainment by owner, this month",
               'sort_desc(owner_period:pulse_quota_attainment:ratio{period="month"}'
               f"{WITH_NAME})", "percentunit",
               "Won amount / quota per owner (with the roster's name), highest first.",
               span=24),
    ], (TEAM, WINDOW))


def pipeline(cfg: BoardSettings) -> dashboard.Dashboard:
    """Funnel in stage order, time in stage, stuck deals, waterfall, activities."""
    team, window = 'team="$team"', 'window="$window"'
    stages = cfg.stages
    return _board("pulse-pipeline", "Pipeline Pulse / Pipeline", [
        _bars("Open pipeline by stage",
              [(f'team_stage:pulse_open_pipeline_amount:sum{{{team},stage="{s}"}}', s)
               for s in stages], cfg.money, "Open amount at T by current stage, in order."),
        _bars("Mean time in stage",
              [(f"team_stage_window:pulse_stage_mean_stint_seconds:ratio{{{team},{window},"
                f'stage="{s}"}}', s) for s in stages], "s",
              "Mean length of the stints that ended in the window."),
        _bars("Moved forward",
              [(f'team_stage_window:pulse_stage_forward:ratio{{{team},{window},stage="{s}"}}',
                s) for s in stages], "percentunit", "Stints that left to a later stage or won."),
        _bars("Stuck deals by stage",
              [(f'team_stage:pulse_stuck_deals:sum{{{team},stage="{s}"}}', s) for s in stages],
              "none", "Open deals without a stage change for PULSE_STUCK_DAYS."),
        _stat("Stuck share of the pipeline", f"team:pulse_stuck_pipeline_share:ratio{{{team}}}",
              "percentunit", "Stuck amount / open amount; red above 25%.",
              _thresholds((None, GREEN), (0.25, RED))),
        _bars("Pipeline waterfall",
              [(f"team_movement_window:pulse_pipeline_waterfall_amount:sum{{{team},{window}}}",
                "{{movement}}")], cfg.money,
              "Amount created, advanced, regressed, won, lost, increased, decreased in the "
              "window (event time)."),
        _bars("Stint length, all teams",
              [(f'sum({STINT_BUCKETS}{{{window},le="{le}"}})', legend)
               for le, legend in [*((_bound(d * 86400), f"<= {d} d") for d in STINT_BUCKETS_DAYS),
                                  ("+Inf", "all")]],
              "none", "Stints that ended in the window, cumulative by length."),
        _series("Bottleneck stage",
                [(f"max by (stage) (pulse_stage_bottleneck_mean_stint_seconds{{{team},"
                  f"{window}}})", "{{stage}}")], "s", "Stage with the longest mean stint."),
        _bars("Activities by kind",
              [(f"team_window_kind:pulse_activities:sum{{{team},{window}}}", "{{kind}}")],
              "none", "Calls, emails and meetings logged in the window."),
        _bars("Activities per won deal",
              [(f"team_window:pulse_activities_per_won_deal:ratio{{{window}}}", "{{team}}")],
              "none", "Activities logged / deals won, both in the window."),
        _bars("Most active owners",
              [(f"topk(10, sum by (owner) (pulse_owner_activities{{{window}}})){WITH_NAME}",
                "{{name}}")],
              "none", "Owners with the most activities logged in the window."),
    ], (TEAM, WINDOW))


def leads(cfg: BoardSettings) -> dashboard.Dashboard:
    """Conversion by source and over time, score distribution, hot leads."""
    window = 'window="$window"'
    buckets = [*(_bound(b) for b in cfg.score_buckets), "+Inf"]
    return _board("pulse-leads", "Pipeline Pulse / Leads", [
        _bars("Lead conversion by source",
              [(f"source_window:pulse_lead_conversion:ratio{{{window}}}", "{{source}}")],
              "percentunit", "Leads converted / created in the window."),
        _series("Lead conversion of the source",
                [('source_window:pulse_lead_conversion:ratio{source="$source"}', "{{window}}")],
                "percentunit", "Conversion of the chosen source, per window, over time."),
        _bars("Conversion by score band",
              [(f"band_window:pulse_lead_band_conversion:ratio{{{window}}}", "{{band}}")],
              "percentunit", "Over leads closed in the window, by score at the close."),
        _bars("Open leads by score",
              [(f'sum(pulse_lead_score_bucket{{le="{le}"}})', f"<= {le}") for le in buckets],
              "none", "Open leads with a score at most the bound (cumulative)."),
        _stat("Hot leads", "job:pulse_hot_leads:sum", "none",
              "Open leads at or above the hot threshold."),
        _stat("Hot leads waiting", "job:pulse_hot_leads_waiting:sum", "none",
              "Hot for PULSE_HOT_LEAD_WAIT_HOURS and still open; red above 0.",
              _thresholds((None, GREEN), (1, RED))),
    ], (WINDOW, SOURCE))


def competitors(cfg: BoardSettings) -> dashboard.Dashboard:
    """Win rate, losses, price gap and churn per competitor."""
    window = 'window="$window"'
    return _board("pulse-competitors", "Pipeline Pulse / Competitors", [
        _bars("Win rate against each competitor",
              [(f"competitor_window:pulse_competitor_win_rate:ratio{{{window}}}",
                "{{competitor}}")], "percentunit", "Over closed deals naming the competitor."),
        _bars("Losses to each competitor",
              [(f"sum by (competitor) (pulse_competitor_deals_lost{{{window}}})",
                "{{competitor}}")], "none", "Lost deals naming the competitor."),
        _bars("Price gap", [(f"competitor_window:pulse_competitor_price_gap:ratio{{{window}}}",
                             "{{competitor}}")], "percentunit",
              "Mean of our amount / competitor price - 1."),
        _bars("Customers lost to each competitor",
              [(f"competitor_window:pulse_competitor_customers_churned:sum{{{window}}}",
                "{{competitor}}")], "none", "Churned customers naming the competitor."),
    ], (WINDOW,))


def rep(cfg: BoardSettings) -> dashboard.Dashboard:
    """One rep's scorecard: attainment, pipeline, win rate, cycle, deals, activities."""
    owner, window = 'owner="$owner"', 'window="$window"'
    return _board("pulse-rep", "Pipeline Pulse / Rep scorecard", [
        _name(f"owner:pulse_owner_info:latest{{{owner}}}",
              "The rep's name and team from the roster (rep.updated); the owner id when "
              "the CRM sent no profile."),
        _stat("Attainment this month",
              f'owner_period:pulse_quota_attainment:ratio{{{owner},period="month"}}',
              "percentunit", "Won amount / quota this month; red below 60%.",
              _thresholds((None, RED), (0.6, AMBER), (1, GREEN))),
        _stat("Attainment this quarter",
              f'owner_period:pulse_quota_attainment:ratio{{{owner},period="quarter"}}',
              "percentunit", "Won amount / quota this quarter.",
              _thresholds((None, RED), (0.6, AMBER), (1, GREEN))),
        _stat("Won this month", f'sum(pulse_owner_won_amount{{{owner},period="month"}})',
              cfg.money, "Won amount of the owner's deals this month."),
        _stat("Quota this month", f'sum(pulse_owner_quota_amount{{{owner},period="month"}})',
              cfg.money, "The owner's quota for this month."),
        _stat("Open pipeline", f"owner:pulse_owner_open_pipeline_amount:sum{{{owner}}}",
              cfg.money, "Open amount of the owner's deals now."),
        _stat("Weighted pipeline",
              f"owner:pulse_owner_open_pipeline_weighted_amount:sum{{{owner}}}", cfg.money,
              "Open amount x the stage's win probability (PULSE_STAGES)."),
        _stat("Open deals", f"owner:pulse_owner_open_deals:sum{{{owner}}}", "none",
              "The owner's deals not yet won or lost."),
        _stat("Deals created", f"owner_window:pulse_owner_created_deals:sum{{{owner},{window}}}",
              "none", "Deals the owner created in the window."),
        _stat("Win rate", f"owner_window:pulse_owner_win_rate:ratio{{{owner},{window}}}",
              "percentunit", "won / (won + lost) of the owner's deals closed in the window.",
              no_value=NOTHING_CLOSED),
        _stat("Average deal size",
              f"owner_window:pulse_owner_average_deal_size:ratio{{{owner},{window}}}",
              cfg.money, "Won amount / deals won in the window.", no_value=NOTHING_WON),
        _stat("Sales cycle",
              f"owner_window:pulse_owner_sales_cycle_seconds:ratio{{{owner},{window}}}", "s",
              "Mean time from creation to won, over the owner's deals won in the window.",
              no_value=NOTHING_WON),
        _stat("Won in the window",
              f"owner_window:pulse_owner_won_deals_amount:sum{{{owner},{window}}}", cfg.money,
              "Won amount of the owner's deals won in the window."),
        _series("Won against quota",
                [(f"sum by (period) (pulse_owner_won_amount{{{owner}}})", "won {{period}}"),
                 (f"sum by (period) (pulse_owner_quota_amount{{{owner}}})", "quota {{period}}")],
                cfg.money, "Won amount and quota per period."),
        _bars("Deals closed",
              [(f"owner_window:pulse_owner_deals_won:sum{{{owner},{window}}}", "won"),
               (f"owner_window:pulse_owner_deals_lost:sum{{{owner},{window}}}", "lost")],
              "none", "The owner's deals won and lost in the window."),
        _bars("Activities by kind",
              [(f'sum by (kind) (pulse_owner_activities{{{owner},{window}}})',
                "{{kind}}")], "none", "Calls, emails and meetings the owner logged."),
    ], (OWNER, WINDOW))


def operations(cfg: BoardSettings) -> dashboard.Dashboard:
    """Throughput, lag, rejects, recovery, dependencies."""
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
        _series("Records restored per second",
                [("sum(rate(pulse_changelog_records_read_in_bulk_total[5m])) or vector(0)",
                  "read from changelogs"),
                 ("sum(rate(pulse_checkpoint_records_loaded_total[5m])) or vector(0)",
                  "loaded from local checkpoints")],
                "ops", "Where restarting workers restore their tables from."),
        _stat("Slowest last recovery", "max(pulse_last_recovery_duration_seconds)", "s",
              "Longest of the workers' last table recoveries."),
        _series("Event-loop lag", [("max by (instance) (pulse_event_loop_lag_seconds)",
                                    "{{instance}}")], "s",
                "Largest lateness of each worker's event loop over 10 s."),
        _stat("Workers up", 'sum(up{job="pipeline-pulse"})', "none", "Scraped workers."),
        _stat("Dedup store up", "min(pulse_dedup_store_up)", "none",
              "0 while a worker cannot reach Redis.", _thresholds((None, RED), (1, GREEN))),
        _stat("Kafka connections", "min(pulse_kafka_connected_brokers)", "none",
              "Fewest broker connections of a worker; 0: Kafka unreachable.",
              _thresholds((None, RED), (1, GREEN))),
    ])


DASHBOARDS: dict[str, Callable[[BoardSettings], dashboard.Dashboard]] = {
    "executive": executive, "pipeline": pipeline, "leads": leads,
    "competitors": competitors, "rep": rep, "operations": operations,
}


def dashboard_files(cfg: BoardSettings | None = None) -> dict[str, str]:
    """File name -> JSON text of every dashboard (for ``cfg``, default: the settings of
    the environment)."""
    cfg = cfg or BoardSettings.from_settings(Settings())
    encoder = JSONEncoder(sort_keys=True, indent=2)
    return {f"{name}.json": encoder.encode(_laid_out(build(cfg).build())) + "\n"
            for name, build in DASHBOARDS.items()}


def _laid_out(board: Any) -> Any:
    """Panels left to right in rows of Grafana's 24 columns, a panel that does not fit
    starting the next row below the tallest of the current one."""
    x = y = row_height = 0
    for panel in board.panels:
        pos = panel.grid_pos
        if x + pos.w > GRID_COLUMNS:
            x, y, row_height = 0, y + row_height, 0
        pos.x, pos.y = x, y
        x, row_height = x + pos.w, max(row_height, pos.h)
    return board


def panel_queries(text: str) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every target of a dashboard's JSON."""
    board: dict[str, Any] = json.loads(text)
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def variable_queries(text: str) -> dict[str, str]:
    """Variable name -> its ``label_values(metric, label)`` query, of a dashboard's JSON."""
    board: dict[str, Any] = json.loads(text)
    found = {}
    for variable in board.get("templating", {}).get("list", []):
        query = variable["query"]
        found[variable["name"]] = query if isinstance(query, str) else query["query"]
    return found
