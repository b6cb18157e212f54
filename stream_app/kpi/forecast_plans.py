"""What the CRM's own plan says about the open deals at T: the expected close dates and
forecast categories carried by ``deal.created`` and ``deal.updated``.

With d = T's local date and a period (T's month or fiscal quarter) of dates
``start .. end - 1``, over the deals open at T (created, not closed, not deleted), each
with its latest expected close E and category (``(none)`` when never named):

- slipped: E before d (the close date passed and the deal is still open);
- closing in the period: d <= E < end, per category (the CRM's commit / best case /
  pipeline / omitted next to the model's forecast; their sum over categories against
  the remaining quota is the coverage of the pipeline expected to close);
- pushed out of the period: E on or after ``end`` while the expected close in effect at
  the period's start, or any set since, was inside the period.

Amounts are the deals' open amounts in reporting-currency cents.
"""

from __future__ import annotations

__all__ = ["CLOSING", "NO_CATEGORY", "PUSHED", "SLIPPED", "PlanKey", "PlanKpis", "deal_plan_rows",
           "plan_kpis"]

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stream_app.kpi.calendar import Calendar
from stream_app.kpi.deals import DealState
from stream_app.kpi.forecast import DealPath, date_day

#: The category of an open deal whose CRM never named one.
NO_CATEGORY = "(none)"
#: Row kinds.
SLIPPED, PUSHED, CLOSING = "slipped", "pushed", "closing"
_ALL = "all"


@dataclass(frozen=True, slots=True)
class PlanKpis:
    """Open deals of one group: ``kind`` slipped (``period`` and ``category`` empty),
    pushed (out of ``period``) or closing (in ``period``, per ``category``)."""

    group: str
    kind: str
    period: str
    category: str
    deals: int
    cents: int


#: A row of the plan: (group, kind, period, category).
PlanKey = tuple[str, str, str, str]


def plan_kpis(sums: Mapping[PlanKey, Sequence[int]]) -> tuple[PlanKpis, ...]:
    """The rows of (deals, cents) sums per key, in key order."""
    return tuple(PlanKpis(group, kind, period, category, deals, cents)
                 for (group, kind, period, category), (deals, cents) in sorted(sums.items()))


def deal_plan_rows(state: DealState, path: DealPath | None, day: int,
                   periods: Mapping[str, tuple[int, int]], calendar: Calendar,
                   team_names: Mapping[str, str]) -> tuple[tuple[PlanKey, int], ...]:
    """The rows one deal counts in at ``day`` (key, its open amount in cents): none
    unless it is open with an expected close."""
    if path is None or path.close is not None or not state.plans:
        return ()
    expected, category = state.plan_at()
    if expected is None:
        return ()
    close_day = date_day(expected)
    groups = (team_names.get(path.team, path.team), _ALL)
    cents = path.open_cents
    rows: list[tuple[PlanKey, int]] = []
    if close_day < day:
        rows.extend(((group, SLIPPED, "", ""), cents) for group in groups)
    for period, (start, end) in periods.items():
        if day <= close_day < end:
            rows.extend(((group, CLOSING, period, category or NO_CATEGORY), cents)
                        for group in groups)
        elif close_day >= end and _was_inside(state, calendar.day_start_ms(start), start, end):
            rows.extend(((group, PUSHED, period, ""), cents) for group in groups)
    return tuple(rows)


def _was_inside(state: DealState, start_ms: int, start: int, end: int) -> bool:
    """Whether the expected close in effect at ``start_ms``, or one set since, fell in
    days ``start .. end - 1``."""
    at_start, _ = state.plan_at(start_ms - 1)
    candidates = [at_start] + [close for at, _, close, _ in state.plans if at >= start_ms]
    return any(close is not None and start <= date_day(close) < end for close in candidates)
