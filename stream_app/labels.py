"""The labels whose values are capped, and the most series those caps let one worker
export (the budget the label-flood test holds a scrape to)."""

from __future__ import annotations

__all__ = ["FOLDED_LABELS", "series_budget"]

from stream_app.config import Settings
from stream_app.kpi.activities import ACTIVITY_KINDS
from stream_app.kpi.deals import MOVEMENTS, STINT_BUCKETS_DAYS
from stream_app.kpi.scoring import load_rules
from stream_app.kpi.snapshot import KIND_LABEL

#: Labels whose values are capped (each by a ``PULSE_MAX_*`` setting).
FOLDED_LABELS = tuple(dict.fromkeys(KIND_LABEL.values()))
WINDOW_FAMILIES = 13
STAGE_FAMILIES = 5
STINT_FAMILIES = 7
DIMENSION_FAMILIES = 6
COMPETITOR_FAMILIES = 7
OWNER_WINDOW_FAMILIES = 5
OWNER_PIPELINE_FAMILIES = 3
#: ``pulse_owner_info``: one series per admitted owner with a roster profile.
ROSTER_FAMILIES = 1
#: Forecast series per team group: 6 families x 3 periods, a snapshot and an error per
#: checkpoint (4 of the last month, 13 of the last quarter), the closed periods' won amount;
#: the CRM's plan: slipped deals and amount, pushed per period, closing per period and
#: category (4 and none).
FORECAST_SERIES = 6 * 3 + 2 * (4 + 13) + 2 + 2 + 2 * 2 + 2 * 2 * 5
#: Forecast series per owner: forecast, won so far, low and high, for month, quarter and
#: next quarter.
OWNER_FORECAST_SERIES = 4 * 3
#: Forecast series per period (elapsed ratio and days, days) and the alert margin.
FORECAST_PERIOD_SERIES = 3 * 3 + 1


def series_budget(settings: Settings) -> int:
    """Most series one worker can export: KPI families for every admitted label value
    and ``other`` (and ``all`` for teams), plus operational series (bounded by partitions)."""
    groups = settings.max_teams + 2
    windows = len(settings.windows_days) + 1
    stages = len(settings.stages)
    histogram = stages * windows * (len(STINT_BUCKETS_DAYS) + 3)
    per_team = (WINDOW_FAMILIES * windows + STAGE_FAMILIES * stages
                + STINT_FAMILIES * stages * windows + windows + 2 * len(MOVEMENTS) * windows + 6
                + FORECAST_SERIES)
    dimensions = (DIMENSION_FAMILIES * windows * (settings.max_sources + settings.max_products + 2)
                  + COMPETITOR_FAMILIES * windows * (settings.max_competitors + 1))
    quotas = groups * (8 * 4 + 1) + 3 * 4 * (settings.max_owners + 1)
    rules = load_rules(settings.lead_scoring_file)
    leads = (4 * windows * (settings.max_sources + 2) + 3 * windows * (len(rules.band_edges) + 1)
             + len(rules.histogram_buckets) + 6)
    kinds = len(ACTIVITY_KINDS)
    activities = windows * (groups * (kinds + 1) + kinds * (settings.max_owners + 1))
    owner_deals = ((OWNER_WINDOW_FAMILIES * windows + OWNER_PIPELINE_FAMILIES
                    + OWNER_FORECAST_SERIES) * (settings.max_owners + 1)
                   + ROSTER_FAMILIES * settings.max_owners)
    return (groups * per_team + histogram + dimensions + quotas + leads + activities
            + owner_deals + 97 + FORECAST_PERIOD_SERIES + 8 * settings.partitions)
