"""Per-deal state that any order of a deal's events folds to the same value.

Each field keeps the winner of a commutative choice: the earliest ``deal.created``,
the latest stage change and amount change, the earliest terminal event (won or
lost), each ordered by (event time, event id). Duplicates and shuffles within a
deal therefore give the same state, and KPI contributions are a pure function of
the state (:func:`deal_contributions`).
"""

from __future__ import annotations

__all__ = [
    "BUCKET_FIELDS",
    "OPEN_FIELDS",
    "Contributions",
    "DealState",
    "add_vector",
    "apply_deal_event",
    "deal_contributions",
]

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from stream_app.events.models import DealCreated, DealEvent, DealLost, DealStageChanged, DealWon
from stream_app.kpi.money import Pricing
from stream_app.kpi.windows import day_of, ms_from_datetime

#: Fields of a (team, day) bucket vector.
BUCKET_FIELDS = ("created", "won", "lost", "won_cents", "cycle_ms")
#: Fields of a (team, stage) open-pipeline vector.
OPEN_FIELDS = ("count", "cents")

#: Contribution vectors keyed by ("b", team, day) or ("o", team, stage).
Contributions = dict[tuple[str, str, Any], tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class DealState:
    """What is known of one deal. Tuples start with (time_ms, event_id) for ordering."""

    deal_id: str
    created: tuple[int, str, dict[str, Any]] | None = None
    stage: tuple[int, str, str] | None = None
    amount: tuple[int, str, str] | None = None
    closed: tuple[int, str, str, str | None] | None = None

    @property
    def is_open(self) -> bool:
        """Created and not yet won or lost."""
        return self.created is not None and self.closed is None

    def current_stage(self) -> str | None:
        """Stage of the latest stage change, else the stage at creation."""
        if self.created is None:
            return None
        created_at, created_id, info = self.created
        if self.stage is not None and self.stage[:2] >= (created_at, created_id):
            return self.stage[2]
        return str(info["stage"])

    def current_amount(self) -> str | None:
        """Amount of the latest amount change, else the amount at creation (deal currency)."""
        if self.created is None:
            return None
        created_at, created_id, info = self.created
        if self.amount is not None and self.amount[:2] >= (created_at, created_id):
            return self.amount[2]
        return str(info["amount"])

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the state table."""
        return {
            "id": self.deal_id,
            "c": list(self.created) if self.created else None,
            "s": list(self.stage) if self.stage else None,
            "a": list(self.amount) if self.amount else None,
            "x": list(self.closed) if self.closed else None,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DealState:
        """Inverse of :meth:`to_json`."""
        return cls(
            deal_id=raw["id"],
            created=tuple(raw["c"]) if raw["c"] else None,  # type: ignore[arg-type]
            stage=tuple(raw["s"]) if raw["s"] else None,  # type: ignore[arg-type]
            amount=tuple(raw["a"]) if raw["a"] else None,  # type: ignore[arg-type]
            closed=tuple(raw["x"]) if raw["x"] else None,  # type: ignore[arg-type]
        )


def add_vector(target: dict[Any, list[int]], key: Any, vector: Sequence[int]) -> None:
    """Add ``vector`` element-wise to ``target[key]`` (a copy of it when absent)."""
    current = target.get(key)
    if current is None:
        target[key] = list(vector)
    else:
        for i, value in enumerate(vector):
            current[i] += value


def _earliest(current: tuple | None, candidate: tuple) -> tuple:
    return candidate if current is None or candidate[:2] < current[:2] else current


def _latest(current: tuple | None, candidate: tuple) -> tuple:
    return candidate if current is None or candidate[:2] > current[:2] else current


def apply_deal_event(state: DealState, event: DealEvent) -> DealState:
    """Fold one event into the state; commutative and idempotent per event."""
    at = ms_from_datetime(event.time)
    if isinstance(event, DealCreated):
        d = event.data
        info = {
            "account_id": d.account_id,
            "owner_id": d.owner_id,
            "team": d.team,
            "amount": str(d.amount),
            "currency": d.currency,
            "stage": d.stage,
            "source": d.source,
            "product": d.product,
        }
        return replace(state, created=_earliest(state.created, (at, event.id, info)))
    if isinstance(event, DealStageChanged):
        state = replace(state, stage=_latest(state.stage, (at, event.id, event.data.to_stage)))
        if event.data.amount is not None:
            state = replace(
                state, amount=_latest(state.amount, (at, event.id, str(event.data.amount)))
            )
        return state
    if isinstance(event, DealWon):
        return replace(
            state, closed=_earliest(state.closed, (at, event.id, "won", str(event.data.amount)))
        )
    if isinstance(event, DealLost):
        return replace(state, closed=_earliest(state.closed, (at, event.id, "lost", None)))
    raise TypeError(f"not a deal event: {type(event).__name__}")


def deal_contributions(state: DealState, pricing: Pricing) -> Contributions:
    """The deal's share of every aggregate; nothing until its ``deal.created`` is known.

    - ``("b", team, created_day)``: created += 1
    - ``("b", team, won_day)``: won += 1, won_cents += won amount, cycle_ms += won - created
    - ``("b", team, lost_day)``: lost += 1
    - ``("o", team, stage)`` while open: count += 1, cents += current amount
    """
    if state.created is None:
        return {}
    created_at, _, info = state.created
    team = str(info["team"])
    currency = str(info["currency"])
    out: dict[tuple[str, str, Any], list[int]] = {}
    add_vector(out, ("b", team, day_of(created_at)), (1, 0, 0, 0, 0))
    if state.closed is None:
        stage = state.current_stage()
        amount = state.current_amount()
        assert stage is not None and amount is not None
        add_vector(out, ("o", team, stage), (1, pricing.to_cents(amount, currency)))
    else:
        closed_at, _, kind, won_amount = state.closed
        if kind == "won":
            assert won_amount is not None
            cents = pricing.to_cents(won_amount, currency)
            add_vector(out, ("b", team, day_of(closed_at)),
                       (0, 1, 0, cents, closed_at - created_at))
        else:
            add_vector(out, ("b", team, day_of(closed_at)), (0, 0, 1, 0, 0))
    return {key: tuple(vector) for key, vector in out.items()}
