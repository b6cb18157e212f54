"""The dashboards a sales leader reads: variables instead of hard-coded teams, units from
the reporting currency, thresholds that mean something, stages and buckets in order,
everything inside Grafana's 24-column grid, and the Grafana version compose runs."""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_app.config import Settings
from stream_app.tools.dashboards import BoardSettings, dashboard_files, panel_queries

ROOT = Path(__file__).resolve().parents[2]


def _boards(cfg: BoardSettings | None = None) -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in dashboard_files(cfg).items()}


def test_every_panel_has_a_unit_and_fits_the_grid_without_overlap() -> None:
    for name, board in _boards().items():
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            assert panel["fieldConfig"]["defaults"].get("unit"), (name, panel["title"])
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (name, panel["title"], pos)
            mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                    for y in range(pos["y"], pos["y"] + pos["h"])}
            assert not cells & mine, (name, panel["title"])
            cells |= mine


def test_queries_use_only_defined_variables_and_never_hard_code_team_all() -> None:
    for name, board in _boards().items():
        defined = {v["name"] for v in board.get("templating", {}).get("list", [])}
        for title, expr in panel_queries(json.dumps(board)):
            assert set(re.findall(r"\$(\w+)", expr)) <= defined, (name, title, expr)
            assert 'team="all"' not in expr, (name, title)
    executive = _boards()["executive.json"]
    assert {v["name"] for v in executive["templating"]["list"]} == {"team", "window"}
    assert {v["name"] for v in _boards()["rep.json"]["templating"]["list"]} >= {"owner"}
    assert {v["name"] for v in _boards()["leads.json"]["templating"]["list"]} >= {"source"}


def test_amounts_take_the_reporting_currency() -> None:
    def units(cfg: BoardSettings) -> set[str]:
        return {p["fieldConfig"]["defaults"]["unit"] for b in _boards(cfg).values()
                for p in b["panels"]}

    stages = Settings().stage_names
    assert "currencyEUR" in units(BoardSettings("EUR", stages, (10.0,)))
    assert "currencyUSD" not in units(BoardSettings("EUR", stages, (10.0,)))
    assert "suffix: CAD" in units(BoardSettings("CAD", stages, (10.0,)))


def _panel(board: str, title: str) -> dict[str, Any]:
    [found] = [p for p in _boards()[board]["panels"] if p["title"] == title]
    return found


@pytest.mark.parametrize(("board", "title", "red_below", "green_from"), [
    ("executive.json", "Coverage against required, this quarter", 1, 1),
    ("executive.json", "Reps at quota, last month", 0.6, 0.8),
])
def test_thresholds_turn_red_where_the_number_is_bad(board: str, title: str,
                                                     red_below: float,
                                                     green_from: float) -> None:
    steps = _panel(board, title)["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[0] == {"color": "red", "value": None}
    assert steps[1]["value"] == red_below
    assert steps[-1] == {"color": "green", "value": green_from}


def test_churn_turns_red_above_five_percent() -> None:
    steps = _panel("executive.json", "Customer churn, last month")[
        "fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps == [{"color": "green", "value": None}, {"color": "red", "value": 0.05}]


def test_stages_and_buckets_are_in_order() -> None:
    stages = Settings().stage_names
    legends = [t["legendFormat"] for t in _panel("pipeline.json",
                                                 "Open pipeline by stage")["targets"]]
    assert legends == list(stages)
    les = [re.search(r'le="([^"]+)"', t["expr"])[1]  # type: ignore[index]
           for t in _panel("leads.json", "Open leads by score")["targets"]]
    assert les[-1] == "+Inf"
    assert [float(le) for le in les[:-1]] == sorted(float(le) for le in les[:-1])
    days = [t["legendFormat"] for t in _panel("pipeline.json",
                                              "Stint length, all teams")["targets"]]
    assert days[0] == "<= 1 d" and days[-1] == "all"


def test_attainment_is_a_sorted_table_and_the_range_fits_90_day_kpis() -> None:
    attainment = _panel("executive.json", "Attainment by owner, this month")
    assert attainment["type"] == "table"
    assert attainment["targets"][0]["expr"].startswith("sort_desc(")
    for board in _boards().values():
        assert board["time"] == {"from": "now-90d", "to": "now"}


def test_the_missing_panels_are_there() -> None:
    titles = {p["title"] for b in _boards().values() for p in b["panels"]}
    assert {"Won revenue against quota", "Average deal size", "Sales cycle", "Deals created",
            "Stint length, all teams", "Attainment this month"} <= titles


def test_compose_runs_the_grafana_whose_schema_the_sdk_writes() -> None:
    sdk = version("grafana-foundation-sdk").split("!")[-1]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    image = compose["services"]["grafana"]["image"]
    assert image.split(":")[1].split(".")[:2] == sdk.split(".")[:2], (image, sdk)
