"""Per-owner (sales rep) quotas and per-deal wins re-keyed by owner: state and aggregates.

Both live on the owner's partition (the quota topic and the owner-wins topic are keyed
by owner_id), so one worker holds an owner's quotas and wins and can tell whether the
owner reached the quota.

- :class:`OwnerState`: the latest ``quota.set`` (event time, then id) per period;
  contributes ``(OWNER_QUOTA, owner, "period|team")`` = (quota cents, 1) (the 1 keeps a zero
  quota visible).
- :class:`OwnerWin`: one won deal, keyed by deal, holding the union of the closes,
  reopenings and deletions its records carried (:mod:`stream_app.kpi.lifecycle`), so a
  repeated or replayed record changes nothing and a reopened or deleted deal's win is
  withdrawn; contributes ``(OWNER_WON, owner, "YYYY-MM")`` = (won cents,) in the month of
  the win in effect. A quarter's won amount is the sum of its three months.
"""

from __future__ import annotations

__all__ = ["OwnerState", "OwnerWin", "apply_owner_win", "apply_quota",
           "owner_contributions", "win_contributions"]

from dataclasses import dataclass, field, replace
from typing import Any

from stream_app.kpi.calendar import UTC_CALENDAR, Calendar
from stream_app.kpi.deals import Contributions
from stream_app.kpi.kinds import OWNER_QUOTA, OWNER_WON
from stream_app.kpi.lifecycle import WON, Lifecycle, OwnerChange, merged_marks, owner_at
from stream_app.kpi.money import Pricing


@dataclass(frozen=True, slots=True)
class OwnerState:
    """Quotas as sorted (period, time_ms, event_id, team, amount, currency), one per period."""

    owner_id: str
    quotas: tuple[tuple[str, int, str, str, str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the state table."""
        return {"id": self.owner_id, "q": [list(q) for q in self.quotas]}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> OwnerState:
        """Inverse of :meth:`to_json`."""
        return cls(owner_id=raw["id"],
                   quotas=tuple(tuple(q) for q in raw["q"]))


@dataclass(frozen=True, slots=True)
class OwnerWin:
    """A deal with a win, as one owner's partition sees it: that owner, the union of the
    marks the deal's records carried (closes as (time_ms, event_id, "won" | "lost", won
    cents)), and the deal's creation and owner changes (who owned it at the close)."""

    deal_id: str
    owner_id: str | None = None
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    creation: tuple[int, str, str] | None = None
    owner_changes: tuple[OwnerChange, ...] = ()

    @property
    def win(self) -> tuple[int, str, int] | None:
        """(won_at_ms, owner_id, cents) of the win in effect, if this owner owned the deal
        at its close; None when there is none (no win yet, a loss, a reopened or deleted
        deal, another owner's close)."""
        close = self.lifecycle.close
        if close is None or close[2] != WON or self.lifecycle.deleted or self.owner_id is None:
            return None
        if self.creation is not None and \
                owner_at(self.creation, self.owner_changes, int(close[0])) != self.owner_id:
            return None
        return int(close[0]), self.owner_id, int(close[3])

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the state table."""
        out = {"id": self.deal_id, "o": self.owner_id, **self.lifecycle.to_json()}
        if self.creation is not None:
            out["cr"] = list(self.creation)
        if self.owner_changes:
            out["ow"] = [list(change) for change in self.owner_changes]
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> OwnerWin:
        """Inverse of :meth:`to_json`; also reads records that kept one win (``"w"``)."""
        if "w" in raw:
            if not raw["w"]:
                return cls(deal_id=raw["id"])
            won_at, owner, cents = raw["w"]
            return cls(raw["id"], owner, Lifecycle(closes=((won_at, "", WON, cents),)))
        creation = raw.get("cr")
        return cls(raw["id"], raw.get("o"), Lifecycle.from_json(raw),
                   None if creation is None else (int(creation[0]), str(creation[1]),
                                                  str(creation[2])),
                   tuple((int(at), str(event), str(owner))
                         for at, event, owner in raw.get("ow") or ()))


def apply_quota(state: OwnerState, period: str, time_ms: int, event_id: str, team: str,
                amount: str, currency: str) -> OwnerState:
    """Record a quota; the latest (time, id) of a period wins."""
    current = next((q for q in state.quotas if q[0] == period), None)
    if current is not None and current[1:3] >= (time_ms, event_id):
        return state
    others = [q for q in state.quotas if q[0] != period]
    quota = (period, time_ms, event_id, team, amount, currency)
    return replace(state, quotas=tuple(sorted((*others, quota))))


def apply_owner_win(state: OwnerWin, owner_id: str, lifecycle: Lifecycle,
                    creation: tuple[int, str, str] | None = None,
                    owner_changes: tuple[OwnerChange, ...] = ()) -> OwnerWin:
    """Add a record's marks to the deal's (a union: any order, any repeat)."""
    merged = state.lifecycle.with_marks(lifecycle.closes, lifecycle.reopenings,
                                        lifecycle.deletions)
    changes = merged_marks(state.owner_changes, owner_changes)
    kept = creation if state.creation is None or (
        creation is not None and creation[:2] < state.creation[:2]) else state.creation
    if merged is state.lifecycle and state.owner_id == owner_id and \
            changes is state.owner_changes and kept == state.creation:
        return state
    return replace(state, owner_id=owner_id, lifecycle=merged, creation=kept,
                   owner_changes=changes)


def owner_contributions(state: OwnerState, pricing: Pricing) -> Contributions:
    """``(OWNER_QUOTA, owner, "period|team")`` = (quota cents, 1) per period with a quota."""
    return {(OWNER_QUOTA, state.owner_id, f"{period}|{team}"):
            (pricing.to_cents(amount, currency), 1)
            for period, _, _, team, amount, currency in state.quotas}


def win_contributions(state: OwnerWin, calendar: Calendar = UTC_CALENDAR) -> Contributions:
    """``(OWNER_WON, owner, month)`` = (won cents,) of the win in effect."""
    win = state.win
    if win is None:
        return {}
    won_at, owner, cents = win
    return {(OWNER_WON, owner, calendar.month_name(won_at)): (cents,)}
