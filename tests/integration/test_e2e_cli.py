"""The command line as a new user meets it: `servers`, `topics`, `generate`, `import
opportunities`, `replay`, and a worker that starts its own embedded servers on the wall
clock; every KPI equals the batch computation."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from stream_app.adapters.kafka import client_kwargs
from stream_app.adapters.processes import free_port, spawn, stop_process
from stream_app.config import Settings
from stream_app.tools.generator import GeneratorSettings, generate_events
from stream_app.tools.scrape import scrape
from tests.integration.conftest import SESSION_TIMEOUT_SECONDS, last_time
from tests.integration.harness import (
    Worker,
    assert_matches,
    produce,
    settled,
    wait_for_metrics,
    worker_settings,
)
from tests.reference import expected_metrics

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "stream_app"]


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([*CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, (args, done.returncode, done.stderr[-3000:])
    return done


def _wait_for_line(log: Path, pattern: str, proc: subprocess.Popen, timeout: float = 60
                   ) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text() if log.exists() else "")
        if found:
            return found
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not printed in {timeout}s: {log.read_text()[-3000:]}")


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), 0.5).close()
        return True
    except OSError:
        return False


def _redis_address(url: str) -> str:
    return url.split("//", 1)[1].split("/", 1)[0]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def _topics(settings: Settings) -> set[str]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}


def test_servers_topics_generate_import_and_replay_from_the_command_line(tmp_path: Path) -> None:
    env = _clean_env()
    log = tmp_path / "servers.log"
    server_logs = tmp_path / "server-logs"
    servers = spawn([*CLI, "servers", "--log-dir", str(server_logs)], env=env,
                    log_path=str(log))
    worker: Worker | None = None
    try:
        kafka = _wait_for_line(log, r"export PULSE_KAFKA_BOOTSTRAP=(\S+)", servers)[1]
        redis_url = _wait_for_line(log, r"export PULSE_REDIS_URL=(\S+)", servers)[1]
        env |= {"PULSE_KAFKA_BOOTSTRAP": kafka, "PULSE_REDIS_URL": redis_url,
                "PULSE_PARTITIONS": "4", "PULSE_CLOCK": "event"}
        settings = Settings(kafka_bootstrap=kafka, redis_url=SecretStr(redis_url),
                            partitions=4, clock="event", commit_interval_seconds=0.5,
                            session_timeout_seconds=SESSION_TIMEOUT_SECONDS)
        _cli(["topics"], env)
        assert set(settings.source_topics) <= asyncio.run(_topics(settings))

        crm, opportunities = tmp_path / "crm.jsonl", tmp_path / "sf.jsonl"
        _cli(["generate", "--months", "2", "--end", "2026-10-20T12:00:00+00:00",
              "--deals-per-day", "4", "--seed", "3", "--out", str(crm)], env)
        imported = _cli(["import", "opportunities", "docs/examples/salesforce-opportunities.csv",
                         "--mapping", "salesforce-opportunity", "--out", str(opportunities)],
                        env)
        events = [*_jsonl(crm), *_jsonl(opportunities)]
        assert len(_jsonl(opportunities)) == 15, imported.stderr
        assert "skipped row 10: column 'Stage': stage 'Stalled'" in imported.stderr
        for path in (crm, opportunities):
            sent = _cli(["replay", str(path), "--no-progress"], env)
            assert f"sent {len(_jsonl(path))} events" in sent.stderr, sent.stderr

        worker = Worker(worker_settings(settings), tmp_path / "worker.log").start()
        as_of = last_time(events)
        [samples] = settled([worker], settings.partitions, as_of)
        assert assert_matches(expected_metrics(events, as_of), samples) > 250
    finally:
        if worker is not None:
            worker.discard()
        servers.send_signal(signal.SIGINT)
        try:
            code = servers.wait(20)
        finally:
            stop_process(servers)
    assert code == 0, log.read_text()[-2000:]
    assert not _listening(kafka) and not _listening(_redis_address(redis_url))
    assert f"# logs: {server_logs / 'broker.log'}, {server_logs / 'redis.log'}" in log.read_text()
    assert "Ready to accept connections" in (server_logs / "redis.log").read_text()
    assert (server_logs / "broker.log").stat().st_size > 0


def _wall_stream() -> list[dict[str, Any]]:
    """Two months of generated events ending an hour ago."""
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    cfg = GeneratorSettings(seed=17, start=end - dt.timedelta(days=60), end=end,
                            deals_per_day=4, accounts=60, churn_probability=0.5)
    return list(generate_events(cfg))


def test_a_worker_without_servers_starts_its_own_and_is_exact_on_the_wall_clock(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = _clean_env() | {"PULSE_WEB_PORT": str(port), "PULSE_PARTITIONS": "4",
                          "PULSE_CLOCK": "wall", "PULSE_SESSION_TIMEOUT_SECONDS": "6"}
    log = tmp_path / "worker.log"
    proc = spawn([*CLI, "worker"], env=env, log_path=str(log))
    try:
        found = _wait_for_line(log, r"embedded servers: kafka (\S+), redis (\S+)", proc)
        kafka, redis_url = found[1], found[2]
        settings = Settings(kafka_bootstrap=kafka, redis_url=SecretStr(redis_url),
                            partitions=4, clock="wall", web_port=port)
        events = _wall_stream()
        worker = Worker(settings, log, proc=proc)
        wait_for_metrics(worker)
        produce(settings, events)
        [samples] = settled([worker], settings.partitions, None)
        as_of_ms = round(samples[("pulse_asof_timestamp_seconds", ())] * 1000)
        as_of = dt.datetime.fromtimestamp(as_of_ms / 1000, dt.UTC)
        assert abs(as_of - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
        assert assert_matches(expected_metrics(events, as_of), samples) > 250
        assert scrape(worker.url)[("pulse_info", (("clock", "wall"),
                                                  ("reporting_currency", "USD")))] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    finally:
        stop_process(proc)
    assert not _listening(kafka) and not _listening(_redis_address(redis_url))
