"""Per-activity state (calls, emails, meetings) and its aggregates.

Each activity is one entity, keyed by the CRM's ``activity_id`` when the event has
one and by the CloudEvent id otherwise, so a repeated event (or the same CRM
activity sent again under another CloudEvent id) counts once. The state keeps the
earliest (event time, event id) version, so any order of repeats folds the same.

Contributions, each a vector of counts in :data:`ACTIVITY_KINDS` order:

- ``(TEAM_ACTIVITY, team, day)``: activities of the team logged that day;
- ``(OWNER_ACTIVITY, owner, day)``: activities of the owner logged that day.
"""

from __future__ import annotations

__all__ = ["ACTIVITY_KINDS", "ActivityState", "activity_contributions", "apply_activity_event"]

from dataclasses import dataclass, replace
from typing import Any

from stream_app.events.models import ACTIVITY_KINDS, ActivityLogged
from stream_app.kpi.calendar import UTC_CALENDAR, Calendar
from stream_app.kpi.deals import Contributions, earliest
from stream_app.kpi.kinds import OWNER_ACTIVITY, TEAM_ACTIVITY
from stream_app.kpi.windows import ms_from_datetime


@dataclass(frozen=True, slots=True)
class ActivityState:
    """``logged`` = (time_ms, event_id, owner_id, team, kind) of the earliest version."""

    activity_id: str
    logged: tuple[int, str, str, str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the state table."""
        return {"id": self.activity_id, "l": list(self.logged) if self.logged else None}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ActivityState:
        """Inverse of :meth:`to_json`."""
        return cls(activity_id=raw["id"],
                   logged=tuple(raw["l"]) if raw["l"] else None)


def apply_activity_event(state: ActivityState, event: ActivityLogged) -> ActivityState:
    """Fold one ``activity.logged`` into the activity's state (keeps the earliest)."""
    d = event.data
    candidate = (ms_from_datetime(event.time), event.id, d.owner_id, d.team, d.kind)
    return replace(state, logged=earliest(state.logged, candidate))


def activity_contributions(state: ActivityState, calendar: Calendar = UTC_CALENDAR
                           ) -> Contributions:
    """One count in the activity's kind, for its team and for its owner, on its day."""
    if state.logged is None:
        return {}
    at, _, owner, team, kind = state.logged
    vector = tuple(int(kind == k) for k in ACTIVITY_KINDS)
    day = calendar.day_of(at)
    return {(TEAM_ACTIVITY, team, day): vector, (OWNER_ACTIVITY, owner, day): vector}
