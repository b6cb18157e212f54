"""The scrape-time collector against a fresh registry."""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import CollectorRegistry

from stream_app.adapters.metrics import PulseCollector
from stream_app.kpi.report import ReportConfig, build_report
from stream_app.kpi.rows import Report
from stream_app.kpi.snapshot import Snapshot
from stream_app.kpi.windows import window_specs
from stream_app.ops import OperationalStats

DAY = 20_500


class Source:
    reporting_currency = "USD"
    clock = "event"

    def __init__(self, snapshot: Snapshot | None):
        self.snapshot = snapshot
        self.ops = OperationalStats()
        self.reads = 0

    def report(self) -> Report | None:
        self.reads += 1
        if self.snapshot is None:
            return None
        return build_report(self.snapshot, DAY * 86_400_000, ReportConfig(
            window_specs((30,)), ("P", "N"), {"P": Decimal("0.2"), "N": Decimal("0.9")}))

    def stats(self) -> OperationalStats:
        return self.ops

    def dedup_up(self) -> bool:
        return False

    def owned_partitions(self) -> int:
        return 3

    def exported_partitions(self) -> dict[str, frozenset[int]]:
        return {"crm.deals": frozenset({0, 2, 3}), "crm.customers": frozenset({1})}


def test_values_are_computed_at_each_scrape() -> None:
    snap = Snapshot(buckets={("A", DAY): [3, 1, 1, 12_345, 7_200_000, 1]},
                    open={("A", "N", DAY - 40): [2, 10_000]})
    source = Source(snap)
    registry = CollectorRegistry()
    PulseCollector(source, registry)
    get = registry.get_sample_value
    labels = {"team": "A", "window": "30d"}
    assert get("pulse_created_deals", labels) == 3
    assert get("pulse_won_amount", labels) == 123.45
    assert get("pulse_win_rate_ratio", labels) == 0.5
    assert get("pulse_deals_closed", labels) == 2
    assert get("pulse_sales_cycle_seconds", labels) == 7200
    assert get("pulse_won_deals_cycle_seconds", labels) == 7200
    assert get("pulse_open_pipeline_weighted_amount", {"team": "all", "stage": "N"}) == 90
    assert get("pulse_dedup_store_up") == 0
    assert get("pulse_owned_partitions") == 3
    assert get("pulse_exported_partition", {"topic": "crm.deals", "partition": "2"}) == 1
    assert get("pulse_exported_partition", {"topic": "crm.deals", "partition": "1"}) is None
    assert get("pulse_exported_partition", {"topic": "crm.customers", "partition": "1"}) == 1
    assert get("pulse_info", {"reporting_currency": "USD", "clock": "event"}) == 1
    reads = source.reads
    snap.buckets[("A", DAY)][0] = 5
    assert get("pulse_created_deals", labels) == 5
    assert source.reads > reads


def test_ratios_with_zero_denominators_are_absent() -> None:
    registry = CollectorRegistry()
    PulseCollector(Source(Snapshot(buckets={("A", DAY): [1, 0, 0, 0, 0, 0]})), registry)
    labels = {"team": "A", "window": "30d"}
    assert registry.get_sample_value("pulse_deals_won", labels) == 0
    assert registry.get_sample_value("pulse_win_rate_ratio", labels) is None
    assert registry.get_sample_value("pulse_average_deal_size", labels) is None
    assert registry.get_sample_value("pulse_pipeline_conversion_ratio", labels) == 0


def test_operational_counters_and_lag() -> None:
    source = Source(None)
    source.ops.processed["deal.won"] += 4
    source.ops.rejected["not_json"] += 2
    source.ops.high_watermark[("crm.deals", 0)] = 100
    source.ops.last_offset[("crm.deals", 0)] = 89
    source.ops.high_watermark[("crm.deals", 1)] = 50
    source.ops.committed[("crm.deals", 1)] = 50
    registry = CollectorRegistry()
    PulseCollector(source, registry)
    get = registry.get_sample_value
    assert get("pulse_events_processed_total", {"type": "deal.won"}) == 4
    assert get("pulse_events_rejected_total", {"reason": "not_json"}) == 2
    assert get("pulse_consumer_lag_messages", {"topic": "crm.deals", "partition": "0"}) == 10
    assert get("pulse_consumer_lag_messages", {"topic": "crm.deals", "partition": "1"}) == 0
    assert get("pulse_created_deals", {"team": "all", "window": "30d"}) is None


def test_positions_and_recovery() -> None:
    source = Source(None)
    source.ops.last_offset[("crm.deals", 2)] = 41
    source.ops.changelog_applied["pulse-deals"] += 1500
    source.ops.recoveries = 2
    source.ops.recovery_in_progress = True
    source.ops.recovery_remaining = 300
    registry = CollectorRegistry()
    PulseCollector(source, registry)
    get = registry.get_sample_value
    assert get("pulse_consumer_next_offset", {"topic": "crm.deals", "partition": "2"}) == 42
    assert get("pulse_changelog_records_applied_total", {"table": "pulse-deals"}) == 1500
    assert get("pulse_recoveries_total") == 2
    assert get("pulse_recovery_in_progress") == 1
    assert get("pulse_recovery_remaining_records") == 300
    assert get("pulse_last_recovery_duration_seconds") is None
    source.ops.last_recovery_seconds = 3.5
    source.ops.recovery_in_progress = False
    assert get("pulse_last_recovery_duration_seconds") == 3.5
    assert get("pulse_recovery_in_progress") == 0


def test_bulk_reads_and_local_checkpoints() -> None:
    source = Source(None)
    ops = source.ops
    ops.changelog_read_in_bulk["pulse-deals"] += 900
    ops.checkpoints_written["pulse-deals"] += 8
    ops.checkpoint_records_loaded["pulse-leads"] += 70
    ops.checkpoints_discarded["pulse-deals"] += 1
    registry = CollectorRegistry()
    PulseCollector(source, registry)
    get = registry.get_sample_value
    assert get("pulse_changelog_records_read_in_bulk_total", {"table": "pulse-deals"}) == 900
    assert get("pulse_checkpoints_written_total", {"table": "pulse-deals"}) == 8
    assert get("pulse_checkpoint_records_loaded_total", {"table": "pulse-leads"}) == 70
    assert get("pulse_checkpoints_discarded_total", {"table": "pulse-deals"}) == 1
    assert get("pulse_last_checkpoint_duration_seconds") is None
    ops.last_checkpoint_seconds = 1.25
    assert get("pulse_last_checkpoint_duration_seconds") == 1.25


def test_positions_of_partitions_given_away_are_no_longer_exported() -> None:
    source = Source(None)
    ops = source.ops
    for tp in (("crm.deals", 0), ("crm.deals", 1)):
        ops.last_offset[tp] = 9
        ops.high_watermark[tp] = 20
        ops.committed[tp] = 5
        ops.partition_latest_ms[tp] = 1
    ops.forget_except({("crm.deals", 1)})
    registry = CollectorRegistry()
    PulseCollector(source, registry)
    get = registry.get_sample_value
    gone, kept = ({"topic": "crm.deals", "partition": p} for p in ("0", "1"))
    assert get("pulse_consumer_lag_messages", gone) is None
    assert get("pulse_consumer_next_offset", gone) is None
    assert get("pulse_consumer_lag_messages", kept) == 10
    assert get("pulse_consumer_next_offset", kept) == 10
    assert ops.partition_latest_ms == {("crm.deals", 1): 1}


def test_catalogue_families_from_one_snapshot() -> None:
    snap = Snapshot(
        buckets={("A", DAY): [1, 1, 0, 5_000, 3_600_000, 1]},
        open={("A", "N", DAY - 40): [2, 10_000], ("A", "P", DAY): [1, 1_000]},
        stints={("A", "P", DAY): [2, 86_400_000 * 3, 2, 0, 0, 1, 0, 1, *[0] * 7]},
        waterfall={("A", "created", DAY): [3, 20_000], ("A", "created", DAY - 40): [1, 500]},
        competitors={("Acme", DAY): [1, 1, 2, 3 * 10**14]},
        quota_cents={("o1", "2026-02"): 2_000, ("o2", "2026-02"): 2_000},
        quota_team={("o1", "2026-02"): "A", ("o2", "2026-02"): "A"},
        owner_won={("o1", "2026-02"): 2_500},
    )
    registry = CollectorRegistry()
    PulseCollector(Source(snap), registry)
    get = registry.get_sample_value
    assert get("pulse_stuck_deals", {"team": "A", "stage": "N"}) == 2
    assert get("pulse_stuck_pipeline_amount", {"team": "all", "stage": "N"}) == 100
    assert get("pulse_stuck_deals", {"team": "A", "stage": "P"}) == 0
    stint = {"team": "A", "stage": "P", "window": "30d"}
    assert get("pulse_stage_mean_stint_seconds", stint) == 1.5 * 86_400
    assert get("pulse_stage_exits", {**stint, "direction": "forward"}) == 2
    bucket = {"stage": "P", "window": "30d"}
    histogram = "pulse_stage_stint_duration_seconds"
    assert get(f"{histogram}_bucket", {**bucket, "le": "86400"}) == 1  # 1 day
    assert get(f"{histogram}_bucket", {**bucket, "le": "259200"}) == 1  # 3 days
    assert get(f"{histogram}_bucket", {**bucket, "le": "604800"}) == 2  # 7 days
    assert get(f"{histogram}_bucket", {**bucket, "le": "+Inf"}) == 2
    assert get(f"{histogram}_gsum", bucket) == 3 * 86_400
    created = {"team": "A", "movement": "created"}
    assert get("pulse_pipeline_waterfall_amount", {**created, "window": "30d"}) == 200
    assert get("pulse_pipeline_waterfall_deals", {**created, "window": "30d"}) == 3
    assert get("pulse_pipeline_waterfall_deals", {**created, "window": "all"}) == 4
    assert get("pulse_pipeline_waterfall_amount", {**created, "team": "all", "window": "all"}) \
        == 205
    assert get("pulse_competitor_price_gap_ratio", {"competitor": "Acme", "window": "30d"}) \
        == 0.15
    assert get("pulse_competitor_win_rate_ratio", {"competitor": "Acme", "window": "30d"}) == 0.5
    assert get("pulse_quota_attainment_ratio", {"owner": "o1", "period": "month"}) == 1.25
    assert get("pulse_quota_attainment_ratio", {"owner": "o2", "period": "month"}) == 0
    assert get("pulse_pipeline_coverage_ratio", {"team": "A", "period": "month"}) == 2.75
    assert get("pulse_quota_owners_at_quota_ratio", {"team": "all", "period": "month"}) == 0.5
    assert get("pulse_required_coverage_ratio", {"team": "A"}) == 1
    assert get("pulse_label_values_folded", {"label": "owner"}) == 0


def test_render_writes_what_prometheus_client_writes() -> None:
    from prometheus_client import generate_latest

    from stream_app.adapters.exposition import render
    from stream_app.kpi.leads import ScoreInputs
    from stream_app.kpi.scoring import load_rules

    snap = Snapshot(
        buckets={('we "say"\\ \nhi', DAY): [3, 1, 1, 12_345, 7_200_000, 1],
                 ("B", DAY - 3): [1] * 6},
        open={("A", "N", DAY - 40): [2, 10_000]},
        stints={("A", "P", DAY): [1, 86_400_000, 1, 0, 0, *([0] * 9), 1]},
        leads={("Web", DAY): [2, 1, 0]},
        open_leads=[ScoreInputs("Web", 40.0, ((DAY * 86_400_000, "demo_request"),), None)])

    class Scored(Source):
        def report(self) -> Report | None:
            return build_report(self.snapshot, DAY * 86_400_000, ReportConfig(
                window_specs((30,)), ("P", "N"), {"P": Decimal("0.2"), "N": Decimal("0.9")},
                scoring=load_rules(None)))

    source = Scored(snap)
    source.ops.processed["deal.created"] = 7
    registry = CollectorRegistry()
    PulseCollector(source, registry)
    text = render(registry)
    assert text == generate_latest(registry)
    assert b"pulse_lead_score_gsum " in text and b'\\"say\\"\\\\ \\nhi' in text
