"""Prometheus exposition: a custom Collector that computes every KPI at scrape time.

No gauge is set per event: :meth:`PulseCollector.collect` asks a :class:`KpiSource`
for a fresh :class:`~stream_app.kpi.rows.Report` and turns it into metric
families. Every ratio comes with its numerator and denominator so that PromQL
can sum them across workers before dividing.
"""

from __future__ import annotations

__all__ = ["KpiSource", "PulseCollector"]

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from stream_app.adapters.forecast_metrics import (
    accuracy_families,
    freshness_families,
    live_forecast_families,
    owner_forecast_families,
    plan_families,
)
from stream_app.adapters.operational_metrics import gauge, operational_families
from stream_app.adapters.people_metrics import (
    OwnerRows,
    activity_families,
    attainment_families,
    bound_text,
    lead_families,
    owner_families,
    owner_info_families,
    quota_families,
    required_coverage_families,
)
from stream_app.kpi.deals import STINT_BUCKETS_DAYS
from stream_app.kpi.money import cents_to_units
from stream_app.kpi.rows import ClvKpis, Report
from stream_app.kpi.snapshot import ALL_GROUP
from stream_app.labels import FOLDED_LABELS
from stream_app.ops import OperationalStats

SECONDS_PER_DAY = 86_400


class KpiSource(Protocol):
    """Where the collector reads state: the worker (or a test double with real data)."""

    @property
    def reporting_currency(self) -> str:
        """ISO code of the currency amounts are reported in."""

    @property
    def clock(self) -> str:
        """``wall`` or ``event``: what T (the as-of time) follows."""

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


class PulseCollector(Collector):
    """Reads the KPI source at each scrape; register it with any registry."""

    def __init__(self, source: KpiSource, registry: CollectorRegistry | None = None):
        self._source = source
        self._sections: dict[str, tuple[tuple[object, ...], list[Metric]]] = {}
        self._owner_rows = OwnerRows()
        if registry is not None:
            registry.register(self)

    def describe(self) -> list[Metric]:
        """Nothing up front: families depend on the data (no eager collect)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Compute and yield every metric family."""
        yield from self.head()
        report = self._source.report()
        if report is not None:
            yield from self.kpi_families(report)
        yield from self.tail()

    def head(self) -> Iterator[Metric]:
        """The build's info family (first in every scrape)."""
        info = GaugeMetricFamily(
            "pulse_info", "Pipeline Pulse build and settings.",
            labels=["reporting_currency", "clock"],
        )
        info.add_metric([self._source.reporting_currency, self._source.clock], 1)
        yield info

    def kpi_families(self, report: Report) -> list[Metric]:
        """Every KPI family of ``report``; reads nothing but the report, so it may run
        off the event loop (one call at a time)."""
        return list(self._kpis(report))

    def tail(self) -> Iterator[Metric]:
        """Operational families (counters of the running process, read where they are
        written)."""
        source = self._source
        yield from operational_families(source.stats())
        up = gauge("dedup_store_up", "1 if the Redis dedup store answered last time.", [])
        up.add_metric([], 1 if source.dedup_up() else 0)
        yield up
        owned = gauge("owned_partitions", "Source partitions this worker owns.", [])
        owned.add_metric([], source.owned_partitions())
        yield owned
        exported = gauge("exported_partition",
                          "1 for each source partition whose state this worker's KPIs include.",
                          ["topic", "partition"])
        for topic, partitions in sorted(source.exported_partitions().items()):
            for partition in sorted(partitions):
                exported.add_metric([topic, str(partition)], 1)
        yield exported

    def _kpis(self, report: Report) -> Iterator[Metric]:
        asof = gauge("asof_timestamp_seconds", "As-of time T of the windows (epoch s).", [])
        asof.add_metric([], report.as_of_ms / 1000)
        yield asof
        if report.latest_event_ms is not None:
            last = gauge("last_event_timestamp_seconds",
                          "Latest event time folded into the partitions this worker exports.", [])
            last.add_metric([], report.latest_event_ms / 1000)
            yield last
        r = report
        yield from self._section("windows", (r.windows,), lambda: self._windows(r))
        yield from self._section("stages", (r.stages,), lambda: self._stages(r))
        yield from self._section("churn", (r.churn,), lambda: self._churn(r))
        yield from self._section("dimensions", (r.dimensions,), lambda: self._dimensions(r))
        yield from self._section("stints", (r.stints, r.bottlenecks), lambda: self._stints(r))
        yield from self._section("waterfall", (r.waterfall,), lambda: self._waterfall(r))
        yield from self._section("competitors", (r.competitors,),
                                 lambda: self._competitors(r))
        yield from self._section("growth", (r.growth,), lambda: self._growth(r))
        if r.clv is not None:
            clv = r.clv
            yield from self._section("clv", (clv,), lambda: self._clv(clv))
        yield from self._section("quotas", (r.quotas,), lambda: quota_families(r))
        yield from self._section("required_coverage", (r.required_coverage,),
                                 lambda: required_coverage_families(r))
        yield from self._section("attainment", (r.attainment,),
                                 lambda: attainment_families(r, self._owner_rows))
        yield from self._section("leads", (r.leads, r.lead_bands, r.lead_scores),
                                 lambda: lead_families(r))
        yield from self._section("activities", (r.activities, r.owner_activities),
                                 lambda: activity_families(r, self._owner_rows))
        yield from self._section("owners", (r.owner_deals, r.owner_pipeline),
                                 lambda: owner_families(r, self._owner_rows))
        yield from self._section("owner_info", (r.owner_profiles,),
                                 lambda: owner_info_families(r))
        yield from self._section("forecast", (r.forecasts, r.forecast_alert_margin),
                                 lambda: live_forecast_families(r))
        yield from self._section("forecast_accuracy", (r.forecast_accuracy,),
                                 lambda: accuracy_families(r))
        yield from self._section("forecast_plans", (r.forecast_plans,), lambda: plan_families(r))
        yield from self._section("owner_forecasts", (r.owner_forecasts,),
                                 lambda: owner_forecast_families(r, self._owner_rows.forecasts))
        yield from freshness_families(r)
        yield from self._section("folded", (r.folded,), lambda: self._folded(r))

    def _section(self, name: str, inputs: tuple[object, ...],
                 families: Callable[[], Iterable[Metric]]) -> list[Metric]:
        """The families of one section of the report: the ones of the previous scrape
        when it read the very same row objects (a report rebuilt only in part keeps the
        others), so the renderer reuses their text."""
        known = self._sections.get(name)
        if known is not None and len(known[0]) == len(inputs) and all(
                a is b for a, b in zip(known[0], inputs, strict=True)):
            return known[1]
        built = list(families())
        self._sections[name] = (inputs, built)
        return built

    def _folded(self, report: Report) -> Iterator[Metric]:
        folded = gauge("label_values_folded",
                        "Distinct label values over their cap, summed into the value other.",
                        ["label"])
        for label in FOLDED_LABELS:
            folded.add_metric([label], report.folded.get(label, 0))
        yield folded

    def _windows(self, report: Report) -> Iterator[Metric]:
        wl = ["team", "window"]
        fams = {
            "created": gauge("created_deals", "Deals created in the window.", wl),
            "won": gauge("deals_won", "Deals won in the window.", wl),
            "lost": gauge("deals_lost", "Deals lost in the window.", wl),
            "closed": gauge("deals_closed", "Deals won or lost in the window.", wl),
            "won_amount": gauge("won_amount", "Won amount in the window (reporting ccy).", wl),
            "cycle_sum": gauge(
                "won_deals_cycle_seconds",
                "Sum over deals won in the window of seconds from created to won.", wl,
            ),
            "open": gauge("window_open_deals", "Open deals at T (velocity input).", wl),
            "win_rate": gauge("win_rate_ratio", "won / (won + lost).", wl),
            "conversion": gauge("pipeline_conversion_ratio", "won / created.", wl),
            "avg": gauge("average_deal_size", "won amount / won (reporting currency).", wl),
            "cycle": gauge("sales_cycle_seconds", "Mean seconds from created to won.", wl),
            "vdeals": gauge(
                "sales_velocity_deals_per_second", "won / sales cycle (x86400: per day).", wl
            ),
            "vamount": gauge(
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

    def _stages(self, report: Report) -> Iterator[Metric]:
        sl = ["team", "stage"]
        fams = [
            gauge("open_deals", "Open deals at T by stage.", sl),
            gauge("open_pipeline_amount", "Open amount at T by stage.", sl),
            gauge("open_pipeline_weighted_amount", "Open amount x stage win probability.", sl),
            gauge("stuck_deals", "Open deals whose current stage began more than "
                   "PULSE_STUCK_DAYS days before T.", sl),
            gauge("stuck_pipeline_amount", "Open amount of the stuck deals.", sl),
        ]
        for s in report.stages:
            values = (s.count, cents_to_units(s.cents), s.weighted_cents / 100, s.stuck_count,
                      cents_to_units(s.stuck_cents))
            for family, value in zip(fams, values, strict=True):
                family.add_metric([s.group, s.stage], value)
        yield from fams

    def _churn(self, report: Report) -> Iterator[Metric]:
        pl = ["period"]
        churned = gauge("customers_churned",
                         "Customers active at the month's start who churned in it.", pl)
        lost_new = gauge("new_customers_churned",
                          "Customers won and churned inside the month (not in the rate).", pl)
        active = gauge(
            "customers_active_at_period_start", "Customers active at the month's start.", pl
        )
        rate = gauge("customer_churn_rate_ratio", "churned / active at the start.", pl)
        start = gauge("period_start_timestamp_seconds", "Start of the month (epoch s).", pl)
        for c in report.churn:
            churned.add_metric([c.period], c.churned)
            lost_new.add_metric([c.period], c.new_customers_churned)
            active.add_metric([c.period], c.active_at_start)
            start.add_metric([c.period], c.start_ms / 1000)
            if c.rate is not None:
                rate.add_metric([c.period], c.rate)
        yield from (churned, lost_new, active, rate, start)

    def _dimensions(self, report: Report) -> Iterator[Metric]:
        for dim in ("source", "product"):
            labels = [dim, "window"]
            fams = {
                "created": gauge(f"{dim}_created_deals", f"Deals created in the window, by "
                                  f"{dim}.", labels),
                "won": gauge(f"{dim}_deals_won", f"Deals won in the window, by {dim}.", labels),
                "lost": gauge(f"{dim}_deals_lost", f"Deals lost in the window, by {dim}.",
                               labels),
                "won_amount": gauge(f"{dim}_won_amount", f"Won amount (revenue) in the window, "
                                     f"by {dim}.", labels),
                "win_rate": gauge(f"{dim}_win_rate_ratio", "won / (won + lost).", labels),
                "avg": gauge(f"{dim}_average_deal_size", "won amount / won.", labels),
            }
            for d in report.dimensions:
                if d.dimension != dim:
                    continue
                row = [d.value, d.window]
                fams["created"].add_metric(row, d.created)
                fams["won"].add_metric(row, d.won)
                fams["lost"].add_metric(row, d.lost)
                fams["won_amount"].add_metric(row, cents_to_units(d.won_cents))
                if d.win_rate is not None:
                    fams["win_rate"].add_metric(row, d.win_rate)
                if d.average_deal_cents is not None:
                    fams["avg"].add_metric(row, d.average_deal_cents / 100)
            yield from fams.values()

    def _stints(self, report: Report) -> Iterator[Metric]:
        labels = ["team", "stage", "window"]
        count = gauge("stage_stints", "Stints in the stage that ended in the window.", labels)
        total = gauge("stage_stint_seconds", "Summed length of those stints.", labels)
        mean = gauge("stage_mean_stint_seconds", "Mean length of those stints.", labels)
        exits = gauge("stage_exits", "Those stints by exit: forward (a later stage or won), "
                       "backward or lost.", [*labels, "direction"])
        forward = gauge("stage_forward_ratio", "Exits forward / all exits.", labels)
        histogram = GaugeHistogramMetricFamily(
            "pulse_stage_stint_duration_seconds", "Length of stints that ended in the window "
            "(team all).", labels=["stage", "window"])
        for s in report.stints:
            row = [s.group, s.stage, s.window]
            count.add_metric(row, s.stints)
            total.add_metric(row, s.stint_ms / 1000)
            for direction, n in (("forward", s.forward), ("backward", s.backward),
                                 ("lost", s.lost)):
                exits.add_metric([*row, direction], n)
            if s.mean_seconds is not None:
                mean.add_metric(row, s.mean_seconds)
            if s.forward_ratio is not None:
                forward.add_metric(row, s.forward_ratio)
            if s.group == ALL_GROUP:
                cumulative, buckets = 0, []
                stint_bounds: tuple[float | str, ...] = (
                    *(days * SECONDS_PER_DAY for days in STINT_BUCKETS_DAYS), "+Inf")
                for bound, n in zip(stint_bounds, s.buckets, strict=True):
                    cumulative += n
                    buckets.append((bound_text(bound), cumulative))
                histogram.add_metric([s.stage, s.window], buckets, s.stint_ms / 1000)
        bottleneck = gauge("stage_bottleneck_mean_stint_seconds",
                            "Mean stint of the stage with the longest mean stint.",
                            ["team", "window", "stage"])
        for b in report.bottlenecks:
            bottleneck.add_metric([b.group, b.window, b.stage], b.mean_seconds)
        yield from (count, total, mean, exits, forward, histogram, bottleneck)

    def _waterfall(self, report: Report) -> Iterator[Metric]:
        labels = ["team", "movement", "window"]
        deals = gauge("pipeline_waterfall_deals",
                       "Deal movements in the window (event time): created, advanced, "
                       "regressed, won, lost, amount increased or decreased.", labels)
        amount = gauge("pipeline_waterfall_amount",
                        "Amount moved by those movements (reporting currency).", labels)
        for w in report.waterfall:
            deals.add_metric([w.group, w.movement, w.window], w.count)
            amount.add_metric([w.group, w.movement, w.window], cents_to_units(w.cents))
        yield from (deals, amount)

    def _competitors(self, report: Report) -> Iterator[Metric]:
        labels = ["competitor", "window"]
        won = gauge("competitor_deals_won", "Deals won in the window naming the competitor.",
                     labels)
        lost = gauge("competitor_deals_lost", "Deals lost in the window naming the "
                      "competitor (losses to it).", labels)
        rate = gauge("competitor_win_rate_ratio", "won / (won + lost) against the competitor.",
                      labels)
        priced = gauge("competitor_priced_deals", "Closed deals naming the competitor's price.",
                        labels)
        gap_sum = gauge("competitor_summed_price_gap_ratio", "Sum of (our amount / competitor "
                         "price - 1) over the priced deals.", labels)
        gap = gauge("competitor_price_gap_ratio", "Mean of (our amount / competitor price - 1).",
                     labels)
        churned = gauge("competitor_customers_churned", "Customers churned in the window who "
                         "left for the competitor.", labels)
        for c in report.competitors:
            row = [c.competitor, c.window]
            won.add_metric(row, c.won)
            lost.add_metric(row, c.lost)
            priced.add_metric(row, c.priced)
            gap_sum.add_metric(row, c.gap_femto / 10**15)
            churned.add_metric(row, c.churned)
            if c.win_rate is not None:
                rate.add_metric(row, c.win_rate)
            if c.mean_price_gap is not None:
                gap.add_metric(row, c.mean_price_gap)
        yield from (won, lost, rate, priced, gap_sum, gap, churned)

    def _growth(self, report: Report) -> Iterator[Metric]:
        amount = gauge("monthly_won_amount", "Won amount by calendar month: month_to_date, "
                        "last_month_same_days, last_month, month_before_last.",
                        ["team", "period"])
        growth = gauge("monthly_sales_growth_ratio", "last_month: (last month - the month "
                        "before) / the month before; month_to_date: against the same days of "
                        "last month.", ["team", "period"])
        for g in report.growth:
            for period, cents in (("month_to_date", g.month_to_date_cents),
                                  ("last_month_same_days", g.same_days_cents),
                                  ("last_month", g.last_month_cents),
                                  ("month_before_last", g.month_before_cents)):
                amount.add_metric([g.group, period], cents_to_units(cents))
            for period, ratio in (("last_month", g.last_month_growth),
                                  ("month_to_date", g.month_to_date_growth)):
                if ratio is not None:
                    growth.add_metric([g.group, period], ratio)
        yield from (amount, growth)

    def _clv(self, clv: ClvKpis) -> Iterator[Metric]:
        parts = (
            ("clv_won_amount", "Won amount over the trailing 365 days.",
             cents_to_units(clv.won_cents)),
            ("clv_won_deals", "Deals won over the trailing 365 days.", clv.won),
            ("clv_won_deals_with_account", "Of those, deals with an account.",
             clv.won_with_account),
            ("clv_customers_buying", "Distinct accounts with a won deal in the trailing "
             "365 days.", clv.buyers),
            ("clv_customers_churned", "Customers churned in the trailing 365 days.",
             clv.churned),
            ("clv_customers_active_at_start", "Customers active at the start of the trailing "
             "365 days.", clv.active_at_start),
            ("clv_max_lifespan_years", "The cap of CL (PULSE_CLV_MAX_YEARS), for PromQL.",
             clv.max_years),
        )
        for name, doc, value in parts:
            family = gauge(name, doc, [])
            family.add_metric([], value)
            yield family
        ratios = (
            ("clv_average_purchase_value", "APV = won amount / won deals (365 days).",
             None if clv.average_purchase_cents is None else clv.average_purchase_cents / 100),
            ("clv_purchase_frequency_per_year", "PF = won deals with an account / distinct "
             "accounts buying (365 days).", clv.purchase_frequency),
            ("clv_customer_lifespan_years", "CL = 1 / annual churn rate, capped at "
             "PULSE_CLV_MAX_YEARS.", clv.lifespan_years),
            ("customer_lifetime_value", "CLV = APV x PF x CL (reporting currency).",
             None if clv.lifetime_value_cents is None else clv.lifetime_value_cents / 100),
        )
        for name, doc, ratio in ratios:
            if ratio is not None:
                family = gauge(name, doc, [])
                family.add_metric([], ratio)
                yield family
