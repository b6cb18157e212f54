"""The forecast partition's deal states: cut at any earlier day, kept beside the owners'
table, and the signature that tells the report which cached forecasts still hold."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from stream_app.config import Settings, pricing
from stream_app.events.models import crm_event_adapter
from stream_app.kpi.calendar import UTC_CALENDAR, Calendar
from stream_app.kpi.deals import DealState, apply_deal_event, state_before
from stream_app.kpi.fold import entity_key
from stream_app.kpi.forecast_report import ForecastBasis
from stream_app.kpi.kinds import FORECAST_ENTITY
from stream_app.kpi.snapshot import Snapshot
from stream_app.kpi.windows import ms_from_datetime
from stream_app.sources.forecast_book import ForecastBook
from stream_app.tools.generator import GeneratorSettings, generate_events
from tests.unit.events import ev

PRICING = pricing(Settings())


def _fold(events: list, for_forecast: bool) -> dict[str, DealState]:
    states: dict[str, DealState] = {}
    for event in events:
        deal_id = event.data.deal_id
        states[deal_id] = apply_deal_event(states.get(deal_id) or DealState(deal_id), event,
                                           for_forecast=for_forecast)
    return states


def test_a_state_folded_whole_and_cut_at_a_day_equals_the_fold_of_the_events_before() -> None:
    """Reopenings, deletions and restores included: a pruned fold would have dropped the
    close a later reopening overrides, which an earlier cut still needs."""
    end = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    events = [crm_event_adapter.validate_python(e) for e in generate_events(GeneratorSettings(
        seed=12, start=end - dt.timedelta(days=150), end=end, deals_per_day=4,
        leads_per_deal=0, activities_per_deal=0, reopen_probability=0.3,
        delete_probability=0.2, plan_update_probability=0.5)) if e["type"].startswith("deal.")]
    rng = random.Random(12)
    shuffled = rng.sample(events, len(events))
    whole = _fold(shuffled, for_forecast=True)
    for days_before in (120, 60, 20):
        cutoff = ms_from_datetime(end - dt.timedelta(days=days_before))
        before = _fold([e for e in shuffled if ms_from_datetime(e.time) < cutoff],
                       for_forecast=True)
        cut = {deal: state_before(state, cutoff) for deal, state in whole.items()}
        for deal, state in cut.items():
            expected = before.get(deal, DealState(deal))
            assert (state.created, state.changes, state.owners, state.plans,
                    state.lifecycle.close, state.deleted) == (
                expected.created, expected.changes, expected.owners, expected.plans,
                expected.lifecycle.close, expected.deleted), deal
    pruned = _fold(shuffled, for_forecast=False)
    assert any(len(whole[d].lifecycle.closes) > len(pruned[d].lifecycle.closes) for d in whole)


def _book(events: list, calendar: Calendar = UTC_CALENDAR) -> ForecastBook:
    book = ForecastBook(PRICING, calendar)
    for state in _fold(events, for_forecast=True).values():
        book.note(7, state)
    return book


def _basis(book: ForecastBook, partitions: frozenset[int] = frozenset({7})
           ) -> ForecastBasis | None:
    snap = Snapshot()
    book.contribute(snap, partitions)
    return snap.forecast


def _day(date: str) -> int:
    return (dt.date.fromisoformat(date) - dt.date(1970, 1, 1)).days


def test_a_change_moves_only_the_signatures_of_the_cuts_after_its_earliest_new_event() -> None:
    created = ev("deal.created", "2026-03-02T10:00:00Z", deal_id="D")
    book = _book([created])
    basis = _basis(book)
    assert basis is not None
    before = {day: basis.signature_before(_day(day)) for day in ("2026-03-02", "2026-03-03",
                                                                 "2026-03-11")}
    state = apply_deal_event(basis.states[0], ev("deal.won", "2026-03-10T09:00:00Z",
                                                 deal_id="D", amount="100"), for_forecast=True)
    book.note(7, state)
    after = _basis(book)
    assert after is not None and after is not basis
    assert after.signature_before(_day("2026-03-02")) == before["2026-03-02"]
    assert after.signature_before(_day("2026-03-03")) == before["2026-03-03"]
    assert after.signature_before(_day("2026-03-11")) != before["2026-03-11"]
    assert after.signature_before(None) != basis.signature_before(None)
    book.note(7, DealState.from_json(state.to_json()))  # the same state again
    assert _basis(book) is after


def test_the_book_hands_over_only_the_exported_partitions_and_is_rebuilt_from_the_table() -> None:
    won = [ev("deal.created", "2026-03-02T10:00:00Z", deal_id="D", team="all"),
           ev("deal.won", "2026-03-04T10:00:00Z", deal_id="D", amount="100")]
    book = _book(won)
    assert _basis(book, frozenset({1})) is None
    basis = _basis(book)
    assert basis is not None and [s.deal_id for s in basis.states] == ["D"]
    assert basis.team_names == {"all": "all_"}  # a data value never mixes with the total
    key = entity_key(FORECAST_ENTITY, "D")
    restored = ForecastBook(PRICING, UTC_CALENDAR)
    restored.note_key(key, 7)
    restored.note_key("owner|o1", 7)
    restored.rebuild({key: {"v": basis.states[0].to_json()}})
    again = _basis(restored)
    assert again is not None and again.states == basis.states
    assert (again.generation, basis.generation) == (1, 0)  # nothing cached survives


@pytest.mark.parametrize("keep", [lambda label, value: value == "A", None])
def test_teams_past_the_cap_are_forecast_as_other(keep) -> None:  # type: ignore[no-untyped-def]
    events = [ev("deal.created", "2026-03-02T10:00:00Z", deal_id="D1", team="A"),
              ev("deal.created", "2026-03-02T10:00:00Z", deal_id="D2", team="B")]
    book = _book(events)
    snap = Snapshot()
    book.contribute(snap, frozenset({7}), keep)
    assert snap.forecast is not None
    assert snap.forecast.team_names == ({"A": "A", "B": "(other)"} if keep else
                                        {"A": "A", "B": "B"})


def test_names_are_read_again_only_when_the_labels_version_moves_or_a_label_is_new() -> None:
    events = [ev("deal.created", "2026-03-02T10:00:00Z", deal_id="D1", team="A"),
              ev("deal.created", "2026-03-02T10:00:00Z", deal_id="D2", team="B")]
    book = _book(events)
    kept = {"A", "B"}
    asked: list[str] = []

    def keep(label: str, value: str) -> bool:
        asked.append(value)
        return value in kept or label == "owner"

    def names(version: int) -> dict[str, str]:
        snap = Snapshot()
        book.contribute(snap, frozenset({7}), keep, version)
        assert snap.forecast is not None
        return dict(snap.forecast.team_names)

    assert names(1) == {"A": "A", "B": "B"} and asked
    asked.clear()
    assert names(1) == {"A": "A", "B": "B"} and not asked
    kept.discard("B")
    assert names(2) == {"A": "A", "B": "(other)"} and asked
    asked.clear()
    book.note(7, _fold([ev("deal.created", "2026-03-03T10:00:00Z", deal_id="D3",
                           team="C")], for_forecast=True)["D3"])
    assert names(2) == {"A": "A", "B": "(other)", "C": "(other)"} and asked
