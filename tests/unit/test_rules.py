"""Prometheus rules: promtool checks and unit tests, and the conventions they follow."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.prometheus_tools import require_binary

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))


def _run(*args: str) -> str:
    done = subprocess.run([require_binary("promtool"), *args], cwd=PROMETHEUS,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_accepts_the_config_and_every_rule_file() -> None:
    _run("check", "config", "prometheus.yml")
    _run("check", "rules", *[str(p) for p in RULES])


#: The promtool unit test files (the day-long ones are evaluated every 5 minutes).
UNIT_TESTS = ("tests/alerts_test.yml", "tests/day_long_test.yml")


def test_promtool_unit_tests_pass() -> None:
    out = _run("test", "rules", *UNIT_TESTS)
    assert out.count("SUCCESS") == len(UNIT_TESTS), out


def _rules(kind: str) -> list[dict]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if kind in rule]


def test_recording_rules_are_named_level_metric_operations() -> None:
    names = [rule["record"] for rule in _rules("record")]
    assert names
    for name in names:
        assert re.fullmatch(r"[a-z_]+:pulse_[a-z_]+:[a-z0-9_]+", name), name


def test_every_alert_is_documented_and_tested_firing_and_not_firing() -> None:
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    tests = [test for name in UNIT_TESTS
             for test in yaml.safe_load((PROMETHEUS / name).read_text())["tests"]]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in _rules("alert"):
        name = rule["alert"]
        assert rule.get("for") and rule["labels"]["severity"] in ("critical", "warning", "info")
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        assert notes["runbook_url"].endswith(f"docs/runbooks.md#{name.lower()}"), name
        assert f"\n## {name}\n" in runbooks, name
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no firing case"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no silent case"


def test_amtool_accepts_the_alertmanager_config() -> None:
    require_binary("promtool")
    amtool = shutil.which("amtool")
    assert amtool, "amtool comes with Debian's prometheus-alertmanager package"
    done = subprocess.run([amtool, "check-config", "alertmanager.yml"],
                          cwd=ROOT / "deploy" / "alertmanager", capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_business_alerts_reach_sales_ops_and_platform_alerts_the_on_call_receiver() -> None:
    require_binary("promtool")
    amtool = shutil.which("amtool")
    assert amtool, "amtool comes with Debian's prometheus-alertmanager package"
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    expected = {"business": "sales-ops", "platform": "on-call"}
    assert {rule["labels"]["category"] for rule in alerts} == set(expected)
    for rule in alerts:
        labels = {**rule["labels"], "alertname": rule["alert"], "team": "A"}
        done = subprocess.run(
            [amtool, "config", "routes", "test", "--config.file=alertmanager.yml",
             *(f"{k}={v}" for k, v in labels.items())],
            cwd=ROOT / "deploy" / "alertmanager", capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == expected[rule["labels"]["category"]], (rule["alert"],
                                                                           done.stdout)
