"""Real processes for end-to-end tests: embedded Tansu and Redis, workers, scrapes."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from stream_app.adapters.processes import free_port, spawn, stop_process
from stream_app.config import Settings, worker_env
from stream_app.kpi.windows import ms_from_datetime
from stream_app.tools.replay import produce_events
from stream_app.tools.scrape import Samples, scrape
from tests.reference import ADDITIVE, Key

KPI_PREFIXES = ("pulse_deals_", "pulse_won_", "pulse_window_", "pulse_open_", "pulse_customers_",
                "pulse_customer_", "pulse_win_", "pulse_pipeline_", "pulse_average_",
                "pulse_sales_", "pulse_asof_")


@dataclass
class Worker:
    """A ``stream-app worker`` subprocess."""

    settings: Settings
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}/metrics"

    def start(self) -> Worker:
        env = worker_env(self.settings, PULSE_LOG_LEVEL="INFO")
        self.proc = spawn([sys.executable, "-m", "stream_app", "worker"], env=env,
                          log_path=str(self.log))
        return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final commit."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=20)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def worker_settings(base: Settings) -> Settings:
    """A copy of ``base`` with a free metrics port."""
    return base.model_copy(update={"web_port": free_port()})


def produce(settings: Settings, events: list[Any]) -> None:
    """Send events (dicts or raw bytes) to the CRM topics."""
    result = asyncio.run(produce_events(settings, events, show_progress=False))
    assert not result.unroutable, result.unroutable


def try_scrape(url: str) -> Samples | None:
    try:
        return scrape(url, timeout=5)
    except Exception:
        return None


def kpi_samples(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if k[0].startswith(KPI_PREFIXES)}


def merge_additive(per_worker: list[Samples]) -> dict[Key, float]:
    """Sum additive KPI samples over workers (missing = 0).

    Each worker exports the float nearest its exact value (cents / 100, ms / 1000);
    the shortest repr of that float is the exact decimal, so the sum is exact here,
    where PromQL's float sum would be off by ~1e-16 relative.
    """
    merged: dict[Key, Fraction] = defaultdict(Fraction)
    for samples in per_worker:
        for key, value in samples.items():
            if key[0] in ADDITIVE:
                merged[key] += Fraction(Decimal(repr(value)))
    return {key: float(value) for key, value in merged.items()}


def settled(workers: list[Worker], partitions: int, as_of: dt.datetime | None,
            timeout: float = 240.0) -> list[Samples]:
    """Scrape until every source partition is owned, read to its end, and KPIs stop moving."""
    sources = 3 * partitions
    deadline = time.monotonic() + timeout
    previous: list[Samples] | None = None
    last_state = "no scrape yet"
    while time.monotonic() < deadline:
        for worker in workers:
            assert worker.alive(), f"worker died; see {worker.log}"
        scraped = [try_scrape(w.url) for w in workers]
        if all(s is not None for s in scraped):
            samples = [s for s in scraped if s is not None]
            owned = sum(s.get(("pulse_owned_partitions", ()), 0) for s in samples)
            lag = [v for s in samples for (name, _), v in s.items()
                   if name == "pulse_consumer_lag_messages"]
            asof_ok = as_of is None or all(
                s.get(("pulse_asof_timestamp_seconds", ())) == ms_from_datetime(as_of) / 1000
                for s in samples)
            current = [kpi_samples(s) for s in samples]
            last_state = f"owned={owned} lag_entries={len(lag)} lag={sum(lag)} asof_ok={asof_ok}"
            if (owned == partitions and len(lag) >= sources and sum(lag) == 0 and asof_ok
                    and current == previous):
                return samples
            previous = current
        time.sleep(1.5)
    logs = "\n".join(f"--- {w.log}\n" + w.log.read_text()[-3000:] for w in workers)
    raise AssertionError(f"workers did not settle within {timeout}s: {last_state}\n{logs}")


def assert_matches(expected: dict[Key, Fraction], actual: dict[Key, float],
                   names: frozenset[str] | None = None) -> int:
    """Exact for counts and sums, 1e-9 relative for ratios; returns how many were compared."""
    problems = []
    compared = 0
    for key, want in sorted(expected.items()):
        if names is not None and key[0] not in names:
            continue
        compared += 1
        got = actual.get(key)
        if got is None:
            if want != 0 or key[0] not in ADDITIVE:
                problems.append(f"missing {key}: expected {float(want)}")
            continue
        exact = key[0] in ADDITIVE and key[0] != "pulse_open_pipeline_weighted_amount"
        if exact:
            if got != float(want):
                problems.append(f"{key}: got {got!r}, expected {float(want)!r}")
        elif abs(got - float(want)) > 1e-9 * max(abs(float(want)), 1e-12):
            problems.append(f"{key}: got {got!r}, expected {float(want)!r}")
    for key in kpi_samples(actual):
        if (names is None or key[0] in names) and key not in expected and key[0] != \
                "pulse_asof_timestamp_seconds" and actual[key] != 0:
            problems.append(f"unexpected {key} = {actual[key]}")
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:40])
    return compared
