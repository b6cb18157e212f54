"""Send CloudEvents (JSON lines) to the CRM topics, keyed by entity id, with a progress bar."""

from __future__ import annotations

__all__ = ["ReplayResult", "iter_jsonl", "produce_events", "route"]

import asyncio
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from stream_app.adapters.kafka import client_kwargs
from stream_app.config import Settings
from stream_app.events.routing import ROUTES, route_of


@dataclass
class ReplayResult:
    """What a replay sent and what it could not route."""

    sent: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    unroutable: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0


def iter_jsonl(path: Path) -> Iterator[bytes]:
    """Non-empty lines of a JSON-lines file, as bytes."""
    with path.open("rb") as handle:
        for line in handle:
            line = line.strip()
            if line:
                yield line


def route(settings: Settings, raw: dict[str, Any]) -> tuple[str, bytes | None]:
    """Topic and key of an event: deal.* by deal_id, customer.* by account_id, quota.* by
    owner_id, lead.* by lead_id, activity.* by owner_id."""
    kind = str(raw.get("type", ""))
    data = raw.get("data")
    if not isinstance(data, dict):
        data = {}
    found = route_of(kind)
    if found is None:
        families = ", ".join(f"{family}.*" for family in ROUTES)
        raise ValueError(f"type {kind!r}: no topic for it (expected one of {families})")
    key = data.get(found.key_field)
    return getattr(settings, found.topic_setting), str(key).encode() if key is not None else None


def _encode(settings: Settings, item: dict[str, Any] | bytes) -> tuple[str, bytes | None, bytes]:
    if isinstance(item, bytes):
        raw = json.loads(item)
        if not isinstance(raw, dict):
            raise ValueError("line is not a JSON object")
        topic, key = route(settings, raw)
        return topic, key, item
    topic, key = route(settings, item)
    return topic, key, json.dumps(item, separators=(",", ":")).encode()


async def produce_events(
    settings: Settings,
    items: Iterable[dict[str, Any] | bytes],
    *,
    total: int | None = None,
    show_progress: bool = True,
    rate_per_s: float | None = None,
) -> ReplayResult:
    """Produce every item; lines that cannot be routed are reported, not sent."""
    result = ReplayResult()
    producer = AIOKafkaProducer(linger_ms=10, max_batch_size=512 * 1024, acks="all",
                                **client_kwargs(settings))
    pending: list[asyncio.Future[Any]] = []
    progress = Progress(TextColumn("[bold]replay"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]:>8} ev/s"), TimeRemainingColumn(),
                        disable=not show_progress, transient=False)
    try:
        await producer.start()  # inside: a start that fails or is cancelled still closes
        started = time.monotonic()
        with progress:
            task = progress.add_task("replay", total=total, rate="-")
            for line_no, item in enumerate(items, start=1):
                try:
                    topic, key, value = _encode(settings, item)
                except ValueError as exc:
                    result.unroutable.append((line_no, str(exc)))
                    continue
                pending.append(await producer.send(topic, value=value, key=key))
                result.sent += 1
                result.by_topic[topic] = result.by_topic.get(topic, 0) + 1
                if rate_per_s:
                    await asyncio.sleep(max(0.0, result.sent / rate_per_s
                                            - (time.monotonic() - started)))
                if len(pending) >= 5000:
                    await asyncio.gather(*pending)
                    pending.clear()
                    elapsed = max(time.monotonic() - started, 1e-9)
                    rate = f"{result.sent / elapsed:,.0f}"
                    progress.update(task, completed=result.sent, rate=rate)
            await asyncio.gather(*pending)
            elapsed = max(time.monotonic() - started, 1e-9)
            progress.update(task, completed=result.sent, rate=f"{result.sent / elapsed:,.0f}")
    finally:
        await producer.stop()
    result.seconds = time.monotonic() - started
    return result
