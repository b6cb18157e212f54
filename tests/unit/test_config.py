"""Settings from the environment."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from stream_app.config import Settings


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


@pytest.mark.parametrize(("name", "value"), [
    ("PULSE_CLOCK", "sundial"),
    ("PULSE_WINDOWS_DAYS", "[0]"),
    ("PULSE_FX_RATES", '{"EUR": "1"}'),
    ("PULSE_STAGES", '[{"name": "A", "probability": 2}]'),
])
def test_invalid_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str,
                                      value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()
