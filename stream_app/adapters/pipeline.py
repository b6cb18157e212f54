"""One generic batch pipeline that runs every source spec.

For a batch of one agent (one source's topics): complete it with any message its
partitions skipped since the state's position marks (read again from the broker, so
every partition folds in offset order), decode the CRM events (rejects to the
dead-letter topic), deduplicate them in one Redis round trip, admit their label
values, fold each message into its entity and the aggregates derived from it, then
flush the outbox (re-keyed wins, ``lead.hot``, dead letters) and the coalesced
changelog records, position marks last. The batch is acked only after that, so the
commit that follows covers written events only.
"""

from __future__ import annotations

__all__ = ["DEAD_LETTER_HEADERS", "PipelineContext", "SourcePipeline"]

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from faust.types import EventT

from stream_app.adapters.aggregate_index import AggregateIndex
from stream_app.adapters.checkpointer import ChangelogPositions
from stream_app.adapters.faust_compat import Table, key_partitions
from stream_app.adapters.label_registry import LabelRegistry
from stream_app.adapters.redis_store import RedisStore
from stream_app.adapters.source_reader import MissingMessages
from stream_app.events.codec import ContractRules, Rejection, decode_event
from stream_app.kpi.calendar import UTC_ZONE
from stream_app.kpi.fold import BatchWriter, FoldResult, folded_through
from stream_app.kpi.windows import ms_from_datetime
from stream_app.ops import OperationalStats
from stream_app.sources.spec import Feed, LabelValues, SideBook, SourceSpec, fold_message

log = logging.getLogger(__name__)

DEAD_LETTER_HEADERS = ("pulse-reason", "pulse-detail", "pulse-topic", "pulse-partition",
                       "pulse-offset")

#: A message to publish: topic, key, value, headers.
_Message = tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]


@dataclass(frozen=True)
class PipelineContext:
    """What every source's pipeline shares in one worker."""

    rules: ContractRules
    redis: RedisStore
    labels: LabelRegistry
    stats: OperationalStats
    #: The producer of the running app (created by Faust at start).
    producer: Callable[[], Any]
    dead_letter_topic: str
    late_grace_ms: int
    #: Follows the offsets of the changelog records sent (for local checkpoints).
    changelog_positions: ChangelogPositions | None = None
    #: The time zone whose days the aggregates are keyed by, recorded in position marks.
    state_zone: str = UTC_ZONE
    #: Where messages a batch skipped are read again (None: batches are not checked).
    missing: MissingMessages | None = None


@dataclass
class _Batch:
    """The writes of one batch: one changelog writer per partition, and the messages
    it publishes."""

    writers: dict[int, BatchWriter]
    outbox: list[_Message] = field(default_factory=list)


class SourcePipeline:
    """One source's table, its kept sums and side book, and the batch pipeline."""

    def __init__(self, spec: SourceSpec, table: Table, context: PipelineContext):
        self.spec = spec
        self.table = table
        self.index = AggregateIndex(table)
        self.book: SideBook | None = spec.side_book() if spec.side_book else None
        self._context = context
        self._feeds = {feed.topic: feed for feed in spec.feeds}
        self._key_partitions = key_partitions(table)

    async def run(self, events: Sequence[EventT[Any]]) -> None:
        """Fold one batch of the source's topics and hand its writes to the producer."""
        context = self._context
        events = await self._in_offset_order(events)
        batch = self._start(events)
        crm = [e for e in events if not self._feeds[e.message.topic].rekeyed]
        decoded = await self._decode_and_admit(batch, crm)
        parsed = {id(e): feed.parse(e.message.value) for e in events
                  if (feed := self._feeds[e.message.topic]).parse is not None}
        await context.labels.admit(self._labels(events, decoded, parsed))
        admitted = {id(event): value for event, value in decoded}
        for event in events:
            msg = event.message
            feed = self._feeds[msg.topic]
            if feed.parse is not None:
                self._note_position(event, None)
                value = parsed[id(event)]
                if isinstance(value, Rejection):
                    self._dead_letter(batch, event, value)
                    continue
            elif id(event) in admitted:
                value = admitted[id(event)]
            else:
                continue
            result = self._fold(batch.writers[msg.partition], event, feed, value)
            if feed.emit is not None:
                batch.outbox.extend((out.topic, out.key.encode(), out.value, None)
                                    for out in feed.emit(result.before, result.state, value))
        await self._flush(batch)

    async def _in_offset_order(self, events: Sequence[EventT[Any]]) -> Sequence[EventT[Any]]:
        """The batch with the messages it skipped put back before the message that
        skipped them: a message beyond the next offset of its partition's position mark
        (offset 0 for a partition never folded, or the offset after the batch's previous
        message of that partition) follows messages nobody folded, and they are read
        again from the broker (from the log's start if retention removed the first).
        Messages at or below the mark (replays) are left as they are."""
        reader = self._context.missing
        if reader is None:
            return events
        data = self.table.data
        following: dict[tuple[str, int], int] = {}
        completed: list[EventT[Any]] | None = None
        for index, event in enumerate(events):
            msg = event.message
            where = (msg.topic, msg.partition)
            if where not in following:
                following[where] = folded_through(data, msg.partition, msg.topic) + 1
            expected = following[where]
            if msg.offset > expected:
                if completed is None:
                    completed = list(events[:index])
                skipped = await reader.read(msg.topic, msg.partition, expected, msg.offset - 1)
                completed.extend(cast(Sequence[EventT[Any]], skipped))
                self._context.stats.reread[msg.topic] += len(skipped)
                log.warning("%s[%d]: offsets %d-%d were skipped before offset %d; read "
                            "%d of them again to fold in offset order", msg.topic,
                            msg.partition, expected, msg.offset - 1, msg.offset,
                            len(skipped), extra={"topic": msg.topic,
                                                 "partition": msg.partition})
            if completed is not None:
                completed.append(event)
            if msg.offset >= expected:
                following[where] = msg.offset + 1
        return events if completed is None else completed

    def _labels(self, events: Sequence[EventT[Any]], decoded: list[tuple[EventT[Any], Any]],
                parsed: dict[int, Any]) -> LabelValues:
        """Capped label values the batch names: its CRM events', and its re-keyed records'
        for feeds that name some."""
        found = {label: set(values) for label, values in
                 self.spec.labels([value for _, value in decoded]).items()}
        for feed in self._feeds.values():
            if feed.labels is None:
                continue
            records = [parsed[id(e)] for e in events if e.message.topic == feed.topic
                       and not isinstance(parsed[id(e)], Rejection)]
            for label, values in feed.labels(records).items():
                found.setdefault(label, set()).update(values)
        return found

    def _fold(self, writer: BatchWriter, event: EventT[Any], feed: Feed, value: Any) -> FoldResult:
        msg = event.message
        result = fold_message(writer, feed, msg.partition, msg.offset, value)
        self.index.add(result.written)
        if self.book is not None:
            self.book.note(msg.partition, result.state)
        return result

    def _start(self, events: Sequence[EventT[Any]]) -> _Batch:
        """One writer per partition of the batch, each marked with the batch's last
        offsets."""
        writers: dict[int, BatchWriter] = {}
        for event in events:
            msg = event.message
            writer = writers.get(msg.partition)
            if writer is None:
                writer = writers[msg.partition] = BatchWriter(self.table.data,
                                                              self._context.state_zone)
            writer.mark(msg.topic, msg.partition, msg.offset)
        return _Batch(writers)

    def _note_position(self, event: EventT[Any], time_ms: int | None) -> int:
        """Record the message's offset and event time; returns how many ms its time lies
        behind the latest event time read from its partition before it (0 if not behind)."""
        msg = event.message
        stats, tp = self._context.stats, (msg.topic, msg.partition)
        stats.last_offset[tp] = msg.offset
        if time_ms is None:
            return 0
        latest = stats.partition_latest_ms.get(tp)
        if latest is None or time_ms > latest:
            stats.partition_latest_ms[tp] = time_ms
            return 0
        return latest - time_ms

    def _dead_letter(self, batch: _Batch, event: EventT[Any], rejection: Rejection) -> None:
        msg = event.message
        context = self._context
        context.stats.rejected[rejection.reason] += 1
        values = (rejection.reason, rejection.detail, msg.topic, str(msg.partition),
                  str(msg.offset))
        headers = [(name, value.encode("utf-8", "replace"))
                   for name, value in zip(DEAD_LETTER_HEADERS, values, strict=True)]
        batch.outbox.append((context.dead_letter_topic, msg.key, msg.value or b"", headers))
        log.info("rejected %s/%s@%s: %s (%s)", msg.topic, msg.partition, msg.offset,
                 rejection.reason, rejection.detail,
                 extra={"topic": msg.topic, "partition": msg.partition, "offset": msg.offset})

    async def _decode_and_admit(self, batch: _Batch, events: Sequence[EventT[Any]]
                                ) -> list[tuple[EventT[Any], Any]]:
        """Valid, non-duplicate events of a batch; rejects go to the dead-letter topic."""
        context, stats = self._context, self._context.stats
        valid: list[tuple[EventT[Any], Any]] = []
        for event in events:
            msg = event.message
            decoded = decode_event(msg.value, msg.key, self.spec.role, context.rules,
                                   msg.headers)
            if isinstance(decoded, Rejection):
                self._note_position(event, None)
                self._dead_letter(batch, event, decoded)
            else:
                valid.append((event, decoded))
        verdicts = await context.redis.check_many([
            (decoded.id, f"{e.message.topic}/{e.message.partition}/{e.message.offset}")
            for e, decoded in valid
        ])
        admitted: list[tuple[EventT[Any], Any]] = []
        for (event, decoded), verdict in zip(valid, verdicts, strict=True):
            lateness = self._note_position(event, ms_from_datetime(decoded.time))
            if verdict == "duplicate":
                stats.duplicates[decoded.type] += 1
                continue
            if lateness > context.late_grace_ms:
                stats.late[decoded.type] += 1
            if verdict == "unavailable":
                stats.dedup_unavailable += 1
            elif verdict == "replay":
                stats.replays += 1
            stats.processed[decoded.type] += 1
            admitted.append((event, decoded))
        return admitted

    async def _flush(self, batch: _Batch) -> None:
        """Hand the batch's messages and changelog records to the Kafka producer.

        Both go straight to the producer, awaited, before the batch ends (and is
        acked): the commit flushes the producer before committing offsets, so a
        committed event's messages and records are on the broker. Faust's own paths
        are not used: ``send_soon`` queues in a buffer whose flush gives up after
        0.1 s without progress, so a stop or crash could commit an event whose re-keyed
        win was never sent; ``send_changelog`` publishes one event-loop hop per record,
        which capped a worker at ~1,000 events/s. Records are encoded as the table's
        JSON codec would (values through orjson; keys through ``json``, whose ASCII
        escapes keep every key's bytes what they were, as compaction needs).
        """
        producer = self._context.producer()
        for topic, message_key, value, headers in batch.outbox:
            await producer.send(topic, message_key, value, None, None, headers)
        batch.outbox.clear()
        changelog = self.table.changelog_topic.get_topic_name()
        dumps = json.dumps
        value_bytes_of = orjson.dumps
        key_partition = self._key_partitions
        positions = self._context.changelog_positions
        for partition, writer in batch.writers.items():
            for key, record in writer.drain():
                key_bytes = dumps(key).encode()
                value_bytes = value_bytes_of(record, option=orjson.OPT_NON_STR_KEYS)
                sent = await producer.send(changelog, key_bytes, value_bytes, partition,
                                           None, None)
                if positions is not None:
                    key_partition[key] = partition
                    positions.sent(changelog, partition, sent, key_bytes, value_bytes)
