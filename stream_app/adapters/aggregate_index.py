"""The aggregate records of one table, indexed and summed as they are written."""

from __future__ import annotations

__all__ = ["AggregateIndex"]

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from sys import intern
from typing import Any

from stream_app.adapters.faust_compat import Table, store_dict
from stream_app.adapters.loop_watch import collector_paused
from stream_app.kpi.fold import SEP, parse_aggregate_key, record_of
from stream_app.kpi.kinds import OWNER_QUOTA, POSITION
from stream_app.kpi.snapshot import (
    KIND_LABEL,
    Cell,
    Snapshot,
    apply_cell_changes,
    snapshot_from_cells,
    update_cell,
)

#: Snapshots a priming builds at most while label verdicts keep moving under it.
_PRIME_SNAPSHOT_BUILDS = 3


@dataclass
class _Primed:
    """Cells summed and a snapshot built off the event loop after a recovery, for the
    partitions the worker is about to export; adopted by the first snapshot of those
    partitions."""

    partitions: frozenset[int]
    #: Aggregate keys written since the priming began (summed again at adoption).
    written: set[str] = field(default_factory=set)
    cells: dict[Cell, Any] = field(default_factory=dict)
    merged: dict[str, Any] = field(default_factory=dict)
    snapshot: tuple[Any, Snapshot] | None = None


class AggregateIndex:
    """Keys of aggregate records in a table, parsed once, and their sum over the
    exported partitions kept up to date as records are written, so a scrape never
    walks the entities, parses a key again, or re-adds an aggregate nobody wrote."""

    def __init__(self, table: Table):
        self.table = table
        self.keys: dict[str, tuple[str, int, str, str]] = {}
        self._cells: dict[Cell, Any] = {}
        self._merged: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._partitions: frozenset[int] | None = None
        self._snapshot: tuple[Any, Snapshot] | None = None
        self._primed: _Primed | None = None
        #: Moves whenever :meth:`snapshot` gives a snapshot that differs from the last.
        self.version = 0

    async def rebuild(self) -> None:
        """After a recovery: index every key again and re-sum at the next read (or
        from what :meth:`prime` sums). The keys are parsed in a thread (seconds, with
        a million open deals, that held the event loop); keys noted meanwhile are kept,
        and a snapshot read meanwhile is summed again at the next read."""
        self.keys, self._primed, self._partitions = {}, None, None
        keys = list(store_dict(self.table))

        def index() -> dict[str, tuple[str, int, str, str]]:
            with collector_paused(keep=True):
                return _aggregate_keys(keys)

        parsed = await asyncio.to_thread(index)
        parsed.update(self.keys)
        self.keys, self._partitions = parsed, None

    async def prime(self, partitions: frozenset[int], keep: Callable[[str, str], bool],
                    labels_version: Callable[[], int]) -> None:
        """After :meth:`rebuild`: sum the cells of ``partitions`` and build their snapshot
        in a thread, so the first scrape that exports them only adds what was written
        since, instead of holding the event loop for the whole table (seconds, with a
        million open deals). Folds may run meanwhile: the keys they write are noted and
        summed again when the first snapshot adopts the result. Other tables' recoveries
        may admit labels meanwhile: while ``labels_version()`` moved during a build, the
        snapshot is built again (in the thread, not at the first scrape)."""
        primed = self._primed = _Primed(partitions)
        items = list(self.keys.items())
        data = store_dict(self.table)

        def build_cells() -> None:
            with collector_paused(keep=True):
                primed.cells, primed.merged = _sum_cells(items, partitions, data)

        def build_snapshot(version: int) -> None:
            with collector_paused(keep=True):
                primed.snapshot = (version,
                                   snapshot_from_cells(primed.cells, partitions, keep))

        await asyncio.to_thread(build_cells)
        for _ in range(_PRIME_SNAPSHOT_BUILDS):
            version = labels_version()
            await asyncio.to_thread(build_snapshot, version)
            if labels_version() == version or self._primed is not primed:
                return

    def add(self, keys: Iterable[str]) -> None:
        """Note keys just written (by a fold or a changelog record); entity keys are
        ignored."""
        known, dirty = self.keys, self._dirty
        written = self._primed.written if self._primed is not None else None
        for key in keys:
            if key not in known:
                parsed = _parse(key)
                if parsed is None:
                    continue
                known[key] = parsed
            dirty.add(key)
            if written is not None:
                written.add(key)

    def groups(self) -> dict[str, set[str]]:
        """Values of each capped label named by the aggregates."""
        found: dict[str, set[str]] = defaultdict(set)
        for parsed in self.keys.values():
            if parsed[0] in KIND_LABEL:
                found[KIND_LABEL[parsed[0]]].add(parsed[2])
            if parsed[0] == OWNER_QUOTA:
                found["team"].add(parsed[3].partition("|")[2])
        return found

    def snapshot(self, partitions: frozenset[int], keep: Callable[[str, str], bool],
                 labels_version: int) -> Snapshot:
        """The table's snapshot: the same object while no cell, partition or label
        verdict (``labels_version``) changed, moved in place by the cells that changed
        (built again when the partitions or the verdicts changed, or a roster profile
        did). :attr:`version` tells the caller whether it changed.
        Callers must not modify it."""
        changes = self._refresh(partitions)
        cached = self._snapshot
        if (cached is None or changes is None or cached[0] != labels_version
                or (changes and not apply_cell_changes(cached[1], changes, keep))):
            snapshot = snapshot_from_cells(self._cells, partitions, keep)
            self._snapshot = (labels_version, snapshot)
            self.version += 1
            return snapshot
        if changes:
            self.version += 1
        return cached[1]

    def _refresh(self, partitions: frozenset[int]) -> list[tuple[Cell, Any, Any]] | None:
        """Bring the per-cell sums of ``partitions`` up to date: from the keys written
        since the last call, returning each changed cell with its sum before and after,
        or from scratch when the partitions changed, returning None."""
        data = store_dict(self.table)
        if partitions != self._partitions:
            primed = self._primed
            if primed is None or primed.snapshot is None or primed.partitions != partitions:
                self._cells, self._merged = _sum_cells(list(self.keys.items()), partitions,
                                                       data)
                self._dirty, self._partitions = set(), partitions
                return None
            self._cells, self._merged, self._snapshot = (primed.cells, primed.merged,
                                                         primed.snapshot)
            self._dirty = primed.written  # the rest was read by the priming
            self._partitions, self._primed = partitions, None
            self.version += 1
        cells, merged, keys = self._cells, self._merged, self.keys
        before: dict[Cell, Any] = {}
        for key in self._dirty:
            parsed = keys.get(key)
            if parsed is None or parsed[1] not in partitions or parsed[0] == POSITION:
                continue
            stored = data.get(key)
            if stored is None:
                continue
            summed = merged.get(key)
            if stored is not summed:
                cell = (parsed[0], parsed[2], parsed[3])
                if cell not in before:
                    before[cell] = cells.get(cell)
                old = None if summed is None else record_of(summed)["v"]
                update_cell(cells, parsed, old, record_of(stored)["v"])
                merged[key] = stored
        self._dirty = set()
        return [(cell, old, cells[cell]) for cell, old in before.items()
                if cells[cell] is not old]


def _parse(key: str) -> tuple[str, int, str, str] | None:
    """:func:`parse_aggregate_key`, its group and part interned: the index holds one
    parsed key per aggregate record (hundreds of thousands with a million open deals),
    naming a few thousand owners and days."""
    parsed = parse_aggregate_key(key)
    if parsed is None:
        return None
    return parsed[0], parsed[1], intern(parsed[2]), intern(parsed[3])


def _aggregate_keys(keys: Iterable[str]) -> dict[str, tuple[str, int, str, str]]:
    """Each aggregate key of ``keys``, parsed (entity keys, with one separator where an
    aggregate key has three, are passed over without being split)."""
    found: dict[str, tuple[str, int, str, str]] = {}
    for key in keys:
        if key.count(SEP) == 3:
            parsed = _parse(key)
            if parsed is not None:
                found[key] = parsed
    return found


def _sum_cells(items: Iterable[tuple[str, tuple[str, int, str, str]]],
               partitions: frozenset[int], data: Mapping[str, Any]
               ) -> tuple[dict[Cell, Any], dict[str, Any]]:
    """The cells of ``partitions`` summed from scratch over the aggregate keys ``items``
    (key, parsed key), and the record each key added (what a later change replaces)."""
    cells: dict[Cell, Any] = {}
    merged: dict[str, Any] = {}
    for key, parsed in items:
        if parsed[1] not in partitions or parsed[0] == POSITION:
            continue
        stored = data.get(key)
        if stored is not None:
            update_cell(cells, parsed, None, record_of(stored)["v"])
            merged[key] = stored
    return cells, merged
