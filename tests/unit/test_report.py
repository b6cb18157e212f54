"""KPI maths from aggregates: empty windows, boundaries, zero denominators, churn months."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from stream_app.kpi.report import Snapshot, build_report, snapshot_from_aggregates
from stream_app.kpi.windows import window_specs

STAGES = ("Prospecting", "Engaging")
PROB = {"Prospecting": Decimal("0.25"), "Engaging": Decimal("0.5")}


def _d(text: str) -> int:
    return (dt.date.fromisoformat(text) - dt.date(1970, 1, 1)).days


def _ms(text: str) -> int:
    return _d(text) * 86_400_000 + 12 * 3_600_000


def _window(report, group: str, window: str):
    return next(w for w in report.windows if w.group == group and w.window == window)


def test_empty_snapshot_exports_zero_counts_and_no_ratios() -> None:
    report = build_report(Snapshot(), _ms("2026-03-10"), window_specs((30,)), STAGES, PROB)
    w = _window(report, "all", "30d")
    assert (w.created, w.won, w.lost, w.won_cents) == (0, 0, 0, 0)
    assert w.win_rate is None and w.conversion is None and w.average_deal_cents is None
    assert w.sales_cycle_seconds is None and w.velocity_cents_per_second is None
    assert all(c.rate is None for c in report.churn)


@pytest.mark.parametrize(("bucket_day", "in_30d"), [
    ("2026-03-10", True),
    ("2026-02-09", True),
    ("2026-02-08", False),
    ("2026-03-11", False),
])
def test_trailing_window_boundaries(bucket_day: str, in_30d: bool) -> None:
    snap = Snapshot(buckets={("A", _d(bucket_day)): [1, 1, 0, 500, 86_400_000]})
    report = build_report(snap, _ms("2026-03-10"), window_specs((30,)), STAGES, PROB)
    assert _window(report, "A", "30d").created == (1 if in_30d else 0)
    assert _window(report, "A", "all").created == (0 if bucket_day > "2026-03-10" else 1)


def test_ratios_and_velocity() -> None:
    snap = Snapshot(
        buckets={("A", _d("2026-03-01")): [4, 2, 2, 30_000, 2 * 10 * 86_400_000],
                 ("B", _d("2026-03-02")): [1, 0, 1, 0, 0]},
        open={("A", "Engaging"): [3, 90_000], ("B", "Prospecting"): [1, 1_000]},
    )
    report = build_report(snap, _ms("2026-03-10"), window_specs((30,)), STAGES, PROB)
    a = _window(report, "A", "30d")
    assert a.win_rate == 0.5 and a.conversion == 0.5
    assert a.average_deal_cents == 15_000
    assert a.sales_cycle_seconds == 10 * 86_400
    assert a.velocity_deals_per_second == 2 / (10 * 86_400)
    assert a.velocity_cents_per_second == 3 * 0.5 * 15_000 / (10 * 86_400)
    b = _window(report, "B", "30d")
    assert b.win_rate == 0.0 and b.average_deal_cents is None
    assert b.velocity_cents_per_second is None
    total = _window(report, "all", "30d")
    assert (total.created, total.won, total.lost, total.open_deals) == (5, 2, 3, 4)
    weighted = {(s.group, s.stage): s.weighted_cents for s in report.stages}
    assert weighted[("A", "Engaging")] == 45_000
    assert weighted[("all", "Prospecting")] == 250


def test_churn_of_the_month_to_date_and_the_last_complete_month() -> None:
    snap = Snapshot(
        new_customers={_d("2026-01-10"): 10, _d("2026-02-05"): 4, _d("2026-03-02"): 2},
        churned={_d("2026-01-20"): 1, _d("2026-02-10"): 2, _d("2026-03-05"): 3,
                 _d("2026-03-20"): 5},
    )
    report = build_report(snap, _ms("2026-03-10"), window_specs((30,)), STAGES, PROB)
    churn = {c.period: c for c in report.churn}
    assert (churn["last_month"].churned, churn["last_month"].active_at_start) == (2, 9)
    assert (churn["month_to_date"].churned, churn["month_to_date"].active_at_start) == (3, 11)
    assert churn["month_to_date"].rate == 3 / 11


def test_snapshot_keeps_only_owned_partitions_and_sums_them() -> None:
    items = [
        ("b\x1f0\x1fA\x1f20000", {"g": {"d": 1}, "v": [1, 0, 0, 0, 0]}),
        ("b\x1f1\x1fA\x1f20000", {"g": {"d": 1}, "v": [2, 0, 0, 0, 0]}),
        ("b\x1f2\x1fA\x1f20000", {"g": {"d": 1}, "v": [4, 0, 0, 0, 0]}),
        ("t\x1f1\x1f\x1f", {"g": {"d": 1}, "v": 123}),
        ("d\x1fdeal-1", {"g": {"d": 1}, "v": {}}),
    ]
    snap = snapshot_from_aggregates(items, {0, 1})
    assert snap.buckets == {("A", 20000): [3, 0, 0, 0, 0]}
    assert snap.latest_event_ms == 123


@pytest.mark.parametrize(
    ("kept", "buckets", "folded"),
    [
        ({"A", "B", "C"}, {("A", 1): [1, 0, 0, 0, 0], ("B", 1): [2, 0, 0, 0, 0],
                           ("C", 2): [4, 0, 0, 0, 0]}, 0),
        ({"A"}, {("A", 1): [1, 0, 0, 0, 0], ("other", 1): [2, 0, 0, 0, 0],
                 ("other", 2): [4, 0, 0, 0, 0]}, 2),
        (set(), {("other", 1): [3, 0, 0, 0, 0], ("other", 2): [4, 0, 0, 0, 0]}, 3),
    ],
)
def test_teams_over_the_cap_are_summed_into_other(
    kept: set[str], buckets: dict, folded: int
) -> None:
    items = [
        ("b\x1f0\x1fA\x1f1", {"g": {}, "v": [1, 0, 0, 0, 0]}),
        ("b\x1f0\x1fB\x1f1", {"g": {}, "v": [2, 0, 0, 0, 0]}),
        ("b\x1f1\x1fC\x1f2", {"g": {}, "v": [4, 0, 0, 0, 0]}),
        ("o\x1f1\x1fC\x1fN", {"g": {}, "v": [1, 500]}),
    ]
    snap = snapshot_from_aggregates(items, {0, 1}, lambda team: team in kept)
    assert snap.buckets == buckets
    assert snap.open == {("C" if "C" in kept else "other", "N"): [1, 500]}
    assert snap.folded_groups == folded
