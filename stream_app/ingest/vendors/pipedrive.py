"""Pipedrive webhooks v2 (https://pipedrive.readme.io/docs/guide-for-webhooks-v2) to
CloudEvents of the contract.

A v2 webhook is ``{"meta": {"action": "create" | "change" | "delete", "entity": "deal",
"entity_id", "attempt", "timestamp", ...}, "data": <the whole deal>, "previous": <the
changed fields' former values> | null}``. What becomes what:

- ``create``: ``deal.created`` at ``add_time`` (stage by ``stage_id``, amount ``value``,
  ``currency``, ``owner_id``, team from the mapping's owners or ``default_team``),
  then ``deal.won`` / ``deal.lost`` when the deal is created closed;
- ``change`` with ``stage_id`` in ``previous``: ``deal.stage_changed`` at
  ``stage_change_time`` (with the amount); with ``value`` (and no stage move),
  ``owner_id`` or ``expected_close_date``: ``deal.updated`` at ``update_time`` with what
  changed;
- ``status`` from open to won / lost: ``deal.won`` at ``won_time`` with ``value`` /
  ``deal.lost`` at ``lost_time`` with ``lost_reason``;
- ``status`` from won / lost back to open: ``deal.reopened`` at ``update_time`` in the
  deal's stage; from won to lost (or back) directly: ``deal.reopened`` (no stage) and
  the new close;
- ``delete``: ``deal.deleted`` at ``meta.timestamp`` (RFC 3339, or epoch seconds or
  milliseconds); ``status`` to ``deleted`` (webhooks v1 style): ``deal.deleted`` at
  ``update_time``; ``status`` from ``deleted`` back: ``deal.restored``.

Not modelled, so counted and logged, never guessed: currency changes. Event ids derive
from the deal id and Pipedrive's own times of each change, so a redelivered webhook (a
higher ``meta.attempt``) produces the same ids and the worker drops it as a repeat.
"""

from __future__ import annotations

__all__ = ["pipedrive_events"]

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

_OPEN, _WON, _LOST, _DELETED = "open", "won", "lost", "deleted"
_CLOSED = (_WON, _LOST)
#: Epoch numbers above this are milliseconds, below it seconds.
_MS_EPOCH_FLOOR = 10**11


def _meta_time(value: Any) -> str:
    """``meta.timestamp`` as RFC 3339: text as is, an epoch number in seconds or ms."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = int(value if value >= _MS_EPOCH_FLOOR else value * 1000)
    return iso_time(value, "meta.timestamp")


def pipedrive_events(payload: Any, mapping: VendorMapping) -> Translation:
    """The CloudEvents of one Pipedrive v2 webhook (see the module's docstring)."""
    body = json_object(payload, "body")
    meta = json_object(body.get("meta"), "meta")
    if meta.get("entity") != "deal":
        return Translation([], [("not_a_deal", f"entity {meta.get('entity')!r} is not "
                                 "modelled; subscribe the webhook to deals only")])
    action = meta.get("action")
    deal_id = str(meta.get("entity_id") or "")
    if action == "delete":
        if not deal_id:
            raise TranslationError(400, "missing_field", "meta.entity_id", "the deal has no id")
        at = _meta_time(meta.get("timestamp"))
        return Translation([deal_event(mapping, f"pipedrive-{deal_id}-deleted-{at}",
                                       "deleted", at, deal_id, {})], [])
    if action not in ("create", "change"):
        raise TranslationError(400, "invalid_field", "meta.action",
                               f"expected create, change or delete, got {action!r}")
    deal = json_object(body.get("data"), "data")
    deal_id = str(deal.get("id") or deal_id)
    if not deal_id:
        raise TranslationError(400, "missing_field", "data.id", "the deal has no id")
    builder = _Builder(mapping, deal_id, deal)
    if action == "create":
        builder.created()
        builder.closed(_OPEN)
    else:
        previous = body.get("previous") or {}
        builder.changed(json_object(previous, "previous"))
    return Translation(builder.events, builder.ignored)


class _Builder:
    def __init__(self, mapping: VendorMapping, deal_id: str, deal: dict[str, Any]):
        self.mapping, self.deal_id, self.deal = mapping, deal_id, deal
        self.events: list[dict[str, Any]] = []
        self.ignored: list[tuple[str, str]] = []

    def _event(self, kind: str, suffix: str, time: str, data: dict[str, Any]) -> None:
        self.events.append(deal_event(self.mapping, f"pipedrive-{self.deal_id}-{suffix}", kind,
                                      time, self.deal_id, data))

    def _stage(self) -> str:
        return self.mapping.stage(self.deal.get("stage_id"), "data.stage_id")

    def created(self) -> None:
        owner = str(self.deal.get("owner_id") or "")
        if not owner:
            raise TranslationError(400, "missing_field", "data.owner_id", "the deal has no owner")
        self._event("created", "created", iso_time(self.deal.get("add_time"), "data.add_time"), {
            "account_id": None if self.deal.get("org_id") is None else str(self.deal["org_id"]),
            "owner_id": owner, "team": self.mapping.team(owner, "data.owner_id"),
            "amount": amount_text(self.deal.get("value"), "data.value"),
            "currency": self.deal.get("currency") or self.mapping.default_currency,
            "stage": self._stage(),
            "expected_close": self.deal.get("expected_close_date") or None})

    def changed(self, previous: dict[str, Any]) -> None:
        updated = iso_time(self.deal.get("update_time"), "data.update_time")
        if "stage_id" in previous and previous["stage_id"] != self.deal.get("stage_id"):
            at = iso_time(self.deal.get("stage_change_time") or updated, "data.stage_change_time")
            self._event("stage_changed", f"stage-{at}", at, {
                "from_stage": self.mapping.stage(previous["stage_id"], "previous.stage_id"),
                "to_stage": self._stage(),
                "amount": amount_text(self.deal.get("value"), "data.value")})
        update: dict[str, Any] = {}
        if "value" in previous and "stage_id" not in previous:
            update["amount"] = amount_text(self.deal.get("value"), "data.value")
        if "expected_close_date" in previous and self.deal.get("expected_close_date"):
            update["expected_close"] = self.deal["expected_close_date"]
        if "owner_id" in previous and self.deal.get("owner_id") is not None:
            update["owner_id"] = str(self.deal["owner_id"])
        if update:
            self._event("updated", f"update-{updated}", updated, update)
        if "currency" in previous:
            self.ignored.append(("currency_changed", f"deal {self.deal_id}: currency changed "
                                 f"from {previous['currency']!r}; not modelled (the deal keeps "
                                 "the currency of its creation)"))
        if "status" in previous:
            self.closed(str(previous["status"]))

    def _updated_at(self) -> str:
        return iso_time(self.deal.get("update_time"), "data.update_time")

    def closed(self, before: str) -> None:
        status = self.deal.get("status")
        if status == before:
            return
        if before == _DELETED:
            at = self._updated_at()
            self._event("restored", f"restored-{at}", at, {})
        if status == _DELETED:
            at = self._updated_at()
            self._event("deleted", f"deleted-{at}", at, {})
            return
        if status not in (_OPEN, *_CLOSED):
            self.ignored.append(("unknown_status",
                                 f"deal {self.deal_id}: status {status!r} is not modelled"))
            return
        if before in _CLOSED:
            at = self._updated_at()
            stage = self._stage() if status == _OPEN else None
            self._event("reopened", f"reopened-{at}", at, {"stage": stage})
        if status == _WON:
            at = iso_time(self.deal.get("won_time") or self.deal.get("update_time"),
                          "data.won_time")
            self._event("won", f"won-{at}", at, {
                "amount": amount_text(self.deal.get("value"), "data.value")})
        elif status == _LOST:
            at = iso_time(self.deal.get("lost_time") or self.deal.get("update_time"),
                          "data.lost_time")
            reason = self.deal.get("lost_reason")
            self._event("lost", f"lost-{at}", at, {"reason": None if reason is None
                                                   else str(reason)[:512]})
