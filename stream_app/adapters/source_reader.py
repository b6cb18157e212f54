"""Reads source messages again by offset, for a batch that skipped some.

Every fold is guarded by the offset of the last event applied to its entity, so a
partition's messages must be folded in offset order: an entity that took offset
``n + 1`` before offset ``n`` skips ``n`` as already applied. Faust does not promise
that order across a rebalance (messages fetched before its seek to the committed
offsets can still be delivered after it, ahead of the ones the seek reads again), and
its commit then covers the skipped message, since it commits up to the first gap in
what was acked, not in what was read. The pipeline therefore checks each batch
against the state's position marks and reads what lies in between from the broker
with this reader, a plain consumer outside the group.
"""

from __future__ import annotations

__all__ = ["MissingMessages", "SourceEvent", "SourceMessage", "SourceReadError",
           "SourceReader"]

import time
from dataclasses import dataclass
from typing import Protocol

from aiokafka import TopicPartition

from stream_app.adapters.kafka import OutsideConsumer
from stream_app.config import Settings

#: How long a read may go without reaching the offsets it was asked for.
READ_TIMEOUT_SECONDS = 30.0
_FETCH_WAIT_MS = 500


class SourceReadError(RuntimeError):
    """Messages a batch skipped could not be read again: the batch must not go on."""


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """What the pipeline reads of a Faust message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """A message read again, shaped as the Faust events of a batch (``.message``)."""

    message: SourceMessage


class MissingMessages(Protocol):
    """Where the pipeline reads the messages a batch skipped."""

    async def read(self, topic: str, partition: int, first: int, last: int
                   ) -> list[SourceEvent]:
        """The messages of ``topic[partition]`` from offset ``first`` to ``last``, in order
        (fewer where the log holds none: retention, transaction markers)."""
        ...


class SourceReader:
    """:class:`MissingMessages` from the broker, through one consumer started on first use."""

    def __init__(self, settings: Settings, timeout_seconds: float = READ_TIMEOUT_SECONDS):
        self._timeout = timeout_seconds
        self._consumer = OutsideConsumer(settings, auto_offset_reset="earliest")

    async def read(self, topic: str, partition: int, first: int, last: int
                   ) -> list[SourceEvent]:
        consumer = await self._consumer.started()
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, first)
        found: list[SourceEvent] = []
        deadline = time.monotonic() + self._timeout
        while await consumer.position(tp) <= last:
            if time.monotonic() > deadline:
                raise SourceReadError(
                    f"could not read {topic}[{partition}] offsets {first}-{last} again "
                    f"within {self._timeout:g}s (got {len(found)} messages)")
            fetched = await consumer.getmany(tp, timeout_ms=_FETCH_WAIT_MS)
            found.extend(
                SourceEvent(SourceMessage(topic, partition, record.offset, record.key,
                                          record.value, list(record.headers or ()) or None))
                for record in fetched.get(tp, ()) if first <= record.offset <= last)
        return found

    async def close(self) -> None:
        """Stop the consumer (the worker is stopping)."""
        await self._consumer.close()
