"""End to end on real servers: every exported KPI equals the batch computation."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest

from stream_app.config import Settings
from tests.integration.conftest import last_time, small_stream
from tests.integration.harness import (
    Worker,
    assert_matches,
    merge_additive,
    metric_total,
    produce,
    settled,
    worker_settings,
)
from tests.reference import ADDITIVE, ReferenceConfig, expected_metrics

pytestmark = pytest.mark.e2e


def test_one_worker_exports_every_kpi_exactly(base_settings: Settings, tmp_path: Path) -> None:
    """In Los Angeles' days, with a fiscal year from February: the calendar settings reach
    the worker (the other end-to-end tests run on UTC days and calendar quarters)."""
    events = small_stream()
    settings = worker_settings(base_settings).model_copy(update={
        "timezone": "America/Los_Angeles", "fiscal_year_start_month": 2})
    worker = Worker(settings, tmp_path / "worker.log").start()
    try:
        produce(base_settings, events)
        as_of = last_time(events)
        [samples] = settled([worker], base_settings.partitions, as_of)
        expected = expected_metrics(events, as_of, ReferenceConfig(
            timezone="America/Los_Angeles", fiscal_year_start_month=2))
        compared = assert_matches(expected, samples, names=None)
        assert compared == len(expected) > 250
        assert samples[("pulse_customers_churned", (("period", "last_month"),))] > 0
        assert metric_total(samples, "pulse_events_processed_total") == len(events)
        # the forecast compared above is the current state's, computed beside the scrape
        assert samples[("pulse_forecast_stale", ())] == 0
        assert samples[("pulse_forecast_compute_seconds", ())] > 0
    finally:
        worker.discard()


def test_two_workers_on_four_partitions_sum_to_the_batch(
    base_settings: Settings, tmp_path: Path
) -> None:
    events = small_stream(seed=12)
    workers = [Worker(worker_settings(base_settings), tmp_path / f"w{i}.log").start()
               for i in range(2)]
    try:
        produce(base_settings, events)
        as_of = last_time(events)
        per_worker = settled(workers, base_settings.partitions, as_of)
        owned = [s[("pulse_owned_partitions", ())] for s in per_worker]
        assert sorted(owned) == [2.0, 2.0]
        merged = merge_additive(per_worker)
        expected = expected_metrics(events, as_of)
        additive = [k for k in expected if k[0] in ADDITIVE]
        assert assert_matches(expected, merged, names=ADDITIVE) == len(additive) > 150
        for window in ("30d", "90d", "all"):
            key = ("team", "all"), ("window", window)
            won = merged[("pulse_deals_won", key)]
            closed = merged[("pulse_deals_closed", key)]
            want = expected[("pulse_win_rate_ratio", key)]
            assert abs(won / closed - float(want)) <= 1e-9 * float(want)
    finally:
        for worker in workers:
            worker.discard()


@pytest.mark.parametrize("membership", [{}, {"PULSE_GROUP_INSTANCE_ID": "pulse-worker-0"}],
                         ids=["dynamic", "static"])
def test_restart_recovers_the_same_values_then_stays_exact(
    base_settings: Settings, tmp_path: Path, membership: dict[str, str]
) -> None:
    """Also with static membership, where the restarted worker takes the place of its
    SIGKILLed predecessor in the group instead of waiting for its session to expire."""
    events = small_stream(seed=13)
    half = len(events) // 2
    settings = worker_settings(base_settings)
    worker = Worker(settings, tmp_path / "before.log", env=membership).start()
    try:
        produce(base_settings, events[:half])
        as_of = last_time(events[:half])
        [before] = settled([worker], base_settings.partitions, as_of)
        worker.kill()
        worker = Worker(settings, tmp_path / "after.log", env=membership).start()
        [after] = settled([worker], base_settings.partitions, as_of)
        kpis = {k: v for k, v in before.items() if k[0] in ADDITIVE or k[0].endswith("_ratio")}
        assert kpis == {k: after[k] for k in kpis}
        assert_matches(expected_metrics(events[:half], as_of), after)
        produce(base_settings, events[half:])
        final_as_of = last_time(events)
        [final] = settled([worker], base_settings.partitions, final_as_of)
        assert_matches(expected_metrics(events, final_as_of), final)
    finally:
        worker.discard()


def test_duplicates_are_counted_once(base_settings: Settings, tmp_path: Path) -> None:
    events = small_stream(seed=14, months=3)
    rng = random.Random(5)
    stream = list(events)
    duplicated = rng.sample(events, 300)
    for event in duplicated:
        stream.insert(rng.randrange(len(stream) + 1), event)
    won = [e for e in events if e["type"] == "deal.won"][:40]
    second_wins = [{**e, "id": e["id"] + "-retry",
                    "time": (dt.datetime.fromisoformat(e["time"].replace("Z", "+00:00"))
                             + dt.timedelta(hours=3)).isoformat(),
                    "data": {**e["data"], "amount": "1.00"}} for e in won]
    stream.extend(second_wins)
    worker = Worker(worker_settings(base_settings), tmp_path / "worker.log").start()
    try:
        produce(base_settings, stream)
        as_of = max(last_time(events), last_time(second_wins))
        [samples] = settled([worker], base_settings.partitions, as_of)
        assert_matches(expected_metrics(stream, as_of), samples)
        assert metric_total(samples, "pulse_events_duplicate_total") == len(duplicated)
    finally:
        worker.discard()
