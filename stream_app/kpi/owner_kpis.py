"""Each owner's deal rows and open pipeline, kept between reports of a snapshot moved in
place: only the owners whose cells or window sums changed are computed again, and the
others keep the very same row tuples (what lets the exporter write only them)."""

from __future__ import annotations

__all__ = ["OwnerDealRows"]

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from stream_app.kpi.rows import OwnerDealKpis, OwnerPipelineKpis, PerOwner
from stream_app.kpi.snapshot import Snapshot
from stream_app.kpi.trailing import ChangeToken, DayCells, GroupCells
from stream_app.kpi.windows import WindowSpec

#: Deals created, won, lost, won cents and summed cycle ms: an owner day cell's width.
_DEAL_FIELDS = 5


class OwnerDealRows:
    """Per owner: a row per window of the deals the owner created, won and lost
    (:class:`OwnerDealKpis`), and the open pipeline at T (:class:`OwnerPipelineKpis`).

    Rows of an owner whose day cells' window sums and open cells did not change since
    the last call are the previous call's tuples; a snapshot other than the last one's
    (or plain dicts, or other windows or probabilities) computes every owner."""

    def __init__(self) -> None:
        self._deals_seen: ChangeToken | None = None
        self._open_seen: ChangeToken | None = None
        self._inputs: tuple[tuple[WindowSpec, ...], Mapping[str, Decimal]] | None = None
        self._deals: dict[str, tuple[OwnerDealKpis, ...]] = {}
        self._pipeline: dict[str, tuple[OwnerPipelineKpis, ...]] = {}

    def rows(self, snap: Snapshot, specs: tuple[WindowSpec, ...],
             probability: Mapping[str, Decimal], as_of_day: int
             ) -> tuple[PerOwner[OwnerDealKpis], PerOwner[OwnerPipelineKpis]]:
        """The owners' deal rows and pipeline at ``as_of_day``, in owner order."""
        cells = snap.owner_deals
        if not isinstance(cells, DayCells):
            cells = DayCells(cells)
        sums, deals_changed, self._deals_seen = cells.window_changes(
            specs, as_of_day, self._deals_seen)
        open_cells = snap.owner_open
        if not isinstance(open_cells, GroupCells):
            open_cells = GroupCells(open_cells)
        open_changed, self._open_seen = open_cells.changes(self._open_seen)
        inputs = (specs, probability)
        if self._inputs is None or self._inputs[0] != specs or self._inputs[1] != probability:
            deals_changed = open_changed = None
        self._inputs = inputs
        by_owner = open_cells.keys_of()
        owners = sorted(cells.groups() | by_owner.keys())
        zeros = [0] * _DEAL_FIELDS
        kept_deals, kept_pipeline = self._deals, self._pipeline
        deals: dict[str, tuple[OwnerDealKpis, ...]] = {}
        pipeline: dict[str, tuple[OwnerPipelineKpis, ...]] = {}
        for owner in owners:
            known = kept_deals.get(owner)
            if known is None or deals_changed is None or owner in deals_changed:
                known = tuple(OwnerDealKpis(owner, name, *window.get(owner, zeros))
                              for name, window in sums.items())
            deals[owner] = known
            open_row = kept_pipeline.get(owner)
            if open_row is None or open_changed is None or owner in open_changed:
                open_row = (_pipeline(owner, open_cells, by_owner.get(owner, ()), probability),)
            pipeline[owner] = open_row
        self._deals, self._pipeline = deals, pipeline
        return deals, pipeline


def _pipeline(owner: str, cells: Mapping[tuple[str, str], list[int]],
              keys: Any, probability: Mapping[str, Decimal]) -> OwnerPipelineKpis:
    count, cents, weighted = 0, 0, Decimal(0)
    for key in keys:
        n, amount = cells[key]
        count += n
        cents += amount
        weighted += Decimal(amount) * probability.get(key[1], Decimal(0))
    return OwnerPipelineKpis(owner, count, cents, float(weighted))
