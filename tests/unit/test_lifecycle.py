"""Closes, reopenings, deletions and restores: the close in effect and the deletion, as a
table of hand-checked cases; any order and any repeat of the marks give the same answer;
a deal, an owner's win and an account's win follow them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.events.models import crm_event_adapter
from stream_app.kpi.accounts import AccountState, apply_account_churn, apply_account_win
from stream_app.kpi.deals import DealState, apply_deal_event, deal_contributions
from stream_app.kpi.lifecycle import LOST, WON, Lifecycle
from stream_app.kpi.money import Pricing
from stream_app.kpi.owners import OwnerWin, apply_owner_win, win_contributions

PRICING = Pricing({"USD": Decimal(1)}, {"Prospecting": Decimal("0.1"),
                                        "Proposal": Decimal("0.6")})

#: Marks by name: a close (time, id, kind), a reopening (time, id), a deletion or
#: restore (time, id, deleted).
MARKS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "won@10": ("close", (10, "w10", WON)),
    "lost@12": ("close", (12, "l12", LOST)),
    "won@30": ("close", (30, "w30", WON)),
    "reopen@20": ("reopen", (20, "r20")),
    "lost@20": ("close", (20, "a20", LOST)),
    "reopen@10": ("reopen", (10, "z10")),
    "reopen@5": ("reopen", (5, "r5")),
    "reopen@40": ("reopen", (40, "r40")),
    "delete@50": ("delete", (50, "d50", True)),
    "restore@60": ("delete", (60, "s60", False)),
    "delete@70": ("delete", (70, "d70", True)),
}


def _lifecycle(names: list[str]) -> Lifecycle:
    lifecycle = Lifecycle()
    for name in names:
        kind, mark = MARKS[name]
        lifecycle = lifecycle.with_marks(
            closes=(mark,) if kind == "close" else (),
            reopenings=(mark,) if kind == "reopen" else (),  # type: ignore[arg-type]
            deletions=(mark,) if kind == "delete" else ())  # type: ignore[arg-type]
    return lifecycle


@pytest.mark.parametrize(("names", "close", "deleted"), [
    ([], None, False),
    (["won@10"], "w10", False),
    (["won@10", "lost@12"], "w10", False),          # the first close closed the deal
    (["lost@12", "won@10"], "w10", False),          # whatever the order they arrive in
    (["won@10", "reopen@20"], None, False),         # reopened: open again
    (["won@10", "reopen@20", "won@30"], "w30", False),
    (["won@10", "lost@12", "reopen@20", "won@30"], "w30", False),  # both undone
    (["reopen@5", "won@10"], "w10", False),         # a reopening before the close: none undone
    (["won@10", "reopen@20", "lost@20"], "a20", False),  # a switch: both at one time
    (["won@10", "reopen@10"], "w10", False),        # at one time the reopening comes first
    (["won@10", "reopen@20", "won@30", "reopen@40"], None, False),
    (["won@10", "delete@50"], "w10", True),
    (["won@10", "delete@50", "restore@60"], "w10", False),
    (["restore@60", "delete@50"], None, False),     # the latest decides, not the last read
    (["delete@70", "restore@60", "delete@50"], None, True),
])
def test_the_close_in_effect_is_the_first_after_the_latest_reopening(
        names: list[str], close: str | None, deleted: bool) -> None:
    lifecycle = _lifecycle(names)
    assert (lifecycle.close[1] if lifecycle.close else None) == close
    assert lifecycle.deleted == deleted


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(sorted(MARKS)), max_size=12), st.randoms())
def test_any_order_and_any_repeat_of_the_marks_give_the_same_state(
        names: list[str], rng: Any) -> None:
    shuffled = names + names[: len(names) // 2]
    rng.shuffle(shuffled)
    assert _lifecycle(shuffled) == _lifecycle(sorted(set(names)))


def test_a_record_keeps_only_the_marks_that_can_still_decide() -> None:
    lifecycle = _lifecycle(["won@10", "reopen@5", "reopen@20", "won@30", "delete@50",
                            "restore@60"])
    assert lifecycle.closes == ((30, "w30", WON),)
    assert lifecycle.reopenings == ((20, "r20"),)
    assert lifecycle.deletions == ((60, "s60", False),)
    assert Lifecycle.from_json(lifecycle.to_json()) == lifecycle
    # A mark read again changes nothing, down to the object (folds skip the write).
    assert lifecycle.with_marks(closes=lifecycle.closes,
                                reopenings=lifecycle.reopenings) is lifecycle


def _event(kind: str, ident: str, day: int, **data: Any) -> Any:
    at = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC) + dt.timedelta(days=day)
    return crm_event_adapter.validate_python({
        "specversion": "1.0", "id": ident, "source": "crm", "type": kind,
        "time": at.isoformat(), "data": {"deal_id": "D1", **data}})


CREATED = _event("deal.created", "c", 0, account_id="A1", owner_id="rep", team="EMEA",
                 amount="100", currency="USD", stage="Prospecting")
WON_EVENT = _event("deal.won", "w", 10, amount="120")
REOPENED = _event("deal.reopened", "r", 12, stage="Proposal")


def _fold(*events: Any) -> DealState:
    state = DealState("D1")
    for event in events:
        state = apply_deal_event(state, event)
    return state


def _day(day: int) -> int:
    return (dt.date(2026, 3, 1) - dt.date(1970, 1, 1)).days + day


def test_a_reopened_win_leaves_its_day_and_the_deal_is_open_in_the_reopening_stage() -> None:
    won = deal_contributions(_fold(CREATED, WON_EVENT), PRICING)
    assert won[("b", "EMEA", _day(10))] == (0, 1, 0, 12000, 10 * 86_400_000, 1)
    reopened = deal_contributions(_fold(REOPENED, CREATED, WON_EVENT), PRICING)
    assert not any(key[2] == _day(10) for key in reopened if key[0] in ("b", "s"))
    assert reopened[("o", "EMEA", f"{_day(12)}:Proposal")] == (1, 10000)
    assert reopened[("j", "rep", "Proposal")] == (1, 10000)
    # The time between the undone close and the reopening counts in the stage it left.
    assert reopened[("f", "EMEA", f"{_day(12)}:Prospecting")][:2] == (1, 12 * 86_400_000)


def test_a_deleted_deal_contributes_nothing_until_restored() -> None:
    deleted = _fold(CREATED, WON_EVENT, _event("deal.deleted", "x", 30))
    assert deal_contributions(deleted, PRICING) == {}
    restored = apply_deal_event(deleted, _event("deal.restored", "y", 31))
    assert restored.deleted is False
    assert deal_contributions(restored, PRICING) == deal_contributions(
        _fold(CREATED, WON_EVENT), PRICING)
    assert DealState.from_json(restored.to_json()) == restored


def test_an_owners_and_an_accounts_win_are_withdrawn_by_a_reopening() -> None:
    won = Lifecycle(closes=((1_000, "w", WON, 12_000),))
    reopened = Lifecycle(reopenings=((2_000, "r"),))
    owner = apply_owner_win(apply_owner_win(OwnerWin("D1"), "rep", reopened), "rep", won)
    assert win_contributions(owner) == {}
    assert win_contributions(apply_owner_win(OwnerWin("D1"), "rep", won)) == {
        ("y", "rep", "1970-01"): (12_000,)}
    account = apply_account_win(AccountState("A1"), "D1", won)
    assert account.wins == ((1_000, "D1"),)
    assert apply_account_win(account, "D1", reopened).wins == ()


def test_a_withdrawn_first_win_makes_a_later_churn_the_customers() -> None:
    day = 86_400_000
    state = AccountState("A1")
    for deal, at in (("D1", 10 * day), ("D2", 40 * day)):
        state = apply_account_win(state, deal, Lifecycle(closes=((at, f"w-{deal}", WON, 1),)))
    state = apply_account_churn(state, 20 * day, "churn-1")
    state = apply_account_churn(state, 50 * day, "churn-2")
    assert state.churned == (20 * day, "churn-1", None)
    state = apply_account_win(state, "D1", Lifecycle(deletions=((60 * day, "del", True),)))
    assert state.churned == (50 * day, "churn-2", None)
    assert AccountState.from_json(state.to_json()) == state


def test_records_written_before_marks_are_still_read() -> None:
    owner = OwnerWin.from_json({"id": "D1", "w": [1_000, "rep", 500]})
    assert owner.win == (1_000, "rep", 500)
    assert OwnerWin.from_json(owner.to_json()) == owner
    account = AccountState.from_json({"id": "A1", "w": [[1_000, "D1"]], "cs": []})
    assert account.wins == ((1_000, "D1"),)
    deal = DealState.from_json({"id": "D1", "c": None, "h": [],
                                "x": [1, "w", "won", "5", None, None]})
    assert deal.closed == (1, "w", "won", "5", None, None)


def _handover(ident: str, day: int, owner: str) -> Any:
    return _event("deal.updated", ident, day, owner_id=owner)


@pytest.mark.parametrize(("handovers", "closing", "open_owner"), [
    ([], "rep", "rep"),
    ([("h1", 5, "bo")], "bo", "bo"),                      # before the close: bo closes it
    ([("h1", 11, "bo")], "rep", "bo"),                    # after the close: rep closed it
    ([("h1", 5, "bo"), ("h2", 8, "cy")], "cy", "cy"),
    ([("h2", 8, "cy"), ("h1", 5, "bo")], "cy", "cy"),     # in any order
    ([("h0", -1, "bo")], "rep", "rep"),                   # before the creation: ignored
])
def test_the_owner_at_the_close_counts_the_close_and_the_current_owner_the_open_deal(
        handovers: list[tuple[str, int, str]], closing: str, open_owner: str) -> None:
    moves = [_handover(*h) for h in handovers]
    won = deal_contributions(_fold(CREATED, *moves, WON_EVENT), PRICING)
    assert [key[1] for key in won if key[0] == "s" and key[2] == _day(10)] == [closing]
    assert [key[1] for key in won if key[0] == "s" and key[2] == _day(0)] == ["rep"]
    still_open = deal_contributions(_fold(CREATED, *moves), PRICING)
    assert [key[1] for key in still_open if key[0] == "j"] == [open_owner]
    state = _fold(CREATED, *moves, WON_EVENT)
    assert DealState.from_json(state.to_json()) == state


def test_each_owner_of_a_handed_over_deal_hears_of_it_and_only_the_closer_counts_it() -> None:
    creation, handover = (0, "c", "rep"), ((5, "h1", "bo"),)
    won = Lifecycle(closes=((10, "w", WON, 500),))
    creator = apply_owner_win(OwnerWin("D1"), "rep", won, creation, handover)
    closer = apply_owner_win(OwnerWin("D1@bo"), "bo", won, creation, handover)
    assert win_contributions(creator) == {}
    assert win_contributions(closer) == {("y", "bo", "1970-01"): (500,)}
    late = apply_owner_win(closer, "bo", Lifecycle(), creation, ((7, "h2", "rep"),))
    assert win_contributions(late) == {}  # handed back before the close: rep's win
    assert OwnerWin.from_json(late.to_json()) == late
