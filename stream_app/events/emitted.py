"""Models of the messages the worker writes to Kafka itself.

- ``lead.hot`` (a CloudEvent on the lead-scores topic): a lead's score crossed the hot
  threshold; downstream consumers (routing, alerting a rep) read it.
- Re-keyed wins (plain JSON on internal topics): a won deal re-keyed by its account
  and by its owner, so the tables keyed by account and by owner can fold it.

Their JSON Schemas are generated into ``schemas/emitted/`` with the CRM events'.
"""

from __future__ import annotations

__all__ = [
    "EMITTED_MODELS",
    "AccountWinRecord",
    "LeadHot",
    "LeadHotData",
    "OwnerWinRecord",
]

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from stream_app.events.models import Id, Label, _CloudEvent, _Data


class LeadHotData(_Data):
    """Payload of ``lead.hot``."""

    lead_id: Id
    source: Label
    owner_id: Id | None = None
    threshold: Annotated[float, Field(description="The hot threshold the score crossed.")]


class LeadHot(_CloudEvent):
    """A lead's score crossed the hot threshold (its id is ``<lead>:hot:<event id>``, the
    same on every replay, so consumers can drop repeats)."""

    type: Literal["lead.hot"]
    data: LeadHotData


class AccountWinRecord(BaseModel):
    """A won deal re-keyed by account (internal topic ``PULSE_TOPIC_ACCOUNT_WINS``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account_id: Id
    won_at_ms: Annotated[int, Field(description="Event time of the win, ms since the epoch.")]
    deal_id: Id


class OwnerWinRecord(BaseModel):
    """A won deal re-keyed by owner (internal topic ``PULSE_TOPIC_OWNER_WINS``), its
    amount already in reporting-currency cents."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    owner_id: Id
    won_at_ms: int
    deal_id: Id
    cents: int


#: Schema file name (without ``.schema.json``) -> model, for ``schemas/emitted/``.
EMITTED_MODELS: dict[str, type[BaseModel]] = {
    "lead.hot": LeadHot,
    "account-win": AccountWinRecord,
    "owner-win": OwnerWinRecord,
}
