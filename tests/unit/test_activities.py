"""Activities: the per-activity fold, its windows, activities per won deal, the metrics."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from stream_app.adapters.metrics import PulseCollector
from stream_app.events.models import ActivityLogged
from stream_app.kpi.activities import ActivityState, activity_contributions, apply_activity_event
from stream_app.kpi.fold import guarded_fold
from stream_app.kpi.report import ReportConfig, build_report
from stream_app.kpi.snapshot import Snapshot, snapshot_from_aggregates
from stream_app.kpi.windows import window_specs
from tests.unit.test_metrics import Source

CFG = ReportConfig(window_specs((30,)), ("P",), {"P": Decimal("0.5")})


def _day(text: str) -> int:
    return (dt.date.fromisoformat(text) - dt.date(1970, 1, 1)).days


def _event(event_id: str, time: str, kind: str = "call", owner: str = "o1", team: str = "A",
           activity_id: str | None = None) -> ActivityLogged:
    return ActivityLogged.model_validate({
        "specversion": "1.0", "id": event_id, "source": "crm", "type": "activity.logged",
        "time": time, "data": {"owner_id": owner, "team": team, "kind": kind,
                               "activity_id": activity_id}})


@pytest.mark.parametrize(("events", "expected"), [
    ([_event("e1", "2026-03-01T10:00:00Z", "call")],
     {("v", "A", "2026-03-01"): (1, 0, 0), ("z", "o1", "2026-03-01"): (1, 0, 0)}),
    ([_event("e1", "2026-03-01T23:59:59.999Z", "meeting")],
     {("v", "A", "2026-03-01"): (0, 0, 1), ("z", "o1", "2026-03-01"): (0, 0, 1)}),
    ([_event("e1", "2026-03-01T00:30:00+01:00", "email")],
     {("v", "A", "2026-02-28"): (0, 1, 0), ("z", "o1", "2026-02-28"): (0, 1, 0)}),
    # the same CRM activity sent again under another CloudEvent id: the earliest wins
    ([_event("e2", "2026-03-02T10:00:00Z", "call", activity_id="T1"),
      _event("e1", "2026-03-01T10:00:00Z", "email", team="B", activity_id="T1")],
     {("v", "B", "2026-03-01"): (0, 1, 0), ("z", "o1", "2026-03-01"): (0, 1, 0)}),
    # a tie on time: the smaller event id wins
    ([_event("e9", "2026-03-01T10:00:00Z", "call"), _event("e1", "2026-03-01T10:00:00Z",
                                                           "meeting")],
     {("v", "A", "2026-03-01"): (0, 0, 1), ("z", "o1", "2026-03-01"): (0, 0, 1)}),
])
def test_an_activity_counts_once_in_its_earliest_version_whatever_the_order(
    events: list[ActivityLogged], expected: dict[tuple[str, str, str], tuple[int, ...]]
) -> None:
    want = {(kind, group, _day(day)): vector for (kind, group, day), vector in expected.items()}
    for order in itertools.permutations(events):
        state = ActivityState("x")
        for event in (*order, *order):
            state = apply_activity_event(state, event)
        assert activity_contributions(state) == want


def test_a_redelivered_activity_changes_no_aggregate() -> None:
    store: dict[str, object] = {}
    event = _event("e1", "2026-03-01T10:00:00Z")

    def fold(offset: int) -> tuple[str, ...]:
        return guarded_fold(
            store, source="v", partition=0, offset=offset, key="act\x1fe1",
            empty=lambda: ActivityState("e1"), load=ActivityState.from_json,
            apply=lambda s: apply_activity_event(s, event), contributions=activity_contributions,
            dump=ActivityState.to_json, event_time_ms=0).written

    assert len(fold(5)) == 3  # team, owner, clock
    assert fold(5) == () and fold(9) == ()
    snap = snapshot_from_aggregates(store.items(), {0})
    assert snap.activities == {("A", _day("2026-03-01")): [1, 0, 0]}
    assert snap.owner_activities == {("o1", _day("2026-03-01")): [1, 0, 0]}


@pytest.mark.parametrize(("activity_day", "won", "in_window", "per_won"), [
    ("2026-03-10", 2, True, 3 / 2),
    ("2026-02-09", 2, True, 3 / 2),  # T's day minus 29: the 30-day window's first day
    ("2026-02-08", 2, False, 0.0),
    ("2026-03-11", 2, False, 0.0),  # after T
    ("2026-03-10", 0, True, None),  # no deal won: no ratio, never 0
])
def test_activities_per_won_deal_over_the_window(activity_day: str, won: int, in_window: bool,
                                                 per_won: float | None) -> None:
    day = _day(activity_day)
    snap = Snapshot(buckets={("A", _day("2026-03-01")): [0, won, 0, 0, 0, 0]},
                    activities={("A", day): [1, 1, 1]},
                    owner_activities={("o1", day): [1, 1, 1]})
    report = build_report(snap, _day("2026-03-10") * 86_400_000 + 1, CFG)
    rows = {(a.group, a.window): a for a in report.activities}
    owners = {(o.owner, o.window): o.counts for rows in report.owner_activities.values()
              for o in rows}
    n = 1 if in_window else 0
    for group in ("A", "all"):
        assert rows[(group, "30d")].counts == (n, n, n)
        assert rows[(group, "30d")].per_won_deal == per_won
        assert rows[(group, "all")].counts == ((1, 1, 1) if day <= _day("2026-03-10")
                                               else (0, 0, 0))
    assert owners[("o1", "30d")] == (n, n, n)


def test_activity_metrics_with_their_counts_and_the_ratio() -> None:
    snap = Snapshot(buckets={("A", 20_490): [0, 4, 0, 0, 0, 0]},
                    activities={("A", 20_490): [5, 2, 1], ("B", 20_480): [1, 0, 0]},
                    owner_activities={("o1", 20_490): [5, 2, 1], ("o2", 20_480): [1, 0, 0]})
    registry = CollectorRegistry()
    PulseCollector(Source(snap), registry)
    get = registry.get_sample_value
    assert get("pulse_activities", {"team": "A", "kind": "call", "window": "30d"}) == 5
    assert get("pulse_activities", {"team": "all", "kind": "call", "window": "30d"}) == 6
    assert get("pulse_activities", {"team": "B", "kind": "meeting", "window": "30d"}) == 0
    assert get("pulse_activities_per_won_deal", {"team": "A", "window": "30d"}) == 8 / 4
    assert get("pulse_activities_per_won_deal", {"team": "all", "window": "30d"}) == 9 / 4
    assert get("pulse_activities_per_won_deal", {"team": "B", "window": "30d"}) is None
    assert get("pulse_owner_activities", {"owner": "o2", "kind": "call", "window": "30d"}) == 1
    assert get("pulse_owner_activities", {"owner": "o1", "kind": "email", "window": "all"}) == 2
