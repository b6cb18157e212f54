"""The forecast computed in a process of its own.

A forecast after a late event or a new day takes the CPU for up to seconds; in the
worker's interpreter it shares the GIL with the folds and the scrapes, which then take
twice as long while it runs (`make bench`, 2026-12-02: a scrape after 300 new events
waited 270 ms, 140 ms of it the forecast). :class:`ForecastProcess` runs
:func:`~stream_app.kpi.forecast_report.forecast_rows` in a child Python process with its
own caches, on the other core.

The child keeps a copy of the deal states: each computation ships only the states that
are not the very objects shipped last time (the forecast book replaces a deal's state
when it changes and keeps the others), so a computation after 300 events sends a few
hundred states, not the organisation's tens of thousands. Frames on the child's stdin and
stdout are pickles behind their length. The child answers with the parts of the rows
that changed since its last answer (:func:`_thin`), reads again only the deals whose
states it was sent (:meth:`~stream_app.kpi.forecast_report.PathCache.patched`), and
keeps what it computed out of the collector's full passes (``gc.freeze``, as the worker
does). The child ignores Ctrl-C (the worker stops it) and exits when its stdin closes,
so a worker that dies, SIGKILL included, leaves no process behind.
"""

from __future__ import annotations

__all__ = ["ForecastProcess", "RemoteForecastError"]

import gc
import logging
import pickle
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from stream_app.kpi.deals import DealState
from stream_app.kpi.forecast import ForecastSettings
from stream_app.kpi.forecast_report import ForecastBasis, ForecastRows, forecast_rows
from stream_app.kpi.live import ReportMemo

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">Q")
#: States per frame: pickling one frame holds the GIL (~20 ms per 1,000 states), so a
#: first shipment of tens of thousands is cut where the event loop can run between.
_STATES_PER_FRAME = 500
#: Past this share of the states changed, the whole list is shipped again.
_FULL_SHIP_SHARE = 0.5


class RemoteForecastError(RuntimeError):
    """The child failed to compute a forecast (its traceback is the message)."""


@dataclass(frozen=True, slots=True)
class _Ask:
    """One computation asked of the child: the states patch and the rest of the basis."""

    day: int
    #: Length of the states list after the patch.
    length: int
    #: Frames that follow, each a tuple of (position, state) replaced or appended
    #: (every position when ``full``).
    frames: int
    full: bool
    change_days: tuple[tuple[int, int], ...]
    generation: int
    team_names: dict[str, str]
    owner_names: dict[str, str]
    #: Sent with the first ask and whenever they change (else None).
    constants: tuple[Any, Any, ForecastSettings] | None = None


def _write(stream: IO[bytes], value: Any) -> None:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(payload)) + payload)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError("the other end closed the pipe")
    (size,) = _LENGTH.unpack(head)
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError("the other end closed the pipe mid-frame")
    return pickle.loads(payload)


@dataclass
class _Shipped:
    """What the child holds: the states by position and the constants."""

    states: list[DealState] = field(default_factory=list)
    constants: tuple[Any, Any, ForecastSettings] | None = None
    #: The child's last answer (its parts stand for the ones it leaves out next).
    answer: ForecastRows | None = None


class ForecastProcess:
    """Forecast rows computed by a child process (started at the first ask, started
    again after it died). One ask at a time: the caller is the forecast refresher's
    thread, which blocks on the child's answer without holding the GIL."""

    def __init__(self, settings: ForecastSettings, python: str = sys.executable):
        self._settings = settings
        self._python = python
        self._child: subprocess.Popen[bytes] | None = None
        self._shipped = _Shipped()
        self._lock = threading.Lock()
        #: Children started so far (a restart after a crash counts).
        self.started = 0
        #: Deal states shipped to the children so far.
        self.states_shipped = 0
        #: Parts of the rows (live, accuracy, plans, owners) the children left out of an
        #: answer because they equalled the last answer's.
        self.parts_reused: Counter[str] = Counter()

    def rows(self, basis: ForecastBasis, day: int) -> ForecastRows:
        """The rows of ``basis`` at ``day``, as ``forecast_rows`` computes them."""
        with self._lock:
            try:
                return self._ask(basis, day)
            except (EOFError, OSError) as error:  # OSError: a broken pipe too
                log.warning("forecast process lost (%s); starting another", error)
                self._stop_child()
                return self._ask(basis, day)

    def close(self) -> None:
        """Stop the child (its stdin closes; killed if it does not exit within 5 s, or
        at once if a computation still holds it after 5 s)."""
        if not self._lock.acquire(timeout=5):
            child = self._child
            if child is not None:
                child.kill()
            return
        try:
            self._stop_child()
        finally:
            self._lock.release()

    def release(self) -> None:
        """Stop the child if it runs and no computation holds it, without waiting for
        it to exit (a worker that no longer holds the forecast partition frees the
        child's copy of the deal states; the next ask starts another and ships every
        state). Returns at once: safe on the event loop."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            child = self._detach()
        finally:
            self._lock.release()
        if child is not None:
            log.info("forecast process %d stopped: no forecast partition held", child.pid)
            threading.Thread(target=_reap, args=(child,), name="forecast-reaper",
                             daemon=True).start()

    @property
    def pid(self) -> int | None:
        """The child's process id, None when none runs."""
        return None if self._child is None else self._child.pid

    def _ask(self, basis: ForecastBasis, day: int) -> ForecastRows:
        child = self._child
        if child is None or child.poll() is not None:
            child = self._start()
        assert child.stdin is not None and child.stdout is not None
        ask, patch, shipped = self._ask_for(basis, day)
        _write(child.stdin, ask)
        for start in range(0, len(patch), _STATES_PER_FRAME):
            _write(child.stdin, patch[start:start + _STATES_PER_FRAME])
        self._shipped = shipped
        self.states_shipped += len(patch)
        status, value = _read(child.stdout)
        if status != "ok":
            self._shipped = _Shipped()  # ship everything again next time
            raise RemoteForecastError(value)
        self.parts_reused.update(part for part, sent in zip(_PARTS, value, strict=True)
                                 if sent is None)
        try:
            rows = _whole(value, self._shipped.answer)
        except RemoteForecastError:
            self._shipped = _Shipped()
            raise
        self._shipped.answer = rows
        return rows

    def _ask_for(self, basis: ForecastBasis, day: int
                 ) -> tuple[_Ask, tuple[tuple[int, DealState], ...], _Shipped]:
        constants = (basis.pricing, basis.calendar, self._settings)
        known = self._shipped
        states = basis.states
        patch = _patch(known.states, states)
        full = patch is None
        if patch is None:
            patch = tuple(enumerate(states))
        ask = _Ask(
            day=day, length=len(states), frames=-(-len(patch) // _STATES_PER_FRAME),
            full=full, change_days=basis.change_days, generation=basis.generation,
            team_names=dict(basis.team_names), owner_names=dict(basis.owner_names),
            constants=None if known.constants == constants else constants)
        return ask, patch, _Shipped(list(states), constants,
                                    None if full else known.answer)

    def _start(self) -> subprocess.Popen[bytes]:
        self._stop_child()
        try:
            self._child = subprocess.Popen(
                [self._python, "-m", "stream_app.adapters.forecast_process"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        except OSError as error:
            raise RuntimeError(f"cannot start the forecast process ({error}); "
                               "PULSE_FORECAST_PROCESS=false computes the forecast in "
                               "the worker instead") from error
        self.started += 1
        log.info("forecast process %d started", self._child.pid)
        return self._child

    def _stop_child(self) -> None:
        child = self._detach()
        if child is not None:
            _reap(child)

    def _detach(self) -> subprocess.Popen[bytes] | None:
        """Forget the child (the next ask starts another and ships every state)."""
        child, self._child = self._child, None
        self._shipped = _Shipped()
        return child


def _reap(child: subprocess.Popen[bytes]) -> None:
    """Close the child's stdin (it exits), wait 5 s at most, then kill it."""
    if child.stdin is not None:
        try:
            child.stdin.close()
        except OSError:
            pass
    try:
        child.wait(5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    if child.stdout is not None:
        child.stdout.close()


def _patch(shipped: Sequence[DealState], states: Sequence[DealState]
           ) -> tuple[tuple[int, DealState], ...] | None:
    """The (position, state) the child must replace or append to hold ``states``, or
    None when shipping them all is cheaper (or the list shrank)."""
    if not shipped or len(states) < len(shipped):
        return None
    changed = [(i, state) for i, (state, old) in enumerate(zip(states, shipped, strict=False))
               if state is not old]
    changed.extend(enumerate(states[len(shipped):], start=len(shipped)))
    if len(changed) > _FULL_SHIP_SHARE * len(states):
        return None
    return tuple(changed)


#: The parts of :class:`ForecastRows` an answer carries, each None when it is the very
#: part of the last answer (the owners' rows, thousands, are unpickled in the worker
#: only when they changed).
_PARTS = ("live", "accuracy", "plans", "owners")
_Answer = tuple[Any, ...]


def _thin(rows: ForecastRows, last: ForecastRows | None) -> _Answer:
    """The parts of ``rows``, each None when it equals the one of ``last``."""
    answer = []
    for part in _PARTS:
        new = getattr(rows, part)
        old = None if last is None else getattr(last, part)
        answer.append(None if old is not None and (old is new or old == new) else new)
    return tuple(answer)


def _whole(answer: _Answer, last: ForecastRows | None) -> ForecastRows:
    """The rows an answer of :func:`_thin` stands for."""
    if last is None and any(value is None for value in answer):
        raise RemoteForecastError("the forecast process answered with parts of an answer "
                                  "the worker does not hold")
    parts = {part: value if value is not None else getattr(last, part)
             for part, value in zip(_PARTS, answer, strict=True)}
    return ForecastRows(**parts)


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The child's loop: apply each ask's patch, answer with the rows (the parts that
    changed) or the error."""
    memo = ReportMemo()
    states: list[DealState] = []
    constants: tuple[Any, Any, ForecastSettings] | None = None
    last: ForecastRows | None = None
    while True:
        try:
            ask: _Ask = _read(stdin)
            if ask.full:
                states, last = [], None
            del states[ask.length:]
            positions: list[int] = []
            for _ in range(ask.frames):
                for position, state in _read(stdin):
                    positions.append(position)
                    if position < len(states):
                        states[position] = state
                    else:
                        states.append(state)
        except EOFError:
            return
        if ask.constants is not None:
            constants = ask.constants
        try:
            if constants is None or len(states) != ask.length:
                raise RuntimeError("the forecast process lost track of the deal states")
            pricing, calendar, settings = constants
            basis = ForecastBasis(tuple(states), ask.change_days, ask.generation,
                                  ask.team_names, pricing, calendar, ask.owner_names)
            if not ask.full:
                memo.paths.patched(basis, tuple(positions))
            rows = forecast_rows(basis, ask.day, settings, memo.cached, memo.paths)
            answer: tuple[str, Any] = ("ok", _thin(rows, last))
            last = rows
        except Exception:  # handed to the worker, which fails the scrapes of that state
            answer, last = ("error", traceback.format_exc()), None
        try:
            _write(stdout, answer)
        except BrokenPipeError:  # the worker stopped while this computed
            return
        gc.freeze()  # what the computation keeps stays out of later full collections


def main() -> None:
    """Entry point of the child (``python -m stream_app.adapters.forecast_process``).
    It ignores SIGINT and SIGTERM, which a Ctrl-C or a stop of the worker's process
    group sends it too: it exits when the worker closes its stdin or dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the pipe
    _serve(stdin, stdout)


if __name__ == "__main__":
    main()
