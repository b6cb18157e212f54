"""Prometheus exposition: a custom Collector that computes every KPI at scrape time.

No gauge is set per event: :meth:`PulseCollector.collect` asks a :class:`KpiSource`
for a fresh :class:`~stream_app.kpi.report.Report` and turns it into metric
families. Every ratio comes with its numerator and denominator so that PromQL
can sum them across workers before dividing.
"""

from __future__ import annotations

__all__ = ["KpiSource", "PulseCollector", "render", "series_budget"]

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream_app.config import Settings
from stream_app.kpi.money import cents_to_units
from stream_app.kpi.report import Report
from stream_app.ops import OperationalStats


class KpiSource(Protocol):
    """Where the collector reads state: the worker (or a test double with real data)."""

    reporting_currency: str
    clock: str

    def report(self) -> Report | None:
        """KPIs of the partitions owned now; None before the first assignment."""

    def stats(self) -> OperationalStats:
        """Operational counters of this process."""

    def dedup_up(self) -> bool:
        """Whether the deduplication store answered last time."""

    def owned_partitions(self) -> int:
        """Number of source partitions this worker owns now."""

    def exported_partitions(self) -> Mapping[str, frozenset[int]]:
        """Source partitions whose state the KPIs include now, by topic."""


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"pulse_{name}", doc, labels=labels)


def _counter(name: str, doc: str, label: str, counts: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(f"pulse_{name}", doc, labels=[label])
    for value, n in sorted(counts.items()):
        family.add_metric([value], n)
    return family


class PulseCollector(Collector):
    """Reads the KPI source at each scrape; register it with any registry."""

    def __init__(self, source: KpiSource, registry: CollectorRegistry | None = None):
        self._source = source
        if registry is not None:
            registry.register(self)

    def describe(self) -> list[Metric]:
        """Nothing up front: families depend on the data (no eager collect)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Compute and yield every metric family."""
        source = self._source
        info = GaugeMetricFamily(
            "pulse_info", "Pipeline Pulse build and settings.",
            labels=["reporting_currency", "clock"],
        )
        info.add_metric([source.reporting_currency, source.clock], 1)
        yield info
        report = source.report()
        if report is not None:
            yield from self._kpis(report)
        yield from self._operations(source.stats())
        up = _gauge("dedup_store_up", "1 if the Redis dedup store answered last time.", [])
        up.add_metric([], 1 if source.dedup_up() else 0)
        yield up
        owned = _gauge("owned_partitions", "Source partitions this worker owns.", [])
        owned.add_metric([], source.owned_partitions())
        yield owned
        exported = _gauge("exported_partition",
                          "1 for each source partition whose state this worker's KPIs include.",
                          ["topic", "partition"])
        for topic, partitions in sorted(source.exported_partitions().items()):
            for partition in sorted(partitions):
                exported.add_metric([topic, str(partition)], 1)
        yield exported

    def _kpis(self, report: Report) -> Iterator[Metric]:
        asof = _gauge("asof_timestamp_seconds", "As-of time T of the windows (epoch s).", [])
        asof.add_metric([], report.as_of_ms / 1000)
        yield asof
        wl = ["team", "window"]
        fams = {
            "created": _gauge("deals_created", "Deals created in the window.", wl),
            "won": _gauge("deals_won", "Deals won in the window.", wl),
            "lost": _gauge("deals_lost", "Deals lost in the window.", wl),
            "closed": _gauge("deals_closed", "Deals won or lost in the window.", wl),
            "won_amount": _gauge("won_amount", "Won amount in the window (reporting ccy).", wl),
            "cycle_sum": _gauge(
                "won_deals_cycle_seconds",
                "Sum over deals won in the window of seconds from created to won.", wl,
            ),
            "open": _gauge("window_open_deals", "Open deals at T (velocity input).", wl),
            "win_rate": _gauge("win_rate_ratio", "won / (won + lost).", wl),
            "conversion": _gauge("pipeline_conversion_ratio", "won / created.", wl),
            "avg": _gauge("average_deal_size", "won amount / won (reporting currency).", wl),
            "cycle": _gauge("sales_cycle_seconds", "Mean seconds from created to won.", wl),
            "vdeals": _gauge(
                "sales_velocity_deals_per_second", "won / sales cycle (x86400: per day).", wl
            ),
            "vamount": _gauge(
                "sales_velocity_amount_per_second",
                "open deals x win rate x average deal size / sales cycle.", wl,
            ),
        }
        for w in report.windows:
            labels = [w.group, w.window]
            fams["created"].add_metric(labels, w.created)
            fams["won"].add_metric(labels, w.won)
            fams["lost"].add_metric(labels, w.lost)
            fams["closed"].add_metric(labels, w.closed)
            fams["won_amount"].add_metric(labels, cents_to_units(w.won_cents))
            fams["cycle_sum"].add_metric(labels, w.cycle_ms / 1000)
            fams["open"].add_metric(labels, w.open_deals)
            optional = {
                "win_rate": w.win_rate,
                "conversion": w.conversion,
                "avg": None if w.average_deal_cents is None else w.average_deal_cents / 100,
                "cycle": w.sales_cycle_seconds,
                "vdeals": w.velocity_deals_per_second,
                "vamount": (None if w.velocity_cents_per_second is None
                            else w.velocity_cents_per_second / 100),
            }
            for name, value in optional.items():
                if value is not None:
                    fams[name].add_metric(labels, value)
        yield from fams.values()
        sl = ["team", "stage"]
        count = _gauge("open_deals", "Open deals at T by stage.", sl)
        amount = _gauge("open_pipeline_amount", "Open amount at T by stage.", sl)
        weighted = _gauge(
            "open_pipeline_weighted_amount", "Open amount x stage win probability.", sl
        )
        for s in report.stages:
            count.add_metric([s.group, s.stage], s.count)
            amount.add_metric([s.group, s.stage], cents_to_units(s.cents))
            weighted.add_metric([s.group, s.stage], s.weighted_cents / 100)
        yield from (count, amount, weighted)
        pl = ["period"]
        churned = _gauge("customers_churned", "Customers churned in the month.", pl)
        active = _gauge(
            "customers_active_at_period_start", "Customers active at the month's start.", pl
        )
        rate = _gauge("customer_churn_rate_ratio", "churned / active at the start.", pl)
        start = _gauge("period_start_timestamp_seconds", "Start of the month (epoch s).", pl)
        for c in report.churn:
            churned.add_metric([c.period], c.churned)
            active.add_metric([c.period], c.active_at_start)
            start.add_metric([c.period], c.start_day * 86400)
            if c.rate is not None:
                rate.add_metric([c.period], c.rate)
        yield from (churned, active, rate, start)
        folded = _gauge("label_values_folded",
                        "Distinct label values over the cap, summed into the value other.",
                        ["label"])
        folded.add_metric(["team"], report.folded_groups)
        yield folded

    def _operations(self, stats: OperationalStats) -> Iterator[Metric]:
        yield _counter("events_processed", "Valid events applied or replayed, by type.", "type",
                       stats.processed)
        yield _counter("events_rejected", "Events sent to the dead-letter topic, by reason.",
                       "reason", stats.rejected)
        yield _counter("events_duplicate", "Events skipped as duplicates of a seen id.", "type",
                       stats.duplicates)
        yield _counter("events_late",
                       "Events applied although older than their partition's latest event "
                       "time minus the grace period.", "type", stats.late)
        unavailable = CounterMetricFamily(
            "pulse_dedup_unavailable", "Events processed while Redis was unreachable."
        )
        unavailable.add_metric([], stats.dedup_unavailable)
        yield unavailable
        if stats.last_event_ms is not None:
            last = _gauge("last_event_timestamp_seconds", "Event time of the latest event.", [])
            last.add_metric([], stats.last_event_ms / 1000)
            yield last
        lag = _gauge("consumer_lag_messages", "Messages behind the high watermark.",
                     ["topic", "partition"])
        for (topic, partition), n in sorted(stats.lag().items()):
            lag.add_metric([topic, str(partition)], n)
        yield lag
        position = _gauge("consumer_next_offset", "Offset after the last message applied.",
                          ["topic", "partition"])
        for (topic, partition), n in sorted(stats.next_offsets().items()):
            position.add_metric([topic, str(partition)], n)
        yield position
        yield from self._recovery(stats)

    def _recovery(self, stats: OperationalStats) -> Iterator[Metric]:
        yield _counter(
            "changelog_records_applied",
            "Changelog records applied to local state (recovery and standby), by table.",
            "table", stats.changelog_applied,
        )
        recoveries = CounterMetricFamily("pulse_recoveries", "Table recoveries completed.")
        recoveries.add_metric([], stats.recoveries)
        yield recoveries
        running = _gauge("recovery_in_progress", "1 while tables are being restored.", [])
        running.add_metric([], 1 if stats.recovery_in_progress else 0)
        yield running
        remaining = _gauge("recovery_remaining_records",
                           "Changelog records left to restore for active partitions.", [])
        remaining.add_metric([], stats.recovery_remaining)
        yield remaining
        if stats.last_recovery_seconds is not None:
            took = _gauge("last_recovery_duration_seconds",
                          "Seconds the last completed recovery took.", [])
            took.add_metric([], stats.last_recovery_seconds)
            yield took


WINDOW_FAMILIES = 13
STAGE_FAMILIES = 3


def series_budget(settings: Settings) -> int:
    """Most series one worker can export: team-labelled KPI families for every admitted
    team, ``other`` and ``all``, plus operational series (bounded by partitions)."""
    groups = settings.max_teams + 2
    windows = len(settings.windows_days) + 1
    return (WINDOW_FAMILIES * groups * windows + STAGE_FAMILIES * groups * len(settings.stages)
            + 64 + 8 * settings.partitions)


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of a registry."""
    return generate_latest(registry)
