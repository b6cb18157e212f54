"""Real processes for end-to-end tests: embedded Tansu and Redis, workers, scrapes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream_app.adapters.kafka import client_kwargs, committed_offsets
from stream_app.adapters.processes import free_port, spawn_worker, stop_process
from stream_app.config import Settings
from stream_app.kpi.windows import ms_from_datetime
from stream_app.tools.replay import produce_events, route
from stream_app.tools.scrape import Samples, get, scrape
from tests.reference import ADDITIVE, DIFFERENCE_RATIOS, INEXACT, Key

T = TypeVar("T")

#: The worker's operational series; every other ``pulse_`` series is a KPI the reference
#: must predict (a new KPI family is compared without being listed anywhere).
OPERATIONAL_PREFIXES = ("pulse_info", "pulse_events_", "pulse_dedup_", "pulse_label_values_",
                        "pulse_consumer_", "pulse_owned_partitions", "pulse_exported_partition",
                        "pulse_changelog_", "pulse_recover", "pulse_last_recovery_",
                        "pulse_event_loop_", "pulse_kafka_", "pulse_checkpoint",
                        "pulse_last_checkpoint_", "pulse_forecast_stale",
                        "pulse_forecast_compute_")


#: Whether workers write local checkpoints (the ``local_checkpoints`` fixture sets it).
LOCAL_CHECKPOINTS = [False]


@dataclass
class Worker:
    """A ``stream-app worker`` subprocess."""

    settings: Settings
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}/metrics"

    def health(self) -> dict[str, Any] | None:
        """``/healthz`` (no KPI computed, so polling it does not slow the worker down);
        None while it does not answer."""
        try:
            return get(self.url.replace("/metrics", "/healthz"), timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return None

    def start(self) -> Worker:
        """Start the process; with :data:`LOCAL_CHECKPOINTS` set, every worker of a test
        shares one data directory and writes local checkpoints every second, so each
        restart loads them."""
        local = ({"PULSE_DATA_DIR": str(self.log.parent / "worker-data"),
                  "PULSE_CHECKPOINT_INTERVAL_SECONDS": "1"} if LOCAL_CHECKPOINTS[0] else {})
        self.proc = spawn_worker(self.settings, str(self.log),
                                 **{"PULSE_LOG_LEVEL": "INFO", **local, **self.env})
        return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final commit."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """A clean stop (SIGTERM: finish the batch, commit, leave the group)."""
        if self.proc is not None:
            stop_process(self.proc, timeout=20)

    def discard(self) -> None:
        """Teardown where a clean stop is not under test: SIGKILL if still running."""
        if self.alive():
            self.kill()

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


#: KPI series that move with a wall clock between two scrapes of an unchanged state.
DRIFTING = frozenset({"pulse_asof_timestamp_seconds", "pulse_lead_score_gsum"})


def kpi_samples(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items()
            if k[0].startswith("pulse_") and not k[0].startswith(OPERATIONAL_PREFIXES)}


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


#: Seconds between the two full scrapes that must agree once ``/healthz`` shows no lag, at
#: least; and lag refreshes of every worker between them, at least: a message just sent
#: to a re-keyed topic shows in a lag only once the consumer fetched and the worker read
#: the high watermark again.
SETTLE_PAUSE_SECONDS = 0.75
SETTLE_LAG_REFRESHES = 2


def settled(workers: list[Worker], partitions: int, as_of: dt.datetime | None,
            timeout: float = 240.0) -> list[Samples]:
    """Scrape until every source partition is owned, read to its end, and KPIs stop moving.

    "Read to its end" needs a lag sample for every partition of every topic the workers
    read (the CRM topics and the three re-keyed topics), each 0: a partition whose
    new owner has not fetched yet has no sample, and its KPIs can look stable. Then the
    broker must hold no record after the group's committed offsets
    (:func:`behind_the_broker`), and a scrape taken after that check, the one returned,
    must still show the same KPIs.
    """
    cfg = workers[0].settings
    consumed = {(topic, str(p))
                for topic in (*cfg.source_topics, cfg.topic_account_wins, cfg.topic_owner_wins,
                              cfg.topic_forecast_deals)
                for p in range(partitions)}
    deadline = time.monotonic() + timeout
    _await_health(workers, partitions, consumed, deadline)
    previous: list[Samples] | None = None
    last_state = "no scrape yet"
    while time.monotonic() < deadline:
        for worker in workers:
            assert worker.alive(), f"worker died; see {worker.log}"
        scraped = [try_scrape(w.url) for w in workers]
        if all(s is not None for s in scraped):
            samples = [s for s in scraped if s is not None]
            owned = sum(sample.get(("pulse_owned_partitions", ()), 0) for sample in samples)
            lag = [((dict(labels)["topic"], dict(labels)["partition"]), v)
                   for sample in samples for (name, labels), v in sample.items()
                   if name == "pulse_consumer_lag_messages"]
            behind = {tp: v for tp, v in lag if v}
            unread = sorted(consumed - {tp for tp, _ in lag})
            forecast_stale = [_forecast_stale(sample) for sample in samples]
            asof_ok = as_of is None or all(
                sample.get(("pulse_asof_timestamp_seconds", ())) == ms_from_datetime(as_of) / 1000
                for sample in samples)
            current = _steady_kpis(samples)
            last_state = (f"owned={owned} behind={behind} no_lag_sample={unread} "
                          f"asof_ok={asof_ok} forecast_stale={forecast_stale}")
            if (owned == partitions and not unread and not behind and asof_ok
                    and not any(forecast_stale) and current == previous):
                unfolded = behind_the_broker(cfg, consumed)
                if unfolded:
                    last_state = f"records after the committed offsets: {unfolded}"
                else:
                    # everything on the broker was folded before this scrape; the two
                    # before it may predate the last folds
                    final = [try_scrape(w.url) for w in workers]
                    if all(s is not None for s in final):
                        done = [s for s in final if s is not None]
                        kpis = _steady_kpis(done)
                        if kpis == current and not any(_forecast_stale(s) for s in done):
                            return done
                        current = kpis
            previous = current
        _await_lag_refreshes(workers, SETTLE_LAG_REFRESHES, deadline)
    logs = "\n".join(f"--- {w.log}\n" + w.log.read_text()[-3000:] for w in workers)
    raise AssertionError(f"workers did not settle within {timeout}s: {last_state}\n{logs}")


def _forecast_stale(samples: Samples) -> float:
    """1 while a worker exports an earlier state's forecast (it is computed beside the
    scrapes), 0 when current or when the worker holds no forecast."""
    return samples.get(("pulse_forecast_stale", ()), 0)


def _steady_kpis(samples: list[Samples]) -> list[Samples]:
    """Each worker's KPI samples but those that move with a wall clock."""
    return [{k: v for k, v in kpi_samples(s).items() if k[0] not in DRIFTING}
            for s in samples]


def behind_the_broker(settings: Settings, consumed: set[tuple[str, str]]
                      ) -> dict[tuple[str, str], tuple[int, int]]:
    """Partitions holding a record at or after the group's committed offset: (committed,
    the first such record's offset) for each.

    A worker's own lag comes from the high watermark of its last fetch, which can be a
    fetch older than the newest re-keyed wins: it reads 0 while wins sit unfetched. The
    group commits a source offset only after the messages that source's events emitted
    are on the broker, so no record after any committed offset, looked for after the
    offsets are read, means every event and every win it emitted has been folded. The
    records are read, not a high watermark compared: Tansu's ListOffsets answers low,
    and a Fetch's high watermark gave the same false "caught up" the worker's lag did.
    """
    return asyncio.run(_behind_the_broker(settings, sorted(consumed)))


#: Polls of a partition's committed offset that must come back empty, each waiting this
#: long at most (a fetch at a partition's end waits for data that long).
_END_POLLS, _END_POLL_MS = 3, 300


async def _behind_the_broker(settings: Settings, consumed: list[tuple[str, str]]
                             ) -> dict[tuple[str, str], tuple[int, int]]:
    partitions = [(topic, int(partition)) for topic, partition in consumed]
    committed = await committed_offsets(settings, settings.app_id, partitions)
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None,
                                fetch_max_wait_ms=_END_POLL_MS, **client_kwargs(settings))
    await consumer.start()
    found: dict[tuple[str, str], tuple[int, int]] = {}
    try:
        tps = {TopicPartition(topic, partition): (topic, partition)
               for topic, partition in partitions}
        consumer.assign(list(tps))
        for tp, key in tps.items():
            consumer.seek(tp, committed.get(key, 0))
        for _ in range(_END_POLLS):
            batch = await consumer.getmany(timeout_ms=_END_POLL_MS)
            for tp, records in batch.items():
                topic, partition = tps[tp]
                if records:
                    found.setdefault((topic, str(partition)),
                                     (committed.get((topic, partition), 0), records[0].offset))
    finally:
        await consumer.stop()
    return found


def _lag_refreshes(worker: Worker) -> int | None:
    health = worker.health()
    return None if health is None else int(health["lag_refreshes"])


def _await_lag_refreshes(workers: list[Worker], count: int, deadline: float) -> None:
    """Wait :data:`SETTLE_PAUSE_SECONDS`, and until each worker read its lags ``count``
    more times (each from high watermarks its consumer fetched meanwhile)."""
    start = [_lag_refreshes(w) for w in workers]
    time.sleep(SETTLE_PAUSE_SECONDS)
    while time.monotonic() < deadline:
        now = [_lag_refreshes(w) for w in workers]
        if all(b is None or (n is not None and n >= b + count) for b, n in zip(start, now,
                                                                                 strict=True)):
            return
        time.sleep(0.2)


def _await_health(workers: list[Worker], partitions: int, consumed: set[tuple[str, str]],
                  deadline: float) -> None:
    """Poll ``/healthz`` (cheap) until it shows what :func:`settled` then checks on full
    scrapes: every partition owned, a zero lag for each consumed partition."""
    while time.monotonic() < deadline:
        for worker in workers:
            assert worker.alive(), f"worker died; see {worker.log}"
        health = [w.health() for w in workers]
        if all(h is not None for h in health):
            owned = sum(h["owned_partitions"] for h in health if h is not None)
            lag = {tp: n for h in health if h is not None for tp, n in health_lags(h).items()}
            if owned == partitions and consumed <= set(lag) and not any(lag.values()):
                return
        time.sleep(0.2)


def assert_matches(expected: dict[Key, Fraction], actual: dict[Key, float],
                   names: frozenset[str] | None = None) -> int:
    """Exact for counts and sums, 1e-9 relative for ratios (1e-9 absolute for the ratios of
    a difference); returns how many were compared.

    Every expected series must be exported (a 0 too), and every exported KPI series must
    be expected (a 0 too)."""
    problems = []
    compared = 0
    for key, want in sorted(expected.items()):
        if names is not None and key[0] not in names:
            continue
        compared += 1
        got = actual.get(key)
        if got is None:
            problems.append(f"missing {key}: expected {float(want)}")
            continue
        exact = key[0] in ADDITIVE and key[0] not in INEXACT
        if exact:
            if got != float(want):
                problems.append(f"{key}: got {got!r}, expected {float(want)!r}")
        elif abs(got - float(want)) > 1e-9 * max(abs(float(want)), 1e-12) and not (
                key[0] in DIFFERENCE_RATIOS and abs(got - float(want)) <= 1e-9):
            problems.append(f"{key}: got {got!r}, expected {float(want)!r}")
    for key in kpi_samples(actual):
        if (names is None or key[0] in names) and key not in expected:
            problems.append(f"unexpected {key} = {actual[key]}")
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:40])
    return compared


def _poll(worker: Worker, read: Callable[[], T | None], ready: Callable[[T], bool],
          what: str, timeout: float) -> T:
    """``read()`` every 20 ms until it answers and ``ready`` holds; fails if the worker
    dies or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        assert worker.alive(), f"worker died; see {worker.log}"
        assert time.monotonic() < deadline, f"{what} not seen in {timeout}s; see {worker.log}"
        answer = read()
        if answer is not None and ready(answer):
            return answer
        time.sleep(0.02)


def wait_for_scrape(worker: Worker, ready: Callable[[Samples], bool], what: str,
                    timeout: float = 60.0) -> Samples:
    """Scrape ``worker`` until ``ready(samples)``; fails if it dies or ``timeout`` passes."""
    return _poll(worker, lambda: try_scrape(worker.url), ready, what, timeout)


def health_lags(health: dict[str, Any]) -> dict[tuple[str, str], int]:
    """Messages behind, per (topic, partition), from a ``/healthz`` answer."""
    return {(item["topic"], str(item["partition"])): item["messages"] for item in health["lag"]}


def wait_for_metrics(worker: Worker, timeout: float = 60.0) -> Samples:
    """The first successful scrape of a starting worker."""
    return wait_for_scrape(worker, lambda _: True, "/metrics", timeout)


def metric_total(samples: Samples, name: str) -> float:
    """Sum of every sample of ``name`` (all label values)."""
    return sum(v for (n, _), v in samples.items() if n == name)


async def _read_topic(settings: Settings, topic: str, expected: int | None) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", enable_auto_commit=False,
                                group_id=None, **client_kwargs(settings))
    await consumer.start()
    records: list[Any] = []
    try:
        while expected is None or len(records) < expected:
            batch = await consumer.getmany(timeout_ms=2000)
            if not batch:
                break
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


def read_topic(settings: Settings, topic: str, expected: int | None = None) -> list[Any]:
    """Every record of ``topic`` (aiokafka ConsumerRecords), read with a plain consumer."""
    return asyncio.run(_read_topic(settings, topic, expected))


async def _produce_mixed(settings: Settings, items: list[Any]) -> None:
    producer = AIOKafkaProducer(max_request_size=4 * 1024 * 1024, **client_kwargs(settings))
    await producer.start()
    try:
        for item in items:
            if isinstance(item, dict):
                topic, key = route(settings, item)
                value = json.dumps(item).encode()
            else:
                topic, key, value = item
            await producer.send(topic, value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def produce_mixed(settings: Settings, items: list[Any]) -> None:
    """Send, in order, events (dicts, routed by type) and raw ``(topic, key, value)``
    messages that may be anything at all."""
    asyncio.run(_produce_mixed(settings, items))


async def _delete_topics(settings: Settings, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


def delete_topics(settings: Settings, topics: list[str]) -> None:
    """Delete topics on the broker (an operator's mistake, for fault tests)."""
    asyncio.run(_delete_topics(settings, topics))


def crm_lags(settings: Settings, health: dict[str, Any]) -> list[int]:
    """Messages behind on each CRM-topic partition a ``/healthz`` answer reports."""
    return [n for (topic, _), n in health_lags(health).items() if topic in settings.source_topics]


def wait_for_health(worker: Worker, ready: Callable[[dict[str, Any]], bool], what: str,
                    timeout: float = 60.0) -> dict[str, Any]:
    """Poll ``/healthz`` until ``ready(answer)``; fails if it dies or ``timeout`` passes."""
    return _poll(worker, worker.health, ready, what, timeout)


def wait_for_backlog(worker: Worker, at_most: float, timeout: float = 120) -> float:
    """Poll ``/healthz`` until the worker has at most ``at_most`` messages of the CRM
    topics left (the unit the events were produced in); returns the backlog it reported."""
    cfg = worker.settings

    def low(health: dict[str, Any]) -> bool:
        lags = crm_lags(cfg, health)
        return len(lags) == len(cfg.source_topics) * cfg.partitions and sum(lags) <= at_most

    health = wait_for_health(worker, low, f"a backlog <= {at_most}", timeout)
    return float(sum(crm_lags(cfg, health)))
