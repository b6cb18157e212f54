"""Metric families of the forecast: this month's, quarter's and next quarter's forecast
of the won amount with its parts and bands, and the accuracy of the last closed
month's and quarter's forecasts."""

from __future__ import annotations

__all__ = [
    "accuracy_families",
    "freshness_families",
    "live_forecast_families",
    "owner_forecast_families",
    "plan_families",
]

from collections.abc import Iterator

from prometheus_client.core import Metric

from stream_app.adapters.exposition import GroupSamples
from stream_app.adapters.operational_metrics import gauge
from stream_app.kpi.forecast_plans import CLOSING, PUSHED, SLIPPED
from stream_app.kpi.money import cents_to_units
from stream_app.kpi.rows import Report


def live_forecast_families(report: Report) -> Iterator[Metric]:
    """This month's, quarter's and next quarter's forecast per team, with its parts and
    bands, and the alert margin (read from ``forecasts`` and ``forecast_alert_margin``)."""
    labels = ["team", "period"]
    expected = gauge("forecast_won_amount", "Forecast of the period's won amount made at the "
                     "start of T's day: won so far + expected from open deals + expected "
                     "from deals not created yet (team=all only).", labels)
    won = gauge("forecast_won_so_far_amount", "Won in the period before T's day (the "
                "forecast's first part).", labels)
    opened = gauge("forecast_open_deals_amount", "Open deals' amounts x their learned "
                   "chance to win in the period (the forecast's second part).", labels)
    new = gauge("forecast_new_deals_amount", "Expected wins of deals not created yet, "
                "team=all only (the forecast's third part).", labels)
    low = gauge("forecast_won_low_amount", "10th percentile of the period's won amount "
                "(never below won so far).", labels)
    high = gauge("forecast_won_high_amount", "90th percentile of the period's won amount.",
                 labels)
    elapsed = gauge("forecast_period_elapsed_ratio", "Days of the period before T's day / "
                    "days in the period.", ["period"])
    elapsed_days = gauge("forecast_period_elapsed_days", "Days of the period before T's day.",
                         ["period"])
    period_days = gauge("forecast_period_days", "Days in the period.", ["period"])
    periods: dict[str, tuple[float, int, int]] = {}
    for f in report.forecasts:
        row = [f.group, f.period]
        expected.add_metric(row, cents_to_units(f.expected_cents))
        won.add_metric(row, cents_to_units(f.won_cents))
        opened.add_metric(row, cents_to_units(f.open_expected_cents))
        new.add_metric(row, cents_to_units(f.new_expected_cents))
        low.add_metric(row, cents_to_units(f.low_cents))
        high.add_metric(row, cents_to_units(f.high_cents))
        periods[f.period] = (f.elapsed_ratio, f.days_elapsed, f.days)
    for period, (ratio, days_elapsed, days) in sorted(periods.items()):
        elapsed.add_metric([period], ratio)
        elapsed_days.add_metric([period], days_elapsed)
        period_days.add_metric([period], days)
    yield from (expected, won, opened, new, low, high, elapsed, elapsed_days, period_days)
    margin = gauge("forecast_alert_margin_ratio", "PULSE_FORECAST_ALERT_MARGIN: the forecast "
                   "alert fires below (1 - this) x quota.", [])
    if report.forecast_alert_margin is not None:
        margin.add_metric([], report.forecast_alert_margin)
    yield margin


def accuracy_families(report: Report) -> Iterator[Metric]:
    """The closed periods' forecasts at each checkpoint, their won amounts and errors
    (read from ``forecast_accuracy``)."""
    scored = ["team", "period", "checkpoint"]
    snapshot = gauge("forecast_snapshot_amount", "Forecast of a closed period (last_month, "
                     "last_quarter) made at the start of a checkpoint (day_1, day_8, day_15, "
                     "day_22; week_1 .. week_13) from the events timed before it.", scored)
    actual = gauge("forecast_actual_won_amount", "Won amount of the closed period, as known "
                   "at T.", ["team", "period"])
    error = gauge("forecast_error_ratio", "|forecast at the checkpoint - won| / won, of the "
                  "closed period.", scored)
    actuals: dict[tuple[str, str], int] = {}
    for a in report.forecast_accuracy:
        row = [a.group, a.period, a.checkpoint]
        snapshot.add_metric(row, cents_to_units(a.forecast_cents))
        actuals[(a.group, a.period)] = a.won_cents
        if a.error_ratio is not None:
            error.add_metric(row, a.error_ratio)
    for (group, period), cents in sorted(actuals.items()):
        actual.add_metric([group, period], cents_to_units(cents))
    yield from (snapshot, actual, error)


def freshness_families(report: Report) -> Iterator[Metric]:
    """Whether the forecast exported is of the current state, and what it cost."""
    stale = gauge("forecast_stale", "1 while the forecast exported is of an earlier state "
                  "(the current one's is being computed, beside the scrapes; it waits "
                  "PULSE_FORECAST_WAIT_SECONDS at most), 0 when it is current.", [])
    if report.forecast_stale is not None:
        stale.add_metric([], 1 if report.forecast_stale else 0)
    yield stale
    seconds = gauge("forecast_compute_seconds", "How long the forecast exported took to "
                    "compute (every deal read, the live and the checkpoints' forecasts).", [])
    if report.forecast_compute_seconds is not None:
        seconds.add_metric([], report.forecast_compute_seconds)
    yield seconds


def owner_forecast_families(report: Report, kept: GroupSamples) -> Iterator[Metric]:
    """This month's, quarter's and next quarter's forecast per owner (read from
    ``owner_forecasts``)."""
    labels = ["owner", "period"]
    expected = gauge("owner_forecast_won_amount", "Forecast of the owner's won amount in the "
                     "period, made at the start of T's day: won so far (owner at the close) + "
                     "the owner's open deals x their chance.", labels)
    won = gauge("owner_forecast_won_so_far_amount", "Won by the owner in the period before "
                "T's day.", labels)
    low = gauge("owner_forecast_won_low_amount", "10th percentile.", labels)
    high = gauge("owner_forecast_won_high_amount", "90th percentile.", labels)
    kept.add(report.owner_forecasts, (expected, won, low, high), lambda f: [
        ((f.owner, f.period), cents_to_units(f.expected_cents)),
        ((f.owner, f.period), cents_to_units(f.won_cents)),
        ((f.owner, f.period), cents_to_units(f.low_cents)),
        ((f.owner, f.period), cents_to_units(f.high_cents))])
    yield from (expected, won, low, high)


def plan_families(report: Report) -> Iterator[Metric]:
    """The CRM's plan for the open deals: slipped, pushed out of the period, and expected
    to close in it per forecast category (read from ``forecast_plans``)."""
    slipped = gauge("forecast_slipped_deals", "Open deals whose expected close date is "
                    "before T's day.", ["team"])
    slipped_amount = gauge("forecast_slipped_amount", "Their open amount.", ["team"])
    pushed = gauge("forecast_pushed_deals", "Open deals whose expected close moved past the "
                   "period's end after lying inside the period (at its start or since).",
                   ["team", "period"])
    pushed_amount = gauge("forecast_pushed_amount", "Their open amount.", ["team", "period"])
    closing = gauge("forecast_closing_deals", "Open deals expected to close from T's day to "
                    "the period's end, by the CRM's forecast category ((none): never named).",
                    ["team", "period", "category"])
    closing_amount = gauge("forecast_closing_amount", "Their open amount.",
                           ["team", "period", "category"])
    families = {SLIPPED: (slipped, slipped_amount), PUSHED: (pushed, pushed_amount),
                CLOSING: (closing, closing_amount)}
    for row in report.forecast_plans:
        labels = [row.group, *([row.period] if row.kind != SLIPPED else []),
                  *([row.category] if row.kind == CLOSING else [])]
        count, amount = families[row.kind]
        count.add_metric(labels, row.deals)
        amount.add_metric(labels, cents_to_units(row.cents))
    yield from (slipped, slipped_amount, pushed, pushed_amount, closing, closing_amount)
