"""The forecast computed in a child process: the same rows as computed in place, only
changed states shipped, a dead child replaced, its failures reported, and no child left
behind when the worker stops or dies."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from stream_app.adapters import forecast_process
from stream_app.adapters.forecast_process import ForecastProcess, RemoteForecastError
from stream_app.adapters.scrape import Scrape
from stream_app.config import Settings, pricing, report_config
from stream_app.events.models import crm_event_adapter
from stream_app.kpi.calendar import UTC_CALENDAR
from stream_app.kpi.deals import DealState, apply_deal_event
from stream_app.kpi.forecast import DEFAULT_FORECAST
from stream_app.kpi.forecast_report import ForecastBasis, PathCache, forecast_rows
from stream_app.kpi.snapshot import Snapshot
from stream_app.kpi.windows import ms_from_datetime
from stream_app.sources.forecast_book import ForecastBook
from stream_app.tools.generator import GeneratorSettings, generate_events

END = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
DAY = UTC_CALENDAR.day_of(ms_from_datetime(END))


def _deal_events(days: int = 200) -> list[dict]:
    return [raw for raw in generate_events(GeneratorSettings(
        seed=5, start=END - dt.timedelta(days=days), end=END, deals_per_day=3,
        leads_per_deal=0, activities_per_deal=0, expected_close_error_days=5.0))
        if raw["type"].startswith("deal.")]


class _Organisation:
    """Deal events folded into a forecast book, a chunk at a time."""

    def __init__(self) -> None:
        self.book = ForecastBook(pricing(Settings()), UTC_CALENDAR)
        self.states: dict[str, DealState] = {}

    def fold(self, events: list[dict]) -> ForecastBasis:
        for raw in events:
            event = crm_event_adapter.validate_python(raw)
            deal_id = event.data.deal_id
            state = apply_deal_event(self.states.get(deal_id) or DealState(deal_id), event,
                                     for_forecast=True)
            self.states[deal_id] = state
            self.book.note(7, state)
        snap = Snapshot()
        self.book.contribute(snap, frozenset({7}))
        assert snap.forecast is not None
        return snap.forecast


def _direct(basis: ForecastBasis, day: int = DAY):  # type: ignore[no-untyped-def]
    return forecast_rows(basis, day, DEFAULT_FORECAST, lambda _, __, compute: compute(),
                         PathCache())


@pytest.fixture
def process() -> Iterator[ForecastProcess]:
    remote = ForecastProcess(DEFAULT_FORECAST)
    yield remote
    remote.close()


def test_rows_from_the_process_equal_rows_computed_in_place_as_the_states_change(
        process: ForecastProcess) -> None:
    events = _deal_events()
    org = _Organisation()
    cuts = [len(events) * share // 20 for share in (14, 15, 16, 18, 20)]
    sizes, shipped = [], []
    start = 0
    for cut in cuts:
        basis = org.fold(events[start:cut])
        start = cut
        before = process.states_shipped
        rows = process.rows(basis, DAY)
        assert rows.live and rows == _direct(basis)
        assert process.rows(basis, DAY - 40) == _direct(basis, DAY - 40)
        sizes.append(len(basis.states))
        shipped.append(process.states_shipped - before)
    # the first ask ships every state; later asks only the ones that changed or came
    assert shipped[0] == sizes[0]
    assert all(0 < n < size / 2 for n, size in zip(shipped[1:], sizes[1:], strict=True)), \
        (shipped, sizes)
    assert process.started == 1


def test_parts_of_the_rows_that_did_not_change_are_not_sent_back(
        process: ForecastProcess) -> None:
    """The same basis asked again: every part equals the last answer's and none is sent;
    after new events timed on T's day the forecasts (cut at the day's start) hold and
    are not sent. The rows equal those computed in place each time."""
    events = _deal_events()
    org = _Organisation()
    basis = org.fold(events[:len(events) // 2])
    day = UTC_CALENDAR.day_of(ms_from_datetime(dt.datetime.fromisoformat(
        events[len(events) // 2 - 1]["time"])))
    assert process.rows(basis, day) == _direct(basis, day)
    assert not process.parts_reused
    assert process.rows(basis, day) == _direct(basis, day)
    assert process.parts_reused == {"live": 1, "accuracy": 1, "plans": 1, "owners": 1}
    same_day = [raw for raw in events[len(events) // 2:] if UTC_CALENDAR.day_of(
        ms_from_datetime(dt.datetime.fromisoformat(raw["time"]))) == day]
    assert same_day, "the stream has no more events on that day"
    later = org.fold(same_day)
    rows = process.rows(later, day)
    assert rows == _direct(later, day)
    assert process.parts_reused["live"] == process.parts_reused["owners"] == 2


def test_a_smaller_list_of_states_is_shipped_whole(process: ForecastProcess) -> None:
    events = _deal_events()
    full = _Organisation().fold(events)
    part = _Organisation().fold(events[:len(events) // 3])
    assert process.rows(full, DAY) == _direct(full)
    before = process.states_shipped
    assert process.rows(part, DAY) == _direct(part)
    assert process.states_shipped - before == len(part.states)


def test_a_killed_child_is_replaced_and_sent_every_state_again(
        process: ForecastProcess) -> None:
    basis = _Organisation().fold(_deal_events())
    assert process.rows(basis, DAY) == _direct(basis)
    pid = process.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert process.rows(basis, DAY) == _direct(basis)
    assert process.started == 2 and process.pid != pid
    assert process.states_shipped == 2 * len(basis.states)


def test_a_sigterm_to_the_workers_process_group_leaves_the_child_to_the_worker(
        process: ForecastProcess) -> None:
    """A stop of the worker's whole group (SIGTERM to it) killed the child first: the
    worker, still finishing its batch, started another and shipped it every state; the
    new child's answer then met a closed pipe (a traceback in the worker's log)."""
    basis = _Organisation().fold(_deal_events(days=30))
    process.rows(basis, DAY)
    pid = process.pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.2)
    assert not _gone(pid)
    assert process.rows(basis, DAY) == _direct(basis)
    assert process.started == 1 and process.pid == pid


def test_a_child_whose_worker_left_before_its_answer_exits_quietly(
        process: ForecastProcess) -> None:
    """The worker stopped while the child computed: the answer meets a closed pipe, and
    the child exits with 0 instead of printing a BrokenPipeError traceback into the
    worker's log."""
    basis = _Organisation().fold(_deal_events(days=30))
    process.rows(basis, DAY)
    child = process._child
    assert child is not None and child.stdin is not None and child.stdout is not None
    ask, patch, _ = process._ask_for(basis, DAY)
    child.stdout.close()
    forecast_process._write(child.stdin, ask)
    for start in range(0, len(patch), forecast_process._STATES_PER_FRAME):
        forecast_process._write(child.stdin,
                                patch[start:start + forecast_process._STATES_PER_FRAME])
    child.stdin.flush()
    assert child.wait(30) == 0


def test_a_failure_in_the_child_is_raised_with_its_traceback_and_the_next_ask_works(
        process: ForecastProcess) -> None:
    good = _Organisation().fold(_deal_events(days=60))
    broken = ForecastBasis((*good.states, DealState("broken", created=(0, "e", {}))),
                           good.change_days, good.generation, good.team_names,
                           good.pricing, good.calendar, good.owner_names)
    with pytest.raises(RemoteForecastError, match="KeyError"):
        process.rows(broken, DAY)
    assert process.rows(good, DAY) == _direct(good)
    assert process.started == 1


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_close_stops_the_child(process: ForecastProcess) -> None:
    basis = _Organisation().fold(_deal_events(days=30))
    process.rows(basis, DAY)
    pid = process.pid
    assert pid is not None and not _gone(pid)
    process.close()
    assert process.pid is None and _gone(pid)


_DYING_WORKER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from tests.unit.test_forecast_process import DAY, _Organisation, _deal_events
    from stream_app.adapters.forecast_process import ForecastProcess
    from stream_app.kpi.forecast import DEFAULT_FORECAST
    process = ForecastProcess(DEFAULT_FORECAST)
    process.rows(_Organisation().fold(_deal_events(days=30)), DAY)
    print(process.pid, flush=True)
    os.kill(os.getpid(), signal.{signal})
""")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT", "SIGTERM"])
def test_the_child_exits_when_the_worker_dies(how: str) -> None:
    """SIGKILL: the child's stdin closes with the worker. SIGINT or SIGTERM to the worker
    alone (either may reach the whole process group, and the child ignores both): the
    same."""
    root = str(Path(__file__).resolve().parents[2])
    worker = subprocess.Popen([sys.executable, "-c", _DYING_WORKER.format(root=root,
                                                                          signal=how)],
                              stdout=subprocess.PIPE, text=True, cwd=root)
    assert worker.stdout is not None
    pid = int(worker.stdout.readline())
    worker.wait(30)
    assert worker.returncode != 0
    assert _wait_gone(pid), f"forecast process {pid} outlived its worker"


def test_a_child_that_cannot_start_says_how_to_do_without(tmp_path: Path) -> None:
    remote = ForecastProcess(DEFAULT_FORECAST, python=str(tmp_path / "no-such-python"))
    basis = _Organisation().fold(_deal_events(days=30))
    with pytest.raises(RuntimeError, match="PULSE_FORECAST_PROCESS=false"):
        remote.rows(basis, DAY)


def test_close_kills_a_child_still_held_by_a_computation(process: ForecastProcess) -> None:
    basis = _Organisation().fold(_deal_events(days=30))
    process.rows(basis, DAY)
    pid = process.pid
    assert pid is not None
    with process._lock:  # a computation that never ends holds it
        process.close()
        assert _wait_gone(pid, 5)


def test_release_stops_an_idle_child_and_the_next_ask_starts_another(
        process: ForecastProcess) -> None:
    """A worker that lost the forecast partition frees its child's memory."""
    basis = _Organisation().fold(_deal_events(days=30))
    rows = process.rows(basis, DAY)
    pid = process.pid
    assert pid is not None
    process.release()
    assert process.pid is None and _wait_gone(pid)
    assert process.rows(basis, DAY) == rows
    assert process.started == 2 and process.states_shipped == 2 * len(basis.states)


def test_release_leaves_a_child_a_computation_holds(process: ForecastProcess) -> None:
    process.rows(_Organisation().fold(_deal_events(days=30)), DAY)
    pid = process.pid
    assert pid is not None
    with process._lock:  # a computation runs
        process.release()
    assert process.pid == pid and not _gone(pid)


class _DealsWithoutForecastPartition:
    """A worker's deal pipeline after the forecast partition moved to another worker."""

    spec = SimpleNamespace(topic="crm.deals")
    book = None
    index = SimpleNamespace(version=0, snapshot=lambda partitions, keep, version: Snapshot(
        latest_event_ms=ms_from_datetime(END)))


def test_a_worker_without_the_forecast_partition_stops_its_child() -> None:
    scrape = Scrape(lambda: [_DealsWithoutForecastPartition()],
                    lambda topic: frozenset({0}),
                    SimpleNamespace(keep=lambda label, value: True, version=0),
                    "event", lambda: None, report_config(Settings(), None),
                    forecast_process=True)
    try:
        assert scrape.forecast_process is not None
        scrape.forecast_process.rows(_Organisation().fold(_deal_events(days=30)), DAY)
        pid = scrape.forecast_process.pid
        assert pid is not None
        scrape.keep_current()
        assert _wait_gone(pid), "the child outlived the forecast partition"
    finally:
        scrape.close()


class _RecordingCollector:
    """A collector noting whether the cyclic collector ran while it built families."""

    def __init__(self) -> None:
        self.collector_on: list[bool] = []

    def head(self) -> list[object]:
        return []

    def tail(self) -> list[object]:
        return []

    def kpi_families(self, report: object) -> list[object]:
        self.collector_on.append(gc.isenabled())
        return []


def test_a_scrape_builds_its_report_and_families_with_the_collector_paused() -> None:
    scrape = Scrape(lambda: [_DealsWithoutForecastPartition()],
                    lambda topic: frozenset({0}),
                    SimpleNamespace(keep=lambda label, value: True, version=0),
                    "event", lambda: None, report_config(Settings(), None))
    collector = _RecordingCollector()

    async def send(body: bytes) -> bytes:
        return body

    try:
        assert asyncio.run(scrape.respond(collector, send)) == b""  # type: ignore[arg-type]
    finally:
        scrape.close()
    assert collector.collector_on == [False] and gc.isenabled()


def test_a_scrape_keeps_the_collector_paused_until_its_text_is_sent() -> None:
    scrape = Scrape(lambda: [_DealsWithoutForecastPartition()],
                    lambda topic: frozenset({0}),
                    SimpleNamespace(keep=lambda label, value: True, version=0),
                    "event", lambda: None, report_config(Settings(), None))
    collector_on_while_sending: list[bool] = []

    async def send(body: bytes) -> str:
        await asyncio.sleep(0)
        collector_on_while_sending.append(gc.isenabled())
        return "sent"

    try:
        sent = asyncio.run(scrape.respond(_RecordingCollector(), send))  # type: ignore[arg-type]
    finally:
        scrape.close()
    assert sent == "sent" and collector_on_while_sending == [False] and gc.isenabled()
