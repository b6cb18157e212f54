"""The bulk changelog loader against a real broker: what it reads, from where, to where."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from faust.types import TP

from stream_app.adapters import changelog_loader
from stream_app.adapters.changelog_loader import LOAD_BATCH_RECORDS, ChangelogLoader
from stream_app.adapters.checkpoints import Checkpoint, CheckpointFiles, digest_at, record_digest
from stream_app.adapters.kafka import client_kwargs, ensure_topics
from stream_app.config import Settings
from stream_app.ops import OperationalStats

TOPIC = "loader-test-changelog"


class _Table:
    """What the loader needs of a table: a name and ``apply_changelog_batch``."""

    name = "pulse-loader-test"

    def __init__(self) -> None:
        self.applied: list[tuple[int, int, Any, Any]] = []
        self.collector_on: set[bool] = set()

    def apply_changelog_batch(self, batch: Sequence[Any]) -> None:
        self.collector_on.add(gc.isenabled())
        self.applied.extend((r.message.partition, r.message.offset, r.key, r.value)
                            for r in batch)


def _records(partition: int, count: int) -> list[tuple[str, bytes, bytes | None]]:
    return [(TOPIC, json.dumps(f"k{partition}-{n % 7}").encode(),
             None if n == 3 else json.dumps({"v": n}).encode()) for n in range(count)]


def test_the_loader_reads_each_partition_from_where_the_table_stands_to_the_watermark(
    base_settings: Settings,
) -> None:
    settings = base_settings.model_copy(update={"partitions": 3})
    asyncio.run(ensure_topics(settings, {TOPIC: 3}))
    big = LOAD_BATCH_RECORDS * 2 + 17  # several fetches
    records = {0: _records(0, big), 1: _records(1, 12), 2: _records(2, 5)}
    for partition, items in records.items():
        # each to its partition: the default partitioner would spread the keys
        asyncio.run(_produce_to(settings, partition, items))
    table, stats = _Table(), OperationalStats()
    fresh, kept, done = TP(TOPIC, 0), TP(TOPIC, 1), TP(TOPIC, 2)
    positions: dict[TP, Any] = {fresh: None, kept: 4, done: 4}
    highwaters = {fresh: big - 1, kept: 9, done: 4}  # records after 9 came later
    loader = ChangelogLoader(settings, stats)
    asyncio.run(loader({fresh: table, kept: table, done: table}, highwaters, positions))  # type: ignore[dict-item]

    assert positions == {fresh: big - 1, kept: 9, done: 4}
    by_partition: dict[int, list[tuple[int, Any, Any]]] = {0: [], 1: [], 2: []}
    for partition, offset, key, value in table.applied:
        by_partition[partition].append((offset, key, value))
    expected_fresh = [(n, f"k0-{n % 7}", None if n == 3 else {"v": n}) for n in range(big)]
    assert by_partition[0] == expected_fresh  # from the earliest, in order, deletes as None
    assert by_partition[1] == [(n, f"k1-{n % 7}", {"v": n}) for n in range(5, 10)]
    assert by_partition[2] == []  # already at its watermark: not read
    assert stats.changelog_read_in_bulk[_Table.name] == big + 5
    # a restore allocates per record: no collector pass walks the growing table meanwhile
    assert table.collector_on == {False}
    assert gc.isenabled()
    # and what it kept is frozen: no first pass after it walks every record at once
    tracked = {id(o) for o in gc.get_objects()}
    assert not [row for row in table.applied if id(row) in tracked]


async def _produce_to(settings: Settings, partition: int,
                      items: list[tuple[str, bytes, bytes | None]]) -> None:
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        for topic, key, value in items:
            await producer.send(topic, value=value, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()



class _Store:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self._key_partition: dict[str, int] = {}


class _StoreTable:
    """A table with a store, as the loader puts a checkpoint's records straight in."""

    name = "pulse-loader-digest-test"

    def __init__(self) -> None:
        self.data = _Store()

    def apply_changelog_batch(self, batch: Sequence[Any]) -> None:
        for record in batch:
            self.data.data[record.key] = record.value
            self.data._key_partition[record.key] = record.message.partition


def test_a_checkpoint_s_digest_is_read_with_every_other_partition_paused(
    base_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checking a checkpoint reads two records of its partition; the consumer also
    assigned the others (read after, from the changelog) must not fetch and decode them
    meanwhile. Then every partition is read to its end as before."""
    topic = "loader-digest-test-changelog"
    settings = base_settings.model_copy(update={"partitions": 3})
    asyncio.run(ensure_topics(settings, {topic: 3}))
    counts = {0: 5, 1: 60, 2: 12}
    produced = {p: [(topic, json.dumps(f"k{p}-{n}").encode(), json.dumps({"v": n}).encode())
                    for n in range(count)] for p, count in counts.items()}
    for partition, items in produced.items():
        asyncio.run(_produce_to(settings, partition, items))
    first, last = produced[0][0], produced[0][-1]
    files = CheckpointFiles(tmp_path)
    files.write(Checkpoint(topic, 0, 4, 0, record_digest((0, first[1], first[2]),
                                                         (4, last[1], last[2])),
                           {f"k0-{n}": {"v": n} for n in range(5)}))
    paused_while_checked: list[set[TopicPartition]] = []

    async def noting_digest(consumer: Any, kafka_tp: Any, earliest: int, offset: int) -> Any:
        paused_while_checked.append(set(consumer.paused()))
        return await digest_at(consumer, kafka_tp, earliest, offset)

    monkeypatch.setattr(changelog_loader, "digest_at", noting_digest)
    table, stats = _StoreTable(), OperationalStats()
    tps = {p: TP(topic, p) for p in counts}
    positions: dict[TP, Any] = dict.fromkeys(tps.values())
    loader = ChangelogLoader(settings, stats, files)
    asyncio.run(loader({tp: table for tp in tps.values()},  # type: ignore[misc]
                       {tps[p]: count - 1 for p, count in counts.items()}, positions))

    assert paused_while_checked == [{TopicPartition(topic, 1), TopicPartition(topic, 2)}]
    assert stats.checkpoint_records_loaded[_StoreTable.name] == 5
    assert positions == {tps[p]: count - 1 for p, count in counts.items()}
    assert table.data.data == {f"k{p}-{n}": {"v": n} for p, count in counts.items()
                               for n in range(count)}
