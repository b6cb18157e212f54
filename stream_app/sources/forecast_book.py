"""The deal states the forecast reads, kept beside the owners' table.

Every deal event is re-keyed to one key of ``PULSE_TOPIC_FORECAST_DEALS``, so a single
partition folds every deal of the organisation (without pruning its marks, so the
states can be cut at any earlier day). The worker owning that partition keeps the
states here and hands them to the report, which forecasts from them alone; the other
workers export no forecast, so a sum over workers stays exact.
"""

from __future__ import annotations

__all__ = ["FORECAST_KEY", "ForecastBook"]

from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from stream_app.kpi.calendar import Calendar
from stream_app.kpi.deals import DealState
from stream_app.kpi.fold import entity_key, record_of
from stream_app.kpi.forecast_report import ForecastBasis
from stream_app.kpi.kinds import FORECAST_ENTITY
from stream_app.kpi.money import Pricing
from stream_app.kpi.snapshot import Snapshot, exported_label

#: The message key of every re-keyed deal event: one partition holds them all.
FORECAST_KEY = "forecast"


class ForecastBook:
    """Deal states of the forecast partition by partition, and the local days on which
    they changed (what lets the report tell which of its cached forecasts still hold)."""

    _PREFIX = entity_key(FORECAST_ENTITY, "")

    def __init__(self, pricing: Pricing, calendar: Calendar):
        self._pricing, self._calendar = pricing, calendar
        self._states: dict[int, dict[str, DealState]] = defaultdict(dict)
        self._partitions: dict[str, int] = {}
        self._change_days: dict[int, int] = defaultdict(int)
        self._teams: set[str] = set()
        self._owners: set[str] = set()
        self._generation = 0
        self._version = 0
        self._basis: tuple[Any, ForecastBasis] | None = None
        self._named: tuple[Hashable, dict[str, str], dict[str, str],
                           tuple[Hashable, ...]] | None = None

    @property
    def version(self) -> int:
        """Moves whenever a state or the set of states changed."""
        return self._version

    def note(self, partition: int, state: Any) -> None:
        """A state after a fold of the owners' table: kept when it is a deal's."""
        if not isinstance(state, DealState):
            return
        states = self._states[partition]
        before = states.get(state.deal_id)
        if before is state or before == state:
            return
        states[state.deal_id] = state
        self._partitions[entity_key(FORECAST_ENTITY, state.deal_id)] = partition
        known = set() if before is None else set(before.marks())
        new = [at for at, event_id in state.marks() if (at, event_id) not in known]
        # a change with no new event (none is expected) moves every cut: day 0
        self._change_days[self._calendar.day_of(min(new)) if new else 0] += 1
        self._note_labels(state)
        self._version += 1

    def note_key(self, key: str, partition: int) -> None:
        """Where a restored deal state lives."""
        if key.startswith(self._PREFIX):
            self._partitions[key] = partition

    def rebuild(self, records: Mapping[str, Any]) -> None:
        """The deal states again, from the restored table."""
        self._generation += 1
        self._version += 1
        self._states.clear()
        self._change_days.clear()
        for key, partition in list(self._partitions.items()):
            record = records.get(key)
            if record is None:
                continue
            raw = record_of(record)
            state = DealState.from_json(raw["v"])
            self._states[partition][state.deal_id] = state
            self._note_labels(state)

    def _labels(self, keep: Callable[[str, str], bool] | None, labels_version: Hashable
                ) -> tuple[dict[str, str], dict[str, str], tuple[Hashable, ...]]:
        """The exported name of every team and owner, and their sorted items; read again
        when a team or owner was added or ``labels_version`` moved (always when None)."""
        stamp = (labels_version, len(self._teams), len(self._owners))
        if labels_version is None or self._named is None or self._named[0] != stamp:
            names = {team: exported_label("team", team, keep) for team in self._teams}
            owners = {owner: exported_label("owner", owner, keep) for owner in self._owners}
            labelled = (tuple(sorted(names.items())), tuple(sorted(owners.items())))
            self._named = (stamp, names, owners, labelled)
        return self._named[1], self._named[2], self._named[3]

    def _note_labels(self, state: DealState) -> None:
        if state.created is not None:
            self._teams.add(str(state.created[2]["team"]))
            self._owners.add(str(state.created[2]["owner_id"]))
        self._owners.update(owner for _, _, owner in state.owners)

    def contribute(self, snapshot: Snapshot, partitions: frozenset[int],
                   keep: Callable[[str, str], bool] | None = None,
                   labels_version: Hashable = None) -> None:
        """The deal states of the exported ``partitions``, if they hold any (the very
        basis of the last call while no state and no exported name changed)."""
        held = [p for p in sorted(partitions) if self._states.get(p)]
        if not held:
            return
        names, owners, labelled = self._labels(keep, labels_version)
        key = (self._version, tuple(held), labelled)
        if self._basis is None or self._basis[0] != key:
            states = tuple(state for p in held for state in self._states[p].values())
            self._basis = (key, ForecastBasis(
                states, tuple(sorted(self._change_days.items())), self._generation, names,
                self._pricing, self._calendar, owners))
        snapshot.forecast = self._basis[1]

