"""Reference forecast: a plain batch computation from the events, sharing no code with
the worker.

A forecast "at" a local date is made from the events timed before that date's local
midnight. For a period of dates ``start`` .. ``end`` - 1 it is the won amount so far,
plus each open deal's amount x the share of the trailing window's stints in its stage
that were still in it at the deal's age (and observed long enough) and won in the
period's remaining dates, plus the deals not created yet (trailing creation rate x the
same share from creation x the mean won amount). A deal with an expected close (the latest
``deal.created`` or ``deal.updated`` naming one before that date) counts only the stints
whose deal's expected close, as known on their own landmark date, lay on the same side
of the remaining dates (passed, before the period, inside it, after it), unless fewer
than ``MIN_STRATUM`` of them are eligible at that age. The bands are the 10th and 90th
percentiles of a normal law with the variance of independent Bernoulli open deals and
Poisson new wins.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from fractions import Fraction
from statistics import NormalDist
from typing import Any

from tests.reference import (
    Key,
    ReferenceConfig,
    _in_zone,
    _key,
    _period_dates,
    _t,
    _walk_deals,
    resolve_lifecycles,
    unique_by_id,
)

#: How far from the mean the 10th and 90th percentiles lie, in standard deviations.
_Z = NormalDist().inv_cdf(0.9)
#: The forecast alert's margin the worker is configured with (PULSE_FORECAST_ALERT_MARGIN).
ALERT_MARGIN = 0.1
#: Fewest stints sharing a deal's expected-close position for them to be used alone.
MIN_STRATUM = 30


def _where(expected: int, landmark: int, skip: int, days_left: int) -> str:
    """Where an expected close (date ordinal) lies seen from ``landmark``'s date."""
    ahead = expected - landmark
    if ahead < 0:
        return "passed"
    if ahead < skip:
        return "before the period"
    return "in the period" if ahead < days_left else "after the period"


def _expected_closes(events: list[dict[str, Any]]) -> dict[str, list[tuple[int, int]]]:
    """Per deal: (date ordinal the expected close was set, expected close ordinal), in
    time order."""
    closes: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for e in sorted(events, key=lambda e: (_t(e), e["id"])):
        named = e["data"].get("expected_close")
        if e["type"] in ("deal.created", "deal.updated") and named:
            closes[e["data"]["deal_id"]].append(
                (_t(e).date().toordinal(), dt.date.fromisoformat(named).toordinal()))
    return closes


def _known_on(closes: list[tuple[int, int]], ordinal: int) -> int | None:
    """The expected close set before the date ``ordinal`` (the latest)."""
    known = [expected for set_on, expected in closes if set_on < ordinal]
    return known[-1] if known else None


def expected_forecast_parts(events: list[dict[str, Any]], checkpoint: dt.date,
                            start: dt.date, end: dt.date, cfg: ReferenceConfig | None = None,
                            window_days: int = 365, rate_days: int = 90, by: str = "team",
                            localized: bool = False, expected_close: bool = True
                            ) -> dict[str, dict[str, float]]:
    """Per team (``by="owner"``: per owner, the one at the close of a won deal and the
    current one of an open deal) and "all": won, open (expected from open deals), new
    (expected from deals not created yet) and variance, in cents, of the forecast at
    ``checkpoint``. ``localized``: ``events`` are already unique deal events with local
    times. ``expected_close=False``: the deals' expected closes are ignored."""
    cfg = cfg or ReferenceConfig()
    if not localized:
        events = _in_zone(unique_by_id([e for e in events if e["type"].startswith("deal.")]),
                          cfg)
    known = [e for e in events if _t(e).date() < checkpoint]
    paths = _walk_deals(resolve_lifecycles(known), cfg)
    closes = _expected_closes(known) if expected_close else {}
    today = checkpoint.toordinal()
    first = today - window_days
    # per stage: (began, left or None, won on or None, deal id), as date ordinals
    stints: dict[str, list[tuple[int, int | None, int | None, str]]] = defaultdict(list)
    for p in paths:
        won_on = p.closed[1].date().toordinal() if p.closed and p.closed[0] == "won" else None
        closed_on = p.closed[1].date().toordinal() if p.closed else None
        visits = [(s[0], s[1].date().toordinal(), s[2].date().toordinal()) for s in p.stints]
        if p.open_stage is not None:
            visits.append((p.open_stage[0], p.open_stage[1].date().toordinal(), None))
        visits.append(("(created)", p.created.date().toordinal(), closed_on))
        for stage, began, left in visits:
            if first <= began:
                stints[stage].append((began, left, won_on, p.deal_id))
    seen: dict[tuple[str, int, int, int, str | None], float] = {}

    def chance(stage: str, age: int, days_left: int, skip: int = 0,
               where: str | None = None) -> float:
        """Share of the stints still in ``stage`` at ``age`` and observed ``days_left``
        days after, won on those days but the first ``skip``; with ``where``, of those
        whose expected close lay there on their landmark date, if enough."""
        if (stage, age, days_left, skip, where) in seen:
            return seen[(stage, age, days_left, skip, where)]
        eligible = won = alike = alike_won = 0
        for began, left, won_on, deal_id in stints.get(stage, []):
            landmark = began + age
            horizon_end = landmark + days_left
            if horizon_end > today or (left is not None and left < landmark):
                continue
            won_then = won_on is not None and landmark + skip <= won_on < horizon_end
            eligible += 1
            won += won_then
            then = _known_on(closes.get(deal_id, []), landmark)
            if where is not None and then is not None and \
                    _where(then, landmark, skip, days_left) == where:
                alike += 1
                alike_won += won_then
        if where is not None and alike >= MIN_STRATUM:
            share = alike_won / alike
        else:
            share = won / eligible if eligible else 0.0
        seen[(stage, age, days_left, skip, where)] = share
        return share

    out: dict[str, dict[str, float]] = defaultdict(
        lambda: {"won": 0.0, "open": 0.0, "new": 0.0, "variance": 0.0})
    skip = max(0, (start - checkpoint).days)
    for p in paths:
        if p.closed is not None:
            if p.closed[0] == "won" and start <= p.closed[1].date() < end:
                for group in (p.closing_owner if by == "owner" else p.team, "all"):
                    out[group]["won"] += p.closed[2]
            continue
        stage, since, cents = p.open_stage  # type: ignore[misc]
        days_left = (end - checkpoint).days
        expected = _known_on(closes.get(p.deal_id, []), today)
        p_win = chance(stage, (checkpoint - since.date()).days, days_left, skip,
                       None if expected is None else _where(expected, today, skip, days_left))
        for group in (p.current_owner if by == "owner" else p.team, "all"):
            out[group]["open"] += p_win * cents
            out[group]["variance"] += p_win * (1 - p_win) * cents * cents
    won_amounts = [p.closed[2] for p in paths if p.closed and p.closed[0] == "won"
                   and p.closed[1].date().toordinal() >= first]
    created = sum(1 for p in paths
                  if checkpoint - dt.timedelta(days=rate_days) <= p.created.date())
    everyone = out["all"]
    if won_amounts:
        mean_won = sum(won_amounts) / len(won_amounts)
        day = max(checkpoint, start)
        while day < end:
            wins = created / rate_days * chance("(created)", 0, (end - day).days)
            everyone["new"] += wins * mean_won
            everyone["variance"] += wins * mean_won * mean_won
            day += dt.timedelta(days=1)
    return dict(out)


def expected_forecast(events: list[dict[str, Any]], checkpoint: dt.date, start: dt.date,
                      end: dt.date, cfg: ReferenceConfig | None = None,
                      window_days: int = 365, rate_days: int = 90,
                      localized: bool = False) -> dict[str, float]:
    """The forecast's total per team and "all", in reporting-currency units."""
    return {group: (p["won"] + p["open"] + p["new"]) / 100 for group, p in
            expected_forecast_parts(events, checkpoint, start, end, cfg, window_days,
                                    rate_days, localized=localized).items()}


def _next_quarter(today: dt.date, cfg: ReferenceConfig) -> tuple[str, dt.date, dt.date]:
    _, _, this_end = _period_dates(today, cfg.fiscal_year_start_month)["quarter"]
    return _period_dates(this_end, cfg.fiscal_year_start_month)["quarter"]


def expected_forecast_metrics(events: list[dict[str, Any]], as_of: dt.datetime,
                              cfg: ReferenceConfig) -> dict[Key, Fraction]:
    """The forecast samples the worker holding the forecast partition exports at
    ``as_of``: this month's, quarter's and next quarter's forecast made at the start of
    T's local date, and the forecasts of the last closed month (dates 1, 8, 15, 22) and
    quarter (the first date of weeks 1-13) against what they closed at."""
    events = _in_zone(unique_by_id([e for e in events if e["type"].startswith("deal.")]), cfg)
    if not events:
        return {}
    today = cfg.local(as_of).date()
    periods = _period_dates(today, cfg.fiscal_year_start_month)
    out: dict[Key, Fraction] = {}
    live = {"month": periods["month"], "quarter": periods["quarter"],
            "next_quarter": _next_quarter(today, cfg)}
    for period, (_, start, end) in live.items():
        for group, p in expected_forecast_parts(events, today, start, end, cfg,
                                                localized=True).items():
            total = p["won"] + p["open"] + p["new"]
            spread = _Z * math.sqrt(p["variance"])
            for name, cents in (("won", total), ("won_so_far", p["won"]),
                                ("open_deals", p["open"]), ("new_deals", p["new"]),
                                ("won_low", max(p["won"], total - spread)),
                                ("won_high", total + spread)):
                out[_key(f"pulse_forecast_{name}_amount", team=group, period=period)] = \
                    Fraction(cents / 100)
        elapsed = max(0, (min(today, end) - start).days)
        days = (end - start).days
        out[_key("pulse_forecast_period_elapsed_ratio", period=period)] = Fraction(elapsed, days)
        out[_key("pulse_forecast_period_elapsed_days", period=period)] = Fraction(elapsed)
        out[_key("pulse_forecast_period_days", period=period)] = Fraction(days)
    out[_key("pulse_forecast_alert_margin_ratio")] = Fraction(ALERT_MARGIN)
    for period, (_, start, end) in live.items():
        for owner, p in expected_forecast_parts(events, today, start, end, cfg,
                                                by="owner", localized=True).items():
            if owner == "all":
                continue
            total = p["won"] + p["open"]
            spread = _Z * math.sqrt(p["variance"])
            for name, cents in (("won", total), ("won_so_far", p["won"]),
                                ("won_low", max(p["won"], total - spread)),
                                ("won_high", total + spread)):
                out[_key(f"pulse_owner_forecast_{name}_amount", owner=owner, period=period)] = \
                    Fraction(cents / 100)
    everything = resolve_lifecycles(events)
    closed = _walk_deals(everything, cfg)
    last_month, last_quarter = periods["last_month"], periods["last_quarter"]
    scored = {
        "last_month": (last_month, [(f"day_{n}", last_month[1] + dt.timedelta(days=n - 1))
                                    for n in (1, 8, 15, 22)]),
        "last_quarter": (last_quarter,
                         [(f"week_{n}", last_quarter[1] + dt.timedelta(weeks=n - 1))
                          for n in range(1, 14)]),
    }
    for period, ((_, start, end), checkpoints) in scored.items():
        won: dict[str, int] = defaultdict(int)
        for p in closed:
            if p.closed is not None and p.closed[0] == "won" and \
                    start <= p.closed[1].date() < end:
                won[p.team] += p.closed[2]
                won["all"] += p.closed[2]
        groups: set[str] = set()
        for checkpoint_name, checkpoint in checkpoints:
            made = expected_forecast(events, checkpoint, start, end, cfg, localized=True)
            groups |= set(made) | set(won)
            for group in set(made) | set(won):
                forecast = made.get(group, 0.0)
                labels = {"team": group, "period": period, "checkpoint": checkpoint_name}
                out[_key("pulse_forecast_snapshot_amount", **labels)] = Fraction(forecast)
                if won.get(group):
                    out[_key("pulse_forecast_error_ratio", **labels)] = Fraction(
                        abs(forecast - won[group] / 100) / (won[group] / 100))
        for group in groups:
            out[_key("pulse_forecast_actual_won_amount", team=group, period=period)] = \
                Fraction(won.get(group, 0), 100)
    return out


def expected_plan_metrics(events: list[dict[str, Any]], as_of: dt.datetime,
                          cfg: ReferenceConfig) -> dict[Key, Fraction]:
    """The CRM plan's samples at ``as_of``: over the deals open then, with the latest
    expected close (``deal.created`` or ``deal.updated``) E and the latest forecast
    category: slipped (E before T's local date), closing in T's month / quarter (from
    T's date to its end, per category), pushed out of it (E after it while the expected
    close in effect at its start, or one set since, lay inside it)."""
    deal_events = unique_by_id(_in_zone([e for e in events if e["type"].startswith("deal.")],
                                        cfg))
    today = cfg.local(as_of).date()
    plans: dict[str, list[tuple[dt.datetime, str, str | None, str | None]]] = defaultdict(list)
    for e in deal_events:
        data = e["data"]
        if e["type"] == "deal.created" and data.get("expected_close"):
            plans[data["deal_id"]].append((_t(e), e["id"], data["expected_close"], None))
        elif e["type"] == "deal.updated" and (data.get("expected_close")
                                              or data.get("forecast_category")):
            plans[data["deal_id"]].append((_t(e), e["id"], data.get("expected_close"),
                                           data.get("forecast_category")))
    periods = _period_dates(today, cfg.fiscal_year_start_month)
    counts: dict[Key, int] = defaultdict(int)
    amounts: dict[Key, int] = defaultdict(int)

    def count(name: str, cents: int, **labels: str) -> None:
        counts[_key(f"pulse_forecast_{name}_deals", **labels)] += 1
        amounts[_key(f"pulse_forecast_{name}_amount", **labels)] += cents

    for path in _walk_deals(resolve_lifecycles(deal_events), cfg):
        if path.open_stage is None:
            continue
        marks = sorted(plans.get(path.deal_id, []), key=lambda m: (m[0], m[1]))
        closes = [(when, close) for when, _, close, _ in marks if close is not None]
        categories = [category for _, _, _, category in marks if category is not None]
        if not closes:
            continue
        expected = dt.date.fromisoformat(closes[-1][1])
        category = categories[-1] if categories else "(none)"
        cents = path.open_stage[2]
        for team in (path.team, "all"):
            if expected < today:
                count("slipped", cents, team=team)
            for period in ("month", "quarter"):
                _, start, end = periods[period]
                if today <= expected < end:
                    count("closing", cents, team=team, period=period, category=category)
                elif expected >= end:
                    before = [close for when, close in closes if when.date() < start]
                    inside = ([before[-1]] if before else []) + [
                        close for when, close in closes if when.date() >= start]
                    if any(start <= dt.date.fromisoformat(c) < end for c in inside):
                        count("pushed", cents, team=team, period=period)
    out: dict[Key, Fraction] = {key: Fraction(n) for key, n in counts.items()}
    out.update({key: Fraction(cents, 100) for key, cents in amounts.items()})
    return out
