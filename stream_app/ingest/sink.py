"""Where the gateway's events go: the CRM topics, acknowledged by every in-sync replica.

:class:`KafkaSink` answers only when the broker acknowledged every record of a call
(``acks=all``); anything else (no connection yet, a full buffer, a broker that does
not answer in time) raises :class:`SinkUnavailable`, which the gateway turns into 503
with ``Retry-After``. The producer is not idempotent (Tansu refuses idempotent
producers): a record acknowledged after its request timed out is delivered once more
when the sender retries, and the worker drops the repeat by its event id.
"""

from __future__ import annotations

__all__ = ["EventSink", "KafkaSink", "Record", "SinkUnavailable"]

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream_app.adapters.kafka import client_kwargs
from stream_app.config import Settings

log = logging.getLogger(__name__)

#: (topic, key, value) of one record.
Record = tuple[str, bytes, bytes]


class SinkUnavailable(Exception):
    """The records of a call may not all be on the broker; the sender should retry."""


class EventSink(Protocol):
    """What the gateway needs from Kafka."""

    @property
    def connected(self) -> bool:
        """Whether the last attempt to reach the broker succeeded."""

    async def send(self, records: Sequence[Record]) -> None:
        """Return once every record is acknowledged; else raise :class:`SinkUnavailable`."""

    async def close(self) -> None:
        """Flush what is in flight and disconnect."""


class KafkaSink:
    """An ``acks=all`` aiokafka producer started on first use and restarted after a
    failed start, at most once per ``retry_seconds``."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._timeout = settings.ingest_produce_timeout_seconds
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._next_try = 0.0
        self.connected = False

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is not None:
                return self._producer
            if time.monotonic() < self._next_try:
                raise SinkUnavailable("Kafka was unreachable a moment ago; retrying shortly")
            timeout_ms = round(self._timeout * 1000)
            producer = AIOKafkaProducer(
                acks="all", linger_ms=2, request_timeout_ms=timeout_ms,
                max_batch_size=256 * 1024, **client_kwargs(self._settings))
            try:
                await asyncio.wait_for(producer.start(), self._timeout)
            except (KafkaError, OSError, TimeoutError) as exc:
                self._next_try = time.monotonic() + 1.0
                self.connected = False
                await _quietly_stop(producer)
                log.warning("Kafka unreachable at %s: %s", self._settings.kafka_bootstrap,
                            exc or type(exc).__name__)
                raise SinkUnavailable(f"Kafka unreachable: {exc or type(exc).__name__}") \
                    from None
            self._producer = producer
            self.connected = True
            return producer

    async def send(self, records: Sequence[Record]) -> None:
        """Send every record and wait for all the acknowledgements, within
        ``PULSE_INGEST_PRODUCE_TIMEOUT_SECONDS``."""
        producer = await self._started()

        async def deliver() -> None:
            pending = [await producer.send(topic, value=value, key=key)
                       for topic, key, value in records]
            await asyncio.gather(*pending)

        try:
            await asyncio.wait_for(deliver(), self._timeout)
        except (KafkaError, TimeoutError) as exc:
            self.connected = False
            raise SinkUnavailable(
                f"the broker did not acknowledge within {self._timeout:g} s "
                f"({type(exc).__name__})") from None
        self.connected = True

    async def close(self) -> None:
        """Stop the producer (it flushes what it holds)."""
        if self._producer is not None:
            await _quietly_stop(self._producer)
            self._producer = None


async def _quietly_stop(producer: Any) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 10)
    except Exception as exc:
        log.debug("producer stop: %s", exc)
