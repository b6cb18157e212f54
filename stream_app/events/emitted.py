"""Models of the messages the worker writes to Kafka itself.

- ``lead.hot`` (a CloudEvent on the lead-scores topic): a lead's score crossed the hot
  threshold; downstream consumers (routing, alerting a rep) read it.
- Re-keyed wins (plain JSON on internal topics): a won deal re-keyed by its account
  and by its owner, so the tables keyed by account and by owner can fold it; with its
  reopenings and deletions, so a withdrawn win leaves them too.

Their JSON Schemas are generated into ``schemas/emitted/`` with the CRM events'.
"""

from __future__ import annotations

__all__ = [
    "EMITTED_MODELS",
    "AccountWinRecord",
    "LeadHot",
    "LeadHotData",
    "OwnerWinRecord",
    "WinMarks",
]

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class WinMarks(BaseModel):
    """A deal's closes, reopenings and deletions as the receivers of its win fold them
    (:mod:`stream_app.kpi.lifecycle`): they keep the union of every record's marks, so
    records read in any order, or again, leave the same state."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    closes: Annotated[list[tuple[int, str, Literal["won", "lost"], int]], Field(
        description="(event time ms, event id, won or lost, won amount in reporting-currency "
                    "cents, 0 for a loss)")] = []
    reopenings: Annotated[list[tuple[int, str]], Field(
        description="(event time ms, event id) of deal.reopened")] = []
    deletions: Annotated[list[tuple[int, str, bool]], Field(
        description="(event time ms, event id, true for deal.deleted, false for "
                    "deal.restored)")] = []

    @property
    def latest_ms(self) -> int:
        """The latest event time among the marks (0 without any)."""
        return max((mark[0] for marks in (self.closes, self.reopenings, self.deletions)
                    for mark in marks), default=0)


class _WinRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    deal_id: Id
    marks: WinMarks | None = None
    won_at_ms: Annotated[int | None, Field(
        description="Records written before marks existed: the event time of the win, ms "
                    "since the epoch.")] = None

    @model_validator(mode="after")
    def _marks_or_win(self) -> _WinRecord:
        if self.marks is None and self.won_at_ms is None:
            raise ValueError("give marks (or, in records written before them, won_at_ms)")
        return self

    @property
    def time_ms(self) -> int:
        """The record's event time: its latest mark, or its win."""
        return self.marks.latest_ms if self.marks is not None else int(self.won_at_ms or 0)


class AccountWinRecord(_WinRecord):
    """A deal with a win (or a withdrawn one) re-keyed by account (internal topic
    ``PULSE_TOPIC_ACCOUNT_WINS``)."""

    account_id: Id


class OwnerWinRecord(_WinRecord):
    """A deal with a win (or a withdrawn one) re-keyed by owner (internal topic
    ``PULSE_TOPIC_OWNER_WINS``), amounts already in reporting-currency cents. A deal that
    changed owner is sent to each of its owners: the one who owned it at the close
    counts the win."""

    owner_id: Id
    cents: Annotated[int | None, Field(
        description="Records written before marks existed: the won amount in cents.")] = None
    creation: Annotated[tuple[int, str, Id] | None, Field(
        description="(event time ms, event id, owner) of the deal.created: with "
                    "owner_changes, who owned the deal when it closed")] = None
    owner_changes: Annotated[list[tuple[int, str, Id]], Field(
        description="(event time ms, event id, new owner) of each deal.updated naming an "
                    "owner")] = []

    @model_validator(mode="after")
    def _cents_with_win(self) -> OwnerWinRecord:
        if self.marks is None and self.cents is None:
            raise ValueError("a record without marks gives won_at_ms and cents")
        return self


#: Schema file name (without ``.schema.json``) -> model, for ``schemas/emitted/``.
EMITTED_MODELS: dict[str, type[BaseModel]] = {
    "lead.hot": LeadHot,
    "account-win": AccountWinRecord,
    "owner-win": OwnerWinRecord,
}
