"""The forecast dashboard: will each team make this month's and this quarter's number,
how sure the forecast is, and how far it was off in the periods already closed."""

from __future__ import annotations

__all__ = ["QUOTA_MADE", "forecast"]

from grafana_foundation_sdk.builders import dashboard

from stream_app.tools.board_parts import (
    AMBER,
    GREEN,
    RED,
    TEAM,
    BoardSettings,
    bars,
    board,
    figure,
    series,
    thresholds,
)

#: What the closing coverage shows when the quota is made (nothing left to cover).
QUOTA_MADE = "quota made"
#: Checkpoints of the closed periods, in order (as the workers label them).
_MONTH_CHECKPOINTS = tuple(f"day_{day}" for day in (1, 8, 15, 22))
_QUARTER_CHECKPOINTS = tuple(f"week_{week}" for week in range(1, 14))


def _period_lines(period: str, team: str) -> list[tuple[str, str]]:
    selector = f'{{{team},period="{period}"}}'
    return [(f"team_period:pulse_forecast_won_amount:sum{selector}", "forecast"),
            (f"team_period:pulse_forecast_won_low_amount:sum{selector}", "low (10th pct)"),
            (f"team_period:pulse_forecast_won_high_amount:sum{selector}", "high (90th pct)"),
            (f"team_period:pulse_forecast_won_so_far_amount:sum{selector}", "won so far"),
            (f"team_period:pulse_quota_amount:sum{selector}", "quota")]


def _errors(period: str, checkpoints: tuple[str, ...], team: str) -> list[tuple[str, str]]:
    return [(f'team_period_checkpoint:pulse_forecast_error:ratio{{{team},period="{period}",'
             f'checkpoint="{checkpoint}"}}', checkpoint.replace("_", " "))
            for checkpoint in checkpoints]


def forecast(cfg: BoardSettings) -> dashboard.Dashboard:
    """This month's and quarter's forecast against quota, its parts and bands, next
    quarter's, and the error of the forecasts of the last closed month and quarter."""
    team = 'team="$team"'
    attainment = thresholds((None, RED), (0.9, AMBER), (1, GREEN))
    return board("pulse-forecast", "Pipeline Pulse / Forecast", [
        figure("Forecast this month",
                   f'team_period:pulse_forecast_won_amount:sum{{{team},period="month"}}',
                   cfg.money, "Won so far + open deals x their chance to win this month + "
                   "deals not created yet (all teams only), made at the start of today."),
        figure("Forecast / quota, this month",
                   f'team_period:pulse_forecast_quota_attainment:ratio{{{team},period="month"}}',
                   "percentunit", "Red below 90% (PulseForecastBelowQuota fires past mid-month "
                   "below 1 - PULSE_FORECAST_ALERT_MARGIN).", attainment),
        figure("Forecast this quarter",
                   f'team_period:pulse_forecast_won_amount:sum{{{team},period="quarter"}}',
                   cfg.money, "The same for the fiscal quarter."),
        figure("Forecast / quota, this quarter",
                   f'team_period:pulse_forecast_quota_attainment:ratio{{{team},period="quarter"}}',
                   "percentunit", "Red below 90%.", attainment),
        series("This month: forecast, band and quota", _period_lines("month", team), cfg.money,
               "The forecast with its 10th and 90th percentiles, next to won so far and the "
               "quota; the band narrows as the month runs out."),
        series("This quarter: forecast, band and quota", _period_lines("quarter", team),
               cfg.money, "The same for the fiscal quarter."),
        bars("This month's forecast by part",
             [(f'team_period:pulse_forecast_won_so_far_amount:sum{{{team},period="month"}}',
               "won so far"),
              (f'team_period:pulse_forecast_open_deals_amount:sum{{{team},period="month"}}',
               "open deals"),
              (f'team_period:pulse_forecast_new_deals_amount:sum{{{team},period="month"}}',
               "deals not created yet")], cfg.money,
             "Where the forecast comes from: what is won, what the open deals are expected "
             "to bring, what deals not created yet are (counted for all teams only)."),
        series("Next quarter", _period_lines("next_quarter", team)[:3], cfg.money,
               "Next fiscal quarter's forecast with its band: open deals that may close in "
               "it and deals not created yet."),
        bars("Forecast error, last month", _errors("last_month", _MONTH_CHECKPOINTS, team),
             "percentunit", "|forecast made at the start of day 1, 8, 15, 22 - won| / won, "
             "of the last closed month: how far ahead the forecast can be trusted."),
        bars("Forecast error, last quarter", _errors("last_quarter", _QUARTER_CHECKPOINTS, team),
             "percentunit", "The same at the first day of each week of the last closed "
             "fiscal quarter."),
        figure("Month elapsed", 'period:pulse_forecast_period_elapsed:ratio{period="month"}',
                   "percentunit", "Days of the month before today / days in the month."),
        figure("Slipped deals", f"team:pulse_forecast_slipped_amount:sum{{{team}}} "
               "or on () vector(0)", cfg.money, "Open amount of the deals whose expected "
               "close date has passed (the CRM's date, deal.created or deal.updated)."),
        figure("Pushed out of this month",
               f'team_period:pulse_forecast_pushed_amount:sum{{{team},period="month"}} '
               "or on () vector(0)", cfg.money, "Open amount of the deals whose expected "
               "close moved past the month's end after lying inside it."),
        figure("Pushed out of this quarter",
               f'team_period:pulse_forecast_pushed_amount:sum{{{team},period="quarter"}} '
               "or on () vector(0)", cfg.money, "The same for the fiscal quarter."),
        figure("Coverage of the pipeline closing this month",
               f'team_period:pulse_forecast_closing_coverage:ratio{{{team},period="month"}}',
               "x", "Open amount expected to close by the month's end / quota still to win; "
               "red below 1.", thresholds((None, RED), (1, GREEN)), no_value=QUOTA_MADE),
        bars("Expected to close this month, by CRM category",
             [("sum by (category) (team_period_category:pulse_forecast_closing_amount:sum"
               f'{{{team},period="month"}})', "{{category}}")], cfg.money,
             "The CRM's own call (commit, best case, pipeline, omitted; (none) when it made "
             "none) on the open deals expected to close by the month's end, next to the "
             "model's forecast above."),
        bars("Expected to close this quarter, by CRM category",
             [("sum by (category) (team_period_category:pulse_forecast_closing_amount:sum"
               f'{{{team},period="quarter"}})', "{{category}}")], cfg.money,
             "The same for the fiscal quarter."),
    ], (TEAM,))
