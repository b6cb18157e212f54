"""Names for the short tags stored in state keys and guards.

The tags are part of the changelog format: an aggregate key is
``kind SEP partition SEP group SEP part``, an entity key ``prefix SEP id``, and a guard
``{source: offset}``. They never change (a restored table must read old records); code
refers to them by these names. A tag means one thing in its own family only: ``"a"`` is
both the account entity prefix and the owner-quota aggregate kind.
"""

from __future__ import annotations

__all__ = [
    "ACCOUNT_ENTITY",
    "ACCOUNT_WIN_SOURCE",
    "ACTIVE_CUSTOMERS",
    "ACTIVITY_ENTITY",
    "ACTIVITY_SOURCE",
    "AGGREGATE_KINDS",
    "CHURN",
    "CHURN_SOURCE",
    "CHURN_TO_COMPETITOR",
    "CLOCK",
    "COMPETITOR_DAY",
    "DEAL_ENTITY",
    "DEAL_SOURCE",
    "FORECAST_ENTITY",
    "FORECAST_SOURCE",
    "LEAD_BAND",
    "LEAD_ENTITY",
    "LEAD_SOURCE",
    "LEAD_SOURCE_DAY",
    "NEW_CUSTOMER",
    "OPEN_PIPELINE",
    "OWNER_ACTIVITY",
    "OWNER_DAY",
    "OWNER_ENTITY",
    "OWNER_OPEN",
    "OWNER_PROFILE",
    "OWNER_QUOTA",
    "OWNER_WIN_ENTITY",
    "OWNER_WIN_SOURCE",
    "OWNER_WON",
    "POSITION",
    "PRODUCT_DAY",
    "QUOTA_SOURCE",
    "REP_ENTITY",
    "REP_SOURCE",
    "SOURCE_DAY",
    "STAGE_STINT",
    "TEAM_ACTIVITY",
    "TEAM_DAY",
    "WATERFALL",
]

# -- aggregate kinds (the first field of an aggregate key) ------------------------------
#: Deals by (team, day): created, won, lost, won cents, cycle ms, won with an account.
TEAM_DAY = "b"
#: Open deals by (team, "since_day:stage"): count, cents.
OPEN_PIPELINE = "o"
#: Deals by (source, day): created, won, lost, won cents.
SOURCE_DAY = "r"
#: Deals by (product, day): created, won, lost, won cents.
PRODUCT_DAY = "u"
#: Ended stage stints by (team, "end_day:stage").
STAGE_STINT = "f"
#: Pipeline movements by (team, "day:movement"): count, cents.
WATERFALL = "w"
#: Deals closed naming a competitor by (competitor, close day).
COMPETITOR_DAY = "k"
#: Accounts won for the first time, by day.
NEW_CUSTOMER = "n"
#: Accounts churned, by (cohort group, day).
CHURN = "c"
#: Accounts churned to a competitor, by (competitor, day).
CHURN_TO_COMPETITOR = "m"
#: +1 / -1 on the days an account starts / stops being an active customer.
ACTIVE_CUSTOMERS = "l"
#: Deals by (owner, day): created, won, lost, won cents, cycle ms.
OWNER_DAY = "s"
#: Open deals by (owner, current stage): count, cents.
OWNER_OPEN = "j"
#: Quotas by (owner, "period|team"): cents, 1.
OWNER_QUOTA = "a"
#: Won cents by (owner, month).
OWNER_WON = "y"
#: The roster: 1 by (owner, '["name", "team"]') of the owner's latest rep.updated.
OWNER_PROFILE = "i"
#: Leads by (source, day): created, converted, disqualified.
LEAD_SOURCE_DAY = "e"
#: Leads closed by (score band, close day): closed, converted.
LEAD_BAND = "h"
#: Activities by (team, day), one count per activity kind.
TEAM_ACTIVITY = "v"
#: Activities by (owner, day), one count per activity kind.
OWNER_ACTIVITY = "z"
#: A source partition's latest event time (not a KPI sum: the maximum).
CLOCK = "t"
#: The last source offset whose batch is fully written (not a KPI).
POSITION = "p"

#: Every aggregate kind: a key whose first field is not one of them is an entity key.
AGGREGATE_KINDS = frozenset({
    TEAM_DAY, OPEN_PIPELINE, SOURCE_DAY, PRODUCT_DAY, STAGE_STINT, WATERFALL, COMPETITOR_DAY,
    OWNER_DAY, OWNER_OPEN,
    NEW_CUSTOMER, CHURN, CHURN_TO_COMPETITOR, ACTIVE_CUSTOMERS, OWNER_QUOTA, OWNER_WON,
    OWNER_PROFILE,
    LEAD_SOURCE_DAY, LEAD_BAND, TEAM_ACTIVITY, OWNER_ACTIVITY, CLOCK, POSITION,
})

# -- entity key prefixes -----------------------------------------------------------------
DEAL_ENTITY = "d"
ACCOUNT_ENTITY = "a"
OWNER_ENTITY = "owner"
OWNER_WIN_ENTITY = "ownerwin"
LEAD_ENTITY = "lead"
ACTIVITY_ENTITY = "act"
REP_ENTITY = "rep"
#: A deal's unpruned state on the forecast partition (in the owners' table).
FORECAST_ENTITY = "fdeal"

# -- guard sources (which stream a guard's offset counts) --------------------------------
DEAL_SOURCE = "d"
ACCOUNT_WIN_SOURCE = "w"
CHURN_SOURCE = "c"
OWNER_WIN_SOURCE = "w"
QUOTA_SOURCE = "q"
LEAD_SOURCE = "l"
ACTIVITY_SOURCE = "v"
REP_SOURCE = "r"
FORECAST_SOURCE = "f"
