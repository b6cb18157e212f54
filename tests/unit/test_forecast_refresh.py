"""The forecast computed beside the scrapes: fresh rows within the wait, the last rows
marked stale past it, the newest state asked computed next, failures reported."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from stream_app.adapters import forecast_refresh
from stream_app.adapters.forecast_refresh import ForecastRefresher
from stream_app.config import Settings, pricing
from stream_app.events.models import crm_event_adapter
from stream_app.kpi.calendar import UTC_CALENDAR
from stream_app.kpi.deals import DealState, apply_deal_event
from stream_app.kpi.forecast import DEFAULT_FORECAST
from stream_app.kpi.forecast_report import (
    ForecastRows,
    ForecastSource,
    PathCache,
    forecast_rows,
)
from stream_app.kpi.snapshot import Snapshot
from stream_app.kpi.windows import ms_from_datetime
from stream_app.sources.forecast_book import ForecastBook
from stream_app.tools.generator import GeneratorSettings, generate_events


class _Basis:
    """Stands for a ForecastBasis: the refresher only hands it on."""

    def __init__(self, name: str):
        self.name = name
        self.states = (name,)


class _Forecasts:
    """forecast_rows replaced: records what it was asked, blocks while ``gate`` is clear."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail: set[str] = set()

    def __call__(self, basis: Any, day: int, *_: Any) -> ForecastRows:
        self.asked.append((basis.name, day))
        self.gate.wait(10)
        if basis.name in self.fail:
            raise ValueError(f"cannot forecast {basis.name}")
        return ForecastRows(plans=(), live=())


@pytest.fixture
def forecasts(monkeypatch: pytest.MonkeyPatch) -> _Forecasts:
    fake = _Forecasts()
    monkeypatch.setattr(forecast_refresh, "forecast_rows", fake)
    return fake


def _ask(refresher: ForecastRefresher, basis: _Basis, day: int) -> ForecastRows:
    source: ForecastSource = refresher.rows
    return source(basis, day)  # type: ignore[arg-type]


def _until(condition: Any) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_rows_computed_within_the_wait_are_current(forecasts: _Forecasts) -> None:
    refresher = ForecastRefresher(DEFAULT_FORECAST, wait_seconds=5)
    first = _ask(refresher, _Basis("a"), 10)
    assert not first.stale and first.compute_seconds is not None
    assert _ask(refresher, _Basis("a"), 10) is not first  # another basis object: asked again
    basis = _Basis("b")
    rows = _ask(refresher, basis, 10)
    assert _ask(refresher, basis, 10) is rows  # same basis and day: not computed again
    assert forecasts.asked == [("a", 10), ("a", 10), ("b", 10)]
    assert refresher.rows(None, 10) == ForecastRows()


def test_past_the_wait_the_last_rows_are_marked_stale_until_the_new_ones_are_done(
        forecasts: _Forecasts) -> None:
    refresher = ForecastRefresher(DEFAULT_FORECAST, wait_seconds=0.05)
    old = _Basis("old")
    done = _ask(refresher, old, 10)
    assert not done.stale
    forecasts.gate.clear()
    new = _Basis("new")
    waiting = _ask(refresher, new, 10)
    assert waiting.stale and waiting.compute_seconds == done.compute_seconds
    version = refresher.version
    forecasts.gate.set()
    _until(lambda: refresher.version > version)
    assert not _ask(refresher, new, 10).stale


def test_nothing_computed_yet_gives_empty_stale_rows(forecasts: _Forecasts) -> None:
    refresher = ForecastRefresher(DEFAULT_FORECAST, wait_seconds=0.01)
    forecasts.gate.clear()
    rows = _ask(refresher, _Basis("a"), 10)
    assert rows.stale and not rows.live
    forecasts.gate.set()


def test_a_newer_state_asked_during_a_computation_is_computed_right_after(
        forecasts: _Forecasts) -> None:
    refresher = ForecastRefresher(DEFAULT_FORECAST, wait_seconds=0.01)
    forecasts.gate.clear()
    _ask(refresher, _Basis("first"), 10)
    _ask(refresher, _Basis("second"), 10)
    latest = _Basis("third")
    _ask(refresher, latest, 11)
    forecasts.gate.set()
    _until(lambda: forecasts.asked[-1:] == [("third", 11)] and refresher.version == 2)
    # "second" was overtaken by "third" before it started: never computed
    assert forecasts.asked == [("first", 10), ("third", 11)]
    assert not _ask(refresher, latest, 11).stale


def test_a_failed_forecast_fails_the_scrapes_of_that_state(forecasts: _Forecasts) -> None:
    refresher = ForecastRefresher(DEFAULT_FORECAST, wait_seconds=5)
    forecasts.fail.add("broken")
    broken = _Basis("broken")
    with pytest.raises(RuntimeError, match="forecast of this state failed"):
        _ask(refresher, broken, 10)
    with pytest.raises(RuntimeError):
        _ask(refresher, broken, 10)
    assert not _ask(refresher, _Basis("fine"), 10).stale


def test_the_real_forecast_rows_come_through_unchanged() -> None:
    """No stand-in: the rows of a generated organisation's deals, as the report would
    compute them, with the time it took."""
    end = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    book = ForecastBook(pricing(Settings()), UTC_CALENDAR)
    states: dict[str, DealState] = {}
    for raw in generate_events(GeneratorSettings(
            seed=5, start=end - dt.timedelta(days=200), end=end, deals_per_day=3,
            leads_per_deal=0, activities_per_deal=0, expected_close_error_days=5.0)):
        if raw["type"].startswith("deal."):
            event = crm_event_adapter.validate_python(raw)
            deal_id = event.data.deal_id
            states[deal_id] = apply_deal_event(states.get(deal_id) or DealState(deal_id),
                                               event, for_forecast=True)
    for state in states.values():
        book.note(7, state)
    snap = Snapshot()
    book.contribute(snap, frozenset({7}))
    basis = snap.forecast
    day = UTC_CALENDAR.day_of(ms_from_datetime(end))
    rows = ForecastRefresher(DEFAULT_FORECAST, wait_seconds=30).rows(basis, day)
    direct = forecast_rows(basis, day, DEFAULT_FORECAST, lambda _, __, compute: compute(),
                           PathCache())
    assert rows.live and rows.compute_seconds is not None and not rows.stale
    assert replace(rows, compute_seconds=None) == direct


def test_after_a_computation_longer_than_the_wait_a_scrape_does_not_wait(
        forecasts: _Forecasts) -> None:
    refresher = ForecastRefresher(DEFAULT_FORECAST, wait_seconds=0.05)
    assert refresher.wait_budget() == 0.05  # nothing computed yet: worth waiting
    forecasts.gate.clear()
    assert _ask(refresher, _Basis("slow"), 10).stale
    time.sleep(0.1)
    forecasts.gate.set()
    _until(lambda: refresher.version == 1)
    assert refresher.last_seconds > 0.05
    assert refresher.wait_budget() == 0.0
    _ask(refresher, _Basis("quick"), 10)
    _until(lambda: refresher.version == 2)
    assert refresher.last_seconds < 0.05 and refresher.wait_budget() == 0.05


class _Rest:
    """A clock that stands still and a sleep that records how long it was asked to rest
    and holds the thread until ``release`` is set."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self.release = threading.Event()
        self.release.set()

    def clock(self) -> float:
        return 1_000.0

    def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        self.release.wait(10)


def test_the_next_computation_rests_as_long_as_the_last_one_took(
        forecasts: _Forecasts) -> None:
    rest = _Rest()
    refresher = ForecastRefresher(DEFAULT_FORECAST, wait_seconds=5, clock=rest.clock,
                                  sleep=rest.sleep)
    assert not _ask(refresher, _Basis("first"), 10).stale
    assert rest.asked == []  # nothing computed before: no rest
    took = refresher.last_seconds
    assert not _ask(refresher, _Basis("second"), 10).stale
    assert rest.asked == [took]


def test_a_state_asked_during_the_rest_is_computed_instead_of_the_one_waiting(
        forecasts: _Forecasts) -> None:
    rest = _Rest()
    refresher = ForecastRefresher(DEFAULT_FORECAST, wait_seconds=0.01, clock=rest.clock,
                                  sleep=rest.sleep)
    _ask(refresher, _Basis("first"), 10)
    rest.release.clear()
    assert _ask(refresher, _Basis("second"), 10).stale  # resting: the first's rows
    latest = _Basis("third")
    assert _ask(refresher, latest, 11).stale
    rest.release.set()
    _until(lambda: refresher.version == 2)
    assert forecasts.asked == [("first", 10), ("third", 11)]
    assert not _ask(refresher, latest, 11).stale


def test_a_prefetched_state_is_computed_before_any_scrape_asks(forecasts: _Forecasts) -> None:
    refresher = ForecastRefresher(DEFAULT_FORECAST, wait_seconds=0)
    basis = _Basis("a")
    refresher.prefetch(basis, 10)  # type: ignore[arg-type]
    _until(lambda: refresher.version == 1)
    refresher.prefetch(basis, 10)  # type: ignore[arg-type]  # computed: nothing to do
    rows = _ask(refresher, basis, 10)
    assert not rows.stale
    assert forecasts.asked == [("a", 10)]
    refresher.prefetch(None, 10)
    assert forecasts.asked == [("a", 10)]


def test_a_state_prefetched_during_a_computation_is_computed_next(
        forecasts: _Forecasts) -> None:
    refresher = ForecastRefresher(DEFAULT_FORECAST, wait_seconds=0)
    forecasts.gate.clear()
    first, second = _Basis("first"), _Basis("second")
    refresher.prefetch(first, 10)  # type: ignore[arg-type]
    refresher.prefetch(first, 10)  # type: ignore[arg-type]  # running: not asked twice
    refresher.prefetch(second, 11)  # type: ignore[arg-type]
    forecasts.gate.set()
    _until(lambda: refresher.version == 2)
    assert forecasts.asked == [("first", 10), ("second", 11)]
    assert not _ask(refresher, second, 11).stale


def test_rows_computed_elsewhere_come_through_the_refresher() -> None:
    asked = []

    def compute(basis: Any, day: int) -> ForecastRows:
        asked.append((basis.name, day))
        return ForecastRows(live=())

    refresher = ForecastRefresher(DEFAULT_FORECAST, wait_seconds=5, compute=compute)
    rows = _ask(refresher, _Basis("a"), 10)
    assert not rows.stale and rows.compute_seconds is not None
    assert asked == [("a", 10)]


def test_rows_computed_in_another_process_need_no_rest(forecasts: _Forecasts) -> None:
    rest = _Rest()
    refresher = ForecastRefresher(DEFAULT_FORECAST, wait_seconds=5, clock=rest.clock,
                                  sleep=rest.sleep, compute=lambda basis, day: ForecastRows())
    for name in ("first", "second", "third"):
        assert not _ask(refresher, _Basis(name), 10).stale
    assert rest.asked == []
