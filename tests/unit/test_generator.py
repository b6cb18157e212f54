"""The generator's expected closes: left as they were by default, tracking the real
closes (and pushed when they pass) when asked."""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from stream_app.cli import main
from stream_app.tools.generator import GeneratorSettings, generate_events

END = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def _deal_events(**overrides: Any) -> list[dict[str, Any]]:
    return [e for e in generate_events(GeneratorSettings(
        seed=7, start=END - dt.timedelta(days=240), end=END, deals_per_day=4,
        leads_per_deal=0, activities_per_deal=0, **overrides)) if e["type"].startswith("deal.")]


def _time(event: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(event["time"])


def test_by_default_every_expected_close_is_the_creation_plus_sixty_days() -> None:
    events = _deal_events()
    created = [e for e in events if e["type"] == "deal.created"]
    assert created and all(
        e["data"]["expected_close"] == (_time(e) + dt.timedelta(days=60)).date().isoformat()
        for e in created)
    assert not any(e["type"] == "deal.updated" and "expected_close" in e["data"]
                   for e in events)
    same_deals = _deal_events(expected_close_error_days=5.0)
    assert [e["data"]["deal_id"] for e in same_deals if e["type"] != "deal.updated"] == \
        [e["data"]["deal_id"] for e in events if e["type"] != "deal.updated"]


@pytest.mark.parametrize("error_days", [2.0, 10.0])
def test_expected_closes_track_the_wins_and_are_pushed_when_they_pass(
        error_days: float) -> None:
    events = _deal_events(expected_close_error_days=error_days)
    plans: dict[str, list[tuple[dt.datetime, dt.date]]] = defaultdict(list)
    closed: dict[str, tuple[str, dt.datetime]] = {}
    for e in events:
        data = e["data"]
        if data.get("expected_close"):
            plans[data["deal_id"]].append((_time(e), dt.date.fromisoformat(
                data["expected_close"])))
        if e["type"] in ("deal.won", "deal.lost") and data["deal_id"] not in closed:
            closed[data["deal_id"]] = (e["type"], _time(e))
    misses = []
    for deal_id, (kind, at) in closed.items():
        known = [expected for set_at, expected in plans[deal_id] if set_at < at]
        assert known, deal_id
        if kind == "deal.won":
            misses.append(abs((known[0] - at.date()).days))
        if len(known) < 7:  # at most six pushes
            assert known[-1] >= at.date() - dt.timedelta(days=6), (deal_id, known, at)
    # a normal error's median distance is 0.674 sd
    assert 0.4 * error_days <= statistics.median(misses) <= error_days + 1


def test_with_tracked_expected_closes_the_plan_updates_only_name_categories() -> None:
    events = _deal_events(expected_close_error_days=5.0, plan_update_probability=1.0)
    categories = [e for e in events if "forecast_category" in e["data"]]
    assert categories and not any("expected_close" in e["data"] for e in categories)
    untracked = _deal_events(plan_update_probability=1.0)
    assert any("expected_close" in e["data"] for e in untracked
               if "forecast_category" in e["data"])


def test_the_generate_command_takes_the_expected_close_options(tmp_path: Path) -> None:
    out = tmp_path / "stream.jsonl"
    assert main(["generate", "--months", "3", "--end", "2026-06-01T00:00:00Z",
                 "--expected-close-error-days", "5", "--plan-update-probability", "0.5",
                 "--out", str(out)]) == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    updates = [e["data"] for e in events if e["type"] == "deal.updated"]
    assert any(set(u) == {"deal_id", "expected_close"} for u in updates)
    assert any("forecast_category" in u for u in updates)
