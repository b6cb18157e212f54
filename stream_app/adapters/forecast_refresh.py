"""The forecast computed beside the scrapes, not inside them.

A forecast is made from every deal of the organisation: the first one after a start, or
after a late event timed before a checkpoint, can take seconds, longer than a scrape may
(Prometheus gives up after 10 s by default). A scrape therefore asks the refresher for
the forecast of its state and waits at most ``wait_seconds`` (not at all when the last
computation took longer than that): it gets the rows of that state when they are ready
by then, and otherwise the last rows computed, marked stale (``pulse_forecast_stale``),
while the computation goes on in its own thread. A later scrape gets the new rows. One
computation runs at a time; a scrape asking for a newer state while one runs has it
computed next. The worker also asks for its current state once a second
(:meth:`ForecastRefresher.prefetch`), so a scrape usually finds it computed.

Where the rows come from: by default a child process
(:class:`~stream_app.adapters.forecast_process.ForecastProcess`), which runs on another
core. Computed in the refresher's own thread instead (``PULSE_FORECAST_PROCESS=false``),
a computation is followed by a rest as long as it took: under a steady stream and
frequent scrapes, computations of a second or more would otherwise run back to back in
a thread that shares the interpreter with the folds, and the worker would fall behind
the stream (the freshness of `make bench`, 2026-12-02). That thread rests at most half
the time; its rows are marked stale meanwhile.
"""

from __future__ import annotations

__all__ = ["ForecastRefresher"]

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from stream_app.kpi.forecast import ForecastSettings
from stream_app.kpi.forecast_report import ForecastBasis, ForecastRows, forecast_rows
from stream_app.kpi.live import ReportMemo

log = logging.getLogger(__name__)

_Ask = tuple[ForecastBasis, int]


def _same(ask: _Ask | None, basis: ForecastBasis, day: int) -> bool:
    return ask is not None and ask[0] is basis and ask[1] == day


class ForecastRefresher:
    """Forecast rows of a basis and T's day, computed in a thread of their own (which
    hands the computation to a child process when given ``compute``)."""

    def __init__(self, settings: ForecastSettings, wait_seconds: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 compute: Callable[[ForecastBasis, int], ForecastRows] | None = None):
        self._settings, self._wait = settings, wait_seconds
        #: Computes the rows (None: in the refresher's thread, with its own caches, and
        #: then with a rest between computations: see the module's docstring).
        self._compute_rows = compute
        self._clock, self._sleep = clock, sleep
        #: When the thread may start its next computation (the clock's time).
        self._rest_until = 0.0
        self._memo = ReportMemo()
        self._lock = threading.Lock()
        self._done: tuple[_Ask, ForecastRows] | None = None
        self._running: tuple[_Ask, threading.Event] | None = None
        self._wanted: _Ask | None = None
        self._failure: tuple[_Ask, BaseException] | None = None
        #: Moves each time a computation ends: a report keyed on it is built again.
        self.version = 0
        #: How long the last computation took.
        self.last_seconds = 0.0

    def rows(self, basis: ForecastBasis | None, day: int) -> ForecastRows:
        """The rows of ``basis`` at ``day`` if computed within the wait, else the last
        rows computed with ``stale`` set (none yet: empty rows, stale)."""
        if basis is None or not basis.states:
            return ForecastRows()
        with self._lock:
            finished = self._finished(basis, day)
            if finished is not None:
                return finished
            running = self._request(basis, day)
        if _same(running[0], basis, day):
            running[1].wait(self.wait_budget())
        with self._lock:
            finished = self._finished(basis, day)
            if finished is not None:
                return finished
            last = ForecastRows() if self._done is None else self._done[1]
            return replace(last, stale=True)

    def prefetch(self, basis: ForecastBasis | None, day: int) -> None:
        """Start computing the rows of ``basis`` at ``day`` unless they are computed or
        being computed, and return at once (the worker asks each second, so a scrape
        finds the rows of a state a second old already computed)."""
        if basis is None or not basis.states:
            return
        with self._lock:
            if not any(known is not None and _same(known[0], basis, day)
                       for known in (self._failure, self._done)):
                self._request(basis, day)

    def _request(self, basis: ForecastBasis, day: int) -> tuple[_Ask, threading.Event]:
        """Under the lock: start computing ``basis`` at ``day`` if nothing runs, else have
        it computed next unless it is what runs; the computation running now."""
        running = self._running
        if running is None:
            running = self._start((basis, day))
        elif not _same(running[0], basis, day):
            self._wanted = (basis, day)
        return running

    def wait_budget(self) -> float:
        """How long a scrape waits for a computation: the configured wait, unless the
        last computation took longer than that (a first forecast after a start, or one
        after a late event that moved every checkpoint), when waiting would only delay
        the scrape and the stale rows are exported at once."""
        if self._done is not None and self.last_seconds > self._wait:
            return 0.0
        return self._wait

    def _finished(self, basis: ForecastBasis, day: int) -> ForecastRows | None:
        failure = self._failure
        if failure is not None and _same(failure[0], basis, day):
            raise RuntimeError("the forecast of this state failed") from failure[1]
        done = self._done
        return done[1] if done is not None and _same(done[0], basis, day) else None

    def _start(self, ask: _Ask) -> tuple[_Ask, threading.Event]:
        running = (ask, threading.Event())
        self._running = running
        threading.Thread(target=self._compute, args=running, name="pulse-forecast",
                         daemon=True).start()
        return running

    def _compute(self, ask: _Ask, finished: threading.Event) -> None:
        rest = self._rest_until - self._clock()
        if rest > 0:
            self._sleep(rest)
            with self._lock:  # asked for meanwhile: the newest state is computed instead
                wanted, self._wanted = self._wanted, None
                if wanted is not None:
                    ask = wanted
                    self._running = (ask, finished)
        started = time.perf_counter()
        rows: ForecastRows | None = None
        failure: BaseException | None = None
        try:
            if self._compute_rows is None:
                rows = forecast_rows(ask[0], ask[1], self._settings, self._memo.cached,
                                     self._memo.paths)
            else:
                rows = self._compute_rows(*ask)
            rows = replace(rows, compute_seconds=time.perf_counter() - started)
        except Exception as error:  # handed to the scrape that asked
            log.exception("forecast failed")
            failure = error
        with self._lock:
            if rows is not None:
                self._done = (ask, rows)
                self._failure = None
            elif failure is not None:
                self._failure = (ask, failure)
            self.version += 1
            self.last_seconds = time.perf_counter() - started
            if self._compute_rows is None:
                self._rest_until = self._clock() + self.last_seconds
            self._running = None
            wanted, self._wanted = self._wanted, None
            if wanted is not None and not _same(ask, *wanted):
                self._start(wanted)
        finished.set()
