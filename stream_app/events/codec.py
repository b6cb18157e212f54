"""Bytes to validated events, or a :class:`Rejection` naming the field and what was expected.

Pure: no Kafka, no Redis. The worker sends rejections to the dead-letter topic.
"""

from __future__ import annotations

__all__ = [
    "REJECT_REASONS",
    "ContractRules",
    "Rejection",
    "TopicRole",
    "decode_event",
    "encode_event",
    "entity_id",
    "validate_event",
]

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from stream_app.events.models import (
    EVENT_TYPES,
    CrmEvent,
    DealCreated,
    DealReopened,
    DealStageChanged,
    QuotaSet,
    crm_event_adapter,
)
from stream_app.events.routing import ROUTES, TopicRole

REJECT_REASONS: tuple[str, ...] = (
    "too_large",
    "not_utf8",
    "not_json",
    "not_an_object",
    "unknown_type",
    "missing_field",
    "invalid_field",
    "naive_timestamp",
    "negative_amount",
    "unknown_currency",
    "unknown_stage",
    "wrong_topic",
    "wrong_key",
)



@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event was refused: a bounded ``reason`` and a ``detail`` for humans."""

    reason: str
    detail: str
    event_id: str | None = None
    event_type: str | None = None

    @property
    def field(self) -> str | None:
        """The field the detail names first (``data.amount``, ``type``), if any."""
        name, colon, _ = self.detail.partition(":")
        return name if colon and " " not in name else None


@dataclass(frozen=True, slots=True)
class ContractRules:
    """The configured parts of the contract: accepted currencies and stage names."""

    currencies: frozenset[str]
    stages: frozenset[str]
    max_event_bytes: int = 64 * 1024


def entity_id(event: CrmEvent) -> str:
    """The id the Kafka key must carry: the event's routing key field (deal_id for deal
    events, account_id for customers, owner_id for quotas and activities, lead_id for
    leads)."""
    return str(getattr(event.data, ROUTES[event.type.partition(".")[0]].key_field))


def encode_event(event: CrmEvent) -> bytes:
    """Serialize an event to the structured-mode JSON bytes of the contract."""
    return event.model_dump_json(exclude_none=False).encode("utf-8")


def _shorten(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _from_validation_error(error: ValidationError, raw: dict[str, Any]) -> Rejection:
    first = error.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in first["loc"] if not isinstance(part, int))
    kind = first["type"]
    event_type = raw.get("type") if isinstance(raw.get("type"), str) else None
    loc_parts = [str(part) for part in first["loc"]]
    if event_type in EVENT_TYPES and loc_parts and loc_parts[0] == event_type:
        loc = ".".join(loc_parts[1:])
    event_id = raw.get("id") if isinstance(raw.get("id"), str) else None
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = ", ".join(EVENT_TYPES)
        return Rejection(
            "unknown_type",
            f"type: got {_shorten(raw.get('type'))}, expected one of {expected}",
            event_id,
            None,
        )
    if kind == "missing":
        reason = "missing_field"
        detail = f"{loc}: required field is missing"
    elif kind == "timezone_aware":
        reason = "naive_timestamp"
        detail = f"{loc}: timestamp needs a UTC offset (RFC 3339), got {_shorten(first['input'])}"
    elif kind == "greater_than_equal" and loc.endswith(("amount", "price")):
        reason = "negative_amount"
        detail = f"{loc}: expected an amount >= 0, got {_shorten(first['input'])}"
    else:
        reason = "invalid_field"
        detail = f"{loc}: {first['msg']} (got {_shorten(first.get('input'))})"
    return Rejection(reason, detail, event_id, event_type)


def _check_rules(event: CrmEvent, rules: ContractRules) -> Rejection | None:
    if isinstance(event, DealCreated | QuotaSet):
        if event.data.currency not in rules.currencies:
            accepted = ", ".join(sorted(rules.currencies))
            return Rejection(
                "unknown_currency",
                f"data.currency: got {event.data.currency!r}, expected one of {accepted}",
                event.id,
                event.type,
            )
        if isinstance(event, QuotaSet):
            return None
        stages: dict[str, str | None] = {"data.stage": event.data.stage}
    elif isinstance(event, DealStageChanged):
        stages = {"data.from_stage": event.data.from_stage, "data.to_stage": event.data.to_stage}
    elif isinstance(event, DealReopened):
        stages = {"data.stage": event.data.stage}
    else:
        return None
    for field, stage in stages.items():
        if stage is not None and stage not in rules.stages:
            accepted = ", ".join(sorted(rules.stages))
            return Rejection(
                "unknown_stage",
                f"{field}: got {stage!r}, expected one of the configured stages {accepted}",
                event.id,
                event.type,
            )
    return None


def validate_event(raw: dict[str, Any], rules: ContractRules) -> CrmEvent | Rejection:
    """The contract's verdict on one parsed event (the worker's and the ingest
    gateway's): the model, then the configured currencies and stages."""
    try:
        event = crm_event_adapter.validate_python(raw)
    except ValidationError as exc:
        return _from_validation_error(exc, raw)
    except RecursionError:
        return Rejection("invalid_field", "data nested too deeply")
    rejected = _check_rules(event, rules)
    return rejected if rejected is not None else event


#: Kafka headers of a binary-mode CloudEvent: ``ce_<attribute>``.
KAFKA_ATTRIBUTE_PREFIX = "ce_"
Headers = Mapping[str, bytes] | Iterable[tuple[str, bytes]]


def _binary_attributes(headers: Headers | None) -> dict[str, str] | None:
    """The CloudEvent attributes of a Kafka binary-mode message (``ce_specversion`` says
    it is one, as the CloudEvents Kafka binding writes it); None for a structured one."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    for name, value in pairs:
        if value is None:
            continue
        if name.startswith(KAFKA_ATTRIBUTE_PREFIX):
            found[name[len(KAFKA_ATTRIBUTE_PREFIX):]] = value.decode("utf-8", "replace")
        elif name.lower() == "content-type":  # the binding's place for datacontenttype
            found["datacontenttype"] = value.decode("utf-8", "replace")
    return found if "specversion" in found else None


def decode_event(
    value: bytes | None,
    key: bytes | None,
    role: TopicRole,
    rules: ContractRules,
    headers: Headers | None = None,
) -> CrmEvent | Rejection:
    """Decode and validate one Kafka message of the topic with the given role: a
    structured-mode event (the whole event in the value), or a binary-mode one (the
    attributes in ``ce_*`` headers, the value its ``data``)."""
    if value is None:
        return Rejection("not_json", "message has no value (tombstone)")
    if len(value) > rules.max_event_bytes:
        return Rejection(
            "too_large",
            f"event is {len(value)} bytes, the limit is {rules.max_event_bytes}",
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"event is not UTF-8: {exc.reason} at byte {exc.start}")
    try:
        raw = json.loads(text)
    except RecursionError:
        return Rejection("not_json", "JSON nested too deeply")
    except ValueError as exc:
        return Rejection("not_json", f"not JSON: {exc}")
    attributes = _binary_attributes(headers)
    if attributes is not None:
        raw = {**attributes, "data": raw}
    if not isinstance(raw, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(raw).__name__}")
    event = validate_event(raw, rules)
    if isinstance(event, Rejection):
        return event
    expected_role = ROUTES[event.type.partition(".")[0]].role
    if expected_role != role:
        return Rejection(
            "wrong_topic",
            f"type: {event.type} belongs on the {expected_role} topic, not the {role} topic",
            event.id,
            event.type,
        )
    expected_key = entity_id(event)
    got_key = key.decode("utf-8", "replace") if key is not None else None
    if got_key != expected_key:
        return Rejection(
            "wrong_key",
            f"Kafka key: got {_shorten(got_key)}, expected the entity id {expected_key!r}",
            event.id,
            event.type,
        )
    return event
