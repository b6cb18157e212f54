"""Per-account state for churn and lifetime value: won deals and the first churn event.

An account becomes a customer at its first won deal. It churns at the earliest
``customer.churned`` strictly after that; a churn event before the account's
first win is not a customer's churn and contributes nothing.
"""

from __future__ import annotations

__all__ = [
    "ACTIVE_BUYER_DAYS",
    "AccountState",
    "account_contributions",
    "apply_account_churn",
    "apply_account_win",
]

from dataclasses import dataclass, replace
from typing import Any

from stream_app.kpi.deals import Contributions, earliest
from stream_app.kpi.windows import day_of

#: An account counts as a buyer on each of the days from a win's day to this many days on.
ACTIVE_BUYER_DAYS = 365


@dataclass(frozen=True, slots=True)
class AccountState:
    """Won deals as sorted (time_ms, deal_id), one per deal (its earliest known win
    time), and the earliest churn event as (time_ms, event_id, competitor or None)."""

    account_id: str
    wins: tuple[tuple[int, str], ...] = ()
    churned: tuple[int, str, str | None] | None = None

    @property
    def first_won(self) -> tuple[int, str] | None:
        """The earliest win, (time_ms, deal_id)."""
        return self.wins[0] if self.wins else None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the state table."""
        return {
            "id": self.account_id,
            "w": [list(win) for win in self.wins],
            "c": list(self.churned) if self.churned else None,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> AccountState:
        """Inverse of :meth:`to_json`."""
        return cls(
            account_id=raw["id"],
            wins=tuple((int(at), str(deal)) for at, deal in raw["w"]),
            churned=tuple(raw["c"]) if raw["c"] else None,  # type: ignore[arg-type]
        )


def apply_account_win(state: AccountState, won_at_ms: int, deal_id: str) -> AccountState:
    """Record a won deal of the account (keeps each deal's earliest win time)."""
    others = [win for win in state.wins if win[1] != deal_id]
    mine = [win for win in state.wins if win[1] == deal_id]
    if mine and mine[0][0] <= won_at_ms:
        return state
    return replace(state, wins=tuple(sorted((*others, (won_at_ms, deal_id)))))


def apply_account_churn(state: AccountState, churned_at_ms: int, event_id: str,
                        competitor: str | None = None) -> AccountState:
    """Record a churn event of the account (keeps the earliest)."""
    return replace(state, churned=earliest(state.churned, (churned_at_ms, event_id, competitor)))


def account_contributions(state: AccountState) -> Contributions:
    """Per day: ``("n", "", d)`` new customer on the first-win day; ``("c", "", d)`` and
    ``("m", competitor, d)`` churned on the churn day; ``("l", "", d)`` +1 / -1 where
    the account starts / stops being a buyer of the trailing 365 days."""
    if not state.wins:
        return {}
    first_day = day_of(state.wins[0][0])
    out: dict[tuple[str, str, Any], tuple[int, ...]] = {("n", "", first_day): (1,)}
    if state.churned is not None and state.churned[0] > state.wins[0][0]:
        churn_day = day_of(state.churned[0])
        out[("c", "", churn_day)] = (1,)
        if state.churned[2]:
            out[("m", state.churned[2], churn_day)] = (1,)
    intervals: list[list[int]] = []
    for day in sorted({day_of(at) for at, _ in state.wins}):
        if intervals and day <= intervals[-1][1]:
            intervals[-1][1] = day + ACTIVE_BUYER_DAYS
        else:
            intervals.append([day, day + ACTIVE_BUYER_DAYS])
    for start, end in intervals:
        out[("l", "", start)] = (out.get(("l", "", start), (0,))[0] + 1,)
        out[("l", "", end)] = (out.get(("l", "", end), (0,))[0] - 1,)
    return out
