"""Salesforce Change Data Capture ``OpportunityChangeEvent``s to CloudEvents of the
contract (https://developer.salesforce.com/docs/atlas.en-us.change_data_capture.meta/change_data_capture/cdc_event_fields_header.htm).

A change event is the changed fields of an Opportunity plus a ``ChangeEventHeader``
(``changeType`` CREATE / UPDATE / DELETE / UNDELETE or GAP_*, ``recordIds``,
``changedFields``, ``commitTimestamp`` in epoch ms, ``transactionKey``,
``sequenceNumber``), in the JSON that Pub/Sub API clients and CDC Kafka connectors
deliver; the route takes one event or a JSON array of them.

An UPDATE carries only the fields that changed, so the channel must be enriched with
``Amount`` (Salesforce's "enriched fields" of a channel member): a won deal's amount
then comes with the event. Without it a win is refused (422) rather than guessed.

- CREATE: ``deal.created`` at ``CreatedDate`` (``StageName`` through the mapping's
  stages, ``Amount``, ``CurrencyIsoCode`` or the default, ``OwnerId``, ``AccountId``,
  ``CloseDate``); a deal created in a won / lost stage enters the first configured
  stage and closes at once (as the CSV importer does);
- UPDATE of ``StageName``: to a won stage ``deal.won`` with ``Amount``, to a lost stage
  ``deal.lost``, else ``deal.stage_changed`` (``from_stage`` unknown: the event does not
  say); of ``Amount`` (without a stage move), ``OwnerId`` or ``CloseDate``:
  ``deal.updated``;
- a closed opportunity reopened (``IsClosed`` among the changed fields, now false):
  ``deal.reopened`` in its new stage; switched between won and lost (``IsWon`` changed,
  ``IsClosed`` not): ``deal.reopened`` with no stage, then the new close, at one time;
- DELETE: ``deal.deleted``; UNDELETE: ``deal.restored`` (at ``commitTimestamp``);
- GAP_* events (Salesforce could not say what changed): counted and logged, never
  guessed; resynchronise from an export.

Event ids are ``salesforce-<record id>-<transactionKey>-<sequenceNumber>-<kind>``, so a
redelivered change event is a repeat.
"""

from __future__ import annotations

__all__ = ["salesforce_events"]

from typing import Any

from stream_app.ingest.vendors.mapping import (
    Translation,
    TranslationError,
    VendorMapping,
    amount_text,
    deal_event,
    iso_time,
    json_object,
)

HEADER = "ChangeEventHeader"


def salesforce_events(payload: Any, mapping: VendorMapping) -> Translation:
    """The CloudEvents of one change event or a JSON array of them."""
    changes = payload if isinstance(payload, list) else [payload]
    events: list[dict[str, Any]] = []
    ignored: list[tuple[str, str]] = []
    for index, change in enumerate(changes):
        where = f"[{index}]" if isinstance(payload, list) else ""
        translation = _one(json_object(change, where or "body"), mapping, where)
        events.extend(translation.events)
        ignored.extend(translation.ignored)
    return Translation(events, ignored)


def _one(change: dict[str, Any], mapping: VendorMapping, where: str) -> Translation:
    header = json_object(change.get(HEADER), f"{where}{HEADER}".lstrip("."))
    entity = header.get("entityName")
    kind = header.get("changeType")
    if entity != "Opportunity":
        return Translation([], [("not_an_opportunity", f"entity {entity!r} is not modelled; "
                                 "subscribe to OpportunityChangeEvent only")])
    if isinstance(kind, str) and kind.startswith("GAP_"):
        return Translation([], [("gap_event", f"{kind} for {header.get('recordIds')}: "
                                 "Salesforce could not send the change; resynchronise these "
                                 "records from an export")])
    if kind not in ("CREATE", "UPDATE", "DELETE", "UNDELETE"):
        raise TranslationError(400, "invalid_field", f"{where}{HEADER}.changeType",
                               f"expected CREATE, UPDATE, DELETE, UNDELETE or GAP_*, got "
                               f"{kind!r}")
    records = header.get("recordIds")
    if not isinstance(records, list) or not records:
        raise TranslationError(400, "missing_field", f"{where}{HEADER}.recordIds",
                               "expected the changed records' ids")
    commit = header.get("commitTimestamp")
    if not isinstance(commit, int):
        raise TranslationError(400, "missing_field", f"{where}{HEADER}.commitTimestamp",
                               "expected epoch milliseconds")
    at = iso_time(commit, f"{where}{HEADER}.commitTimestamp")
    identity = f"{header.get('transactionKey')}-{header.get('sequenceNumber')}"
    out = Translation([], [])
    for record in records:
        builder = _Builder(mapping, str(record), change, identity, at, where)
        if kind == "CREATE":
            builder.created()
        elif kind in ("DELETE", "UNDELETE"):
            builder.deleted(kind == "DELETE")
        else:
            builder.updated([str(f) for f in header.get("changedFields") or ()])
        out.events.extend(builder.events)
        out.ignored.extend(builder.ignored)
    return out


class _Builder:
    def __init__(self, mapping: VendorMapping, deal_id: str, change: dict[str, Any],
                 identity: str, at: str, where: str):
        self.mapping, self.deal_id, self.change = mapping, deal_id, change
        self.identity, self.at, self.where = identity, at, where
        self.events: list[dict[str, Any]] = []
        self.ignored: list[tuple[str, str]] = []

    def _field(self, name: str) -> str:
        return f"{self.where}{name}"

    def _event(self, kind: str, time: str, data: dict[str, Any]) -> None:
        event_id = f"salesforce-{self.deal_id}-{self.identity}-{kind}"
        self.events.append(deal_event(self.mapping, event_id, kind, time, self.deal_id, data))

    def _required(self, name: str, why: str) -> Any:
        value = self.change.get(name)
        if value is None:
            raise TranslationError(422, "missing_field", self._field(name),
                                   f"needed {why}; enrich the channel with {name}")
        return value

    def _closing(self, stage_name: str, time: str) -> bool:
        """deal.won / deal.lost for a won / lost stage; whether it was one."""
        if stage_name in self.mapping.won_stages:
            amount = self._required("Amount", "for the won amount")
            self._event("won", time, {"amount": amount_text(amount, self._field("Amount"))})
            return True
        if stage_name in self.mapping.lost_stages:
            reason = self.change.get("Loss_Reason__c") or self.change.get("Description")
            self._event("lost", time, {"reason": None if reason is None else str(reason)[:512]})
            return True
        return False

    def created(self) -> None:
        owner = self._required("OwnerId", "for the deal's owner")
        stage_name = str(self._required("StageName", "for the deal's stage"))
        closed = self.mapping.closes(stage_name)
        stage = (self.mapping.first_stage if closed
                 else self.mapping.stage(stage_name, self._field("StageName")))
        created_at = iso_time(self.change.get("CreatedDate") or self.at,
                              self._field("CreatedDate"))
        account = self.change.get("AccountId")
        self._event("created", created_at, {
            "account_id": None if account is None else str(account),
            "owner_id": str(owner), "team": self.mapping.team(str(owner),
                                                              self._field("OwnerId")),
            "amount": amount_text(self.change.get("Amount"), self._field("Amount")),
            "currency": self.change.get("CurrencyIsoCode") or self.mapping.default_currency,
            "stage": stage, "expected_close": self.change.get("CloseDate") or None})
        if closed:
            self._closing(stage_name, self.at)

    def deleted(self, deleted: bool) -> None:
        self._event("deleted" if deleted else "restored", self.at, {})

    def updated(self, changed: list[str]) -> None:
        if "StageName" in changed:
            stage_name = str(self._required("StageName", "for the new stage"))
            closes = self.mapping.closes(stage_name)
            if closes and "IsWon" in changed and "IsClosed" not in changed:
                self._event("reopened", self.at, {"stage": None})
            if self._closing(stage_name, self.at):
                return
            if "IsClosed" in changed and self.change.get("IsClosed") is False:
                self._event("reopened", self.at, {
                    "stage": self.mapping.stage(stage_name, self._field("StageName"))})
                return
            data: dict[str, Any] = {
                "from_stage": None,
                "to_stage": self.mapping.stage(stage_name, self._field("StageName"))}
            if "Amount" in changed:
                data["amount"] = amount_text(self._required("Amount", "for the new amount"),
                                             self._field("Amount"))
            self._event("stage_changed", self.at, data)
        update: dict[str, Any] = {}
        if "Amount" in changed and "StageName" not in changed:
            update["amount"] = amount_text(self._required("Amount", "for the new amount"),
                                           self._field("Amount"))
        if "CloseDate" in changed and self.change.get("CloseDate"):
            update["expected_close"] = self.change["CloseDate"]
        if "OwnerId" in changed:
            update["owner_id"] = str(self._required("OwnerId", "for the new owner"))
        if update:
            self._event("updated", self.at, update)
