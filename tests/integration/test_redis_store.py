"""The dedup store's verdicts against a real redis-server (no Kafka needed)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stream_app.adapters.embedded import EmbeddedServers, start_embedded_redis
from stream_app.adapters.redis_store import RedisStore

TTL_SECONDS = 3600


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with EmbeddedServers() as running:
        yield start_embedded_redis(running, str(tmp_path / "redis.log"))


async def _verdicts(url: str, *batches: list[tuple[str, str]]) -> list[list[str]]:
    store = RedisStore(url, namespace="t", ttl_seconds=TTL_SECONDS)
    try:
        return [list(await store.check_many(batch)) for batch in batches]
    finally:
        await store.close()


def test_new_replay_and_duplicate_in_order_within_and_across_batches(redis_url: str) -> None:
    first = [("e1", "deals/0/1"), ("e2", "deals/0/2"), ("e1", "deals/1/7"), ("e2", "deals/0/2"),
             ("e3", "deals/0/3")]
    second = [("e3", "deals/0/3"), ("e1", "deals/0/1"), ("e1", "deals/2/9"), ("e4", "deals/0/4")]
    assert asyncio.run(_verdicts(redis_url, first, second, [])) == [
        ["new", "new", "duplicate", "replay", "new"],
        ["replay", "replay", "duplicate", "new"],
        [],
    ]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.get("t:seen:e1") == "deals/0/1"
    assert 0 < client.ttl("t:seen:e4") <= TTL_SECONDS
    assert sorted(client.keys("t:seen:*")) == ["t:seen:e1", "t:seen:e2", "t:seen:e3", "t:seen:e4"]


def test_a_batch_of_many_events_is_classified_one_by_one(redis_url: str) -> None:
    batch = [(f"e{i % 700}", f"deals/0/{i}") for i in range(2000)]
    [verdicts] = asyncio.run(_verdicts(redis_url, batch))
    assert verdicts == ["new"] * 700 + ["duplicate"] * 1300


def test_an_unreachable_server_answers_unavailable_for_each_event() -> None:
    with EmbeddedServers() as running:
        url = start_embedded_redis(running)
    assert asyncio.run(_verdicts(url, [("e1", "deals/0/1"), ("e2", "deals/0/2")])) == [
        ["unavailable", "unavailable"]]
