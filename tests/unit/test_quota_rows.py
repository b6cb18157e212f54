"""Quota and attainment rows kept between reports of a snapshot moved in place equal
the rows of a snapshot built from scratch, and only the owners that changed are read."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest

from stream_app.kpi.calendar import UTC_CALENDAR
from stream_app.kpi.kinds import OWNER_QUOTA, OWNER_WON
from stream_app.kpi.live import ReportMemo, ReportReuse
from stream_app.kpi.report import ReportConfig, build_report
from stream_app.kpi.scoring import load_rules
from stream_app.kpi.snapshot import Cell, apply_cell_changes, snapshot_from_cells
from stream_app.kpi.windows import window_specs

CONFIG = ReportConfig(window_specs((3, 30)), ("P", "N"),
                      {"P": Decimal("0.2"), "N": Decimal("0.9")}, scoring=load_rules(None))
MS_PER_DAY = 86_400_000
#: The last day of a month, so that the next day moves every period.
DAY = 20_453
OWNERS = ("o0", "o1", "o2", "o3", "o4", "o5", "all", "all_", "(other)", "o9", "o10")
REFUSED = frozenset({"o9", "o10"})
TEAMS = ("A", "B", "all")


def _keep(label: str, value: str) -> bool:
    return not (label == "owner" and value in REFUSED)


def _periods(day: int) -> list[str]:
    names = set(UTC_CALENDAR.current_periods(day).values())
    return sorted(names | {"2020-01", "2020-Q1"})


def _months(day: int) -> list[str]:
    months = {month for name in UTC_CALENDAR.current_periods(day).values()
              for month in UTC_CALENDAR.period_months(name)}
    return sorted(months | {"2020-02"})


def _change(rng: random.Random, cells: dict[Cell, Any], day: int
            ) -> list[tuple[Cell, Any, Any]]:
    """One fold's worth of owner cell changes: a win, or a quota set, moved to another
    team or withdrawn (a fold keeps one set quota cell per owner and period)."""
    owner = rng.choice(OWNERS)
    if rng.random() < 0.5:
        cell: Cell = (OWNER_WON, owner, rng.choice(_months(day)))
        old = cells.get(cell)
        new = [(0 if old is None else old[0]) + rng.randrange(1, 10**6)]
        return [(cell, old, new)]
    period = rng.choice(_periods(day))
    current = [c for c, value in cells.items()
               if c[0] == OWNER_QUOTA and c[1] == owner and c[2].startswith(period + "|")
               and value[1]]
    changes: list[tuple[Cell, Any, Any]] = [(c, cells[c], [0, 0]) for c in current]
    if not current or rng.random() < 0.7:
        cell = (OWNER_QUOTA, owner, f"{period}|{rng.choice(TEAMS)}")
        changes = [change for change in changes if change[0] != cell]
        changes.append((cell, cells.get(cell), [rng.randrange(0, 10**6), 1]))
    return changes


def test_rows_kept_through_changes_equal_rows_built_from_scratch() -> None:
    for seed in range(6):
        rng = random.Random(seed)
        cells: dict[Cell, Any] = {}
        for _ in range(30):
            for cell, _, new in _change(rng, cells, DAY):
                cells[cell] = new
        snap = snapshot_from_cells(cells, {0}, _keep)
        reuse = ReportReuse(CONFIG)
        for step in range(60):
            day = DAY + (step >= 40)
            for cell, old, new in _change(rng, cells, day):
                assert cells.get(cell) == old
                cells[cell] = new
                assert apply_cell_changes(snap, [(cell, old, new)], _keep)
            at = day * MS_PER_DAY + 1000
            kept = reuse.report(("v", step), snap, at)
            fresh = build_report(snapshot_from_cells(cells, {0}, _keep), at, CONFIG)
            assert kept.quotas == fresh.quotas, (seed, step)
            assert kept.attainment == fresh.attainment, (seed, step)
            assert list(kept.attainment) == list(fresh.attainment)


def test_only_the_owners_whose_cells_changed_are_read_again() -> None:
    month = UTC_CALENDAR.current_periods(DAY)["month"]
    cells: dict[Cell, Any] = {(OWNER_QUOTA, owner, f"{month}|A"): [1000, 1]
                              for owner in ("o1", "o2", "o3", "o9")}
    snap = snapshot_from_cells(cells, {0}, _keep)
    memo, at = ReportMemo(), DAY * MS_PER_DAY
    first = build_report(snap, at, CONFIG, memo)
    read = memo.quota_rows.owners_read
    assert apply_cell_changes(snap, [((OWNER_WON, "o2", month), None, [1500])], _keep)
    second = build_report(snap, at, CONFIG, memo)
    assert memo.quota_rows.owners_read - read == 1
    assert second.attainment["o1"] is first.attainment["o1"]
    assert second.attainment["(other)"] is first.attainment["(other)"]
    assert second.attainment["o2"][0].won_cents == 1500
    team = next(row for row in second.quotas if row.group == "A" and row.period == "month")
    assert (team.owners, team.owners_at_quota, team.won_cents) == (4, 1, 1500)


@pytest.mark.parametrize(("quota", "won", "at_quota"), [
    (1000, 999, 0), (1000, 1000, 1), (1000, 1001, 1), (0, 0, 1), (1, 0, 0)])
def test_an_owner_is_at_quota_when_won_reaches_it(quota: int, won: int, at_quota: int) -> None:
    month = UTC_CALENDAR.current_periods(DAY)["month"]
    cells: dict[Cell, Any] = {(OWNER_QUOTA, "o1", f"{month}|A"): [quota, 1]}
    if won:
        cells[(OWNER_WON, "o1", month)] = [won]
    for memo in (None, ReportMemo()):
        report = build_report(snapshot_from_cells(cells, {0}), DAY * MS_PER_DAY, CONFIG, memo)
        team = next(row for row in report.quotas if row.group == "A" and row.period == "month")
        assert (team.owners, team.owners_at_quota, team.won_cents) == (1, at_quota, won)
