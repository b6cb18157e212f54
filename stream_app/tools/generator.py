"""A seeded, realistic CRM event stream: teams, reps, stage progressions, wins, losses, churn.

Deals arrive on working days, move through the configured stages with
plausible dwell times, and close as won (more often for larger teams' seasoned
reps) or lost; amounts are log-normal per product; some accounts churn months
after their first win. The same seed always gives the same events.
"""

from __future__ import annotations

__all__ = ["GeneratorSettings", "generate_events"]

import datetime as dt
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

PRODUCTS: dict[str, float] = {"Starter": 1_500.0, "Growth": 6_000.0, "Enterprise": 30_000.0}
SOURCES = ("Inbound", "Outbound", "Partner", "Event", "Referral")
COMPETITORS = ("Acme CRM", "Globex", "Initech")
LOSS_REASONS = ("price", "timing", "competitor", "no decision")


@dataclass(frozen=True)
class GeneratorSettings:
    """Shape of a generated stream."""

    seed: int = 7
    start: dt.datetime = dt.datetime(2025, 11, 1, tzinfo=dt.UTC)
    end: dt.datetime = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    teams: tuple[str, ...] = ("Central", "East", "West", "EMEA")
    reps_per_team: int = 5
    deals_per_day: float = 12.0
    accounts: int = 400
    stages: tuple[str, ...] = ("Prospecting", "Qualification", "Engaging", "Proposal",
                               "Negotiation")
    win_probability: float = 0.45
    churn_probability: float = 0.25
    source: str = "crm/generator"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class _Ids:
    def __init__(self, seed: int):
        self.seed = seed
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return f"gen-{self.seed}-{self.n:08d}"


def _event(ids: _Ids, kind: str, at: dt.datetime, data: dict[str, Any], source: str) -> dict:
    return {"specversion": "1.0", "id": ids.next(), "source": source, "type": kind,
            "time": _iso(at), "datacontenttype": "application/json", "data": data}


def _money(value: float) -> str:
    return str(Decimal(value).quantize(Decimal("0.01")))


def generate_events(cfg: GeneratorSettings) -> Iterator[dict[str, Any]]:
    """Yield CloudEvents (as JSON-ready dicts) in event-time order."""
    rng = random.Random(cfg.seed)
    ids = _Ids(cfg.seed)
    reps = {team: [f"{team.lower()}-rep-{i + 1}" for i in range(cfg.reps_per_team)]
            for team in cfg.teams}
    skill = {rep: rng.uniform(-0.15, 0.15) for team_reps in reps.values() for rep in team_reps}
    accounts = [f"acct-{i:05d}" for i in range(cfg.accounts)]
    events: list[tuple[dt.datetime, int, dict]] = []
    first_win: dict[str, dt.datetime] = {}
    seq = 0

    def emit(kind: str, at: dt.datetime, data: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        events.append((at, seq, _event(ids, kind, at, data, cfg.source)))

    day = cfg.start
    deal_no = 0
    while day < cfg.end:
        weekday_factor = 0.25 if day.weekday() >= 5 else 1.0
        expected = cfg.deals_per_day * weekday_factor
        count = _poisson(rng, expected)
        for _ in range(count):
            deal_no += 1
            team = rng.choice(cfg.teams)
            owner = rng.choice(reps[team])
            product = rng.choices(list(PRODUCTS), weights=(6, 3, 1))[0]
            amount = PRODUCTS[product] * math.exp(rng.gauss(0, 0.35))
            currency = "EUR" if team == "EMEA" and rng.random() < 0.7 else "USD"
            created_at = day + dt.timedelta(seconds=rng.randint(8 * 3600, 18 * 3600))
            account = rng.choice(accounts) if rng.random() < 0.9 else None
            deal_id = f"deal-{cfg.seed}-{deal_no:07d}"
            emit("deal.created", created_at, {
                "deal_id": deal_id, "account_id": account, "owner_id": owner, "team": team,
                "amount": _money(amount), "currency": currency, "stage": cfg.stages[0],
                "source": rng.choice(SOURCES), "product": product, "lead_id": None,
                "expected_close": (created_at + dt.timedelta(days=60)).date().isoformat(),
            })
            at, stage_index = created_at, 0
            p_win = min(max(cfg.win_probability + skill[owner], 0.05), 0.95)
            won = rng.random() < p_win
            final_stage = (len(cfg.stages) - 1 if won
                           else rng.randint(0, len(cfg.stages) - 1))
            while stage_index < final_stage:
                at += dt.timedelta(hours=rng.expovariate(1 / (24 * 9)))
                new_amount = _money(amount * rng.uniform(0.85, 1.2)) if rng.random() < 0.2 else None
                emit("deal.stage_changed", at, {
                    "deal_id": deal_id, "from_stage": cfg.stages[stage_index],
                    "to_stage": cfg.stages[stage_index + 1], "amount": new_amount,
                })
                if new_amount is not None:
                    amount = float(new_amount)
                stage_index += 1
            at += dt.timedelta(hours=rng.expovariate(1 / (24 * 10)))
            competitor = rng.choice(COMPETITORS) if rng.random() < 0.4 else None
            price = _money(amount * rng.uniform(0.8, 1.25)) if competitor else None
            if won:
                emit("deal.won", at, {"deal_id": deal_id, "amount": _money(amount),
                                      "competitor": competitor, "competitor_price": price})
                if account is not None and (account not in first_win or at < first_win[account]):
                    first_win[account] = at
            elif rng.random() < 0.85:
                emit("deal.lost", at, {"deal_id": deal_id, "reason": rng.choice(LOSS_REASONS),
                                       "competitor": competitor, "competitor_price": price})
        day += dt.timedelta(days=1)
    for account, won_at in sorted(first_win.items()):
        if rng.random() < cfg.churn_probability:
            churn_at = won_at + dt.timedelta(days=rng.uniform(20, 300))
            emit("customer.churned", churn_at, {
                "account_id": account, "reason": rng.choice(("budget", "switched", "closed")),
                "competitor": rng.choice(COMPETITORS) if rng.random() < 0.5 else None,
            })
    events.sort(key=lambda item: (item[0], item[1]))
    for at, _, event in events:
        if at < cfg.end:
            yield event


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k
