"""End to end on real servers: the KPI catalogue (stages, stuck deals, waterfall, sources,
products, competitors, growth, CLV) equals the batch computation, on one and two workers,
over a stream longer than a year and over hand-made period boundaries."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from stream_app.config import Settings
from tests.integration.conftest import last_time, small_stream
from tests.integration.harness import (
    Worker,
    assert_matches,
    merge_additive,
    produce,
    read_topic,
    settled,
    worker_settings,
)
from tests.reference import ADDITIVE, expected_hot_events, expected_metrics

pytestmark = pytest.mark.e2e


def _key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_fifteen_months_on_two_workers_then_on_the_survivor(
    base_settings: Settings, tmp_path: Path
) -> None:
    events = small_stream(seed=21, months=15, per_day=2.5)
    workers = [Worker(worker_settings(base_settings), tmp_path / f"w{i}.log").start()
               for i in range(2)]
    try:
        produce(base_settings, events)
        as_of = last_time(events)
        expected = expected_metrics(events, as_of)
        assert _key("pulse_customer_lifetime_value") in expected
        merged = merge_additive(settled(workers, base_settings.partitions, as_of))
        additive = [k for k in expected if k[0] in ADDITIVE]
        assert assert_matches(expected, merged, names=ADDITIVE) == len(additive)
        apv = Fraction(merged[_key("pulse_clv_won_amount")]) / int(
            merged[_key("pulse_clv_won_deals")])
        pf = Fraction(int(merged[_key("pulse_clv_won_deals_with_account")]),
                      int(merged[_key("pulse_clv_customers_buying")]))
        lifespan = min(Fraction(int(merged[_key("pulse_clv_customers_active_at_start")]),
                                int(merged[_key("pulse_clv_customers_churned")])), 10)
        want = expected[_key("pulse_customer_lifetime_value")]
        assert abs(float(apv * pf * lifespan) - float(want)) <= 1e-9 * float(want)
        hot = expected_hot_events(events)
        published = read_topic(base_settings, base_settings.topic_lead_scores)
        assert len(published) == len(hot) > 20
        assert {json.loads(m.value)["id"] for m in published} == hot
        assert {json.loads(m.value)["type"] for m in published} == {"lead.hot"}
        workers.pop().stop()
        [alone] = settled(workers, base_settings.partitions, as_of)
        assert assert_matches(expected, alone) == len(expected) > 1000
    finally:
        for worker in workers:
            worker.discard()


def _event(n: int, event_type: str, time: str, **data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"edge-{n}", "source": "test/edges", "type": event_type,
            "time": time, "data": data}


def _created(n: int, deal: str, time: str, team: str, account: str | None = None,
             amount: str = "1000.00", owner: str = "o-1") -> dict[str, Any]:
    return _event(n, "deal.created", time, deal_id=deal, account_id=account, owner_id=owner,
                  team=team, amount=amount, currency="USD", stage="Prospecting",
                  source="Web" if n % 2 else None, product="Pro")


def _quota(n: int, time: str, owner: str, team: str, period: str, amount: str,
           currency: str = "USD") -> dict[str, Any]:
    return _event(n, "quota.set", time, owner_id=owner, team=team, period=period,
                  amount=amount, currency=currency)


EDGES = [
    _created(1, "A", "2026-08-31T23:59:59.999Z", "North", "acc-1"),
    _event(2, "deal.won", "2026-09-01T00:00:00Z", deal_id="A", amount="1200.00",
           competitor="Acme", competitor_price="1000.00"),
    _created(3, "B", "2026-09-30T23:59:59Z", "North", "acc-2", amount="500.00"),
    _event(4, "deal.stage_changed", "2026-10-01T00:00:00Z", deal_id="B",
           from_stage="Prospecting", to_stage="Proposal", amount="650.00"),
    _event(5, "deal.stage_changed", "2026-10-02T00:00:00Z", deal_id="B",
           from_stage="Proposal", to_stage="Qualification"),
    _event(6, "deal.lost", "2026-10-31T23:59:59.999Z", deal_id="B", competitor="Acme"),
    _created(7, "C", "2026-10-01T00:00:00Z", "North", "acc-1", amount="300.00"),
    _event(8, "deal.won", "2026-11-30T23:59:59.999Z", deal_id="C", amount="300.00"),
    _event(9, "customer.churned", "2026-12-01T00:00:00Z", account_id="acc-1",
           competitor="Globex"),
    _event(10, "customer.churned", "2026-08-01T00:00:00Z", account_id="acc-2"),
    _created(11, "E", "2026-12-20T09:00:00Z", "South", amount="700.00"),
    _created(12, "F", "2027-01-16T00:00:00Z", "South", amount="800.00"),
    _created(13, "G", "2027-01-15T23:59:59Z", "South", amount="900.00"),
    _created(14, "D", "2027-02-15T12:00:00Z", "South", amount="100.00"),
    _quota(15, "2027-02-01T00:00:00Z", "o-1", "North", "2027-02", "500.00"),
    _quota(16, "2027-02-14T00:00:00Z", "o-1", "North", "2027-02", "800.00"),
    _quota(17, "2027-01-31T00:00:00Z", "o-1", "North", "2027-02", "50.00"),
    _quota(18, "2026-10-01T00:00:00Z", "o-1", "North", "2026-Q4", "1000.00", "EUR"),
    _quota(19, "2027-01-01T00:00:00Z", "o-2", "South", "2027-01", "100.00"),
    _quota(20, "2027-01-01T00:00:00Z", "o-3", "South", "2027-01", "0"),
    _event(21, "activity.logged", "2027-01-16T23:59:59.999Z", owner_id="o-1", team="North",
           kind="call"),
    _event(22, "activity.logged", "2027-01-17T00:00:00Z", owner_id="o-1", team="North",
           kind="email", activity_id="T-1"),
    _event(23, "activity.logged", "2027-02-01T00:00:00Z", owner_id="o-1", team="North",
           kind="meeting", activity_id="T-1"),
    _event(24, "activity.logged", "2026-11-18T00:00:00Z", owner_id="o-2", team="South",
           kind="meeting", deal_id="E"),
    _event(25, "activity.logged", "2026-11-17T23:59:59Z", owner_id="o-2", team="South",
           kind="call"),
    # acc-3 left before it was first won (a win-back), then churned in January: the later
    # notice is its churn. acc-4 was won and lost inside February: a new customer lost.
    _event(26, "customer.churned", "2026-06-01T00:00:00Z", account_id="acc-3"),
    _created(27, "H", "2026-12-01T00:00:00Z", "West", "acc-3", owner="o-9"),
    _event(28, "deal.won", "2026-12-10T00:00:00Z", deal_id="H", amount="1000.00"),
    _event(29, "customer.churned", "2027-01-20T00:00:00Z", account_id="acc-3",
           competitor="Initech"),
    _created(30, "I", "2027-02-01T00:00:00Z", "West", "acc-4", owner="o-9"),
    _event(31, "deal.won", "2027-02-03T00:00:00Z", deal_id="I", amount="400.00"),
    _event(32, "customer.churned", "2027-02-10T00:00:00Z", account_id="acc-4"),
    _event(33, "customer.churned", "2027-02-11T00:00:00Z", account_id="acc-4"),
]


def test_period_boundaries_empty_windows_stuck_thresholds_and_quota_changes(
    base_settings: Settings, tmp_path: Path
) -> None:
    worker = Worker(worker_settings(base_settings), tmp_path / "worker.log").start()
    try:
        produce(base_settings, EDGES)
        as_of = last_time(EDGES)
        [samples] = settled([worker], base_settings.partitions, as_of)
        expected = expected_metrics(EDGES, as_of)
        assert assert_matches(expected, samples) == len(expected)
        stuck = {labels: v for (name, labels), v in expected.items()
                 if name == "pulse_stuck_deals" and v}
        assert stuck == {(("stage", "Prospecting"), ("team", "South")): 2,
                         (("stage", "Prospecting"), ("team", "all")): 2}
        assert expected[_key("pulse_created_deals", team="North", window="30d")] == 0
        assert _key("pulse_win_rate_ratio", team="North", window="30d") not in expected
        assert expected[_key("pulse_clv_customers_buying")] == 3
        churn = {(name, dict(labels)["period"]): v for (name, labels), v in expected.items()
                 if name in ("pulse_customers_churned", "pulse_new_customers_churned",
                             "pulse_customers_active_at_period_start")}
        assert churn == {("pulse_customers_churned", "last_month"): 1,
                         ("pulse_new_customers_churned", "last_month"): 0,
                         ("pulse_customers_active_at_period_start", "last_month"): 1,
                         ("pulse_customers_churned", "month_to_date"): 0,
                         ("pulse_new_customers_churned", "month_to_date"): 1,
                         ("pulse_customers_active_at_period_start", "month_to_date"): 0}
        assert expected[_key("pulse_competitor_customers_churned", competitor="Initech",
                             window="30d")] == 1
        assert expected[_key("pulse_owner_quota_amount", owner="o-1", period="month")] == 800
        assert expected[_key("pulse_quota_attainment_ratio", owner="o-1",
                             period="last_quarter")] == Fraction(300, 1080)
        assert expected[_key("pulse_quota_owners_at_quota", team="South",
                             period="last_month")] == 1
        assert _key("pulse_quota_attainment_ratio", owner="o-3",
                    period="last_month") not in expected
        activities = {(labels, v) for (name, labels), v in expected.items()
                      if name == "pulse_activities" and v and dict(labels)["window"] != "all"}
        assert activities == {
            ((("kind", "email"), ("team", t), ("window", w)), 1)
            for t in ("North", "all") for w in ("30d", "90d")} | {
            ((("kind", "call"), ("team", t), ("window", "90d")), 1) for t in ("North", "all")} | {
            ((("kind", "meeting"), ("team", t), ("window", "90d")), 1) for t in ("South", "all")}
        assert _key("pulse_activities_per_won_deal", team="North", window="30d") not in expected
        assert expected[_key("pulse_activities_per_won_deal", team="North", window="90d")] == 2
    finally:
        worker.discard()
