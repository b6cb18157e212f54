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
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent

from stream_app.adapters.embedded import EmbeddedServers
from stream_app.adapters.kafka import client_kwargs
from stream_app.adapters.processes import free_port, spawn, stop_process, wait_for_port
from stream_app.config import Settings, worker_env
from stream_app.tools.replay import route
from tests.integration.conftest import last_time, small_stream
from tests.integration.harness import (
    Worker,
    assert_matches,
    metric_total,
    produce,
    settled,
    worker_settings,
)
from tests.reference import expected_metrics

pytestmark = [pytest.mark.e2e]

TOKEN = "e2e-ingest-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: How long the gateway waits for the broker's acknowledgement in these tests.
PRODUCE_TIMEOUT_SECONDS = 2.0


@pytest.fixture
def gateway(base_settings: Settings, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = worker_env(base_settings, PULSE_INGEST_TOKENS=f"e2e={TOKEN}",
                     PULSE_INGEST_PORT=str(port), PULSE_INGEST_RATE_PER_SECOND="10000",
                     PULSE_INGEST_RATE_BURST="10000",
                     PULSE_INGEST_PRODUCE_TIMEOUT_SECONDS=str(PRODUCE_TIMEOUT_SECONDS),
                     PULSE_INGEST_RETRY_AFTER_SECONDS="1")
    proc = spawn([sys.executable, "-m", "stream_app", "ingest"], env=env,
                 log_path=str(tmp_path / "gateway.log"))
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        yield f"http://127.0.0.1:{port}"
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


def test_events_sent_in_every_mode_reach_the_kpis_exactly(
    base_settings: Settings, gateway: str, tmp_path: Path
) -> None:
    events = small_stream(seed=21, months=4, per_day=5.0, leads=0.5)
    rng = random.Random(21)
    shuffled = events + rng.sample(events, len(events) // 25)  # redeliveries
    rng.shuffle(shuffled)
    worker = Worker(worker_settings(base_settings), tmp_path / "worker.log").start()
    try:
        with httpx.Client(timeout=30) as client:
            modes = _send_all(client, gateway, shuffled)
            assert min(modes.values()) > 0, modes
            metrics = client.get(f"{gateway}/metrics").text
        as_of = last_time(events)
        [samples] = settled([worker], base_settings.partitions, as_of)
        expected = expected_metrics(events, as_of)
        assert assert_matches(expected, samples) == len(expected)
        produced = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                       if line.startswith("pulse_ingest_events_produced_total{"))
        assert produced == len(shuffled)
        print(f"\n{len(shuffled)} events ({len(shuffled) - len(events)} redelivered) in "
              f"{dict(modes)} requests: {len(expected)} KPI series equal to the reference")
    finally:
        worker.discard()


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


def test_kafka_binary_mode_messages_count_as_structured_ones(
    base_settings: Settings, tmp_path: Path
) -> None:
    """Knative and many bridges write CloudEvents to Kafka in binary mode (attributes in
    ``ce_*`` headers, the data as the value): half the stream arrives so."""
    events = small_stream(seed=23, months=2, per_day=4.0, leads=0.5)
    binary = events[::2]
    worker = Worker(worker_settings(base_settings), tmp_path / "worker.log").start()
    try:
        asyncio.run(_produce_binary(base_settings, binary))
        produce(base_settings, events[1::2])
        as_of = last_time(events)
        [samples] = settled([worker], base_settings.partitions, as_of)
        expected = expected_metrics(events, as_of)
        assert assert_matches(expected, samples) == len(expected)
        assert metric_total(samples, "pulse_events_rejected_total") == 0
        print(f"\n{len(binary)} binary-mode and {len(events) - len(binary)} structured events: "
              f"{len(expected)} KPI series equal to the reference")
    finally:
        worker.discard()


def _new_deal(n: int) -> dict[str, Any]:
    at = dt.datetime(2026, 10, 20, 12, tzinfo=dt.UTC) + dt.timedelta(seconds=n)
    return {"specversion": "1.0", "id": f"frozen-{n}", "source": "crm/e2e",
            "type": "deal.created", "time": at.isoformat(),
            "data": {"deal_id": f"FZ-{n}", "account_id": None, "owner_id": "fz-rep",
                     "team": "Frozen", "amount": "100", "currency": "USD",
                     "stage": "Prospecting", "source": None, "product": None}}


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
            os.kill(servers.broker.pid, signal.SIGSTOP)
            try:
                frozen_at = time.monotonic()
                for n in range(40, 50):
                    started = time.monotonic()
                    assert post(n) == 503
                    assert time.monotonic() - started < PRODUCE_TIMEOUT_SECONDS + 5
                assert time.monotonic() - frozen_at < 10 * (PRODUCE_TIMEOUT_SECONDS + 5)
            finally:
                os.kill(servers.broker.pid, signal.SIGCONT)
            deadline = time.monotonic() + 60
            while post(50) != 202:
                assert time.monotonic() < deadline, "the gateway never recovered"
                time.sleep(1)
            for n in range(51, 60):
                assert post(n) == 202
            refused = [n for n, status in statuses.items() if status == 503]
            assert set(refused) == set(range(40, 50))
            [before_retry] = settled([worker], base_settings.partitions, None)
            accepted = sum(1 for status in statuses.values() if status == 202)
            assert accepted <= _created(before_retry) <= accepted + len(refused)
            for n in refused:  # what a CRM does after a 503: the same event again
                assert post(n) == 202
        [samples] = settled([worker], base_settings.partitions, None)
        assert _created(samples) == 60
        sent = [_new_deal(n) for n in range(60)]
        expected = expected_metrics(sent, last_time(sent))
        assert assert_matches(expected, samples) == len(expected)
        print(f"\n10 requests answered 503 while the broker was stopped; "
              f"{_created(before_retry) - accepted:.0f} of their events had landed anyway; "
              "after the retries every event counts once")
    finally:
        worker.discard()
