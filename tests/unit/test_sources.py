"""The source catalogue without Faust: every spec folded in memory, as the pipeline runs
it, equals the batch reference; and each spec's parts keep their contracts."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import pytest

from stream_app.adapters.exposition import render
from stream_app.adapters.metrics import PulseCollector
from stream_app.config import Settings, pricing, report_config
from stream_app.events.codec import Rejection
from stream_app.events.emitted import AccountWinRecord, LeadHot, OwnerWinRecord
from stream_app.events.routing import ROUTES
from stream_app.kpi.rows import Report
from stream_app.kpi.scoring import load_rules
from stream_app.ops import OperationalStats
from stream_app.sources.catalogue import catalogue
from stream_app.sources.memory import InMemoryPipeline
from stream_app.sources.spec import SourceSpec
from stream_app.tools.generator import GeneratorSettings, generate_events
from stream_app.tools.scrape import parse_metrics
from tests.integration.harness import assert_matches
from tests.reference import ReferenceConfig, expected_hot_events, expected_metrics

SETTINGS = Settings(clock="event", partitions=1)


def _specs(settings: Settings = SETTINGS) -> tuple[SourceSpec, ...]:
    return catalogue(settings, pricing(settings), load_rules(settings.lead_scoring_file))


class MemoryRun(InMemoryPipeline):
    """The pipeline in memory (:class:`InMemoryPipeline`) under the test's settings, with
    one event in twenty redelivered as after a crash."""

    def __init__(self, specs: tuple[SourceSpec, ...], settings: Settings = SETTINGS):
        super().__init__(specs, settings)
        self.settings = settings

    def run(self, events: Iterable[dict[str, Any]],  # type: ignore[override]
            rng: random.Random) -> None:
        super().run(events, redeliver=lambda: rng.random() < 0.05)

    def report(self) -> Report:  # type: ignore[override]
        return super().report(report_config(self.settings,
                                            load_rules(self.settings.lead_scoring_file)))


class _Source:
    reporting_currency = "USD"
    clock = "event"

    def __init__(self, run: MemoryRun):
        self._run = run

    def report(self) -> Report | None:
        return self._run.report()

    def stats(self) -> OperationalStats:
        return OperationalStats()

    def dedup_up(self) -> bool:
        return True

    def owned_partitions(self) -> int:
        return 1

    def exported_partitions(self) -> dict[str, frozenset[int]]:
        return {spec.topic: frozenset({0}) for spec in self._run.specs}


def with_deal_updates(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events`` and a ``deal.updated`` for every third deal: a new amount 1, 10 or 40
    days after its creation (so before, between and after its stage moves, or after its
    close, where it must be ignored), or only a forecast category (no KPI effect)."""
    out = list(events)
    created = [e for e in events if e["type"] == "deal.created"]
    for n, event in enumerate(created[::3]):
        at = dt.datetime.fromisoformat(event["time"]) + dt.timedelta(days=(1, 10, 40)[n % 3])
        data: dict[str, Any] = {"deal_id": event["data"]["deal_id"]}
        if n % 4 == 3:
            data["forecast_category"] = "commit"
        else:
            data["amount"] = str((Decimal(event["data"]["amount"]) * Decimal("1.1")
                                  ).quantize(Decimal("0.01")))
        out.append({**event, "id": f"{event['id']}-update", "type": "deal.updated",
                    "time": at.isoformat(), "data": data})
    return out


def with_deal_lifecycles(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events`` and, for every fifth closed deal, a ``deal.reopened`` 2 days after the
    close (every second one closed again 10 days later, won or lost, and every third one
    reopened again); every eleventh switched between won and lost (a reopening with no
    stage and the other close at one time); a ``deal.reopened`` of an open deal (a stage
    move); for every ninth
    deal a ``deal.deleted`` 5 days after its creation, every second one restored 3 days
    later."""
    out = list(events)
    stages = [stage.name for stage in SETTINGS.stages]
    created = {e["data"]["deal_id"]: e for e in events if e["type"] == "deal.created"}

    def add(base: dict[str, Any], suffix: str, kind: str, days: float,
            data: dict[str, Any]) -> None:
        at = dt.datetime.fromisoformat(base["time"]) + dt.timedelta(days=days)
        out.append({**base, "id": f"{base['id']}-{suffix}", "type": kind,
                    "time": at.isoformat(), "data": {"deal_id": base["data"]["deal_id"], **data}})

    closes = [e for e in events if e["type"] in ("deal.won", "deal.lost")]
    for n, close in enumerate(closes[::5]):
        add(close, "reopened", "deal.reopened", 2, {"stage": stages[n % len(stages)]})
        if n % 2 == 0:
            amount = created[close["data"]["deal_id"]]["data"]["amount"]
            kind, data = (("deal.won", {"amount": amount}) if n % 4 == 0
                          else ("deal.lost", {"reason": "timing"}))
            add(close, "closed-again", kind, 12, data)
        if n % 3 == 0:
            add(close, "reopened-again", "deal.reopened", 20, {"stage": stages[0]})
    for close in closes[2::11]:  # switched won <-> lost: a reopening with no stage, at once
        add(close, "switch", "deal.reopened", 3, {})
        kind, data = (("deal.lost", {"reason": "switched"}) if close["type"] == "deal.won"
                      else ("deal.won", {"amount": "10.00"}))
        add(close, "switched", kind, 3, data)
    for n, deal in enumerate(list(created.values())[1::9]):
        add(deal, "deleted", "deal.deleted", 5, {})
        if n % 2 == 0:
            add(deal, "restored", "deal.restored", 8, {})
        else:
            add(deal, "reopened-open", "deal.reopened", 1, {"stage": stages[-1]})
    return out


def with_owner_changes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events`` and, for every fifth deal, a ``deal.updated`` handing it to another rep
    of the deal's team 3, 12 or 60 days after its creation (before, around or after its
    close: it is the close's owner that counts the win), and for every tenth one a
    second hand-over back, 1 day before its creation (ignored) or 20 days after it."""
    out = list(events)
    reps: dict[str, list[str]] = {}
    created = [e for e in events if e["type"] == "deal.created"]
    for event in created:
        reps.setdefault(event["data"]["team"], [])
        if event["data"]["owner_id"] not in reps[event["data"]["team"]]:
            reps[event["data"]["team"]].append(event["data"]["owner_id"])
    for n, event in enumerate(created[::5]):
        mates = [r for r in reps[event["data"]["team"]] if r != event["data"]["owner_id"]]
        if not mates:
            continue
        base = dt.datetime.fromisoformat(event["time"])
        moves = [(f"handover-{n}", (3, 12, 60)[n % 3], mates[n % len(mates)])]
        if n % 2 == 0:
            moves.append((f"handback-{n}", (-1, 20)[n % 4 // 2], event["data"]["owner_id"]))
        for suffix, days, owner in moves:
            out.append({**event, "id": f"{event['id']}-{suffix}", "type": "deal.updated",
                        "time": (base + dt.timedelta(days=days)).isoformat(),
                        "data": {"deal_id": event["data"]["deal_id"], "owner_id": owner}})
    return out


def with_roster_changes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events`` and, for every third rep, a rename 30 days after the roster's start and a
    profile without a team 10 days before it (older: it must not win)."""
    out = list(events)
    for n, rep in enumerate([e for e in events if e["type"] == "rep.updated"][::3]):
        for suffix, days, data in (("renamed", 30, {"name": f"{rep['data']['name']} Jr"}),
                                   ("older", -10, {"name": "Old Name", "team": None})):
            at = dt.datetime.fromisoformat(rep["time"]) + dt.timedelta(days=days + n)
            out.append({**rep, "id": f"{rep['id']}-{suffix}", "time": at.isoformat(),
                        "data": {**rep["data"], **data}})
    return out


def with_fiscal_quotas(events: list[dict[str, Any]], periods: tuple[str, ...]
                       ) -> list[dict[str, Any]]:
    """``events`` and, for each rep with a monthly quota, a quota of three times its
    first monthly one for each of ``periods`` (fiscal quarters the generator, which
    names calendar quarters, does not set)."""
    out = list(events)
    firsts: dict[str, dict[str, Any]] = {}
    for event in events:
        if event["type"] == "quota.set" and "Q" not in event["data"]["period"]:
            firsts.setdefault(event["data"]["owner_id"], event)
    for event in firsts.values():
        for period in periods:
            amount = Decimal(event["data"]["amount"]) * 3
            out.append({**event, "id": f"{event['id']}-{period}",
                        "data": {**event["data"], "period": period, "amount": str(amount)}})
    return out


@pytest.mark.parametrize(("seed", "zone", "fiscal_start"), [
    (3, "UTC", 1),
    (17, "UTC", 1),
    # creations at 08:00-18:00 UTC: from 15:00 UTC they are the next day in Tokyo
    (5, "Asia/Tokyo", 2),
    (11, "America/Los_Angeles", 4),
])
def test_the_catalogue_folded_in_memory_equals_the_reference(seed: int, zone: str,
                                                             fiscal_start: int) -> None:
    end = dt.datetime(2026, 10, 20, 12, tzinfo=dt.UTC)
    events = with_roster_changes(with_owner_changes(with_deal_lifecycles(with_deal_updates(
        list(generate_events(GeneratorSettings(
            seed=seed, start=end - dt.timedelta(days=200), end=end, deals_per_day=3,
            accounts=80, churn_probability=0.5, leads_per_deal=1.0,
            plan_update_probability=0.3)))))))
    if fiscal_start != 1:  # T (the last event, reopened deals' at most 40 days on) is in one
        events = with_fiscal_quotas(events, ("2027-Q2", "2027-Q3", "2027-Q4"))
    settings = SETTINGS.model_copy(update={"timezone": zone,
                                           "fiscal_year_start_month": fiscal_start})
    rng = random.Random(seed)
    shuffled = events + rng.sample(events, len(events) // 20)  # duplicates, other ids' order
    rng.shuffle(shuffled)
    run = MemoryRun(_specs(settings), settings)
    run.run(shuffled, rng)
    assert {spec.name for spec in run.specs if run.stores[spec.name]} == {
        "deals", "accounts", "owners", "leads", "activities", "reps"}
    as_of = max(dt.datetime.fromisoformat(e["time"]) for e in events)
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    PulseCollector(_Source(run), registry)
    exported = parse_metrics(render(registry).decode())
    expected = expected_metrics(events, as_of, ReferenceConfig(
        timezone=zone, fiscal_year_start_month=fiscal_start))
    assert assert_matches(expected, exported) == len(expected) > 1000
    quarters = {labels for name, labels in expected if name == "pulse_quota_amount"
                and ("period", "quarter") in labels}
    assert quarters, "no quota for T's quarter: the fiscal quarter goes untested"
    # Out of order, a crossing can appear that a later-arriving earlier engagement
    # undoes (a published event is not retracted), but none of the final ones is missed.
    hot = {json.loads(value)["id"] for _, value in run.logs[SETTINGS.topic_lead_scores]}
    assert expected_hot_events(events) <= hot


def test_in_event_order_the_hot_leads_published_are_exactly_the_reference_crossings() -> None:
    end = dt.datetime(2026, 10, 20, 12, tzinfo=dt.UTC)
    events = list(generate_events(GeneratorSettings(
        seed=8, start=end - dt.timedelta(days=120), end=end, deals_per_day=3,
        leads_per_deal=1.5)))
    run = MemoryRun(_specs())
    run.run(events, random.Random(8))
    hot = [json.loads(value)["id"] for _, value in run.logs[SETTINGS.topic_lead_scores]]
    expected = expected_hot_events(events)
    assert set(hot) == expected and len(expected) > 50
    assert len(hot) - len(set(hot)) == sum(  # repeats only for redelivered crossings
        1 for topic, offset in run.redelivered if topic == SETTINGS.topic_leads
        and json.loads(run.logs[topic][offset][1])["id"] in {i.split(":hot:")[1] for i in hot})


def test_every_routed_family_has_one_source_on_its_topic_and_role() -> None:
    specs = _specs()
    for family, route in ROUTES.items():
        [spec] = [s for s in specs if s.role == route.role]
        assert spec.topic == getattr(SETTINGS, route.topic_setting), family
    assert len({spec.table_name for spec in specs}) == len(specs)
    topics = [feed.topic for spec in specs for feed in spec.feeds]
    assert len(topics) == len(set(topics))


@pytest.mark.parametrize(("topic", "value", "detail"), [
    (SETTINGS.topic_account_wins, b'{"account_id": "A", "deal_id": "D"}', "won_at_ms"),
    (SETTINGS.topic_owner_wins, b'{"owner_id": "o", "won_at_ms": 1, "deal_id": "D"}', "cents"),
    (SETTINGS.topic_owner_wins, b"not json", "OwnerWinRecord"),
    (SETTINGS.topic_account_wins, None, "AccountWinRecord"),
    (SETTINGS.topic_forecast_deals, b"not json", "re-keyed deal event"),
    (SETTINGS.topic_forecast_deals, json.dumps({
        "specversion": "1.0", "id": "q1", "source": "t", "type": "quota.set",
        "time": "2026-01-01T00:00:00Z", "data": {"owner_id": "o", "team": "T",
                                                 "period": "2026-01", "amount": "1",
                                                 "currency": "USD"}}).encode(),
     "a quota.set event"),
])
def test_a_rekeyed_record_that_is_not_one_is_a_dead_letter_naming_the_field(
        topic: str, value: bytes | None, detail: str) -> None:
    [feed] = [f for spec in _specs() for f in spec.feeds if f.topic == topic]
    assert feed.parse is not None
    rejected = feed.parse(value)
    assert isinstance(rejected, Rejection)
    assert rejected.reason == "invalid_field" and detail in rejected.detail


def test_published_messages_validate_against_their_models() -> None:
    run = MemoryRun(_specs())
    end = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    run.run(list(generate_events(GeneratorSettings(
        seed=5, start=end - dt.timedelta(days=60), end=end, deals_per_day=4, accounts=20,
        leads_per_deal=1.0))), random.Random(5))
    checks = {SETTINGS.topic_account_wins: AccountWinRecord,
              SETTINGS.topic_owner_wins: OwnerWinRecord, SETTINGS.topic_lead_scores: LeadHot}
    for topic, model in checks.items():
        messages = run.logs[topic]
        assert messages, topic
        for key, value in messages:
            parsed = model.model_validate_json(value)
            assert key == getattr(parsed, "account_id", None) or key == getattr(
                parsed, "owner_id", None) or key == getattr(parsed, "subject", None)


def _rep_event(n: int, kind: str, when: str, **data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"move-{n}", "source": "crm/test", "type": kind,
            "time": when, "data": data}


def test_a_rep_moving_team_leaves_past_and_open_deals_with_their_creation_team() -> None:
    """Ana sells for A in September, then for B: a deal keeps the team of its
    ``deal.created`` (won and open alike), a quota the team of its ``quota.set``, and
    the owner's own series follow her across both (README, "A rep moving team")."""
    def created(n: int, deal: str, team: str, when: str) -> dict[str, Any]:
        return _rep_event(n, "deal.created", when, deal_id=deal, account_id=None,
                          owner_id="ana", team=team, amount="1000", currency="USD",
                          stage="Prospecting")

    events = [
        _rep_event(1, "quota.set", "2026-09-01T08:00:00Z", owner_id="ana", team="A",
                   period="2026-09", amount="1000", currency="USD"),
        created(2, "D1", "A", "2026-09-02T09:00:00Z"),
        _rep_event(3, "deal.won", "2026-09-20T09:00:00Z", deal_id="D1", amount="1000"),
        created(4, "D3", "A", "2026-09-25T09:00:00Z"),
        _rep_event(5, "quota.set", "2026-10-01T08:00:00Z", owner_id="ana", team="B",
                   period="2026-10", amount="2000", currency="USD"),
        created(6, "D2", "B", "2026-10-05T09:00:00Z"),
        _rep_event(7, "deal.won", "2026-10-06T09:00:00Z", deal_id="D4", amount="500"),
        created(8, "D4", "B", "2026-10-03T09:00:00Z"),
    ]
    run = MemoryRun(_specs())
    run.run(events, random.Random(1))
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    PulseCollector(_Source(run), registry)
    exported = parse_metrics(render(registry).decode())
    as_of = dt.datetime(2026, 10, 6, 9, tzinfo=dt.UTC)
    expected = expected_metrics(events, as_of)
    assert assert_matches(expected, exported) == len(expected)

    def value(name: str, **labels: str) -> float:
        return float(expected[(name, tuple(sorted(labels.items())))])

    assert value("pulse_open_deals", team="A", stage="Prospecting") == 1  # D3 stays in A
    assert value("pulse_open_deals", team="B", stage="Prospecting") == 1  # D2
    assert value("pulse_deals_won", team="A", window="all") == 1  # D1, won for A
    assert value("pulse_deals_won", team="B", window="all") == 1  # D4, won for B
    assert value("pulse_owner_open_deals", owner="ana") == 2
    assert value("pulse_owner_deals_won", owner="ana", window="all") == 2
    assert value("pulse_quota_won_amount", team="A", period="last_month") == 1000
    assert value("pulse_quota_won_amount", team="B", period="month") == 500


def _boundary_event(n: int, event_type: str, time: str, **data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"tz-{n}", "source": "test/calendar", "type": event_type,
            "time": time, "data": data}


def _boundary_deal(n: int, deal: str, created: str, won: str | None, amount: str
                   ) -> list[dict[str, Any]]:
    out = [_boundary_event(n, "deal.created", created, deal_id=deal, owner_id="o-1",
                           team="North", amount=amount, currency="USD", stage="Prospecting",
                           account_id=None, source=None, product=None)]
    if won is not None:
        out.append(_boundary_event(n + 1, "deal.won", won, deal_id=deal, amount=amount))
    return out


#: Oslo (CET, UTC+1 in winter), fiscal year from February: T is 2026-02-10 13:00 local.
#: A is won at 23:30 on 31 January local (January, FY2026-Q4); B at 00:30 on 1 February
#: local (February, FY2027-Q1), though both are 31 January in UTC; C is created at 00:30
#: on T's day local, the day before in UTC.
OSLO_BOUNDARY = [
    *_boundary_deal(1, "A", "2026-01-10T10:00:00Z", "2026-01-31T22:30:00Z", "300.00"),
    *_boundary_deal(3, "B", "2026-01-20T10:00:00Z", "2026-01-31T23:30:00Z", "500.00"),
    *_boundary_deal(5, "C", "2026-02-09T23:30:00Z", None, "700.00"),
    *(_boundary_event(10 + i, "quota.set", "2026-01-01T00:00:00Z", owner_id="o-1",
                      team="North", period=period, amount=amount, currency="USD")
      for i, (period, amount) in enumerate((("2027-Q1", "2000.00"), ("2026-Q4", "1000.00"),
                                            ("2026-02", "800.00"), ("2026-01", "600.00")))),
    _boundary_event(20, "activity.logged", "2026-02-10T12:00:00Z", activity_id="call-1",
                    owner_id="o-1", team="North", kind="call"),
]


def test_local_midnight_decides_the_day_month_and_fiscal_quarter_of_every_kpi() -> None:
    settings = SETTINGS.model_copy(update={"timezone": "Europe/Oslo",
                                           "fiscal_year_start_month": 2, "windows_days": (1, 30)})
    run = MemoryRun(_specs(settings), settings)
    run.run(OSLO_BOUNDARY, random.Random(1))
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    PulseCollector(_Source(run), registry)
    exported = parse_metrics(render(registry).decode())
    expected = expected_metrics(OSLO_BOUNDARY, dt.datetime(2026, 2, 10, 12, tzinfo=dt.UTC),
                                ReferenceConfig(windows_days=(1, 30), timezone="Europe/Oslo",
                                                fiscal_year_start_month=2))
    assert assert_matches(expected, exported) == len(expected)

    def value(name: str, **labels: str) -> float:
        return exported[(name, tuple(sorted(labels.items())))]

    won = {period: value("pulse_owner_won_amount", owner="o-1", period=period)
           for period in ("month", "last_month", "quarter", "last_quarter")}
    assert won == {"month": 500, "last_month": 300, "quarter": 500, "last_quarter": 300}
    assert value("pulse_quota_attainment_ratio", owner="o-1", period="quarter") == 0.25
    assert value("pulse_quota_attainment_ratio", owner="o-1", period="last_quarter") == 0.3
    assert value("pulse_created_deals", team="North", window="1d") == 1
    starts = {period: dt.datetime.fromtimestamp(
        value("pulse_period_start_timestamp_seconds", period=period), dt.UTC).isoformat()
        for period in ("month_to_date", "last_month")}
    assert starts == {"month_to_date": "2026-01-31T23:00:00+00:00",
                      "last_month": "2025-12-31T23:00:00+00:00"}
