"""Trailing-window sums of day cells, kept up to date as cells change and as the as-of
day moves, so a report reads them instead of summing every day again."""

from __future__ import annotations

__all__ = ["DayCells", "TrailingSums", "groups_of"]

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stream_app.kpi.deals import add_vector
from stream_app.kpi.windows import WindowSpec

#: A cell's key: ``(*group, day)``; its group is the rest, a bare value when only one.
DayKey = tuple[Any, ...]


def _group(key: DayKey) -> Any:
    return key[0] if len(key) == 2 else key[:-1]


def _subtract(target: dict[Any, list[int]], key: Any, vector: Sequence[int]) -> None:
    current = target[key]
    for i, value in enumerate(vector):
        current[i] -= value


def groups_of(cells: Mapping[DayKey, Any]) -> set[Any]:
    """The groups of ``cells``' keys (kept by a :class:`DayCells`, read otherwise)."""
    if isinstance(cells, DayCells):
        return cells.groups()
    return {_group(key) for key in cells}


class TrailingSums:
    """Per window of ``specs``, per group, the element-wise sum of the vectors of
    ``cells`` whose day lies in the window at the as-of day (a trailing window of N
    days holds days ``as_of - N + 1 .. as_of``; ``all`` every day up to ``as_of``).

    Kept true by :meth:`note` (a cell changed by a delta) and by :meth:`at` (the as-of
    day moved forward: only the days that enter or leave a window are read); a move
    backwards sums everything again."""

    def __init__(self, specs: tuple[WindowSpec, ...], cells: Mapping[DayKey, list[int]]):
        self.specs = specs
        self._cells = cells
        self._as_of: int | None = None
        self._days: dict[int, list[DayKey]] = {}
        self._sums: list[dict[Any, list[int]]] = []

    def note(self, key: DayKey, delta: Sequence[int], new_key: bool) -> None:
        """``cells[key]`` just changed by ``delta`` (``new_key``: it did not exist)."""
        as_of = self._as_of
        if as_of is None:
            return
        day = key[-1]
        if new_key:
            self._days.setdefault(day, []).append(key)
        if day > as_of:
            return
        group = _group(key)
        for spec, sums in zip(self.specs, self._sums, strict=True):
            if spec.days is None or day > as_of - spec.days:
                add_vector(sums, group, delta)

    def at(self, as_of_day: int) -> dict[str, dict[Any, list[int]]]:
        """Per window name, the sums per group at ``as_of_day`` (groups with no cell in
        the window may be missing). The vectors are the live sums: read, never change."""
        if self._as_of is None or as_of_day < self._as_of:
            self._build(as_of_day)
        elif as_of_day > self._as_of:
            self._move(as_of_day)
        return {spec.name: sums for spec, sums in zip(self.specs, self._sums, strict=True)}

    def _build(self, as_of_day: int) -> None:
        days: dict[int, list[DayKey]] = defaultdict(list)
        for key in self._cells:
            days[key[-1]].append(key)
        self._days = dict(days)
        self._sums = [{} for _ in self.specs]
        self._as_of = as_of_day
        for spec, sums in zip(self.specs, self._sums, strict=True):
            first = None if spec.days is None else as_of_day - spec.days + 1
            self._add_days(sums, first, as_of_day, add_vector)

    def _move(self, as_of_day: int) -> None:
        before = self._as_of
        assert before is not None
        for spec, sums in zip(self.specs, self._sums, strict=True):
            if spec.days is None:
                self._add_days(sums, before + 1, as_of_day, add_vector)
                continue
            leaving_last = min(before, as_of_day - spec.days)
            self._add_days(sums, before - spec.days + 1, leaving_last, _subtract)
            self._add_days(sums, max(before + 1, as_of_day - spec.days + 1), as_of_day,
                           add_vector)
        self._as_of = as_of_day

    def _add_days(self, sums: dict[Any, list[int]], first: int | None, last: int,
                  add: Any) -> None:
        """``add`` the cells of days ``first .. last`` (None: from the earliest) to
        ``sums``."""
        if first is not None and first > last:
            return
        cells, days = self._cells, self._days
        chosen: Iterable[int]
        if first is not None and last - first < len(days):
            chosen = range(first, last + 1)
        else:
            chosen = [day for day in days if (first is None or day >= first) and day <= last]
        for day in chosen:
            for key in days.get(day, ()):
                add(sums, _group(key), cells[key])


class DayCells(dict[DayKey, list[int]]):
    """Vectors by ``(*group, day)``: a snapshot field that keeps its trailing-window
    sums (:class:`TrailingSums`) up to date when changed through :meth:`add`."""

    __slots__ = ("_groups", "_trailing")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._trailing: TrailingSums | None = None
        self._groups: set[Any] | None = None

    def add(self, key: DayKey, vector: Sequence[int]) -> None:
        """Add ``vector`` element-wise to the cell ``key`` (created when absent)."""
        new_key = key not in self
        add_vector(self, key, vector)
        if new_key and self._groups is not None:
            self._groups.add(_group(key))
        if self._trailing is not None:
            self._trailing.note(key, vector, new_key)

    def groups(self) -> set[Any]:
        """The groups with a cell (whatever its day), kept as cells are added; the
        caller must not change it."""
        if self._groups is None:
            self._groups = {_group(key) for key in self}
        return self._groups

    def window_sums(self, specs: tuple[WindowSpec, ...],
                    as_of_day: int) -> dict[str, dict[Any, list[int]]]:
        """Per window of ``specs``, the sums per group at ``as_of_day`` (see
        :meth:`TrailingSums.at`)."""
        if self._trailing is None or self._trailing.specs != specs:
            self._trailing = TrailingSums(specs, self)
        return self._trailing.at(as_of_day)
