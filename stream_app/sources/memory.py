"""The generic pipeline's semantics in memory, on one partition per topic: what the unit
tests fold the whole catalogue through, and what the benchmark times the handlers with
(every spec's decode, fold, contributions and published messages; no Faust, Kafka or
Redis).

CRM events are decoded by the contract and deduplicated by id (as the Redis check: the
first position of an id is folded, again when read again), every message is folded
through its feed at its offset, and what a fold publishes is appended to its topic and
folded in turn.
"""

from __future__ import annotations

__all__ = ["InMemoryPipeline"]

import json
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from stream_app.config import Settings, contract_rules
from stream_app.events.codec import Rejection, decode_event
from stream_app.events.routing import route_of
from stream_app.kpi.fold import BatchWriter
from stream_app.kpi.report import ReportConfig, build_report
from stream_app.kpi.rows import Report
from stream_app.kpi.snapshot import combined, snapshot_from_aggregates
from stream_app.sources.spec import Feed, SideBook, SourceSpec, fold_message


class InMemoryPipeline:
    """Every spec's table as a dict, every topic as a list of (key, value)."""

    def __init__(self, specs: tuple[SourceSpec, ...], settings: Settings):
        self.specs, self.settings = specs, settings
        self.feeds: dict[str, tuple[SourceSpec, Feed]] = {
            feed.topic: (spec, feed) for spec in specs for feed in spec.feeds}
        self.stores: dict[str, dict[str, Any]] = {spec.name: {} for spec in specs}
        self.books: dict[str, SideBook] = {
            spec.name: spec.side_book() for spec in specs if spec.side_book}
        self.logs: dict[str, list[tuple[str, bytes]]] = {}
        self.seen: dict[str, tuple[str, int]] = {}
        self.queue: deque[tuple[str, int]] = deque()
        self.redelivered: list[tuple[str, int]] = []
        self._rules = contract_rules(settings)

    def send(self, topic: str, key: str, value: bytes) -> int:
        """Append a message to ``topic``; its offset."""
        log = self.logs.setdefault(topic, [])
        log.append((key, value))
        return len(log) - 1

    def deliver(self, topic: str, offset: int) -> None:
        """Fold the message at ``offset`` of ``topic`` (again, if it was folded before);
        ValueError for a message the contract or the record model refuses."""
        spec, feed = self.feeds[topic]
        key, raw = self.logs[topic][offset]
        if feed.parse is None:
            value = decode_event(raw, key.encode(), spec.role, self._rules)
            if isinstance(value, Rejection):
                raise ValueError(f"{topic}/{offset}: {value.detail}")
            first = self.seen.setdefault(value.id, (topic, offset))
            if first != (topic, offset):
                return  # a duplicate; the same message read again is a replay, folded
        else:
            value = feed.parse(raw)
            if isinstance(value, Rejection):
                raise ValueError(f"{topic}/{offset}: {value.detail}")
        result = fold_message(BatchWriter(self.stores[spec.name]), feed, 0, offset, value)
        if spec.name in self.books:
            self.books[spec.name].note(0, result.state)
        for out in feed.emit(result.before, result.state, value) if feed.emit else ():
            sent = self.send(out.topic, out.key, out.value)
            if out.topic in self.feeds:
                self.queue.append((out.topic, sent))

    def run(self, events: Iterable[dict[str, Any]],
            redeliver: Callable[[], bool] = lambda: False) -> None:
        """Send each event to its topic and fold everything; an event for which
        ``redeliver()`` is true is read twice (as after a crash)."""
        for event in events:
            route = route_of(event["type"])
            if route is None:
                raise ValueError(f"event {event.get('id')!r}: no route for {event['type']!r}")
            topic = getattr(self.settings, route.topic_setting)
            offset = self.send(topic, str(event["data"][route.key_field]),
                               json.dumps(event).encode())
            self.queue.append((topic, offset))
            if redeliver():
                self.queue.append((topic, offset))
                self.redelivered.append((topic, offset))
        while self.queue:
            self.deliver(*self.queue.popleft())

    def report(self, config: ReportConfig) -> Report:
        """Every KPI at the latest event time folded."""
        snap = combined([snapshot_from_aggregates(self.stores[spec.name].items(), {0})
                         for spec in self.specs])
        for book in self.books.values():
            book.contribute(snap, frozenset({0}))
        if snap.latest_event_ms is None:
            raise ValueError("nothing folded yet")
        return build_report(snap, snap.latest_event_ms, config)
