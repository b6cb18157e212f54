"""``make backtest``: how far ahead the monthly forecast can be trusted, on replays.

Each stream is replayed in event time through the worker's deal fold. At the start of
days 1, 8, 15 and 22 of each month, the forecast of the month's won amount is taken
(:mod:`stream_app.kpi.forecast`), next to two baselines computed from the same state:
the static weighted pipeline (won so far + open amount x the configured stage
probability) and the run rate (the mean won amount of the three months before), and the
forecast once more with the deals' expected closes ignored (what the CRM's dates add).
When the month has closed, each is compared to the won amount the month actually had:
the mean absolute percentage error over the months, per checkpoint day, goes to
``bench/forecast.json`` and a table. The fiscal quarters are scored the same way at the
first day of each of their 13 weeks (the run rate: three times the monthly one).

The generated stream's expected closes track the real ones (a winner's is its close day
off by a normal error of 7 days, pushed when it passes); Maven CRM has none.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from rich.progress import track

from stream_app.config import Settings, organisation_calendar, pricing
from stream_app.events.models import DealEvent, crm_event_adapter
from stream_app.importers.maven_crm import import_maven_crm
from stream_app.kpi.calendar import Calendar
from stream_app.kpi.deals import DealState, apply_deal_event
from stream_app.kpi.forecast import DealPath, ForecastSettings, deal_path, forecast_period
from stream_app.kpi.money import Pricing
from stream_app.kpi.windows import ms_from_datetime
from stream_app.tools.generator import GeneratorSettings, generate_events

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_DAYS = (1, 8, 15, 22)
#: Weeks of the fiscal quarter (their first days) the quarter's forecast is scored at.
CHECKPOINT_WEEKS = tuple(range(1, 14))
#: The weeks the quarter's table shows (bench/forecast.json has all 13).
TABLE_WEEKS = (1, 3, 5, 7, 9, 11, 13)
#: Months of history before the first month scored (the run rate needs three).
WARM_UP_MONTHS = 4
METHODS = ("pulse", "weighted_pipeline", "run_rate", "pulse_stage_age_only")
#: The methods the goal compares Pipeline Pulse with.
BASELINES = ("weighted_pipeline", "run_rate")
#: The generated stream's expected-close error (sd, days).
EXPECTED_CLOSE_ERROR_DAYS = 7.0


@dataclass
class _Period:
    start: int
    end: int
    #: checkpoint (day of the month, or week of the quarter) -> first day it forecasts on
    checkpoints: dict[int, int]
    #: how many months the monthly run rate is scaled by
    months: int = 1
    forecasts: dict[int, dict[str, float]] = field(default_factory=dict)


def _months(calendar: Calendar, first_day: int, last_day: int) -> list[_Period]:
    """The months after the warm-up that closed before ``last_day``."""
    months = []
    start, end = calendar.month_bounds(first_day)
    while end <= last_day:
        months.append(_Period(start, end, {c: start + c - 1 for c in CHECKPOINT_DAYS}))
        start, end = calendar.month_bounds(end)
    return months[WARM_UP_MONTHS:]


def _quarters(calendar: Calendar, first_day: int, last_day: int) -> list[_Period]:
    """The fiscal quarters beginning after the warm-up that closed before ``last_day``."""
    earliest = calendar.month_bounds(first_day)[0]
    for _ in range(WARM_UP_MONTHS):
        earliest = calendar.month_bounds(earliest)[1]
    year, quarter = calendar.fiscal_quarter(earliest)
    quarters: list[_Period] = []
    while True:
        start, end = calendar.quarter_bounds(year, quarter)
        if end > last_day:
            return quarters
        if start >= earliest:
            quarters.append(_Period(start, end, {week: start + 7 * (week - 1)
                                                 for week in CHECKPOINT_WEEKS}, months=3))
        year, quarter = (year, quarter + 1) if quarter < 4 else (year + 1, 1)


def _fold(states: dict[str, DealState], event: DealEvent) -> None:
    deal_id = event.data.deal_id
    states[deal_id] = apply_deal_event(states.get(deal_id) or DealState(deal_id), event,
                                       for_forecast=True)


def _paths(states: Iterable[DealState], prices: Pricing, calendar: Calendar) -> list[DealPath]:
    return [path for state in states
            if (path := deal_path(state, prices, calendar)) is not None]


def _won_between(paths: Sequence[DealPath], start: int, end: int) -> int:
    return sum(p.close[2] for p in paths if p.close and p.close[0] and start <= p.close[1] < end)


def _mape(periods: list[_Period], final: list[DealPath]) -> dict[str, dict[int, float]]:
    errors: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for period in periods:
        actual = _won_between(final, period.start, period.end)
        if actual <= 0:
            continue
        for checkpoint, values in period.forecasts.items():
            for method, value in values.items():
                errors[method][checkpoint].append(abs(value - actual) / actual)
    return {method: {c: sum(v) / len(v) for c, v in sorted(by_checkpoint.items())}
            for method, by_checkpoint in errors.items()}


def replay(events: list[dict[str, Any]], settings: Settings, label: str = "replay"
           ) -> dict[str, Any]:
    """The mean absolute percentage error of each method per checkpoint: ``month`` (per
    day of the month) and ``quarter`` (per week of the quarter), with the number of
    periods scored."""
    prices = pricing(settings)
    calendar = organisation_calendar(settings)
    probability = {stage: float(p) for stage, p in settings.stage_probabilities.items()}
    deals = sorted((cast(DealEvent, crm_event_adapter.validate_python(e)) for e in events
                    if e["type"].startswith("deal.")), key=lambda e: (e.time, e.id))
    times = [ms_from_datetime(e.time) for e in deals]
    first_day, last_day = calendar.day_of(times[0]), calendar.day_of(times[-1])
    scored = {"month": _months(calendar, first_day, last_day),
              "quarter": _quarters(calendar, first_day, last_day)}
    visits = sorted((day, checkpoint, kind, index)
                    for kind, periods in scored.items()
                    for index, period in enumerate(periods)
                    for checkpoint, day in period.checkpoints.items())
    states: dict[str, DealState] = {}
    folded = 0
    paths: list[DealPath] = []
    paths_day = None
    for day, checkpoint, kind, index in track(visits, description=f"{label}: checkpoints",
                                              console=Console(stderr=True)):
        period = scored[kind][index]
        if paths_day != day:
            cutoff = calendar.day_start_ms(day)
            while folded < len(deals) and times[folded] < cutoff:
                _fold(states, deals[folded])
                folded += 1
            paths, paths_day = _paths(states.values(), prices, calendar), day
        pulse = forecast_period(paths, day, period.start, period.end, ForecastSettings())
        plain = forecast_period(paths, day, period.start, period.end,
                                ForecastSettings(expected_close=False))
        won = _won_between(paths, period.start, day)
        weighted = won + sum(p.open_cents * probability.get(p.entries[-1][0], 0.0)
                             for p in paths if p.close is None or p.close[1] >= day)
        earlier = calendar.month_bounds(period.start - 1)
        history = []
        for _ in range(3):
            history.append(_won_between(paths, *earlier))
            earlier = calendar.month_bounds(earlier[0] - 1)
        period.forecasts[checkpoint] = {
            "pulse": pulse["all"].expected_cents, "weighted_pipeline": weighted,
            "run_rate": period.months * sum(history) / len(history),
            "pulse_stage_age_only": plain["all"].expected_cents}
    for event in deals[folded:]:
        _fold(states, event)
    final = _paths(states.values(), prices, calendar)
    return {kind: _mape(periods, final) | {"periods": sum(
        1 for p in periods if _won_between(final, p.start, p.end) > 0)}
        for kind, periods in scored.items()}


def _maven(datasets: Path) -> list[dict[str, Any]]:
    folder = datasets / "maven-crm"
    if not (folder / "sales_pipeline.csv").exists():
        raise SystemExit(f"backtest: {folder}/sales_pipeline.csv not found; set "
                         f"PULSE_DATASETS to the folder holding maven-crm/")
    events, _ = import_maven_crm(folder)
    return events


def _generated(expected_close_error_days: float) -> list[dict[str, Any]]:
    end = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    return list(generate_events(GeneratorSettings(
        seed=29, start=end - dt.timedelta(days=2 * 365), end=end, deals_per_day=8.0,
        leads_per_deal=0.0, activities_per_deal=0.0,
        expected_close_error_days=expected_close_error_days)))


def _table(results: dict[str, dict[str, Any]], kind: str, checkpoints: Sequence[int],
           heading: str) -> str:
    lines = ["| stream | method | " + " | ".join(f"{heading} {c}" for c in checkpoints) + " |",
             "|---|---|" + "---|" * len(checkpoints)]
    for stream, by_kind in results.items():
        for method in METHODS:
            errors = by_kind[kind].get(method, {})
            cells = [f"{100 * errors[c]:.1f}%" if c in errors else "-" for c in checkpoints]
            lines.append(f"| {stream} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the backtest and write the figures; with ``--strict``, exit 1 when the goal
    (below both baselines at every checkpoint) is not met."""
    parser = argparse.ArgumentParser(prog="python -m bench.backtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get(
        "PULSE_DATASETS", ROOT.parent / "shared" / "datasets")),
        help="folder holding maven-crm/ (default: ../shared/datasets or $PULSE_DATASETS)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "forecast.json",
                        help="where the figures go (default: bench/forecast.json)")
    parser.add_argument("--expected-close-error-days", type=float,
                        default=EXPECTED_CLOSE_ERROR_DAYS, metavar="SD",
                        help="how far the generated stream's expected closes miss a "
                        "winner's real close (normal error, sd in days; default: "
                        f"{EXPECTED_CLOSE_ERROR_DAYS:g}); 0 leaves them at creation + 60 days")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 unless the goal is met at every checkpoint")
    args = parser.parse_args(argv)
    settings = Settings(clock="event")
    streams = {"maven-crm": lambda: _maven(args.datasets),
               "generated": lambda: _generated(args.expected_close_error_days)}
    results: dict[str, dict[str, Any]] = {}
    for name, load in streams.items():
        results[name] = replay(load(), settings, name)
    met = all(by["month"]["pulse"].get(c, 1.0) < min(by["month"][b].get(c, 0.0)
                                                     for b in BASELINES)
              for by in results.values() for c in CHECKPOINT_DAYS)

    def errors(by_kind: dict[str, Any], kind: str, method: str) -> dict[str, float]:
        return {str(c): round(v, 4) for c, v in by_kind[kind].get(method, {}).items()}

    report = {"checkpoint_days": list(CHECKPOINT_DAYS),
              "checkpoint_weeks": list(CHECKPOINT_WEEKS), "goal_met": met,
              "generated_expected_close_error_days": args.expected_close_error_days,
              "streams": {name: {
                  **{f"mape_{method}": errors(by, "month", method) for method in METHODS},
                  "months_scored": by["month"]["periods"],
                  **{f"mape_quarter_{method}": errors(by, "quarter", method)
                     for method in METHODS},
                  "quarters_scored": by["quarter"]["periods"]}
                  for name, by in results.items()}}
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print("The month's forecast, mean absolute percentage error by day of the month:")
    print(_table(results, "month", CHECKPOINT_DAYS, "day"))
    print("\nThe fiscal quarter's forecast, by week of the quarter (all 13 weeks in "
          f"{args.output.name}):")
    print(_table(results, "quarter", TABLE_WEEKS, "week"))
    print(f"\ngoal (Pipeline Pulse below both baselines at every day of the month): "
          f"{'met' if met else 'not met'}; written to {args.output}")
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
