"""A deal's closes, reopenings, deletions and restores, and what they leave in effect.

Every mark starts with (time_ms, event_id) and marks are ordered by that pair:

- a close: ``(time_ms, event_id, "won" | "lost", *details)``;
- a reopening (``deal.reopened``): ``(time_ms, event_id)``;
- a deletion (``deal.deleted``) or a restore (``deal.restored``):
  ``(time_ms, event_id, deleted)``.

The close in effect is the earliest close after the latest reopening: a reopening undoes
every close before it, and of the closes after it the first one closed the deal. A close
at the same millisecond as the reopening counts as after it (a CRM that switches a won
deal to lost sends both at one time). A deal
is deleted when the latest of its deletions and restores is a deletion. Both answers
depend on the set of marks only, so any order and any repeat of the events give the same
state; and a close undone by a reopening stays undone whatever arrives later, so
:func:`pruned` drops it (and every reopening but the latest, every deletion or restore but
the latest) without changing an answer.

Pure: the deal state (:mod:`stream_app.kpi.deals`) and the receivers of re-keyed wins
(:mod:`stream_app.kpi.accounts`, :mod:`stream_app.kpi.owners`) fold the same marks with
these functions.
"""

from __future__ import annotations

__all__ = [
    "LOST",
    "WON",
    "Close",
    "Deletion",
    "Lifecycle",
    "OwnerChange",
    "Reopening",
    "merged_marks",
    "owner_at",
]

from dataclasses import dataclass
from typing import Any

#: Kinds of close.
WON, LOST = "won", "lost"

#: (time_ms, event_id, WON | LOST, *details): the details are the holder's own.
Close = tuple[Any, ...]
#: (time_ms, event_id)
Reopening = tuple[int, str]
#: (time_ms, event_id, deleted): True for ``deal.deleted``, False for ``deal.restored``.
Deletion = tuple[int, str, bool]


#: (time_ms, event_id, owner) of a ``deal.updated`` naming a new owner.
OwnerChange = tuple[int, str, str]


def owner_at(creation: tuple[int, str, str], changes: tuple[OwnerChange, ...],
             time_ms: int) -> str:
    """A deal's owner at ``time_ms``: of the owner changes timed at or before it and not
    before the creation ((time, id) order), the latest; else the creation's owner.
    ``creation`` is (time_ms, event_id, owner) of ``deal.created``; ``changes`` sorted."""
    owner = creation[2]
    for change in changes:
        if change[0] > time_ms:
            break
        if change[:2] >= creation[:2]:
            owner = change[2]
    return owner


def _order(mark: tuple[Any, ...]) -> tuple[int, str]:
    return int(mark[0]), str(mark[1])


def merged_marks(marks: tuple[Any, ...], new: tuple[Any, ...]) -> tuple[Any, ...]:
    """``marks`` and ``new`` sorted by (time, id), one per event id (the first kept);
    ``marks`` itself when ``new`` adds nothing."""
    seen = {mark[1] for mark in marks}
    fresh = []
    for mark in new:
        if mark[1] not in seen:
            seen.add(mark[1])
            fresh.append(mark)
    return marks if not fresh else tuple(sorted((*marks, *fresh), key=_order))


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """The marks of one deal (each sorted by (time, id), pruned)."""

    closes: tuple[Close, ...] = ()
    reopenings: tuple[Reopening, ...] = ()
    deletions: tuple[Deletion, ...] = ()

    @property
    def close(self) -> Close | None:
        """The close in effect: the earliest close after the latest reopening."""
        if not self.reopenings:
            return self.closes[0] if self.closes else None
        latest = int(self.reopenings[-1][0])
        return next((close for close in self.closes if int(close[0]) >= latest), None)

    @property
    def deleted(self) -> bool:
        """Whether the latest deletion or restore is a deletion."""
        return bool(self.deletions) and bool(self.deletions[-1][2])

    @property
    def revised(self) -> bool:
        """Whether a reopening or a deletion is known (receivers of a win must hear of it)."""
        return bool(self.reopenings or self.deletions)

    def with_marks(self, closes: tuple[Close, ...] = (), reopenings: tuple[Reopening, ...] = (),
                   deletions: tuple[Deletion, ...] = (), prune: bool = True) -> Lifecycle:
        """These marks added (repeats by event id ignored), then :meth:`pruned` unless
        ``prune`` is False (a fold that must answer for earlier times keeps them all)."""
        merged = (merged_marks(self.closes, closes), merged_marks(self.reopenings, reopenings),
                  merged_marks(self.deletions, deletions))
        if all(new is old for new, old in zip(
                merged, (self.closes, self.reopenings, self.deletions), strict=True)):
            return self  # nothing new: callers tell an unchanged state by identity
        merged_lifecycle = Lifecycle(*merged)
        return merged_lifecycle.pruned() if prune else merged_lifecycle

    def pruned(self) -> Lifecycle:
        """Only the marks that can still decide an answer: the latest reopening, the closes
        after it, the latest deletion or restore."""
        closes, reopenings, deletions = self.closes, self.reopenings, self.deletions
        if reopenings:
            latest = int(reopenings[-1][0])
            closes = tuple(close for close in closes if int(close[0]) >= latest)
            reopenings = reopenings[-1:]
        deletions = deletions[-1:]
        if (closes, reopenings, deletions) == (self.closes, self.reopenings, self.deletions):
            return self
        return Lifecycle(closes, reopenings, deletions)

    def to_json(self) -> dict[str, Any]:
        """The non-empty mark lists: ``x`` closes, ``r`` reopenings, ``del`` deletions."""
        out: dict[str, Any] = {}
        if self.closes:
            out["x"] = [list(close) for close in self.closes]
        if self.reopenings:
            out["r"] = [list(mark) for mark in self.reopenings]
        if self.deletions:
            out["del"] = [list(mark) for mark in self.deletions]
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Lifecycle:
        """Inverse of :meth:`to_json` (missing lists are empty)."""
        return cls(
            closes=tuple(tuple(close) for close in raw.get("x") or ()),
            reopenings=tuple((int(at), str(event)) for at, event in raw.get("r") or ()),
            deletions=tuple((int(at), str(event), bool(deleted))
                            for at, event, deleted in raw.get("del") or ()),
        )
