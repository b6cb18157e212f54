"""Writes the local checkpoints of the table partitions a worker exports (see
:mod:`stream_app.adapters.checkpoints` for what a checkpoint holds and why it is exact)."""

from __future__ import annotations

__all__ = ["ChangelogPositions", "Checkpointer"]

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_app.adapters.batch_gate import BatchGate
from stream_app.adapters.checkpoints import (
    Checkpoint,
    CheckpointFiles,
    Record,
    read_record,
    record_digest,
)
from stream_app.adapters.faust_compat import Table, key_partitions, store_dict
from stream_app.adapters.kafka import OutsideConsumer
from stream_app.config import Settings
from stream_app.ops import OperationalStats

log = logging.getLogger(__name__)


class ChangelogPositions:
    """Per changelog partition, the last offset up to which the table in memory reflects
    every record: the offset its recovery reached, then each record this worker wrote,
    as the broker acknowledges them. A record acknowledged at any other offset than the
    next (another writer got in between: a paused former owner, say) or not at all makes
    the partition unknown until its next recovery, and it gets no checkpoint."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}
        self._unknown: set[tuple[str, int]] = set()
        self._latest: dict[tuple[str, int], Record] = {}

    def forget(self) -> None:
        """Partitions were revoked: nothing is known until the next recovery."""
        self._next.clear()
        self._unknown.clear()
        self._latest.clear()

    def restored(self, topic: str, partition: int, last: int) -> None:
        """A recovery left ``topic[partition]`` holding every record up to ``last``."""
        self._next[(topic, partition)] = last + 1
        self._unknown.discard((topic, partition))

    def sent(self, topic: str, partition: int, acknowledged: Any, key: bytes,
             value: bytes) -> None:
        """Follow a record sent to ``topic[partition]`` (``acknowledged``: the producer's
        future of its metadata)."""
        acknowledged.add_done_callback(
            partial(self._acknowledged, (topic, partition), key, value))

    def _acknowledged(self, where: tuple[str, int], key: bytes, value: bytes,
                      future: Any) -> None:
        if future.cancelled() or future.exception() is not None:
            self._unknown.add(where)
            return
        offset = future.result().offset
        if self._next.get(where) != offset:
            self._unknown.add(where)
        self._next[where] = offset + 1
        self._latest[where] = (offset, key, value)

    def record(self, topic: str, partition: int, offset: int) -> Record | None:
        """The record this worker wrote at ``offset``, if it is the latest it wrote."""
        latest = self._latest.get((topic, partition))
        return latest if latest is not None and latest[0] == offset else None

    def last(self, topic: str, partition: int) -> int | None:
        """The last offset the table in memory is known to reflect; None if unknown."""
        where = (topic, partition)
        if where in self._unknown or where not in self._next:
            return None
        return self._next[where] - 1


def _split(data: Mapping[Any, Any], owners: Mapping[Any, int],
           partitions: frozenset[int]) -> dict[int, dict[Any, Any]]:
    """The records of ``data`` by the partition each key was last written to."""
    split: dict[int, dict[Any, Any]] = {partition: {} for partition in partitions}
    for key, partition in owners.items():
        records = split.get(partition)
        if records is not None and key in data:
            records[key] = data[key]
    return split


class Checkpointer:
    """Copies the tables with no batch running and the producer flushed, then writes one
    checkpoint per table and exported partition (off the event loop)."""

    def __init__(self, settings: Settings, files: CheckpointFiles, gate: BatchGate,
                 positions: ChangelogPositions, stats: OperationalStats):
        self._settings = settings
        self._files = files
        self._gate = gate
        self._positions = positions
        self._stats = stats
        self._consumer = OutsideConsumer(settings)
        #: The offset of the last checkpoint written, per (table, partition).
        self._written: dict[tuple[str, int], int] = {}
        self._earliest: dict[TopicPartition, Record] = {}

    async def write(self, exported: Sequence[tuple[Table, frozenset[int]]],
                    producer: Any) -> int:
        """Checkpoint each table's exported partitions that changed since their last
        checkpoint; returns the checkpoints written."""
        started = time.monotonic()
        tables = [table for table, _ in exported]
        kafka_tps = {(table.name, partition): TopicPartition(
            table.changelog_topic.get_topic_name(), partition)
            for table, partitions in exported for partition in partitions}
        async with self._gate.exclusive():
            await producer.flush()
            lasts = {key: self._positions.last(kafka_tp.topic, kafka_tp.partition)
                     for key, kafka_tp in kafka_tps.items()}
            due = {key: last for key, last in lasts.items()
                   if last is not None and last >= 0 and self._written.get(key) != last}
            names = {name for name, _ in due}
            copies = [(table, dict(store_dict(table)), dict(key_partitions(table)))
                      for table in tables if table.name in names]
        written = 0
        if due:
            consumer = await self._consumer.started()
            consumer.assign([kafka_tps[key] for key in due])
            starts = await consumer.beginning_offsets([kafka_tps[key] for key in due])
            for table, data, owners in copies:
                mine = frozenset(partition for name, partition in due if name == table.name)
                split = await asyncio.to_thread(_split, data, owners, mine)
                del data, owners
                for partition in sorted(mine):
                    key = (table.name, partition)
                    written += await self._write_one(consumer, kafka_tps[key],
                                                     starts[kafka_tps[key]], due[key],
                                                     split.pop(partition), table.name)
                    self._written[key] = due[key]
        self._stats.last_checkpoint_seconds = time.monotonic() - started
        return written

    async def _write_one(self, consumer: AIOKafkaConsumer, kafka_tp: TopicPartition,
                         earliest: int, last: int, records: dict[Any, Any], table: str
                         ) -> int:
        first = self._earliest.get(kafka_tp)
        if first is None or first[0] != earliest:
            first = await read_record(consumer, kafka_tp, earliest)
            if first is not None:
                self._earliest[kafka_tp] = first
        latest = (self._positions.record(kafka_tp.topic, kafka_tp.partition, last)
                  or await read_record(consumer, kafka_tp, last))
        if first is None or latest is None:
            log.warning("no checkpoint of %s[%d]: its records at offsets %d and %d could "
                        "not be read", kafka_tp.topic, kafka_tp.partition, earliest, last)
            return 0
        if not records:  # a partition with records holds at least its position marks
            log.warning("no checkpoint of %s[%d]: no record of it in memory although its "
                        "changelog reaches offset %d", kafka_tp.topic, kafka_tp.partition,
                        last)
            return 0
        checkpoint = Checkpoint(kafka_tp.topic, kafka_tp.partition, last, earliest,
                                record_digest(first, latest), records)
        await asyncio.to_thread(self._files.write, checkpoint)
        self._stats.checkpoints_written[table] += 1
        return 1

    async def close(self) -> None:
        """Stop the consumer (the worker is stopping)."""
        await self._consumer.close()
