"""The roster: who each CRM owner id is (``rep.updated``), state and aggregate.

:class:`RepState` keeps an owner's latest ``rep.updated`` by (event time, event id), so
any order and any repeat give the same profile. It contributes ``(OWNER_PROFILE,
owner, '["name", "team"]')`` = (1,): a change of profile moves the 1 to the new key, so
the sum over partitions holds exactly one profile per owner.
"""

from __future__ import annotations

__all__ = ["RepState", "apply_rep_update", "profile_part", "rep_contributions"]

import json
from dataclasses import dataclass, replace
from typing import Any

from stream_app.kpi.deals import Contributions
from stream_app.kpi.kinds import OWNER_PROFILE


@dataclass(frozen=True, slots=True)
class RepState:
    """An owner's profile: (time_ms, event_id, name, team or None) of the latest
    ``rep.updated``."""

    owner_id: str
    profile: tuple[int, str, str, str | None] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the state table."""
        return {"id": self.owner_id, "p": list(self.profile) if self.profile else None}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RepState:
        """Inverse of :meth:`to_json`."""
        profile = raw.get("p")
        return cls(raw["id"], (int(profile[0]), str(profile[1]), str(profile[2]),
                               profile[3]) if profile else None)


def apply_rep_update(state: RepState, time_ms: int, event_id: str, name: str,
                     team: str | None) -> RepState:
    """Keep the latest profile by (time, id)."""
    if state.profile is not None and state.profile[:2] >= (time_ms, event_id):
        return state
    return replace(state, profile=(time_ms, event_id, name, team))


def profile_part(name: str, team: str | None) -> str:
    """The aggregate part that carries a profile (JSON: names may hold any printable)."""
    return json.dumps([name, team], ensure_ascii=False)


def rep_contributions(state: RepState) -> Contributions:
    """``(OWNER_PROFILE, owner, profile_part(name, team))`` = (1,)."""
    if state.profile is None:
        return {}
    _, _, name, team = state.profile
    return {(OWNER_PROFILE, state.owner_id, profile_part(name, team)): (1,)}
