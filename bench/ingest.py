"""The ingest gateway under load: one ``stream-app ingest`` process on the embedded
broker, each route driven first closed-loop (``concurrency`` clients sending as fast as
answers come: the saturation rate), then open-loop at half that rate (requests sent on
a fixed schedule, whatever the answers: the latency a CRM sees below saturation).

Routes and bodies: ``/events`` batched (100 generated events a request) and structured
(one a request); ``/webhooks/pipedrive``, ``/webhooks/salesforce`` and
``/webhooks/hubspot`` with a new deal's creation a request, mapped by the shipped
examples in ``deploy/ingest/`` (HubSpot's deal read from a local server answering as
HubSpot's API does, so its figure includes that round trip, as in production).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from stream_app.adapters.processes import free_port, spawn, stop_process, wait_for_port
from stream_app.config import Settings, worker_env
from stream_app.ingest.vendors.hubspot import signature_v3

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-ingest-token-0123456789"
SECRET = "bench-hubspot-client-secret"
#: (path, headers, body, events in it) of one request.
Request = tuple[str, dict[str, str], bytes, int]


class _HubSpotDeals(BaseHTTPRequestHandler):
    """Any deal id: an open deal created a minute ago, as HubSpot's CRM API answers."""

    def do_GET(self) -> None:
        deal_id = self.path.split("?")[0].rsplit("/", 1)[1]
        created = "2026-11-01T09:00:00.000Z"
        body = json.dumps({"id": deal_id, "properties": {
            "dealstage": "appointmentscheduled", "amount": "1000", "hubspot_owner_id": "77",
            "createdate": created, "deal_currency_code": "USD"},
            "propertiesWithHistory": {
                "dealstage": [{"value": "appointmentscheduled", "timestamp": created}],
                "amount": [{"value": "1000", "timestamp": created}]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _deal_event(n: int) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"bench-{n}", "source": "bench", "type": "deal.created",
            "time": "2026-11-01T09:00:00Z",
            "data": {"deal_id": f"B-{n}", "account_id": None, "owner_id": "rep",
                     "team": "Bench", "amount": "1000", "currency": "USD",
                     "stage": "Prospecting"}}


def _bodies(url: str) -> dict[str, Callable[[int], Request]]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    basic = {"Authorization": "Basic " + base64.b64encode(f"bench:{TOKEN}".encode()).decode()}

    def batched(n: int) -> Request:
        events = [_deal_event(n * 100 + i) for i in range(100)]
        return ("/events", {**auth, "Content-Type": "application/cloudevents-batch+json"},
                json.dumps(events).encode(), 100)

    def structured(n: int) -> Request:
        return ("/events", {**auth, "Content-Type": "application/cloudevents+json"},
                json.dumps(_deal_event(n)).encode(), 1)

    def pipedrive(n: int) -> Request:
        body = {"meta": {"action": "create", "entity": "deal", "entity_id": n, "attempt": 1,
                         "version": "2.0"},
                "data": {"id": n, "value": 1000, "currency": "EUR", "status": "open",
                         "stage_id": 1, "owner_id": 18487521,
                         "add_time": "2026-11-01T09:00:00Z",
                         "update_time": "2026-11-01T09:00:00Z"}, "previous": None}
        return ("/webhooks/pipedrive", {**basic, "Content-Type": "application/json"},
                json.dumps(body).encode(), 1)

    def salesforce(n: int) -> Request:
        body = {"ChangeEventHeader": {
            "entityName": "Opportunity", "recordIds": [f"006B{n}"], "changeType": "CREATE",
            "transactionKey": f"bench-{n}", "sequenceNumber": 1,
            "commitTimestamp": 1793523600000, "changedFields": []},
            "OwnerId": "0055e000001AbCdAAA", "StageName": "Prospecting", "Amount": 1000,
            "CreatedDate": "2026-11-01T09:00:00.000Z"}
        return ("/webhooks/salesforce", {**auth, "Content-Type": "application/json"},
                json.dumps(body).encode(), 1)

    def hubspot(n: int) -> Request:
        body = json.dumps([{"eventId": n, "subscriptionType": "deal.creation",
                            "objectId": n, "occurredAt": 1793523600000,
                            "attemptNumber": 0}]).encode()
        stamp = str(int(time.time() * 1000))
        signature = signature_v3(SECRET, "POST", f"{url}/webhooks/hubspot", body, stamp)
        return ("/webhooks/hubspot", {"Content-Type": "application/json",
                                      "X-HubSpot-Signature-v3": signature,
                                      "X-HubSpot-Request-Timestamp": stamp}, body, 1)

    return {"events_batched": batched, "events_structured": structured,
            "pipedrive": pipedrive, "salesforce": salesforce, "hubspot": hubspot}


async def _closed_loop(client: httpx.AsyncClient, make: Callable[[int], Request],
                       numbers: Iterator[int], concurrency: int, seconds: float
                       ) -> dict[str, float]:
    done = {"requests": 0, "events": 0, "errors": 0}
    stop = time.perf_counter() + seconds

    async def one_client() -> None:
        while time.perf_counter() < stop:
            path, headers, body, events = make(next(numbers))
            answer = await client.post(path, content=body, headers=headers)
            if answer.status_code in (200, 202):
                done["requests"] += 1
                done["events"] += events
            else:
                done["errors"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    took = time.perf_counter() - started
    return {"requests_per_s": done["requests"] / took, "events_per_s": done["events"] / took,
            "errors": done["errors"]}


async def _open_loop(client: httpx.AsyncClient, make: Callable[[int], Request],
                     numbers: Iterator[int], rate: float, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0

    async def one(request: Request) -> None:
        nonlocal errors
        path, headers, body, _ = request
        sent = time.perf_counter()
        answer = await client.post(path, content=body, headers=headers)
        latencies.append(time.perf_counter() - sent)
        errors += answer.status_code not in (200, 202)

    tasks = []
    start = time.perf_counter()
    for i in range(max(1, int(rate * seconds))):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(make(next(numbers)))))
    await asyncio.gather(*tasks)
    quantiles = statistics.quantiles(latencies, n=100)
    return {"rate_per_s": rate, "requests": len(latencies), "errors": errors,
            "p50_ms": quantiles[49] * 1000, "p99_ms": quantiles[98] * 1000}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(url: str, seconds: float, concurrency: int, pid: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    numbers = itertools.count(1)
    limits = httpx.Limits(max_connections=concurrency * 4, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        for route, make in _bodies(url).items():
            cpu = _cpu_seconds(pid)
            saturation = await _closed_loop(client, make, numbers, concurrency, seconds)
            used = _cpu_seconds(pid) - cpu
            saturation["gateway_cpu_share"] = used / seconds
            saturation["gateway_cpu_ms_per_request"] = (
                1000 * used / (saturation["requests_per_s"] * seconds)
                if saturation["requests_per_s"] else None)
            fixed = await _open_loop(client, make, numbers,
                                     max(1.0, saturation["requests_per_s"] / 2), seconds)
            results[route] = {"saturation": saturation, "half_load": fixed}
    return results


def _wait_for_roster(url: str, timeout: float = 30.0) -> None:
    """Until the gateway has read the roster topic (its webhooks answer 503 before)."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/healthz", timeout=5).json().get("roster") != "loaded":
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway did not load the roster within 30 s")
        time.sleep(0.2)


def gateway_load(settings: Settings, logs: Path, seconds: float = 10.0,
                 concurrency: int = 16) -> dict[str, Any]:
    """Each route's saturation rate and its latency at half that rate."""
    api = ThreadingHTTPServer(("127.0.0.1", 0), _HubSpotDeals)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    port = free_port()
    examples = ROOT / "deploy" / "ingest"
    env = worker_env(settings, PULSE_INGEST_TOKENS=f"bench={TOKEN}",
                     PULSE_INGEST_PORT=str(port), PULSE_INGEST_RATE_PER_SECOND="1000000",
                     PULSE_INGEST_RATE_BURST="1000000",
                     PULSE_INGEST_PIPEDRIVE_MAPPING=str(examples / "pipedrive.example.yml"),
                     PULSE_INGEST_SALESFORCE_MAPPING=str(examples / "salesforce.example.yml"),
                     PULSE_INGEST_HUBSPOT_MAPPING=str(examples / "hubspot.example.yml"),
                     PULSE_INGEST_HUBSPOT_CLIENT_SECRET=SECRET,
                     PULSE_INGEST_HUBSPOT_API_TOKEN="bench",
                     PULSE_INGEST_HUBSPOT_API_URL=f"http://127.0.0.1:{api.server_address[1]}")
    proc = spawn([sys.executable, "-m", "stream_app", "ingest"], env=env,
                 log_path=str(logs / "gateway.log"))
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        _wait_for_roster(f"http://127.0.0.1:{port}")
        figures = asyncio.run(_drive(f"http://127.0.0.1:{port}", seconds, concurrency,
                                     proc.pid))
    finally:
        stop_process(proc)
        api.shutdown()
    return {"measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "seconds_per_phase": seconds, "concurrency": concurrency, "routes": figures}
