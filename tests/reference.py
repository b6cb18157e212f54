"""An independent batch computation of every exported KPI over a list of CloudEvents.

It shares no code with ``stream_app.kpi``: it sorts each deal's events and reads
the answer off the sorted lists, using calendar dates instead of day numbers.
Expected values in the tests come from here.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any

Key = tuple[str, tuple[tuple[str, str], ...]]


def _t(event: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00")).astimezone(dt.UTC)


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


def expected_metrics(events: list[dict[str, Any]], as_of: dt.datetime,
                     cfg: ReferenceConfig | None = None) -> dict[Key, Fraction]:
    """Every KPI sample the worker should export at ``as_of``, as exact fractions."""
    cfg = cfg or ReferenceConfig()
    events = unique_by_id(events)
    as_of_date = as_of.astimezone(dt.UTC).date()
    by_deal: dict[str, list[dict]] = defaultdict(list)
    churn_events: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        if event["type"].startswith("deal."):
            by_deal[event["data"]["deal_id"]].append(event)
        else:
            churn_events[event["data"]["account_id"]].append(event)

    def cents(amount: str, currency: str) -> int:
        value = (Decimal(amount) * cfg.fx[currency]).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
        return int(value * 100)

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
        changes = [e for e in deal_events if e["type"] == "deal.stage_changed"
                   and _order(e) >= _order(c)]
        stage = max(changes, key=_order)["data"]["to_stage"] if changes else c["data"]["stage"]
        amounts = [e for e in changes if e["data"].get("amount") is not None]
        amount = (max(amounts, key=_order)["data"]["amount"] if amounts
                  else c["data"]["amount"])
        open_rows.append((team, stage, cents(str(amount), currency)))

    teams = sorted({r[0] for r in created_rows})
    groups = [*teams, "all"]
    out: dict[Key, Fraction] = {}
    open_count = {g: sum(1 for r in open_rows if g in ("all", r[0])) for g in groups}
    windows: list[tuple[str, dt.date | None]] = [
        (f"{n}d", as_of_date - dt.timedelta(days=n - 1)) for n in cfg.windows_days]
    windows.append(("all", None))

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
            out[_key("pulse_deals_created", **lab)] = Fraction(created_n)
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

    churn_at: dict[str, dt.datetime] = {}
    for account, items in churn_events.items():
        first = min(items, key=_order)
        if account in account_first_win and _t(first) > account_first_win[account]:
            churn_at[account] = _t(first)
    this_month = as_of_date.replace(day=1)
    last_month = (this_month - dt.timedelta(days=1)).replace(day=1)
    for period, start, end in (("month_to_date", this_month, as_of_date + dt.timedelta(days=1)),
                               ("last_month", last_month, this_month)):
        active = sum(1 for a, w in account_first_win.items()
                     if w.date() < start and not (a in churn_at and churn_at[a].date() < start))
        churned = sum(1 for when in churn_at.values() if start <= when.date() < end)
        out[_key("pulse_customers_churned", period=period)] = Fraction(churned)
        out[_key("pulse_customers_active_at_period_start", period=period)] = Fraction(active)
        if active:
            out[_key("pulse_customer_churn_rate_ratio", period=period)] = Fraction(churned, active)
    return out


#: Metrics whose values add up across workers (the rest are ratios of them).
ADDITIVE = frozenset({
    "pulse_deals_created", "pulse_deals_won", "pulse_deals_lost", "pulse_deals_closed",
    "pulse_won_amount", "pulse_won_deals_cycle_seconds", "pulse_window_open_deals",
    "pulse_open_deals", "pulse_open_pipeline_amount", "pulse_open_pipeline_weighted_amount",
    "pulse_customers_churned", "pulse_customers_active_at_period_start",
})
