"""The worker's event loop watched: how late it wakes a sleeping probe task, and the
long-lived heap kept out of the cyclic garbage collector's full passes (a full pass
over a worker's state holds every thread for hundreds of milliseconds)."""

from __future__ import annotations

__all__ = ["HEAP_FREEZE_SECONDS", "LOOP_PROBE_SECONDS", "LoopWatch", "collector_paused"]

import asyncio
import contextlib
import gc
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from stream_app.ops import LOOP_LAG_WINDOW_SECONDS, OperationalStats

#: How often the probe task sleeps and measures how late it woke.
LOOP_PROBE_SECONDS = 0.25
#: At most how often the objects alive are moved out of the collector's generations
#: (every second: a full pass then walks one second of survivors, not a minute's; see
#: docs/performance.md for what 60 s cost once the forecast was added).
HEAP_FREEZE_SECONDS = 1.0


class LoopWatch:
    """Loop lateness for ``/livez`` and ``pulse_event_loop_lag_seconds``, and the heap
    freeze (``gc.freeze``): objects alive for a while are state (records, sums,
    indexes), freed by reference counting when dropped; a full collection would only
    walk them all again. Cyclic garbage among them is not collected; the worker makes
    next to none (measured: 0-10 objects per full pass over ~580,000)."""

    def __init__(self, stats: OperationalStats):
        self._stats = stats
        #: (monotonic time the probe woke, how late) over the last LOOP_LAG_WINDOW_SECONDS.
        self.recent = deque[tuple[float, float]]()
        self._frozen_at: float | None = None

    async def probe(self, running: Callable[[], bool]) -> None:
        """Sleep, measure how late the loop woke the task, keep the largest lag of the
        last seconds; while ``running()``."""
        stats, recent = self._stats, self.recent
        while running():
            asked = time.monotonic()
            await asyncio.sleep(LOOP_PROBE_SECONDS)
            now = time.monotonic()
            lag = max(now - asked - LOOP_PROBE_SECONDS, 0.0)
            recent.append((now, lag))
            while recent[0][0] < now - LOOP_LAG_WINDOW_SECONDS:
                recent.popleft()
            stats.loop_lag_seconds = max(value for _, value in recent)
            stats.loop_lag_max_seconds = max(stats.loop_lag_max_seconds, lag)

    def freeze_heap(self, force: bool = False) -> bool:
        """Move every object alive now out of the collector's generations, at most
        every HEAP_FREEZE_SECONDS unless ``force`` (after a recovery); whether it did."""
        now = time.monotonic()
        if not force and self._frozen_at is not None and (
                now - self._frozen_at < HEAP_FREEZE_SECONDS):
            return False
        gc.freeze()
        self._frozen_at = now
        return True

    def samples(self) -> list[list[float]]:
        """The recent (time woke, lateness) samples, rounded, for ``/livez``."""
        return [[round(at, 4), round(late, 4)] for at, late in self.recent]


class _CollectorPauses:
    """Pauses of the cyclic collector that may overlap, from any thread: it is back on
    when the last one ends (if it was on when the first began)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._resume = False

    @contextlib.contextmanager
    def paused(self, keep: bool) -> Iterator[None]:
        with self._lock:
            if self._count == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._count += 1
        try:
            yield
            if keep:
                gc.freeze()
        finally:
            with self._lock:
                self._count -= 1
                if self._count == 0 and self._resume:
                    gc.enable()


_PAUSES = _CollectorPauses()


def collector_paused(keep: bool = False) -> contextlib.AbstractContextManager[None]:
    """The cyclic garbage collector off for the block, back on after it (even when it
    raises; left off when it was off) once no other pause holds it. For work that
    allocates and keeps: a scrape (its report, families and text are ~100 ms of
    allocations kept until the next scrape, which young-generation passes would walk
    again and again: a fifth of a scrape's time, measured in process) and a restore
    (millions of records, each pass walking the growing table). Reference counting
    still frees what they drop; a cycle waits for the next pass.

    ``keep``: what the block allocated lives on (a restored table, its index and
    sums): every object alive when it ends is frozen (``gc.freeze``), as the worker
    freezes its heap after a recovery, instead of left young: the first pass after a
    restore of a million records would walk them all at once, holding the event loop
    for seconds."""
    return _PAUSES.paused(keep)
