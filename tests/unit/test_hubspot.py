"""HubSpot deal webhooks to CloudEvents: each request of a realistic sequence against
events written by hand, reading what a webhook does not say from a HubSpot API server
(a real HTTP server answering as HubSpot's CRM API does), and v3 signatures."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from stream_app.config import Settings
from stream_app.ingest.gateway import IngestGateway
from stream_app.ingest.vendors.hubspot import (
    HubSpotApi,
    hubspot_events,
    signature_v3,
    verify_signature,
)
from stream_app.ingest.vendors.mapping import TranslationError, load_vendor_mapping
from tests.unit.test_ingest import TOKEN, MemorySink

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hubspot"
SEQUENCE = json.loads((FIXTURES / "deal_webhooks.json").read_text())
MAPPING = load_vendor_mapping(FIXTURES / "mapping.yml", "hubspot")
SECRET = "hubspot-client-secret-for-tests"
API_TOKEN = "pat-na1-tests"


def hubspot_api_app(deals: dict[str, Any], seen: list[str]) -> web.Application:
    """Answers ``GET /crm/v3/objects/deals/{id}`` like HubSpot's CRM API."""
    async def deal(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        found = deals.get(request.match_info["deal_id"])
        if found is None:
            return web.json_response({"status": "error", "category": "OBJECT_NOT_FOUND"},
                                     status=404)
        assert "dealstage" in request.query["propertiesWithHistory"]
        return web.json_response(found)

    app = web.Application()
    app.router.add_get("/crm/v3/objects/deals/{deal_id}", deal)
    return app


@pytest.fixture
async def api() -> AsyncIterator[tuple[HubSpotApi, str, list[str]]]:
    seen: list[str] = []
    server = TestServer(hubspot_api_app(SEQUENCE["api_deals"], seen))
    await server.start_server()
    reader = HubSpotApi(str(server.make_url("/")), API_TOKEN)
    try:
        yield reader, str(server.make_url("/")), seen
    finally:
        await reader.close()
        await server.close()


@pytest.mark.parametrize("delivery", SEQUENCE["deliveries"], ids=lambda d: d["name"])
async def test_each_request_becomes_the_events_written_by_hand(
        delivery: dict[str, Any], api: tuple[HubSpotApi, str, list[str]]) -> None:
    reader, _, seen = api
    translation = await hubspot_events(delivery["body"], MAPPING, reader)
    assert translation.events == delivery["expected_events"]
    assert [reason for reason, _ in translation.ignored] == delivery["expected_ignored"]
    assert set(seen) <= {f"Bearer {API_TOKEN}"}


async def test_a_deleted_deal_and_an_unreadable_api_are_told_apart(
        api: tuple[HubSpotApi, str, list[str]]) -> None:
    reader, _, _ = api
    gone = [{**SEQUENCE["deliveries"][0]["body"][0], "objectId": 999}]
    assert [r for r, _ in (await hubspot_events(gone, MAPPING, reader)).ignored] == [
        "deal_not_found"]
    from stream_app.ingest.vendors.hubspot import ReaderUnavailable

    down = HubSpotApi("http://127.0.0.1:9", API_TOKEN, timeout=1)
    with pytest.raises(ReaderUnavailable):
        await hubspot_events(SEQUENCE["deliveries"][0]["body"], MAPPING, down)
    await down.close()


async def test_payloads_that_are_not_hubspot_s_format_name_the_field(
        api: tuple[HubSpotApi, str, list[str]]) -> None:
    reader, _, _ = api
    for body, field in (({}, "body"), ([3], "[0]"), ([{"subscriptionType": "deal.creation"}],
                                                      "[0].objectId")):
        with pytest.raises(TranslationError) as caught:
            await hubspot_events(body, MAPPING, reader)
        assert caught.value.field == field


@pytest.mark.parametrize(("age_ms", "tamper", "problem"), [
    (1_000, False, None),
    (6 * 60 * 1000, False, "older than 5 minutes"),
    (1_000, True, "does not match"),
])
def test_signatures_v3_are_checked_with_their_age(age_ms: int, tamper: bool,
                                                  problem: str | None) -> None:
    now = 1_790_000_000_000
    body = b'[{"eventId": 1}]'
    stamp = str(now - age_ms)
    signature = signature_v3(SECRET, "POST", "https://pulse.example.com/webhooks/hubspot",
                             body, stamp)
    headers = {"x-hubspot-signature-v3": signature, "x-hubspot-request-timestamp": stamp}
    verdict = verify_signature(SECRET, "POST", "https://pulse.example.com/webhooks/hubspot",
                               body + (b" " if tamper else b""), headers, now)
    assert (verdict is None) if problem is None else (problem in (verdict or ""))


async def test_the_route_checks_the_signature_against_the_public_url(
        api: tuple[HubSpotApi, str, list[str]]) -> None:
    _, api_url, _ = api
    sink = MemorySink()
    public = "https://pulse.example.com"
    settings = Settings(ingest_tokens=SecretStr(f"crm={TOKEN}"),
                        ingest_hubspot_mapping=str(FIXTURES / "mapping.yml"),
                        ingest_hubspot_client_secret=SecretStr(SECRET),
                        ingest_hubspot_api_token=SecretStr(API_TOKEN),
                        ingest_hubspot_api_url=api_url, ingest_public_url=public)
    gateway = IngestGateway(settings, sink)
    body = json.dumps(SEQUENCE["deliveries"][3]["body"]).encode()

    def signed(uri: str) -> dict[str, str]:
        stamp = str(int(time.time() * 1000))
        return {"X-HubSpot-Signature-v3": signature_v3(SECRET, "POST", uri, body, stamp),
                "X-HubSpot-Request-Timestamp": stamp, "Content-Type": "application/json"}

    try:
        async with TestClient(TestServer(gateway.app)) as client:
            answer = await client.post("/webhooks/hubspot", data=body,
                                       headers=signed(f"{public}/webhooks/hubspot"))
            assert answer.status == 202, await answer.text()
            wrong = await client.post("/webhooks/hubspot", data=body,
                                      headers=signed("https://elsewhere/webhooks/hubspot"))
            assert wrong.status == 401 and (await wrong.json())["error"] == "bad_signature"
            bearer = await client.post("/webhooks/hubspot", data=body,
                                       headers={"Authorization": f"Bearer {TOKEN}"})
            assert bearer.status == 401
    finally:
        await gateway.close()
    assert [json.loads(value)["type"] for _, _, value in sink.records] == ["deal.won"]


def test_a_hubspot_mapping_needs_the_secret_and_the_api_token() -> None:
    with pytest.raises(ValueError, match="CLIENT_SECRET"):
        IngestGateway(Settings(ingest_tokens=SecretStr(f"crm={TOKEN}"),
                               ingest_hubspot_mapping=str(FIXTURES / "mapping.yml")),
                      MemorySink())
