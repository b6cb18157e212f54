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

__all__ = ["CLOSING", "NO_CATEGORY", "PUSHED", "SLIPPED", "PlanKpis", "plan_rows"]

from collections import defaultdict
from collections.abc import Iterable, Mapping
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


def plan_rows(pairs: Iterable[tuple[DealState, DealPath | None]], day: int,
              periods: Mapping[str, tuple[int, int]], calendar: Calendar,
              team_names: Mapping[str, str]) -> tuple[PlanKpis, ...]:
    """Slipped, pushed and closing open deals at T's local ``day`` per group, for each
    period name -> (first day, first day after)."""
    sums: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0])

    def add(team: str, kind: str, period: str, category: str, cents: int) -> None:
        for group in (team_names.get(team, team), _ALL):
            row = sums[(group, kind, period, category)]
            row[0] += 1
            row[1] += cents

    for state, path in pairs:
        if path is None or path.close is not None or not state.plans:
            continue
        expected, category = state.plan_at()
        if expected is None:
            continue
        close_day = date_day(expected)
        if close_day < day:
            add(path.team, SLIPPED, "", "", path.open_cents)
        for period, (start, end) in periods.items():
            if day <= close_day < end:
                add(path.team, CLOSING, period, category or NO_CATEGORY, path.open_cents)
            elif close_day >= end and _was_inside(state, calendar.day_start_ms(start),
                                                  start, end):
                add(path.team, PUSHED, period, "", path.open_cents)
    return tuple(PlanKpis(group, kind, period, category, deals, cents)
                 for (group, kind, period, category), (deals, cents) in sorted(sums.items()))


def _was_inside(state: DealState, start_ms: int, start: int, end: int) -> bool:
    """Whether the expected close in effect at ``start_ms``, or one set since, fell in
    days ``start .. end - 1``."""
    at_start, _ = state.plan_at(start_ms - 1)
    candidates = [at_start] + [close for at, _, close, _ in state.plans if at >= start_ms]
    return any(close is not None and start <= date_day(close) < end for close in candidates)
