"""An independent batch computation of every exported KPI over a list of CloudEvents.

It shares no code with ``stream_app.kpi``: it sorts each deal's events and reads
the answer off the sorted lists, using calendar dates instead of day numbers. Every
event time is first shown in the organisation's time zone, so a time's ``date()`` is
its local date.
Expected values in the tests come from here.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

Key = tuple[str, tuple[tuple[str, str], ...]]


def _t(event: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00"))


def _order(event: dict[str, Any]) -> tuple[dt.datetime, str]:
    return (_t(event), event["id"])


@dataclass
class ReferenceConfig:
    """What the worker was configured with."""

    windows_days: tuple[int, ...] = (30, 90)
    stages: dict[str, Decimal] = field(default_factory=lambda: {
        "Prospecting": Decimal("0.10"), "Qualification": Decimal("0.20"),
        "Engaging": Decimal("0.40"), "Proposal": Decimal("0.60"), "Negotiation": Decimal("0.80")})
    fx: dict[str, Decimal] = field(default_factory=lambda: {
        "USD": Decimal("1"), "EUR": Decimal("1.08"), "GBP": Decimal("1.27")})
    stuck_days: int = 30
    clv_max_years: Fraction = Fraction(10)
    stint_buckets_days: tuple[int, ...] = (1, 3, 7, 14, 30, 60, 90, 180, 365)
    scoring_file: Path = Path(__file__).resolve().parents[1] / "stream_app" / "kpi" / \
        "lead_scoring_default.yml"
    hot_wait_hours: float = 24.0
    timezone: str = "UTC"
    fiscal_year_start_month: int = 1

    def local(self, moment: dt.datetime) -> dt.datetime:
        """``moment`` on the organisation's wall clock."""
        return moment.astimezone(ZoneInfo(self.timezone))


def _in_zone(events: list[dict[str, Any]], cfg: ReferenceConfig) -> list[dict[str, Any]]:
    """The events with their times written in the organisation's time zone."""
    return [{**e, "time": cfg.local(_t(e)).isoformat()} for e in events]


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


#: The stage-stint gauge histogram (seconds).
STINT_HISTOGRAM = "pulse_stage_stint_duration_seconds"

def _epoch_ms(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(milliseconds=1)


def _cents(cfg: ReferenceConfig, amount: str, currency: str) -> int:
    """``amount`` converted to reporting-currency cents, rounded half to even."""
    value = (Decimal(amount) * cfg.fx[currency]).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
    return int(value * 100)


def _windows(today: dt.date, cfg: ReferenceConfig) -> list[tuple[str, dt.date | None]]:
    """(name, first date) of each trailing window, then ("all", None)."""
    return [*((f"{n}d", today - dt.timedelta(days=n - 1)) for n in cfg.windows_days),
            ("all", None)]


def _by_entity(events: list[dict[str, Any]], prefix: str, field: str) -> dict[str, list[dict]]:
    """Events whose type starts with ``prefix``, grouped by ``data[field]``, time-ordered."""
    grouped: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        if event["type"].startswith(prefix):
            grouped[event["data"][field]].append(event)
    for items in grouped.values():
        items.sort(key=_order)
    return grouped


def _key(name: str, **labels: str) -> Key:
    return (name, tuple(sorted(labels.items())))


def unique_by_id(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """First occurrence of each event id."""
    seen: set[str] = set()
    out = []
    for event in events:
        if event["id"] not in seen:
            seen.add(event["id"])
            out.append(event)
    return out


def resolve_lifecycles(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events as if each deal's final state had always held. A deal whose last
    ``deal.deleted`` / ``deal.restored`` (in time order) is a deletion loses every event.
    Each deal's closes and reopenings are replayed in time order (a reopening before a
    close of the same time): a reopening drops every close seen so far and becomes a
    ``deal.stage_changed`` to its stage (when it names one). Deletions,
    restores and reopenings leave the list."""
    dropped: set[str] = set()
    moves: list[dict[str, Any]] = []
    for deal_events in _by_entity(events, "deal.", "deal_id").values():
        toggles = [e for e in deal_events if e["type"] in ("deal.deleted", "deal.restored")]
        if toggles and toggles[-1]["type"] == "deal.deleted":
            dropped.update(e["id"] for e in deal_events)
            continue
        dropped.update(e["id"] for e in toggles)
        closes_so_far: list[str] = []
        for e in sorted(deal_events, key=lambda e: (_t(e), e["type"] != "deal.reopened",
                                                    e["id"])):
            if e["type"] in ("deal.won", "deal.lost"):
                closes_so_far.append(e["id"])
            elif e["type"] == "deal.reopened":
                dropped.update(closes_so_far)
                closes_so_far = []
                dropped.add(e["id"])
                if e["data"].get("stage") is not None:
                    moves.append({**e, "type": "deal.stage_changed",
                                  "data": {"deal_id": e["data"]["deal_id"],
                                           "to_stage": e["data"]["stage"]}})
    return [e for e in events if e["id"] not in dropped] + moves


def expected_metrics(events: list[dict[str, Any]], as_of: dt.datetime,
                     cfg: ReferenceConfig | None = None) -> dict[Key, Fraction]:
    """Every KPI sample the worker should export at ``as_of``, as exact fractions."""
    cfg = cfg or ReferenceConfig()
    received = unique_by_id(_in_zone(events, cfg))
    events = resolve_lifecycles(received)
    as_of_date = cfg.local(as_of).date()
    by_deal: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        if event["type"].startswith("deal."):
            by_deal[event["data"]["deal_id"]].append(event)

    def cents(amount: str, currency: str) -> int:
        return _cents(cfg, amount, currency)

    created_rows: list[tuple[str, dt.date]] = []
    won_rows: list[tuple[str, dt.date, int, int]] = []  # team, date, cents, cycle_ms
    lost_rows: list[tuple[str, dt.date]] = []
    open_rows: list[tuple[str, str, int]] = []  # team, stage, cents
    account_first_win: dict[str, dt.datetime] = {}
    for deal_events in by_deal.values():
        created = sorted((e for e in deal_events if e["type"] == "deal.created"), key=_order)
        if not created:
            continue
        c = created[0]
        team, currency = c["data"]["team"], c["data"]["currency"]
        created_rows.append((team, _t(c).date()))
        terminal = sorted((e for e in deal_events if e["type"] in ("deal.won", "deal.lost")),
                          key=_order)
        if terminal:
            end = terminal[0]
            if end["type"] == "deal.won":
                cycle = _t(end) - _t(c)
                cycle_ms = (cycle.days * 86400 + cycle.seconds) * 1000 + cycle.microseconds // 1000
                won_rows.append((team, _t(end).date(),
                                 cents(end["data"]["amount"], currency), cycle_ms))
                account = c["data"].get("account_id")
                if account and (account not in account_first_win
                                or _t(end) < account_first_win[account]):
                    account_first_win[account] = _t(end)
            else:
                lost_rows.append((team, _t(end).date()))
            continue
        changes = [e for e in deal_events if e["type"] in ("deal.stage_changed", "deal.updated")
                   and _order(e) >= _order(c)]
        moves = [e for e in changes if e["type"] == "deal.stage_changed"]
        stage = max(moves, key=_order)["data"]["to_stage"] if moves else c["data"]["stage"]
        amounts = [e for e in changes if e["data"].get("amount") is not None]
        amount = (max(amounts, key=_order)["data"]["amount"] if amounts
                  else c["data"]["amount"])
        open_rows.append((team, stage, cents(str(amount), currency)))

    teams = sorted({r[0] for r in created_rows})
    groups = [*teams, "all"]
    out: dict[Key, Fraction] = {}
    open_count = {g: sum(1 for r in open_rows if g in ("all", r[0])) for g in groups}
    windows = _windows(as_of_date, cfg)

    def inside(day: dt.date, first: dt.date | None) -> bool:
        return day <= as_of_date and (first is None or day >= first)

    for window, first in windows:
        for g in groups:
            def mine(row_team: str, g: str = g) -> bool:
                return g == "all" or row_team == g
            created_n = sum(1 for t, d in created_rows if mine(t) and inside(d, first))
            won = [r for r in won_rows if mine(r[0]) and inside(r[1], first)]
            lost_n = sum(1 for t, d in lost_rows if mine(t) and inside(d, first))
            won_n = len(won)
            won_cents = sum(r[2] for r in won)
            cycle_ms = sum(r[3] for r in won)
            lab = {"team": g, "window": window}
            out[_key("pulse_created_deals", **lab)] = Fraction(created_n)
            out[_key("pulse_deals_won", **lab)] = Fraction(won_n)
            out[_key("pulse_deals_lost", **lab)] = Fraction(lost_n)
            out[_key("pulse_deals_closed", **lab)] = Fraction(won_n + lost_n)
            out[_key("pulse_won_amount", **lab)] = Fraction(won_cents, 100)
            out[_key("pulse_won_deals_cycle_seconds", **lab)] = Fraction(cycle_ms, 1000)
            out[_key("pulse_window_open_deals", **lab)] = Fraction(open_count[g])
            if won_n + lost_n:
                out[_key("pulse_win_rate_ratio", **lab)] = Fraction(won_n, won_n + lost_n)
            if created_n:
                out[_key("pulse_pipeline_conversion_ratio", **lab)] = Fraction(won_n, created_n)
            if won_n:
                avg = Fraction(won_cents, 100 * won_n)
                cycle_s = Fraction(cycle_ms, 1000 * won_n)
                out[_key("pulse_average_deal_size", **lab)] = avg
                out[_key("pulse_sales_cycle_seconds", **lab)] = cycle_s
                if cycle_s:
                    out[_key("pulse_sales_velocity_deals_per_second", **lab)] = won_n / cycle_s
                    rate = Fraction(won_n, won_n + lost_n)
                    out[_key("pulse_sales_velocity_amount_per_second", **lab)] = (
                        open_count[g] * rate * avg / cycle_s)
    for g in groups:
        for stage, probability in cfg.stages.items():
            rows = [r for r in open_rows if r[1] == stage and g in ("all", r[0])]
            total = sum(r[2] for r in rows)
            lab = {"team": g, "stage": stage}
            out[_key("pulse_open_deals", **lab)] = Fraction(len(rows))
            out[_key("pulse_open_pipeline_amount", **lab)] = Fraction(total, 100)
            out[_key("pulse_open_pipeline_weighted_amount", **lab)] = (
                Fraction(total, 100) * Fraction(probability))

    churn_at = {account: when for account, (when, _) in
                _churns(events, account_first_win).items()}
    this_month = as_of_date.replace(day=1)
    last_month = (this_month - dt.timedelta(days=1)).replace(day=1)
    for period, start, end in (("month_to_date", this_month, as_of_date + dt.timedelta(days=1)),
                               ("last_month", last_month, this_month)):
        active = [a for a, w in account_first_win.items()
                  if w.date() < start and not (a in churn_at and churn_at[a].date() < start)]
        gone = [a for a, when in churn_at.items() if start <= when.date() < end]
        cohort = sum(1 for a in gone if a in active)
        out[_key("pulse_customers_churned", period=period)] = Fraction(cohort)
        out[_key("pulse_new_customers_churned", period=period)] = Fraction(len(gone) - cohort)
        out[_key("pulse_customers_active_at_period_start", period=period)] = Fraction(len(active))
        if active:
            out[_key("pulse_customer_churn_rate_ratio", period=period)] = Fraction(
                cohort, len(active))
        out[_key("pulse_period_start_timestamp_seconds", period=period)] = Fraction(
            _epoch_ms(dt.datetime.combine(start, dt.time(), ZoneInfo(cfg.timezone))), 1000)
    out[_key("pulse_asof_timestamp_seconds")] = Fraction(_epoch_ms(as_of), 1000)
    if received:
        out[_key("pulse_last_event_timestamp_seconds")] = Fraction(
            _epoch_ms(max(_t(e) for e in received)), 1000)
    out.update(expected_catalogue(events, as_of, cfg))
    out.update(_expected_roster(events))
    from tests.reference_forecast import expected_forecast_metrics, expected_plan_metrics
    out.update(expected_forecast_metrics(received, as_of, cfg))
    out.update(expected_plan_metrics(received, as_of, cfg))
    return out


def _expected_roster(events: list[dict[str, Any]]) -> dict[Key, Fraction]:
    """``pulse_owner_info{owner,name,team}`` = 1 for each owner's latest ``rep.updated``
    (by time, then id); a profile without a team shows "(none)"."""
    latest: dict[str, dict[str, Any]] = {}
    for e in sorted((e for e in events if e["type"] == "rep.updated"), key=_order):
        latest[e["data"]["owner_id"]] = e["data"]
    return {("pulse_owner_info", tuple(sorted({"owner": owner, "name": data["name"],
                                               "team": data.get("team") or "(none)"}.items()))):
            Fraction(1) for owner, data in latest.items()}


@dataclass
class _Path:
    """One created deal walked in time order."""

    team: str
    owner: str
    source: str
    product: str
    account: str | None
    created: dt.datetime
    created_cents: int
    stints: list[tuple[str, dt.datetime, dt.datetime, str]] = field(default_factory=list)
    moves: list[tuple[str, int, dt.datetime]] = field(default_factory=list)  # movement, cents, when
    open_stage: tuple[str, dt.datetime, int] | None = None  # stage, since, cents
    closed: tuple[str, dt.datetime, int, Fraction | None, str | None] | None = None
    # kind, time, cents (won amount or amount at loss), price gap, competitor
    closing_owner: str = ""  # who owned the deal when it closed
    current_owner: str = ""  # who owns it now (owner changes in deal.updated)
    deal_id: str = ""


def _walk_deals(events: list[dict[str, Any]], cfg: ReferenceConfig) -> list[_Path]:
    order = list(cfg.stages)
    paths = []
    for deal_events in _by_entity(events, "deal.", "deal_id").values():
        created = [e for e in deal_events if e["type"] == "deal.created"]
        if not created:
            continue
        c = created[0]
        data, currency = c["data"], c["data"]["currency"]

        def cents(amount: str, currency: str = currency) -> int:
            return _cents(cfg, amount, currency)

        path = _Path(data["team"], data["owner_id"], data.get("source") or "(none)",
                     data.get("product") or "(none)", data.get("account_id"), _t(c),
                     cents(data["amount"]))
        path.deal_id = data["deal_id"]
        path.moves.append(("created", path.created_cents, _t(c)))
        owner_moves = [e for e in deal_events if e["type"] == "deal.updated"
                       and e["data"].get("owner_id") and _order(e) >= _order(c)]

        def owner_at(moment: dt.datetime, creator: str = data["owner_id"],
                     moves: list[dict[str, Any]] = owner_moves) -> str:
            before = [e for e in moves if _t(e) <= moment]
            return before[-1]["data"]["owner_id"] if before else creator

        path.current_owner = owner_moves[-1]["data"]["owner_id"] if owner_moves \
            else data["owner_id"]
        ends = [e for e in deal_events if e["type"] in ("deal.won", "deal.lost")]
        end = ends[0] if ends else None
        stage, since, amount = data["stage"], _t(c), data["amount"]
        for e in deal_events:
            if e["type"] not in ("deal.stage_changed", "deal.updated") or _order(e) < _order(c):
                continue
            if end is not None and _order(e) >= _order(end):
                break
            new_amount = e["data"].get("amount")
            if new_amount is not None:
                change = cents(new_amount) - cents(amount)
                if change:
                    path.moves.append(("increased" if change > 0 else "decreased", abs(change),
                                       _t(e)))
                amount = new_amount
            to = e["data"].get("to_stage", stage)  # deal.updated moves nothing
            if to != stage:
                forward = order.index(to) > order.index(stage)
                path.stints.append((stage, since, _t(e), "forward" if forward else "backward"))
                path.moves.append(("advanced" if forward else "regressed", cents(amount), _t(e)))
                stage, since = to, _t(e)
        if end is None:
            path.open_stage = (stage, since, cents(amount))
        else:
            won = end["type"] == "deal.won"
            ours = end["data"]["amount"] if won else amount
            path.stints.append((stage, since, _t(end), "forward" if won else "lost"))
            path.moves.append(("won" if won else "lost", cents(ours), _t(end)))
            price = end["data"].get("competitor_price")
            gap = (Fraction(Decimal(ours)) / Fraction(Decimal(price)) - 1
                   if price is not None and Decimal(price) != 0 else None)
            path.closed = ("won" if won else "lost", _t(end), cents(ours), gap,
                           end["data"].get("competitor"))
            path.closing_owner = owner_at(_t(end))
        paths.append(path)
    return paths


def _churns(events: list[dict[str, Any]], first_win: dict[str, dt.datetime]
            ) -> dict[str, tuple[dt.datetime, str | None]]:
    """Each customer's churn as account -> (time, competitor): the earliest (by time, id)
    ``customer.churned`` strictly after the account's first win; earlier notices (a
    relationship that ended before a win-back) are not the customer's churn."""
    out: dict[str, tuple[dt.datetime, str | None]] = {}
    for e in sorted((e for e in events if e["type"] == "customer.churned"), key=_order):
        account = e["data"]["account_id"]
        if account in first_win and account not in out and _t(e) > first_win[account]:
            out[account] = (_t(e), e["data"].get("competitor"))
    return out


def _customers(events: list[dict[str, Any]], paths: list[_Path]):
    """Win dates per account and each customer's churn as account -> (time, competitor)."""
    wins: dict[str, list[dt.datetime]] = defaultdict(list)
    for p in paths:
        if p.account and p.closed is not None and p.closed[0] == "won":
            wins[p.account].append(p.closed[1])
    return wins, _churns(events, {a: min(days) for a, days in wins.items()})


def expected_catalogue(events: list[dict[str, Any]], as_of: dt.datetime,
                       cfg: ReferenceConfig) -> dict[Key, Fraction]:
    """Stages, stuck deals, waterfall, sources, products, competitors, growth and CLV,
    from ``events`` already in the organisation's zone (as :func:`expected_metrics`
    passes them)."""
    paths = _walk_deals(events, cfg)
    wins, churns = _customers(events, paths)
    today = cfg.local(as_of).date()
    out: dict[Key, Fraction] = {}
    teams = sorted({p.team for p in paths})
    windows = _windows(today, cfg)

    def inside(moment: dt.datetime, first: dt.date | None) -> bool:
        return moment.date() <= today and (first is None or moment.date() >= first)

    for group in (*teams, "all"):
        mine = [p for p in paths if group in ("all", p.team)]
        for stage in cfg.stages:
            stuck = [p.open_stage for p in mine if p.open_stage and p.open_stage[0] == stage
                     and (today - p.open_stage[1].date()).days > cfg.stuck_days]
            out[_key("pulse_stuck_deals", team=group, stage=stage)] = Fraction(len(stuck))
            out[_key("pulse_stuck_pipeline_amount", team=group, stage=stage)] = Fraction(
                sum(s[2] for s in stuck), 100)
        for movement, (window, first) in itertools.product(
                ("created", "advanced", "regressed", "won", "lost", "increased", "decreased"),
                windows):
            moves = [cents for p in mine for m, cents, when in p.moves
                     if m == movement and inside(when, first)]
            lab = {"team": group, "movement": movement, "window": window}
            out[_key("pulse_pipeline_waterfall_deals", **lab)] = Fraction(len(moves))
            out[_key("pulse_pipeline_waterfall_amount", **lab)] = Fraction(sum(moves), 100)
        for window, first in windows:
            means: list[tuple[Fraction, str]] = []
            for stage in cfg.stages:
                stints = [s for p in mine for s in p.stints if s[0] == stage
                          and inside(s[2], first)]
                ms = [_epoch_ms(s[2]) - _epoch_ms(s[1]) for s in stints]
                lab = {"team": group, "stage": stage, "window": window}
                out[_key("pulse_stage_stints", **lab)] = Fraction(len(stints))
                out[_key("pulse_stage_stint_seconds", **lab)] = Fraction(sum(ms), 1000)
                for direction in ("forward", "backward", "lost"):
                    out[_key("pulse_stage_exits", direction=direction, **lab)] = Fraction(
                        sum(1 for s in stints if s[3] == direction))
                if stints:
                    mean = Fraction(sum(ms), 1000 * len(stints))
                    means.append((mean, stage))
                    out[_key("pulse_stage_mean_stint_seconds", **lab)] = mean
                    out[_key("pulse_stage_forward_ratio", **lab)] = Fraction(
                        sum(1 for s in stints if s[3] == "forward"), len(stints))
                if group == "all":
                    hist = {"stage": stage, "window": window}
                    for bound in (*cfg.stint_buckets_days, None):
                        n = sum(1 for d in ms if bound is None or Fraction(d, 86_400_000) <= bound)
                        le = "+Inf" if bound is None else str(bound * 86_400)
                        out[_key(f"{STINT_HISTOGRAM}_bucket", le=le, **hist)] = Fraction(n)
                    out[_key(f"{STINT_HISTOGRAM}_gcount", **hist)] = Fraction(len(ms))
                    out[_key(f"{STINT_HISTOGRAM}_gsum", **hist)] = Fraction(sum(ms), 1000)
            if means:
                best = max(m for m, _ in means)
                stage = next(s for m, s in means if m == best)
                out[_key("pulse_stage_bottleneck_mean_stint_seconds", team=group, window=window,
                         stage=stage)] = best
        # monthly growth
        month = today.replace(day=1)
        last = (month - dt.timedelta(days=1)).replace(day=1)
        before = (last - dt.timedelta(days=1)).replace(day=1)
        elapsed = (today - month).days
        same_end = min(last + dt.timedelta(days=elapsed), month - dt.timedelta(days=1))
        won = [(p.closed[1].date(), p.closed[2]) for p in mine
               if p.closed is not None and p.closed[0] == "won"]

        def won_between(start: dt.date, end: dt.date, won=won) -> int:
            return sum(c for d, c in won if start <= d <= end)

        periods = {"month_to_date": won_between(month, today),
                   "last_month_same_days": won_between(last, same_end),
                   "last_month": won_between(last, month - dt.timedelta(days=1)),
                   "month_before_last": won_between(before, last - dt.timedelta(days=1))}
        for period, total in periods.items():
            out[_key("pulse_monthly_won_amount", team=group, period=period)] = Fraction(total, 100)
        for period, now, then in (("last_month", "last_month", "month_before_last"),
                                  ("month_to_date", "month_to_date", "last_month_same_days")):
            if periods[then]:
                out[_key("pulse_monthly_sales_growth_ratio", team=group, period=period)] = (
                    Fraction(periods[now] - periods[then], periods[then]))

    for dimension in ("source", "product"):
        values = sorted({getattr(p, dimension) for p in paths})
        for value in values:
            mine = [p for p in paths if getattr(p, dimension) == value]
            for window, first in windows:
                created = sum(1 for p in mine if inside(p.created, first))
                closed = [p.closed for p in mine if p.closed and inside(p.closed[1], first)]
                won = [c for c in closed if c[0] == "won"]
                lab = {dimension: value, "window": window}
                out[_key(f"pulse_{dimension}_created_deals", **lab)] = Fraction(created)
                out[_key(f"pulse_{dimension}_deals_won", **lab)] = Fraction(len(won))
                out[_key(f"pulse_{dimension}_deals_lost", **lab)] = Fraction(len(closed) - len(won))
                out[_key(f"pulse_{dimension}_won_amount", **lab)] = Fraction(
                    sum(c[2] for c in won), 100)
                if closed:
                    out[_key(f"pulse_{dimension}_win_rate_ratio", **lab)] = Fraction(
                        len(won), len(closed))
                if won:
                    out[_key(f"pulse_{dimension}_average_deal_size", **lab)] = Fraction(
                        sum(c[2] for c in won), 100 * len(won))

    names = sorted({p.closed[4] for p in paths if p.closed and p.closed[4]}
                   | {c[1] for c in churns.values() if c[1]})
    for name in names:
        for window, first in windows:
            closed = [p.closed for p in paths if p.closed and p.closed[4] == name
                      and inside(p.closed[1], first)]
            won = sum(1 for c in closed if c[0] == "won")
            gaps = [c[3] for c in closed if c[3] is not None]
            lab = {"competitor": name, "window": window}
            out[_key("pulse_competitor_deals_won", **lab)] = Fraction(won)
            out[_key("pulse_competitor_deals_lost", **lab)] = Fraction(len(closed) - won)
            out[_key("pulse_competitor_priced_deals", **lab)] = Fraction(len(gaps))
            out[_key("pulse_competitor_summed_price_gap_ratio", **lab)] = sum(gaps, Fraction(0))
            out[_key("pulse_competitor_customers_churned", **lab)] = Fraction(sum(
                1 for when, who in churns.values() if who == name and inside(when, first)))
            if closed:
                out[_key("pulse_competitor_win_rate_ratio", **lab)] = Fraction(won, len(closed))
            if gaps:
                out[_key("pulse_competitor_price_gap_ratio", **lab)] = (
                    sum(gaps, Fraction(0)) / len(gaps))

    first = today - dt.timedelta(days=364)
    won = [p for p in paths if p.closed and p.closed[0] == "won" and inside(p.closed[1], first)]
    apv_n, apv_cents = len(won), sum(p.closed[2] for p in won if p.closed)
    with_account = sum(1 for p in won if p.account)
    buyers = sum(1 for days in wins.values() if any(first <= d.date() <= today for d in days))
    churned = sum(1 for when, _ in churns.values() if first <= when.date() <= today)
    active = sum(1 for a, days in wins.items() if min(days).date() < first
                 and not (a in churns and churns[a][0].date() < first))
    parts = {"pulse_clv_won_amount": Fraction(apv_cents, 100),
             "pulse_clv_won_deals": Fraction(apv_n),
             "pulse_clv_won_deals_with_account": Fraction(with_account),
             "pulse_clv_customers_buying": Fraction(buyers),
             "pulse_clv_customers_churned": Fraction(churned),
             "pulse_clv_customers_active_at_start": Fraction(active),
             "pulse_clv_max_lifespan_years": cfg.clv_max_years}
    for name, value in parts.items():
        out[_key(name)] = value
    apv = Fraction(apv_cents, 100 * apv_n) if apv_n else None
    pf = Fraction(with_account, buyers) if buyers else None
    if churned == 0:
        lifespan: Fraction | None = cfg.clv_max_years
    else:
        lifespan = min(Fraction(active, churned), cfg.clv_max_years) if active else None
    for name, value in (("pulse_clv_average_purchase_value", apv),
                        ("pulse_clv_purchase_frequency_per_year", pf),
                        ("pulse_clv_customer_lifespan_years", lifespan)):
        if value is not None:
            out[_key(name)] = value
    if apv is not None and pf is not None and lifespan is not None:
        out[_key("pulse_customer_lifetime_value")] = apv * pf * lifespan
    out.update(_expected_quotas(events, paths, today, cfg))
    out.update(expected_leads(events, as_of, cfg))
    out.update(_expected_activities(events, paths, today, cfg))
    out.update(_expected_owner_deals(paths, today, cfg))
    return out


def _expected_owner_deals(paths: list[_Path], today: dt.date,
                          cfg: ReferenceConfig) -> dict[Key, Fraction]:
    """Each owner's deals: created (by the owner named in ``deal.created``), won, lost,
    won amount and summed cycle (by the owner at the close) in each window; open deals
    and pipeline at T (by the current owner)."""
    out: dict[Key, Fraction] = {}
    by_creator: dict[str, list[_Path]] = defaultdict(list)
    by_closer: dict[str, list[_Path]] = defaultdict(list)
    by_current: dict[str, list[_Path]] = defaultdict(list)
    for p in paths:
        by_creator[p.owner].append(p)
        by_closer[p.closing_owner].append(p)
        by_current[p.current_owner].append(p)
    for owner in sorted({o for p in paths for o in (p.owner, p.current_owner,
                                                      p.closing_owner) if o}):
        created = by_creator[owner]
        mine = by_closer[owner]
        for window, first in _windows(today, cfg):
            def inside(moment: dt.datetime, first: dt.date | None = first) -> bool:
                return moment.date() <= today and (first is None or moment.date() >= first)

            won = [p for p in mine if p.closed and p.closed[0] == "won" and inside(p.closed[1])]
            lost = [p for p in mine if p.closed and p.closed[0] == "lost" and inside(p.closed[1])]
            cycle_ms = sum((p.closed[1] - p.created) // dt.timedelta(milliseconds=1)
                           for p in won if p.closed)
            lab = {"owner": owner, "window": window}
            out[_key("pulse_owner_created_deals", **lab)] = Fraction(
                sum(1 for p in created if inside(p.created)))
            out[_key("pulse_owner_deals_won", **lab)] = Fraction(len(won))
            out[_key("pulse_owner_deals_lost", **lab)] = Fraction(len(lost))
            out[_key("pulse_owner_won_deals_amount", **lab)] = Fraction(
                sum(p.closed[2] for p in won if p.closed), 100)
            out[_key("pulse_owner_won_deals_cycle_seconds", **lab)] = Fraction(cycle_ms, 1000)
        still_open = [p.open_stage for p in by_current[owner] if p.open_stage]
        out[_key("pulse_owner_open_deals", owner=owner)] = Fraction(len(still_open))
        out[_key("pulse_owner_open_pipeline_amount", owner=owner)] = Fraction(
            sum(s[2] for s in still_open), 100)
        out[_key("pulse_owner_open_pipeline_weighted_amount", owner=owner)] = sum(
            (Fraction(s[2], 100) * Fraction(cfg.stages[s[0]]) for s in still_open), Fraction(0))
    return out


def _fit_points(rules: dict[str, Any], info: dict[str, Any]) -> Fraction:
    """Fit points as an exact fraction: industry looked up in lower case, the size band
    found by counting the band bounds at or below the size, the title's seniority by
    searching each tier's keywords as whole words (no regular expressions)."""
    fit = rules.get("fit", {})
    points = Fraction(0)
    industries = {name.lower(): value for name, value in fit.get("industry", {}).items()}
    if info.get("industry"):
        points += Fraction(industries.get(info["industry"].lower(), 0))
    bands = fit.get("company_size", [])
    size = info.get("company_size")
    if size is not None and bands:
        passed = sum(1 for band in bands if band["below"] is not None and size >= band["below"])
        if passed < len(bands):
            points += Fraction(bands[passed]["points"])
    title = (info.get("job_title") or "").lower()
    for tier in fit.get("job_title", []):
        if any(_has_word(title, keyword.lower()) for keyword in tier["keywords"]):
            points += Fraction(tier["points"])
            break
    return points


def _has_word(text: str, word: str) -> bool:
    """Whether ``word`` stands in ``text`` with no letter, digit or _ touching either end."""
    def touches(i: int) -> bool:
        return 0 <= i < len(text) and (text[i].isalnum() or text[i] == "_")

    start = text.find(word)
    while start >= 0:
        if not touches(start - 1) and not touches(start + len(word)):
            return True
        start = text.find(word, start + 1)
    return False


class _Decayed:
    """A lead's engagement score replayed in time order: the running sum halves every
    half-life and each engagement adds its points (no list of past engagements)."""

    def __init__(self, rules: dict[str, Any], fit: Fraction):
        self.half_life_ms = rules["half_life_days"] * 86_400_000
        self.points = rules["engagement"]
        self.fit = float(fit)
        self.value = 0.0
        self.at = None

    def decay_to(self, moment: int) -> float:
        """The score at ``moment`` (not before the last engagement added)."""
        if self.at is not None:
            self.value *= 2.0 ** (-(moment - self.at) / self.half_life_ms)
        self.at = moment
        return self.fit + self.value

    def add(self, moment: int, action: str) -> float:
        self.decay_to(moment)
        self.value += self.points[action]
        return self.fit + self.value


def _score(rules: dict[str, Any], fit: Fraction, engaged: list[tuple[int, str]],
           at: int) -> float:
    replay = _Decayed(rules, fit)
    for when, action in sorted(engaged):
        if when <= at:
            replay.add(when, action)
    return replay.decay_to(at) if replay.at is not None else float(fit)


def _crossings(rules: dict[str, Any], fit: Fraction, created: dict[str, Any],
               engaged: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(time ms, event id) of the events that took a lead over the hot threshold."""
    threshold = rules["hot_threshold"]
    out = [(_epoch_ms(_t(created)), created["id"])] if fit >= threshold else []
    replay = _Decayed(rules, fit)
    for e in engaged:
        when = _epoch_ms(_t(e))
        before = replay.decay_to(when)
        after = replay.add(when, e["data"]["action"])
        if _order(e) >= _order(created) and before < threshold <= after:
            out.append((when, e["id"]))
    return out


def expected_hot_events(events: list[dict[str, Any]],
                        cfg: ReferenceConfig | None = None) -> set[str]:
    """Ids of the ``lead.hot`` events the workers should publish."""
    cfg = cfg or ReferenceConfig()
    rules = yaml.safe_load(cfg.scoring_file.read_text())
    ids = set()
    for lead, lead_events in _by_entity(unique_by_id(events), "lead.", "lead_id").items():
        created = [e for e in lead_events if e["type"] == "lead.created"]
        if not created:
            continue
        ends = [e for e in lead_events if e["type"] in ("lead.converted", "lead.disqualified")]
        engaged = [e for e in lead_events if e["type"] == "lead.engaged"
                   and (not ends or _order(e) < _order(ends[0]))]
        fit = _fit_points(rules, created[0]["data"])
        ids.update(f"{lead}:hot:{event_id}"
                   for _, event_id in _crossings(rules, fit, created[0], engaged))
    return ids


def expected_leads(events: list[dict[str, Any]], as_of: dt.datetime,
                   cfg: ReferenceConfig) -> dict[Key, Fraction]:
    """Lead conversion by source and by score band, and the open leads' live scores, from
    ``events`` already in the organisation's zone (as :func:`expected_metrics` passes them)."""
    rules = yaml.safe_load(cfg.scoring_file.read_text())
    edges = rules["band_edges"]
    names = [f"0-{edges[0]}", *(f"{a}-{b}" for a, b in itertools.pairwise(edges)),
             f"{edges[-1]}+"]
    today = cfg.local(as_of).date()
    now = _epoch_ms(as_of)
    windows = _windows(today, cfg)
    rows = []  # source, created date, close date or None, converted, band at close
    open_scores: list[tuple[float, int | None]] = []  # score at T, last turned hot
    for lead_events in _by_entity(unique_by_id(events), "lead.", "lead_id").values():
        created = [e for e in lead_events if e["type"] == "lead.created"]
        if not created:
            continue
        c = created[0]
        ends = [e for e in lead_events if e["type"] in ("lead.converted", "lead.disqualified")]
        end = ends[0] if ends else None
        engaged = [e for e in lead_events if e["type"] == "lead.engaged"
                   and (end is None or _order(e) < _order(end))]
        fit = _fit_points(rules, c["data"])
        pairs = [(_epoch_ms(_t(e)), e["data"]["action"]) for e in engaged]
        crossings = _crossings(rules, fit, c, engaged)
        if end is None:
            hot_at = crossings[-1][0] if crossings else None
            open_scores.append((_score(rules, fit, pairs, now), hot_at))
            rows.append((c["data"]["source"], _t(c).date(), None, False, None))
        else:
            score = _score(rules, fit, pairs, _epoch_ms(_t(end)))
            band = next((name for name, edge in zip(names, edges, strict=False)
                         if score < edge), names[-1])
            rows.append((c["data"]["source"], _t(c).date(), _t(end).date(),
                         end["type"] == "lead.converted", band))
    out: dict[Key, Fraction] = {}

    def inside(day: dt.date | None, first: dt.date | None) -> bool:
        return day is not None and day <= today and (first is None or day >= first)

    for window, first in windows:
        for source in [*sorted({r[0] for r in rows}), "all"]:
            mine = [r for r in rows if source in ("all", r[0])]
            created_n = sum(1 for r in mine if inside(r[1], first))
            converted = sum(1 for r in mine if r[3] and inside(r[2], first))
            lost = sum(1 for r in mine if r[2] is not None and not r[3] and inside(r[2], first))
            lab = {"source": source, "window": window}
            out[_key("pulse_created_leads", **lab)] = Fraction(created_n)
            out[_key("pulse_leads_converted", **lab)] = Fraction(converted)
            out[_key("pulse_leads_disqualified", **lab)] = Fraction(lost)
            if created_n:
                out[_key("pulse_lead_conversion_ratio", **lab)] = Fraction(converted, created_n)
        for band in names:
            closed = [r for r in rows if r[4] == band and inside(r[2], first)]
            won = sum(1 for r in closed if r[3])
            lab = {"band": band, "window": window}
            out[_key("pulse_lead_band_closed", **lab)] = Fraction(len(closed))
            out[_key("pulse_lead_band_converted", **lab)] = Fraction(won)
            if closed:
                out[_key("pulse_lead_band_conversion_ratio", **lab)] = Fraction(won, len(closed))
    for bound in [*rules["histogram_buckets"], None]:
        le = "+Inf" if bound is None else str(bound)
        out[_key("pulse_lead_score_bucket", le=le)] = Fraction(
            sum(1 for score, _ in open_scores if bound is None or score <= bound))
    out[_key("pulse_lead_score_gcount")] = Fraction(len(open_scores))
    out[_key("pulse_lead_score_gsum")] = Fraction(sum(score for score, _ in open_scores))
    out[_key("pulse_open_leads")] = Fraction(len(open_scores))
    hot = [since for score, since in open_scores if score >= rules["hot_threshold"]]
    out[_key("pulse_hot_leads")] = Fraction(len(hot))
    wait = round(cfg.hot_wait_hours * 3_600_000)
    out[_key("pulse_hot_leads_waiting")] = Fraction(
        sum(1 for since in hot if since is not None and now - since >= wait))
    return out


def _expected_activities(events: list[dict[str, Any]], paths: list[_Path], today: dt.date,
                         cfg: ReferenceConfig) -> dict[Key, Fraction]:
    """Calls, emails and meetings per team and per owner in each window; activities per
    won deal. One activity per CRM ``activity_id`` (else per event id), its earliest event."""
    earliest: dict[str, dict[str, Any]] = {}
    for e in unique_by_id(events):
        if e["type"] != "activity.logged":
            continue
        identity = e["data"].get("activity_id") or e["id"]
        if identity not in earliest or _order(e) < _order(earliest[identity]):
            earliest[identity] = e
    logged = [(e["data"]["team"], e["data"]["owner_id"], e["data"]["kind"], _t(e).date())
              for e in earliest.values()]
    wins = [(p.team, p.closed[1].date()) for p in paths if p.closed and p.closed[0] == "won"]
    out: dict[Key, Fraction] = {}
    for window, first in _windows(today, cfg):
        def inside(day: dt.date, first: dt.date | None = first) -> bool:
            return day <= today and (first is None or day >= first)

        for team in [*sorted({t for t, _, _, _ in logged}), "all"]:
            mine = [kind for t, _, kind, day in logged if team in ("all", t) and inside(day)]
            for kind in ("call", "email", "meeting"):
                out[_key("pulse_activities", team=team, kind=kind, window=window)] = Fraction(
                    mine.count(kind))
            won = sum(1 for t, day in wins if team in ("all", t) and inside(day))
            if won:
                out[_key("pulse_activities_per_won_deal", team=team, window=window)] = Fraction(
                    len(mine), won)
        for owner in sorted({o for _, o, _, _ in logged}):
            mine = [kind for _, o, kind, day in logged if o == owner and inside(day)]
            for kind in ("call", "email", "meeting"):
                out[_key("pulse_owner_activities", owner=owner, kind=kind, window=window)] = (
                    Fraction(mine.count(kind)))
    return out


def _period_dates(today: dt.date, fiscal_start: int = 1
                  ) -> dict[str, tuple[str, dt.date, dt.date]]:
    """Period type -> (name, first day, first day after) for the month and fiscal
    quarter of ``today`` and the ones before them. The fiscal year begins on the first
    of month ``fiscal_start`` and is named after the year it ends in."""
    def month(d: dt.date) -> tuple[str, dt.date, dt.date]:
        start = d.replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
        return f"{start:%Y-%m}", start, end

    def quarter(d: dt.date) -> tuple[str, dt.date, dt.date]:
        year_start = dt.date(d.year if d.month >= fiscal_start else d.year - 1, fiscal_start, 1)
        year_end = dt.date(year_start.year + 1, fiscal_start, 1) - dt.timedelta(days=1)
        start = year_start
        for q in range(1, 5):
            end = start
            for _ in range(3):
                end = (end + dt.timedelta(days=32)).replace(day=1)
            if start <= d < end:
                return f"{year_end.year}-Q{q}", start, end
            start = end
        raise AssertionError(d)

    this_month, this_quarter = month(today), quarter(today)
    return {"month": this_month, "quarter": this_quarter,
            "last_month": month(this_month[1] - dt.timedelta(days=1)),
            "last_quarter": quarter(this_quarter[1] - dt.timedelta(days=1))}


def _expected_quotas(events: list[dict[str, Any]], paths: list[_Path], today: dt.date,
                     cfg: ReferenceConfig) -> dict[Key, Fraction]:
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for event in sorted((e for e in events if e["type"] == "quota.set"), key=_order):
        latest[(event["data"]["owner_id"], event["data"]["period"])] = event
    out: dict[Key, Fraction] = {}
    open_cents: dict[str, int] = defaultdict(int)
    for p in paths:
        if p.open_stage is not None:
            open_cents[p.team] += p.open_stage[2]
            open_cents["all"] += p.open_stage[2]
    for period, (name, start, end) in _period_dates(today,
                                                    cfg.fiscal_year_start_month).items():
        rows = []  # team, owner, quota cents, won cents
        by_closer: dict[str, list[_Path]] = defaultdict(list)
        for p in paths:
            by_closer[p.closing_owner].append(p)
        for (owner, quota_period), event in sorted(latest.items()):
            if quota_period != name:
                continue
            data = event["data"]
            quota = _cents(cfg, data["amount"], data["currency"])
            won = sum(p.closed[2] for p in by_closer[owner] if p.closed
                      and p.closed[0] == "won" and start <= p.closed[1].date() < end)
            rows.append((data["team"], owner, quota, won))
            lab = {"owner": owner, "period": period}
            out[_key("pulse_owner_quota_amount", **lab)] = Fraction(quota, 100)
            out[_key("pulse_owner_won_amount", **lab)] = Fraction(won, 100)
            if quota:
                out[_key("pulse_quota_attainment_ratio", **lab)] = Fraction(won, quota)
        for group in sorted({r[0] for r in rows}) + (["all"] if rows else []):
            mine = [r for r in rows if group in ("all", r[0])]
            quota, won = sum(r[2] for r in mine), sum(r[3] for r in mine)
            at_quota = sum(1 for r in mine if r[3] >= r[2])
            lab = {"team": group, "period": period}
            out[_key("pulse_quota_amount", **lab)] = Fraction(quota, 100)
            out[_key("pulse_quota_won_amount", **lab)] = Fraction(won, 100)
            out[_key("pulse_quota_owners", **lab)] = Fraction(len(mine))
            out[_key("pulse_quota_owners_at_quota", **lab)] = Fraction(at_quota)
            out[_key("pulse_quota_owners_at_quota_ratio", **lab)] = Fraction(at_quota, len(mine))
            out[_key("pulse_remaining_quota_amount", **lab)] = Fraction(quota - won, 100)
            if period in ("month", "quarter"):
                if quota:
                    out[_key("pulse_pipeline_coverage_ratio", **lab)] = Fraction(
                        open_cents[group], quota)
                if quota > won:
                    out[_key("pulse_remaining_pipeline_coverage_ratio", **lab)] = Fraction(
                        open_cents[group], quota - won)
    first = today - dt.timedelta(days=89)
    for group in [*sorted({p.team for p in paths}), "all"]:
        closed = [p.closed for p in paths if group in ("all", p.team) and p.closed
                  and first <= p.closed[1].date() <= today]
        won = sum(1 for c in closed if c[0] == "won")
        if won:
            out[_key("pulse_required_coverage_ratio", team=group)] = Fraction(len(closed), won)
    return out


#: Metrics whose values add up across workers (the rest are ratios of them).
ADDITIVE = frozenset({
    "pulse_created_deals", "pulse_deals_won", "pulse_deals_lost", "pulse_deals_closed",
    "pulse_won_amount", "pulse_won_deals_cycle_seconds", "pulse_window_open_deals",
    "pulse_open_deals", "pulse_open_pipeline_amount", "pulse_open_pipeline_weighted_amount",
    "pulse_customers_churned", "pulse_new_customers_churned",
    "pulse_customers_active_at_period_start",
    "pulse_stuck_deals", "pulse_stuck_pipeline_amount",
    "pulse_pipeline_waterfall_deals", "pulse_pipeline_waterfall_amount",
    "pulse_stage_stints", "pulse_stage_stint_seconds", "pulse_stage_exits",
    "pulse_stage_stint_duration_seconds_bucket", "pulse_stage_stint_duration_seconds_gcount",
    "pulse_stage_stint_duration_seconds_gsum", "pulse_monthly_won_amount",
    *(f"pulse_{d}_{m}" for d in ("source", "product")
      for m in ("created_deals", "deals_won", "deals_lost", "won_amount")),
    "pulse_competitor_deals_won", "pulse_competitor_deals_lost",
    "pulse_competitor_priced_deals", "pulse_competitor_summed_price_gap_ratio",
    "pulse_competitor_customers_churned",
    "pulse_clv_won_amount", "pulse_clv_won_deals", "pulse_clv_won_deals_with_account",
    "pulse_clv_customers_buying", "pulse_clv_customers_churned",
    "pulse_clv_customers_active_at_start",
    "pulse_quota_amount", "pulse_quota_won_amount", "pulse_quota_owners",
    "pulse_quota_owners_at_quota", "pulse_remaining_quota_amount",
    "pulse_owner_quota_amount", "pulse_owner_won_amount",
    "pulse_created_leads", "pulse_leads_converted", "pulse_leads_disqualified",
    "pulse_lead_band_closed", "pulse_lead_band_converted", "pulse_lead_score_bucket",
    "pulse_lead_score_gcount", "pulse_lead_score_gsum", "pulse_open_leads",
    "pulse_hot_leads", "pulse_hot_leads_waiting", "pulse_activities", "pulse_owner_activities",
    "pulse_owner_created_deals", "pulse_owner_deals_won", "pulse_owner_deals_lost",
    "pulse_owner_won_deals_amount", "pulse_owner_won_deals_cycle_seconds",
    "pulse_owner_open_deals", "pulse_owner_open_pipeline_amount",
    "pulse_owner_open_pipeline_weighted_amount",
})
#: Ratios of a difference (|forecast - won| / won): a forecast equal to the won amount
#: gives a float-noise error of ~1e-16, so these are compared to 1e-9 absolute.
DIFFERENCE_RATIOS = frozenset({"pulse_forecast_error_ratio"})
#: Additive metrics that are not sums of cents or milliseconds: compared to 1e-9 relative.
INEXACT = frozenset({"pulse_open_pipeline_weighted_amount",
                     "pulse_competitor_summed_price_gap_ratio",
                     "pulse_stage_stint_duration_seconds_gsum", "pulse_lead_score_gsum",
                     "pulse_owner_open_pipeline_weighted_amount"})
