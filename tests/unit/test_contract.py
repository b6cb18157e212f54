"""The event contract: schema files in sync with the models, examples decode as documented."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from stream_app.config import Settings, contract_rules
from stream_app.events.codec import (
    ContractRules,
    Rejection,
    decode_event,
    encode_event,
    entity_id,
)
from stream_app.events.models import EVENT_TYPES, crm_event_adapter
from stream_app.events.routing import ROUTES, route_of
from stream_app.events.schema_export import INVALID_EXAMPLES, VALID_EXAMPLES, expected_files
from stream_app.tools.replay import route

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
RULES = ContractRules(frozenset({"USD", "EUR"}), frozenset({"Prospecting", "Qualification"}))


def test_schema_files_match_the_models() -> None:
    drift = [rel for rel, text in expected_files().items()
             if not (SCHEMAS / rel).exists() or (SCHEMAS / rel).read_text() != text]
    assert not drift, f"run `stream-app schemas` to regenerate: {drift}"


@pytest.mark.parametrize("kind", sorted(VALID_EXAMPLES))
def test_valid_examples_pass_the_json_schema_and_the_decoder(kind: str) -> None:
    event = json.loads((SCHEMAS / "examples" / "valid" / f"{kind}.json").read_text())
    jsonschema.validate(event, json.loads((SCHEMAS / "cloudevent.schema.json").read_text()))
    role = {"customer": "customers", "deal": "deals", "quota": "quotas",
            "lead": "leads", "activity": "activities", "rep": "reps"}[kind.split(".")[0]]
    key = route(Settings(), event)[1] or b""
    decoded = decode_event(json.dumps(event).encode(), key, role, RULES)
    assert not isinstance(decoded, Rejection), decoded
    assert decoded.type == kind
    again = decode_event(encode_event(decoded), key, role, RULES)
    assert again == decoded


@pytest.mark.parametrize("name", sorted(INVALID_EXAMPLES))
def test_invalid_examples_are_rejected_with_their_reason(name: str) -> None:
    stored = json.loads((SCHEMAS / "examples" / "invalid" / f"{name}.json").read_text())
    event = stored["event"]
    key = str(event["data"].get("deal_id", "x")).encode()
    rejection = decode_event(json.dumps(event).encode(), key, "deals", RULES)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == stored["expected_reason"]
    assert rejection.detail


@pytest.mark.parametrize(("value", "key", "reason", "detail"), [
    (b"\xff", b"k", "not_utf8", "not UTF-8"),
    (b"{", b"k", "not_json", "not JSON"),
    (b"42", b"k", "not_an_object", "got int"),
    (b"[" * 5000 + b"]" * 5000, b"k", "not_json", "nested too deeply"),
    (b" " * 70_000, b"k", "too_large", "limit is 65536"),
    (None, b"k", "not_json", "tombstone"),
])
def test_undecodable_bytes(value: bytes | None, key: bytes, reason: str, detail: str) -> None:
    rejection = decode_event(value, key, "deals",
                             ContractRules(frozenset({"USD"}), frozenset({"P"}), 65536))
    assert isinstance(rejection, Rejection)
    assert rejection.reason == reason and detail in rejection.detail


def test_the_kafka_key_must_be_the_entity_id() -> None:
    event = json.dumps(VALID_EXAMPLES["deal.won"]).encode()
    rejection = decode_event(event, b"other", "deals", RULES)
    assert isinstance(rejection, Rejection) and rejection.reason == "wrong_key"
    assert "'D-1001'" in rejection.detail


def test_deal_events_on_the_customer_topic_are_refused() -> None:
    event = json.dumps(VALID_EXAMPLES["deal.won"]).encode()
    rejection = decode_event(event, b"D-1001", "customers", RULES)
    assert isinstance(rejection, Rejection) and rejection.reason == "wrong_topic"



def test_every_event_type_has_one_route_that_codec_and_replay_share() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:9092")
    assert {t.partition(".")[0] for t in EVENT_TYPES} == set(ROUTES)
    for event_type in EVENT_TYPES:
        found = route_of(event_type)
        assert found is not None, event_type
        raw = {"type": event_type, "data": {found.key_field: "K-1"}}
        assert route(settings, raw) == (getattr(settings, found.topic_setting), b"K-1")
    assert route_of("invoice.paid") is None and route_of("deal") is None
    won = crm_event_adapter.validate_python({
        "specversion": "1.0", "id": "e-1", "source": "crm", "type": "deal.won",
        "time": "2026-03-01T00:00:00Z",
        "data": {"deal_id": "D-9", "amount": "10", "currency": "USD"}})
    assert entity_id(won) == "D-9"


@pytest.mark.parametrize("kind", sorted(VALID_EXAMPLES))
def test_kafka_binary_mode_written_by_the_cloudevents_sdk_decodes_as_structured(
        kind: str) -> None:
    import datetime as dt

    from cloudevents.core.bindings import kafka as ce_kafka
    from cloudevents.core.v1.event import CloudEvent

    raw = json.loads((SCHEMAS / "examples" / "valid" / f"{kind}.json").read_text())
    role = ROUTES[kind.split(".")[0]].role
    key = route(Settings(), raw)[1] or b""
    attributes = {k: v for k, v in raw.items() if k != "data"}
    attributes["time"] = dt.datetime.fromisoformat(raw["time"].replace("Z", "+00:00"))
    message = ce_kafka.to_binary_event(CloudEvent(attributes=attributes, data=raw["data"]))
    assert "ce_specversion" in message.headers
    rules = contract_rules(Settings())
    binary = decode_event(message.value, key, role, rules,
                          headers=list(message.headers.items()))
    structured = decode_event(json.dumps(raw).encode(), key, role, rules)
    assert not isinstance(binary, Rejection), binary
    assert binary == structured


def test_a_kafka_binary_mode_event_with_a_bad_attribute_names_it() -> None:
    headers = {"ce_specversion": b"1.0", "ce_id": b"x", "ce_source": b"crm",
               "ce_type": b"deal.won", "ce_time": b"2026-11-02T09:30:00"}
    rejected = decode_event(b'{"deal_id": "D1", "amount": "5"}', b"D1", "deals", RULES,
                            headers=headers)
    assert isinstance(rejected, Rejection)
    assert (rejected.reason, rejected.field) == ("naive_timestamp", "time")
