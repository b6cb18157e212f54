"""Trailing-window sums kept up to date: against a plain sum over the days, after any
changes and moves of the as-of day."""

from __future__ import annotations

import random
from typing import Any

import pytest

from stream_app.kpi.trailing import DayCells, GroupCells, groups_of
from stream_app.kpi.windows import WindowSpec

SPECS = (WindowSpec("3d", 3), WindowSpec("7d", 7), WindowSpec("all", None))
#: A second set of windows read from the same cells (as the report's required coverage
#: and CLV windows are, beside the configured ones).
OTHER_SPECS = (WindowSpec("10d", 10),)


def _plain_sums(cells: dict[tuple[Any, ...], list[int]], as_of: int,
                specs: tuple[WindowSpec, ...] = SPECS) -> dict[str, dict[Any, list[int]]]:
    out: dict[str, dict[Any, list[int]]] = {}
    for spec in specs:
        sums: dict[Any, list[int]] = {}
        for key, vector in cells.items():
            day = key[-1]
            if day <= as_of and (spec.days is None or day >= as_of - spec.days + 1):
                group = key[0] if len(key) == 2 else key[:-1]
                total = sums.setdefault(group, [0] * len(vector))
                for i, value in enumerate(vector):
                    total[i] += value
        out[spec.name] = sums
    return out


def _nonzero(sums: dict[str, dict[Any, list[int]]]) -> dict[str, dict[Any, list[int]]]:
    return {name: {group: list(v) for group, v in groups.items() if any(v)}
            for name, groups in sums.items()}


@pytest.mark.parametrize(("cells", "as_of", "expected"), [
    # days 8, 9, 10 in 3d; 4..10 in 7d; everything up to 10 in all; day 11 in none
    ({("A", 1): [1], ("A", 4): [10], ("A", 8): [100], ("A", 10): [1000], ("A", 11): [7]},
     10, {"3d": {"A": [1100]}, "7d": {"A": [1110]}, "all": {"A": [1111]}}),
    ({("A", "x", 5): [1, 2], ("B", "x", 5): [3, 4], ("A", "x", 2): [5, 6]},
     5, {"3d": {("A", "x"): [1, 2], ("B", "x"): [3, 4]},
         "7d": {("A", "x"): [6, 8], ("B", "x"): [3, 4]},
         "all": {("A", "x"): [6, 8], ("B", "x"): [3, 4]}}),
    ({("A", 20): [1]}, 10, {"3d": {}, "7d": {}, "all": {}}),
])
def test_window_sums_hand_checked(cells: dict[tuple[Any, ...], list[int]], as_of: int,
                                  expected: dict[str, dict[Any, list[int]]]) -> None:
    assert _nonzero(DayCells(cells).window_sums(SPECS, as_of)) == expected


@pytest.mark.parametrize("seed", range(10))
def test_kept_sums_equal_a_plain_sum_after_any_changes_and_moves(seed: int) -> None:
    rng = random.Random(seed)
    cells = DayCells()
    plain: dict[tuple[Any, ...], list[int]] = {}
    as_of = 20
    compared = 0
    for step in range(500):
        roll = rng.random()
        if roll < 0.15:  # T moves: mostly a day or a few forward, sometimes far or back
            as_of += rng.choice([0, 1, 1, 2, 5, 12, -1, -6])
        elif roll < 0.25:
            pass
        else:
            key = (rng.choice("ABC"), rng.randrange(as_of - 15, as_of + 4))
            delta = [rng.randrange(-3, 9), rng.randrange(5)]
            cells.add(key, delta)
            total = plain.setdefault(key, [0, 0])
            total[0] += delta[0]
            total[1] += delta[1]
        if step % 5 == 0:  # both sets of windows kept at once
            for specs in (SPECS, OTHER_SPECS):
                assert _nonzero(cells.window_sums(specs, as_of)) == _nonzero(
                    _plain_sums(plain, as_of, specs)), step
            compared += 1
    assert compared == 100


def test_reading_another_set_of_windows_keeps_the_first_sets_changes() -> None:
    cells = DayCells({("A", 5): [1], ("B", 5): [2]})
    _, changed, token = cells.window_changes(SPECS, 5, None)
    assert changed is None
    cells.window_sums(OTHER_SPECS, 5)
    cells.add(("A", 5), [3])
    sums, changed, _ = cells.window_changes(SPECS, 5, token)
    assert changed == {"A"} and sums["3d"]["A"] == [4]


def test_other_windows_sum_again() -> None:
    cells = DayCells({("A", 5): [1]})
    assert _nonzero(cells.window_sums(SPECS, 5))["3d"] == {"A": [1]}
    one = (WindowSpec("1d", 1),)
    assert _nonzero(cells.window_sums(one, 6)) == {"1d": {}}


@pytest.mark.parametrize("width", [2, 3], ids=["group", "group-tuple"])
@pytest.mark.parametrize("seed", range(5))
def test_kept_groups_are_the_groups_of_every_key(seed: int, width: int) -> None:
    """Read before, between and after adds (new keys and old), from a filled dict too."""
    rng = random.Random(seed)
    cells = DayCells({("A", "x", 1)[3 - width:]: [1]})
    for step in range(200):
        key = (*rng.sample("ABCDEFG", width - 1), rng.randrange(30))
        cells.add(key, [rng.randrange(-2, 3)])
        if step % 7 == 0:
            assert groups_of(cells) == {k[0] if width == 2 else k[:-1] for k in cells}
    plain = dict(cells)
    assert groups_of(plain) == groups_of(cells) == groups_of(DayCells(plain))


def _by_group(sums: dict[str, dict[Any, list[int]]]) -> dict[Any, list[tuple[int, ...]]]:
    groups = {group for window in sums.values() for group in window}
    return {group: [tuple(sums[name].get(group, ())) for name in sorted(sums)]
            for group in groups}


@pytest.mark.parametrize("seed", range(10))
def test_changes_name_every_group_whose_sums_moved_since_the_readers_token(seed: int) -> None:
    """Cells change and T moves (back too); a reader that kept each group's sums and
    redoes only the groups named since its token always holds the sums summed again."""
    rng = random.Random(seed)
    cells = DayCells({("A", 18): [1, 1]})
    as_of, token = 20, None
    seen: dict[Any, list[tuple[int, ...]]] = {}
    incremental = 0
    for step in range(400):
        roll = rng.random()
        if roll < 0.15:
            as_of += rng.choice([0, 1, 1, 2, 5, 12, -1])
        else:
            cells.add((rng.choice("ABCD"), rng.randrange(as_of - 15, as_of + 4)),
                      [rng.randrange(-3, 9), rng.randrange(5)])
        if step % 3 == 0:
            sums, changed, token = cells.window_changes(SPECS, as_of, token)
            now = _by_group(_nonzero(sums))
            if changed is None:
                seen = now
            else:
                incremental += 1
                for group in changed:
                    if group in now:
                        seen[group] = now[group]
                    else:
                        seen.pop(group, None)
            assert seen == now, step
    assert incremental > 100


def test_group_cells_name_the_groups_changed_since_a_token() -> None:
    cells = GroupCells({("o1", "P"): [1, 10]})
    changed, token = cells.changes(None)
    assert changed is None
    assert cells.keys_of() == {"o1": [("o1", "P")]}
    cells.add(("o2", "N"), [1, 5])
    cells.add(("o1", "P"), [1, 5])
    changed, later = cells.changes(token)
    assert changed == {"o1", "o2"}
    assert cells.keys_of() == {"o1": [("o1", "P")], "o2": [("o2", "N")]}
    assert cells == {("o1", "P"): [2, 15], ("o2", "N"): [1, 5]}
    assert cells.changes(later)[0] == set()
    assert GroupCells(cells).changes(later)[0] is None  # another object's token


def test_of_reads_a_day_cells_own_sums_and_wraps_a_plain_dict() -> None:
    kept = DayCells({("A", 1): [2]})
    assert DayCells.of(kept) is kept
    plain = {("A", 1): [2], ("B", 3): [5]}
    wrapped = DayCells.of(plain)
    assert type(wrapped) is DayCells and wrapped == plain and wrapped is not plain
