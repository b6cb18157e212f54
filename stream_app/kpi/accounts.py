"""Per-account state for churn: the first won deal and the first churn event.

An account becomes a customer at its first won deal. It churns at the earliest
``customer.churned`` strictly after that; a churn event before the account's
first win is not a customer's churn and contributes nothing.
"""

from __future__ import annotations

__all__ = ["AccountState", "account_contributions", "apply_account_churn", "apply_account_win"]

from dataclasses import dataclass, replace
from typing import Any

from stream_app.kpi.deals import Contributions
from stream_app.kpi.windows import day_of


@dataclass(frozen=True, slots=True)
class AccountState:
    """Earliest win (time_ms, deal_id) and earliest churn (time_ms, event_id)."""

    account_id: str
    first_won: tuple[int, str] | None = None
    churned: tuple[int, str] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the state table."""
        return {
            "id": self.account_id,
            "w": list(self.first_won) if self.first_won else None,
            "c": list(self.churned) if self.churned else None,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> AccountState:
        """Inverse of :meth:`to_json`."""
        return cls(
            account_id=raw["id"],
            first_won=tuple(raw["w"]) if raw["w"] else None,  # type: ignore[arg-type]
            churned=tuple(raw["c"]) if raw["c"] else None,  # type: ignore[arg-type]
        )


def apply_account_win(state: AccountState, won_at_ms: int, deal_id: str) -> AccountState:
    """Record a won deal of the account (keeps the earliest)."""
    candidate = (won_at_ms, deal_id)
    if state.first_won is None or candidate < state.first_won:
        return replace(state, first_won=candidate)
    return state


def apply_account_churn(state: AccountState, churned_at_ms: int, event_id: str) -> AccountState:
    """Record a churn event of the account (keeps the earliest)."""
    candidate = (churned_at_ms, event_id)
    if state.churned is None or candidate < state.churned:
        return replace(state, churned=candidate)
    return state


def account_contributions(state: AccountState) -> Contributions:
    """``("n", "", day)`` += 1 on the first-win day; ``("c", "", day)`` += 1 on the churn day."""
    if state.first_won is None:
        return {}
    out: Contributions = {("n", "", day_of(state.first_won[0])): (1,)}
    if state.churned is not None and state.churned[0] > state.first_won[0]:
        out[("c", "", day_of(state.churned[0]))] = (1,)
    return out
