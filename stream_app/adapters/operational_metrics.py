"""Operational metric families (throughput, lag, recovery) and the family helpers the
KPI collector shares."""

from __future__ import annotations

__all__ = ["counter", "gauge", "operational_families"]

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, Metric

from stream_app.adapters.exposition import RowGauge
from stream_app.ops import OperationalStats


def gauge(name: str, doc: str, labels: list[str]) -> RowGauge:
    """A gauge family named ``pulse_<name>``."""
    return RowGauge(f"pulse_{name}", doc, labels)


def counter(name: str, doc: str, label: str, counts: Mapping[str, int]) -> Metric:
    """A counter family ``pulse_<name>`` with one sample per value of ``label``."""
    family = CounterMetricFamily(f"pulse_{name}", doc, labels=[label])
    for value, n in sorted(counts.items()):
        family.add_metric([value], n)
    return family


def operational_families(stats: OperationalStats) -> Iterator[Metric]:
    """Throughput, rejects, lag, positions, connections, loop lag and recovery of this
    process."""
    yield counter("events_processed", "Valid events applied or replayed, by type.", "type",
                   stats.processed)
    yield counter("events_rejected", "Events sent to the dead-letter topic, by reason.",
                   "reason", stats.rejected)
    yield counter("events_duplicate", "Events skipped as duplicates of a seen id.", "type",
                   stats.duplicates)
    yield counter("events_late",
                   "Events applied although older than their partition's latest event "
                   "time minus the grace period.", "type", stats.late)
    unavailable = CounterMetricFamily(
        "pulse_dedup_unavailable", "Events processed while Redis was unreachable."
    )
    unavailable.add_metric([], stats.dedup_unavailable)
    yield unavailable
    replayed = CounterMetricFamily(
        "pulse_events_replayed",
        "Messages read again at the position where they were first read (after a crash "
        "or a rebalance before their offset was committed); folded idempotently.")
    replayed.add_metric([], stats.replays)
    yield replayed
    reread = CounterMetricFamily(
        "pulse_events_reread",
        "Messages the consumer skipped (a later offset of their partition came first) "
        "that the worker read again from the broker and folded in offset order.")
    reread.add_metric([], sum(stats.reread.values()))
    yield reread
    lag = gauge("consumer_lag_messages", "Messages behind the high watermark.",
                 ["topic", "partition"])
    for (topic, partition), n in sorted(stats.lag().items()):
        lag.add_metric([topic, str(partition)], n)
    yield lag
    position = gauge("consumer_next_offset", "Offset after the last message applied.",
                      ["topic", "partition"])
    for (topic, partition), n in sorted(stats.next_offsets().items()):
        position.add_metric([topic, str(partition)], n)
    yield position
    if stats.kafka_connections is not None:
        kafka = gauge("kafka_connected_brokers",
                       "Open connections of the worker's consumer to Kafka brokers (0: "
                       "the cluster is unreachable; the client keeps reconnecting).", [])
        kafka.add_metric([], stats.kafka_connections)
        yield kafka
    if stats.loop_lag_seconds is not None:
        loop = gauge("event_loop_lag_seconds",
                      "Largest lateness of the event loop over the last 10 s (a probe "
                      "task's sleep overrun); /livez fails above "
                      "PULSE_LIVENESS_MAX_LOOP_LAG_SECONDS.", [])
        loop.add_metric([], stats.loop_lag_seconds)
        yield loop
    yield from _recovery(stats)

def _recovery(stats: OperationalStats) -> Iterator[Metric]:
    yield counter(
        "changelog_records_applied",
        "Changelog records applied to local state (recovery and standby), by table.",
        "table", stats.changelog_applied,
    )
    yield counter(
        "changelog_records_dropped",
        "Of those, records not restored: older than the record already restored for "
        "their key (a late write of a worker that lost its partition), by table.",
        "table", stats.changelog_dropped,
    )
    yield counter(
        "changelog_records_read_in_bulk",
        "Of the applied records, those read by the bulk loader at the start of a "
        "recovery rather than by Faust's consumer, by table.",
        "table", stats.changelog_read_in_bulk,
    )
    yield counter(
        "checkpoints_written",
        "Local checkpoints written (one per table and exported partition, every "
        "PULSE_CHECKPOINT_INTERVAL_SECONDS), by table.", "table", stats.checkpoints_written)
    yield counter(
        "checkpoint_records_loaded",
        "Records a recovery loaded from local checkpoints instead of reading the "
        "changelog, by table.", "table", stats.checkpoint_records_loaded)
    yield counter(
        "checkpoints_discarded",
        "Local checkpoints a recovery found unusable (unreadable, or the changelog no "
        "longer holds the records it was taken at: deleted, recreated, truncated or "
        "another application's), by table.", "table", stats.checkpoints_discarded)
    if stats.last_checkpoint_seconds is not None:
        took = gauge("last_checkpoint_duration_seconds",
                     "Seconds the last round of local checkpoints took.", [])
        took.add_metric([], stats.last_checkpoint_seconds)
        yield took
    recoveries = CounterMetricFamily("pulse_recoveries", "Table recoveries completed.")
    recoveries.add_metric([], stats.recoveries)
    yield recoveries
    running = gauge("recovery_in_progress", "1 while tables are being restored.", [])
    running.add_metric([], 1 if stats.recovery_in_progress else 0)
    yield running
    remaining = gauge("recovery_remaining_records",
                       "Changelog records left to restore for active partitions.", [])
    remaining.add_metric([], stats.recovery_remaining)
    yield remaining
    if stats.last_recovery_seconds is not None:
        took = gauge("last_recovery_duration_seconds",
                      "Seconds the last completed recovery took.", [])
        took.add_metric([], stats.last_recovery_seconds)
        yield took
