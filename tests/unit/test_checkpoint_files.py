"""Checkpoint files and the batch gate, without a broker."""

from __future__ import annotations

import asyncio
import marshal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from stream_app.adapters.batch_gate import BatchGate
from stream_app.adapters.checkpointer import ChangelogPositions
from stream_app.adapters.checkpoints import FORMAT, Checkpoint, CheckpointFiles, record_digest

TOPIC = "app-pulse-deals-changelog"


def _checkpoint(partition: int = 2, offset: int = 41) -> Checkpoint:
    records = {"d\x1fdeal-1": '{"g":{"d":3},"v":{}}', "b\x1f2\x1fteam\x1f20000":
               {"g": {"d": 3}, "v": [1, 0, 0, 0, 0, 0]}}
    return Checkpoint(TOPIC, partition, offset, 0, "ab" * 32, records)


def test_a_checkpoint_reads_back_as_written(tmp_path: Path) -> None:
    files = CheckpointFiles(tmp_path)
    written = _checkpoint()
    assert files.write(written) > 0
    assert files.read(TOPIC, 2) == written
    assert files.read(TOPIC, 1) is None  # another partition: none
    assert not list(files.path(TOPIC, 2).parent.glob(".*.tmp"))  # renamed into place
    files.discard(TOPIC, 2)
    assert files.read(TOPIC, 2) is None


@pytest.mark.parametrize("body", [
    b"",  # truncated to nothing
    b"\x00garbage",
    marshal.dumps(({"format": FORMAT + 1, "topic": TOPIC, "partition": 2, "offset": 1,
                    "earliest": 0, "digest": ""}, {})),  # another format
    marshal.dumps(({"format": FORMAT, "topic": "other-changelog", "partition": 2,
                    "offset": 1, "earliest": 0, "digest": ""}, {})),  # another topic's
    marshal.dumps(({"format": FORMAT, "topic": TOPIC, "partition": 3, "offset": 1,
                    "earliest": 0, "digest": ""}, {})),  # another partition's
    marshal.dumps(["not", "a", "checkpoint"]),
])
def test_an_unusable_file_reads_as_no_checkpoint(tmp_path: Path, body: bytes) -> None:
    files = CheckpointFiles(tmp_path)
    path = files.path(TOPIC, 2)
    path.parent.mkdir(parents=True)
    path.write_bytes(body)
    assert files.read(TOPIC, 2) is None


def test_a_truncated_write_of_a_valid_file_reads_as_no_checkpoint(tmp_path: Path) -> None:
    files = CheckpointFiles(tmp_path)
    files.write(_checkpoint())
    path = files.path(TOPIC, 2)
    path.write_bytes(path.read_bytes()[:-7])
    assert files.read(TOPIC, 2) is None


@pytest.mark.parametrize("other", [
    ((0, b"k", b"v"), (9, b"k", b"w")),  # another value at the last offset
    ((0, b"k", b"v"), (8, b"k", b"v2")),  # another offset
    ((1, b"k", b"v"), (9, b"k", b"v2")),  # another earliest record
    ((0, b"kv", b""), (9, b"k", b"v2")),  # the same bytes split differently
    ((0, b"k", None), (9, b"k", b"v2")),  # a deletion instead of a value
])
def test_the_digest_tells_other_records_apart(
        other: tuple[tuple[int, bytes, bytes | None], tuple[int, bytes, bytes | None]]) -> None:
    assert record_digest((0, b"k", b"v"), (9, b"k", b"v2")) == record_digest(
        (0, b"k", b"v"), (9, b"k", b"v2"))
    assert record_digest(*other) != record_digest((0, b"k", b"v"), (9, b"k", b"v2"))


def test_the_gate_lets_batches_run_together_and_a_checkpoint_alone() -> None:
    async def scenario() -> list[str]:
        gate, seen = BatchGate(), []
        release = asyncio.Event()

        async def batch(name: str) -> None:
            async with gate.batch():
                seen.append(f"{name} in")
                await release.wait()
                seen.append(f"{name} out")

        async def checkpoint() -> None:
            async with gate.exclusive():
                seen.append("checkpoint")
                await asyncio.sleep(0.01)
                seen.append("checkpoint done")

        first, second = asyncio.create_task(batch("a")), asyncio.create_task(batch("b"))
        await asyncio.sleep(0.01)
        exclusive = asyncio.create_task(checkpoint())
        await asyncio.sleep(0.01)
        late = asyncio.create_task(batch("c"))  # arrives while the checkpoint waits
        await asyncio.sleep(0.01)
        assert seen == ["a in", "b in"]
        release.set()
        await asyncio.gather(first, second, exclusive, late)
        return seen

    seen = asyncio.run(scenario())
    assert seen[:2] == ["a in", "b in"]
    assert seen.index("checkpoint") > max(seen.index("a out"), seen.index("b out"))
    assert seen.index("c in") > seen.index("checkpoint done")


def test_a_cancelled_checkpoint_opens_the_gate_again() -> None:
    async def scenario() -> None:
        gate = BatchGate()
        release = asyncio.Event()

        async def batch() -> None:
            async with gate.batch():
                await release.wait()

        running = asyncio.create_task(batch())
        await asyncio.sleep(0)

        async def checkpoint() -> None:
            async with gate.exclusive():
                pass

        waiting = asyncio.create_task(checkpoint())
        await asyncio.sleep(0.01)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        release.set()
        await running
        await asyncio.wait_for(batch(), 1)  # a new batch is let in

    asyncio.run(scenario())


def test_changelog_positions_follow_contiguous_acknowledgements_only() -> None:
    async def scenario() -> list[int | None]:
        positions = ChangelogPositions()
        loop = asyncio.get_running_loop()
        seen: list[int | None] = [positions.last("cl", 0)]  # never restored: unknown
        positions.restored("cl", 0, 9)
        seen.append(positions.last("cl", 0))

        def ack(offset: int | None) -> None:
            future: asyncio.Future[Any] = loop.create_future()
            positions.sent("cl", 0, future, b"k", f"v{offset}".encode())
            if offset is None:
                future.set_exception(RuntimeError("not acknowledged"))
            else:
                future.set_result(SimpleNamespace(offset=offset))

        ack(10)
        ack(11)
        await asyncio.sleep(0)
        seen.append(positions.last("cl", 0))
        assert positions.record("cl", 0, 11) == (11, b"k", b"v11")
        assert positions.record("cl", 0, 10) is None  # only the latest is kept
        ack(13)  # another writer's record at 12
        await asyncio.sleep(0)
        seen.append(positions.last("cl", 0))
        positions.restored("cl", 0, 20)  # the next recovery knows again
        seen.append(positions.last("cl", 0))
        ack(None)
        await asyncio.sleep(0)
        seen.append(positions.last("cl", 0))
        positions.restored("cl", 0, 30)
        positions.forget()  # revoked: unknown until the next recovery
        seen.append(positions.last("cl", 0))
        return seen

    assert asyncio.run(scenario()) == [None, 9, 11, None, 20, None, None]


class _Store:
    """The two parts of Faust's memory store the loader writes."""

    def __init__(self, data: dict[str, Any]):
        self.data = data
        self._key_partition = dict.fromkeys(data, 0)


class _Table:
    name = "pulse-deals"

    def __init__(self, data: dict[str, Any]):
        self.data = _Store(data)
        self.through_changelog_path: list[tuple[str, Any, int, int]] = []

    def apply_changelog_batch(self, events: list[Any]) -> None:
        for event in events:
            self.through_changelog_path.append(
                (event.key, event.value, event.message.partition, event.message.offset))
            self.data.data[event.key] = event.value
            self.data._key_partition[event.key] = event.message.partition


def test_a_checkpoint_puts_new_keys_in_the_store_and_held_keys_through_the_changelog_path(
) -> None:
    from stream_app.adapters.changelog_loader import ChangelogLoader
    from stream_app.ops import OperationalStats

    held = {"d\x1fdeal-0": '{"g":{"d":9},"v":{}}'}
    table = _Table(dict(held))
    records = {f"d\x1fdeal-{i}": f'{{"g":{{"d":{i}}},"v":{{}}}}' for i in range(120_001)}
    stats = OperationalStats()
    loaded: list[tuple[Any, str, int]] = []

    def note_loaded(into: Any, keys: Any, partition: int) -> None:
        loaded.extend((into, key, partition) for key in keys)

    loader = ChangelogLoader(SimpleNamespace(), stats,  # type: ignore[arg-type]
                             on_loaded=note_loaded)
    asyncio.run(loader._apply_checkpoint(table, 3, 41, records))  # type: ignore[arg-type]
    assert table.data.data == records
    # the side books learn where the keys put straight into the store live
    assert sorted(loaded) == sorted((table, key, 3) for key in records if key not in held)
    assert table.data._key_partition == dict.fromkeys(records, 3)
    # the key the table held already is offered to the late-write filter, as a record
    # of the checkpoint's partition at the checkpoint's offset
    assert table.through_changelog_path == [("d\x1fdeal-0", records["d\x1fdeal-0"], 3, 41)]
    assert stats.changelog_applied["pulse-deals"] == 120_000
    assert stats.checkpoint_records_loaded["pulse-deals"] == 120_001
