"""The loop probe and the heap freeze of a worker."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest

from stream_app.adapters import loop_watch
from stream_app.adapters.loop_watch import LoopWatch
from stream_app.ops import OperationalStats


def test_the_heap_is_frozen_when_forced_and_at_most_once_a_period(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_watch, "HEAP_FREEZE_SECONDS", 3600.0)  # a loaded CI machine
    watch = LoopWatch(OperationalStats())
    try:
        assert watch.freeze_heap()  # the first time
        kept = [object() for _ in range(1000)] + [[i] for i in range(1000)]
        frozen = gc.get_freeze_count()
        assert not watch.freeze_heap()
        assert gc.get_freeze_count() == frozen
        assert watch.freeze_heap(force=True)
        assert gc.get_freeze_count() >= frozen + 1000
        monkeypatch.setattr(loop_watch, "HEAP_FREEZE_SECONDS", 0.0)
        assert watch.freeze_heap()
        del kept
    finally:
        gc.unfreeze()


async def test_the_probe_measures_how_late_a_blocked_loop_wakes_it() -> None:
    stats = OperationalStats()
    watch = LoopWatch(stats)
    running = True
    probe = asyncio.ensure_future(watch.probe(lambda: running))
    await asyncio.sleep(0.05)
    time.sleep(0.4)  # the loop is held: the probe wakes late
    await asyncio.sleep(0.3)
    running = False
    await asyncio.wait_for(probe, 2)
    assert stats.loop_lag_seconds is not None and stats.loop_lag_seconds >= 0.1
    assert max(late for _, late in watch.samples()) >= 0.1
    assert all(at <= time.monotonic() for at, _ in watch.samples())


def test_the_collector_is_paused_for_a_block_and_back_after_it_even_when_it_raises() -> None:
    assert gc.isenabled()
    with loop_watch.collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), loop_watch.collector_paused():
        raise RuntimeError("a scrape failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with loop_watch.collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off: left off
    finally:
        gc.enable()


def test_overlapping_pauses_keep_the_collector_off_until_the_last_one_ends() -> None:
    """A scrape's pause (its thread) may begin and end inside a recovery's (the event
    loop's): the collector stays off until both ended, in whatever order."""
    assert gc.isenabled()
    recovery, scrape = loop_watch.collector_paused(), loop_watch.collector_paused()
    recovery.__enter__()
    scrape.__enter__()
    recovery.__exit__(None, None, None)
    assert not gc.isenabled()
    scrape.__exit__(None, None, None)
    assert gc.isenabled()
    results: list[bool] = []

    def pause_in_a_thread() -> None:
        with loop_watch.collector_paused():
            results.append(gc.isenabled())

    with loop_watch.collector_paused():
        thread = threading.Thread(target=pause_in_a_thread)
        thread.start()
        thread.join()
        assert not gc.isenabled()
    assert results == [False] and gc.isenabled()



def _young(objects: list[object]) -> list[object]:
    """Those of ``objects`` some generation of the collector still holds."""
    tracked = {id(o) for o in gc.get_objects()}
    return [o for o in objects if id(o) in tracked]


def test_what_a_keeping_pause_allocated_is_frozen_and_a_scrape_s_is_left_young() -> None:
    """A restore's records live on: frozen when its pause ends, no pass walks them
    (a million at once would hold the loop for seconds); a scrape's do not."""
    with loop_watch.collector_paused(keep=True):
        restored = [[n] for n in range(1000)]
    assert _young(restored) == []
    with loop_watch.collector_paused():
        scraped = [[n] for n in range(1000)]
    assert len(_young(scraped)) == 1000
    with pytest.raises(RuntimeError), loop_watch.collector_paused(keep=True):
        failed = [[n] for n in range(1000)]
        raise RuntimeError("a restore failed")
    assert len(_young(failed)) == 1000
