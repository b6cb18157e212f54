"""``stream-app ingest`` between real clients and a real broker and worker: every content
mode to ``/metrics`` equal to the reference, and a broker frozen mid-load."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent

from stream_app.adapters.embedded import EmbeddedServers
from stream_app.adapters.kafka import client_kwargs, ensure_topics
from stream_app.adapters.processes import free_port, spawn, stop_process, wait_for_port
from stream_app.config import Settings, worker_env
from stream_app.ingest.vendors.hubspot import signature_v3
from stream_app.tools.replay import route
from tests.integration.conftest import last_time, small_stream
from tests.integration.harness import (
    Worker,
    assert_matches,
    metric_total,
    settled,
    worker_settings,
)
from tests.reference import expected_metrics

pytestmark = [pytest.mark.e2e]

TOKEN = "e2e-ingest-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: How long the gateway waits for the broker's acknowledgement in these tests.
PRODUCE_TIMEOUT_SECONDS = 2.0


PIPEDRIVE = Path(__file__).resolve().parents[1] / "fixtures" / "pipedrive"
SALESFORCE = Path(__file__).resolve().parents[1] / "fixtures" / "salesforce"
HUBSPOT = Path(__file__).resolve().parents[1] / "fixtures" / "hubspot"
HUBSPOT_SECRET = "e2e-hubspot-client-secret"


class _HubSpotApi(BaseHTTPRequestHandler):
    """Answers GET /crm/v3/objects/deals/{id} as HubSpot's CRM API does."""

    deals: dict[str, Any] = json.loads((HUBSPOT / "deal_webhooks.json").read_text())["api_deals"]

    def do_GET(self) -> None:
        deal_id = self.path.split("?")[0].rsplit("/", 1)[1]
        found = self.deals.get(deal_id)
        body = json.dumps(found or {"status": "error"}).encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hubspot_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubSpotApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture
def gateway(base_settings: Settings, tmp_path: Path, hubspot_api: str) -> Iterator[str]:
    port = free_port()
    env = worker_env(base_settings, PULSE_INGEST_TOKENS=f"e2e={TOKEN}",
                     PULSE_INGEST_HUBSPOT_MAPPING=str(HUBSPOT / "mapping.yml"),
                     PULSE_INGEST_HUBSPOT_CLIENT_SECRET=HUBSPOT_SECRET,
                     PULSE_INGEST_HUBSPOT_API_TOKEN="pat-e2e",
                     PULSE_INGEST_HUBSPOT_API_URL=hubspot_api,
                     PULSE_INGEST_PIPEDRIVE_MAPPING=str(PIPEDRIVE / "mapping.yml"),
                     PULSE_INGEST_SALESFORCE_MAPPING=str(SALESFORCE / "mapping.yml"),
                     PULSE_INGEST_PORT=str(port), PULSE_INGEST_RATE_PER_SECOND="10000",
                     PULSE_INGEST_RATE_BURST="10000",
                     PULSE_INGEST_PRODUCE_TIMEOUT_SECONDS=str(PRODUCE_TIMEOUT_SECONDS),
                     PULSE_INGEST_RETRY_AFTER_SECONDS="1")
    proc = spawn([sys.executable, "-m", "stream_app", "ingest"], env=env,
                 log_path=str(tmp_path / "gateway.log"))
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=10) as client:  # webhooks answer 503 until it is read
            _wait_for(lambda: _roster(client, url)["roster"] == "loaded", "the roster")
        yield url
    finally:
        stop_process(proc)


def _sdk_message(raw: dict[str, Any], binary: bool) -> tuple[dict[str, str], bytes]:
    attributes = {k: v for k, v in raw.items() if k != "data"}
    attributes["time"] = dt.datetime.fromisoformat(raw["time"].replace("Z", "+00:00"))
    attributes["datacontenttype"] = "application/json"
    event = CloudEvent(attributes=attributes, data=raw["data"])
    message = (ce_http.to_binary_event if binary else ce_http.to_structured_event)(event)
    return message.headers, message.body


def _send_all(client: httpx.Client, url: str, events: list[dict[str, Any]]) -> Counter[str]:
    """Every event through the gateway: most in batches, some alone in structured and in
    binary mode (written by the CloudEvents SDK); each request must be accepted."""
    modes: Counter[str] = Counter()
    index = 0
    rng = random.Random(5)
    while index < len(events):
        choice = rng.random()
        if choice < 0.4:
            headers, body = _sdk_message(events[index], binary=choice < 0.2)
            chunk = 1
            modes["binary" if choice < 0.2 else "structured"] += 1
        else:
            chunk = rng.randint(20, 200)
            headers = {"Content-Type": "application/cloudevents-batch+json"}
            body = json.dumps(events[index:index + chunk]).encode()
            modes["batched"] += 1
        answer = client.post(f"{url}/events", content=body, headers={**AUTH, **headers})
        assert answer.status_code == 202, (answer.status_code, answer.text)
        index += chunk
    return modes


async def _produce_binary(settings: Settings, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(acks="all", **client_kwargs(settings))
    await producer.start()
    try:
        for raw in events:
            attributes = {k: v for k, v in raw.items() if k != "data"}
            attributes["time"] = dt.datetime.fromisoformat(raw["time"].replace("Z", "+00:00"))
            message = ce_kafka.to_binary_event(CloudEvent(attributes=attributes,
                                                          data=raw["data"]))
            topic, key = route(settings, raw)
            await producer.send(topic, message.value, key=key,
                                headers=list(message.headers.items()))
        await producer.flush()
    finally:
        await producer.stop()


def _send_pipedrive(client: httpx.Client, url: str
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Pipedrive sequence (creation, stage moves, an amount change, a win, a loss, a
    reopening and a deletion, both ignored), shuffled and partly delivered twice; returns
    the events written by hand for it and the webhooks sent."""
    sequence = json.loads((PIPEDRIVE / "deal_sequence.json").read_text())["deliveries"]
    deliveries = sequence + [sequence[i] for i in (1, 3, 5, 9)]
    random.Random(8).shuffle(deliveries)
    for delivery in deliveries:
        answer = client.post(f"{url}/webhooks/pipedrive", json=delivery["body"],
                             auth=httpx.BasicAuth("e2e", TOKEN))
        assert answer.status_code in (200, 202), (delivery["name"], answer.text)
    return [event for d in sequence for event in d["expected_events"]], deliveries


def _send_salesforce(client: httpx.Client, url: str
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Salesforce change events (creation, stage moves, an amount change, a win, a
    deal created lost, a bulk move, an owner change, a deletion and a gap, the last
    three ignored), in reverse order, some twice, two per request."""
    sequence = json.loads((SALESFORCE / "opportunity_changes.json").read_text())["deliveries"]
    deliveries = list(reversed(sequence)) + [sequence[i] for i in (3, 5)]
    for first in range(0, len(deliveries), 2):
        pair = deliveries[first:first + 2]
        body = [change for d in pair for change in
                (d["body"] if isinstance(d["body"], list) else [d["body"]])]
        answer = client.post(f"{url}/webhooks/salesforce", json=body, headers=AUTH)
        assert answer.status_code in (200, 202), ([d["name"] for d in pair], answer.text)
    return [event for d in sequence for event in d["expected_events"]], deliveries


def _send_hubspot(client: httpx.Client, url: str
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The HubSpot webhook requests, signed, in reverse order, two of them twice."""
    sequence = json.loads((HUBSPOT / "deal_webhooks.json").read_text())["deliveries"]
    deliveries = list(reversed(sequence)) + [sequence[i] for i in (1, 3)]
    for delivery in deliveries:
        body = json.dumps(delivery["body"]).encode()
        stamp = str(int(time.time() * 1000))
        signature = signature_v3(HUBSPOT_SECRET, "POST", f"{url}/webhooks/hubspot", body,
                                 stamp)
        answer = client.post(f"{url}/webhooks/hubspot", content=body, headers={
            "Content-Type": "application/json", "X-HubSpot-Signature-v3": signature,
            "X-HubSpot-Request-Timestamp": stamp})
        assert answer.status_code in (200, 202), (delivery["name"], answer.text)
    return [event for d in sequence for event in d["expected_events"]], deliveries


def test_every_way_in_reaches_the_kpis_exactly(
    base_settings: Settings, gateway: str, tmp_path: Path
) -> None:
    """One stream, shuffled and partly redelivered, arriving every way there is: through
    the gateway in batched, structured and binary requests (written by the CloudEvents
    SDK), straight to Kafka in binary mode (``ce_*`` headers, as Knative writes), a
    Pipedrive webhook sequence, Salesforce change events and signed HubSpot webhooks
    (the rest read from a HubSpot API server): the KPIs equal the reference over the
    events."""
    events = small_stream(seed=21, months=3, per_day=4.0, leads=0.5)
    rng = random.Random(21)
    shuffled = events + rng.sample(events, len(events) // 25)
    rng.shuffle(shuffled)
    kafka_binary, over_http = shuffled[: len(shuffled) // 4], shuffled[len(shuffled) // 4:]
    worker = Worker(worker_settings(base_settings), tmp_path / "worker.log").start()
    try:
        asyncio.run(_produce_binary(base_settings, kafka_binary))
        with httpx.Client(timeout=30) as client:
            modes = _send_all(client, gateway, over_http)
            assert min(modes.values()) > 0, modes
            pipedrive, webhooks = _send_pipedrive(client, gateway)
            salesforce, changes = _send_salesforce(client, gateway)
            hubspot, requests = _send_hubspot(client, gateway)
            metrics = client.get(f"{gateway}/metrics").text
        everything = events + pipedrive + salesforce + hubspot
        as_of = last_time(everything)
        [samples] = settled([worker], base_settings.partitions, as_of)
        expected = expected_metrics(everything, as_of)
        assert assert_matches(expected, samples) == len(expected)
        assert metric_total(samples, "pulse_events_rejected_total") == 0
        produced = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                       if line.startswith("pulse_ingest_events_produced_total{"))
        assert produced == len(over_http) + sum(len(d["expected_events"])
                                                for d in webhooks + changes + requests)
        for kind in ("deal.reopened", "deal.deleted", "deal.restored"):
            vendors = sum(1 for d in webhooks + changes + requests
                          for e in d["expected_events"] if e["type"] == kind)
            sent = vendors + sum(1 for e in over_http if e["type"] == kind)
            assert vendors > 0 and f'pulse_ingest_events_produced_total{{type="{kind}"}} ' \
                f'{float(sent)}' in metrics, kind
        assert 'reason="gap_event",vendor="salesforce"} 1.0' in metrics
        print(f"\n{len(shuffled)} events ({len(shuffled) - len(events)} redelivered): "
              f"{len(kafka_binary)} in Kafka binary mode, the rest in {dict(modes)} requests; "
              f"{len(webhooks)} Pipedrive webhooks, {len(changes)} Salesforce and "
              f"{len(requests)} HubSpot deliveries: {len(expected)} KPI series equal to the "
              "reference")
    finally:
        worker.discard()


def _new_deal(n: int) -> dict[str, Any]:
    at = dt.datetime(2026, 10, 20, 12, tzinfo=dt.UTC) + dt.timedelta(seconds=n)
    return {"specversion": "1.0", "id": f"frozen-{n}", "source": "crm/e2e",
            "type": "deal.created", "time": at.isoformat(),
            "data": {"deal_id": f"FZ-{n}", "account_id": None, "owner_id": "fz-rep",
                     "team": "Frozen", "amount": "100", "currency": "USD",
                     "stage": "Prospecting", "source": None, "product": None}}


def _freeze(pid: int) -> None:
    """SIGSTOP, then wait until every thread of the process is stopped (state T)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    tasks = Path(f"/proc/{pid}/task")
    while any((task / "stat").read_text().rsplit(")", 1)[1].split()[0] != "T"
              for task in tasks.iterdir()):
        assert time.monotonic() < deadline, "the broker did not stop"
        time.sleep(0.01)


def _created(samples: dict[Any, float]) -> float:
    return samples.get(("pulse_created_deals", (("team", "Frozen"), ("window", "all"))), 0.0)


def test_a_frozen_broker_gets_503s_and_after_it_thaws_each_accepted_event_counts_once(
    base_settings: Settings, servers: EmbeddedServers, gateway: str, tmp_path: Path
) -> None:
    assert servers.broker is not None
    worker = Worker(worker_settings(base_settings), tmp_path / "worker.log").start()
    statuses: dict[int, int] = {}
    try:
        with httpx.Client(timeout=30) as client:
            def post(n: int) -> int:
                answer = client.post(f"{gateway}/events", content=json.dumps(_new_deal(n)),
                                     headers={**AUTH,
                                              "Content-Type": "application/cloudevents+json"})
                statuses[n] = answer.status_code
                if answer.status_code == 503:
                    assert answer.headers["Retry-After"] == "1"
                return answer.status_code

            for n in range(40):
                assert post(n) == 202
            _freeze(servers.broker.pid)
            try:
                frozen_at = time.monotonic()
                for n in range(40, 45):
                    started = time.monotonic()
                    assert post(n) == 503
                    assert time.monotonic() - started < PRODUCE_TIMEOUT_SECONDS + 5
                assert time.monotonic() - frozen_at < 10 * (PRODUCE_TIMEOUT_SECONDS + 5)
            finally:
                os.kill(servers.broker.pid, signal.SIGCONT)
            deadline = time.monotonic() + 60
            while post(45) != 202:
                assert time.monotonic() < deadline, "the gateway never recovered"
                time.sleep(1)
            for n in range(46, 55):
                assert post(n) == 202
            refused = [n for n, status in statuses.items() if status == 503]
            assert set(refused) == set(range(40, 45))
            [before_retry] = settled([worker], base_settings.partitions, None)
            accepted = sum(1 for status in statuses.values() if status == 202)
            assert accepted <= _created(before_retry) <= accepted + len(refused)
            for n in refused:  # what a CRM does after a 503: the same event again
                assert post(n) == 202
        [samples] = settled([worker], base_settings.partitions, None)
        assert _created(samples) == 55
        sent = [_new_deal(n) for n in range(55)]
        expected = expected_metrics(sent, last_time(sent))
        assert assert_matches(expected, samples) == len(expected)
        print(f"\n{len(refused)} requests answered 503 while the broker was stopped; "
              f"{_created(before_retry) - accepted:.0f} of their events had landed anyway; "
              "after the retries every event counts once")
    finally:
        worker.discard()


def _roster(client: httpx.Client, gateway: str) -> dict[str, Any]:
    answer = client.get(f"{gateway}/healthz").json()
    assert isinstance(answer, dict)
    return answer


def _wait_for(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


async def _deal_events(settings: Settings, deal_id: str) -> list[dict[str, Any]]:
    """The events of ``deal_id`` on the deal topic, read from the beginning."""
    consumer = AIOKafkaConsumer(settings.topic_deals, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", **client_kwargs(settings))
    await consumer.start()
    try:
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                found += [json.loads(m.value) for m in messages if m.key == deal_id.encode()]
        return found
    finally:
        await consumer.stop()


def test_a_rep_updated_on_the_roster_topic_gives_webhooks_of_that_owner_its_team(
    base_settings: Settings, gateway: str
) -> None:
    """The gateway reads crm.reps from the beginning, then follows it: an owner the
    mapping file does not list (its default team is EMEA) gets the roster's team."""
    asyncio.run(ensure_topics(base_settings))
    profile = {"specversion": "1.0", "id": "roster-e2e-905", "source": "crm/hr",
               "type": "rep.updated", "time": "2026-09-01T08:00:00Z",
               "data": {"owner_id": "905", "name": "Zoe Park", "team": "APAC"}}
    deal = json.loads(json.dumps(json.loads((PIPEDRIVE / "deal_sequence.json").read_text())[
        "deliveries"][0]["body"]))
    deal["data"].update(id=90501, owner_id=905)
    with httpx.Client(timeout=30) as client:
        before = _roster(client, gateway)["roster_owners"]
        answer = client.post(f"{gateway}/events", json=profile,
                             headers={**AUTH, "Content-Type": "application/cloudevents+json"})
        assert answer.status_code == 202, answer.text
        _wait_for(lambda: _roster(client, gateway)["roster_owners"] == before + 1,
                  "the gateway to read the new profile")
        answer = client.post(f"{gateway}/webhooks/pipedrive", json=deal,
                             auth=httpx.BasicAuth("e2e", TOKEN))
        assert answer.status_code == 202, answer.text
    [created] = asyncio.run(_deal_events(base_settings, "90501"))
    assert (created["type"], created["data"]["team"]) == ("deal.created", "APAC")
