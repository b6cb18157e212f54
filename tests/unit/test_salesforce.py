"""Salesforce Change Data Capture (OpportunityChangeEvent) to CloudEvents: every change
of a realistic sequence against events written by hand, what is refused rather than
guessed, and the route."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from stream_app.config import Settings
from stream_app.ingest.gateway import IngestGateway
from stream_app.ingest.vendors.mapping import TranslationError, load_vendor_mapping
from stream_app.ingest.vendors.salesforce import salesforce_events
from tests.unit.test_ingest import AUTH, TOKEN, MemorySink

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "salesforce"
SEQUENCE = json.loads((FIXTURES / "opportunity_changes.json").read_text())
MAPPING = load_vendor_mapping(FIXTURES / "mapping.yml", "salesforce")


@pytest.mark.parametrize("delivery", SEQUENCE["deliveries"], ids=lambda d: d["name"])
def test_each_change_event_becomes_the_events_written_by_hand(delivery: dict[str, Any]) -> None:
    translation = salesforce_events(delivery["body"], MAPPING)
    assert translation.events == delivery["expected_events"]
    assert [reason for reason, _ in translation.ignored] == delivery["expected_ignored"]


def _won_without(field: str) -> dict[str, Any]:
    body = json.loads(json.dumps(SEQUENCE["deliveries"][3]["body"]))
    del body[field]
    return body


@pytest.mark.parametrize(("body", "status", "reason", "field"), [
    (_won_without("Amount"), 422, "missing_field", "Amount"),
    (_won_without("StageName"), 422, "missing_field", "StageName"),
    ({"ChangeEventHeader": {"entityName": "Opportunity", "changeType": "MERGE"}}, 400,
     "invalid_field", "ChangeEventHeader.changeType"),
    ({"ChangeEventHeader": {"entityName": "Opportunity", "changeType": "UPDATE",
                            "recordIds": [], "commitTimestamp": 1}}, 400, "missing_field",
     "ChangeEventHeader.recordIds"),
    ([{"ChangeEventHeader": {"entityName": "Opportunity", "changeType": "UPDATE",
                             "recordIds": ["006A"]}}], 400, "missing_field",
     "[0]ChangeEventHeader.commitTimestamp"),
    ({"Name": "no header"}, 400, "invalid_field", "ChangeEventHeader"),
])
def test_what_a_change_event_does_not_say_is_refused_not_guessed(
        body: Any, status: int, reason: str, field: str) -> None:
    with pytest.raises(TranslationError) as caught:
        salesforce_events(body, MAPPING)
    assert (caught.value.status, caught.value.reason, caught.value.field) == (
        status, reason, field)


def test_a_stage_the_mapping_lacks_is_refused_with_422() -> None:
    body = json.loads(json.dumps(SEQUENCE["deliveries"][1]["body"]))
    body["StageName"] = "Id. Decision Makers"
    with pytest.raises(TranslationError) as caught:
        salesforce_events(body, MAPPING)
    assert (caught.value.status, caught.value.reason) == (422, "unmapped_stage")


async def test_the_route_takes_a_batch_with_a_bearer_token_and_counts_gaps() -> None:
    sink = MemorySink()
    settings = Settings(ingest_tokens=SecretStr(f"crm={TOKEN}"),
                        ingest_salesforce_mapping=str(FIXTURES / "mapping.yml"))
    gateway = IngestGateway(settings, sink)
    named = {delivery["name"]: delivery["body"] for delivery in SEQUENCE["deliveries"]}
    batch = [named[name] for name in ("006A created", "006A to Qualification",
                                      "a gap event (ignored)")]
    async with TestClient(TestServer(gateway.app)) as client:
        answer = await client.post("/webhooks/salesforce", headers=AUTH, json=batch)
        assert answer.status == 202 and await answer.json() == {"accepted": 2}
        assert (await client.post("/webhooks/salesforce", json=batch)).status == 401
        metrics = await (await client.get("/metrics")).text()
    assert [key for _, key, _ in sink.records] == [b"006A", b"006A"]
    assert 'pulse_ingest_changes_ignored_total{reason="gap_event",vendor="salesforce"} 1.0' in \
        metrics


@pytest.mark.parametrize(("value", "text"), [
    ("2026-09-01T10:00:00.000Z", "2026-09-01T10:00:00Z"),
    ("2026-09-01T12:00:00.000+0200", "2026-09-01T10:00:00Z"),
    ("2026-09-01 10:00:00", "2026-09-01T10:00:00Z"),
    (1788256800000, "2026-09-01T10:00:00Z"),
    (1788256800123, "2026-09-01T10:00:00.123000Z"),
])
def test_crm_times_become_utc_rfc_3339(value: Any, text: str) -> None:
    from stream_app.ingest.vendors.mapping import iso_time

    assert iso_time(value, "t") == text
