"""Operational counters of one worker process (plain data, read by the metrics collector)."""

from __future__ import annotations

__all__ = ["LOOP_LAG_WINDOW_SECONDS", "OperationalStats"]

from collections import Counter
from dataclasses import dataclass, field

#: The window over which the event-loop lag gauge keeps its largest value.
LOOP_LAG_WINDOW_SECONDS = 10.0


@dataclass
class OperationalStats:
    """What a worker did since it started; counters only go up."""

    processed: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    late: Counter[str] = field(default_factory=Counter)
    replays: int = 0
    #: Messages a batch skipped (beyond its partition's next offset) read again, by topic.
    reread: Counter[str] = field(default_factory=Counter)
    dedup_unavailable: int = 0
    last_offset: dict[tuple[str, int], int] = field(default_factory=dict)
    partition_latest_ms: dict[tuple[str, int], int] = field(default_factory=dict)
    high_watermark: dict[tuple[str, int], int] = field(default_factory=dict)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    recoveries: int = 0
    changelog_applied: Counter[str] = field(default_factory=Counter)
    changelog_dropped: Counter[str] = field(default_factory=Counter)
    #: Of the applied records, those the bulk loader read (not Faust's consumer).
    changelog_read_in_bulk: Counter[str] = field(default_factory=Counter)
    #: Local checkpoints written, records loaded from them, and ones found unusable.
    checkpoints_written: Counter[str] = field(default_factory=Counter)
    checkpoint_records_loaded: Counter[str] = field(default_factory=Counter)
    checkpoints_discarded: Counter[str] = field(default_factory=Counter)
    last_checkpoint_seconds: float | None = None
    recovery_in_progress: bool = False
    recovery_remaining: int = 0
    last_recovery_seconds: float | None = None
    #: Rounds of the worker's once-a-second refresh (lags, Redis probe, shared clock); /healthz
    #: and scrapes also read the lags from the consumer, each time.
    lag_refreshes: int = 0
    #: Largest event-loop lag of the last :data:`LOOP_LAG_WINDOW_SECONDS` (None before the
    #: probe ran), and the largest since the process started.
    loop_lag_seconds: float | None = None
    loop_lag_max_seconds: float = 0.0
    #: Open connections of the consumer to brokers (None before the consumer started).
    kafka_connections: int | None = None

    def forget_except(self, owned: set[tuple[str, int]]) -> None:
        """Drop the positions of partitions this worker no longer owns."""
        for positions in (self.last_offset, self.partition_latest_ms, self.high_watermark,
                          self.committed):
            for tp in [tp for tp in positions if tp not in owned]:
                del positions[tp]

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """Offset after the last message applied, per (topic, partition)."""
        return {tp: offset + 1 for tp, offset in self.last_offset.items()}

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the high watermark per (topic, partition).

        The position is the later of the last processed offset + 1 and the committed
        offset (a restarted worker has processed nothing yet but starts there).
        """
        return {
            tp: max(high - max(self.last_offset.get(tp, -1) + 1, self.committed.get(tp, 0)), 0)
            for tp, high in self.high_watermark.items()
        }
