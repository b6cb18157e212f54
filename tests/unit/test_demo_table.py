"""The demo's console table: its caption names this month's forecast, band and quota."""

from __future__ import annotations

from stream_app.tools.demo import kpi_table


def _key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_the_caption_shows_the_forecast_its_band_quota_and_last_months_error() -> None:
    month = {"team": "all", "period": "month"}
    samples = {
        _key("pulse_created_deals", team="all", window="30d"): 3.0,
        _key("pulse_forecast_won_amount", **month): 611_234.9,
        _key("pulse_forecast_won_low_amount", **month): 540_000.0,
        _key("pulse_forecast_won_high_amount", **month): 690_000.4,
        _key("pulse_quota_amount", **month): 700_000.0,
        _key("pulse_forecast_error_ratio", team="all", period="last_month",
             checkpoint="day_1"): 0.0837,
    }
    caption = str(kpi_table(samples, "30d", "USD").caption)
    assert ("forecast this month 611,235 (10-90%: 540,000-690,000) of quota 700,000  |  "
            "last month's day-1 forecast off by 8.4%") in caption


def test_without_a_forecast_the_caption_says_so() -> None:
    samples = {_key("pulse_created_deals", team="all", window="30d"): 3.0}
    assert "forecast: none yet" in str(kpi_table(samples, "30d", "USD").caption)
