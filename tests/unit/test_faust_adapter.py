"""Worker parts that need no broker: a batch handler runs to its end when the agent
is cancelled mid-batch (worker stop); the per-cell sums a scrape reads are kept up to
date from the keys written and equal a fresh sum of the table at every read."""

from __future__ import annotations

import asyncio
import gc
import json
import random
import threading
from typing import Any

import pytest

from stream_app.adapters import aggregate_index as aggregate_index_module
from stream_app.adapters import faust_app
from stream_app.adapters.aggregate_index import AggregateIndex
from stream_app.adapters.faust_app import finish_batch
from stream_app.adapters.source_reader import SourceReadError
from stream_app.kpi.accounts import NEW_CUSTOMER_CHURN
from stream_app.kpi.fold import aggregate_key, clock_key, entity_key, position_key
from stream_app.kpi.snapshot import snapshot_from_aggregates


async def _cancel_midway(handler_steps: list[str], step_seconds: float,
                         grace_seconds: float) -> asyncio.Task[None]:
    async def handler() -> None:
        for step in ("aggregates", "entities", "marks"):
            await asyncio.sleep(step_seconds)
            handler_steps.append(step)

    agent = asyncio.ensure_future(finish_batch(handler(), grace_seconds=grace_seconds))
    await asyncio.sleep(step_seconds * 1.5)
    agent.cancel()
    with pytest.raises(asyncio.CancelledError):
        await agent
    return agent


async def test_a_cancelled_batch_still_writes_everything_before_the_cancel_goes_on() -> None:
    steps: list[str] = []
    agent = await _cancel_midway(steps, step_seconds=0.02, grace_seconds=5)
    assert steps == ["aggregates", "entities", "marks"]
    assert agent.cancelled()


async def test_a_batch_that_cannot_finish_in_time_ends_the_process_before_the_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exits: list[str] = []
    monkeypatch.setattr(faust_app, "_exit_now", exits.append)
    steps: list[str] = []
    await _cancel_midway(steps, step_seconds=0.2, grace_seconds=0.05)
    assert len(exits) == 1 and "could not finish" in exits[0]
    assert steps == ["aggregates"]


async def test_a_batch_whose_skipped_messages_cannot_be_read_ends_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exits: list[tuple[str, ...]] = []
    monkeypatch.setattr(faust_app, "_exit_now", lambda *why: exits.append(why))

    async def handler() -> None:
        raise SourceReadError("could not read crm.quotas[1] offsets 7-9 again")

    with pytest.raises(SourceReadError):
        await finish_batch(handler())
    assert len(exits) == 1 and "crm.quotas[1] offsets 7-9" in exits[0][0]
    assert "before committing" in exits[0][0]


async def test_a_failing_batch_raises_its_own_error() -> None:
    async def handler() -> None:
        raise faust_app.StateLostError("changelog truncated")

    with pytest.raises(faust_app.StateLostError, match="truncated"):
        await finish_batch(handler())


async def test_an_uncancelled_batch_just_runs() -> None:
    done: list[int] = []

    async def handler() -> None:
        await asyncio.sleep(0)
        done.append(1)

    await finish_batch(handler())
    assert done == [1]


class _Table:
    """The part of a Faust table the aggregate index reads."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def keys(self) -> list[str]:
        return list(self.data)


def _random_write(rng: random.Random, table: _Table, clocks: dict[int, int]) -> str:
    partition = rng.randrange(4)
    roll = rng.random()
    if roll < 0.1:
        clocks[partition] = clocks.get(partition, 0) + rng.randrange(0, 3)
        key, value = clock_key(partition), clocks[partition]
    elif roll < 0.15:
        key, value = position_key(partition, "crm.deals"), rng.randrange(100)
    elif roll < 0.2:
        key, value = entity_key("d", f"deal-{rng.randrange(9)}"), {"id": 1}
    else:
        kind = rng.choice("bvzn")
        key = aggregate_key(kind, partition, rng.choice(["A", "B", "C"]), str(rng.randrange(5)))
        width = 2 if kind in "bvz" else 1
        value = [rng.randrange(-3, 9) for _ in range(width)]
    table.data[key] = {"g": {"d": rng.randrange(100)}, "v": value}
    return key


def _keep_all(label: str, value: str) -> bool:
    return True


@pytest.mark.parametrize("primed", [False, True], ids=["rebuilt", "primed"])
@pytest.mark.parametrize("seed", range(10))
def test_kept_sums_equal_a_fresh_sum_after_any_writes_and_reassignments(
    seed: int, primed: bool,
) -> None:
    """Writes, reassignments and recoveries; a primed recovery sums the partitions the
    worker is about to export (or, 3 times in 10, ones it then does not export) before
    the writes that follow it and the reads."""
    rng = random.Random(seed)
    table, clocks = _Table(), {}
    index = AggregateIndex(table)  # type: ignore[arg-type]
    partitions = frozenset({0, 1})
    compared = 0
    for step in range(600):
        roll = rng.random()
        if roll < 0.03:
            partitions = frozenset(p for p in range(4) if rng.random() < 0.6)
        elif roll < 0.07:
            asyncio.run(index.rebuild())
            if primed:
                guess = partitions if rng.random() < 0.7 else frozenset({rng.randrange(4)})
                asyncio.run(index.prime(guess, _keep_all, lambda: 0))
        elif roll < 0.15:
            pass  # nothing written: the next read may reuse the last snapshot
        else:
            index.add([_random_write(rng, table, clocks)])
        if step % 6 == 0:
            fresh = snapshot_from_aggregates(table.data.items(), partitions, _keep_all)
            assert index.snapshot(partitions, _keep_all, 0) == fresh
            compared += 1
    assert compared > 90


class _WritingWhileRead(dict[str, Any]):
    """A store in which folds write (and note) keys right after the priming thread read
    one: the key it read and a new one."""

    def __init__(self, index: AggregateIndex, writes: list[tuple[str, list[int]]]):
        super().__init__()
        self.index, self.writes = index, writes

    def get(self, key: str, default: Any = None) -> Any:
        found = super().get(key, default)
        while self.writes:
            written, value = self.writes.pop()
            self[written] = {"g": {}, "v": value}
            self.index.add([written])
        return found


def test_writes_made_while_a_priming_runs_are_summed_when_it_is_adopted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = _Table()
    index = AggregateIndex(table)  # type: ignore[arg-type]
    kept, new = aggregate_key("b", 0, "A", "1"), aggregate_key("b", 1, "B", "2")
    store = _WritingWhileRead(index, [(new, [4, 1]), (kept, [7, 0])])
    store[kept] = {"g": {}, "v": [1, 0]}
    table.data = store
    asyncio.run(index.rebuild())
    asyncio.run(index.prime(frozenset({0, 1}), _keep_all, lambda: 0))
    built: list[int] = []
    monkeypatch.setattr(aggregate_index_module, "snapshot_from_cells",
                        lambda *args: built.append(1))  # the adopted snapshot is moved
    assert index.snapshot(frozenset({0, 1}), _keep_all, 0).buckets == {
        ("A", 1): [7, 0], ("B", 2): [4, 1]}
    assert built == []


def test_a_priming_whose_label_verdicts_moved_while_it_built_builds_again_in_its_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another table's recovery admits labels (moving the verdicts' version) while this
    one's priming builds its snapshot: the priming builds it again, so the first scrape
    adopts it instead of building it on the event loop."""
    table = _Table()
    index = AggregateIndex(table)  # type: ignore[arg-type]
    table.data[aggregate_key("b", 0, "A", "1")] = {"g": {}, "v": [1, 0]}
    version = [0]

    def keep_admitting(label: str, value: str) -> bool:
        version[0] = max(version[0], 1)  # the first build sees an admission meanwhile
        return True

    asyncio.run(index.rebuild())
    asyncio.run(index.prime(frozenset({0}), keep_admitting, lambda: version[0]))
    built: list[int] = []
    monkeypatch.setattr(aggregate_index_module, "snapshot_from_cells",
                        lambda *args: built.append(1))
    assert index.snapshot(frozenset({0}), keep_admitting, version[0]).buckets == {
        ("A", 1): [1, 0]}
    assert built == []


def test_aggregates_kept_as_text_and_as_dicts_by_an_older_worker_sum_alike() -> None:
    """A table restored from an older changelog holds some aggregates as dicts; a write
    replaces one with text, and the sum moves by the difference."""
    table = _Table()
    index = AggregateIndex(table)  # type: ignore[arg-type]
    older, newer = aggregate_key("b", 0, "A", "1"), aggregate_key("b", 1, "A", "1")
    table.data[older] = {"g": {"d": 3}, "v": [2, 1]}
    table.data[newer] = '{"g":{"d":5},"v":[4,0]}'
    index.add([older, newer])
    assert index.snapshot(frozenset({0, 1}), _keep_all, 0).buckets == {("A", 1): [6, 1]}
    table.data[older] = '{"g":{"d":4},"v":[3,1]}'
    index.add([older])
    assert index.snapshot(frozenset({0, 1}), _keep_all, 0).buckets == {("A", 1): [7, 1]}


def test_the_index_names_each_owner_and_day_once_however_many_keys_name_them() -> None:
    table = _Table()
    index = AggregateIndex(table)  # type: ignore[arg-type]
    keys = [aggregate_key("b", partition, "owner-7", "20512") for partition in (0, 1)]
    index.add(keys)
    first, second = (index.keys[key] for key in keys)
    assert first[2] is second[2] and first[3] is second[3]


def _one_bucket() -> tuple[_Table, Any, str]:
    """A table with one (team A, day 1) bucket, noted and read once."""
    table = _Table()
    index = AggregateIndex(table)  # type: ignore[arg-type]
    key = aggregate_key("b", 0, "A", "1")
    table.data[key] = {"g": {}, "v": [1, 0]}
    index.add([key])
    assert index.snapshot(frozenset({0}), _keep_all, 0).buckets == {("A", 1): [1, 0]}
    return table, index, key


def test_keys_written_and_snapshots_read_while_a_rebuild_indexes_count_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rebuild parses the table's keys in a thread; the loop may note a write and
    read a snapshot (of the keys noted so far) meanwhile: after it, both the restored
    keys and the new one are summed."""
    table, index, _ = _one_bucket()
    parsing, release = threading.Event(), threading.Event()
    aggregate_keys = aggregate_index_module._aggregate_keys

    def held(keys: Any) -> Any:
        parsing.set()
        release.wait(5)
        return aggregate_keys(keys)

    monkeypatch.setattr(aggregate_index_module, "_aggregate_keys", held)
    new = aggregate_key("b", 0, "B", "2")

    async def recover() -> None:
        rebuilding = asyncio.ensure_future(index.rebuild())
        while not parsing.is_set():
            await asyncio.sleep(0.001)
        table.data[new] = {"g": {}, "v": [4, 1]}
        index.add([new])
        assert index.snapshot(frozenset({0}), _keep_all, 0).buckets == {("B", 2): [4, 1]}
        release.set()
        await rebuilding

    asyncio.run(recover())
    assert index.snapshot(frozenset({0}), _keep_all, 0).buckets == {
        ("A", 1): [1, 0], ("B", 2): [4, 1]}


def test_a_recovery_indexes_and_sums_its_table_with_the_collector_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both allocate per key of the whole table (millions after a restart): a collector
    pass every few thousand objects would walk the growing heap again and again."""
    _, index, _ = _one_bucket()
    seen: list[tuple[str, bool]] = []
    aggregate_keys, sum_cells = (aggregate_index_module._aggregate_keys,
                                 aggregate_index_module._sum_cells)

    def noting_index(keys: Any) -> Any:
        seen.append(("index", gc.isenabled()))
        return aggregate_keys(keys)

    def noting_sum(*args: Any) -> Any:
        seen.append(("sums", gc.isenabled()))
        return sum_cells(*args)

    monkeypatch.setattr(aggregate_index_module, "_aggregate_keys", noting_index)
    monkeypatch.setattr(aggregate_index_module, "_sum_cells", noting_sum)
    asyncio.run(index.rebuild())
    asyncio.run(index.prime(frozenset({0}), _keep_all, lambda: 0))
    assert seen == [("index", False), ("sums", False)]
    assert gc.isenabled()
    assert index.snapshot(frozenset({0}), _keep_all, 0).buckets == {("A", 1): [1, 0]}


def test_a_write_is_summed_at_the_next_read_only_once_its_key_is_noted() -> None:
    table, index, key = _one_bucket()
    table.data[key] = {"g": {}, "v": [5, 0]}
    assert index.snapshot(frozenset({0}), _keep_all, 0).buckets == {("A", 1): [1, 0]}
    index.add([key, entity_key("d", "deal-1")])
    assert index.snapshot(frozenset({0}), _keep_all, 0).buckets == {("A", 1): [5, 0]}
    assert index.snapshot(frozenset({1}), _keep_all, 0).buckets == {}


def test_a_changed_label_verdict_rebuilds_an_unchanged_snapshot() -> None:
    _, index, _ = _one_bucket()

    def fold_a(label: str, value: str) -> bool:
        return value != "A"

    assert index.snapshot(frozenset({0}), fold_a, 0).buckets == {("A", 1): [1, 0]}
    assert index.snapshot(frozenset({0}), fold_a, 1).buckets == {("(other)", 1): [1, 0]}


class _ChangelogTable:
    """The parts of a Faust table the changelog hook touches; applies like Faust's store."""

    name = "pulse-deals"

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def apply_changelog_batch(self, batch: list[Any]) -> None:
        for event in batch:
            self.data[event.key] = event.value


def _record(key: str, value: Any, partition: int = 0) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(key=key, value=value,
                           message=SimpleNamespace(partition=partition))


def test_a_late_changelog_write_of_an_older_state_is_not_restored() -> None:
    from types import SimpleNamespace

    from stream_app.ops import OperationalStats

    table, noted = _ChangelogTable(), []
    pipeline = SimpleNamespace(table=table, index=SimpleNamespace(add=noted.extend), book=None)
    worker = SimpleNamespace(_stats=OperationalStats())
    faust_app.PulseWorker._watch_changelog_records(worker, pipeline)  # type: ignore[arg-type]
    deal, agg, mark = entity_key("d", "D1"), aggregate_key("b", 0, "T", 20_000), \
        position_key(0, "crm.deals")
    newer = '{"g":{"crm.deals":9},"v":{"n":2}}'
    table.apply_changelog_batch([
        _record(deal, '{"g":{"crm.deals":5},"v":{"n":1}}'),
        _record(deal, newer),
        _record(agg, {"g": {"crm.deals": 9}, "v": [2]}),
        _record(mark, {"v": 9}),
    ])
    table.apply_changelog_batch([
        _record(deal, '{"g":{"crm.deals":5},"v":{"n":1}}'),
        _record(agg, {"g": {"crm.deals": 4}, "v": [1]}),
        _record(mark, {"v": 4}),
    ])
    assert table.data == {deal: newer, agg: {"g": {"crm.deals": 9}, "v": [2]},
                          mark: {"v": 9}}
    assert worker._stats.changelog_dropped == {"pulse-deals": 3}
    assert worker._stats.changelog_applied == {"pulse-deals": 7}
    assert agg in noted and noted.count(agg) == 1


_WIDTHS = {"b": 6, "s": 5, "z": 3, "v": 3, "o": 2, "j": 2, "n": 1, "c": 1, "m": 1, "l": 1,
           "y": 1, "f": 15, "w": 2, "k": 4, "r": 4, "u": 4, "e": 3, "h": 2, "i": 1}


def _random_kpi_write(rng: random.Random, table: _Table, day: int) -> str:
    """A write of an aggregate of any kind near ``day``."""
    partition = rng.randrange(4)
    kind = rng.choice("bbssoo" + "".join(_WIDTHS) + "a")
    at = rng.randrange(day - 12, day + 3)
    group = rng.choice(["A", "B", "all"])
    value = [rng.randrange(-2, 9) for _ in range(_WIDTHS.get(kind, 2))]
    if kind in "of":
        part = f"{at}:{rng.choice('PN')}"
    elif kind == "w":
        part = f"{at}:{rng.choice(['created', 'won'])}"
    elif kind == "j":
        part = rng.choice("PN")
    elif kind == "a":
        part = f"1970-01|{'X' if group == 'A' else 'Y'}"  # one team per owner and period
        value = [rng.randrange(100), rng.randrange(2)]
    elif kind == "y":
        part = "1970-01"
    elif kind == "i":
        part = json.dumps([f"Rep {group}", "X" if group == "A" else None])  # one profile
        value = [rng.randrange(2)]
    elif kind == "c":
        group = rng.choice(["churn", NEW_CUSTOMER_CHURN])
        part = str(at)
    else:
        part = str(at)
    key = aggregate_key(kind, partition, group, part)
    table.data[key] = {"g": {}, "v": value}
    return key


@pytest.mark.parametrize("seed", range(8))
def test_reports_of_the_kept_snapshot_equal_reports_of_a_fresh_one(seed: int) -> None:
    """The snapshot moved in place by the changed cells, the window sums its day cells
    keep and the report parts kept while their fields did not change give the report a
    snapshot summed from scratch gives, at any T."""
    from decimal import Decimal

    from stream_app.kpi.live import ReportReuse
    from stream_app.kpi.report import ReportConfig, build_report
    from stream_app.kpi.windows import window_specs

    config = ReportConfig(window_specs((3, 7)), ("P", "N"),
                          {"P": Decimal("0.2"), "N": Decimal("0.5")})
    rng = random.Random(seed)
    table = _Table()
    index = AggregateIndex(table)  # type: ignore[arg-type]
    reports = ReportReuse(config)
    partitions, folded, version, day = frozenset({0, 1, 2}), {"B"}, 0, 20

    def keep(label: str, value: str) -> bool:
        return value not in folded

    compared = 0
    for step in range(400):
        roll = rng.random()
        if roll < 0.02:
            partitions = frozenset(p for p in range(4) if rng.random() < 0.7)
        elif roll < 0.04:
            folded, version = {rng.choice(["A", "B", "C"])}, version + 1
        elif roll < 0.15:
            day += rng.choice([1, 1, 2, 9, -3])
        else:
            index.add([_random_kpi_write(rng, table, day)])
        if step % 4 == 0:
            as_of = day * 86_400_000 + 1
            fresh = snapshot_from_aggregates(table.data.items(), partitions, keep)
            kept = index.snapshot(partitions, keep, version)
            assert kept == fresh
            assert reports.report(index.version, kept, as_of) == build_report(
                fresh, as_of, config)
            compared += 1
    assert compared == 100


def test_healthz_reports_the_lag_the_consumer_knows_now_not_at_the_last_tick(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lag came from high watermarks copied once a second, and none was known until
    the first copy after the first fetch: a worker that had read most of a backlog in
    that second still reported all of it (the SIGKILL test's kills then came late)."""
    from faust.types import TP

    from stream_app.config import Settings

    for patch in ("install_high_watermark_fix", "install_recovery_generation",
                  "install_fetch_max_wait", "install_changelog_loader"):
        monkeypatch.setattr(faust_app, patch, lambda *args: None)  # Faust stays unpatched
    worker = faust_app.PulseWorker(Settings(kafka_bootstrap="127.0.0.1:1",
                                            redis_url="redis://127.0.0.1:1/0"))
    deals = [TP(worker.settings.topic_deals, p) for p in range(2)]
    changelog = TP("pulse-pulse-deals-changelog", 0)
    highs = {deals[0]: 120, deals[1]: 40, changelog: 999}
    monkeypatch.setattr(faust_app, "assigned_actives", lambda app: {*deals, changelog})
    monkeypatch.setattr(faust_app, "committed_offset", lambda app, tp: 10)
    monkeypatch.setattr(worker.app.consumer, "highwater", highs.get)
    worker.stats().last_offset[(deals[0].topic, 0)] = 99
    lags = {(row["topic"], row["partition"]): row["messages"]
            for row in worker.health()["lag"]}
    assert lags == {(deals[0].topic, 0): 20, (deals[1].topic, 1): 30}
    highs[deals[0]] = 150
    worker.stats().last_offset[(deals[0].topic, 0)] = 139
    assert {row["partition"]: row["messages"] for row in worker.health()["lag"]} == {
        0: 10, 1: 30}


def test_a_recovery_ending_after_its_assignment_was_revoked_does_not_export(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust finished a recovery after the next rebalance had revoked its partitions
    (and dropped their keys) but before the new assignment: nothing marked it stale, so
    the worker exported the dropped state (a worker's created deals fell 715 -> 407 in the
    three-worker replacement test, with a 0.1 s fetch wait)."""
    from stream_app.config import Settings

    for patch in ("install_high_watermark_fix", "install_recovery_generation",
                  "install_fetch_max_wait", "install_changelog_loader"):
        monkeypatch.setattr(faust_app, patch, lambda *args: None)  # Faust stays unpatched
    monkeypatch.setattr(faust_app, "recovery_stale", lambda app: False)
    worker = faust_app.PulseWorker(Settings(kafka_bootstrap="127.0.0.1:1",
                                            redis_url="redis://127.0.0.1:1/0"))
    worker._recovery_watch = asyncio.Future  # type: ignore[assignment]  # no probe tasks

    async def rebalance() -> list[bool]:
        stale = [worker._stale_recovery("pulse-deals")]
        await worker.app.on_partitions_revoked.send(set())
        stale.append(worker._stale_recovery("pulse-deals"))
        await worker.app.on_partitions_assigned.send(set())
        stale.append(worker._stale_recovery("pulse-deals"))
        return stale

    assert asyncio.run(rebalance()) == [False, True, False]
