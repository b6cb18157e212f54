"""Account and owner state: commutative folds and their contributions, as tables."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.kpi.accounts import (
    COHORT_CHURN,
    NEW_CUSTOMER_CHURN,
    AccountState,
    account_contributions,
    apply_account_churn,
    apply_account_win,
)
from stream_app.kpi.kinds import CHURN
from stream_app.kpi.lifecycle import WON, Lifecycle
from stream_app.kpi.money import Pricing
from stream_app.kpi.owners import (
    OwnerState,
    OwnerWin,
    apply_owner_win,
    apply_quota,
    owner_contributions,
    win_contributions,
)

PRICING = Pricing({"USD": Decimal(1), "EUR": Decimal("1.08")}, {"P": Decimal("0.5")})


def _won(state: AccountState, at_ms: int, deal_id: str) -> AccountState:
    """``state`` with a record of ``deal_id`` won at ``at_ms``."""
    return apply_account_win(state, deal_id, Lifecycle(closes=((at_ms, f"{deal_id}-won", WON,
                                                                 0),)))


def _day(text: str) -> int:
    return (dt.date.fromisoformat(text) - dt.date(1970, 1, 1)).days


def _ms(text: str) -> int:
    return _day(text) * 86_400_000 + 3_600_000


@pytest.mark.parametrize(("wins", "deltas"), [
    (["2026-01-10"], {"2026-01-10": 1, "2027-01-10": -1}),
    (["2026-01-10", "2026-06-01"], {"2026-01-10": 1, "2027-06-01": -1}),
    (["2026-01-10", "2027-01-10"], {"2026-01-10": 1, "2028-01-10": -1}),
    (["2026-01-10", "2027-01-11"], {"2026-01-10": 1, "2027-01-10": -1, "2027-01-11": 1,
                                    "2028-01-11": -1}),
    (["2026-01-10", "2026-01-10"], {"2026-01-10": 1, "2027-01-10": -1}),
])
def test_buyer_intervals_merge_wins_less_than_a_year_apart(wins: list[str],
                                                           deltas: dict[str, int]) -> None:
    state = AccountState("A")
    for i, day in enumerate(wins):
        state = _won(state, _ms(day), f"deal-{i}")
    got = {k[2]: v[0] for k, v in account_contributions(state).items() if k[0] == "l"}
    assert got == {_day(day): n for day, n in deltas.items()}


@pytest.mark.parametrize(("churn", "competitor", "counted"), [
    ("2026-03-01", "Acme", True),
    ("2026-03-01", None, True),
    ("2026-01-05", "Acme", False),
])
def test_churn_counts_after_the_first_win_and_names_the_competitor(
    churn: str, competitor: str | None, counted: bool,
) -> None:
    state = _won(AccountState("A"), _ms("2026-01-10"), "d1")
    state = apply_account_churn(state, _ms(churn), "e1", competitor)
    c = account_contributions(state)
    assert c[("n", "", _day("2026-01-10"))] == (1,)
    assert ((CHURN, COHORT_CHURN, _day(churn)) in c) == counted
    assert (("m", "Acme", _day(churn)) in c) == (counted and competitor == "Acme")


#: A win-back: the account left (e0) before its first win, was won (d1), churned (e1),
#: sent another notice (e2) and was won again (d2).
WIN_BACK = [("win", "2026-03-10", "d1"), ("churn", "2026-01-05", "e0"),
            ("churn", "2026-05-20", "e1"), ("churn", "2026-07-01", "e2"),
            ("win", "2026-08-01", "d2")]


def _apply(state: AccountState, step: tuple[str, str, str]) -> AccountState:
    kind, day, ident = step
    if kind == "win":
        return _won(state, _ms(day), ident)
    return apply_account_churn(state, _ms(day), ident, f"rival-{ident}")


@settings(max_examples=120, deadline=None)
@given(st.permutations(WIN_BACK + WIN_BACK[1:3]))
def test_a_churn_notice_before_the_first_win_does_not_hide_the_later_churn(
    steps: list[tuple[str, str, str]],
) -> None:
    state = AccountState("A")
    for step in steps:
        state = _apply(state, step)
    assert state.churned == (_ms("2026-05-20"), "e1", "rival-e1")
    assert account_contributions(state) == {
        ("n", "", _day("2026-03-10")): (1,),
        (CHURN, COHORT_CHURN, _day("2026-05-20")): (1,),
        ("m", "rival-e1", _day("2026-05-20")): (1,),
        ("l", "", _day("2026-03-10")): (1,), ("l", "", _day("2027-08-01")): (-1,),
    }


@pytest.mark.parametrize(("win", "churn", "group"), [
    ("2026-03-01", "2026-03-31", NEW_CUSTOMER_CHURN),
    ("2026-03-31", "2026-04-01", COHORT_CHURN),
    ("2026-02-28", "2026-03-01", COHORT_CHURN),
    ("2026-03-02", "2026-03-02", None),
])
def test_a_churn_counts_in_the_cohort_only_when_won_before_its_month(
    win: str, churn: str, group: str | None,
) -> None:
    state = apply_account_churn(_won(AccountState("A"), _ms(win), "d1"),
                                _ms(churn), "e1")
    churned = {k[1] for k in account_contributions(state) if k[0] == CHURN}
    assert churned == ({group} if group is not None else set())


def test_an_account_record_with_one_churn_is_still_read() -> None:
    raw = {"id": "A", "w": [[_ms("2026-01-10"), "d1"]], "c": [_ms("2026-02-01"), "e1", None]}
    state = AccountState.from_json(raw)
    assert state.churned == (_ms("2026-02-01"), "e1", None)
    assert AccountState.from_json(state.to_json()) == state


QUOTAS = [("2026-11", _ms("2026-11-01"), "q1", "East", "1000", "USD"),
          ("2026-11", _ms("2026-11-15"), "q2", "East", "1200", "USD"),
          ("2026-11", _ms("2026-10-30"), "q0", "East", "1", "USD"),
          ("2026-Q4", _ms("2026-10-01"), "q3", "West", "1000", "EUR")]


@settings(max_examples=100, deadline=None)
@given(st.permutations(range(len(QUOTAS))))
def test_latest_quota_of_a_period_wins_in_any_order(order: list[int]) -> None:
    state = OwnerState("o1")
    for i in order:
        state = apply_quota(state, *QUOTAS[i])
    assert owner_contributions(state, PRICING) == {
        ("a", "o1", "2026-11|East"): (120000, 1),
        ("a", "o1", "2026-Q4|West"): (108000, 1),
    }


@pytest.mark.parametrize(("wins", "month", "cents"), [
    ([(_ms("2026-11-30"), 500)], "2026-11", 500),
    ([(_ms("2026-12-01"), 500), (_ms("2026-11-03"), 700)], "2026-11", 700),
    ([(_ms("2026-11-03"), 700), (_ms("2026-11-03"), 700)], "2026-11", 700),
])
def test_a_deal_counts_once_in_the_month_of_its_earliest_win(
    wins: list[tuple[int, int]], month: str, cents: int,
) -> None:
    state = OwnerWin("d1")
    for at, amount in wins:
        state = apply_owner_win(state, "o1", Lifecycle(closes=((at, f"won-{at}", WON, amount),)))
    assert win_contributions(state) == {("y", "o1", month): (cents,)}
