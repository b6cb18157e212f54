"""Each owner's deal rows and open pipeline, kept between reports of a snapshot moved in
place: only the owners whose cells or window sums changed are computed again, and the
others keep the very same row tuples (what lets the exporter write only them)."""

from __future__ import annotations

__all__ = ["OwnerDealRows", "WindowRows"]

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, Generic, TypeVar

from stream_app.kpi.rows import OwnerDealKpis, OwnerPipelineKpis, PerOwner
from stream_app.kpi.snapshot import Snapshot
from stream_app.kpi.trailing import ChangeToken, DayCells, GroupCells
from stream_app.kpi.windows import WindowSpec

#: Deals created, won, lost, won cents and summed cycle ms: an owner day cell's width.
_DEAL_FIELDS = 5
_Row = TypeVar("_Row")


class WindowRows(Generic[_Row]):
    """Per owner, a row per window made by ``make(owner, window name, sums)`` from the
    window sums of the owners' day cells; the rows of an owner whose sums did not
    change since the last call are the previous call's tuple (every owner's are made
    again for other cells, windows or a new build of their sums)."""

    def __init__(self, make: Callable[[str, str, list[int]], _Row], width: int):
        self._make, self._zeros = make, [0] * width
        self._seen: ChangeToken | None = None
        self._specs: tuple[WindowSpec, ...] | None = None
        self._rows: dict[str, tuple[_Row, ...]] = {}

    def rows(self, cells: Mapping[tuple[Any, ...], list[int]], specs: tuple[WindowSpec, ...],
             as_of_day: int, owners: Iterable[str] | None = None) -> dict[str, tuple[_Row, ...]]:
        """Rows of ``owners`` (default: the owners with a cell), in that order."""
        day_cells = DayCells.of(cells)
        sums, changed, self._seen = day_cells.window_changes(specs, as_of_day, self._seen)
        if self._specs != specs:
            changed = None
        self._specs = specs
        make, zeros, kept = self._make, self._zeros, self._rows
        out: dict[str, tuple[_Row, ...]] = {}
        for owner in sorted(day_cells.groups()) if owners is None else owners:
            known = kept.get(owner)
            if known is None or changed is None or owner in changed:
                known = tuple(make(owner, name, window.get(owner, zeros))
                              for name, window in sums.items())
            out[owner] = known
        self._rows = out
        return out


class OwnerDealRows:
    """Per owner: a row per window of the deals the owner created, won and lost
    (:class:`OwnerDealKpis`), and the open pipeline at T (:class:`OwnerPipelineKpis`).

    Rows of an owner whose day cells' window sums and open cells did not change since
    the last call are the previous call's tuples; a snapshot other than the last one's
    (or plain dicts, or other windows or probabilities) computes every owner."""

    def __init__(self) -> None:
        self._deals = WindowRows(_deal_row, _DEAL_FIELDS)
        self._open_seen: ChangeToken | None = None
        self._probability: Mapping[str, Decimal] | None = None
        self._pipeline: dict[str, tuple[OwnerPipelineKpis, ...]] = {}

    def rows(self, snap: Snapshot, specs: tuple[WindowSpec, ...],
             probability: Mapping[str, Decimal], as_of_day: int
             ) -> tuple[PerOwner[OwnerDealKpis], PerOwner[OwnerPipelineKpis]]:
        """The owners' deal rows and pipeline at ``as_of_day``, in owner order."""
        cells = DayCells.of(snap.owner_deals)
        open_cells = snap.owner_open
        if not isinstance(open_cells, GroupCells):
            open_cells = GroupCells(open_cells)
        changed, self._open_seen = open_cells.changes(self._open_seen)
        if self._probability != probability:
            changed = None
        self._probability = probability
        by_owner = open_cells.keys_of()
        owners = sorted(cells.groups() | by_owner.keys())
        deals = self._deals.rows(cells, specs, as_of_day, owners)
        kept = self._pipeline
        pipeline: dict[str, tuple[OwnerPipelineKpis, ...]] = {}
        for owner in owners:
            row = kept.get(owner)
            if row is None or changed is None or owner in changed:
                row = (_pipeline(owner, open_cells, by_owner.get(owner, ()), probability),)
            pipeline[owner] = row
        self._pipeline = pipeline
        return deals, pipeline


def _deal_row(owner: str, window: str, sums: list[int]) -> OwnerDealKpis:
    return OwnerDealKpis(owner, window, *sums)


def _pipeline(owner: str, cells: Mapping[tuple[str, str], list[int]],
              keys: Any, probability: Mapping[str, Decimal]) -> OwnerPipelineKpis:
    count, cents, weighted = 0, 0, Decimal(0)
    for key in keys:
        n, amount = cells[key]
        count += n
        cents += amount
        weighted += Decimal(amount) * probability.get(key[1], Decimal(0))
    return OwnerPipelineKpis(owner, count, cents, float(weighted))
