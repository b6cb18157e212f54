"""Waiting for Kafka and Redis at start: capped backoff, one line per attempt, a deadline."""

from __future__ import annotations

__all__ = ["EXIT_DEPENDENCY_UNREACHABLE", "wait_for_dependencies"]

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from stream_app.adapters.kafka import ensure_topics
from stream_app.config import Settings

#: Exit code of a worker whose Kafka or Redis never became reachable.
EXIT_DEPENDENCY_UNREACHABLE = 3

FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 10.0


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
    """Create the topics on Kafka and ping Redis, retrying each with capped exponential
    backoff until ``startup_timeout_seconds`` have passed; returns None when both
    answered, else a one-line reason. ``say`` gets one line per failed attempt."""
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)  # its per-attempt errors repeat ours
    try:
        return await _wait(settings, say)
    finally:
        kafka_log.setLevel(level)


async def _wait(settings: Settings, say: Callable[[str], None]) -> str | None:
    deadline = time.monotonic() + settings.startup_timeout_seconds
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else ""
    checks: list[tuple[str, str, Callable[[], Awaitable[None]]]] = [
        ("Kafka", settings.kafka_bootstrap or "", lambda: ensure_topics(settings)),
        ("Redis", redis_location(redis_url), lambda: _ping_redis(redis_url)),
    ]
    for name, where, check in checks:
        delay, attempt = FIRST_DELAY_SECONDS, 1
        while True:
            try:
                await asyncio.wait_for(check(), timeout=max(1.0, deadline - time.monotonic()))
                break
            except Exception as exc:  # every failure to reach it is retried the same way
                reason = _reason(exc)
                left = deadline - time.monotonic()
                if left <= delay:
                    return (f"{name} at {where} not reachable within "
                            f"PULSE_STARTUP_TIMEOUT_SECONDS={settings.startup_timeout_seconds:g} "
                            f"({attempt} attempts; last: {reason})")
                say(f"{name} at {where} not reachable (attempt {attempt}: {reason}); "
                    f"retrying in {delay:g}s")
                await asyncio.sleep(delay)
                delay, attempt = min(delay * 2, MAX_DELAY_SECONDS), attempt + 1
    return None
