"""``make backtest``: how far ahead the monthly forecast can be trusted, on replays.

Each stream is replayed in event time through the worker's deal fold. At the start of
days 1, 8, 15 and 22 of each month, the forecast of the month's won amount is taken
(:mod:`stream_app.kpi.forecast`), next to two baselines computed from the same state:
the static weighted pipeline (won so far + open amount x the configured stage
probability) and the run rate (the mean won amount of the three months before), and the
forecast once more with the deals' expected closes ignored (what the CRM's dates add).
When the month has closed, each is compared to the won amount the month actually had:
the mean absolute percentage error over the months, per checkpoint day, goes to
``bench/forecast.json`` and a table.

The generated stream's expected closes track the real ones (a winner's is its close day
off by a normal error of 7 days, pushed when it passes); Maven CRM has none.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
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
#: Months of history before the first month scored (the run rate needs three).
WARM_UP_MONTHS = 4
METHODS = ("pulse", "weighted_pipeline", "run_rate", "pulse_stage_age_only")
#: The methods the goal compares Pipeline Pulse with.
BASELINES = ("weighted_pipeline", "run_rate")
#: The generated stream's expected-close error (sd, days).
EXPECTED_CLOSE_ERROR_DAYS = 7.0


@dataclass
class _Month:
    start: int
    end: int
    forecasts: dict[int, dict[str, float]] = field(default_factory=dict)


def _month_starts(calendar: Calendar, first_day: int, last_day: int) -> list[tuple[int, int]]:
    months = []
    start, end = calendar.month_bounds(first_day)
    while start <= last_day:
        months.append((start, end))
        start, end = calendar.month_bounds(end)
    return months


def _fold(states: dict[str, DealState], event: DealEvent) -> None:
    deal_id = event.data.deal_id
    states[deal_id] = apply_deal_event(states.get(deal_id) or DealState(deal_id), event,
                                       for_forecast=True)


def _paths(states: Iterable[DealState], prices: Pricing, calendar: Calendar) -> list[DealPath]:
    return [path for state in states
            if (path := deal_path(state, prices, calendar)) is not None]


def _won_between(paths: Sequence[DealPath], start: int, end: int) -> int:
    return sum(p.close[2] for p in paths if p.close and p.close[0] and start <= p.close[1] < end)


def replay(events: list[dict[str, Any]], settings: Settings, label: str = "replay"
           ) -> dict[str, dict[int, float]]:
    """The mean absolute percentage error of each method per checkpoint day."""
    prices = pricing(settings)
    calendar = organisation_calendar(settings)
    probability = {stage: float(p) for stage, p in settings.stage_probabilities.items()}
    deals = sorted((cast(DealEvent, crm_event_adapter.validate_python(e)) for e in events
                    if e["type"].startswith("deal.")), key=lambda e: (e.time, e.id))
    times = [ms_from_datetime(e.time) for e in deals]
    first_day, last_day = calendar.day_of(times[0]), calendar.day_of(times[-1])
    months = [_Month(start, end) for start, end in _month_starts(calendar, first_day, last_day)
              if end <= last_day][WARM_UP_MONTHS:]
    states: dict[str, DealState] = {}
    folded = 0
    for month in track(months, description=f"{label}: months", console=Console(stderr=True)):
        for checkpoint in CHECKPOINT_DAYS:
            day = month.start + checkpoint - 1
            cutoff = calendar.day_start_ms(day)
            while folded < len(deals) and times[folded] < cutoff:
                _fold(states, deals[folded])
                folded += 1
            paths = _paths(states.values(), prices, calendar)
            pulse = forecast_period(paths, day, month.start, month.end, ForecastSettings())
            plain = forecast_period(paths, day, month.start, month.end,
                                    ForecastSettings(expected_close=False))
            won = _won_between(paths, month.start, day)
            weighted = won + sum(p.open_cents * probability.get(p.entries[-1][0], 0.0)
                                 for p in paths if p.close is None or p.close[1] >= day)
            earlier = calendar.month_bounds(month.start - 1)
            history = []
            for _ in range(3):
                history.append(_won_between(paths, *earlier))
                earlier = calendar.month_bounds(earlier[0] - 1)
            month.forecasts[checkpoint] = {"pulse": pulse["all"].expected_cents,
                                           "weighted_pipeline": weighted,
                                           "run_rate": sum(history) / len(history),
                                           "pulse_stage_age_only": plain["all"].expected_cents}
    for event in deals[folded:]:
        _fold(states, event)
    final = _paths(states.values(), prices, calendar)
    errors: dict[str, dict[int, list[float]]] = {m: {c: [] for c in CHECKPOINT_DAYS}
                                                 for m in METHODS}
    for month in months:
        actual = _won_between(final, month.start, month.end)
        if actual <= 0:
            continue
        for checkpoint, values in month.forecasts.items():
            for method, value in values.items():
                errors[method][checkpoint].append(abs(value - actual) / actual)
    return {method: {c: sum(v) / len(v) for c, v in by_day.items() if v}
            for method, by_day in errors.items()} | {
        "months": {0: float(sum(1 for m in months if _won_between(final, m.start, m.end) > 0))}}


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


def _table(results: dict[str, dict[str, dict[int, float]]]) -> str:
    lines = ["| stream | method | " + " | ".join(f"day {c}" for c in CHECKPOINT_DAYS) + " |",
             "|---|---|" + "---|" * len(CHECKPOINT_DAYS)]
    for stream, by_method in results.items():
        for method in METHODS:
            cells = [f"{100 * by_method[method][c]:.1f}%" if c in by_method[method] else "-"
                     for c in CHECKPOINT_DAYS]
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
    results: dict[str, dict[str, dict[int, float]]] = {}
    for name, load in streams.items():
        results[name] = replay(load(), settings, name)
    met = all(by["pulse"].get(c, 1.0) < min(by[b].get(c, 0.0) for b in BASELINES)
              for by in results.values() for c in CHECKPOINT_DAYS)
    report = {"checkpoint_days": list(CHECKPOINT_DAYS), "goal_met": met,
              "generated_expected_close_error_days": args.expected_close_error_days,
              "streams": {
        name: {f"mape_{method}": {str(c): round(v, 4) for c, v in by[method].items()}
               for method in METHODS} | {"months_scored": int(by["months"][0])}
        for name, by in results.items()}}
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(results))
    print(f"goal (Pipeline Pulse below both baselines at every checkpoint): "
          f"{'met' if met else 'not met'}; written to {args.output}")
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
