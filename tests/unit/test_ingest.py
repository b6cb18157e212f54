"""The ingest gateway without Kafka: the CloudEvents HTTP binding (requests written by the
official CloudEvents SDK), tokens, rate limits, and every answer of ``POST /events``
over an in-memory sink. The broker path is tested end to end in
``tests/integration/test_e2e_ingest.py``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent
from pydantic import SecretStr

from stream_app.config import Settings
from stream_app.ingest.access import RateLimiter, TokenBook, parse_tokens
from stream_app.ingest.gateway import IngestGateway
from stream_app.ingest.http_binding import BATCH, STRUCTURED, BindingError, events_of_request
from stream_app.ingest.sink import Record, SinkUnavailable

TOKEN = "t0k3n-for-the-unit-tests-0001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def deal_created(n: int = 1, **data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"evt-{n}", "source": "crm/test",
            "type": "deal.created", "time": "2026-11-02T09:30:00Z",
            "data": {"deal_id": f"D-{n}", "account_id": None, "owner_id": "ana", "team": "EMEA",
                     "amount": "1200.50", "currency": "USD", "stage": "Prospecting",
                     "source": None, "product": None, **data}}


def _sdk_event(raw: dict[str, Any]) -> CloudEvent:
    attributes = {k: v for k, v in raw.items() if k != "data"}
    attributes["time"] = dt.datetime.fromisoformat(raw["time"].replace("Z", "+00:00"))
    attributes["datacontenttype"] = "application/json"
    return CloudEvent(attributes=attributes, data=raw["data"])


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_the_sdks_structured_and_binary_requests_carry_the_same_event(mode: str) -> None:
    raw = deal_created(7)
    convert = ce_http.to_structured_event if mode == "structured" else ce_http.to_binary_event
    message = convert(_sdk_event(raw))
    [event] = events_of_request(message.headers, message.body, max_events=10, max_depth=32)
    assert {k: v for k, v in event.items() if k != "datacontenttype"} == raw | {
        "time": "2026-11-02T09:30:00Z"}


def test_binary_header_values_are_percent_decoded() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "a%20b", "ce-type": "deal.created",
               "Content-Type": "application/json; charset=utf-8"}
    [event] = events_of_request(headers, b"{}", max_events=1, max_depth=4)
    assert event["id"] == "a b" and event["data"] == {}


@pytest.mark.parametrize(("headers", "body", "status", "reason"), [
    ({"Content-Type": "application/json"}, b"{}", 415, "unsupported_media_type"),
    ({}, b"{}", 415, "unsupported_media_type"),
    ({"Content-Type": STRUCTURED}, b"[]", 400, "not_an_object"),
    ({"Content-Type": STRUCTURED}, b"{nope", 400, "not_json"),
    ({"Content-Type": STRUCTURED}, b"\xff\xfe", 400, "not_utf8"),
    ({"Content-Type": BATCH}, b"{}", 400, "not_a_batch"),
    ({"Content-Type": BATCH}, b"[{}, 3]", 400, "not_an_object"),
    ({"Content-Type": BATCH}, json.dumps([{}] * 4).encode(), 413, "too_many_events"),
    ({"Content-Type": STRUCTURED}, b'{"a":' * 9 + b"1" + b"}" * 9, 400, "too_deep"),
    ({"Content-Type": STRUCTURED}, b"[" * 50_000 + b"]" * 50_000, 400, "too_deep"),
    ({"ce-specversion": "1.0", "Content-Type": "text/plain"}, b"x", 415,
     "unsupported_media_type"),
])
def test_requests_that_carry_no_events_say_why(headers: dict[str, str], body: bytes,
                                               status: int, reason: str) -> None:
    with pytest.raises(BindingError) as caught:
        events_of_request(headers, body, max_events=3, max_depth=8)
    assert (caught.value.status, caught.value.reason) == (status, reason)


@pytest.mark.parametrize(("text", "problem"), [
    ("ops", "without a name or a token"),
    ("ops=", "without a name or a token"),
    ("ops=0123456789abcdef,ops=fedcba9876543210", "given twice"),
    ("ops=short", "at least 16"),
])
def test_malformed_token_lists_are_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_tokens(text)


def test_a_token_names_its_holder_and_nothing_else_does() -> None:
    book = TokenBook(parse_tokens("crm=0123456789abcdef, ops=fedcba9876543210"))
    assert book.holder("fedcba9876543210") == "ops"
    assert book.holder("0123456789abcdef") == "crm"
    assert book.holder("0123456789abcdeX") is None
    assert book.holder("") is None and book.holder(None) is None


def test_the_rate_limit_allows_bursts_then_one_request_per_interval() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.admit("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.admit("a") == pytest.approx(0.5)
    assert limiter.admit("b") == 0.0  # per caller
    now[0] += 0.5
    assert limiter.admit("a") == 0.0
    assert RateLimiter.retry_after(0.2) == "1" and RateLimiter.retry_after(2.1) == "3"


class MemorySink:
    """Records what the gateway sends; ``fail`` makes the next sends raise."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.fail = False
        self.connected = True

    async def send(self, records: Sequence[Record]) -> None:
        if self.fail:
            raise SinkUnavailable("the broker did not acknowledge within 1 s")
        self.records.extend(records)

    async def close(self) -> None:
        pass


def _settings(**extra: Any) -> Settings:
    return Settings(ingest_tokens=SecretStr(f"crm={TOKEN}"), ingest_max_events_per_request=5,
                    ingest_max_body_bytes=64 * 1024, **extra)


@pytest.fixture
async def client_and_sink() -> AsyncIterator[tuple[TestClient, MemorySink]]:
    sink = MemorySink()
    gateway = IngestGateway(_settings(), sink)
    async with TestClient(TestServer(gateway.app)) as client:
        yield client, sink


async def test_a_valid_batch_is_produced_keyed_by_entity_and_answered_202(
        client_and_sink: tuple[TestClient, MemorySink]) -> None:
    client, sink = client_and_sink
    won = {"specversion": "1.0", "id": "evt-w", "source": "crm/test", "type": "deal.won",
           "time": "2026-11-03T10:00:00+01:00", "data": {"deal_id": "D-1", "amount": "1300"}}
    response = await client.post("/events", data=json.dumps([deal_created(1), won]),
                                 headers={**AUTH, "Content-Type": BATCH})
    assert response.status == 202 and await response.json() == {"accepted": 2}
    settings = _settings()
    assert [(topic, key) for topic, key, _ in sink.records] == [
        (settings.topic_deals, b"D-1"), (settings.topic_deals, b"D-1")]
    assert json.loads(sink.records[1][2])["data"]["amount"] == "1300"


async def test_one_invalid_event_refuses_the_whole_batch_naming_index_field_and_reason(
        client_and_sink: tuple[TestClient, MemorySink]) -> None:
    client, sink = client_and_sink
    batch = [deal_created(1), deal_created(2, currency="XXX"), deal_created(3, amount="-4"),
             {**deal_created(4), "time": "2026-11-02T09:30:00"}, {**deal_created(5),
                                                                 "type": "deal.exploded"}]
    response = await client.post("/events", data=json.dumps(batch),
                                 headers={**AUTH, "Content-Type": BATCH})
    assert response.status == 400
    body = await response.json()
    assert [(e["index"], e["field"], e["reason"]) for e in body["errors"]] == [
        (1, "data.currency", "unknown_currency"), (2, "data.amount", "negative_amount"),
        (3, "time", "naive_timestamp"), (4, "type", "unknown_type")]
    assert body["errors"][0]["id"] == "evt-2"
    assert sink.records == []


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),
    ({"Authorization": "Bearer not-a-configured-token"}, 401),
    ({"Authorization": f"Basic {TOKEN}"}, 401),
])
async def test_requests_without_a_valid_bearer_token_are_refused(
        client_and_sink: tuple[TestClient, MemorySink], headers: dict[str, str],
        status: int) -> None:
    client, sink = client_and_sink
    response = await client.post("/events", data=json.dumps(deal_created()),
                                 headers={**headers, "Content-Type": STRUCTURED})
    assert response.status == status
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in await response.text() and sink.records == []


async def test_a_broker_that_does_not_acknowledge_gets_503_with_retry_after(
        client_and_sink: tuple[TestClient, MemorySink]) -> None:
    client, sink = client_and_sink
    sink.fail = True
    response = await client.post("/events", data=json.dumps(deal_created()),
                                 headers={**AUTH, "Content-Type": STRUCTURED})
    assert response.status == 503 and response.headers["Retry-After"] == "5"
    assert (await response.json())["error"] == "kafka_unavailable"


async def test_limits_unknown_routes_and_open_routes(
        client_and_sink: tuple[TestClient, MemorySink]) -> None:
    client, _ = client_and_sink
    big = await client.post("/events", data=b" " * (65 * 1024),
                            headers={**AUTH, "Content-Type": STRUCTURED})
    assert big.status == 413
    many = await client.post("/events", data=json.dumps([deal_created(n) for n in range(6)]),
                             headers={**AUTH, "Content-Type": BATCH})
    assert many.status == 413 and (await many.json())["error"] == "too_many_events"
    assert (await client.post("/nowhere", headers=AUTH)).status == 404
    assert (await client.get("/events", headers=AUTH)).status == 405
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json())["kafka"] is True
    metrics = await (await client.get("/metrics")).text()
    assert 'pulse_ingest_requests_total{route="/events",status="413"} 2.0' in metrics
    assert 'pulse_ingest_requests_total{route="(unknown)",status="404"} 1.0' in metrics
    assert 'pulse_ingest_events_rejected_total{reason="body_too_large"} 1.0' in metrics


async def test_a_token_over_its_rate_gets_429_with_retry_after() -> None:
    sink = MemorySink()
    gateway = IngestGateway(_settings(ingest_rate_per_second=0.5, ingest_rate_burst=2), sink)
    async with TestClient(TestServer(gateway.app)) as client:
        answers = [await client.post("/events", data=json.dumps(deal_created(n)),
                                     headers={**AUTH, "Content-Type": STRUCTURED})
                   for n in range(3)]
        assert [a.status for a in answers] == [202, 202, 429]
        assert answers[2].headers["Retry-After"] == "2"
        assert len(sink.records) == 2


async def test_a_client_that_trickles_its_body_gets_408_and_holds_nobody_up() -> None:
    import asyncio

    sink = MemorySink()
    gateway = IngestGateway(_settings(ingest_read_timeout_seconds=0.5), sink)
    async with TestClient(TestServer(gateway.app)) as client:
        host, port = client.server.host, client.server.port
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(("POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      f"application/cloudevents+json\r\nAuthorization: Bearer {TOKEN}\r\n"
                      "Content-Length: 1000\r\n\r\n{").encode())
        await writer.drain()
        others = await client.post("/events", data=json.dumps(deal_created(9)),
                                   headers={**AUTH, "Content-Type": STRUCTURED})
        assert others.status == 202
        assert not reader.at_eof() and not reader._buffer  # still waiting for its body
        status_line = await asyncio.wait_for(reader.readline(), 5)
        assert b" 408 " in status_line
        writer.close()
    assert len(sink.records) == 1
