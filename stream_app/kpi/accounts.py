"""Per-account state for churn and lifetime value: won deals and churn events.

An account becomes a customer at its first won deal (a deal whose close in effect is a
win: a reopened or deleted deal's win is withdrawn, :mod:`stream_app.kpi.lifecycle`).
It churns at the earliest ``customer.churned`` strictly after that first win; a churn
event at or before the first win (an earlier relationship that ended before a win-back)
is kept, since a win that arrives late may come before it, but is not the customer's
churn.

A churn is a *starting-cohort* churn when the customer was won before the calendar
month of the churn began (it was active at that month's start), and a *new-customer*
churn when it was won in the same month it churned.
"""

from __future__ import annotations

__all__ = [
    "ACTIVE_BUYER_DAYS",
    "COHORT_CHURN",
    "NEW_CUSTOMER_CHURN",
    "AccountState",
    "ChurnEvent",
    "account_contributions",
    "apply_account_churn",
    "apply_account_win",
]

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from stream_app.kpi.calendar import UTC_CALENDAR, Calendar
from stream_app.kpi.deals import Contributions
from stream_app.kpi.kinds import ACTIVE_CUSTOMERS, CHURN, CHURN_TO_COMPETITOR, NEW_CUSTOMER
from stream_app.kpi.lifecycle import WON, Lifecycle

#: An account counts as a buyer on each of the days from a win's day to this many days on.
ACTIVE_BUYER_DAYS = 365
#: Group of churns of customers active at the start of the churn's month.
COHORT_CHURN = ""
#: Group of churns of customers won in the churn's own month.
NEW_CUSTOMER_CHURN = "new"

#: A ``customer.churned`` event: (time_ms, event_id, competitor or None).
ChurnEvent = tuple[int, str, str | None]


@dataclass(frozen=True, slots=True)
class AccountState:
    """The account's deals with a win, as (deal_id, marks) sorted by deal id (the union of
    the marks their records carried: :mod:`stream_app.kpi.lifecycle`), and its churn
    events sorted by (time, id)."""

    account_id: str
    deals: tuple[tuple[str, Lifecycle], ...] = ()
    churns: tuple[ChurnEvent, ...] = ()

    @property
    def wins(self) -> tuple[tuple[int, str], ...]:
        """(won_at_ms, deal_id) of each deal whose close in effect is a win (not reopened,
        not deleted), sorted."""
        wins = []
        for deal_id, lifecycle in self.deals:
            close = lifecycle.close
            if close is not None and close[2] == WON and not lifecycle.deleted:
                wins.append((int(close[0]), deal_id))
        return tuple(sorted(wins))

    @property
    def churned(self) -> ChurnEvent | None:
        """The customer's churn: the earliest churn event strictly after the first win."""
        wins = self.wins
        if not wins:
            return None
        first = wins[0][0]
        return next((churn for churn in self.churns if churn[0] > first), None)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the state table."""
        return {
            "id": self.account_id,
            "d": [[deal_id, lifecycle.to_json()] for deal_id, lifecycle in self.deals],
            "cs": [list(churn) for churn in self.churns],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> AccountState:
        """Inverse of :meth:`to_json`; also reads records that kept one win per deal
        (``"w"``) and one churn (``"c"``)."""
        listed = raw["cs"] if "cs" in raw else ([raw["c"]] if raw.get("c") else [])
        if "d" in raw:
            deals = tuple((str(deal), Lifecycle.from_json(marks)) for deal, marks in raw["d"])
        else:
            deals = tuple(sorted((str(deal), Lifecycle(closes=((int(at), "", WON, 0),)))
                                 for at, deal in raw["w"]))
        return cls(
            account_id=raw["id"],
            deals=deals,
            churns=_in_order((int(at), str(event), competitor) for at, event, competitor in listed),
        )


def _in_order(churns: Iterable[ChurnEvent]) -> tuple[ChurnEvent, ...]:
    """Churn events sorted by (time, event id)."""
    return tuple(sorted(churns, key=lambda churn: churn[:2]))


def apply_account_win(state: AccountState, deal_id: str, lifecycle: Lifecycle) -> AccountState:
    """Add a record's marks to the deal's (a union: any order, any repeat)."""
    current = dict(state.deals)
    mine = current.get(deal_id, Lifecycle())
    merged = mine.with_marks(lifecycle.closes, lifecycle.reopenings, lifecycle.deletions)
    if deal_id in current and merged is mine:
        return state
    current[deal_id] = merged
    return replace(state, deals=tuple(sorted(current.items())))


def apply_account_churn(state: AccountState, churned_at_ms: int, event_id: str,
                        competitor: str | None = None) -> AccountState:
    """Record a churn event of the account (each event once, in any order). Every one is
    kept: a win withdrawn later (a reopened or deleted deal) can move the first win
    later, past churns that did not count before."""
    event = (churned_at_ms, event_id, competitor)
    if any(churn[:2] == event[:2] for churn in state.churns):
        return state
    return replace(state, churns=_in_order((*state.churns, event)))


def account_contributions(state: AccountState, calendar: Calendar = UTC_CALENDAR
                          ) -> Contributions:
    """Per day: ``(NEW_CUSTOMER, "", d)`` on the first-win day; ``(CHURN,
    COHORT_CHURN or NEW_CUSTOMER_CHURN, d)`` and ``(CHURN_TO_COMPETITOR, competitor, d)``
    on the churn day; ``(ACTIVE_CUSTOMERS, "", d)`` +1 / -1 where the account starts /
    stops being a buyer of the trailing 365 days."""
    wins = state.wins
    if not wins:
        return {}
    day_of = calendar.day_of
    first_day = day_of(wins[0][0])
    out: dict[tuple[str, str, Any], tuple[int, ...]] = {(NEW_CUSTOMER, "", first_day): (1,)}
    churn = state.churned
    if churn is not None:
        churn_day = day_of(churn[0])
        month_start, _ = calendar.month_bounds(churn_day)
        cohort = COHORT_CHURN if first_day < month_start else NEW_CUSTOMER_CHURN
        out[(CHURN, cohort, churn_day)] = (1,)
        if churn[2]:
            out[(CHURN_TO_COMPETITOR, churn[2], churn_day)] = (1,)
    intervals: list[list[int]] = []
    for day in sorted({day_of(at) for at, _ in wins}):
        if intervals and day <= intervals[-1][1]:
            intervals[-1][1] = day + ACTIVE_BUYER_DAYS
        else:
            intervals.append([day, day + ACTIVE_BUYER_DAYS])
    for start, end in intervals:
        out[(ACTIVE_CUSTOMERS, "", start)] = (out.get((ACTIVE_CUSTOMERS, "", start), (0,))[0] + 1,)
        out[(ACTIVE_CUSTOMERS, "", end)] = (out.get((ACTIVE_CUSTOMERS, "", end), (0,))[0] - 1,)
    return out
