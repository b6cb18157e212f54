"""KPI maths from aggregates: empty windows, boundaries, zero denominators, churn months."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from stream_app.kpi.report import ReportConfig, build_report
from stream_app.kpi.snapshot import Snapshot, snapshot_from_aggregates
from stream_app.kpi.windows import window_specs

STAGES = ("Prospecting", "Engaging")
PROB = {"Prospecting": Decimal("0.25"), "Engaging": Decimal("0.5")}
CFG = ReportConfig(window_specs((30,)), STAGES, PROB)


def _d(text: str) -> int:
    return (dt.date.fromisoformat(text) - dt.date(1970, 1, 1)).days


def _ms(text: str) -> int:
    return _d(text) * 86_400_000 + 12 * 3_600_000


def _window(report, group: str, window: str):
    return next(w for w in report.windows if w.group == group and w.window == window)


def test_empty_snapshot_exports_zero_counts_and_no_ratios() -> None:
    report = build_report(Snapshot(), _ms("2026-03-10"), CFG)
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
    snap = Snapshot(buckets={("A", _d(bucket_day)): [1, 1, 0, 500, 86_400_000, 0]})
    report = build_report(snap, _ms("2026-03-10"), CFG)
    assert _window(report, "A", "30d").created == (1 if in_30d else 0)
    assert _window(report, "A", "all").created == (0 if bucket_day > "2026-03-10" else 1)


def test_ratios_and_velocity() -> None:
    snap = Snapshot(
        buckets={("A", _d("2026-03-01")): [4, 2, 2, 30_000, 2 * 10 * 86_400_000, 0],
                 ("B", _d("2026-03-02")): [1, 0, 1, 0, 0, 0]},
        open={("A", "Engaging", 1): [3, 90_000], ("B", "Prospecting", 1): [1, 1_000]},
    )
    report = build_report(snap, _ms("2026-03-10"), CFG)
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
    report = build_report(snap, _ms("2026-03-10"), CFG)
    churn = {c.period: c for c in report.churn}
    assert (churn["last_month"].churned, churn["last_month"].active_at_start) == (2, 9)
    assert (churn["month_to_date"].churned, churn["month_to_date"].active_at_start) == (3, 11)
    assert churn["month_to_date"].rate == 3 / 11


def test_churn_rate_counts_only_the_starting_cohort_and_reports_new_customers_lost() -> None:
    snap = Snapshot(
        new_customers={_d("2026-01-05"): 2, _d("2026-02-10"): 2, _d("2026-03-02"): 4},
        churned={_d("2026-03-05"): 2},
        new_churned={_d("2026-02-20"): 1, _d("2026-03-08"): 3},
    )
    report = build_report(snap, _ms("2026-03-10"), CFG)
    churn = {c.period: c for c in report.churn}
    march = churn["month_to_date"]
    assert (march.churned, march.new_customers_churned, march.active_at_start) == (2, 3, 3)
    assert march.rate == 2 / 3
    february = churn["last_month"]
    assert (february.churned, february.new_customers_churned) == (0, 1)
    assert february.active_at_start == 2
    assert report.clv is not None and report.clv.churned == 6


def test_snapshot_keeps_only_owned_partitions_and_sums_them() -> None:
    items = [
        ("b\x1f0\x1fA\x1f20000", {"g": {"d": 1}, "v": [1, 0, 0, 0, 0, 0]}),
        ("b\x1f1\x1fA\x1f20000", {"g": {"d": 1}, "v": [2, 0, 0, 0, 0, 0]}),
        ("b\x1f2\x1fA\x1f20000", {"g": {"d": 1}, "v": [4, 0, 0, 0, 0, 0]}),
        ("t\x1f1\x1f\x1f", {"g": {"d": 1}, "v": 123}),
        ("d\x1fdeal-1", {"g": {"d": 1}, "v": {}}),
    ]
    snap = snapshot_from_aggregates(items, {0, 1})
    assert snap.buckets == {("A", 20000): [3, 0, 0, 0, 0, 0]}
    assert snap.latest_event_ms == 123


@pytest.mark.parametrize(
    ("kept", "buckets", "folded"),
    [
        ({"A", "B", "C"}, {("A", 1): [1, 0, 0, 0, 0, 0], ("B", 1): [2, 0, 0, 0, 0, 0],
                           ("C", 2): [4, 0, 0, 0, 0, 0]}, 0),
        ({"A"}, {("A", 1): [1, 0, 0, 0, 0, 0], ("(other)", 1): [2, 0, 0, 0, 0, 0],
                 ("(other)", 2): [4, 0, 0, 0, 0, 0]}, 2),
        (set(), {("(other)", 1): [3, 0, 0, 0, 0, 0], ("(other)", 2): [4, 0, 0, 0, 0, 0]}, 3),
    ],
)
def test_teams_over_the_cap_are_summed_into_other(
    kept: set[str], buckets: dict, folded: int
) -> None:
    items = [
        ("b\x1f0\x1fA\x1f1", {"g": {}, "v": [1, 0, 0, 0, 0, 0]}),
        ("b\x1f0\x1fB\x1f1", {"g": {}, "v": [2, 0, 0, 0, 0, 0]}),
        ("b\x1f1\x1fC\x1f2", {"g": {}, "v": [4, 0, 0, 0, 0, 0]}),
        ("o\x1f1\x1fC\x1f7:N", {"g": {}, "v": [1, 500]}),
        ("r\x1f1\x1fWeb\x1f2", {"g": {}, "v": [1, 0, 0, 0]}),
    ]
    snap = snapshot_from_aggregates(items, {0, 1}, lambda label, value: value in kept)
    assert snap.buckets == buckets
    assert snap.open == {("C" if "C" in kept else "(other)", "N", 7): [1, 500]}
    assert snap.dimensions == {("source", "(other)", 2): [1, 0, 0, 0]}
    counts = {label: len(values) for label, values in snap.folded.items()}
    assert counts == ({"team": folded} if folded else {}) | {"source": 1}


def _stage(report, group: str, stage: str):
    return next(s for s in report.stages if s.group == group and s.stage == stage)


@pytest.mark.parametrize(("entered", "stuck"), [
    ("2026-02-08", False),  # 30 days before 2026-03-10: not more than 30
    ("2026-02-07", True),
    ("2026-02-09", False),
    ("2026-03-10", False),
])
def test_stuck_means_more_than_stuck_days_before_t(entered: str, stuck: bool) -> None:
    snap = Snapshot(open={("A", "Engaging", _d(entered)): [1, 700]})
    stage = _stage(build_report(snap, _ms("2026-03-10"), CFG), "A", "Engaging")
    assert (stage.count, stage.cents) == (1, 700)
    assert (stage.stuck_count, stage.stuck_cents) == ((1, 700) if stuck else (0, 0))


def test_stints_bottleneck_and_forward_share() -> None:
    snap = Snapshot(stints={
        ("A", "Prospecting", _d("2026-03-01")): [2, 4 * 86_400_000, 1, 1, 0, *[0] * 10],
        ("A", "Engaging", _d("2026-03-02")): [1, 5 * 86_400_000, 0, 0, 1, *[0] * 10],
        ("A", "Engaging", _d("2026-01-02")): [1, 90 * 86_400_000, 1, 0, 0, *[0] * 10],
    })
    report = build_report(snap, _ms("2026-03-10"), CFG)
    rows = {(s.group, s.stage, s.window): s for s in report.stints}
    assert rows[("A", "Prospecting", "30d")].mean_seconds == 2 * 86_400
    assert rows[("A", "Prospecting", "30d")].forward_ratio == 0.5
    assert rows[("A", "Engaging", "30d")].stints == 1
    assert rows[("A", "Engaging", "all")].stints == 2
    neck = {(b.group, b.window): (b.stage, b.mean_seconds) for b in report.bottlenecks}
    assert neck[("A", "30d")] == ("Engaging", 5 * 86_400)
    assert neck[("all", "all")] == ("Engaging", 47.5 * 86_400)


@pytest.mark.parametrize(("as_of", "mtd", "same_days", "last", "before"), [
    ("2026-03-10", 5, 2, 2 + 3, 7),
    ("2026-03-31", 5 + 11, 2 + 3, 2 + 3, 7),
    ("2026-03-01", 0, 2, 2 + 3, 7),
])
def test_monthly_growth_ranges(as_of: str, mtd: int, same_days: int, last: int,
                               before: int) -> None:
    won = {"2026-01-31": 7, "2026-02-01": 2, "2026-02-28": 3, "2026-03-02": 5,
           "2026-03-31": 11}
    snap = Snapshot(buckets={("A", _d(day)): [0, 1, 0, cents, 0, 0] for day, cents in won.items()})
    report = build_report(snap, _ms(as_of), CFG)
    growth = next(g for g in report.growth if g.group == "A")
    assert (growth.month_to_date_cents, growth.same_days_cents, growth.last_month_cents,
            growth.month_before_cents) == (mtd, same_days, last, before)
    assert growth.last_month_growth == (last - before) / before


@pytest.mark.parametrize(("active", "churned", "lifespan"), [
    (10, 2, 5.0), (10, 0, 10.0), (0, 0, 10.0), (0, 3, None), (30, 1, 10.0),
])
def test_clv_lifespan_is_capped(active: int, churned: int, lifespan: float | None) -> None:
    start = _d("2026-03-10") - 364
    snap = Snapshot(
        buckets={("A", _d("2026-03-01")): [0, 4, 0, 4000, 0, 3]},
        new_customers={start - 1: active} if active else {},
        churned={_d("2026-03-02"): churned} if churned else {},
        buyer_deltas={_d("2026-03-01"): 2},
    )
    clv = build_report(snap, _ms("2026-03-10"), CFG).clv
    assert clv is not None
    assert (clv.average_purchase_cents, clv.purchase_frequency) == (1000, 1.5)
    assert clv.lifespan_years == lifespan
    assert clv.lifetime_value_cents == (None if lifespan is None else 1000 * 1.5 * lifespan)


def test_quota_coverage_attainment_and_required_coverage() -> None:
    snap = Snapshot(
        buckets={("A", _d("2026-03-01")): [0, 1, 3, 0, 0, 0]},
        open={("A", "Engaging", 1): [2, 30_000], ("B", "Engaging", 1): [1, 5_000]},
        quota_cents={("o1", "2026-03"): 4_000, ("o2", "2026-03"): 6_000,
                     ("o1", "2026-Q1"): 20_000, ("o3", "2026-02"): 5_000,
                     ("o1", "2025-12"): 1},
        quota_team={("o1", "2026-03"): "A", ("o2", "2026-03"): "A", ("o1", "2026-Q1"): "A",
                    ("o3", "2026-02"): "B", ("o1", "2025-12"): "A"},
        owner_won={("o1", "2026-03"): 8_000, ("o2", "2026-03"): 4_000,
                   ("o3", "2026-02"): 6_000, ("o1", "2026-01"): 1_000},
        owner_kept={"o1": True, "o2": True, "o3": False},
    )
    report = build_report(snap, _ms("2026-03-10"), CFG)
    quotas = {(q.group, q.period): q for q in report.quotas}
    assert set(quotas) == {("A", "month"), ("all", "month"), ("A", "quarter"),
                           ("all", "quarter"), ("B", "last_month"), ("all", "last_month")}
    month = quotas[("A", "month")]
    assert (month.quota_cents, month.owners, month.owners_at_quota, month.won_cents) == \
        (10_000, 2, 1, 12_000)
    assert month.coverage == 3.0 and month.share_at_quota == 0.5
    assert month.remaining_cents == -2_000 and month.remaining_coverage is None
    quarter = quotas[("all", "quarter")]
    assert quarter.won_cents == 9_000
    assert quarter.remaining_coverage == 35_000 / 11_000
    assert quotas[("B", "last_month")].owners_at_quota == 1
    attainment = {(a.owner, a.period): a.attainment
                  for rows in report.attainment.values() for a in rows}
    assert all(a.owner == owner for owner, rows in report.attainment.items() for a in rows)
    assert attainment == {("o1", "month"): 2.0, ("o2", "month"): 4_000 / 6_000,
                          ("o1", "quarter"): 9_000 / 20_000,
                          ("(other)", "last_month"): 6_000 / 5_000}
    required = {r.group: r.required_coverage for r in report.required_coverage}
    assert required == {"A": 4.0, "B": None, "all": 4.0}


def test_owner_and_quota_team_caps_apply_at_export() -> None:
    items = [("a\x1f0\x1fo1\x1f2026-03|A", {"g": {}, "v": [100, 1]}),
             ("a\x1f0\x1fo2\x1f2026-03|Z", {"g": {}, "v": [100, 1]}),
             ("y\x1f0\x1fo2\x1f2026-03", {"g": {}, "v": [150]})]
    snap = snapshot_from_aggregates(items, {0}, lambda label, value: value in {"o1", "A"})
    assert snap.owner_kept == {"o1": True, "o2": False}
    assert snap.quota_team == {("o1", "2026-03"): "A", ("o2", "2026-03"): "(other)"}
    assert snap.folded == {"owner": {"o2"}, "team": {"Z"}}
    report = build_report(snap, _ms("2026-03-10"), CFG)
    quotas = {(q.group, q.period): q.owners_at_quota for q in report.quotas}
    assert quotas[("(other)", "month")] == 1 and quotas[("all", "month")] == 1


@pytest.mark.parametrize(("kept", "owners"), [
    ({"o1", "o2"}, {"o1": (2, 1, 1, 400, 2), "o2": (1, 0, 0, 0, 0)}),
    ({"o1"}, {"o1": (2, 1, 1, 400, 2), "(other)": (1, 0, 0, 0, 0)}),
    (set(), {"(other)": (3, 1, 1, 400, 2)}),
])
def test_owner_deals_and_pipeline_per_window_with_the_owner_cap(
    kept: set[str], owners: dict[str, tuple[int, ...]]
) -> None:
    day = _d("2026-03-01")
    items = [(f"s\x1f0\x1fo1\x1f{day}", {"g": {}, "v": [2, 1, 1, 400, 2 * 86_400_000]}),
             (f"s\x1f1\x1fo1\x1f{day - 60}", {"g": {}, "v": [5, 5, 0, 1_000, 0]}),
             (f"s\x1f1\x1fo2\x1f{day}", {"g": {}, "v": [1, 0, 0, 0, 0]}),
             ("j\x1f0\x1fo1\x1fEngaging", {"g": {}, "v": [2, 1_000]}),
             ("j\x1f1\x1fo2\x1fProspecting", {"g": {}, "v": [1, 400]}),
             ("j\x1f1\x1fo2\x1fGone", {"g": {}, "v": [1, 100]})]
    snap = snapshot_from_aggregates(items, {0, 1}, lambda label, value: value in kept)
    report = build_report(snap, _ms("2026-03-10"), CFG)
    window = {d.owner: (d.created, d.won, d.lost, d.won_cents, d.sales_cycle_seconds)
              for rows in report.owner_deals.values() for d in rows if d.window == "30d"}
    want = {owner: (*v[:4], v[4] * 86_400.0 / v[1] if v[1] else None)
            for owner, v in owners.items()}
    assert window == want
    everything = {d.owner: d.won for rows in report.owner_deals.values() for d in rows
                  if d.window == "all"}
    assert sum(everything.values()) == 6
    pipeline = {p.owner: (p.open_deals, p.cents, p.weighted_cents)
                for rows in report.owner_pipeline.values() for p in rows}
    o1, o2 = (2, 1_000, 500.0), (2, 500, 100.0)  # a stage not configured weighs nothing
    assert pipeline == ({"o1": o1, "o2": o2} if kept == {"o1", "o2"} else
                        {"o1": o1, "(other)": o2} if kept else {"(other)": (4, 1_500, 600.0)})
    assert snap.folded == ({"owner": {"o1", "o2"} - kept} if kept != {"o1", "o2"} else {})


@pytest.mark.parametrize(("since_days_before_t", "open_at_t", "stuck_at_t"), [
    ((0,), (1, 100), (0, 0)),
    ((30,), (1, 100), (0, 0)),  # 30 days before T's day: not yet stuck
    ((31,), (1, 100), (1, 100)),
    ((40, 31, 30, 1), (4, 400), (2, 200)),
    ((-2,), (1, 100), (0, 0)),  # a stage begun after T's day: open, not stuck
    ((-2, 45), (2, 200), (1, 100)),
])
def test_open_and_stuck_pipeline_by_the_day_the_stage_began(
        since_days_before_t: tuple[int, ...], open_at_t: tuple[int, int],
        stuck_at_t: tuple[int, int]) -> None:
    """stuck_days 30: stuck once the stage began more than 30 days before T's day."""
    day = _ms("2026-03-10") // 86_400_000
    snap = Snapshot(open={("A", "Prospecting", day - before): [1, 100]
                          for before in since_days_before_t})
    report = build_report(snap, _ms("2026-03-10") + 3_600_000, CFG)
    for group in ("A", "all"):
        stage = next(s for s in report.stages if (s.group, s.stage) == (group, "Prospecting"))
        assert (stage.count, stage.cents) == open_at_t
        assert (stage.stuck_count, stage.stuck_cents) == stuck_at_t
