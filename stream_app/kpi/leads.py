"""Per-lead state and its contributions: conversion by source, conversion by score band,
and the inputs of a lead's live score.

The state keeps the earliest ``lead.created``, the set of engagements (by event id)
and the earliest close (``lead.converted`` or ``lead.disqualified``), each ordered
by (event time, event id), so any order and repetition of a lead's events folds to
the same state. Engagements after the close do not count.
"""

from __future__ import annotations

__all__ = [
    "LeadState",
    "ScoreInputs",
    "apply_lead_event",
    "hot_crossings",
    "lead_contributions",
    "score_inputs",
]

from bisect import insort
from dataclasses import dataclass, replace
from typing import Any

from stream_app.events.models import LeadConverted, LeadCreated, LeadEngaged, LeadEvent
from stream_app.kpi.calendar import UTC_CALENDAR, Calendar
from stream_app.kpi.deals import Contributions, earliest
from stream_app.kpi.kinds import LEAD_BAND, LEAD_SOURCE_DAY
from stream_app.kpi.scoring import ScoringRules
from stream_app.kpi.windows import ms_from_datetime


@dataclass(frozen=True, slots=True)
class LeadState:
    """``created`` = (time_ms, event_id, info); ``engagements`` = sorted (time_ms,
    event_id, action); ``closed`` = (time_ms, event_id, "converted" | "disqualified")."""

    lead_id: str
    created: tuple[int, str, dict[str, Any]] | None = None
    engagements: tuple[tuple[int, str, str], ...] = ()
    closed: tuple[int, str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the state table."""
        return {"id": self.lead_id, "c": list(self.created) if self.created else None,
                "e": [list(e) for e in self.engagements],
                "x": list(self.closed) if self.closed else None}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LeadState:
        """Inverse of :meth:`to_json`."""
        return cls(lead_id=raw["id"],
                   created=tuple(raw["c"]) if raw["c"] else None,
                   engagements=tuple(tuple(e) for e in raw["e"]),
                   closed=tuple(raw["x"]) if raw["x"] else None)


@dataclass(frozen=True, slots=True)
class ScoreInputs:
    """What the live score of an open lead needs: its fit points, its engagements as
    (time_ms, action) in that order, and when it last turned hot (None if never)."""

    source: str
    fit: float
    engagements: tuple[tuple[int, str], ...]
    hot_since_ms: int | None


def apply_lead_event(state: LeadState, event: LeadEvent) -> LeadState:
    """Fold one lead event into the state; commutative and idempotent per event."""
    at = ms_from_datetime(event.time)
    if isinstance(event, LeadCreated):
        d = event.data
        info = {"source": d.source, "owner_id": d.owner_id, "team": d.team,
                "industry": d.industry, "company_size": d.company_size,
                "job_title": d.job_title}
        return replace(state, created=earliest(state.created, (at, event.id, info)))
    if isinstance(event, LeadEngaged):
        if any(e[1] == event.id for e in state.engagements):
            return state
        return replace(state, engagements=tuple(sorted(
            (*state.engagements, (at, event.id, event.data.action)))))
    kind = "converted" if isinstance(event, LeadConverted) else "disqualified"
    return replace(state, closed=earliest(state.closed, (at, event.id, kind)))


def _counted(state: LeadState) -> list[tuple[int, str, str]]:
    """Engagements before the close (all of them while the lead is open)."""
    if state.closed is None:
        return list(state.engagements)
    return [e for e in state.engagements if e[:2] < state.closed[:2]]


def _fit(state: LeadState, rules: ScoringRules) -> float:
    assert state.created is not None
    info = state.created[2]
    return rules.fit_points(info.get("industry"), info.get("company_size"),
                            info.get("job_title"))


def hot_crossings(state: LeadState, rules: ScoringRules) -> list[tuple[int, str]]:
    """(time_ms, event_id) of each event that took the lead from below the hot threshold
    to at or above it: its ``lead.created`` (fit alone) or an engagement. Between
    events a score only decays, so it can only cross upward at one of them."""
    last = _latest_crossings[0]
    if last is not None and last[0] is state and last[1] is rules:
        return list(last[2])
    crossings = _crossings(state, rules)
    _latest_crossings[0] = (state, rules, tuple(crossings))
    return crossings


#: The latest :func:`hot_crossings` answer, for the same state object: a fold asks it
#: twice (the lead book's live score, then the ``lead.hot`` messages).
_latest_crossings: list[tuple[LeadState, ScoringRules, tuple[tuple[int, str], ...]] | None] = [
    None]


def _crossings(state: LeadState, rules: ScoringRules) -> list[tuple[int, str]]:
    if state.created is None:
        return []
    fit = _fit(state, rules)
    created_at, created_id, _ = state.created
    crossings: list[tuple[int, str]] = []
    if fit >= rules.hot_threshold:
        crossings.append((created_at, created_id))
    seen: list[tuple[int, str]] = []
    for at, event_id, action in _counted(state):
        if at < created_at:
            insort(seen, (at, action))
            continue
        before = rules.score_in_order(fit, seen, at)
        insort(seen, (at, action))
        after = rules.score_in_order(fit, seen, at)
        if before < rules.hot_threshold <= after:
            crossings.append((at, event_id))
    return crossings


def score_inputs(state: LeadState, rules: ScoringRules) -> ScoreInputs | None:
    """Inputs of the live score while the lead is open (None otherwise)."""
    if state.created is None or state.closed is not None:
        return None
    crossings = hot_crossings(state, rules)
    return ScoreInputs(str(state.created[2]["source"]), _fit(state, rules),
                       tuple(sorted((at, action) for at, _, action in state.engagements)),
                       crossings[-1][0] if crossings else None)


def lead_contributions(state: LeadState, rules: ScoringRules,
                       calendar: Calendar = UTC_CALENDAR) -> Contributions:
    """``(LEAD_SOURCE_DAY, source, day)``: created on the creation day, converted or
    disqualified on the close day; ``(LEAD_BAND, band, close_day)``: 1 closed and 1 if
    converted, in the
    band of the lead's score at its close."""
    if state.created is None:
        return {}
    source = str(state.created[2]["source"])
    day_of = calendar.day_of
    out: dict[tuple[str, str, Any], tuple[int, ...]] = {
        (LEAD_SOURCE_DAY, source, day_of(state.created[0])): (1, 0, 0)}
    if state.closed is not None:
        closed_at, _, kind = state.closed
        converted = int(kind == "converted")
        key = (LEAD_SOURCE_DAY, source, day_of(closed_at))
        previous = out.get(key, (0, 0, 0))
        out[key] = (previous[0], previous[1] + converted, previous[2] + 1 - converted)
        score = rules.score(_fit(state, rules), [(at, a) for at, _, a in _counted(state)],
                            closed_at)
        out[(LEAD_BAND, rules.band(score), day_of(closed_at))] = (1, converted)
    return out
