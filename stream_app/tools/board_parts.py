"""The pieces the dashboards are built from (grafana-foundation-sdk): panels, queries,
variables, thresholds and the settings the boards take."""

from __future__ import annotations

__all__ = [
    "AMBER",
    "GREEN",
    "GRID_COLUMNS",
    "NOTHING_CLOSED",
    "NOTHING_WON",
    "OWNER",
    "PROMETHEUS_UID",
    "RED",
    "SOURCE",
    "SOURCE_REF",
    "STINT_BUCKETS",
    "TEAM",
    "WINDOW",
    "WITH_NAME",
    "BoardSettings",
    "Panel",
    "bars",
    "board",
    "bound",
    "figure",
    "name_panel",
    "query",
    "series",
    "table_panel",
    "thresholds",
    "variable",
]

from dataclasses import dataclass

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    prometheus,
    stat,
    table,
    timeseries,
)
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
from stream_app.kpi.scoring import load_rules

PROMETHEUS_UID = "pulse-prometheus"
SOURCE_REF = DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
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


def bound(value: float) -> str:
    """A bucket bound as the exporter writes ``le``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def variable(name: str, label: str, query: str, default: str) -> dashboard.QueryVariable:
    return (dashboard.QueryVariable(name).label(label).query(query).datasource(SOURCE_REF)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
            .current(VariableOption(selected=True, text=default, value=default)))


TEAM = variable("team", "Team", "label_values(team_window:pulse_win_rate:ratio, team)", "all")
WINDOW = variable("window", "Window",
                   "label_values(team_window:pulse_win_rate:ratio, window)", "90d")
OWNER = variable("owner", "Owner", "label_values(owner:pulse_owner_info:latest, owner)", "")
#: Joined to a per-owner query: adds the owner's roster name (the id when it has none).
WITH_NAME = " * on (owner) group_left (name) owner:pulse_owner_info:latest"
SOURCE = variable("source", "Lead source",
                   "label_values(source_window:pulse_lead_conversion:ratio, source)", "all")


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=value, color=color) for value, color in steps]))


def query(expr: str, legend: str = "", ref: str = "A", instant: bool = False
           ) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).datasource(SOURCE_REF).ref_id(ref)
    if instant:
        query = query.instant().format(PromQueryFormat.TABLE)
    return query.legend_format(legend) if legend else query


def figure(title: str, expr: str, unit: str, description: str,
          thresholds: dashboard.ThresholdsConfig | None = None, span: int = 6,
          no_value: str | None = None) -> stat.Panel:
    """A single value; ``no_value`` is shown when the ratio has no denominator (the
    panel's query is then rightly empty)."""
    panel = (stat.Panel().title(title).description(description).datasource(SOURCE_REF)
             .unit(unit).with_target(query(expr)).height(5).span(span))
    if no_value is not None:
        panel = panel.no_value(no_value)
    return panel.thresholds(thresholds) if thresholds is not None else panel


def name_panel(expr: str, description: str) -> stat.Panel:
    """The series' ``name`` and ``team`` labels as text (the roster)."""
    return (stat.Panel().title("Rep").description(description).datasource(SOURCE_REF)
            .unit("none").with_target(query(expr, "{{name}} ({{team}})"))
            .text_mode(BigValueTextMode.NAME)
            .height(5).span(24))


def series(title: str, queries: list[tuple[str, str]], unit: str,
            description: str, span: int = 12) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(SOURCE_REF)
             .unit(unit).height(8).span(span))
    for ref, (expr, legend) in zip("ABCDEFGHIJKLMNOP", queries, strict=False):
        panel = panel.with_target(query(expr, legend, ref))
    return panel


def bars(title: str, queries: list[tuple[str, str]], unit: str, description: str,
          span: int = 12) -> bargauge.Panel:
    """Bars in the order of ``queries`` (one query per bar keeps an order PromQL cannot)."""
    panel = (bargauge.Panel().title(title).description(description).datasource(SOURCE_REF)
             .unit(unit).height(8).span(span))
    for ref, (expr, legend) in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", queries, strict=False):
        panel = panel.with_target(query(expr, legend, ref))
    return panel


def table_panel(title: str, expr: str, unit: str, description: str, span: int = 12) -> table.Panel:
    return (table.Panel().title(title).description(description).datasource(SOURCE_REF)
            .unit(unit).with_target(query(expr, instant=True)).height(10).span(span))


def board(uid: str, title: str, panels: list[Panel],
           variables: tuple[dashboard.QueryVariable, ...] = ()) -> dashboard.Dashboard:
    built = (dashboard.Dashboard(title).uid(uid).tags(["pipeline-pulse", "generated"])
             .refresh("1m").time("now-90d", "now").timezone("utc"))
    for each in variables:
        built = built.with_variable(each)
    for number, panel in enumerate(panels, start=1):
        built = built.with_panel(panel.id(number))
    return built


