"""Per-deal state: any order and any duplication of a deal's events give the same state."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.kpi.calendar import UTC_CALENDAR
from stream_app.kpi.deals import (
    CREATED_FIELDS,
    DealState,
    apply_deal_event,
    deal_contributions,
    price_gap_femto,
    stint_bucket,
)
from stream_app.kpi.money import Pricing
from stream_app.kpi.windows import ms_from_datetime
from tests.unit.events import ev

PRICING = Pricing({"USD": Decimal(1), "EUR": Decimal("1.08")},
                  {"Prospecting": Decimal("0.1"), "Engaging": Decimal("0.4")})

HISTORY = [
    ev("deal.created", "2026-01-05T10:00:00Z", deal_id="D", amount="1000", currency="EUR"),
    ev("deal.stage_changed", "2026-01-09T10:00:00Z", deal_id="D", to_stage="Engaging"),
    ev("deal.stage_changed", "2026-01-12T10:00:00Z", deal_id="D", from_stage="Engaging",
       to_stage="Prospecting", amount="1500"),
    ev("deal.won", "2026-02-01T10:00:00Z", deal_id="D", amount="1400"),
    ev("deal.lost", "2026-02-03T10:00:00Z", deal_id="D"),
    ev("deal.won", "2026-02-05T10:00:00Z", deal_id="D", amount="1.00"),
]


def _fold(events: list) -> DealState:
    state = DealState("D")
    for event in events:
        state = apply_deal_event(state, event)
    return state


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(range(len(HISTORY))), min_size=1, max_size=12))
def test_state_depends_only_on_the_set_of_events(indices: list[int]) -> None:
    events = [HISTORY[i] for i in indices]
    in_order = _fold([HISTORY[i] for i in sorted(set(indices))])
    assert _fold(events) == in_order
    assert deal_contributions(_fold(events), PRICING) == deal_contributions(in_order, PRICING)


def test_first_terminal_event_wins_and_second_won_is_ignored() -> None:
    state = _fold(HISTORY)
    assert state.closed is not None and state.closed[2:4] == ("won", "1400")


def _day(text: str) -> int:
    return UTC_CALENDAR.day_of(ms_from_datetime(ev("deal.lost", text, deal_id="x").time))


def _stint(days: int, exit_: str, bucket: int) -> tuple[int, ...]:
    hist = [0] * 10
    hist[bucket] = 1
    directions = {"forward": (1, 0, 0), "backward": (0, 1, 0), "lost": (0, 0, 1)}[exit_]
    return (1, days * 86_400_000, *directions, *hist)


def test_contributions_of_a_won_deal_that_went_back_a_stage() -> None:
    state = _fold(HISTORY)
    created, won = _day("2026-01-05T10:00:00Z"), _day("2026-02-01T10:00:00Z")
    cycle = ms_from_datetime(HISTORY[3].time) - ms_from_datetime(HISTORY[0].time)
    assert deal_contributions(state, PRICING) == {
        ("b", "T", created): (1, 0, 0, 0, 0, 0),
        ("b", "T", won): (0, 1, 0, 151200, cycle, 0),
        ("r", "(none)", created): (1, 0, 0, 0),
        ("r", "(none)", won): (0, 1, 0, 151200),
        ("u", "(none)", created): (1, 0, 0, 0),
        ("u", "(none)", won): (0, 1, 0, 151200),
        ("w", "T", f"{created}:created"): (1, 108000),
        ("w", "T", f"{_day('2026-01-09T10:00:00Z')}:advanced"): (1, 108000),
        ("w", "T", f"{_day('2026-01-12T10:00:00Z')}:increased"): (1, 54000),
        ("w", "T", f"{_day('2026-01-12T10:00:00Z')}:regressed"): (1, 162000),
        ("w", "T", f"{won}:won"): (1, 151200),
        ("f", "T", f"{_day('2026-01-09T10:00:00Z')}:Prospecting"): _stint(4, "forward", 2),
        ("f", "T", f"{_day('2026-01-12T10:00:00Z')}:Engaging"): _stint(3, "backward", 1),
        ("f", "T", f"{won}:Prospecting"): _stint(20, "forward", 4),
        ("s", "o1", created): (1, 0, 0, 0, 0),
        ("s", "o1", won): (0, 1, 0, 151200, cycle),
    }


def test_open_deal_counts_in_its_latest_stage_since_it_entered_it() -> None:
    state = _fold(HISTORY[:3])
    assert state.created is not None and state.closed is None
    contributions = deal_contributions(state, PRICING)
    since = _day("2026-01-12T10:00:00Z")
    assert contributions[("o", "T", f"{since}:Prospecting")] == (1, 162000)
    assert [key for key in contributions if key[0] == "o"] == [("o", "T", f"{since}:Prospecting")]
    assert contributions[("j", "o1", "Prospecting")] == (1, 162000)
    assert [key for key in contributions if key[0] == "j"] == [("j", "o1", "Prospecting")]


def test_lost_deal_with_a_competitor_price_and_changes_outside_its_life() -> None:
    events = [
        ev("deal.created", "2026-03-01T00:00:00Z", deal_id="L", amount="200", source="Web",
           product="Pro"),
        ev("deal.stage_changed", "2026-02-01T00:00:00Z", deal_id="L", to_stage="Engaging"),
        ev("deal.stage_changed", "2026-03-02T00:00:00Z", deal_id="L", to_stage="Prospecting",
           amount="300"),
        ev("deal.lost", "2026-03-11T00:00:00Z", deal_id="L", competitor="Acme",
           competitor_price="240"),
        ev("deal.stage_changed", "2026-03-20T00:00:00Z", deal_id="L", to_stage="Engaging"),
    ]
    c = deal_contributions(_fold(events), PRICING)
    lost = _day("2026-03-11T00:00:00Z")
    assert c[("k", "Acme", lost)] == (0, 1, 1, 250_000_000_000_000)
    assert c[("w", "T", f"{lost}:lost")] == (1, 30000)
    assert c[("w", "T", f"{_day('2026-03-02T00:00:00Z')}:increased")] == (1, 10000)
    assert not [k for k in c if k[0] == "w" and k[2].endswith(("advanced", "regressed"))]
    assert c[("f", "T", f"{lost}:Prospecting")] == _stint(10, "lost", 3)
    assert c[("r", "Web", lost)] == (0, 0, 1, 0) and c[("u", "Pro", lost)] == (0, 0, 1, 0)
    assert c[("s", "o1", lost)] == (0, 0, 1, 0, 0)
    assert not [k for k in c if k[0] == "j"]


@pytest.mark.parametrize(("days", "bucket"), [
    (0, 0), (1, 0), (1.0001, 1), (3, 1), (7, 2), (14, 3), (30, 4), (60, 5), (90, 6),
    (180, 7), (365, 8), (365.01, 9), (2000, 9),
])
def test_stint_histogram_bucket_bounds_are_inclusive(days: float, bucket: int) -> None:
    assert stint_bucket(round(days * 86_400_000)) == bucket


@pytest.mark.parametrize(("ours", "price", "femto"), [
    ("110", "100", 100_000_000_000_000),
    ("100", "100", 0),
    ("1", "3", -666_666_666_666_667),
    ("5", "0", None),
])
def test_price_gap(ours: str, price: str, femto: int | None) -> None:
    assert price_gap_femto(ours, price) == femto


def test_events_before_created_are_kept_until_it_arrives() -> None:
    early = _fold([HISTORY[1], HISTORY[3]])
    assert deal_contributions(early, PRICING) == {}
    assert deal_contributions(apply_deal_event(early, HISTORY[0]), PRICING) == \
        deal_contributions(_fold([HISTORY[0], HISTORY[1], HISTORY[3]]), PRICING)


@pytest.mark.parametrize(("amount", "currency", "cents"), [
    ("100", "USD", 10000),
    ("0.005", "USD", 0),
    ("0.015", "USD", 2),
    ("1000", "EUR", 108000),
    ("0.125", "EUR", 14),
])
def test_conversion_rounds_half_even_to_cents(amount: str, currency: str, cents: int) -> None:
    assert PRICING.to_cents(amount, currency) == cents


def test_json_round_trip() -> None:
    state = _fold(HISTORY[:3])
    assert DealState.from_json(state.to_json()) == state


def test_record_lists_the_created_fields_and_reads_records_with_names() -> None:
    state = _fold(HISTORY[:3])
    raw = state.to_json()
    assert state.created is not None
    assert raw["c"][2] == [state.created[2][name] for name in CREATED_FIELDS]
    named = {**raw, "c": [raw["c"][0], raw["c"][1], dict(state.created[2])]}
    assert DealState.from_json(named) == state
    assert len(json.dumps(raw)) < len(json.dumps(named))


def test_an_open_deal_s_record_names_no_empty_history_and_older_records_read_the_same() -> None:
    """About a million open deal records: an empty stage history and no close are left
    out; records written with them (``"h": []``, ``"x": null``) read back equal."""
    state = _fold(HISTORY[:1])
    assert not state.changes and not state.lifecycle.closes
    raw = state.to_json()
    assert set(raw) == {"id", "c"}
    assert DealState.from_json({**raw, "h": [], "x": None}) == state == DealState.from_json(raw)
