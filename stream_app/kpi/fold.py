"""Exactly-once folding of events into a key-value state store without transactions.

One store (one Faust table, one changelog partition per source partition) holds
both the entity records and the aggregate records derived from them. For an
event at (source, offset) the fold writes the changed aggregates first and the
entity record last, each stamped with a guard ``{source: offset}``. Kafka keeps a
prefix of one partition's writes, so after a crash:

- entity guard >= offset: every write of the event persisted; skip it;
- otherwise the entity record is the state before the event, so the deltas are
  recomputed exactly and applied only to aggregates whose guard is < offset.

:class:`BatchWriter` coalesces the writes of a batch of one partition's events:
one changelog record per key, every aggregate before any entity, so the same
argument holds batch by batch (an aggregate's guard is the offset of the last
event of the batch that touched it, and its value holds all those events).
"""

from __future__ import annotations

__all__ = [
    "AGGREGATE_KINDS",
    "SEP",
    "BatchWriter",
    "FoldResult",
    "StateStore",
    "aggregate_key",
    "clock_key",
    "entity_key",
    "folded_through",
    "guarded_fold",
    "parse_aggregate_key",
    "position_key",
    "position_zone",
    "record_of",
    "record_text",
    "supersedes",
    "zone_conflict",
]

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from json import dumps as _json_dumps
from typing import Any, Protocol, TypeVar

from orjson import OPT_NON_STR_KEYS
from orjson import dumps as _orjson_dumps
from orjson import loads as _loads

from stream_app.kpi.calendar import UTC_ZONE
from stream_app.kpi.deals import Contributions
from stream_app.kpi.kinds import AGGREGATE_KINDS, CLOCK, POSITION

SEP = "\x1f"

S = TypeVar("S")


class StateStore(Protocol):
    """The part of a Faust table (or a dict) the fold needs."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def __setitem__(self, key: str, value: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class FoldResult:
    """Outcome of one fold: the entity state after it, the aggregate keys written, and
    the state before it (the same state when the fold was skipped as already applied)."""

    applied: bool
    state: Any
    written: tuple[str, ...]
    before: Any


class BatchWriter:
    """A store view that applies writes at once and queues one changelog record per key.

    Entity and aggregate records are kept as compact JSON text rather than nested dicts
    (an entity's text takes about a fifth of its dicts' memory, an aggregate's about a
    sixth); :func:`record_of` reads either form. The changelog carries the same text, so
    a restored table is identical. Position marks stay dicts.
    """

    def __init__(self, data: Any, zone: str = UTC_ZONE):
        self._data = data
        self._zone = zone
        self._aggregates: dict[str, Any] = {}
        self._entities: dict[str, Any] = {}
        self._marks: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        """Read through to the live state."""
        return record_of(self._data.get(key, default))

    def __setitem__(self, key: str, value: Any) -> None:
        text = self._data[key] = record_text(value)
        if parse_aggregate_key(key):
            self._aggregates[key] = text
        else:
            self._entities[key] = text

    def mark(self, source: str, partition: int, offset: int) -> None:
        """Record that every message of ``source``/``partition`` up to ``offset`` is folded.

        Marks are sent after every other record of the batch, so a persisted mark
        proves the whole batch persisted (a partition keeps a prefix of its writes).
        A mark also names the time zone whose days the batch's aggregates are keyed by
        (``"tz"``, absent for UTC: :func:`position_zone`).
        """
        key = position_key(partition, source)
        mark = {"v": offset} if self._zone == UTC_ZONE else {"v": offset, "tz": self._zone}
        self._data[key] = self._marks[key] = mark

    def drain(self) -> list[tuple[str, Any]]:
        """The records to send: aggregates, then entities, then marks; empties the queue."""
        records = [*self._aggregates.items(), *self._entities.items(), *self._marks.items()]
        self._aggregates, self._entities, self._marks = {}, {}, {}
        return records


def record_text(value: Any) -> str:
    """Compact JSON text of a record, ASCII only (non-ASCII as ``\\u`` escapes, so the
    text stays one byte a character in memory)."""
    text: str = _orjson_dumps(value, option=OPT_NON_STR_KEYS).decode()
    return text if text.isascii() else _json_dumps(value, separators=(",", ":"))


def entity_key(kind: str, entity_id: str) -> str:
    """Store key of an entity record (prefixes in :mod:`stream_app.kpi.kinds`)."""
    return f"{kind}{SEP}{entity_id}"


def aggregate_key(kind: str, partition: int, group: str, part: Any) -> str:
    """Store key of an aggregate owned by one source partition."""
    return f"{kind}{SEP}{partition}{SEP}{group}{SEP}{part}"


def position_zone(mark: dict[str, Any]) -> str:
    """The time zone a position mark's state was folded in (UTC for marks without one,
    as every state written before time zones existed)."""
    return str(mark.get("tz", UTC_ZONE))


def zone_conflict(data: Any, sources: Iterable[tuple[str, int]], zone: str
                  ) -> tuple[str, int, str] | None:
    """The first (topic, partition, zone) of ``sources`` whose position mark in ``data``
    was folded in another time zone than ``zone``; None when every mark agrees (or
    none exists yet)."""
    for topic, partition in sources:
        mark = data.get(position_key(partition, topic))
        if mark is not None and position_zone(mark) != zone:
            return topic, partition, position_zone(mark)
    return None


def position_key(partition: int, source: str) -> str:
    """Store key of the last offset of ``source`` (a topic) folded on ``partition``."""
    return aggregate_key(POSITION, partition, source, "")


def folded_through(data: Any, partition: int, source: str) -> int:
    """The last offset of ``source`` (a topic) folded on ``partition`` by the state in
    ``data``, from its position mark; -1 when nothing was folded there yet."""
    mark = data.get(position_key(partition, source))
    return -1 if mark is None else int(mark["v"])


def clock_key(partition: int) -> str:
    """Store key of a partition's latest event time."""
    return aggregate_key(CLOCK, partition, "", "")


def parse_aggregate_key(key: str) -> tuple[str, int, str, str] | None:
    """(kind, partition, group, part) of an aggregate key; None for entity keys."""
    parts = key.split(SEP)
    if len(parts) != 4 or parts[0] not in AGGREGATE_KINDS:
        return None
    return parts[0], int(parts[1]), parts[2], parts[3]


def record_of(stored: Any) -> Any:
    """The record a store holds, as dicts: stored as compact JSON text (what
    :class:`BatchWriter` writes) or as dicts (position marks, and aggregates written
    before they were kept as text)."""
    return _loads(stored) if isinstance(stored, str) else stored


def supersedes(incoming: Any, stored: Any) -> bool:
    """Whether a changelog record read during recovery replaces the stored one.

    Every record states what it holds: a guard ``{source: offset}`` (entities, aggregates,
    clocks) or an offset (position marks). A record whose guard the stored one's
    dominates (each of its sources at or past, one past) is a late write of an older
    state, as a paused worker resuming after its partition moved can make; it is
    dropped, and so is a mark below the stored mark. Anything else (a first record, a
    deletion, a newer or incomparable guard) replaces the stored record, in Kafka's order.
    """
    if incoming is None or stored is None:
        return True
    new, old = record_of(incoming), record_of(stored)
    if "g" not in new or "g" not in old:
        return "g" in new or "g" in old or new["v"] >= old["v"]
    new_guard, old_guard = new["g"], old["g"]
    covered = all(old_guard.get(source, -1) >= offset for source, offset in new_guard.items())
    return not (covered and old_guard != new_guard)


def _guard_ok(record: Any, source: str, offset: int) -> bool:
    return record is None or record["g"].get(source, -1) < offset


def _stamp(record: Any, source: str, offset: int, value: Any) -> dict[str, Any]:
    guard = dict(record["g"]) if record is not None else {}
    guard[source] = offset
    return {"g": guard, "v": value}


def _deltas(old: Contributions, new: Contributions) -> list[tuple[tuple[str, str, Any], list[int]]]:
    """Each aggregate whose contribution moved, and by how much (new minus old)."""
    moved = []
    for agg, vector in new.items():
        previous = old.get(agg)
        if previous is None:
            delta = list(vector)
        elif previous == vector:
            continue
        else:
            delta = [value - was for value, was in zip(vector, previous, strict=True)]
        if any(delta):
            moved.append((agg, delta))
    for agg, vector in old.items():
        if agg not in new and any(vector):
            moved.append((agg, [-was for was in vector]))
    return moved


def guarded_fold(
    store: StateStore,
    *,
    source: str,
    partition: int,
    offset: int,
    key: str,
    empty: Callable[[], S],
    load: Callable[[Any], S],
    apply: Callable[[S], S],
    contributions: Callable[[S], Contributions],
    dump: Callable[[S], Any],
    event_time_ms: int,
) -> FoldResult:
    """Apply one event to an entity and to the aggregates derived from it, idempotently."""
    record = store.get(key)
    before = load(record["v"]) if record is not None else empty()
    if not _guard_ok(record, source, offset):
        return FoldResult(False, before, (), before)
    after = apply(before)
    written: list[str] = []
    for (kind, group, part), delta in _deltas(contributions(before), contributions(after)):
        agg_key = aggregate_key(kind, partition, group, part)
        current = store.get(agg_key)
        if not _guard_ok(current, source, offset):
            continue
        base = current["v"] if current is not None else [0] * len(delta)
        summed = [a + b for a, b in zip(base, delta, strict=True)]
        store[agg_key] = _stamp(current, source, offset, summed)
        written.append(agg_key)
    tkey = clock_key(partition)
    clock = store.get(tkey)
    if clock is None or (clock["v"] < event_time_ms and _guard_ok(clock, source, offset)):
        store[tkey] = _stamp(clock, source, offset, event_time_ms)
        written.append(tkey)
    store[key] = _stamp(record, source, offset, dump(after))
    return FoldResult(True, after, tuple(written), before)

