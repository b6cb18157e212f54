"""``stream-app ingest``: an HTTP gateway that puts CRM CloudEvents on the CRM topics.

``POST /events`` takes the CloudEvents HTTP binding (structured, batched or binary
mode), validates every event by the worker's own contract
(:func:`~stream_app.events.codec.validate_event`), and answers 2xx only after the
broker acknowledged every event of the request (``acks=all``). A batch is all or
nothing: one invalid event refuses the whole request (400, each bad event with its
index, field and reason) and nothing of it is produced. A broker that does not
acknowledge in time gives 503 with ``Retry-After``; some events of that request may
still land, and the sender's retry (same event ids) is dropped by the worker as a
repeat, so each event counts once.

``POST /webhooks/<vendor>`` (one per mapping file configured, see :data:`VENDORS`)
turns a CRM's webhook into CloudEvents of the contract and produces them the same way.

Every route but ``/healthz`` and ``/metrics`` needs ``Authorization: Bearer <token>``
or HTTP Basic ``<token name>:<token>`` (``PULSE_INGEST_TOKENS``). Limits: body size
(413), events per request (413), JSON depth (400), requests per token (429 with
``Retry-After``), time to send the body (408).
"""

from __future__ import annotations

__all__ = ["IngestGateway", "run_gateway"]

import asyncio
import base64
import binascii
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from stream_app.config import Settings, contract_rules
from stream_app.events.codec import Rejection, encode_event, entity_id, validate_event
from stream_app.events.models import CrmEvent
from stream_app.events.routing import route_of
from stream_app.ingest.access import RateLimiter, TokenBook, parse_tokens
from stream_app.ingest.http_binding import BindingError, events_of_request, parse_json
from stream_app.ingest.roster import Roster, RosterFollower
from stream_app.ingest.sink import EventSink, KafkaSink, Record, SinkUnavailable
from stream_app.ingest.vendors.hubspot import (
    HubSpotApi,
    ReaderUnavailable,
    hubspot_events,
    verify_signature,
)
from stream_app.ingest.vendors.mapping import (
    Translation,
    TranslationError,
    VendorMapping,
    load_vendor_mapping,
)
from stream_app.ingest.vendors.pipedrive import pipedrive_events
from stream_app.ingest.vendors.salesforce import salesforce_events

log = logging.getLogger("stream_app.ingest")

#: Routes whose answers say nothing about the CRM data: no token needed.
OPEN_ROUTES = frozenset({"/healthz", "/metrics"})
#: Route label of requests to a path the gateway does not serve (bounded label set).
UNKNOWN_ROUTE = "(unknown)"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Translator = Callable[[Any, VendorMapping], Awaitable[Translation]]
#: Vendor webhook routes: name -> the settings field of its mapping file.
VENDORS: dict[str, str] = {
    "pipedrive": "ingest_pipedrive_mapping",
    "salesforce": "ingest_salesforce_mapping",
    "hubspot": "ingest_hubspot_mapping",
}
#: Routes a CRM signs instead of sending a token.
HUBSPOT_ROUTE = "/webhooks/hubspot"


def vendor_mappings(settings: Settings) -> dict[str, VendorMapping]:
    """The mapping file of each vendor route that has one configured (ValueError: a
    file that cannot be used, naming it and the key at fault)."""
    found = {}
    for vendor, setting in VENDORS.items():
        path = getattr(settings, setting)
        if path:
            found[vendor] = load_vendor_mapping(Path(path), vendor)
    if "hubspot" in found and not (settings.ingest_hubspot_client_secret
                                   and settings.ingest_hubspot_api_token):
        raise ValueError("PULSE_INGEST_HUBSPOT_MAPPING needs PULSE_INGEST_HUBSPOT_CLIENT_SECRET "
                         "(to check signatures) and PULSE_INGEST_HUBSPOT_API_TOKEN (to read "
                         "what a webhook does not say)")
    return found


def _error(status: int, reason: str, detail: str, **extra: Any) -> web.Response:
    body = {"error": reason, "detail": detail, **extra}
    return web.json_response(body, status=status)


class _Metrics:
    """The gateway's own series (a registry of its own: never the worker's)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("pulse_ingest_requests", "HTTP requests by route and status.",
                                ["route", "status"], registry=self.registry)
        self.produced = Counter("pulse_ingest_events_produced",
                                "Events acknowledged by the broker, by type.", ["type"],
                                registry=self.registry)
        self.rejected = Counter("pulse_ingest_events_rejected",
                                "Events or requests refused, by reason.", ["reason"],
                                registry=self.registry)
        self.latency = Histogram("pulse_ingest_request_duration_seconds",
                                 "Time from the request's arrival to its answer.", ["route"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                          10, 30), registry=self.registry)
        self.kafka_up = Gauge("pulse_ingest_kafka_up",
                              "1 if the broker acknowledged the last send.",
                              registry=self.registry)
        self.roster_owners = Gauge("pulse_ingest_roster_owners",
                                   "Owners the gateway's roster (rep.updated) knows.",
                                   registry=self.registry)
        self.ignored = Counter("pulse_ingest_changes_ignored",
                               "CRM changes in webhooks that are not modelled (currency "
                               "changes, merges, gaps), by vendor and reason.",
                               ["vendor", "reason"], registry=self.registry)


class IngestGateway:
    """The aiohttp application of ``stream-app ingest`` over an :class:`EventSink`."""

    def __init__(self, settings: Settings, sink: EventSink,
                 clock: Callable[[], float] = time.monotonic):
        tokens = settings.ingest_tokens
        self._settings = settings
        self._rules = contract_rules(settings)
        self._tokens = TokenBook(parse_tokens(tokens.get_secret_value()) if tokens else {})
        self._limiter = RateLimiter(settings.ingest_rate_per_second, settings.ingest_rate_burst,
                                    clock)
        self._sink = sink
        self.roster = Roster()
        #: Set by the server once the roster topic is read; None: no roster to wait for.
        self.roster_loaded: asyncio.Event | None = None
        self._mappings = {vendor: replace(mapping, roster=self.roster.team)
                          for vendor, mapping in vendor_mappings(settings).items()}
        self._hubspot: HubSpotApi | None = None
        self._translators: dict[str, Translator] = {
            "pipedrive": _plain(pipedrive_events), "salesforce": _plain(salesforce_events)}
        if "hubspot" in self._mappings and settings.ingest_hubspot_api_token:
            self._hubspot = HubSpotApi(settings.ingest_hubspot_api_url,
                                       settings.ingest_hubspot_api_token.get_secret_value())
            self._translators["hubspot"] = partial(hubspot_events, reader=self._hubspot)
        self.metrics = _Metrics()
        self.metrics.roster_owners.set_function(lambda: len(self.roster))
        self.app = web.Application(client_max_size=settings.ingest_max_body_bytes,
                                   middlewares=[self._observe, self._authorize])
        self.app.router.add_post("/events", self._events)
        for vendor in self._mappings:
            self.app.router.add_post(f"/webhooks/{vendor}", self._webhook)
        self.app.router.add_get("/healthz", self._health)
        self.app.router.add_get("/metrics", self._metrics)

    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        info = request.match_info.route.resource
        route = info.canonical if info is not None else UNKNOWN_ROUTE
        try:
            response = await handler(request)
        except web.HTTPRequestEntityTooLarge:
            self.metrics.rejected.labels("body_too_large").inc()
            response = _error(413, "body_too_large", "the body is over "
                              f"{self._settings.ingest_max_body_bytes} bytes "
                              "(PULSE_INGEST_MAX_BODY_BYTES)")
        except web.HTTPException as exc:
            response = _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        self.metrics.requests.labels(route, str(response.status)).inc()
        self.metrics.latency.labels(route).observe(time.perf_counter() - started)
        return response

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_ROUTES or request.match_info.route.resource is None:
            return await handler(request)
        if request.path == HUBSPOT_ROUTE:
            return await self._signed(request, handler)
        caller = self._caller(request.headers.get("Authorization", ""))
        if caller is None:
            self.metrics.rejected.labels("unauthorized").inc()
            response = _error(401, "unauthorized", "send Authorization: Bearer <token> (or "
                              "HTTP Basic with the token's name and the token, as CRM webhook "
                              "settings do) with a token of PULSE_INGEST_TOKENS")
            response.headers["WWW-Authenticate"] = 'Bearer realm="pipeline-pulse"'
            return response
        return self._rate_limited(caller) or await handler(request)

    def _rate_limited(self, caller: str) -> web.Response | None:
        """429 with ``Retry-After`` when ``caller`` is over its rate, else None."""
        wait = self._limiter.admit(caller)
        if not wait:
            return None
        self.metrics.rejected.labels("rate_limited").inc()
        response = _error(429, "rate_limited", f"over {self._settings.ingest_rate_per_second:g}"
                          f" requests a second for {caller} (PULSE_INGEST_RATE_PER_SECOND)")
        response.headers["Retry-After"] = RateLimiter.retry_after(wait)
        return response

    async def _signed(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """HubSpot signs its requests (v3) instead of sending a token."""
        secret = self._settings.ingest_hubspot_client_secret
        assert secret is not None  # vendor_mappings requires it with the mapping
        body = await self._body(request)
        public = self._settings.ingest_public_url
        uri = public.rstrip("/") + request.path_qs if public else str(request.url)
        headers = {name.lower(): value for name, value in request.headers.items()}
        problem = verify_signature(secret.get_secret_value(), request.method, uri, body,
                                   headers, int(time.time() * 1000))
        if problem is not None:
            self.metrics.rejected.labels("bad_signature").inc()
            return _error(401, "bad_signature", problem)
        return self._rate_limited("hubspot") or await handler(request)

    def _caller(self, authorization: str) -> str | None:
        """The token name of a Bearer token, or of HTTP Basic ``name:token``."""
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return self._tokens.holder(presented.strip())
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(presented.strip(), validate=True) \
                .decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        holder = self._tokens.holder(password)
        return holder if holder is not None and holder == user else None

    async def _body(self, request: web.Request) -> bytes:
        try:
            return await asyncio.wait_for(request.read(),
                                          self._settings.ingest_read_timeout_seconds)
        except TimeoutError:
            raise web.HTTPRequestTimeout() from None

    async def _events(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        try:
            raws = events_of_request(request.headers, body,
                                     max_events=self._settings.ingest_max_events_per_request,
                                     max_depth=self._settings.ingest_max_json_depth)
        except BindingError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            return _error(exc.status, exc.reason, exc.detail)
        records: list[Record] = []
        types: list[str] = []
        errors: list[dict[str, Any]] = []
        for index, raw in enumerate(raws):
            event = validate_event(raw, self._rules)
            if isinstance(event, Rejection):
                errors.append({"index": index, "id": event.event_id, "field": event.field,
                               "reason": event.reason, "detail": event.detail})
                self.metrics.rejected.labels(event.reason).inc()
                continue
            records.append(self._record(event))
            types.append(event.type)
        if errors:
            return _error(400, "invalid_events", f"{len(errors)} of {len(raws)} events break "
                          "the contract; nothing of this request was sent", errors=errors)
        return await self._produce(records, types)

    async def _webhook(self, request: web.Request) -> web.Response:
        """A vendor's webhook: its changes as CloudEvents of the contract, produced like a
        batch of ``/events`` (all or nothing; 2xx only once Kafka has them)."""
        vendor = request.path.rsplit("/", 1)[1]
        if self.roster_loaded is not None and not self.roster_loaded.is_set():
            self.metrics.rejected.labels("roster_loading").inc()
            response = _error(503, "roster_loading", "the gateway is still reading the "
                              "roster (owners' teams); retry shortly")
            response.headers["Retry-After"] = str(self._settings.ingest_retry_after_seconds)
            return response
        body = await self._body(request)
        try:
            payload = parse_json(body, self._settings.ingest_max_json_depth)
            translation = await self._translators[vendor](payload, self._mappings[vendor])
        except ReaderUnavailable as exc:
            self.metrics.rejected.labels("crm_api_unavailable").inc()
            response = _error(503, "crm_api_unavailable", f"{exc}; retry later")
            response.headers["Retry-After"] = str(self._settings.ingest_retry_after_seconds)
            return response
        except BindingError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            return _error(exc.status, exc.reason, exc.detail)
        except TranslationError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            log.warning("%s webhook refused: %s", vendor, exc)
            return _error(exc.status, exc.reason, exc.detail, field=exc.field)
        for reason, detail in translation.ignored:
            self.metrics.ignored.labels(vendor, reason).inc()
            log.warning("%s webhook: %s", vendor, detail)
        records: list[Record] = []
        types: list[str] = []
        for index, raw in enumerate(translation.events):
            event = validate_event(raw, self._rules)
            if isinstance(event, Rejection):
                self.metrics.rejected.labels(event.reason).inc()
                return _error(422, event.reason, f"{vendor} change {index} breaks the "
                              f"contract: {event.detail}", field=event.field)
            records.append(self._record(event))
            types.append(event.type)
        if not records:
            return web.json_response({"accepted": 0, "ignored": len(translation.ignored)})
        return await self._produce(records, types)

    def _record(self, event: CrmEvent) -> Record:
        """The Kafka record of a valid event: its family's topic, keyed by its entity."""
        route = route_of(event.type)
        assert route is not None  # the contract admits routed types only
        return (getattr(self._settings, route.topic_setting), entity_id(event).encode(),
                encode_event(event))

    async def _produce(self, records: list[Record], types: list[str]) -> web.Response:
        try:
            await self._sink.send(records)
        except SinkUnavailable as exc:
            self.metrics.kafka_up.set(0)
            self.metrics.rejected.labels("kafka_unavailable").inc()
            response = _error(503, "kafka_unavailable", f"{exc}; retry the whole request "
                              "(events already on the broker are dropped as repeats)")
            response.headers["Retry-After"] = str(self._settings.ingest_retry_after_seconds)
            return response
        self.metrics.kafka_up.set(1)
        for event_type in types:
            self.metrics.produced.labels(event_type).inc()
        return web.json_response({"accepted": len(records)}, status=202)

    async def close(self) -> None:
        """Release the CRM API clients."""
        if self._hubspot is not None:
            await self._hubspot.close()

    async def _health(self, request: web.Request) -> web.Response:
        loading = self.roster_loaded is not None and not self.roster_loaded.is_set()
        return web.json_response({"status": "ok", "kafka": self._sink.connected,
                                  "roster": "loading" if loading else "loaded",
                                  "roster_owners": len(self.roster)})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


def _plain(translate: Callable[[Any, VendorMapping], Translation]) -> Translator:
    """A translator that reads nothing but the payload, as the gateway awaits them."""
    async def translated(payload: Any, mapping: VendorMapping) -> Translation:
        return translate(payload, mapping)
    return translated


async def _serve(settings: Settings, ready: Callable[[str], None]) -> None:
    sink = KafkaSink(settings)
    gateway = IngestGateway(settings, sink)
    follower = RosterFollower(settings, gateway.roster)
    gateway.roster_loaded = follower.loaded
    follower.start()
    runner = web.AppRunner(gateway.app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, settings.ingest_host, settings.ingest_port)
    await site.start()
    ready(f"http://{settings.ingest_host}:{settings.ingest_port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await follower.stop()
        await gateway.close()
        await sink.close()


def run_gateway(settings: Settings) -> int:
    """Serve until SIGINT or SIGTERM (requests in flight are answered first)."""
    def ready(url: str) -> None:
        log.warning("ingest gateway on %s (POST /events; /healthz, /metrics), producing to "
                    "%s", url, settings.kafka_bootstrap)
    asyncio.run(_serve(settings, ready))
    return 0
