"""A cold restore that reads the changelogs in bulk instead of message by message.

Faust's recovery hands each changelog record through its consumer thread, conductor
and per-message callbacks; a worker restored ~4,000 records/s that way. The loader
runs first in each recovery (see
:func:`~stream_app.adapters.faust_compat.install_changelog_loader`): a plain aiokafka
consumer, outside the group, reads each active changelog partition from its earliest
offset to the high watermark the recovery measured, in large fetches, and hands the
records to the table's own ``apply_changelog_batch`` (the same path, late-write filter
and counters as Faust's recovery). Faust then reads only what was written after that
high watermark, which is nothing unless a paused former owner wrote late.
"""

from __future__ import annotations

__all__ = ["LOAD_BATCH_RECORDS", "ChangelogLoader"]

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from json import loads
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faust.types import TP, EventT

from stream_app.adapters.checkpoints import Checkpoint, CheckpointFiles, digest_at
from stream_app.adapters.faust_compat import Table, key_partitions, store_dict
from stream_app.adapters.kafka import client_kwargs
from stream_app.adapters.loop_watch import collector_paused
from stream_app.config import Settings
from stream_app.ops import OperationalStats

log = logging.getLogger(__name__)

#: Records applied between two yields to the event loop (~20-40 ms of work).
LOAD_BATCH_RECORDS = 2_000
#: Records of a checkpoint put straight into a table between two yields (~10 ms).
_DIRECT_SLICE_RECORDS = 50_000
#: How long one fetch waits for records before the loader checks where it stands.
_FETCH_WAIT_MS = 500
_FETCH_BYTES = 64 * 1024 * 1024
_PARTITION_FETCH_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _ChangelogRecord:
    """What a table's ``apply_changelog_batch`` reads of a Faust event: the decoded key
    and value, and the message (partition, offset, raw value: None deletes the key)."""

    key: Any
    value: Any
    message: Any


@dataclass(frozen=True, slots=True)
class _CheckpointMessage:
    """The message of a record loaded from a checkpoint taken at ``offset``."""

    partition: int
    offset: int
    value: bytes = b""


def _decode(message: ConsumerRecord[bytes, bytes]) -> _ChangelogRecord:
    key = loads(message.key) if message.key is not None else None
    value = loads(message.value) if message.value is not None else None
    return _ChangelogRecord(key, value, message)


class ChangelogLoader:
    """Reads active changelog partitions into their tables; the worker's
    :data:`~stream_app.adapters.faust_compat.ChangelogLoader`."""

    def __init__(self, settings: Settings, stats: OperationalStats,
                 checkpoints: CheckpointFiles | None = None,
                 on_loaded: Callable[[Table, Collection[str], int], None] | None = None):
        """``on_loaded(table, keys, partition)`` learns of the keys a checkpoint put
        straight into a table (the changelog path's per-record hooks do not see them)."""
        self._settings = settings
        self._stats = stats
        self._checkpoints = checkpoints
        self._on_loaded = on_loaded

    async def __call__(self, tables: Mapping[TP, Table], highwaters: Mapping[TP, int],
                       positions: MutableMapping[TP, Any]) -> None:
        """Apply each partition's records after ``positions[tp]`` up to
        ``highwaters[tp]``, moving ``positions[tp]`` to the last offset applied as it
        goes.

        A partition this worker kept through the rebalance still has the position its
        last recovery (or this loader, if a rebalance cut it short) reached, and its
        state in memory holds every record up to there: only the records after it are
        read. Any other partition starts from its local checkpoint if it has a usable
        one (:mod:`stream_app.adapters.checkpoints`), else from its earliest offset.
        The cyclic collector is paused meanwhile, and what the load kept frozen after it
        (:func:`collector_paused`).
        """
        with collector_paused(keep=True):
            await self._load(tables, highwaters, positions)

    async def _load(self, tables: Mapping[TP, Table], highwaters: Mapping[TP, int],
                    positions: MutableMapping[TP, Any]) -> None:
        starts: dict[TP, int] = {}
        for tp in tables:
            start = positions.get(tp)
            starts[tp] = -1 if start is None else int(start)
            positions[tp] = starts[tp]
        candidates = {tp: last for tp, last in highwaters.items() if last > starts[tp]}
        if not candidates:
            return
        started = time.monotonic()
        consumer = AIOKafkaConsumer(
            enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_bytes=_FETCH_BYTES, max_partition_fetch_bytes=_PARTITION_FETCH_BYTES,
            **client_kwargs(self._settings))
        try:
            await consumer.start()
            kafka_tps = {tp: TopicPartition(tp.topic, tp.partition) for tp in candidates}
            consumer.assign(list(kafka_tps.values()))
            # none fetched but what is read: a checkpoint's digest resumes its partition,
            # the read after the checkpoints those it reads
            consumer.pause(*kafka_tps.values())
            for tp, last in candidates.items():
                if starts[tp] < 0 and self._checkpoints is not None:
                    loaded = await self._load_checkpoint(
                        self._checkpoints, consumer, tables[tp], tp, kafka_tps[tp], last)
                    if loaded is not None:
                        starts[tp] = positions[tp] = loaded
            wanted = {tp: last for tp, last in candidates.items() if last > starts[tp]}
            applied = await self._read(consumer, tables, wanted, kafka_tps, starts, positions)
        finally:
            await consumer.stop()
        seconds = time.monotonic() - started
        log.info("changelogs read in bulk: %d records of %d partitions in %.1fs (%.0f/s)",
                 applied, len(wanted), seconds, applied / seconds if seconds else 0.0)

    async def _load_checkpoint(self, files: CheckpointFiles, consumer: AIOKafkaConsumer,
                               table: Table, tp: TP, kafka_tp: TopicPartition, last: int
                               ) -> int | None:
        """Apply the partition's checkpoint if the changelog still holds the records it
        was taken at; returns its offset, or None (no usable checkpoint: it is removed)."""
        checkpoint = await asyncio.to_thread(files.read, tp.topic, tp.partition)
        if checkpoint is None:
            return None
        if checkpoint.offset > last:
            reason = (f"it was taken at offset {checkpoint.offset}, past the changelog's "
                      f"last offset {last}")
        elif await self._digest(consumer, kafka_tp, checkpoint) != checkpoint.digest:
            reason = (f"the changelog no longer holds the records at offsets "
                      f"{checkpoint.earliest} and {checkpoint.offset} it was taken at "
                      "(deleted, recreated or truncated, or another application's)")
        else:
            reason = ""
        if reason:
            log.warning("local checkpoint of %s[%d] discarded: %s; restoring from the "
                        "changelog", tp.topic, tp.partition, reason)
            self._stats.checkpoints_discarded[table.name] += 1
            await asyncio.to_thread(files.discard, tp.topic, tp.partition)
            return None
        await self._apply_checkpoint(table, tp.partition, checkpoint.offset, checkpoint.records)
        log.info("local checkpoint of %s[%d] loaded: %d records up to offset %d",
                 tp.topic, tp.partition, len(checkpoint.records), checkpoint.offset)
        return checkpoint.offset

    @staticmethod
    async def _digest(consumer: AIOKafkaConsumer, kafka_tp: TopicPartition,
                      checkpoint: Checkpoint) -> str | None:
        """:func:`digest_at` of the records a checkpoint names, its partition alone
        fetched (the loader's others stay paused)."""
        consumer.resume(kafka_tp)
        try:
            return await digest_at(consumer, kafka_tp, checkpoint.earliest, checkpoint.offset)
        finally:
            consumer.pause(kafka_tp)

    async def _apply_checkpoint(self, table: Table, partition: int, offset: int,
                                records: Mapping[Any, Any]) -> None:
        """Put a checkpoint's records into the table.

        A key the table does not hold yet (every key, in a cold start) goes straight
        into the store's dict and its key-partition map, slices at a time, and is
        handed to ``on_loaded``: through the changelog path it could only be applied,
        and that path's per-record work (the late-write filter against nothing, the
        index, which the recovery's end rebuilds from the whole table anyway) took
        three quarters of a restart's load. A key the table holds already takes the
        changelog path, late-write filter included.
        """
        data, partitions = store_dict(table), key_partitions(table)
        items = list(records.items())
        held: list[_ChangelogRecord] = []
        message = _CheckpointMessage(partition, offset)
        for begin in range(0, len(items), _DIRECT_SLICE_RECORDS):
            fresh = dict(items[begin:begin + _DIRECT_SLICE_RECORDS])
            if not data.keys().isdisjoint(fresh):
                for key in [key for key in fresh if key in data]:
                    held.append(_ChangelogRecord(key, fresh.pop(key), message))
            data.update(fresh)
            partitions.update(dict.fromkeys(fresh, partition))
            if self._on_loaded is not None:
                self._on_loaded(table, fresh.keys(), partition)
            self._stats.changelog_applied[table.name] += len(fresh)
            await asyncio.sleep(0)
        for begin in range(0, len(held), LOAD_BATCH_RECORDS):
            table.apply_changelog_batch(
                cast(Sequence[EventT[Any]], held[begin:begin + LOAD_BATCH_RECORDS]))
            await asyncio.sleep(0)
        self._stats.checkpoint_records_loaded[table.name] += len(items)

    async def _read(self, consumer: AIOKafkaConsumer, tables: Mapping[TP, Table],
                    wanted: Mapping[TP, int], kafka_tps: Mapping[TP, TopicPartition],
                    starts: Mapping[TP, int], positions: MutableMapping[TP, Any]) -> int:
        for tp in wanted:
            kafka_tp = kafka_tps[tp]
            if starts[tp] < 0:
                await consumer.seek_to_beginning(kafka_tp)
            else:
                consumer.seek(kafka_tp, starts[tp] + 1)
        consumer.resume(*(kafka_tps[tp] for tp in wanted))  # the others stay paused
        remaining = dict(wanted)
        applied = 0
        while remaining:
            fetched = await consumer.getmany(*(kafka_tps[tp] for tp in remaining),
                                             timeout_ms=_FETCH_WAIT_MS,
                                             max_records=LOAD_BATCH_RECORDS)
            for kafka_tp, messages in fetched.items():
                tp = TP(kafka_tp.topic, kafka_tp.partition)
                if tp not in remaining:
                    continue
                last = remaining[tp]
                records = [_decode(m) for m in messages if m.offset <= last]
                if records:
                    tables[tp].apply_changelog_batch(
                        cast(Sequence[EventT[Any]], records))
                    positions[tp] = records[-1].message.offset
                    applied += len(records)
                    self._stats.changelog_read_in_bulk[tables[tp].name] += len(records)
            for tp in list(remaining):
                if await consumer.position(kafka_tps[tp]) > remaining[tp]:
                    positions[tp] = remaining.pop(tp)
                    consumer.pause(kafka_tps[tp])
            await asyncio.sleep(0)
        return applied
