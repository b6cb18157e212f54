"""What a worker does as it starts: the interpreter's thread switching set for the
event loop, and waiting for Kafka and Redis (capped backoff, one line per attempt, a
deadline)."""

from __future__ import annotations

__all__ = ["EXIT_DEPENDENCY_UNREACHABLE", "SWITCH_INTERVAL_SECONDS", "favour_the_event_loop",
           "wait_for_dependencies"]

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from stream_app.adapters.kafka import ensure_topics
from stream_app.config import Settings

#: Exit code of a worker whose Kafka or Redis never became reachable.
EXIT_DEPENDENCY_UNREACHABLE = 3

#: How long a thread waiting for the GIL lets the holder run before it asks for it
#: (CPython's default: 5 ms). The worker's event loop folds and waits on sockets while
#: the scrape's thread computes without pause: at 5 ms, each time the loop gave the GIL up
#: for a socket it waited up to 5 ms for it again, and under scrapes every 250 ms the
#: folds fell seconds behind (docs/performance.md, 2026-12-02 evening).
SWITCH_INTERVAL_SECONDS = 0.001

FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 10.0
#: How long a starting worker waits for Redis before it starts without it.
REDIS_START_GRACE_SECONDS = 10.0


def favour_the_event_loop() -> None:
    """Set the interpreter's switch interval to :data:`SWITCH_INTERVAL_SECONDS` (the
    worker's process only: it changes every thread of the interpreter)."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


def _reason(exc: BaseException) -> str:
    if "Unable to bootstrap" in str(exc):
        return "no broker answered (connection refused or timed out)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def redis_location(url: str) -> str:
    """host:port/db of a Redis URL, without its credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or ''}"


async def _ping_redis(url: str) -> None:
    client = aioredis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def wait_for_dependencies(settings: Settings, say: Callable[[str], None]) -> str | None:
    """Create the topics on Kafka, retrying with capped exponential backoff until
    ``startup_timeout_seconds`` have passed (then a one-line reason is returned: the
    worker cannot run without Kafka), and ping Redis for at most
    :data:`REDIS_START_GRACE_SECONDS`: a worker runs without Redis (deduplication by id
    then rests on the state rules, as during an outage, and it reconnects), so a Redis
    that is not up yet delays the start, it does not stop it; with
    ``require_redis_at_start`` Redis is waited for as Kafka is. ``say`` gets one line per
    failed attempt."""
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)  # its per-attempt errors repeat ours
    try:
        where = settings.kafka_bootstrap or ""
        failed = await _retry("Kafka", where, lambda: ensure_topics(settings),
                              settings.startup_timeout_seconds, say)
        if failed is not None:
            return (f"Kafka at {where} not reachable within PULSE_STARTUP_TIMEOUT_SECONDS="
                    f"{settings.startup_timeout_seconds:g} ({failed})")
    finally:
        kafka_log.setLevel(level)
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else ""
    where = redis_location(redis_url)
    required = settings.require_redis_at_start
    grace = (settings.startup_timeout_seconds if required
             else min(REDIS_START_GRACE_SECONDS, settings.startup_timeout_seconds))
    failed = await _retry("Redis", where, lambda: _ping_redis(redis_url), grace, say)
    if failed is not None and required:
        return (f"Redis at {where} not reachable within PULSE_STARTUP_TIMEOUT_SECONDS="
                f"{settings.startup_timeout_seconds:g} ({failed}; "
                "PULSE_REQUIRE_REDIS_AT_START=true)")
    if failed is not None:
        say(f"Redis at {where} not reachable after {grace:g}s ({failed}); starting without "
            "it: duplicates are then caught by the state rules only, and the worker "
            "reconnects (pulse_dedup_store_up 0 until it does)")
    return None


async def _retry(name: str, where: str, check: Callable[[], Awaitable[None]],
                 budget_seconds: float, say: Callable[[str], None]) -> str | None:
    """Run ``check`` until it succeeds (None) or ``budget_seconds`` pass (the attempts
    and the last reason)."""
    deadline = time.monotonic() + budget_seconds
    delay, attempt = FIRST_DELAY_SECONDS, 1
    while True:
        try:
            await asyncio.wait_for(check(), timeout=max(1.0, deadline - time.monotonic()))
            return None
        except Exception as exc:  # every failure to reach it is retried the same way
            reason = _reason(exc)
            if deadline - time.monotonic() <= delay:
                return f"{attempt} attempts; last: {reason}"
            say(f"{name} at {where} not reachable (attempt {attempt}: {reason}); "
                f"retrying in {delay:g}s")
            await asyncio.sleep(delay)
            delay, attempt = min(delay * 2, MAX_DELAY_SECONDS), attempt + 1
