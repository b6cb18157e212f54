"""HubSpot deal webhooks to CloudEvents of the contract
(https://developers.hubspot.com/docs/api/webhooks, signatures:
https://developers.hubspot.com/docs/api/webhooks/validating-requests).

HubSpot POSTs a JSON array of events (``subscriptionType`` ``deal.creation``,
``deal.propertyChange``, ``deal.deletion``, ...; ``objectId``, ``eventId``,
``occurredAt`` in epoch ms, ``attemptNumber``; a property change names one
``propertyName`` and its new ``propertyValue``), signed with ``X-HubSpot-Signature-v3``:
base64 of HMAC-SHA256 with the app's client secret over method + URI + body +
``X-HubSpot-Request-Timestamp``; a timestamp older than 5 minutes is refused.

An event names one property, so what it does not say is read from HubSpot's CRM API
(``GET /crm/v3/objects/deals/{id}`` with the history of ``dealstage`` and ``amount``),
as of the event's time, never invented; the same webhook read again later gives the
same events:

- ``deal.creation``: ``deal.created`` at ``createdate`` with the stage and amount the
  deal had then (``dealstage`` through the mapping's stages), ``deal_currency_code`` or
  the default, ``hubspot_owner_id``, ``closedate``; created in a won / lost stage: the
  stage listed first, then closed at once;
- ``deal.propertyChange`` of ``dealstage``: to a won stage ``deal.won`` with the amount
  the deal had at ``occurredAt``, to a lost stage ``deal.lost``, else
  ``deal.stage_changed`` (``from_stage`` null); from a won or lost stage (the stage the
  history shows just before ``occurredAt``) to an open one: ``deal.reopened`` in it;
  from won to lost or back: ``deal.reopened`` with no stage, then the new close; of
  ``amount``, ``hubspot_owner_id`` or ``closedate``: ``deal.updated`` at ``occurredAt``;
- ``deal.deletion``: ``deal.deleted``; ``deal.restore``: ``deal.restored``;
- merges: counted and logged, not modelled yet.

Event ids are ``hubspot-<deal>-<eventId>``: HubSpot keeps an event's id across retries.
"""

from __future__ import annotations

__all__ = ["DEAL_PROPERTIES", "DealReader", "HubSpotApi", "hubspot_events",
           "signature_v3", "verify_signature"]

import base64
import hashlib
import hmac
from typing import Any, Protocol

import httpx

from stream_app.ingest.vendors.mapping import (
    Translation,
    TranslationError,
    VendorMapping,
    amount_text,
    deal_event,
    iso_time,
    utc_datetime,
)

#: The deal properties the gateway reads from HubSpot's API.
DEAL_PROPERTIES = ("dealstage", "amount", "deal_currency_code", "hubspot_owner_id",
                   "createdate", "closedate", "pipeline")
#: Properties read with their history (what they were when).
HISTORY_PROPERTIES = ("dealstage", "amount")
#: Oldest request timestamp accepted (HubSpot's own rule), in milliseconds.
MAX_AGE_MS = 5 * 60 * 1000


class ReaderUnavailable(Exception):
    """HubSpot's API did not answer: the webhook should be retried (503)."""


class DealReader(Protocol):
    """Where the gateway reads a deal."""

    async def deal(self, deal_id: str) -> dict[str, Any] | None:
        """HubSpot's answer for the deal (``properties`` and ``propertiesWithHistory``);
        None when HubSpot no longer has it."""


def _as_of(deal: dict[str, Any], name: str, moment: str, before: bool = False) -> Any:
    """The value ``name`` had at ``moment`` (RFC 3339; ``before``: just before it), from
    the deal's history; the current value when HubSpot gave no history (None for
    ``before``)."""
    history = (deal.get("propertiesWithHistory") or {}).get(name)
    if not isinstance(history, list) or not history:
        return None if before else (deal.get("properties") or {}).get(name)
    dated = sorted(((utc_datetime(entry.get("timestamp"), f"history.{name}.timestamp"),
                     entry.get("value")) for entry in history if isinstance(entry, dict)),
                   key=lambda item: item[0])
    until = utc_datetime(moment, "moment")
    value = None
    for at, candidate in dated:
        if at < until or (at == until and not before):
            value = candidate
    return value


class HubSpotApi:
    """HubSpot's CRM API with a private app's token, at a configurable base URL."""

    def __init__(self, base_url: str, token: str, timeout: float = 5.0):
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout,
                                         headers={"Authorization": f"Bearer {token}"})

    async def deal(self, deal_id: str) -> dict[str, Any] | None:
        """``GET /crm/v3/objects/deals/{id}?properties=...&propertiesWithHistory=...``."""
        params = {"properties": ",".join(DEAL_PROPERTIES),
                  "propertiesWithHistory": ",".join(HISTORY_PROPERTIES)}
        try:
            answer = await self._client.get(f"/crm/v3/objects/deals/{deal_id}", params=params)
        except httpx.HTTPError as exc:
            raise ReaderUnavailable(f"HubSpot API unreachable: {exc}") from None
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise ReaderUnavailable(f"HubSpot API answered {answer.status_code} for deal "
                                    f"{deal_id}")
        body = answer.json()
        return body if isinstance(body, dict) else {}

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def signature_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """HubSpot's v3 signature of a request."""
    message = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def verify_signature(secret: str, method: str, uri: str, body: bytes,
                     headers: dict[str, str], now_ms: int) -> str | None:
    """None when the request is HubSpot's, else why not."""
    signature = headers.get("x-hubspot-signature-v3")
    timestamp = headers.get("x-hubspot-request-timestamp")
    if not signature or not timestamp:
        return "X-HubSpot-Signature-v3 and X-HubSpot-Request-Timestamp are required"
    if not timestamp.isdigit() or now_ms - int(timestamp) > MAX_AGE_MS:
        return "X-HubSpot-Request-Timestamp is older than 5 minutes (or not a time)"
    expected = signature_v3(secret, method, uri, body, timestamp)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return "X-HubSpot-Signature-v3 does not match (client secret, or the public URL)"
    return None


async def hubspot_events(payload: Any, mapping: VendorMapping,
                         reader: DealReader) -> Translation:
    """The CloudEvents of one webhook request (a JSON array of HubSpot events)."""
    if not isinstance(payload, list):
        raise TranslationError(400, "invalid_field", "body",
                               f"expected a JSON array of events, got {type(payload).__name__}")
    out = Translation([], [])
    for index, item in enumerate(payload):
        if not isinstance(item, dict):
            raise TranslationError(400, "invalid_field", f"[{index}]", "expected an object")
        await _one(item, mapping, reader, f"[{index}].", out)
    return out


async def _one(event: dict[str, Any], mapping: VendorMapping, reader: DealReader,
               where: str, out: Translation) -> None:
    kind = event.get("subscriptionType")
    deal_id = str(event.get("objectId") or "")
    if not deal_id or event.get("eventId") is None:
        raise TranslationError(400, "missing_field", f"{where}objectId",
                               "expected objectId and eventId")
    at = iso_time(event.get("occurredAt"), f"{where}occurredAt")
    builder = _Builder(mapping, deal_id, f"hubspot-{deal_id}-{event['eventId']}", at, where)
    if kind == "deal.creation":
        deal = await reader.deal(deal_id)
        if deal is None:
            out.ignored.append(("deal_not_found", f"deal {deal_id} created, then gone before "
                                "it could be read"))
            return
        builder.created(deal)
    elif kind == "deal.propertyChange":
        name, value = event.get("propertyName"), event.get("propertyValue")
        if name == "dealstage":
            await builder.stage_changed(str(value), reader)
        elif name == "amount":
            builder.updated({"amount": amount_text(value or None, f"{where}propertyValue")})
        elif name == "hubspot_owner_id" and value:
            builder.updated({"owner_id": str(value)})
        elif name == "closedate" and value:
            epoch_ms = int(value) if str(value).isdigit() else value  # HubSpot sends ms text
            builder.updated({"expected_close": iso_time(epoch_ms, f"{where}propertyValue")[:10]})
        else:
            out.ignored.append((f"{name}_changed", f"deal {deal_id}: {name} changed; not "
                                "modelled yet"))
    elif kind in ("deal.deletion", "deal.restore"):
        builder.deleted(kind == "deal.deletion")
    elif kind == "deal.merge":
        out.ignored.append(("deal_merged", f"{kind} of deal {deal_id}: not modelled yet"))
    else:
        out.ignored.append(("not_a_deal_change", f"{kind!r} is not modelled; subscribe to "
                            "deal.creation and deal.propertyChange (dealstage, amount)"))
    out.events.extend(builder.events)
    out.ignored.extend(builder.ignored)


class _Builder:
    def __init__(self, mapping: VendorMapping, deal_id: str, event_id: str, at: str,
                 where: str):
        self.mapping, self.deal_id, self.event_id = mapping, deal_id, event_id
        self.at, self.where = at, where
        self.events: list[dict[str, Any]] = []
        self.ignored: list[tuple[str, str]] = []

    def _event(self, kind: str, time: str, data: dict[str, Any], suffix: str = "") -> None:
        self.events.append(deal_event(self.mapping, f"{self.event_id}{suffix}", kind, time,
                                      self.deal_id, data))

    def _closing(self, stage: str, amount: Any, time: str, suffix: str = "") -> bool:
        if stage in self.mapping.won_stages:
            self._event("won", time, {"amount": amount_text(amount, "deal.amount")}, suffix)
            return True
        if stage in self.mapping.lost_stages:
            self._event("lost", time, {"reason": None}, suffix)
            return True
        return False

    def created(self, deal: dict[str, Any]) -> None:
        properties = deal.get("properties") or {}
        owner = str(properties.get("hubspot_owner_id") or "")
        if not owner:
            raise TranslationError(422, "missing_field", "deal.hubspot_owner_id",
                                   f"deal {self.deal_id} has no owner in HubSpot")
        created_at = iso_time(properties.get("createdate") or self.at, "deal.createdate")
        stage = str(_as_of(deal, "dealstage", created_at) or "")
        amount = _as_of(deal, "amount", created_at) or None
        closed = self.mapping.closes(stage)
        close_date = properties.get("closedate")
        self._event("created", created_at, {
            "account_id": None, "owner_id": owner,
            "team": self.mapping.team(owner, "deal.hubspot_owner_id"),
            "amount": amount_text(amount, "deal.amount"),
            "currency": properties.get("deal_currency_code") or self.mapping.default_currency,
            "stage": self.mapping.first_stage if closed
            else self.mapping.stage(stage, "deal.dealstage"),
            "expected_close": close_date[:10] if isinstance(close_date, str) and close_date
            else None}, "-created")
        if closed:
            self._closing(stage, amount, created_at, "-closed")

    async def stage_changed(self, stage: str, reader: DealReader) -> None:
        deal = await reader.deal(self.deal_id)
        if deal is None and stage in self.mapping.won_stages:
            self.ignored.append(("deal_not_found", f"deal {self.deal_id} won, then gone "
                                 "before its amount could be read"))
            return
        before = None if deal is None else _as_of(deal, "dealstage", self.at, before=True)
        was_closed = before is not None and self.mapping.closes(str(before))
        if self.mapping.closes(stage):
            if was_closed and (str(before) in self.mapping.won_stages) != (
                    stage in self.mapping.won_stages):
                self._event("reopened", self.at, {"stage": None}, "-reopened")
            amount = None if deal is None else _as_of(deal, "amount", self.at) or None
            self._closing(stage, amount, self.at)
        elif was_closed:
            self._event("reopened", self.at, {
                "stage": self.mapping.stage(stage, f"{self.where}propertyValue")})
        else:
            self._event("stage_changed", self.at, {
                "from_stage": None,
                "to_stage": self.mapping.stage(stage, f"{self.where}propertyValue")})

    def deleted(self, deleted: bool) -> None:
        self._event("deleted" if deleted else "restored", self.at, {})

    def updated(self, data: dict[str, Any]) -> None:
        self._event("updated", self.at, data)
