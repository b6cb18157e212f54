"""What a source is, as data: the types a source spec is made of.

A source is one table of state (one Faust table, one changelog) keyed like one CRM
topic, and the streams folded into it: the CRM topic itself and any internal topic
other sources re-key messages onto. The generic pipeline
(:mod:`stream_app.adapters.pipeline`) runs every spec the same way; nothing here
imports Faust, Kafka or Redis.
"""

from __future__ import annotations

__all__ = ["Entity", "Feed", "Fold", "LabelValues", "Outgoing", "SideBook", "SourceSpec",
           "fold_message"]

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from stream_app.events.routing import TopicRole
from stream_app.kpi.deals import Contributions
from stream_app.kpi.fold import FoldResult, StateStore, entity_key, guarded_fold
from stream_app.kpi.snapshot import Snapshot

S = TypeVar("S")

#: Values of the capped labels (team, owner, source, product, competitor) a batch names.
LabelValues = Mapping[str, Iterable[str]]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message a fold publishes: re-keyed wins, ``lead.hot``."""

    topic: str
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Entity(Generic[S]):
    """An entity kind: its key prefix (:mod:`stream_app.kpi.kinds`), its state type with
    the record encoding, and the aggregates a state contributes."""

    prefix: str
    empty: Callable[[str], S]
    load: Callable[[Any], S]
    dump: Callable[[S], Any]
    contributions: Callable[[S], Contributions]


@dataclass(frozen=True, slots=True)
class Fold(Generic[S]):
    """What one message does: which entity it changes, at which event time, and how
    (``apply`` is pure, and commutative and idempotent per message)."""

    entity: Entity[S]
    entity_id: str
    time_ms: int
    apply: Callable[[S], S]


@dataclass(frozen=True, slots=True)
class Feed:
    """One stream folded into a source's table.

    A CRM feed (``parse`` None) reads validated CloudEvents of the source's role:
    decoded by the contract, deduplicated, counted. A re-keyed feed reads what another
    source publishes (``parse`` validates it); its folds are idempotent by themselves
    (each keeps a deal's earliest win), so it skips deduplication.
    """

    #: The topic name.
    topic: str
    #: The guard source tag its folds stamp (:mod:`stream_app.kpi.kinds`).
    guard: str
    #: A message (a decoded event, or a parsed re-keyed record) -> its fold.
    fold: Callable[[Any], Fold[Any]]
    #: Re-keyed feeds: bytes -> record, or a :class:`Rejection` for the dead letters.
    parse: Callable[[bytes | None], Any] | None = None
    #: Messages to publish after a message's fold: (state before, state after, message)
    #: -> messages. Called again when a redelivered message's fold is skipped (both
    #: states then equal), so what was lost in a crash is published again.
    emit: Callable[[Any, Any, Any], Sequence[Outgoing]] | None = None
    #: Re-keyed feeds: values of capped labels a batch's parsed records name.
    labels: Callable[[Sequence[Any]], LabelValues] | None = None

    @property
    def rekeyed(self) -> bool:
        """Whether this feed reads an internal re-keyed topic."""
        return self.parse is not None


class SideBook(Protocol):
    """State a source keeps beside its table for the report (the open leads' score
    inputs), rebuilt from the table after a recovery."""

    @property
    def version(self) -> int:
        """Moves at every :meth:`note` and :meth:`rebuild` (what it contributes may
        have changed)."""

    def note(self, partition: int, state: Any) -> None:
        """An entity of ``partition`` now has ``state`` (after a fold)."""

    def note_key(self, key: str, partition: int) -> None:
        """A changelog record of ``partition`` wrote ``key`` (recovery, standby)."""

    def rebuild(self, records: Mapping[str, Any]) -> None:
        """After a recovery: everything again from the table's ``records``."""

    def contribute(self, snapshot: Snapshot, partitions: frozenset[int],
                   keep: Callable[[str, str], bool] | None = None,
                   labels_version: Hashable = None) -> None:
        """Add the state of the exported ``partitions`` to the report's snapshot
        (``keep``: whether a label value gets its own series; ``labels_version``:
        changes whenever a verdict of ``keep`` may have, None when unknown)."""


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One source: its table, the topic whose partitions key it, the feeds it folds,
    the labels its events admit, and what it keeps beside the table."""

    #: Short name; the table is ``pulse-<name>``.
    name: str
    #: The CRM topic's role (what the contract accepts on it).
    role: TopicRole
    #: The CRM feed first, then re-keyed feeds (same partitioning).
    feeds: tuple[Feed, ...]
    #: Values of capped labels the batch's decoded CRM events name.
    labels: Callable[[Sequence[Any]], LabelValues]
    #: A factory of the side book, if the source keeps one.
    side_book: Callable[[], SideBook] | None = None

    @property
    def table_name(self) -> str:
        """The Faust table (and changelog) name."""
        return f"pulse-{self.name}"

    @property
    def topic(self) -> str:
        """The CRM topic: the table is keyed by its partitions."""
        return self.feeds[0].topic

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic the table folds."""
        return tuple(feed.topic for feed in self.feeds)



def fold_message(store: StateStore, feed: Feed, partition: int, offset: int,
                 message: Any) -> FoldResult:
    """Fold one message of ``feed`` read at ``partition``/``offset`` into ``store``
    (idempotently: see :func:`stream_app.kpi.fold.guarded_fold`)."""
    fold = feed.fold(message)
    entity = fold.entity
    return guarded_fold(
        store,
        source=feed.guard,
        partition=partition,
        offset=offset,
        key=entity_key(entity.prefix, fold.entity_id),
        empty=lambda: entity.empty(fold.entity_id),
        load=entity.load,
        apply=fold.apply,
        contributions=entity.contributions,
        dump=entity.dump,
        event_time_ms=fold.time_ms,
    )
