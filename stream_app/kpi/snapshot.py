"""Aggregates summed over a worker's exported partitions: the snapshot a report is
built from, the label constants, and the per-cell sums kept up to date as records are
written."""

from __future__ import annotations

__all__ = [
    "ALL_GROUP",
    "KIND_LABEL",
    "OTHER_GROUP",
    "RESERVED_GROUPS",
    "Cell",
    "Snapshot",
    "merge_cells",
    "snapshot_from_aggregates",
    "snapshot_from_cells",
    "update_cell",
]

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from stream_app.kpi.accounts import NEW_CUSTOMER_CHURN
from stream_app.kpi.deals import NO_VALUE, add_vector
from stream_app.kpi.fold import parse_aggregate_key
from stream_app.kpi.kinds import (
    ACTIVE_CUSTOMERS,
    CHURN,
    CHURN_TO_COMPETITOR,
    CLOCK,
    COMPETITOR_DAY,
    LEAD_BAND,
    LEAD_SOURCE_DAY,
    NEW_CUSTOMER,
    OPEN_PIPELINE,
    OWNER_ACTIVITY,
    OWNER_DAY,
    OWNER_OPEN,
    OWNER_PROFILE,
    OWNER_QUOTA,
    OWNER_WON,
    POSITION,
    PRODUCT_DAY,
    SOURCE_DAY,
    STAGE_STINT,
    TEAM_ACTIVITY,
    TEAM_DAY,
    WATERFALL,
)
from stream_app.kpi.leads import ScoreInputs

ALL_GROUP = "all"
#: Where label values beyond their cap are summed.
OTHER_GROUP = "(other)"
#: Label values the exporter uses itself; a data value equal to one gets a trailing "_".
RESERVED_GROUPS = frozenset({ALL_GROUP, OTHER_GROUP})
#: The label each aggregate kind's group is exported under.
KIND_LABEL = {TEAM_DAY: "team", OPEN_PIPELINE: "team", STAGE_STINT: "team", WATERFALL: "team",
              OWNER_QUOTA: "owner", OWNER_WON: "owner", SOURCE_DAY: "source",
              LEAD_SOURCE_DAY: "source", PRODUCT_DAY: "product", COMPETITOR_DAY: "competitor",
              CHURN_TO_COMPETITOR: "competitor", TEAM_ACTIVITY: "team", OWNER_ACTIVITY: "owner",
              OWNER_DAY: "owner", OWNER_OPEN: "owner"}
_DIMENSION = {SOURCE_DAY: "source", PRODUCT_DAY: "product"}


@dataclass(slots=True)
class Snapshot:
    """Aggregates of the partitions a worker owns, summed over partitions."""

    buckets: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    open: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)
    dimensions: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)
    stints: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)
    waterfall: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)
    competitors: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    churned_to: dict[tuple[str, int], int] = field(default_factory=dict)
    new_customers: dict[int, int] = field(default_factory=dict)
    churned: dict[int, int] = field(default_factory=dict)
    new_churned: dict[int, int] = field(default_factory=dict)
    buyer_deltas: dict[int, int] = field(default_factory=dict)
    quota_cents: dict[tuple[str, str], int] = field(default_factory=dict)
    quota_team: dict[tuple[str, str], str] = field(default_factory=dict)
    owner_won: dict[tuple[str, str], int] = field(default_factory=dict)
    owner_kept: dict[str, bool] = field(default_factory=dict)
    leads: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    bands: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    activities: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    owner_activities: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    owner_deals: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    owner_open: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    #: The roster: owner -> (name, team) of the owner's latest ``rep.updated``.
    owner_profiles: dict[str, tuple[str, str]] = field(default_factory=dict)
    open_leads: list[ScoreInputs] = field(default_factory=list)
    latest_event_ms: int | None = None
    partitions: frozenset[int] = frozenset()
    folded: dict[str, set[str]] = field(default_factory=dict)

    def merge(self, other: Snapshot) -> None:
        """Take the account and owner aggregates of another table's snapshot."""
        for name in ("new_customers", "churned", "new_churned", "churned_to", "buyer_deltas",
                     "quota_cents", "quota_team", "owner_won", "owner_kept", "leads", "bands",
                     "activities", "owner_activities", "owner_profiles"):
            if getattr(other, name):
                setattr(self, name, getattr(other, name))
        for label, values in other.folded.items():
            self.folded[label] = self.folded.get(label, set()) | values


def combined(snapshots: Sequence[Snapshot]) -> Snapshot:
    """One snapshot of every table's: the first (the deals') with the others' account and
    owner aggregates merged in and the latest event time of all; the inputs are left as
    they are (they may be cached)."""
    first, *others = snapshots
    latest = [s.latest_event_ms for s in snapshots if s.latest_event_ms is not None]
    snap = replace(first, folded=dict(first.folded), latest_event_ms=max(latest, default=None))
    for other in others:
        snap.merge(other)
    return snap


def _split(part: str) -> tuple[int, str]:
    day, _, name = part.partition(":")
    return int(day), name


def _count(target: dict[Any, int], key: Any, n: int) -> None:
    target[key] = target.get(key, 0) + n


#: An aggregate summed over partitions: (kind, group, part).
Cell = tuple[str, str, str]


def update_cell(cells: dict[Cell, Any], parsed: tuple[str, int, str, str], old: Any,
                new: Any) -> None:
    """Move the sum over partitions of one aggregate from a partition's ``old`` value
    (None: the record did not exist) to its ``new`` one. Clocks (``t``) take the max:
    a partition's clock only moves forward."""
    kind, _, group, part = parsed
    cell = (kind, group, part)
    current = cells.get(cell)
    if kind == CLOCK:
        cells[cell] = new if current is None or new > current else current
    elif current is None:
        cells[cell] = list(new) if old is None else [n - o for n, o in zip(new, old, strict=True)]
    elif old is None:
        cells[cell] = [c + n for c, n in zip(current, new, strict=True)]
    else:
        cells[cell] = [c + n - o for c, n, o in zip(current, new, old, strict=True)]


def merge_cells(items: Iterable[tuple[str | tuple[str, int, str, str], Any]],
                active_partitions: Iterable[int]) -> dict[Cell, Any]:
    """Sum aggregate records ``(key, {"g":..., "v":...})`` of the given partitions per
    cell; a key may come already parsed (see :func:`~stream_app.kpi.fold.parse_aggregate_key`).
    Position marks (``p``) are not KPIs and are left out."""
    owned = frozenset(active_partitions)
    cells: dict[Cell, Any] = {}
    for key, record in items:
        if record is None:
            continue
        parsed = key if isinstance(key, tuple) else parse_aggregate_key(key)
        if parsed is None or parsed[1] not in owned or parsed[0] == POSITION:
            continue
        update_cell(cells, parsed, None, record["v"])
    return cells


def snapshot_from_aggregates(
    items: Iterable[tuple[str | tuple[str, int, str, str], Any]],
    active_partitions: Iterable[int],
    keep: Callable[[str, str], bool] | None = None,
) -> Snapshot:
    """The snapshot of aggregate records of the given partitions (see
    :func:`merge_cells` and :func:`snapshot_from_cells`)."""
    owned = frozenset(active_partitions)
    return snapshot_from_cells(merge_cells(items, owned), owned, keep)


def snapshot_from_cells(
    cells: Mapping[Cell, Any],
    partitions: Iterable[int],
    keep: Callable[[str, str], bool] | None = None,
) -> Snapshot:
    """The snapshot of cells already summed over ``partitions``.

    A group whose label value ``keep(label, value)`` refuses is summed into
    :data:`OTHER_GROUP`; :attr:`Snapshot.folded` holds such values per label (a value
    folded in several tables counts once). A data value equal to a reserved one
    (``all``, ``(other)``) is exported with a trailing "_".
    """
    snap = Snapshot(partitions=frozenset(partitions))
    folded: dict[str, set[str]] = defaultdict(set)
    for (kind, group, part), value in cells.items():
        if kind == OWNER_PROFILE:
            _owner_profile(snap, group, part, value, keep)
            continue
        if kind in (OWNER_QUOTA, OWNER_WON):
            _owner_aggregate(snap, kind, group, part, value, keep, folded)
            continue
        label = KIND_LABEL.get(kind)
        if label is not None:
            group = _exported(label, group, keep, folded)
        if kind == TEAM_DAY:
            add_vector(snap.buckets, (group, int(part)), value)
        elif kind == OPEN_PIPELINE:
            day, stage = _split(part)
            add_vector(snap.open, (group, stage, day), value)
        elif kind in _DIMENSION:
            add_vector(snap.dimensions, (_DIMENSION[kind], group, int(part)), value)
        elif kind == STAGE_STINT:
            day, stage = _split(part)
            add_vector(snap.stints, (group, stage, day), value)
        elif kind == WATERFALL and ":" in part:
            day, movement = _split(part)
            add_vector(snap.waterfall, (group, movement, day), value)
        elif kind == COMPETITOR_DAY:
            add_vector(snap.competitors, (group, int(part)), value)
        elif kind == CHURN_TO_COMPETITOR:
            _count(snap.churned_to, (group, int(part)), value[0])
        elif kind == NEW_CUSTOMER:
            _count(snap.new_customers, int(part), value[0])
        elif kind == CHURN:
            _count(snap.new_churned if group == NEW_CUSTOMER_CHURN else snap.churned, int(part),
                   value[0])
        elif kind == ACTIVE_CUSTOMERS:
            _count(snap.buyer_deltas, int(part), value[0])
        elif kind == LEAD_SOURCE_DAY:
            add_vector(snap.leads, (group, int(part)), value)
        elif kind == LEAD_BAND:
            add_vector(snap.bands, (group, int(part)), value)
        elif kind == TEAM_ACTIVITY:
            add_vector(snap.activities, (group, int(part)), value)
        elif kind == OWNER_ACTIVITY:
            add_vector(snap.owner_activities, (group, int(part)), value)
        elif kind == OWNER_DAY:
            add_vector(snap.owner_deals, (group, int(part)), value)
        elif kind == OWNER_OPEN:
            add_vector(snap.owner_open, (group, part), value)
        elif kind == CLOCK and (snap.latest_event_ms is None or value > snap.latest_event_ms):
            snap.latest_event_ms = value
    snap.folded = dict(folded)
    return snap


def _exported(label: str, value: str, keep: Callable[[str, str], bool] | None,
              folded: dict[str, set[str]] | None) -> str:
    """A label value as exported: :data:`OTHER_GROUP` when ``keep`` refuses it (noted in
    ``folded`` when given), a reserved value with a trailing "_", else itself."""
    if keep is not None and not keep(label, value):
        if folded is not None:
            folded[label].add(value)
        return OTHER_GROUP
    return value + "_" if value in RESERVED_GROUPS else value


def _owner_profile(snap: Snapshot, owner: str, part: str, value: list[int],
                   keep: Callable[[str, str], bool] | None) -> None:
    """An owner's roster profile, for owners and teams the caps admit (a profile is not a
    KPI: an owner the cap refuses has no name to show, and is not counted as folded)."""
    if not value[0] or (keep is not None and not keep("owner", owner)):
        return
    name, team = json.loads(part)
    snap.owner_profiles[_exported("owner", owner, None, None)] = (
        name, _exported("team", team or NO_VALUE, keep, None))


def _owner_aggregate(snap: Snapshot, kind: str, owner: str, part: str, value: list[int],
                     keep: Callable[[str, str], bool] | None,
                     folded: dict[str, set[str]]) -> None:
    """Quotas and wins stay per owner (attainment is decided per owner); the owner and
    team caps are applied when they are exported."""
    if owner not in snap.owner_kept:
        snap.owner_kept[owner] = keep is None or keep("owner", owner)
        if not snap.owner_kept[owner]:
            folded["owner"].add(owner)
    if kind == OWNER_WON:
        _count(snap.owner_won, (owner, part), value[0])
        return
    if not value[1]:
        return
    period, _, team = part.partition("|")
    _count(snap.quota_cents, (owner, period), value[0])
    snap.quota_team[(owner, period)] = _exported("team", team, keep, folded)
