"""Trailing-window sums of day cells, kept up to date as cells change and as the as-of
day moves, so a report reads them instead of summing every day again."""

from __future__ import annotations

__all__ = [
    "KEPT_WINDOW_SETS",
    "ChangeToken",
    "DayCells",
    "GroupCells",
    "OwnerCells",
    "TrailingSums",
    "groups_of",
]

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from stream_app.kpi.deals import add_vector
from stream_app.kpi.windows import WindowSpec

#: A cell's key: ``(*group, day)``; its group is the rest, a bare value when only one.
DayKey = tuple[Any, ...]
#: What a reader of kept sums last saw: the object it read and its change serial then.
ChangeToken = tuple[object, int]
_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


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
        #: Change serials: the last one given, the one of the last build, per group.
        self._serial = self._built = 0
        self._changed: dict[Any, int] = {}

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
        self._serial += 1
        self._changed[group] = self._serial
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

    def after(self, as_of_day: int) -> dict[Any, list[int]]:
        """Per group, the sum of the cells of days after ``as_of_day`` (in no window);
        read after :meth:`at`."""
        sums: dict[Any, list[int]] = {}
        cells = self._cells
        for day, keys in self._days.items():
            if day > as_of_day:
                for key in keys:
                    add_vector(sums, _group(key), cells[key])
        return sums

    def changes(self, since: ChangeToken | None) -> tuple[set[Any] | None, ChangeToken]:
        """The groups whose sums changed after ``since`` (a token this object gave; None
        when they were summed again since, or the token is another object's or None),
        and the token of now."""
        token = (self, self._serial)
        if since is None or since[0] is not self or since[1] < self._built:
            return None, token
        after = since[1]
        return {group for group, at in self._changed.items() if at > after}, token

    def _build(self, as_of_day: int) -> None:
        days: dict[int, list[DayKey]] = defaultdict(list)
        for key in self._cells:
            days[key[-1]].append(key)
        self._days = dict(days)
        self._sums = [{} for _ in self.specs]
        self._as_of = as_of_day
        self._serial += 1
        self._built, self._changed = self._serial, {}
        for spec, sums in zip(self.specs, self._sums, strict=True):
            first = None if spec.days is None else as_of_day - spec.days + 1
            self._add_days(sums, first, as_of_day, add_vector)

    def _move(self, as_of_day: int) -> None:
        before = self._as_of
        assert before is not None
        self._serial += 1
        moved = self._changed
        for spec, sums in zip(self.specs, self._sums, strict=True):
            if spec.days is None:
                self._add_days(sums, before + 1, as_of_day, add_vector, moved)
                continue
            leaving_last = min(before, as_of_day - spec.days)
            self._add_days(sums, before - spec.days + 1, leaving_last, _subtract, moved)
            self._add_days(sums, max(before + 1, as_of_day - spec.days + 1), as_of_day,
                           add_vector, moved)
        self._as_of = as_of_day

    def _add_days(self, sums: dict[Any, list[int]], first: int | None, last: int,
                  add: Any, moved: dict[Any, int] | None = None) -> None:
        """``add`` the cells of days ``first .. last`` (None: from the earliest) to
        ``sums`` (noting their groups changed now in ``moved``, when given)."""
        if first is not None and first > last:
            return
        cells, days = self._cells, self._days
        chosen: Iterable[int]
        if first is not None and last - first < len(days):
            chosen = range(first, last + 1)
        else:
            chosen = [day for day in days if (first is None or day >= first) and day <= last]
        serial = self._serial
        for day in chosen:
            for key in days.get(day, ()):
                group = _group(key)
                add(sums, group, cells[key])
                if moved is not None:
                    moved[group] = serial


#: Sets of windows a :class:`DayCells` keeps sums of at once (the oldest asked for is
#: dropped beyond; a report asks for at most three per field).
KEPT_WINDOW_SETS = 4


class DayCells(dict[DayKey, list[int]]):
    """Vectors by ``(*group, day)``: a snapshot field that keeps its trailing-window
    sums (:class:`TrailingSums`, one per set of windows asked for) up to date when
    changed through :meth:`add`."""

    __slots__ = ("_groups", "_trailing")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._trailing: dict[tuple[WindowSpec, ...], TrailingSums] = {}
        self._groups: set[Any] | None = None

    @classmethod
    def of(cls, cells: Mapping[DayKey, list[int]]) -> DayCells:
        """``cells`` itself when a :class:`DayCells` (its kept sums are read), else a
        :class:`DayCells` of its items (summed afresh)."""
        return cells if isinstance(cells, DayCells) else cls(cells)

    def add(self, key: DayKey, vector: Sequence[int]) -> None:
        """Add ``vector`` element-wise to the cell ``key`` (created when absent)."""
        new_key = key not in self
        add_vector(self, key, vector)
        if new_key and self._groups is not None:
            self._groups.add(_group(key))
        for trailing in self._trailing.values():
            trailing.note(key, vector, new_key)

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
        return self._kept(specs).at(as_of_day)

    def window_sums_and_after(self, specs: tuple[WindowSpec, ...], as_of_day: int
                              ) -> tuple[dict[str, dict[Any, list[int]]], dict[Any, list[int]]]:
        """:meth:`window_sums`, and per group the sum of the cells of later days."""
        trailing = self._kept(specs)
        sums = trailing.at(as_of_day)
        return sums, trailing.after(as_of_day)

    def window_changes(self, specs: tuple[WindowSpec, ...], as_of_day: int,
                       since: ChangeToken | None
                       ) -> tuple[dict[str, dict[Any, list[int]]], set[Any] | None, ChangeToken]:
        """:meth:`window_sums`, the groups whose sums changed after ``since`` (see
        :meth:`TrailingSums.changes`), and the token of now."""
        trailing = self._kept(specs)
        sums = trailing.at(as_of_day)
        changed, token = trailing.changes(since)
        return sums, changed, token

    def _kept(self, specs: tuple[WindowSpec, ...]) -> TrailingSums:
        trailing = self._trailing.get(specs)
        if trailing is None:
            trailing = self._trailing[specs] = TrailingSums(specs, self)
            while len(self._trailing) > KEPT_WINDOW_SETS:
                del self._trailing[next(iter(self._trailing))]
        return trailing


class _ChangedGroups(dict[_Key, _Value]):
    """A dict that notes the groups changed (:meth:`touch`) for readers holding a token
    (:meth:`changes`)."""

    __slots__ = ("_changed", "_serial")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._changed: dict[Any, int] = {}
        self._serial = 0

    def touch(self, group: Any) -> None:
        """Note that ``group``'s values just changed."""
        self._serial += 1
        self._changed[group] = self._serial

    def changes(self, since: ChangeToken | None) -> tuple[set[Any] | None, ChangeToken]:
        """The groups changed after ``since`` (None when ``since`` is None or another
        object's), and the token of now."""
        token = (self, self._serial)
        if since is None or since[0] is not self:
            return None, token
        after = since[1]
        return {group for group, at in self._changed.items() if at > after}, token


class GroupCells(_ChangedGroups[tuple[Any, ...], list[int]]):
    """Vectors by ``(group, *rest)``: a snapshot field that, changed through
    :meth:`add`, knows each group's keys and which groups changed after a reader's
    token (:meth:`changes`)."""

    __slots__ = ("_by_group",)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._by_group: dict[Any, list[tuple[Any, ...]]] | None = None

    def add(self, key: tuple[Any, ...], vector: Sequence[int]) -> None:
        """Add ``vector`` element-wise to the cell ``key`` (created when absent)."""
        if key not in self and self._by_group is not None:
            self._by_group.setdefault(key[0], []).append(key)
        add_vector(self, key, vector)
        self.touch(key[0])

    def keys_of(self) -> dict[Any, list[tuple[Any, ...]]]:
        """Per group, its keys (kept as cells are added; the caller must not change it)."""
        if self._by_group is None:
            by_group: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
            for key in self:
                by_group[key[0]].append(key)
            self._by_group = dict(by_group)
        return self._by_group


class OwnerCells(_ChangedGroups[tuple[str, str], Any]):
    """Values by ``(owner, period)``: a snapshot field that knows which owners changed
    after a reader's token (:meth:`changes`), as long as every change is followed by
    :meth:`touch`."""

    __slots__ = ()
