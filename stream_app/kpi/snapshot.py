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
    "apply_cell_changes",
    "exported_label",
    "merge_cells",
    "snapshot_from_aggregates",
    "snapshot_from_cells",
    "update_cell",
]

import itertools
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from stream_app.kpi.accounts import NEW_CUSTOMER_CHURN
from stream_app.kpi.deals import NO_VALUE, add_vector
from stream_app.kpi.fold import parse_aggregate_key, record_of
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
from stream_app.kpi.trailing import DayCells, GroupCells, OwnerCells

if TYPE_CHECKING:
    from stream_app.kpi.forecast_report import ForecastBasis

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

    buckets: dict[tuple[str, int], list[int]] = field(default_factory=DayCells)
    open: dict[tuple[str, str, int], list[int]] = field(default_factory=DayCells)
    dimensions: dict[tuple[str, str, int], list[int]] = field(default_factory=DayCells)
    stints: dict[tuple[str, str, int], list[int]] = field(default_factory=DayCells)
    waterfall: dict[tuple[str, str, int], list[int]] = field(default_factory=DayCells)
    competitors: dict[tuple[str, int], list[int]] = field(default_factory=DayCells)
    churned_to: dict[tuple[str, int], int] = field(default_factory=dict)
    new_customers: dict[int, int] = field(default_factory=dict)
    churned: dict[int, int] = field(default_factory=dict)
    new_churned: dict[int, int] = field(default_factory=dict)
    buyer_deltas: dict[int, int] = field(default_factory=dict)
    #: Quotas and won amounts by (owner, period): :class:`OwnerCells` know the owners
    #: changed (a quota's team changes with its amount).
    quota_cents: dict[tuple[str, str], int] = field(default_factory=OwnerCells)
    quota_team: dict[tuple[str, str], str] = field(default_factory=dict)
    owner_won: dict[tuple[str, str], int] = field(default_factory=OwnerCells)
    owner_kept: dict[str, bool] = field(default_factory=dict)
    leads: dict[tuple[str, int], list[int]] = field(default_factory=DayCells)
    bands: dict[tuple[str, int], list[int]] = field(default_factory=DayCells)
    activities: dict[tuple[str, int], list[int]] = field(default_factory=DayCells)
    owner_activities: dict[tuple[str, int], list[int]] = field(default_factory=DayCells)
    owner_deals: dict[tuple[str, int], list[int]] = field(default_factory=DayCells)
    owner_open: dict[tuple[str, str], list[int]] = field(default_factory=GroupCells)
    #: The roster: owner -> (name, team) of the owner's latest ``rep.updated``.
    owner_profiles: dict[str, tuple[str, str]] = field(default_factory=dict)
    open_leads: list[ScoreInputs] = field(default_factory=list)
    #: The deal states the forecast reads, on the worker holding the forecast partition.
    forecast: ForecastBasis | None = None
    latest_event_ms: int | None = None
    partitions: frozenset[int] = frozenset()
    folded: dict[str, set[str]] = field(default_factory=dict)
    #: Per field name, a number that changes whenever the field's content may have (a
    #: field without one is read again by every report).
    versions: dict[str, int] = field(default_factory=dict, compare=False)

    def merge(self, other: Snapshot) -> None:
        """Take the account and owner aggregates of another table's snapshot."""
        for name in _MERGED:
            if getattr(other, name):
                setattr(self, name, getattr(other, name))
                if name in other.versions:
                    self.versions[name] = other.versions[name]
                else:
                    self.versions.pop(name, None)
        for label, values in other.folded.items():
            self.folded[label] = self.folded.get(label, set()) | values


#: The fields a snapshot takes from another table's (:meth:`Snapshot.merge`).
_MERGED = ("new_customers", "churned", "new_churned", "churned_to", "buyer_deltas",
           "quota_cents", "quota_team", "owner_won", "owner_kept", "leads", "bands",
           "activities", "owner_activities", "owner_profiles")
#: The fields of a snapshot that hold aggregates (what :attr:`Snapshot.versions` covers).
_AGGREGATE_FIELDS = ("buckets", "open", "dimensions", "stints", "waterfall", "competitors",
                     "owner_deals", "owner_open", *_MERGED)
_versions = itertools.count(1)


def combined(snapshots: Sequence[Snapshot]) -> Snapshot:
    """One snapshot of every table's: the first (the deals') with the others' account and
    owner aggregates merged in and the latest event time of all; the inputs are left as
    they are (they may be cached)."""
    first, *others = snapshots
    latest = [s.latest_event_ms for s in snapshots if s.latest_event_ms is not None]
    snap = replace(first, folded=dict(first.folded), latest_event_ms=max(latest, default=None),
                   versions=dict(first.versions))
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
    """Sum aggregate records ``(key, {"g":..., "v":...})`` (or their text) of the given
    partitions per cell; a key may come already parsed (see
    :func:`~stream_app.kpi.fold.parse_aggregate_key`). Position marks (``p``) are not
    KPIs and are left out."""
    owned = frozenset(active_partitions)
    cells: dict[Cell, Any] = {}
    for key, record in items:
        if record is None:
            continue
        parsed = key if isinstance(key, tuple) else parse_aggregate_key(key)
        if parsed is None or parsed[1] not in owned or parsed[0] == POSITION:
            continue
        update_cell(cells, parsed, None, record_of(record)["v"])
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
        elif kind in (OWNER_QUOTA, OWNER_WON):
            _owner_aggregate(snap, kind, group, part, value, keep, folded)
        else:
            _add_cell(snap, kind, group, part, value, keep, folded)
    snap.folded = dict(folded)
    stamp = next(_versions)
    snap.versions = dict.fromkeys(_AGGREGATE_FIELDS, stamp)
    return snap


#: Kinds a snapshot cannot take a change of in place (an owner's profile is decided
#: per owner): a change to one builds the table's snapshot again.
_NOT_ADDITIVE = frozenset({OWNER_PROFILE})


def apply_cell_changes(snap: Snapshot, changes: Sequence[tuple[Cell, Any, Any]],
                       keep: Callable[[str, str], bool] | None = None) -> bool:
    """Move ``snap`` (built by :func:`snapshot_from_cells` with the same ``keep``) from
    each cell's ``old`` sum (None: the cell did not exist) to its ``new`` one, in place;
    False, leaving ``snap`` as it was, when a change is of a kind that needs the
    snapshot built again."""
    if any(cell[0] in _NOT_ADDITIVE for cell, _, _ in changes):
        return False
    folded: dict[str, set[str]] = defaultdict(set, snap.folded)
    touched: set[str] = set()
    for (kind, group, part), old, new in changes:
        if kind == CLOCK or old is None:
            delta = new
        else:
            delta = [n - o for n, o in zip(new, old, strict=True)]
        if kind == OWNER_WON:
            _owner_aggregate(snap, kind, group, part, delta, keep, folded)
            touched.update(("owner_won", "owner_kept"))
        elif kind == OWNER_QUOTA:
            _owner_quota_change(snap, group, part, old, new, keep, folded)
            touched.update(("quota_cents", "quota_team", "owner_kept"))
        else:
            touched.add(_add_cell(snap, kind, group, part, delta, keep, folded))
    snap.folded = dict(folded)
    stamp = next(_versions)
    for name in touched:
        snap.versions[name] = stamp
    return True


def _add(target: dict[Any, list[int]], key: Any, vector: Sequence[int]) -> None:
    if isinstance(target, (DayCells, GroupCells)):
        target.add(key, vector)
    else:
        add_vector(target, key, vector)


def _add_cell(snap: Snapshot, kind: str, group: str, part: str, value: Any,
              keep: Callable[[str, str], bool] | None, folded: dict[str, set[str]]) -> str:
    """Add one cell's value (or a change of it) to the snapshot; a clock takes the
    max. Returns the name of the field changed ("" for none)."""
    label = KIND_LABEL.get(kind)
    if label is not None:
        group = exported_label(label, group, keep, folded)
    if kind == TEAM_DAY:
        _add(snap.buckets, (group, int(part)), value)
        return "buckets"
    if kind == OPEN_PIPELINE:
        day, stage = _split(part)
        _add(snap.open, (group, stage, day), value)
        return "open"
    if kind in _DIMENSION:
        _add(snap.dimensions, (_DIMENSION[kind], group, int(part)), value)
        return "dimensions"
    if kind == STAGE_STINT:
        day, stage = _split(part)
        _add(snap.stints, (group, stage, day), value)
        return "stints"
    if kind == WATERFALL and ":" in part:
        day, movement = _split(part)
        _add(snap.waterfall, (group, movement, day), value)
        return "waterfall"
    if kind == COMPETITOR_DAY:
        _add(snap.competitors, (group, int(part)), value)
        return "competitors"
    if kind == CHURN_TO_COMPETITOR:
        _count(snap.churned_to, (group, int(part)), value[0])
        return "churned_to"
    if kind == NEW_CUSTOMER:
        _count(snap.new_customers, int(part), value[0])
        return "new_customers"
    if kind == CHURN:
        name = "new_churned" if group == NEW_CUSTOMER_CHURN else "churned"
        _count(getattr(snap, name), int(part), value[0])
        return name
    if kind == ACTIVE_CUSTOMERS:
        _count(snap.buyer_deltas, int(part), value[0])
        return "buyer_deltas"
    if kind == LEAD_SOURCE_DAY:
        _add(snap.leads, (group, int(part)), value)
        return "leads"
    if kind == LEAD_BAND:
        _add(snap.bands, (group, int(part)), value)
        return "bands"
    if kind == TEAM_ACTIVITY:
        _add(snap.activities, (group, int(part)), value)
        return "activities"
    if kind == OWNER_ACTIVITY:
        _add(snap.owner_activities, (group, int(part)), value)
        return "owner_activities"
    if kind == OWNER_DAY:
        _add(snap.owner_deals, (group, int(part)), value)
        return "owner_deals"
    if kind == OWNER_OPEN:
        _add(snap.owner_open, (group, part), value)
        return "owner_open"
    if kind == CLOCK and (snap.latest_event_ms is None or value > snap.latest_event_ms):
        snap.latest_event_ms = value
    return ""


def exported_label(label: str, value: str, keep: Callable[[str, str], bool] | None,
                   folded: dict[str, set[str]] | None = None) -> str:
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
    snap.owner_profiles[exported_label("owner", owner, None, None)] = (
        name, exported_label("team", team or NO_VALUE, keep, None))


def _owner_aggregate(snap: Snapshot, kind: str, owner: str, part: str, value: list[int],
                     keep: Callable[[str, str], bool] | None,
                     folded: dict[str, set[str]]) -> None:
    """Quotas and wins stay per owner (attainment is decided per owner); the owner and
    team caps are applied when they are exported."""
    _note_owner(snap, owner, keep, folded)
    if kind == OWNER_WON:
        _count(snap.owner_won, (owner, part), value[0])
        _touch(snap.owner_won, owner)
        return
    if not value[1]:
        return
    period, _, team = part.partition("|")
    _count(snap.quota_cents, (owner, period), value[0])
    snap.quota_team[(owner, period)] = exported_label("team", team, keep, folded)
    _touch(snap.quota_cents, owner)


def _touch(cells: Mapping[tuple[str, str], Any], owner: str) -> None:
    if isinstance(cells, OwnerCells):
        cells.touch(owner)


def _note_owner(snap: Snapshot, owner: str, keep: Callable[[str, str], bool] | None,
                folded: dict[str, set[str]]) -> None:
    """The owner cap's verdict on an owner with a quota or a win, noted once."""
    if owner not in snap.owner_kept:
        snap.owner_kept[owner] = keep is None or keep("owner", owner)
        if not snap.owner_kept[owner]:
            folded["owner"].add(owner)


def _owner_quota_change(snap: Snapshot, owner: str, part: str, old: list[int] | None,
                        new: list[int], keep: Callable[[str, str], bool] | None,
                        folded: dict[str, set[str]]) -> None:
    """An owner's quota cell moved from ``old`` to ``new`` ([cents, set]: only a set
    quota counts). A fold keeps one set quota cell per owner and period, so a quota
    that is no longer set leaves the snapshot, as from a build from scratch."""
    _note_owner(snap, owner, keep, folded)
    period, _, team = part.partition("|")
    key = (owner, period)
    if old is not None and old[1]:
        _count(snap.quota_cents, key, -old[0])
    if new[1]:
        _count(snap.quota_cents, key, new[0])
        snap.quota_team[key] = exported_label("team", team, keep, folded)
    elif old is not None and old[1]:
        snap.quota_cents.pop(key, None)
        snap.quota_team.pop(key, None)
    _touch(snap.quota_cents, owner)
