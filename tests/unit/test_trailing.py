"""Trailing-window sums kept up to date: against a plain sum over the days, after any
changes and moves of the as-of day."""

from __future__ import annotations

import random
from typing import Any

import pytest

from stream_app.kpi.trailing import DayCells, groups_of
from stream_app.kpi.windows import WindowSpec

SPECS = (WindowSpec("3d", 3), WindowSpec("7d", 7), WindowSpec("all", None))


def _plain_sums(cells: dict[tuple[Any, ...], list[int]],
                as_of: int) -> dict[str, dict[Any, list[int]]]:
    out: dict[str, dict[Any, list[int]]] = {}
    for spec in SPECS:
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
        if step % 5 == 0:
            assert _nonzero(cells.window_sums(SPECS, as_of)) == _nonzero(
                _plain_sums(plain, as_of)), step
            compared += 1
    assert compared == 100


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
