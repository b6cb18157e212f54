"""Fault injection on real processes: every KPI still equals the batch computation."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import pytest
import redis

from stream_app.adapters.embedded import EmbeddedServers, start_embedded_redis
from stream_app.adapters.kafka import ensure_topics
from stream_app.adapters.processes import stop_process
from stream_app.config import Settings
from stream_app.labels import series_budget
from tests.integration.conftest import SESSION_TIMEOUT_SECONDS, last_time, small_stream
from tests.integration.harness import (
    Worker,
    assert_matches,
    crm_lags,
    delete_topics,
    merge_additive,
    metric_total,
    produce,
    produce_mixed,
    read_topic,
    settled,
    try_scrape,
    wait_for_backlog,
    wait_for_health,
    wait_for_metrics,
    wait_for_scrape,
    worker_settings,
)
from tests.prometheus_tools import query, query_range, start_prometheus
from tests.reference import ADDITIVE, Key, expected_metrics

#: Every worker of these tests writes local checkpoints, so each restart loads them.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("local_checkpoints")]


#: Messages of the CRM topics each mid-chunk SIGKILL must leave unread, at least.
KILL_BACKLOG = 1_000


def test_five_sigkills_mid_stream_leave_every_kpi_exact(
    base_settings: Settings, tmp_path: Path
) -> None:
    events = small_stream(seed=31, months=4, per_day=15, leads=0.75)
    assert len(events) >= 13_000
    rng = random.Random(31)
    chunks = [events[i * len(events) // 6:(i + 1) * len(events) // 6] for i in range(6)]
    settings = worker_settings(base_settings)
    worker = Worker(settings, tmp_path / "w0.log").start()
    kills: list[tuple[str, float]] = []
    replayed: list[float] = []
    try:
        for n, chunk in enumerate(chunks[:-1], start=1):
            produce(base_settings, chunk)
            if n == 3:
                wait_for_metrics(worker)
                kills.append(("as soon as /metrics answered (recovery or join)", -1))
            else:
                target = rng.uniform(0.15, 0.45) * len(chunk)
                left = wait_for_backlog(worker, len(chunk) - target)
                kills.append(("mid-chunk", left))
            if n > 1:
                replayed.append(metric_total(wait_for_metrics(worker),
                                             "pulse_events_replayed_total"))
            worker.kill()
            worker = Worker(settings, tmp_path / f"w{n}.log").start()
        produce(base_settings, chunks[-1])
        as_of = last_time(events)
        [samples] = settled([worker], base_settings.partitions, as_of)
        replayed.append(metric_total(samples, "pulse_events_replayed_total"))
        mid_chunk = [left for kind, left in kills if kind == "mid-chunk"]
        assert len(kills) == 5 and len(mid_chunk) == 4
        assert all(left > KILL_BACKLOG for left in mid_chunk), kills
        # A kill right after a commit leaves nothing to re-read, so not every restart
        # replays; over four mid-chunk kills some must have.
        assert sum(replayed) > 0, replayed
        compared = assert_matches(expected_metrics(events, as_of), samples)
        assert compared > 250
        print(f"\n{len(events)} events, kills (CRM backlog at each kill): {kills}, "
              f"messages replayed after each restart: {replayed}")
    finally:
        worker.discard()


def _redeliver(stream: list[dict], pool: list[dict], rng: random.Random, picks: int,
               max_copies: int = 4) -> int:
    """Insert 1..max_copies copies of ``picks`` events of ``pool`` at random places of
    ``stream`` (so hours to weeks of event time later); returns how many were inserted."""
    inserted = 0
    for event in rng.sample(pool, picks):
        for _ in range(rng.randint(1, max_copies)):
            stream.insert(rng.randrange(len(stream) + 1), event)
            inserted += 1
    return inserted


def test_redeliveries_across_a_restart_and_a_redis_outage_count_once(
    servers: EmbeddedServers, base_settings: Settings, tmp_path: Path
) -> None:
    events = small_stream(seed=41, months=4)
    rng = random.Random(41)
    parts = [events[: len(events) // 3], events[len(events) // 3: 2 * len(events) // 3],
             events[2 * len(events) // 3:]]
    first = list(parts[0])
    dup_first = _redeliver(first, parts[0], rng, 60)
    settings = worker_settings(base_settings)
    worker = Worker(settings, tmp_path / "w0.log").start()
    redis_port = int(base_settings.redis_url.get_secret_value().rsplit(":", 1)[1].split("/")[0])
    try:
        produce(base_settings, first)
        [samples] = settled([worker], base_settings.partitions, last_time(parts[0]))
        assert metric_total(samples, "pulse_events_duplicate_total") == dup_first
        assert_matches(expected_metrics(first, last_time(parts[0])), samples)

        worker.kill()
        worker = Worker(settings, tmp_path / "w1.log").start()
        second = list(parts[1])
        dup_second = _redeliver(second, parts[0] + parts[1], rng, 60)
        assert servers.redis is not None
        servers.redis.terminate()
        servers.redis.wait(10)
        produce(base_settings, second)
        delivered = [*first, *second]
        [samples] = settled([worker], base_settings.partitions, last_time(delivered))
        assert samples[("pulse_dedup_store_up", ())] == 0
        assert metric_total(samples, "pulse_dedup_unavailable_total") > 0
        assert_matches(expected_metrics(delivered, last_time(delivered)), samples)
        assert "Redis unavailable" in (tmp_path / "w1.log").read_text()

        start_embedded_redis(servers, str(tmp_path / "redis2.log"), port=redis_port)
        third = list(parts[2])
        dup_third = _redeliver(third, events, rng, 60)
        produce(base_settings, third)
        delivered += third
        as_of = last_time(delivered)
        [samples] = settled([worker], base_settings.partitions, as_of)
        assert samples[("pulse_dedup_store_up", ())] == 1
        assert "Redis is back" in (tmp_path / "w1.log").read_text()
        assert_matches(expected_metrics(delivered, as_of), samples)
        print(f"\nredeliveries: {dup_first} before the kill, {dup_second} with Redis down, "
              f"{dup_third} after Redis restarted empty")
    finally:
        worker.discard()


def test_worker_rides_through_a_30s_broker_freeze(
    servers: EmbeddedServers, base_settings: Settings, tmp_path: Path
) -> None:
    events = small_stream(seed=51, months=6, per_day=20, leads=0.75)
    half = len(events) // 2
    worker = Worker(worker_settings(base_settings), tmp_path / "worker.log").start()
    assert servers.broker is not None and worker.proc is not None
    pid = worker.proc.pid
    try:
        produce(base_settings, events[:half])
        left = wait_for_backlog(worker, half * 0.8)
        os.kill(servers.broker.pid, signal.SIGSTOP)
        try:
            time.sleep(30)
            assert worker.alive(), f"worker died while the broker was frozen; see {worker.log}"
        finally:
            os.kill(servers.broker.pid, signal.SIGCONT)
        produce(base_settings, events[half:])
        as_of = last_time(events)
        [samples] = settled([worker], base_settings.partitions, as_of, timeout=300)
        assert worker.proc.pid == pid
        assert left > 1_000, f"the freeze should hit a worker with work left ({left})"
        assert_matches(expected_metrics(events, as_of), samples)
        print(f"\nfroze the broker for 30 s with {left:.0f} of {half} messages left")
    finally:
        worker.discard()


def _event_time(event: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00"))


def _late_per_type(records: list, grace: dt.timedelta) -> Counter[str]:
    """Events read back from Kafka whose time lies more than ``grace`` behind the latest
    event time earlier in the same partition (the documented lateness rule)."""
    latest: dict[tuple[str, int], dt.datetime] = {}
    late: Counter[str] = Counter()
    seen: set[str] = set()
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        event = json.loads(record.value)
        tp, at = (record.topic, record.partition), _event_time(event)
        if tp in latest and at < latest[tp] - grace and event["id"] not in seen:
            late[event["type"]] += 1
        seen.add(event["id"])
        latest[tp] = max(latest.get(tp, at), at)
    return late


#: Deal events older than 40 days held back and sent after everything else (all late).
HELD_BACK = 400


def test_disorder_within_grace_changes_nothing_and_late_events_are_counted(
    base_settings: Settings, tmp_path: Path
) -> None:
    events = small_stream(seed=61, months=4)
    rng = random.Random(61)
    grace = dt.timedelta(days=7)
    end = last_time(events)
    old_deal_events = [e for e in events if e["type"].startswith("deal.")
                       and _event_time(e) < end - dt.timedelta(days=40)]
    held = rng.sample(old_deal_events, HELD_BACK)
    held_ids = {e["id"] for e in held}
    jitter = {e["id"]: rng.uniform(0, grace.total_seconds() * 0.999) for e in events}
    shuffled = sorted((e for e in events if e["id"] not in held_ids),
                      key=lambda e: _event_time(e) + dt.timedelta(seconds=jitter[e["id"]]))
    assert shuffled != [e for e in events if e["id"] not in held_ids]
    worker = Worker(worker_settings(base_settings), tmp_path / "worker.log").start()
    try:
        produce(base_settings, shuffled)
        [samples] = settled([worker], base_settings.partitions, last_time(shuffled))
        assert_matches(expected_metrics(shuffled, last_time(shuffled)), samples)
        assert metric_total(samples, "pulse_events_late_total") == 0

        produce(base_settings, held)
        [samples] = settled([worker], base_settings.partitions, end)
        assert_matches(expected_metrics(events, end), samples)
        records = [r for topic in base_settings.source_topics
                   for r in read_topic(base_settings, topic)]
        assert len(records) == len(events)
        want = _late_per_type(records, grace)
        got = {dict(labels)["type"]: v for (name, labels), v in samples.items()
               if name == "pulse_events_late_total"}
        assert got == want and sum(want.values()) == len(held)
    finally:
        worker.discard()


def _exit_code(worker: Worker, timeout: float) -> int:
    assert worker.proc is not None
    try:
        return worker.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker still running after {timeout}s; see {worker.log}") from None


def _process_and_stop(settings: Settings, events: list[dict], log: Path) -> None:
    """One worker reads ``events`` to the end, then stops cleanly (offsets committed)."""
    worker = Worker(settings, log).start()
    try:
        produce(settings, events)
        settled([worker], settings.partitions, last_time(events))
    finally:
        worker.stop()


def test_a_worker_in_another_time_zone_refuses_the_state_folded_in_utc(
    base_settings: Settings, tmp_path: Path
) -> None:
    """The aggregates are keyed by UTC days: a worker set to Oslo would fold on with
    Oslo days and subtract contributions from days they were never added to."""
    settings = worker_settings(base_settings)
    _process_and_stop(settings, small_stream(seed=82, months=1), tmp_path / "utc.log")
    oslo = settings.model_copy(update={"timezone": "Europe/Oslo"})
    worker = Worker(oslo, tmp_path / "oslo.log").start()
    try:
        code = _exit_code(worker, 90)
        log = worker.log.read_text()
        assert code == 2, log[-2000:]
        assert "time zone changed" in log and "PULSE_TIMEZONE='UTC'" in log, log[-3000:]
        assert "'Europe/Oslo'" in log and "new PULSE_APP_ID" in log
    finally:
        worker.discard()


def test_lost_changelog_stops_the_worker_with_a_clear_error(
    base_settings: Settings, tmp_path: Path
) -> None:
    settings = worker_settings(base_settings)
    _process_and_stop(settings, small_stream(seed=81, months=2), tmp_path / "before.log")
    changelog = f"{settings.app_id}-pulse-deals-changelog"
    delete_topics(base_settings, [changelog])
    worker = Worker(settings, tmp_path / "after.log").start()
    try:
        code = _exit_code(worker, 90)
        log = worker.log.read_text()
        assert code == 2, log[-2000:]
        assert "state lost" in log and changelog in log, log[-3000:]
        assert "--reset-offsets --to-earliest" in log
    finally:
        worker.discard()


#: Changelog records a restarted worker has to restore when the broker freezes.
STALL_PADDING = 200_000


def test_a_recovery_that_cannot_progress_fails_loudly(
    servers: EmbeddedServers, base_settings: Settings, tmp_path: Path
) -> None:
    settings = worker_settings(base_settings)
    changelog = f"{settings.app_id}-pulse-deals-changelog"
    asyncio.run(ensure_topics(settings, {changelog: settings.partitions}))
    produce_mixed(base_settings, _changelog_padding(settings, STALL_PADDING))
    assert servers.broker is not None
    worker = Worker(settings, tmp_path / "after.log",
                    env={"PULSE_RECOVERY_STALL_SECONDS": "4"}).start()
    try:
        wait_for_scrape(worker, lambda s: s.get(("pulse_recovery_in_progress", ())) == 1
                        and s.get(("pulse_recovery_remaining_records", ()), 0) > 0,
                        "a recovery in progress")
        os.kill(servers.broker.pid, signal.SIGSTOP)
        try:
            code = _exit_code(worker, 60)
        finally:
            os.kill(servers.broker.pid, signal.SIGCONT)
        log = worker.log.read_text()
        assert code == 2, log[-2000:]
        assert "table recovery made no progress" in log, log[-3000:]
        assert "pulse-deals-changelog[" in log
    finally:
        worker.discard()


#: One scrape of a worker in a round: its log's name, when it began and ended, the source
#: partitions it exported, and the values of :attr:`_ExportWatch.SUMMED`.
_Scrape = tuple[str, float, float, frozenset[tuple[str, str]], tuple[float, ...]]


class _ExportWatch:
    """Scrapes every live worker at once, five times a second, in a background thread,
    and records which source partitions each one exported and the values of the
    cumulative series in :attr:`SUMMED`."""

    #: Series whose sum over workers only grows as events arrive (window "all").
    SUMMED = (("pulse_created_deals", (("team", "all"), ("window", "all"))),
              *(("pulse_pipeline_waterfall_deals",
                 (("movement", movement), ("team", "all"), ("window", "all")))
                for movement in ("created", "advanced", "won", "lost")))

    def __init__(self, workers: list[Worker]):
        self.workers = list(workers)
        self.rounds: list[list[_Scrape]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _ExportWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _one(self, worker: Worker) -> _Scrape:
        started = time.monotonic()
        samples = (try_scrape(worker.url) if worker.alive() else None) or {}
        exported = frozenset(
            (dict(labels)["topic"], dict(labels)["partition"])
            for (name, labels), v in samples.items() if name == "pulse_exported_partition")
        return (worker.log.name, started, time.monotonic(), exported,
                tuple(samples.get(key, 0.0) for key in self.SUMMED))

    def _run(self) -> None:
        with ThreadPoolExecutor(8) as pool:
            while not self._stop.is_set():
                self.rounds.append(list(pool.map(self._one, list(self.workers))))
                time.sleep(0.2)

    def double_exports(self) -> list[str]:
        """Partitions exported by two workers in one round whose scrapes overlapped in time."""
        found = []
        for scrapes in self.rounds:
            for i, (name_a, a0, a1, parts_a, _) in enumerate(scrapes):
                for name_b, b0, b1, parts_b, _ in scrapes[i + 1:]:
                    both = parts_a & parts_b
                    if both and a0 < b1 and b0 < a1:
                        found.append(f"{name_a} and {name_b}: {sorted(both)}")
        return found

    def scrapes_between(self, name: str, start: float, end: float) -> int:
        """Scrapes of worker ``name`` begun between ``start`` and ``end`` (answered or not)."""
        return sum(1 for scrapes in self.rounds for who, begun, *_ in scrapes
                   if who == name and start < begun < end)

    def complete_totals(self, every_partition: int) -> list[tuple[float, ...]]:
        """:attr:`SUMMED` summed over workers, in rounds where the workers together exported
        each of ``every_partition`` source partitions exactly once (events only add: none
        ever falls, as a counter that a moving partition reset would)."""
        return [total for total, _ in self._complete(every_partition)]

    def first_fall(self, every_partition: int) -> str | None:
        """The first two complete rounds between which a total fell, each worker's scrape
        (times, partitions of the deal topic, values) spelled out; None if none fell."""
        complete = self._complete(every_partition)
        for (before, early), (after, late) in itertools.pairwise(complete):
            fallen = [f"{name}{dict(labels)}" for (name, labels), was, now
                      in zip(self.SUMMED, before, after, strict=True) if now < was]
            if fallen:
                def spelled(scrapes: list[_Scrape]) -> str:
                    return "; ".join(
                        f"{name} {begun:.2f}-{ended:.2f}s "
                        f"{sorted(p for t, p in parts if t == 'crm.deals')} {values}"
                        for name, begun, ended, parts, values in scrapes)
                return (f"{fallen} fell from {before} to {after}: "
                        f"[{spelled(early)}] then [{spelled(late)}]")
        return None

    def _complete(self, every_partition: int
                  ) -> list[tuple[tuple[float, ...], list[_Scrape]]]:
        found = []
        for scrapes in self.rounds:
            exported = [p for *_, parts, _ in scrapes for p in parts]
            if len(exported) == len(set(exported)) == every_partition:
                found.append((tuple(map(sum, zip(*(values for *_, values in scrapes),
                                                 strict=True))), scrapes))
        return found


#: The recording rules of the waterfall: a sum over workers of their windowed gauges.
WATERFALL_RULES = {"pulse_pipeline_waterfall_deals":
                   "team_movement_window:pulse_pipeline_waterfall_deals:sum",
                   "pulse_pipeline_waterfall_amount":
                   "team_movement_window:pulse_pipeline_waterfall_amount:sum"}


def _waterfall_by_promql(prometheus: str, at: float) -> dict[Key, float]:
    """The waterfall series as the dashboards read them: the recording rules, at ``at``."""
    found = {}
    for name, rule in WATERFALL_RULES.items():
        for row in query(prometheus, rule, at=at):
            labels = tuple(sorted((k, v) for k, v in row["metric"].items()
                                  if k in ("team", "movement", "window")))
            found[(name, labels)] = float(row["value"][1])
    return found


def _assert_waterfall_through_prometheus(prometheus: str, expected: dict[Key, Fraction],
                                         leaving_target: str, stop_began: float) -> None:
    """The waterfall read through PromQL, evaluated at each second of a range holding the
    rebalance's aftermath, equals the batch count; the leaving worker's scrapes (and so
    the handover) lie inside the range Prometheus holds."""
    want = {k: v for k, v in expected.items() if k[0] in WATERFALL_RULES}
    assert len(want) > 40, want

    def mismatches(at: float) -> list[tuple[Key, float | None, float]]:
        # PromQL sums the workers' floats: amounts within 1e-9, counts exact.
        got = _waterfall_by_promql(prometheus, at)
        wrong = [(k, got.get(k), float(v)) for k, v in sorted(want.items())
                 if k not in got or abs(got[k] - float(v)) > 1e-9 * max(float(v), 1)]
        return wrong + [(k, got[k], 0.0) for k in got.keys() - want.keys()]

    deadline = time.monotonic() + 60
    while wrong := mismatches(first := time.time()):
        assert time.monotonic() < deadline, wrong[:20]
        time.sleep(1)
    time.sleep(4)
    for at in range(int(first) + 1, int(time.time()) + 1):
        assert not mismatches(at), (at, mismatches(at)[:20])
    up = query_range(prometheus, f'up{{instance="{leaving_target}"}}', stop_began - 30,
                     time.time(), 1)
    values = [float(v) for row in up for _, v in row["values"]]
    assert 1.0 in values and values[-1] == 0.0, \
        f"the leaving worker was not scraped up then down inside the range: {values}"


def test_three_workers_one_replaced_mid_stream_stay_exact_and_never_double_export(
    base_settings: Settings, tmp_path: Path
) -> None:
    events = small_stream(seed=101, months=6, per_day=20, leads=0.75)
    thirds = [events[i * len(events) // 3:(i + 1) * len(events) // 3] for i in range(3)]
    settings = [worker_settings(base_settings) for _ in range(4)]
    workers = [Worker(settings[i], tmp_path / f"w{i}.log").start() for i in range(3)]
    targets = [f"127.0.0.1:{s.web_port}" for s in settings]
    prometheus_proc, prometheus = start_prometheus(tmp_path, targets, scrape_interval="2s")
    watch = _ExportWatch(workers)
    try:
        with watch:
            produce(base_settings, thirds[0])
            settled(workers, base_settings.partitions, last_time(thirds[0]))
            produce(base_settings, thirds[1])
            leaving = workers[1]
            stop_began = time.monotonic()
            stop_began_epoch = time.time()
            leaving.stop()
            stop_ended = time.monotonic()
            assert leaving.proc is not None and leaving.proc.returncode == 0, \
                f"leaving worker exited with {leaving.proc and leaving.proc.returncode}"
            workers[1] = Worker(settings[3], tmp_path / "w3.log").start()
            watch.workers = list(workers)
            produce(base_settings, thirds[2])
            as_of = last_time(events)
            per_worker = settled(workers, base_settings.partitions, as_of)
        assert not watch.double_exports(), watch.double_exports()[:10]
        assert watch.scrapes_between(leaving.log.name, stop_began, stop_ended) > 0, \
            "the leaving worker's shutdown was never scraped"
        totals = watch.complete_totals(len(base_settings.source_topics)
                                       * base_settings.partitions)
        assert len(totals) > 20, totals
        fall = watch.first_fall(len(base_settings.source_topics) * base_settings.partitions)
        assert fall is None, fall
        expected = expected_metrics(events, as_of)
        assert_matches(expected, merge_additive(per_worker), names=ADDITIVE)
        exported = [frozenset((dict(labels)["topic"], dict(labels)["partition"])
                              for (name, labels), v in s.items()
                              if name == "pulse_exported_partition") for s in per_worker]
        everything = {(topic, str(p)) for topic in base_settings.source_topics
                      for p in range(base_settings.partitions)}
        assert set().union(*exported) == everything
        assert sum(len(e) for e in exported) == len(everything)
        _assert_waterfall_through_prometheus(prometheus, expected, targets[1], stop_began_epoch)
    finally:
        for worker in workers:
            worker.discard()
        stop_process(prometheus_proc)


#: Distinct teams and owners in the label flood.
FLOOD = 20_000
#: Distinct owners the flood's deals name (deal i is owner i mod DEAL_OWNERS's); all but
#: PULSE_MAX_OWNERS of them are over the owner cap.
DEAL_OWNERS = 3_000
#: Of them, owners that also set a quota and log an activity.
OWNER_FLOOD = 1_500


#: Distinct sources, products and competitors in the flood (each over its cap of 30).
FLOOD_DIMENSIONS = {"source": 45, "product": 40, "competitor": 45}


def _flood(count: int, owners: int) -> list[dict]:
    """``count`` valid deals, each with its own team and one of ``DEAL_OWNERS`` owners,
    cycling through :data:`FLOOD_DIMENSIONS` sources and products, one in twenty lost to
    one of as many competitors; for the first ``owners`` owners a quota for August and a
    call."""
    start = dt.datetime(2026, 8, 1, tzinfo=dt.UTC)
    stages = ("Prospecting", "Qualification", "Engaging", "Proposal", "Negotiation")

    def event(i: int, name: str, event_type: str, **data: str) -> dict:
        return {"specversion": "1.0", "id": f"flood-{name}-{i}", "source": "crm/flood",
                "type": event_type, "time": (start + dt.timedelta(seconds=60 * i)).isoformat(),
                "data": {"owner_id": f"owner-{i}", "team": f"team-{i}", **data}}

    deals = [event(i, "deal", "deal.created", deal_id=f"FD-{i}", account_id=f"FA-{i % 997}",
                   owner_id=f"owner-{i % DEAL_OWNERS}",
                   amount=f"{100 + i % 9000}.50", currency="USD", stage=stages[i % 5],
                   source=f"src-{i % FLOOD_DIMENSIONS['source']}",
                   product=f"prod-{i % FLOOD_DIMENSIONS['product']}")
             for i in range(count)]
    losses = [event(i, "lost", "deal.lost", deal_id=f"FD-{i}",
                    competitor=f"rival-{i // 20 % FLOOD_DIMENSIONS['competitor']}")
              for i in range(0, count, 20)]
    quotas = [event(i, "quota", "quota.set", period="2026-08", amount=f"{1000 + i}.00",
                    currency="USD") for i in range(owners)]
    calls = [event(i, "call", "activity.logged", kind="call") for i in range(owners)]
    return [*deals, *losses, *quotas, *calls]


def _fold_owners(expected: dict, admitted: set[str]) -> dict:
    """``expected`` with the series of owners not ``admitted`` summed into "(other)", whose
    attainment is its summed won amount / its summed quota."""
    out, other = {}, Counter()
    for (name, labels), value in expected.items():
        lab = dict(labels)
        if "owner" not in lab or lab["owner"] in admitted:
            out[(name, labels)] = value
        elif name != "pulse_quota_attainment_ratio":
            other[(name, tuple(sorted({**lab, "owner": "(other)"}.items())))] += value
    out.update(other)
    for (name, labels), quota in other.items():
        if name == "pulse_owner_quota_amount" and quota:
            out[("pulse_quota_attainment_ratio", labels)] = (
                other[("pulse_owner_won_amount", labels)] / quota)
    return out


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_label_flood_and_abusive_messages_stay_within_the_series_budget(
    base_settings: Settings, tmp_path: Path
) -> None:
    events = _flood(FLOOD, OWNER_FLOOD)
    abuse: list[object] = [
        (base_settings.topic_deals, b"x", b"{" + b" " * 80_000 + b"}"),
        (base_settings.topic_deals, b"x", b'{"data": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"),
        (base_settings.topic_deals, b"x", b"[" * 60_000),
    ]
    worker = Worker(worker_settings(base_settings), tmp_path / "worker.log").start()
    assert worker.proc is not None
    try:
        produce_mixed(base_settings, [*abuse, *events])
        as_of = last_time(events)
        [samples] = settled([worker], base_settings.partitions, as_of, timeout=400)
        body = urllib.request.urlopen(worker.url, timeout=30).read().decode()
        series = [line for line in body.splitlines() if line and not line.startswith("#")]
        cap = base_settings.max_teams
        teams = {dict(labels)["team"] for (_, labels) in samples if "team" in dict(labels)}
        assert len(teams) == cap + 2  # the admitted teams, "(other)" and "all"
        assert samples[("pulse_label_values_folded", (("label", "team"),))] == FLOOD - cap
        budget = series_budget(base_settings)
        assert len(series) <= budget, (len(series), budget)
        registry = redis.Redis.from_url(base_settings.redis_url.get_secret_value())
        admitted_teams = {t.decode() for t in registry.smembers(
            f"{base_settings.app_id}:labels:team")}
        assert len(admitted_teams) == cap and admitted_teams < teams
        admitted_owners = {o.decode() for o in registry.smembers(
            f"{base_settings.app_id}:labels:owner")}
        owners = {dict(labels)["owner"] for (_, labels) in samples if "owner" in dict(labels)}
        assert len(admitted_owners) == base_settings.max_owners
        assert owners == admitted_owners | {"(other)"}
        assert samples[("pulse_label_values_folded", (("label", "owner"),))] == \
            DEAL_OWNERS - base_settings.max_owners
        admitted = {"team": admitted_teams}
        caps = {"source": base_settings.max_sources, "product": base_settings.max_products,
                "competitor": base_settings.max_competitors}
        for label, distinct in FLOOD_DIMENSIONS.items():
            admitted[label] = {v.decode() for v in registry.smembers(
                f"{base_settings.app_id}:labels:{label}")}
            assert len(admitted[label]) == caps[label] < distinct, (label, admitted[label])
            assert samples[("pulse_label_values_folded", (("label", label),))] == \
                distinct - caps[label]
        relabeled = [{**e, "data": {**e["data"], **{
            label: value if value in admitted[label] else "(other)"
            for label, value in e["data"].items() if label in admitted}}} for e in events]
        assert_matches(_fold_owners(expected_metrics(relabeled, as_of), admitted_owners),
                       samples)
        rejected = metric_total(samples, "pulse_events_rejected_total")
        assert rejected == len(abuse)
        rss = _rss_mib(worker.proc.pid)
        assert rss < 1024, f"worker RSS {rss:.0f} MiB after {FLOOD:,} teams"
        print(f"\n{FLOOD:,} distinct teams, {DEAL_OWNERS:,} owners ({OWNER_FLOOD:,} with "
              "quotas and "
              f"activities): {len(series)} series "
              f"(budget {budget}), worker RSS {rss:.0f} MiB")
    finally:
        worker.discard()


#: Changelog records added so a restarted worker's recovery outlasts a produce.
RECOVERY_PADDING = 200_000


def _changelog_padding(settings: Settings, count: int) -> list[tuple[str, bytes, bytes]]:
    """``count`` records for the deal table's changelog: position marks of a topic the
    worker does not read (restored like any record, never a KPI)."""
    changelog = f"{settings.app_id}-pulse-deals-changelog"
    return [(changelog, json.dumps(f"p\x1f{n % settings.partitions}\x1fpadding-{n}\x1f").encode(),
             json.dumps({"v": n}).encode()) for n in range(count)]


def test_messages_sent_while_a_restarted_worker_recovers_are_not_skipped(
    base_settings: Settings, tmp_path: Path
) -> None:
    """Partitions without a committed offset (here: every customer, quota and lead
    partition) used to lose what the consumer fetched during recovery: Faust dropped
    it, and its seek to committed offsets had nothing to rewind to."""
    events = small_stream(seed=111, months=8)
    deals = [e for e in events if e["type"].startswith("deal.")]
    others = [e for e in events if not e["type"].startswith("deal.")]
    kinds = Counter(e["type"] for e in others)
    assert kinds["customer.churned"] >= 4 and kinds["quota.set"] and kinds["lead.created"]
    settings = worker_settings(base_settings)
    worker = Worker(settings, tmp_path / "w0.log").start()
    try:
        produce(base_settings, deals)
        settled([worker], base_settings.partitions, last_time(deals))
        worker.kill()
        produce_mixed(base_settings, _changelog_padding(settings, RECOVERY_PADDING))
        worker = Worker(settings, tmp_path / "w1.log").start()
        wait_for_scrape(worker, lambda s: s.get(("pulse_recovery_in_progress", ())) == 1,
                        "a recovery in progress")
        produce(base_settings, others)
        during = wait_for_metrics(worker)
        assert during[("pulse_recovery_in_progress", ())] == 1, \
            "the recovery ended before every message was sent: raise RECOVERY_PADDING"
        as_of = last_time(events)
        [samples] = settled([worker], base_settings.partitions, as_of)
        for kind, n in kinds.items():
            assert samples[("pulse_events_processed_total", (("type", kind),))] == n
        assert_matches(expected_metrics(events, as_of), samples)
        in_bulk = samples[("pulse_changelog_records_read_in_bulk_total",
                           (("table", "pulse-deals"),))]
        assert in_bulk >= RECOVERY_PADDING, "the restart was not restored by the bulk loader"
    finally:
        worker.discard()


#: The tables whose changelogs a resumed worker could write stale records to.
TABLES = ("pulse-deals", "pulse-accounts", "pulse-owners", "pulse-leads", "pulse-activities")
#: Seconds the paused worker stays stopped: well past its session timeout, so the group
#: evicts it and the other worker takes and folds its partitions.
PAUSE_SECONDS = 3 * SESSION_TIMEOUT_SECONDS


def _stale_records(records: list) -> int:
    """Changelog records (read back from Kafka, in each partition's order) that a record
    written earlier for the same key dominates: a guard at or past theirs for every
    source, and not equal (or, for a position mark, a higher mark). Each is a late write
    of an older state; nothing in the worker computes this count."""
    frontier: dict[tuple[str, int, bytes], list[dict]] = {}
    marks: dict[tuple[str, int, bytes], int] = {}
    stale = 0
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        if record.value is None:
            continue
        value = json.loads(record.value)
        value = json.loads(value) if isinstance(value, str) else value
        where = (record.topic, record.partition, record.key)
        if "g" not in value:
            stale += value["v"] < marks.get(where, -1)
            marks[where] = max(marks.get(where, -1), value["v"])
            continue
        guard, seen = value["g"], frontier.setdefault(where, [])
        if any(old != guard and all(old.get(s, -1) >= o for s, o in guard.items())
               for old in seen):
            stale += 1
        else:
            seen.append(guard)
    return stale


def test_a_worker_resumed_after_its_session_expired_cannot_overwrite_the_new_owner(
    base_settings: Settings, tmp_path: Path
) -> None:
    """SIGSTOP one of two workers mid-batch past its session timeout, let the other take
    and fold its partitions, SIGCONT it while the new owner folds more: whatever the
    resumed worker writes late is dominated, and a third worker restoring from those
    changelogs exports exactly the batch figures."""
    events = small_stream(seed=131, months=4, per_day=15, leads=0.75)
    cut = len(events) // 10
    parts = [events[:cut], events[cut: 7 * cut], events[7 * cut:]]
    paused, other = (Worker(worker_settings(base_settings), tmp_path / f"w{i}.log").start()
                     for i in range(2))
    workers = [paused, other]
    fresh: Worker | None = None
    assert paused.proc is not None
    try:
        produce(base_settings, parts[0])
        settled(workers, base_settings.partitions, last_time(parts[0]))
        folded_before = wait_for_health(paused, lambda _: True, "/healthz")["events_processed"]
        every = len(base_settings.source_topics) * base_settings.partitions

        def mid_stream(health: dict) -> bool:
            lags = crm_lags(paused.settings, health)
            return (len(lags) >= every // 2 and sum(lags) > KILL_BACKLOG
                    and health["events_processed"] >= folded_before + 300)

        sending = threading.Thread(target=produce, args=(base_settings, parts[1]))
        sending.start()
        backlog = sum(crm_lags(paused.settings, wait_for_health(
            paused, mid_stream, "a backlog in progress", 120)))
        os.killpg(paused.proc.pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        sending.join()
        try:
            wait_for_health(other, lambda h: h["owned_partitions"] == base_settings.partitions,
                            "the takeover of every partition")
            produce(base_settings, parts[2])
            time.sleep(max(0.0, paused_at + PAUSE_SECONDS - time.monotonic()))
        finally:
            os.killpg(paused.proc.pid, signal.SIGCONT)
        as_of = last_time(events)
        expected = expected_metrics(events, as_of)
        per_worker = settled(workers, base_settings.partitions, as_of)
        assert_matches(expected, merge_additive(per_worker), names=ADDITIVE)
        changelogs = [r for table in TABLES
                      for r in read_topic(base_settings,
                                          f"{base_settings.app_id}-{table}-changelog")]
        stale = _stale_records(changelogs)
        assert stale > 0, "the resumed worker wrote nothing late: the test proved nothing"
        for worker in workers:
            worker.kill()
        # a new machine: no local checkpoint, so it reads the late writes back
        fresh = Worker(worker_settings(base_settings), tmp_path / "fresh.log",
                       env={"PULSE_DATA_DIR": str(tmp_path / "fresh-data")}).start()
        [samples] = settled([fresh], base_settings.partitions, as_of)
        assert_matches(expected, samples)
        assert metric_total(samples, "pulse_changelog_records_dropped_total") > 0
        print(f"\npaused with {backlog} messages left; {stale} stale changelog records "
              f"written after the handover, "
              f"{metric_total(samples, 'pulse_changelog_records_dropped_total'):.0f} dropped "
              "by the restoring worker")
    finally:
        for worker in [*workers, *([fresh] if fresh else [])]:
            if worker.alive():
                assert worker.proc is not None
                os.killpg(worker.proc.pid, signal.SIGCONT)
            worker.discard()
