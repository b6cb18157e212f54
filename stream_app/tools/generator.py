"""A seeded, realistic CRM event stream: teams, reps, stage progressions, wins, losses, churn.

Deals arrive on working days, move through the configured stages with
plausible dwell times (sometimes one stage back), and close as won (more often
for seasoned reps) or lost; amounts are log-normal per product; some accounts
churn months after their first win; every rep has a name (``rep.updated``, the
roster); a few deals are handed to a teammate, a few closed deals are reopened (and closed
again), a few deals deleted (and some restored); every rep gets a monthly and a quarterly
quota (sometimes changed mid-period); most deals start as a lead with engagements,
and about as many leads again are disqualified or stay open; reps log calls, emails
and meetings on their deals (and some on no deal), a few sent twice by the CRM
under a new CloudEvent id with the same ``activity_id``. The same seed always gives
the same events (activities draw from their own random stream, so other events do
not change with ``activities_per_deal``).
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

from stream_app.events.models import FORECAST_CATEGORIES

PRODUCTS: dict[str, float] = {"Starter": 1_500.0, "Growth": 6_000.0, "Enterprise": 30_000.0}
SOURCES = ("Inbound", "Outbound", "Partner", "Event", "Referral")
COMPETITORS = ("Acme CRM", "Globex", "Initech")
LOSS_REASONS = ("price", "timing", "competitor", "no decision")
INDUSTRIES = ("Software", "Financial Services", "Healthcare", "Manufacturing", "Education",
              "Retail", None)
TITLES = ("CEO", "VP Sales", "Director of IT", "Head of Operations", "IT Manager",
          "Team Lead", "Analyst", "Engineer", "Office Assistant", None)
FIRST_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Elif", "Femi", "Grace", "Hugo", "Ines", "Jon",
               "Kira", "Luis", "Mei", "Noor", "Omar")
LAST_NAMES = ("Lopez", "Okafor", "Schmidt", "Rossi", "Nakamura", "Dubois", "Silva", "Novak",
              "Haddad", "Berg", "Kowalski")
ACTIONS = (("email_open", 30), ("email_click", 12), ("site_visit", 25), ("form_submit", 6),
           ("content_download", 10), ("webinar", 5), ("demo_request", 3))


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
    quota_level: float = 1.0
    leads_per_deal: float = 1.5
    activities_per_deal: float = 1.0
    #: Share of closed deals reopened (won or lost back to open) some days later.
    reopen_probability: float = 0.03
    #: Share of deals deleted in the CRM (a third of them restored days later).
    delete_probability: float = 0.01
    #: Share of deals handed to another rep of the team (``deal.updated`` owner_id).
    handover_probability: float = 0.03
    #: Share of deals whose expected close or forecast category the CRM updates
    #: (``deal.updated``); 0 leaves the rest of the stream as it was.
    plan_update_probability: float = 0.0
    #: When above 0, the CRM's expected closes track the real ones, as reps keep them:
    #: a winner's is its close day off by a normal error of this many days (sd), a
    #: loser's a guess of 20-70 days, and one that passes with the deal still open is
    #: pushed out (``deal.updated``). 0 leaves every expected close at creation + 60 days.
    expected_close_error_days: float = 0.0
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


def _event(ids: _Ids, kind: str, at: dt.datetime, data: dict[str, Any],
           source: str) -> dict[str, Any]:
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
    events: list[tuple[dt.datetime, int, dict[str, Any]]] = []
    first_win: dict[str, dt.datetime] = {}
    worked: list[tuple[str, str, str, dt.datetime, dt.datetime]] = []
    seq = 0

    def emit(kind: str, at: dt.datetime, data: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        events.append((at, seq, _event(ids, kind, at, data, cfg.source)))

    for n, (team, team_reps) in enumerate(sorted(reps.items())):
        for i, rep in enumerate(team_reps):
            name = f"{FIRST_NAMES[(n * 7 + i) % len(FIRST_NAMES)]} " \
                   f"{LAST_NAMES[(n * 3 + i * 5) % len(LAST_NAMES)]}"
            emit("rep.updated", cfg.start, {"owner_id": rep, "name": name, "team": team})
    day = cfg.start
    deal_no = 0
    lifecycle_rng = random.Random(cfg.seed * 104_729 + 3)
    plan_rng = random.Random(cfg.seed * 7_919 + 5)
    close_rng = random.Random(cfg.seed * 6_007 + 7)
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
            lead_source = rng.choice(SOURCES)
            lead_id = None
            if cfg.leads_per_deal > 0 and rng.random() < 0.7:
                lead_id = f"lead-{cfg.seed}-d{deal_no:07d}"
                _emit_lead(rng, emit, lead_id, lead_source, team, owner,
                           created_at - dt.timedelta(days=rng.uniform(3, 40)), created_at,
                           ("converted", deal_id))
            created = {
                "deal_id": deal_id, "account_id": account, "owner_id": owner, "team": team,
                "amount": _money(amount), "currency": currency, "stage": cfg.stages[0],
                "source": lead_source, "product": product, "lead_id": lead_id,
                "expected_close": (created_at + dt.timedelta(days=60)).date().isoformat(),
            }
            emit("deal.created", created_at, created)
            at, stage_index = created_at, 0
            p_win = min(max(cfg.win_probability + skill[owner], 0.05), 0.95)
            won = rng.random() < p_win
            final_stage = (len(cfg.stages) - 1 if won
                           else rng.randint(0, len(cfg.stages) - 1))
            went_back = False
            while stage_index < final_stage:
                at += dt.timedelta(hours=rng.expovariate(1 / (24 * 9)))
                new_amount = _money(amount * rng.uniform(0.85, 1.2)) if rng.random() < 0.2 else None
                step = -1 if stage_index > 0 and not went_back and rng.random() < 0.08 else 1
                went_back = went_back or step < 0
                emit("deal.stage_changed", at, {
                    "deal_id": deal_id, "from_stage": cfg.stages[stage_index],
                    "to_stage": cfg.stages[stage_index + step], "amount": new_amount,
                })
                if new_amount is not None:
                    amount = float(new_amount)
                stage_index += step
            at += dt.timedelta(hours=rng.expovariate(1 / (24 * 10)))
            competitor = rng.choice(COMPETITORS) if rng.random() < 0.4 else None
            price = _money(amount * rng.uniform(0.8, 1.25)) if competitor else None
            if won:
                emit("deal.won", at, {"deal_id": deal_id, "amount": _money(amount),
                                      "competitor": competitor, "competitor_price": price})
                if account is not None and (account not in first_win or at < first_win[account]):
                    first_win[account] = at
            lost = not won and rng.random() < 0.85
            if lost:
                emit("deal.lost", at, {"deal_id": deal_id, "reason": rng.choice(LOSS_REASONS),
                                       "competitor": competitor, "competitor_price": price})
            worked.append((deal_id, team, owner, created_at, at))
            _emit_lifecycle(lifecycle_rng, cfg, emit, deal_id, created_at,
                            at if won or lost else None, _money(amount),
                            [rep for rep in reps[team] if rep != owner])
            if cfg.expected_close_error_days > 0:
                _track_expected_close(close_rng, cfg, emit, created, created_at,
                                      at if won or lost else None, won)
            if plan_rng.random() < cfg.plan_update_probability:
                _emit_plan_updates(plan_rng, emit, deal_id, created_at,
                                   at if won or lost else cfg.end,
                                   move_close=cfg.expected_close_error_days <= 0)
        day += dt.timedelta(days=1)
    for account, won_at in sorted(first_win.items()):
        if rng.random() < cfg.churn_probability:
            churn_at = won_at + dt.timedelta(days=rng.uniform(20, 300))
            emit("customer.churned", churn_at, {
                "account_id": account, "reason": rng.choice(("budget", "switched", "closed")),
                "competitor": rng.choice(COMPETITORS) if rng.random() < 0.5 else None,
            })
    if cfg.quota_level > 0:
        _emit_quotas(rng, cfg, reps, emit)
    if cfg.leads_per_deal > 0:
        _emit_unconverted_leads(rng, cfg, reps, emit, deal_no)
    if cfg.activities_per_deal > 0:
        _emit_activities(random.Random(cfg.seed * 7919 + 1), cfg, worked, emit)
    events.sort(key=lambda item: (item[0], item[1]))
    for at, _, event in events:
        if at < cfg.end:
            yield event


def _emit_lifecycle(rng: random.Random, cfg: GeneratorSettings, emit: Any, deal_id: str,
                    created_at: dt.datetime, closed_at: dt.datetime | None,
                    amount: str, mates: list[str]) -> None:
    """A deal handed to a teammate, a closed deal reopened (and closed again, or not), a
    deal deleted (and restored)."""
    if mates and rng.random() < cfg.handover_probability:
        emit("deal.updated", created_at + dt.timedelta(days=rng.uniform(1, 20)),
             {"deal_id": deal_id, "owner_id": rng.choice(mates)})
    if closed_at is not None and rng.random() < cfg.reopen_probability:
        at = closed_at + dt.timedelta(days=rng.uniform(1, 20))
        emit("deal.reopened", at, {"deal_id": deal_id, "stage": rng.choice(cfg.stages[1:])})
        if rng.random() < 0.7:
            at += dt.timedelta(days=rng.uniform(3, 30))
            if rng.random() < 0.5:
                emit("deal.won", at, {"deal_id": deal_id, "amount": amount})
            else:
                emit("deal.lost", at, {"deal_id": deal_id, "reason": rng.choice(LOSS_REASONS)})
    if rng.random() < cfg.delete_probability:
        at = created_at + dt.timedelta(days=rng.uniform(0.5, 30))
        emit("deal.deleted", at, {"deal_id": deal_id})
        if rng.random() < 1 / 3:
            emit("deal.restored", at + dt.timedelta(days=rng.uniform(1, 10)),
                 {"deal_id": deal_id})


def _track_expected_close(rng: random.Random, cfg: GeneratorSettings, emit: Any,
                          created: dict[str, Any], created_at: dt.datetime,
                          closed_at: dt.datetime | None, won: bool) -> None:
    """The expected close a rep names at creation (into ``created``) and each push when
    it passes with the deal still open: a winner's tracks its close day with an error,
    other deals' are guesses of 20-70 days, then 14-45 days past each push."""
    opened = created_at.date()

    def guess(after: dt.date) -> dt.date:
        if won and closed_at is not None:
            aimed = closed_at.date() + dt.timedelta(
                days=round(rng.gauss(0, cfg.expected_close_error_days)))
            if aimed > after:
                return aimed
        return after + dt.timedelta(days=rng.randint(14, 45))

    expected = guess(opened) if won else opened + dt.timedelta(days=rng.randint(20, 70))
    created["expected_close"] = expected.isoformat()
    until = min(closed_at or cfg.end, cfg.end)
    for _ in range(6):
        pushed_at = dt.datetime.combine(expected, dt.time(9), dt.UTC) + dt.timedelta(
            days=rng.uniform(0, 5))
        if pushed_at >= until:
            return
        expected = guess(pushed_at.date())
        emit("deal.updated", pushed_at, {"deal_id": created["deal_id"],
                                         "expected_close": expected.isoformat()})


def _emit_plan_updates(rng: random.Random, emit: Any, deal_id: str, created_at: dt.datetime,
                       until: dt.datetime, move_close: bool = True) -> None:
    """One to three ``deal.updated`` events before ``until`` moving the expected close
    (mostly later: deals slip; not with ``move_close`` False, when the expected closes
    track the real ones) and naming a forecast category."""
    at, expected = created_at, created_at.date() + dt.timedelta(days=60)
    for _ in range(rng.randint(1, 3)):
        at += dt.timedelta(days=rng.uniform(1, 25))
        if at >= until:
            return
        expected += dt.timedelta(days=rng.randint(-10, 40))
        update: dict[str, Any] = {"deal_id": deal_id}
        if rng.random() < 0.8 and move_close:
            update["expected_close"] = expected.isoformat()
        if rng.random() < 0.6 or len(update) == 1:
            update["forecast_category"] = rng.choice(FORECAST_CATEGORIES)
        emit("deal.updated", at, update)


def _emit_lead(rng: random.Random, emit: Any, lead_id: str, source: str, team: str | None,
               owner: str | None, created_at: dt.datetime, closes_at: dt.datetime | None,
               outcome: tuple[str, str | None]) -> None:
    """A lead with firmographics, engagements until it closes (or for weeks), and its
    outcome ("converted", deal id), ("disqualified", reason) or ("open", None)."""
    size = int(math.exp(rng.uniform(1, 9))) if rng.random() < 0.8 else None
    emit("lead.created", created_at, {
        "lead_id": lead_id, "source": source, "owner_id": owner, "team": team,
        "industry": rng.choice(INDUSTRIES), "company_size": size,
        "job_title": rng.choice(TITLES)})
    until = closes_at or created_at + dt.timedelta(days=rng.uniform(5, 60))
    at = created_at
    actions, weights = zip(*ACTIONS, strict=True)
    mean_gap_hours = 72 if outcome[0] == "converted" else 200
    while True:
        at += dt.timedelta(hours=rng.expovariate(1 / mean_gap_hours))
        if at >= until:
            break
        emit("lead.engaged", at, {"lead_id": lead_id,
                                  "action": rng.choices(actions, weights)[0]})
    kind, detail = outcome
    if kind == "converted" and closes_at is not None:
        emit("lead.converted", closes_at, {"lead_id": lead_id, "deal_id": detail})
    elif kind == "disqualified" and closes_at is not None:
        emit("lead.disqualified", closes_at, {"lead_id": lead_id, "reason": detail})


def _emit_unconverted_leads(rng: random.Random, cfg: GeneratorSettings,
                            reps: dict[str, list[str]], emit: Any, deals: int) -> None:
    """Leads that never became deals: most disqualified weeks later, some still open."""
    span = (cfg.end - cfg.start).total_seconds()
    for n in range(int(deals * max(cfg.leads_per_deal - 0.7, 0))):
        created_at = cfg.start + dt.timedelta(seconds=rng.uniform(0, span))
        team = rng.choice(cfg.teams)
        owner = rng.choice(reps[team]) if rng.random() < 0.6 else None
        disqualified = rng.random() < 0.75
        closes_at = created_at + dt.timedelta(days=rng.uniform(2, 50)) if disqualified else None
        _emit_lead(rng, emit, f"lead-{cfg.seed}-u{n:07d}", rng.choice(SOURCES),
                   team if owner else None, owner, created_at, closes_at,
                   ("disqualified", rng.choice(("no budget", "no fit", "unresponsive")))
                   if disqualified else ("open", None))


def _emit_activities(rng: random.Random, cfg: GeneratorSettings,
                     worked: list[tuple[str, str, str, dt.datetime, dt.datetime]],
                     emit: Any) -> None:
    """Calls, emails and meetings on each deal between its creation and its close, one
    in five on no deal; one in fifty sent again with the same ``activity_id``."""
    n = 0
    for deal_id, team, owner, created_at, closed_at in worked:
        span = max((closed_at - created_at).total_seconds(), 60.0)
        for _ in range(_poisson(rng, cfg.activities_per_deal)):
            n += 1
            at = created_at + dt.timedelta(seconds=rng.uniform(0, span))
            data = {"owner_id": owner, "team": team,
                    "kind": rng.choices(("call", "email", "meeting"), (4, 5, 2))[0],
                    "deal_id": deal_id if rng.random() < 0.8 else None,
                    "activity_id": f"act-{cfg.seed}-{n:08d}" if rng.random() < 0.7 else None}
            emit("activity.logged", at, data)
            if data["activity_id"] and rng.random() < 0.02:
                emit("activity.logged", at + dt.timedelta(minutes=rng.uniform(1, 600)), data)


def _months(start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    month = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while month < end:
        yield month
        month = (month + dt.timedelta(days=32)).replace(day=1)


def _emit_quotas(rng: random.Random, cfg: GeneratorSettings, reps: dict[str, list[str]],
                 emit: Any) -> None:
    """Monthly and quarterly quotas per rep around the rep's expected won amount,
    scaled by ``quota_level``; one in ten is raised or cut mid-period."""
    mean_amount = sum(w * a for w, a in zip((6, 3, 1), PRODUCTS.values(), strict=True)) / 10
    n_reps = sum(len(r) for r in reps.values())
    monthly = cfg.deals_per_day * 22 / n_reps * cfg.win_probability * mean_amount * 1.06
    for month in _months(cfg.start, cfg.end):
        quarter = month.month in (1, 4, 7, 10)
        for team, team_reps in reps.items():
            for rep in team_reps:
                periods = [(f"{month.year}-{month.month:02d}", 1)]
                if quarter:
                    periods.append((f"{month.year}-Q{(month.month - 1) // 3 + 1}", 3))
                for period, months in periods:
                    amount = monthly * months * cfg.quota_level * rng.uniform(0.6, 1.6)
                    data = {"owner_id": rep, "team": team, "period": period,
                            "amount": _money(amount), "currency": "USD"}
                    emit("quota.set", month + dt.timedelta(hours=1), data)
                    if rng.random() < 0.1:
                        changed = {**data, "amount": _money(amount * rng.uniform(0.7, 1.3))}
                        emit("quota.set", month + dt.timedelta(days=14, hours=9), changed)


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k
