"""Fixtures that start the real embedded servers (never mocks)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from stream_app.adapters.embedded import (
    EMBEDDED_FETCH_MAX_WAIT_SECONDS,
    EmbeddedServers,
    start_embedded_broker,
    start_embedded_redis,
)
from stream_app.config import Settings
from stream_app.tools.generator import GeneratorSettings, generate_events
from tests.integration.harness import LOCAL_CHECKPOINTS

#: The workers' group session in the tests: Tansu holds a JoinGroup for half of it and
#: keeps a SIGKILLed member for all of it, so every start and restart waits on it.
SESSION_TIMEOUT_SECONDS = 3.0


@pytest.fixture
def servers(tmp_path: Any) -> Iterator[EmbeddedServers]:
    with EmbeddedServers() as running:
        start_embedded_broker(running, str(tmp_path / "broker.log"))
        start_embedded_redis(running, str(tmp_path / "redis.log"))
        yield running


@pytest.fixture
def base_settings(servers: EmbeddedServers) -> Settings:
    return Settings(
        kafka_bootstrap=servers.kafka_bootstrap,
        redis_url=servers.redis_url,
        clock="event",
        partitions=4,
        session_timeout_seconds=SESSION_TIMEOUT_SECONDS,
        commit_interval_seconds=0.5,
        fetch_max_wait_seconds=EMBEDDED_FETCH_MAX_WAIT_SECONDS,
    )


def small_stream(seed: int = 11, months: int = 5, per_day: float = 6.0,
                 leads: float = 1.5) -> list[dict[str, Any]]:
    """A generated stream ending 2026-10-20 12:00 UTC; ``leads`` leads per deal (the fault
    tests use fewer: lead engagements are most of the events otherwise); the CRM updates
    the expected close or forecast category of a third of the deals."""
    end = dt.datetime(2026, 10, 20, 12, tzinfo=dt.UTC)
    cfg = GeneratorSettings(seed=seed, start=end - dt.timedelta(days=30 * months), end=end,
                            deals_per_day=per_day, accounts=120, churn_probability=0.5,
                            leads_per_deal=leads, plan_update_probability=0.3)
    return list(generate_events(cfg))


def last_time(events: list[dict[str, Any]]) -> dt.datetime:
    return max(dt.datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in events)


@pytest.fixture
def local_checkpoints() -> Iterator[None]:
    """Workers started in the test write local checkpoints every second to a data
    directory the test's workers share (the fault tests run with it)."""
    LOCAL_CHECKPOINTS[0] = True
    try:
        yield
    finally:
        LOCAL_CHECKPOINTS[0] = False
