"""Per-deal state: any order and any duplication of a deal's events give the same state."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.kpi.deals import DealState, apply_deal_event, deal_contributions
from stream_app.kpi.money import Pricing
from stream_app.kpi.windows import day_of, ms_from_datetime
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
    assert state.closed is not None and state.closed[2:] == ("won", "1400")


def test_contributions_of_a_won_deal() -> None:
    state = _fold(HISTORY)
    created = day_of(ms_from_datetime(HISTORY[0].time))
    won = day_of(ms_from_datetime(HISTORY[3].time))
    cycle = ms_from_datetime(HISTORY[3].time) - ms_from_datetime(HISTORY[0].time)
    assert deal_contributions(state, PRICING) == {
        ("b", "T", created): (1, 0, 0, 0, 0),
        ("b", "T", won): (0, 1, 0, 151200, cycle),
    }


def test_open_deal_counts_in_its_latest_stage_with_its_latest_amount() -> None:
    state = _fold(HISTORY[:3])
    assert state.is_open
    contributions = deal_contributions(state, PRICING)
    assert contributions[("o", "T", "Prospecting")] == (1, 162000)


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
