"""Local checkpoints end to end: a SIGKILLed worker restarts from them, and a stale, a
foreign or a deleted checkpoint never makes a KPI wrong."""

from __future__ import annotations

import asyncio
import json
import marshal
import shutil
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_app.adapters.checkpoints import CheckpointFiles
from stream_app.adapters.kafka import client_kwargs, fetched_high_watermarks
from stream_app.config import Settings
from tests.integration.conftest import last_time, small_stream
from tests.integration.harness import (
    Worker,
    assert_matches,
    metric_total,
    produce,
    settled,
    worker_settings,
)
from tests.reference import expected_metrics

#: Checkpoints every second, so a short test sees several rounds.
CHECKPOINT_ENV = {"PULSE_CHECKPOINT_INTERVAL_SECONDS": "1"}
#: The worker's tables.
TABLES = ("pulse-deals", "pulse-accounts", "pulse-owners", "pulse-leads", "pulse-activities",
          "pulse-reps")


async def _ends(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for topic in topics
               for p in consumer.partitions_for_topic(topic) or ()]
        listed = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    # Tansu's ListOffsets can lag the log; a fetch at the listed end says where it ends
    ends = await fetched_high_watermarks(client_kwargs(settings), listed)
    return {(tp.topic, tp.partition): end or 0 for tp, end in ends.items()}


def _caught_up(settings: Settings, files: CheckpointFiles, timeout: float = 60.0) -> None:
    """Wait until every changelog partition holding records has a checkpoint taken at its
    last offset (the worker is idle: nothing more to write)."""
    topics = [f"{settings.app_id}-{table}-changelog" for table in TABLES]
    deadline = time.monotonic() + timeout
    behind: list[str] = []
    while time.monotonic() < deadline:
        ends = asyncio.run(_ends(settings, topics))
        behind = []
        for (topic, partition), end in sorted(ends.items()):
            checkpoint = files.read(topic, partition) if end else None
            if end and (checkpoint is None or checkpoint.offset != end - 1):
                behind.append(f"{topic}[{partition}]")
        if ends and not behind:
            return
        time.sleep(0.5)
    raise AssertionError(f"checkpoints behind their changelogs after {timeout}s: {behind}")


def _doubled(value: Any) -> Any:
    """An aggregate record (text or dict) with every count doubled; anything else as is."""
    record = json.loads(value) if isinstance(value, str) else value
    if not (isinstance(record, dict) and isinstance(record.get("v"), list)):
        return value
    forged = {**record, "v": [2 * n for n in record["v"]]}
    return json.dumps(forged) if isinstance(value, str) else forged


def _forge_foreign(path: Path) -> None:
    """Make ``path`` what another application's checkpoint of the same topic and
    partition would be: other records (every count doubled), other digest."""
    header, records = marshal.loads(path.read_bytes())
    doubled = {key: _doubled(value) for key, value in records.items()}
    assert doubled != records
    header["digest"] = "0" * 64
    path.write_bytes(marshal.dumps((header, doubled)))


def test_a_restart_loads_usable_checkpoints_and_discards_stale_foreign_and_deleted_ones(
    base_settings: Settings, tmp_path: Path
) -> None:
    events = small_stream(seed=53, months=3, per_day=8, leads=1.0)
    expected = expected_metrics(events, last_time(events))
    # open leads live in the leads' side book, which must learn of loaded records too
    assert expected[("pulse_open_leads", ())] > 0
    first, second = events[:len(events) // 2], events[len(events) // 2:]
    data_dir = tmp_path / "data"
    env = {**CHECKPOINT_ENV, "PULSE_DATA_DIR": str(data_dir)}
    settings = worker_settings(base_settings)
    worker = Worker(settings, tmp_path / "w0.log", env=env).start()
    files = CheckpointFiles(data_dir)
    try:
        produce(base_settings, first)
        settled([worker], base_settings.partitions, last_time(first))
        _caught_up(settings, files)
        early = tmp_path / "early"
        shutil.copytree(files.root, early)
        produce(base_settings, second)
        settled([worker], base_settings.partitions, last_time(events))
        _caught_up(settings, files)
        worker.kill()
    finally:
        worker.discard()

    topics = sorted(path.name for path in files.root.iterdir()
                    if all((early / path.name / f"{p}.ckpt").exists()
                           and files.path(path.name, p).exists() for p in range(4)))
    assert any(topic.endswith("pulse-deals-changelog") for topic in topics), topics
    for topic in topics:  # partition 0 kept as written, 1 stale, 2 foreign, 3 deleted
        shutil.copyfile(early / topic / "1.ckpt", files.path(topic, 1))
        _forge_foreign(files.path(topic, 2))
        files.path(topic, 3).unlink()
    restarted = Worker(worker_settings(base_settings), tmp_path / "w1.log", env=env).start()
    try:
        [samples] = settled([restarted], base_settings.partitions, last_time(events))
        assert_matches(expected, samples)
        log = restarted.log.read_text()
        for topic in topics:
            for partition in (0, 1):
                assert f"local checkpoint of {topic}[{partition}] loaded" in log, topic
            assert f"local checkpoint of {topic}[2] discarded" in log, topic
            assert f"local checkpoint of {topic}[3]" not in log, topic
        loaded = metric_total(samples, "pulse_checkpoint_records_loaded_total")
        discarded = metric_total(samples, "pulse_checkpoints_discarded_total")
        assert loaded > 0 and discarded == len(topics)
        print(f"\n{len(events)} events; restart loaded {loaded:.0f} records from "
              f"checkpoints of {len(topics)} changelogs, discarded {discarded:.0f}")
    finally:
        restarted.discard()
