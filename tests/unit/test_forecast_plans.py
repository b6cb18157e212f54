"""The CRM's plan for the open deals (expected close dates and forecast categories):
slipped, pushed out of the period and closing in it, on a hand-checked table, worker and
reference alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

from stream_app.config import Settings, pricing
from stream_app.events.models import crm_event_adapter
from stream_app.kpi.calendar import UTC_CALENDAR
from stream_app.kpi.deals import DealState, apply_deal_event
from stream_app.kpi.forecast import DEFAULT_FORECAST
from stream_app.kpi.forecast_report import (
    DealSums,
    ForecastBasis,
    PairsPatch,
    PathCache,
    forecast_rows,
)
from tests.reference import ReferenceConfig
from tests.reference_forecast import expected_plan_metrics

_N = [0]


def _event(kind: str, day: str, **data: Any) -> dict[str, Any]:
    _N[0] += 1
    if kind == "deal.created":
        data = {"account_id": None, "owner_id": "o1", "team": "T", "amount": "100",
                "currency": "USD", "stage": "Prospecting", **data}
    return {"specversion": "1.0", "id": f"plan-{_N[0]:04d}", "source": "test", "type": kind,
            "time": f"{day}T10:00:00Z", "data": data}


#: T is 2026-11-20: month November, fiscal quarter October-December.
EVENTS = [
    # D1: expected 10 November, still open on the 20th: slipped.
    _event("deal.created", "2026-10-01", deal_id="D1", expected_close="2026-11-10"),
    # D2: expected the 25th, committed: closing in the month and the quarter.
    _event("deal.created", "2026-10-01", deal_id="D2", expected_close="2026-11-25"),
    _event("deal.updated", "2026-10-15", deal_id="D2", forecast_category="commit"),
    # D3: expected 15 November at the month's start, moved to 5 December on the 5th:
    # pushed out of the month, closing in the quarter (no category).
    _event("deal.created", "2026-10-01", deal_id="D3", expected_close="2026-11-15"),
    _event("deal.updated", "2026-11-05", deal_id="D3", expected_close="2026-12-05"),
    # D4: 20 October, then 12 November (set inside the month), then January: pushed out
    # of both (inside the quarter since its start, and inside the month since the 3rd).
    _event("deal.created", "2026-10-01", deal_id="D4", expected_close="2026-10-20",
           amount="300"),
    _event("deal.updated", "2026-11-03", deal_id="D4", expected_close="2026-11-12"),
    _event("deal.updated", "2026-11-10", deal_id="D4", expected_close="2027-01-15",
           forecast_category="best_case"),
    # D5: won on the 18th: not open, counts nowhere.
    _event("deal.created", "2026-10-01", deal_id="D5", expected_close="2026-12-20"),
    _event("deal.won", "2026-11-18", deal_id="D5", amount="100"),
    # D6: expected in February, never inside: counts nowhere.
    _event("deal.created", "2026-10-01", deal_id="D6", expected_close="2027-02-01"),
    # D7: no expected close at all: counts nowhere.
    _event("deal.created", "2026-10-01", deal_id="D7"),
    _event("deal.updated", "2026-11-20", deal_id="D2", amount="150"),
]

EXPECTED = {
    ("slipped", "", ""): (1, 10_000),
    ("closing", "month", "commit"): (1, 15_000),
    ("closing", "quarter", "commit"): (1, 15_000),
    ("closing", "quarter", "(none)"): (1, 10_000),
    ("pushed", "month", ""): (2, 40_000),
    ("pushed", "quarter", ""): (1, 30_000),
}


def test_slipped_pushed_and_closing_deals_follow_the_crms_latest_plan() -> None:
    states: dict[str, DealState] = {}
    for raw in EVENTS:
        event = crm_event_adapter.validate_python(raw)
        deal_id = event.data.deal_id
        states[deal_id] = apply_deal_event(states.get(deal_id) or DealState(deal_id), event,
                                           for_forecast=True)
    basis = ForecastBasis(tuple(states.values()), (), 0, {"T": "T"}, pricing(Settings()),
                          UTC_CALENDAR)
    day = (dt.date(2026, 11, 20) - dt.date(1970, 1, 1)).days
    plans = forecast_rows(basis, day, DEFAULT_FORECAST, lambda _, __, f: f(),
                          PathCache()).plans
    for group in ("T", "all"):
        got = {(row.kind, row.period, row.category): (row.deals, row.cents)
               for row in plans if row.group == group}
        assert got == EXPECTED, group


def test_the_reference_reads_the_same_table() -> None:
    got = expected_plan_metrics(EVENTS, dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC),
                                ReferenceConfig())
    for (kind, period, category), (deals, cents) in EXPECTED.items():
        labels = {"team": "all", **({"period": period} if period else {}),
                  **({"category": category} if category else {})}
        key = tuple(sorted(labels.items()))
        assert got[(f"pulse_forecast_{kind}_deals", key)] == deals
        assert got[(f"pulse_forecast_{kind}_amount", key)] == Fraction(cents, 100)
    assert len(got) == 2 * 2 * len(EXPECTED)  # per team T and all, deals and amount


def _plan_table(plans: tuple[Any, ...], group: str) -> dict[tuple[str, str, str], tuple[int, int]]:
    return {(row.kind, row.period, row.category): (row.deals, row.cents)
            for row in plans if row.group == group}


def _reference_table(events: list[dict[str, Any]], as_of: dt.datetime
                     ) -> dict[tuple[str, str, str], tuple[int, int]]:
    got = expected_plan_metrics(events, as_of, ReferenceConfig())
    table: dict[tuple[str, str, str], tuple[int, int]] = {}
    for kind in ("slipped", "pushed", "closing"):
        for (name, labels), value in got.items():
            found = dict(labels)
            if name == f"pulse_forecast_{kind}_deals" and found["team"] == "all":
                cents = got[(f"pulse_forecast_{kind}_amount", labels)] * 100
                table[(kind, found.get("period", ""), found.get("category", ""))] = (
                    int(value), int(cents))
    return table


def _bases_after_each_event() -> Iterator[tuple[int, dict[str, Any], int, ForecastBasis]]:
    """After each of EVENTS: how many were folded, the event, the position of its deal
    among the states, and the basis of the states."""
    states: dict[str, DealState] = {}
    for count, raw in enumerate(EVENTS, start=1):
        event = crm_event_adapter.validate_python(raw)
        deal_id = event.data.deal_id
        states[deal_id] = apply_deal_event(states.get(deal_id) or DealState(deal_id), event,
                                           for_forecast=True)
        yield count, raw, list(states).index(deal_id), ForecastBasis(
            tuple(states.values()), ((0, count),), 0, {"T": "T"}, pricing(Settings()),
            UTC_CALENDAR)


def test_the_plan_kept_from_one_state_to_the_next_equals_the_reference_at_each() -> None:
    """One path cache across every event (each report reads again only the deal that
    changed, and moves the sums by its difference), then a day later, then without D2
    (a deal gone from the states): each against the reference over the same events."""
    paths = PathCache()
    day = (dt.date(2026, 11, 20) - dt.date(1970, 1, 1)).days
    as_of = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
    tables = []
    for count, raw, _, basis in _bases_after_each_event():
        plans = forecast_rows(basis, day, DEFAULT_FORECAST, lambda _, __, f: f(), paths).plans
        tables.append(_plan_table(plans, "all"))
        assert tables[-1] == _reference_table(EVENTS[:count], as_of), raw["id"]
    assert tables[-1] == EXPECTED
    later = forecast_rows(basis, day + 1, DEFAULT_FORECAST, lambda _, __, f: f(), paths).plans
    assert _plan_table(later, "all") == _reference_table(EVENTS, as_of + dt.timedelta(days=1))
    without = ForecastBasis(tuple(s for s in basis.states if s.deal_id != "D2"),
                            ((0, len(EVENTS) + 1),), 0, {"T": "T"}, pricing(Settings()),
                            UTC_CALENDAR)
    gone = forecast_rows(without, day, DEFAULT_FORECAST, lambda _, __, f: f(), paths).plans
    assert _plan_table(gone, "all") == _reference_table(
        [e for e in EVENTS if e["data"]["deal_id"] != "D2"], as_of)


def test_the_plan_kept_through_patches_equals_the_reference_at_each() -> None:
    """As the forecast process reads: after each event the path cache is told which
    position of the states changed or came (:meth:`PathCache.patched`), so the uncut
    pairs and the plan's sums move by that deal alone; every report equals the reference
    over the same events, a day later too."""
    paths = PathCache()
    day = (dt.date(2026, 11, 20) - dt.date(1970, 1, 1)).days
    as_of = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
    patched = 0
    for count, raw, position, basis in _bases_after_each_event():
        paths.patched(basis, (position,))
        if paths.patch is not None:
            patched += 1
            assert paths.patch.positions == (position,)
            assert paths.pairs(basis, None) is paths.patch.after
        plans = forecast_rows(basis, day, DEFAULT_FORECAST, lambda _, __, f: f(), paths).plans
        assert paths.plans.synced is paths.pairs(basis, None)
        assert _plan_table(plans, "all") == _reference_table(EVENTS[:count], as_of), raw["id"]
    assert patched == len(EVENTS) - 1  # every event but the first, read whole
    later = forecast_rows(basis, day + 1, DEFAULT_FORECAST, lambda _, __, f: f(), paths).plans
    assert _plan_table(later, "all") == _reference_table(EVENTS, as_of + dt.timedelta(days=1))


def test_deal_sums_read_only_a_patch_s_positions_when_they_hold_its_pairs_before() -> None:
    """A patch moves the sums by its positions alone (its promise: every other pair is
    the same object), when the sums are over the pairs the patch started from; otherwise
    every pair is read (a patch of other pairs, or a deal at a second position, is never
    trusted)."""
    table = {"A": (("x", 5),), "B": (("x", 7),), "C": (("y", 1),)}
    read: list[str] = []
    sums: DealSums[str] = DealSums()

    def rows_of(state: DealState, _: Any) -> Any:
        read.append(state.deal_id)
        return table[state.deal_id]

    a, b, c = DealState("A"), DealState("B"), DealState("C")
    first = [(a, None), (b, None)]
    assert sums.update(first, "day", rows_of) == {"x": [2, 12]}
    new_a, new_b = DealState("A"), DealState("B")
    table["A"], table["B"] = (("x", 6),), (("y", 3),)
    # A's new state lies outside the patch's positions: trusted, the patch keeps A's rows
    second = [(new_a, None), (new_b, None), (c, None)]
    read.clear()
    assert sums.update(second, "day", rows_of, PairsPatch(first, second, (1, 2))) == {
        "x": [1, 5], "y": [2, 4]}
    assert read == ["B", "C"]
    stale = PairsPatch(first, second, (1,))  # not from the pairs the sums are over
    third = [(new_a, None), (new_b, None), (c, None)]
    read.clear()
    assert sums.update(third, "day", rows_of, stale) == {"x": [1, 6], "y": [2, 4]}
    assert read == ["A"]
    twice = [(new_a, None), (new_b, None), (c, None), (c, None)]
    assert sums.update(twice, "day", rows_of, PairsPatch(third, twice, (3,))) == {
        "x": [1, 6], "y": [3, 5]}
    assert sums.synced is None


def test_deal_sums_move_by_the_deals_that_changed_and_start_again_when_one_left() -> None:
    """Rows per deal from a table the test changes: A counts 5 under x, B 7 under x and 2
    under y. A's state replaced (now 1 under y), B gone, then B back twice (a deal held
    twice counts twice, as a plain sum would)."""
    table = {"A": (("x", 5),), "B": (("x", 7), ("y", 2))}
    sums: DealSums[str] = DealSums()

    def rows_of(state: DealState, _: Any) -> Any:
        return table[state.deal_id]

    a, b = DealState("A"), DealState("B")
    assert sums.update([(a, None), (b, None)], "day 1", rows_of) == {"x": [2, 12], "y": [1, 2]}
    table["A"] = (("y", 1),)
    assert sums.update([(a, None), (b, None)], "day 1", rows_of) == {"x": [2, 12], "y": [1, 2]}
    moved = DealState("A")
    assert sums.update([(moved, None), (b, None)], "day 1", rows_of) == {
        "x": [1, 7], "y": [2, 3]}
    assert sums.update([(moved, None)], "day 1", rows_of) == {"y": [1, 1]}
    assert sums.update([(moved, None), (b, None), (b, None)], "day 1", rows_of) == {
        "x": [2, 14], "y": [3, 5]}
    table["B"] = ()
    assert sums.update([(moved, None), (b, None)], "day 2", rows_of) == {"y": [1, 1]}
