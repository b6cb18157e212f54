"""Pydantic v2 models of every CloudEvent Pipeline Pulse reads: the source of truth.

One CloudEvents 1.0 event per Kafka message, structured JSON mode. The union
:data:`CrmEvent` is discriminated on ``type``.
"""

from __future__ import annotations

__all__ = [
    "ACTIVITY_KINDS",
    "ENGAGEMENT_ACTIONS",
    "EVENT_TYPES",
    "FORECAST_CATEGORIES",
    "PERIOD_PATTERN",
    "ActivityLogged",
    "ActivityLoggedData",
    "CrmEvent",
    "CustomerChurned",
    "CustomerChurnedData",
    "CustomerEvent",
    "DealCreated",
    "DealCreatedData",
    "DealDeleted",
    "DealDeletedData",
    "DealEvent",
    "DealLost",
    "DealLostData",
    "DealReopened",
    "DealReopenedData",
    "DealRestored",
    "DealStageChanged",
    "DealStageChangedData",
    "DealUpdated",
    "DealUpdatedData",
    "DealWon",
    "DealWonData",
    "LeadConverted",
    "LeadConvertedData",
    "LeadCreated",
    "LeadCreatedData",
    "LeadDisqualified",
    "LeadDisqualifiedData",
    "LeadEngaged",
    "LeadEngagedData",
    "LeadEvent",
    "QuotaEvent",
    "QuotaSet",
    "QuotaSetData",
    "RepEvent",
    "RepUpdated",
    "RepUpdatedData",
    "crm_event_adapter",
]

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=_PRINTABLE)]
Label = Annotated[str, Field(min_length=1, max_length=128, pattern=_PRINTABLE)]
Money = Annotated[Decimal, Field(ge=0, max_digits=20, decimal_places=6)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class DealCreatedData(_Data):
    """Payload of ``deal.created``."""

    deal_id: Id
    account_id: Id | None
    owner_id: Id
    team: Label
    amount: Money
    currency: Currency
    stage: Label
    source: Label | None = None
    product: Label | None = None
    lead_id: Id | None = None
    expected_close: dt.date | None = None


class DealStageChangedData(_Data):
    """Payload of ``deal.stage_changed``; ``amount`` is a new amount, when given.
    ``from_stage`` is informative (the stage the deal leaves is read off its own events)
    and may be null when the CRM does not say (Salesforce change events)."""

    deal_id: Id
    from_stage: Label | None = None
    to_stage: Label
    amount: Money | None = None


#: A CRM's forecast categories, normalised (Salesforce's "Best Case" is best_case).
FORECAST_CATEGORIES = ("pipeline", "best_case", "commit", "omitted")


class DealUpdatedData(_Data):
    """Payload of ``deal.updated``: what changed on a deal without a stage move; each
    field null when it did not change, at least one given. A new ``amount`` counts as a
    change of the deal's amount at the event's time (as an amount on
    ``deal.stage_changed``); a new ``owner_id`` makes that rep the deal's owner from the
    event's time on (the rep scorecard and attainment follow it; the deal's team stays the
    one of its creation); ``expected_close`` and ``forecast_category`` are carried for the
    forecast (no KPI reads them yet)."""

    deal_id: Id
    amount: Money | None = None
    owner_id: Id | None = None
    expected_close: dt.date | None = None
    forecast_category: Literal["pipeline", "best_case", "commit", "omitted"] | None = None

    @model_validator(mode="after")
    def _something_changed(self) -> DealUpdatedData:
        if self.amount is None and self.owner_id is None and self.expected_close is None \
                and self.forecast_category is None:
            raise ValueError("give at least one of amount, owner_id, expected_close, "
                             "forecast_category")
        return self


class DealWonData(_Data):
    """Payload of ``deal.won``."""

    deal_id: Id
    amount: Money
    competitor: Label | None = None
    competitor_price: Money | None = None


class DealLostData(_Data):
    """Payload of ``deal.lost``."""

    deal_id: Id
    reason: Annotated[str, Field(max_length=512)] | None = None
    competitor: Label | None = None
    competitor_price: Money | None = None


class DealReopenedData(_Data):
    """Payload of ``deal.reopened``: a won or lost deal is open again, in ``stage`` (null:
    in the stage it closed from, as when a CRM switches a won deal to lost and sends the
    reopening with the new close). The close it undoes leaves every KPI of its day, as if
    it had never happened."""

    deal_id: Id
    stage: Label | None = None


class DealDeletedData(_Data):
    """Payload of ``deal.deleted`` and ``deal.restored``."""

    deal_id: Id


class CustomerChurnedData(_Data):
    """Payload of ``customer.churned``."""

    account_id: Id
    reason: Annotated[str, Field(max_length=512)] | None = None
    competitor: Label | None = None


#: What a lead can do to engage, each worth points in the scoring rules.
ENGAGEMENT_ACTIONS = ("email_open", "email_click", "site_visit", "form_submit",
                      "content_download", "webinar", "demo_request")
EngagementAction = Literal["email_open", "email_click", "site_visit", "form_submit",
                           "content_download", "webinar", "demo_request"]


class LeadCreatedData(_Data):
    """Payload of ``lead.created``."""

    lead_id: Id
    source: Label
    owner_id: Id | None = None
    team: Label | None = None
    industry: Label | None = None
    company_size: Annotated[int, Field(ge=0)] | None = None
    job_title: Annotated[str, Field(max_length=256)] | None = None


class LeadEngagedData(_Data):
    """Payload of ``lead.engaged``."""

    lead_id: Id
    action: EngagementAction


class LeadConvertedData(_Data):
    """Payload of ``lead.converted``."""

    lead_id: Id
    deal_id: Id | None = None


class LeadDisqualifiedData(_Data):
    """Payload of ``lead.disqualified``."""

    lead_id: Id
    reason: Annotated[str, Field(max_length=512)] | None = None


#: What a rep logs in the CRM.
ACTIVITY_KINDS = ("call", "email", "meeting")


class ActivityLoggedData(_Data):
    """Payload of ``activity.logged``: one call, email or meeting by an owner.

    ``activity_id`` is the CRM's own id of the activity, when it has one: a repeat
    with another CloudEvent id then counts once. Without it the CloudEvent id is
    the activity's identity.
    """

    owner_id: Id
    team: Label
    kind: Literal["call", "email", "meeting"]
    deal_id: Id | None = None
    activity_id: Id | None = None


#: A calendar month ("2026-11") or quarter ("2026-Q4").
PERIOD_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2]|Q[1-4])$"


class QuotaSetData(_Data):
    """Payload of ``quota.set``: the latest event for an owner and period wins."""

    owner_id: Id
    team: Label
    period: Annotated[str, Field(pattern=PERIOD_PATTERN,
                                 description='A month "2026-11" or a quarter "2026-Q4".')]
    amount: Money
    currency: Currency


class RepUpdatedData(_Data):
    """Payload of ``rep.updated``: who a CRM owner id is. The latest event (time, then id)
    for an owner is the owner's profile."""

    owner_id: Id
    name: Label
    team: Label | None = None


class _CloudEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    specversion: Literal["1.0"]
    id: Annotated[str, Field(min_length=1, max_length=256)]
    source: Annotated[str, Field(min_length=1, max_length=512)]
    time: AwareDatetime
    subject: Annotated[str, Field(max_length=512)] | None = None
    datacontenttype: Literal["application/json"] | None = None


class DealCreated(_CloudEvent):
    """A deal entered the pipeline."""

    type: Literal["deal.created"]
    data: DealCreatedData


class DealStageChanged(_CloudEvent):
    """A deal moved from one open stage to another."""

    type: Literal["deal.stage_changed"]
    data: DealStageChangedData


class DealUpdated(_CloudEvent):
    """A deal's amount, expected close or forecast category changed (no stage move)."""

    type: Literal["deal.updated"]
    data: DealUpdatedData


class DealWon(_CloudEvent):
    """A deal closed as won."""

    type: Literal["deal.won"]
    data: DealWonData


class DealLost(_CloudEvent):
    """A deal closed as lost."""

    type: Literal["deal.lost"]
    data: DealLostData


class DealReopened(_CloudEvent):
    """A won or lost deal went back to an open stage."""

    type: Literal["deal.reopened"]
    data: DealReopenedData


class DealDeleted(_CloudEvent):
    """A deal was deleted in the CRM: it leaves every KPI, past days included."""

    type: Literal["deal.deleted"]
    data: DealDeletedData


class DealRestored(_CloudEvent):
    """A deleted deal was restored (undeleted): it counts again."""

    type: Literal["deal.restored"]
    data: DealDeletedData


class CustomerChurned(_CloudEvent):
    """A customer (an account with a won deal) stopped buying."""

    type: Literal["customer.churned"]
    data: CustomerChurnedData


class LeadCreated(_CloudEvent):
    """A lead entered the funnel."""

    type: Literal["lead.created"]
    data: LeadCreatedData


class LeadEngaged(_CloudEvent):
    """A lead did something that shows interest."""

    type: Literal["lead.engaged"]
    data: LeadEngagedData


class LeadConverted(_CloudEvent):
    """A lead became an opportunity (a deal)."""

    type: Literal["lead.converted"]
    data: LeadConvertedData


class LeadDisqualified(_CloudEvent):
    """A lead was ruled out."""

    type: Literal["lead.disqualified"]
    data: LeadDisqualifiedData


class QuotaSet(_CloudEvent):
    """An owner's sales quota for a month or a quarter was set or changed."""

    type: Literal["quota.set"]
    data: QuotaSetData


class RepUpdated(_CloudEvent):
    """A sales rep (a CRM owner id) got or changed a name or a team: the roster."""

    type: Literal["rep.updated"]
    data: RepUpdatedData


class ActivityLogged(_CloudEvent):
    """A rep logged a call, an email or a meeting."""

    type: Literal["activity.logged"]
    data: ActivityLoggedData


DealEvent = (DealCreated | DealStageChanged | DealUpdated | DealWon | DealLost | DealReopened
             | DealDeleted | DealRestored)
CustomerEvent = CustomerChurned
QuotaEvent = QuotaSet
RepEvent = RepUpdated
LeadEvent = LeadCreated | LeadEngaged | LeadConverted | LeadDisqualified
CrmEvent = Annotated[
    DealCreated | DealStageChanged | DealUpdated | DealWon | DealLost | DealReopened
    | DealDeleted | DealRestored | CustomerChurned | QuotaSet | RepUpdated
    | LeadCreated | LeadEngaged | LeadConverted | LeadDisqualified | ActivityLogged,
    Field(discriminator="type"),
]
EVENT_TYPES: dict[str, type[_CloudEvent]] = {
    "deal.created": DealCreated,
    "deal.stage_changed": DealStageChanged,
    "deal.won": DealWon,
    "deal.lost": DealLost,
    "deal.updated": DealUpdated,
    "deal.reopened": DealReopened,
    "deal.deleted": DealDeleted,
    "deal.restored": DealRestored,
    "customer.churned": CustomerChurned,
    "quota.set": QuotaSet,
    "rep.updated": RepUpdated,
    "lead.created": LeadCreated,
    "lead.engaged": LeadEngaged,
    "lead.converted": LeadConverted,
    "lead.disqualified": LeadDisqualified,
    "activity.logged": ActivityLogged,
}
crm_event_adapter: TypeAdapter[CrmEvent] = TypeAdapter(CrmEvent)
