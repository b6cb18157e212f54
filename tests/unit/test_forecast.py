"""The forecast model on small hand-checked tables: the landmark estimate of a stage's
chance to win, the period forecast's parts, and a deal's path read off its state."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from operator import attrgetter

import pytest

from stream_app.config import Settings, pricing
from stream_app.events.models import crm_event_adapter
from stream_app.kpi.calendar import UTC_CALENDAR, Calendar
from stream_app.kpi.deals import DealState, apply_deal_event
from stream_app.kpi.forecast import (
    AFTER_PERIOD,
    BEFORE_PERIOD,
    CREATED,
    INSIDE_PERIOD,
    PASSED,
    DealPath,
    ForecastSettings,
    StageHistory,
    deal_path,
    forecast_period,
    forecast_period_by,
    plan_stratum,
)
from stream_app.kpi.money import Pricing
from stream_app.kpi.windows import ms_from_datetime
from stream_app.tools.generator import GeneratorSettings, generate_events
from tests.reference import ReferenceConfig
from tests.reference_forecast import expected_forecast
from tests.unit.events import ev

#: Stints of one stage as (started, left, won on): moved on at 20 and won at 25; lost at
#: 15; still there; moved on at 60 and won at 70.
STINTS = [(10, 20, 25), (10, 15, None), (30, None, None), (50, 60, 70)]


@pytest.mark.parametrize(("day", "age", "horizon", "expected"), [
    (100, 0, 20, Fraction(1, 4)),  # all four; only the first won in its first 20 days
    (100, 6, 20, Fraction(2, 3)),  # the one lost at 15 had left; won at 25 and at 70
    (100, 10, 20, Fraction(2, 3)),  # the first left on the day it turned 10: still there
    (100, 11, 20, Fraction(0)),  # only the open one is still there at 11 days
    (60, 0, 20, Fraction(1, 3)),  # the stint begun at 50 is not observed 20 days yet
    (100, 0, 0, Fraction(0)),
    (100, 60, 20, Fraction(0)),  # only the open one stayed 60 days, and it did not win
    (100, 200, 20, Fraction(0)),  # nothing observed that long: no evidence of a win
])
def test_a_stage_wins_the_share_of_its_past_stints_still_there_at_that_age(
        day: int, age: int, horizon: int, expected: Fraction) -> None:
    history = StageHistory(day)
    for stint in STINTS:
        history.add(*stint)
    assert history.win_probability(age, horizon) == pytest.approx(float(expected))


@pytest.mark.parametrize(("age", "horizon", "skip", "expected"), [
    (0, 20, 10, Fraction(1, 4)),  # of the four, only the first won on days 10-19 (at 15)
    (0, 20, 16, Fraction(0)),  # its win on day 15 is before the skipped 16 days
    (6, 20, 10, Fraction(1, 3)),  # at 6: three still there; won at 25 (day 15 of the
    # stint, 9 past 6: skipped) and at 70 (day 20, 14 past 6: counted)
    (0, 20, 20, Fraction(0)),  # nothing left after skipping the whole horizon
])
def test_a_later_period_counts_only_the_wins_after_the_days_it_skips(
        age: int, horizon: int, skip: int, expected: Fraction) -> None:
    history = StageHistory(100)
    for stint in STINTS:
        history.add(*stint)
    assert history.win_probability(age, horizon, skip) == pytest.approx(float(expected))


#: Stints begun on day 50, seen from day 100, with the deal's expected closes (day set,
#: expected close day): S1 won on 60 (leaving the stage), expected on 62 since day 40; S2
#: left on 80 unwon, expected on 55 from day 40, then on 90 from day 57; S3 won on 70,
#: no expected close.
PLANNED = [(50, 60, 60, ((40, 62),)), (50, 80, None, ((40, 55), (57, 90))),
           (50, 70, 70, ())]


@pytest.mark.parametrize(("age", "skip", "expected_in", "fewest", "expected"), [
    # horizon 10. At age 4: S1 expects its close 8 days on (inside), S2 1 day on
    # (inside; its push is known from age 8), S3 has none: S1 won, S2 did not
    (4, 0, 5, 2, Fraction(1, 2)),
    (4, 0, 5, 3, Fraction(1, 3)),  # two alike, fewer than 3: all three, S1 won
    (4, 0, 15, 1, Fraction(1, 3)),  # none expected after the horizon at 4: all three
    (2, 0, 15, 1, Fraction(1)),  # at 2, S1 (10 days on) is the one after: it won
    (2, 0, 5, 1, Fraction(0)),  # at 2, S2 (3 days on) is the one inside: it did not
    (6, 0, -1, 1, Fraction(0)),  # at 6, S2's expected close has passed (-1)
    (7, 0, -1, 1, Fraction(0)),  # at 7 (day 57) still: the push set that day is not known
    (9, 0, 15, 1, Fraction(0)),  # at 9, S2 is pushed to 90 (31 days on): after
    (5, 3, 4, 1, Fraction(1)),  # skip 3: S1 at 5 expects 7 on, inside; won at 10 >= 3
    (5, 3, 1, 1, Fraction(0)),  # S2 at 5 expects 0 on: before the period; not won
    (10, 3, 2, 1, Fraction(0)),  # S1 at 10 expects 2 on: before; its win at 0 is skipped
])
def test_an_expected_close_counts_the_stints_whose_own_stood_alike_at_that_age(
        age: int, skip: int, expected_in: int, fewest: int, expected: Fraction) -> None:
    history = StageHistory(100, min_stratum_stints=fewest)
    for stint in PLANNED:
        history.add(*stint)
    assert history.win_probability(age, 10, skip, expected_in) == pytest.approx(
        float(expected))


@pytest.mark.parametrize(("expected_in", "skip", "stratum"), [
    (-1, 0, PASSED), (0, 0, INSIDE_PERIOD), (9, 0, INSIDE_PERIOD), (10, 0, AFTER_PERIOD),
    (0, 3, BEFORE_PERIOD), (2, 3, BEFORE_PERIOD), (3, 3, INSIDE_PERIOD), (-5, 3, PASSED)])
def test_where_an_expected_close_lies_against_the_period(expected_in: int, skip: int,
                                                         stratum: int) -> None:
    assert plan_stratum(expected_in, 10, skip) == stratum


def test_an_open_deal_reads_the_expected_close_set_before_the_forecasts_day() -> None:
    """Two open deals 2 days into P at day 100 (horizon 30), like 40 past stints in P:
    the 20 expected inside the period all won, the 20 expected after it none. A deal
    whose expected close moved inside the period on day 99 is forecast as the first;
    one moved there on day 100 (not known yet) as the second."""
    past = [DealPath(((CREATED, 10), ("P", 10)), (index < 20, 20, 100_000), 0, "A",
                     plans=((5, 20 if index < 20 else 60),)) for index in range(40)]
    moved_in_time = DealPath(((CREATED, 98), ("P", 98)), None, 100_000, "A",
                             plans=((98, 200), (99, 110)))
    moved_today = DealPath(((CREATED, 98), ("P", 98)), None, 100_000, "B",
                           plans=((98, 200), (100, 110)))
    forecasts = forecast_period([*past, moved_in_time, moved_today], 100, 100, 130,
                                ForecastSettings(min_stratum_stints=20))
    assert forecasts["A"].open_expected_cents == pytest.approx(100_000)
    assert forecasts["B"].open_expected_cents == 0
    plain = forecast_period([*past, moved_in_time, moved_today], 100, 100, 130,
                            ForecastSettings(expected_close=False))
    assert plain["A"].open_expected_cents == pytest.approx(50_000)


#: Closed before day 100: H1 won 1,000 at 25, H2 lost at 15, H3 won 3,000 at 45. Open:
#: O1 since 90 in P, 2,000.
HISTORY = [
    DealPath(((CREATED, 10), ("P", 10)), (True, 25, 100_000), 0, "A"),
    DealPath(((CREATED, 10), ("P", 10)), (False, 15, 0), 0, "A"),
    DealPath(((CREATED, 40), ("P", 40)), (True, 45, 300_000), 0, "B"),
    DealPath(((CREATED, 90), ("P", 90)), None, 200_000, "A"),
]


def test_the_forecast_adds_won_so_far_open_deals_and_deals_not_created_yet() -> None:
    """Period days 100-129 at day 100, a stint enough to estimate from.

    O1, 10 days into P with 30 days left: of the past P stints observed 40 days, only H1
    was still in P at 10 days (H2 and H3 closed), and it won within the next 30: chance 1,
    2,000 expected. New deals: 4 created in the 90 days before, so 4/90 a day; each won
    amount 2,000 on average (1,000 and 3,000). A deal created on day c has 130 - c days:
    of the creations observed that long, 2 of 3 won within 16-30 days (c = 100-114),
    1 of 3 within 11-15 (c = 115-119), 1 of 4 within 6-10 (O1 now observed; c = 120-124),
    none within 5: 4/90 x (15 x 2/3 + 5/3 + 5/4) x 2,000 = 1,240,000 / 1,080 cents."""
    forecasts = forecast_period(HISTORY, 100, 100, 130)
    everything, team_a = forecasts["all"], forecasts["A"]
    assert everything.won_cents == 0
    assert everything.open_expected_cents == pytest.approx(200_000)
    assert everything.new_expected_cents == pytest.approx(1_240_000 * 100 / 1_080)
    assert everything.variance == pytest.approx(4 / 90 * 155 / 12 * 200_000 ** 2)
    assert (team_a.expected_cents, team_a.new_expected_cents) == (pytest.approx(200_000), 0)
    assert everything.low_cents < everything.expected_cents < everything.high_cents


def test_won_so_far_counts_the_wins_of_the_period_before_the_checkpoint() -> None:
    forecasts = forecast_period(HISTORY, 50, 20, 50)
    assert forecasts["all"].won_cents == 400_000  # won at 25 and at 45
    assert forecasts["B"].won_cents == 300_000
    later = forecast_period(HISTORY, 40, 20, 50)
    assert later["all"].won_cents == 100_000  # the win at 45 is not known at day 40


def test_one_pass_forecasts_each_grouping_as_its_own_call_would() -> None:
    """H1 and O1 owned by o1, H2 and H3 by o2: day 50, period 20-49, by team and by owner
    at once. Won so far: 1,000 (H1) for A and o1, 3,000 (H3) for B and o2; the open
    deals' chances are those of the team grouping, summed per owner."""
    owned = [replace(path, owner=owner)
             for path, owner in zip(HISTORY, ("o1", "o2", "o2", "o1"), strict=True)]
    by_team, by_owner = forecast_period_by(owned, 50, 20, 50,
                                           groupings=(attrgetter("team"), attrgetter("owner")))
    assert {group: f.won_cents for group, f in by_team.items()} == {
        "A": 100_000, "B": 300_000, "all": 400_000}
    assert {group: f.won_cents for group, f in by_owner.items()} == {
        "o1": 100_000, "o2": 300_000, "all": 400_000}
    assert by_team == forecast_period(owned, 50, 20, 50)
    assert by_owner == forecast_period(owned, 50, 20, 50, group_of=attrgetter("owner"))
    assert by_owner["all"] == by_team["all"]


def test_a_deals_path_is_read_off_its_state() -> None:
    events = [ev("deal.created", "1970-01-11T09:00:00Z", deal_id="D", amount="100"),
              ev("deal.stage_changed", "1970-01-21T12:00:00Z", deal_id="D",
                 to_stage="Engaging", amount="150"),
              ev("deal.won", "1970-01-26T08:00:00Z", deal_id="D", amount="140")]
    state = DealState("D")
    pricing = Pricing({"USD": Decimal(1)}, {"Prospecting": Decimal("0.1"),
                                            "Engaging": Decimal("0.4")})
    for event in events[:2]:
        state = apply_deal_event(state, event)
    open_path = deal_path(state, pricing, UTC_CALENDAR)
    assert open_path == DealPath(((CREATED, 10), ("Prospecting", 10), ("Engaging", 20)),
                                 None, 15_000, "T", "o1")
    won = deal_path(apply_deal_event(state, events[2]), pricing, UTC_CALENDAR)
    assert won is not None and won.close == (True, 25, 14_000)


@pytest.mark.parametrize(("zone", "checkpoint"), [
    ("UTC", "2026-09-01"), ("UTC", "2026-09-15"), ("Asia/Tokyo", "2026-10-08")])
def test_the_forecast_of_the_deal_fold_equals_the_reference(zone: str, checkpoint: str) -> None:
    """A generated year with reopenings, deletions, hand-overs, amount changes and
    expected closes the CRM keeps moving, folded in a shuffled order with repeats up to
    the checkpoint, against the batch reference."""
    end = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    events = [e for e in generate_events(GeneratorSettings(
        seed=41, start=end - dt.timedelta(days=400), end=end, deals_per_day=4,
        leads_per_deal=0, activities_per_deal=0, reopen_probability=0.1,
        delete_probability=0.05, handover_probability=0.1, expected_close_error_days=8.0))
        if e["type"].startswith("deal.")]
    calendar = Calendar(zone)
    day = (dt.date.fromisoformat(checkpoint) - dt.date(1970, 1, 1)).days
    start, stop = calendar.month_bounds(day)
    cutoff = calendar.day_start_ms(day)
    rng = random.Random(day)
    known = [e for e in events if ms_from_datetime(dt.datetime.fromisoformat(e["time"])) < cutoff]
    shuffled = known + rng.sample(known, len(known) // 10)
    rng.shuffle(shuffled)
    settings = Settings(timezone=zone)
    states: dict[str, DealState] = {}
    for raw in shuffled:
        event = crm_event_adapter.validate_python(raw)
        deal_id = event.data.deal_id
        states[deal_id] = apply_deal_event(states.get(deal_id) or DealState(deal_id), event,
                                           for_forecast=True)
    paths = [p for s in states.values() if (p := deal_path(s, pricing(settings), calendar))]
    got = forecast_period(paths, day, start, stop)
    expected = expected_forecast(
        events, dt.date.fromisoformat(checkpoint), dt.date.fromisoformat(checkpoint[:8] + "01"),
        dt.date(1970, 1, 1) + dt.timedelta(days=stop), ReferenceConfig(timezone=zone))
    assert set(got) == set(expected)
    for group, value in expected.items():
        assert got[group].expected_cents / 100 == pytest.approx(value, rel=1e-9), group
    assert got["all"].open_expected_cents > 0 and got["all"].new_expected_cents > 0
