"""Settings for people: one line per invalid variable, and the effective configuration
with where each value came from (``stream-app config``)."""

from __future__ import annotations

__all__ = ["GROUPS", "SettingRow", "effective_settings", "env_name", "invalid_setting_lines",
           "render_settings"]

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from stream_app.config import Settings

#: Setting groups, in the order ``stream-app config`` lists them: (title, field prefixes).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Kafka", ("kafka_", "partitions", "app_id", "session_timeout", "group_instance_id",
               "commit_interval", "table_standby", "batch_", "fetch_", "max_event_bytes",
               "replication_factor", "min_insync_replicas")),
    ("Redis", ("redis_", "dedup_")),
    ("Topics", ("topic_",)),
    ("KPIs", ("clock", "timezone", "fiscal_year", "windows_", "stages", "reporting_currency",
              "fx_rates", "stuck_days", "clv_", "late_grace", "lead_scoring", "hot_lead",
              "forecast_")),
    ("Label caps", ("max_teams", "max_owners", "max_sources", "max_products",
                    "max_competitors")),
    ("Operations", ("web_", "log_", "startup_", "liveness_", "recovery_", "data_dir", "checkpoint_",
                    "require_redis")),
    ("Ingest gateway", ("ingest_",)),
)

_MASK = "********"


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return f"PULSE_{field.upper()}"


def _group(field: str) -> str:
    for title, prefixes in GROUPS:
        if field.startswith(prefixes):
            return title
    return "Other"


def _secret(field: str) -> bool:
    annotation = str(Settings.model_fields[field].annotation)
    return "SecretStr" in annotation


def _env_form(value: Any) -> str:
    """A value as one would type it in the environment."""
    if isinstance(value, SecretStr):
        return _MASK
    if isinstance(value, tuple | list):
        items = [_env_form(item) for item in value]
        return ",".join(items)
    if isinstance(value, dict):
        return ",".join(f"{key}={_env_form(item)}" for key, item in value.items())
    if isinstance(value, BaseModel):
        fields = value.model_dump()
        if set(fields) == {"name", "probability"}:
            return f"{fields['name']}={fields['probability']}"
        return json.dumps(fields, default=str)
    if isinstance(value, Decimal):
        return format(value, "f")
    return "" if value is None else str(value)


def _example(field: str) -> str:
    info = Settings.model_fields[field]
    if _secret(field):
        return "redis://:password@redis:6379/0" if field == "redis_url" else "(a secret)"
    default = info.get_default(call_default_factory=True)
    if default is None:
        return {"kafka_bootstrap": "kafka-1:9092,kafka-2:9092",
                "kafka_sasl_username": "pulse", "kafka_ssl_cafile": "/etc/ssl/ca.pem",
                "lead_scoring_file": "/etc/pulse/scoring.yml"}.get(field, "...")
    return _env_form(default)


def invalid_setting_lines(error: ValidationError,
                          environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per invalid setting: variable, value as given (secrets masked), what was
    expected, an example."""
    environ = os.environ if environ is None else environ
    lines = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item["loc"]]
        message = str(item["msg"]).removeprefix("Value error, ")
        if not loc or loc[0] not in Settings.model_fields:
            lines.append(f"{message}")
            continue
        field = loc[0]
        name = env_name(field)
        given = environ.get(name)
        shown = _MASK if given is not None and _secret(field) else given
        where = f" (item {'.'.join(loc[1:])})" if len(loc) > 1 else ""
        value = f"={shown}" if shown is not None else " (unset)"
        lines.append(f"{name}{value}: {message}{where}; e.g. {name}={_example(field)}")
    return lines


@dataclass(frozen=True, slots=True)
class SettingRow:
    """One setting as ``stream-app config`` shows it."""

    group: str
    variable: str
    value: str
    source: str
    description: str


def effective_settings(settings: Settings,
                       environ: Mapping[str, str] | None = None) -> list[SettingRow]:
    """Every setting: its effective value (secrets masked) and where it came from
    (``environment`` or ``default``), in group order."""
    environ = os.environ if environ is None else environ
    rows = []
    for field, info in Settings.model_fields.items():
        name = env_name(field)
        value = getattr(settings, field)
        shown = _MASK if value is not None and _secret(field) else _env_form(value)
        source = "environment" if name in environ else "default"
        rows.append(SettingRow(_group(field), name, shown, source, info.description or ""))
    order = [title for title, _ in GROUPS] + ["Other"]
    return sorted(rows, key=lambda row: (order.index(row.group), row.variable))


def render_settings(rows: list[SettingRow]) -> str:
    """The rows as text, one block per group."""
    width = max(len(row.variable) for row in rows)
    values = [row.value if row.value != "" else "(unset)" for row in rows]
    value_width = min(max(len(value) for value in values), 40)
    out: list[str] = []
    group = None
    for row, value in zip(rows, values, strict=True):
        if row.group != group:
            group = row.group
            out.append(f"{'' if not out else chr(10)}# {group}")
        out.append(f"{row.variable:<{width}}  {value:<{value_width}}  {row.source}")
    return "\n".join(out) + "\n"
