"""The worker as an operator runs it: dependencies not up yet, JSON logs without
secrets, liveness and readiness probes, SIGTERM as Kubernetes sends it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from stream_app.adapters.embedded import (
    EmbeddedServers,
    start_embedded_broker,
    start_embedded_redis,
)
from stream_app.adapters.processes import free_port
from stream_app.adapters.startup import EXIT_DEPENDENCY_UNREACHABLE
from stream_app.config import Settings
from stream_app.tools.scrape import get, scrape
from tests.integration.conftest import SESSION_TIMEOUT_SECONDS, last_time, small_stream
from tests.integration.harness import (
    Worker,
    assert_matches,
    produce,
    settled,
    wait_for_health,
    worker_settings,
)
from tests.reference import expected_metrics

#: Every worker of these tests writes local checkpoints, so each restart loads them.
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("local_checkpoints")]

REDIS_PASSWORD = "hunter2-redis-secret"
SASL_PASSWORD = "s3cr3t-sasl-password"


def _wait_for(check: Any, what: str, proc: subprocess.Popen[bytes] | None,
              timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        assert proc is None or proc.poll() is None, f"exited {proc.returncode} before {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _probe(worker: Worker, path: str) -> tuple[int, dict[str, Any]] | None:
    try:
        answer = get(f"http://127.0.0.1:{worker.settings.web_port}{path}", timeout=5)
    except httpx.HTTPError:
        return None
    return answer.status_code, answer.json()


def _json_lines(log: Path) -> list[dict[str, Any]]:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "message", "worker"} <= set(record), line
        parsed.append(record)
    return parsed


def test_a_worker_started_before_its_broker_waits_then_exports_exact_kpis_with_json_logs(
        tmp_path: Path) -> None:
    broker_port = free_port()
    with EmbeddedServers() as servers:
        redis_url = start_embedded_redis(servers, str(tmp_path / "redis.log"),
                                         password=REDIS_PASSWORD)
        settings = Settings(kafka_bootstrap=f"127.0.0.1:{broker_port}", redis_url=redis_url,
                            clock="event", partitions=2, web_port=free_port(),
                            session_timeout_seconds=SESSION_TIMEOUT_SECONDS,
                            commit_interval_seconds=0.5)
        log = tmp_path / "worker.log"
        worker = Worker(settings, log, env={"PULSE_LOG_FORMAT": "json",
                                            "PULSE_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
                                            "PULSE_STARTUP_TIMEOUT_SECONDS": "120"}).start()
        try:
            _wait_for(lambda: "(attempt 2:" in log.read_text(), "two failed attempts",
                      worker.proc)
            start_embedded_broker(servers, str(tmp_path / "broker.log"), port=broker_port)
            _wait_for(lambda: (_probe(worker, "/readyz") or (0,))[0] == 200, "ready",
                      worker.proc, timeout=90)
            status, live = _probe(worker, "/livez") or (0, {})
            assert status == 200 and live["live"] is True
            events = small_stream(seed=5, months=2, per_day=3)
            produce(settings, [*events, b'{"type": "deal.won", "id": "bad"}'])
            as_of = last_time(events)
            [samples] = settled([worker], settings.partitions, as_of)
            expected = expected_metrics(events, as_of)
            assert assert_matches(expected, samples) == len(expected) > 300
            _, ready = _probe(worker, "/readyz") or (0, {})
            assert ready["ready"] is True and ready["assigned"] > 0
            assert ready["not_exported"] == []
            worker.stop()
            assert worker.proc is not None and worker.proc.returncode == 0
        finally:
            worker.discard()
    text = log.read_text()
    assert REDIS_PASSWORD not in text and SASL_PASSWORD not in text
    records = _json_lines(log)
    attempts = [r for r in records if "not reachable (attempt" in r["message"]]
    assert len(attempts) >= 2 and all(r["level"] == "WARNING" for r in attempts)
    assert len({r["message"].split("(attempt ")[1].split(":")[0] for r in attempts}) == len(
        attempts)  # each attempt said once
    [rejected] = [r for r in records if r["message"].startswith("rejected ")]
    assert rejected["topic"] == settings.topic_deals and isinstance(rejected["partition"], int)


def test_an_unreachable_broker_ends_the_worker_with_code_3_and_one_line_per_attempt(
        tmp_path: Path) -> None:
    env = {**os.environ, "PULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
           "PULSE_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
           "PULSE_STARTUP_TIMEOUT_SECONDS": "3", "PULSE_WEB_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-m", "stream_app", "worker"], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == EXIT_DEPENDENCY_UNREACHABLE == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and REDIS_PASSWORD not in done.stderr
    attempts = [line for line in lines if "not reachable (attempt" in line]
    assert len(attempts) >= 2 and len(lines) == len(attempts) + 1, lines
    assert all("Kafka at 127.0.0.1:" in line for line in attempts)
    assert "Kafka at 127.0.0.1:" in lines[-1]
    assert "not reachable within PULSE_STARTUP_TIMEOUT_SECONDS=3" in lines[-1]


def test_a_worker_whose_redis_is_not_up_starts_without_it_and_says_so(
        tmp_path: Path) -> None:
    with EmbeddedServers() as servers:
        start_embedded_broker(servers, str(tmp_path / "broker.log"))
        settings = Settings(kafka_bootstrap=servers.kafka_bootstrap,
                            redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
                            clock="event", partitions=2, web_port=free_port(),
                            session_timeout_seconds=SESSION_TIMEOUT_SECONDS)
        log = tmp_path / "worker.log"
        worker = Worker(settings, log, env={"PULSE_STARTUP_TIMEOUT_SECONDS": "3"}).start()
        try:
            _wait_for(lambda: (_probe(worker, "/readyz") or (0,))[0] == 200, "ready",
                      worker.proc, timeout=90)
            _wait_for(lambda: scrape(worker.url, timeout=10).get(
                ("pulse_dedup_store_up", ())) == 0, "pulse_dedup_store_up 0", worker.proc,
                timeout=15)
        finally:
            worker.discard()
    text = log.read_text()
    assert REDIS_PASSWORD not in text
    attempts = [line for line in text.splitlines() if "Redis at 127.0.0.1:" in line]
    assert len(attempts) >= 2 and "starting without it" in attempts[-1]


def test_sigterm_mid_stream_finishes_within_the_grace_period_and_stays_exact(
        base_settings: Settings, tmp_path: Path) -> None:
    """What Kubernetes does on a rolling restart: SIGTERM, then SIGKILL after
    terminationGracePeriodSeconds (30 s by default)."""
    events = small_stream(seed=9, months=4, per_day=6)
    first = Worker(worker_settings(base_settings), tmp_path / "first.log").start()
    second = Worker(worker_settings(base_settings), tmp_path / "second.log")
    try:
        produce(base_settings, events)
        wait_for_health(first, lambda h: h["events_processed"] >= len(events) // 5,
                        "a fifth of the stream folded", timeout=120)
        assert first.proc is not None
        folded = (first.health() or {}).get("events_processed", 0)
        os.killpg(first.proc.pid, signal.SIGTERM)
        assert folded < len(events), "the stream was folded before the SIGTERM"
        try:
            code = first.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(first.proc.pid, signal.SIGKILL)
            raise AssertionError("still running 30 s after SIGTERM: Kubernetes would "
                                 "SIGKILL it") from None
        assert code == 0, (tmp_path / "first.log").read_text()[-2000:]
        health = first.health()
        assert health is None
        second.start()
        as_of = last_time(events)
        [samples] = settled([second], base_settings.partitions, as_of)
        expected = expected_metrics(events, as_of)
        assert assert_matches(expected, samples) == len(expected) > 1000
    finally:
        first.discard()
        second.discard()


def test_losing_kafka_while_running_is_said_in_the_logs_and_metrics_and_not_an_exit(
        tmp_path: Path) -> None:
    with EmbeddedServers() as servers:
        start_embedded_broker(servers, str(tmp_path / "broker.log"))
        start_embedded_redis(servers, str(tmp_path / "redis.log"))
        settings = Settings(kafka_bootstrap=servers.kafka_bootstrap,
                            redis_url=servers.redis_url, clock="event", partitions=2,
                            web_port=free_port(),
                            session_timeout_seconds=SESSION_TIMEOUT_SECONDS)
        log = tmp_path / "worker.log"
        worker = Worker(settings, log).start()
        try:
            _wait_for(lambda: (_probe(worker, "/readyz") or (0,))[0] == 200, "ready",
                      worker.proc, timeout=90)

            def brokers() -> float | None:
                samples = scrape(worker.url, timeout=10)
                return samples.get(("pulse_kafka_connected_brokers", ()))

            _wait_for(lambda: (brokers() or 0) >= 1, "a broker connection", worker.proc)
            assert servers.broker is not None
            servers.broker.kill()
            servers.broker.wait(10)
            _wait_for(lambda: brokers() == 0, "pulse_kafka_connected_brokers 0", worker.proc)
            _wait_for(lambda: "Kafka unreachable" in log.read_text(), "the log line",
                      worker.proc)
            time.sleep(3)
            assert worker.alive()
            status, live = _probe(worker, "/livez") or (0, {})
            assert status == 200 and live["live"] is True
        finally:
            worker.discard()


def test_a_worker_that_requires_redis_ends_with_code_3_when_it_never_answers(
        tmp_path: Path) -> None:
    with EmbeddedServers() as servers:
        kafka = start_embedded_broker(servers, str(tmp_path / "broker.log"))
        env = {**os.environ, "PULSE_KAFKA_BOOTSTRAP": kafka,
               "PULSE_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
               "PULSE_STARTUP_TIMEOUT_SECONDS": "3", "PULSE_REQUIRE_REDIS_AT_START": "true",
               "PULSE_WEB_PORT": str(free_port())}
        done = subprocess.run([sys.executable, "-m", "stream_app", "worker"], env=env,
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    assert done.returncode == EXIT_DEPENDENCY_UNREACHABLE, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and REDIS_PASSWORD not in done.stderr
    assert len([line for line in lines if "Redis at 127.0.0.1:" in line]) >= 3
    assert "not reachable within PULSE_STARTUP_TIMEOUT_SECONDS=3" in lines[-1]
    assert "PULSE_REQUIRE_REDIS_AT_START=true" in lines[-1]
