"""Redis: event-id deduplication and the shared event clock.

Deduplication stores, for each CloudEvents id, where it was first seen
(``topic/partition/offset``) with a TTL. The same message read again after a
crash is a *replay* and is processed (the state guards make that idempotent); a
different message with a seen id is a *duplicate* and is skipped. When Redis is
unreachable the check answers ``unavailable`` and the worker goes on: per-entity
state is order- and duplicate-insensitive, so counts stay exact; the outage is
reported in ``pulse_dedup_store_up`` and logged once per outage.
"""

from __future__ import annotations

__all__ = ["DedupVerdict", "RedisStore"]

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

DedupVerdict = Literal["new", "replay", "duplicate", "unavailable"]
T = TypeVar("T")

#: KEYS: the events' seen-keys; ARGV: the TTL, then each event's position, in order.
_CHECK = """
local out = {}
for i, key in ipairs(KEYS) do
  local position = ARGV[i + 1]
  local seen = redis.call('GET', key)
  if not seen then
    redis.call('SET', key, position, 'EX', ARGV[1])
    out[i] = 'new'
  elseif seen == position then
    out[i] = 'replay'
  else
    out[i] = 'duplicate'
  end
end
return out
"""

_ADMIT = """
local out = {}
for i, value in ipairs(ARGV) do
  if i > 1 then
    if redis.call('SISMEMBER', KEYS[1], value) == 1 then
      out[#out + 1] = 1
    elseif redis.call('SCARD', KEYS[1]) < tonumber(ARGV[1]) then
      redis.call('SADD', KEYS[1], value)
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
end
return out
"""

_MAX = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
local candidate = tonumber(ARGV[1])
if candidate > current then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return tostring(current)
"""


class RedisStore:
    """Async Redis access with a short circuit breaker while the server is down."""

    def __init__(self, url: str, *, namespace: str, ttl_seconds: int, retry_seconds: float = 2.0):
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, decode_responses=True
        )
        self._namespace = namespace
        self._ttl = ttl_seconds
        self._retry_seconds = retry_seconds
        self._down_since: float | None = None
        self._next_try = 0.0
        self._check = self._client.register_script(_CHECK)
        self._max = self._client.register_script(_MAX)
        self._admit = self._client.register_script(_ADMIT)

    @property
    def up(self) -> bool:
        """False while the last call failed."""
        return self._down_since is None

    async def probe(self) -> bool:
        """Ping Redis (unless the breaker is open); whether it answered. A worker calls it
        periodically, so ``up`` follows Redis also when no event needs it."""
        return await self._guarded(self._client.ping) is not None

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "Redis unavailable (%s): deduplication falls back to the idempotent "
                "state; retrying every %.0fs", exc, self._retry_seconds,
            )
        self._next_try = now + self._retry_seconds

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.warning("Redis is back after %.1fs", time.monotonic() - self._down_since)
            self._down_since = None

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """Run ``call`` unless the breaker is open; None while Redis is unreachable."""
        if self._down_since is not None and time.monotonic() < self._next_try:
            return None
        try:
            result = await call()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        self._recovered()
        return result

    async def check_many(self, items: list[tuple[str, str]]) -> list[DedupVerdict]:
        """Classify many (event id, position) pairs in one script call, in order.

        One call for the batch, not one per event: a pipeline of per-event calls cost
        redis-py a command to pack and a reply to parse each (9% of a worker's CPU)."""
        if not items:
            return []
        keys = [f"{self._namespace}:seen:{event_id}" for event_id, _ in items]
        args: list[int | str] = [self._ttl, *(position for _, position in items)]
        verdicts = await self._guarded(lambda: self._check(keys=keys, args=args))
        return ["unavailable"] * len(items) if verdicts is None else list(verdicts)

    async def admit_labels(self, label: str, values: list[str], cap: int) -> dict[str, bool] | None:
        """Admit label values first come, first served, at most ``cap`` per label, shared by
        every worker; returns whether each value has its own series (None: Redis is down)."""
        if not values:
            return {}
        answers = await self._guarded(lambda: self._admit(
            keys=[f"{self._namespace}:labels:{label}"], args=[cap, *values]))
        if answers is None:
            return None
        return {value: bool(ok) for value, ok in zip(values, answers, strict=True)}

    async def merge_clock(self, latest_event_ms: int) -> int | None:
        """Raise the shared latest event time to ``latest_event_ms``; returns the shared value."""
        value = await self._guarded(lambda: self._max(keys=[f"{self._namespace}:clock"],
                                                      args=[latest_event_ms]))
        if value is None:
            return None
        shared = int(value)
        return shared if shared >= 0 else None

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
