"""Small builders of valid events for unit tests."""

from __future__ import annotations

from typing import Any

from stream_app.events.models import crm_event_adapter

_N = [0]


def ev(kind: str, time: str, ident: str | None = None, **data: Any) -> Any:
    """A validated event; ``time`` like '2026-01-05T10:00:00Z'."""
    _N[0] += 1
    defaults: dict[str, Any] = {}
    if kind == "deal.created":
        defaults = {"account_id": None, "owner_id": "o1", "team": "T", "amount": "100",
                    "currency": "USD", "stage": "Prospecting"}
    if kind == "deal.stage_changed":
        defaults = {"from_stage": "Prospecting"}
    return crm_event_adapter.validate_python({
        "specversion": "1.0", "id": ident or f"e{_N[0]:06d}", "source": "test", "type": kind,
        "time": time, "data": {**defaults, **data}})
