"""Pipedrive webhooks v2 to CloudEvents: every delivery of a realistic deal sequence
against events written by hand, the mapping file's checks, and the route's answers."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from stream_app.config import Settings
from stream_app.ingest.gateway import IngestGateway
from stream_app.ingest.vendors.mapping import TranslationError, load_vendor_mapping
from stream_app.ingest.vendors.pipedrive import pipedrive_events
from tests.unit.test_ingest import TOKEN, MemorySink

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pipedrive"
SEQUENCE = json.loads((FIXTURES / "deal_sequence.json").read_text())
MAPPING = load_vendor_mapping(FIXTURES / "mapping.yml", "pipedrive")
BASIC = {"Authorization": "Basic " + base64.b64encode(f"crm:{TOKEN}".encode()).decode()}


@pytest.mark.parametrize("delivery", SEQUENCE["deliveries"], ids=lambda d: d["name"])
def test_each_delivery_becomes_the_events_written_by_hand(delivery: dict[str, Any]) -> None:
    translation = pipedrive_events(delivery["body"], MAPPING)
    assert translation.events == delivery["expected_events"]
    assert [reason for reason, _ in translation.ignored] == delivery["expected_ignored"]


def test_a_redelivered_webhook_gives_the_same_event_ids() -> None:
    body = SEQUENCE["deliveries"][1]["body"]
    again = {**body, "meta": {**body["meta"], "attempt": 3, "timestamp": body["meta"]["timestamp"]
                              + 600}}
    assert pipedrive_events(again, MAPPING).events == pipedrive_events(body, MAPPING).events


@pytest.mark.parametrize(("change", "status", "reason", "field"), [
    ({"data": {"stage_id": 42}}, 422, "unmapped_stage", "data.stage_id"),
    ({"data": {"owner_id": None}}, 400, "missing_field", "data.owner_id"),
    ({"data": {"add_time": "yesterday"}}, 400, "invalid_field", "data.add_time"),
    ({"data": {"value": "a lot"}}, 400, "invalid_field", "data.value"),
    ({"meta": {"action": "merge"}}, 400, "invalid_field", "meta.action"),
    ({"data": None}, 400, "invalid_field", "data"),
])
def test_payloads_the_mapping_or_the_format_do_not_cover_name_the_field(
        change: dict[str, Any], status: int, reason: str, field: str) -> None:
    body = json.loads(json.dumps(SEQUENCE["deliveries"][0]["body"]))
    for part, values in change.items():
        if values is None:
            body[part] = None
        else:
            body[part].update(values)
    with pytest.raises(TranslationError) as caught:
        pipedrive_events(body, MAPPING)
    assert (caught.value.status, caught.value.reason, caught.value.field) == (
        status, reason, field)


def test_a_mapping_without_a_default_team_refuses_unknown_owners(tmp_path: Path) -> None:
    path = tmp_path / "m.yml"
    path.write_text("default_currency: EUR\nstages: {1: Prospecting}\nowners: {7: {team: A}}\n")
    mapping = load_vendor_mapping(path, "pipedrive")
    with pytest.raises(TranslationError, match="no team"):
        pipedrive_events(SEQUENCE["deliveries"][0]["body"], mapping)


@pytest.mark.parametrize(("text", "problem"), [
    ("stages: {}\ndefault_currency: EUR\n", "stages"),
    ("stages: {1: P}\n", "default_currency"),
    ("stages: {1: P}\ndefault_currency: EUR\nowners: {7: A}\n", "owners.7"),
    ("- a list\n", "YAML mapping"),
])
def test_unusable_mapping_files_name_the_key(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "m.yml"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem):
        load_vendor_mapping(path, "pipedrive")


async def test_the_route_takes_basic_auth_and_answers_with_what_it_produced_and_ignored() -> None:
    sink = MemorySink()
    settings = Settings(ingest_tokens=SecretStr(f"crm={TOKEN}"),
                        ingest_pipedrive_mapping=str(FIXTURES / "mapping.yml"))
    gateway = IngestGateway(settings, sink)
    async with TestClient(TestServer(gateway.app)) as client:
        won = await client.post("/webhooks/pipedrive", headers=BASIC,
                                json=SEQUENCE["deliveries"][3]["body"])
        assert won.status == 202 and await won.json() == {"accepted": 1}
        renamed = await client.post("/webhooks/pipedrive", headers=BASIC, json=next(
            d["body"] for d in SEQUENCE["deliveries"] if d["name"] == "103 renamed (no event)"))
        assert renamed.status == 200 and await renamed.json() == {"accepted": 0, "ignored": 0}
        owner_changed = json.loads(json.dumps(SEQUENCE["deliveries"][3]["body"]))
        owner_changed["previous"] = {"owner_id": 901}
        handed_over = await client.post("/webhooks/pipedrive", headers=BASIC,
                                        json=owner_changed)
        assert handed_over.status == 202 and await handed_over.json() == {"accepted": 1}
        owner_changed["previous"] = {"currency": "USD"}
        ignored = await client.post("/webhooks/pipedrive", headers=BASIC, json=owner_changed)
        assert ignored.status == 200 and await ignored.json() == {"accepted": 0, "ignored": 1}
        wrong_user = {"Authorization": "Basic " + base64.b64encode(
            f"ops:{TOKEN}".encode()).decode()}
        assert (await client.post("/webhooks/pipedrive", headers=wrong_user,
                                  json={})).status == 401
        body = json.loads(json.dumps(SEQUENCE["deliveries"][0]["body"]))
        body["data"]["stage_id"] = 42
        unmapped = await client.post("/webhooks/pipedrive", headers=BASIC, json=body)
        assert unmapped.status == 422
        assert (await unmapped.json())["field"] == "data.stage_id"
        body["data"].update(stage_id=1, currency="XXX")
        foreign = await client.post("/webhooks/pipedrive", headers=BASIC, json=body)
        assert foreign.status == 422 and (await foreign.json())["error"] == "unknown_currency"
        metrics = await (await client.get("/metrics")).text()
    assert [(t, k) for t, k, _ in sink.records] == [(settings.topic_deals, b"101")] * 2
    handover = json.loads(sink.records[1][2])
    assert (handover["type"], handover["data"]["owner_id"]) == ("deal.updated", "900")
    assert ('pulse_ingest_changes_ignored_total{reason="currency_changed",vendor="pipedrive"} '
            '1.0' in metrics)


async def test_without_a_mapping_the_route_does_not_exist() -> None:
    gateway = IngestGateway(Settings(ingest_tokens=SecretStr(f"crm={TOKEN}")), MemorySink())
    async with TestClient(TestServer(gateway.app)) as client:
        answer = await client.post("/webhooks/pipedrive", headers=BASIC, json={})
        assert answer.status == 404
