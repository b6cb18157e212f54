"""The six sources of Pipeline Pulse, each declared once.

========== ================== ======================================= =================
source     keyed by           feeds (guard tag)                       publishes
========== ================== ======================================= =================
deals      deal               deal topic (``d``)                      wins re-keyed by
                                                                      account and owner
accounts   account            customer topic: churns (``c``);         -
                              account wins (``w``)
owners     owner              quota topic: quotas (``q``);            -
                              owner wins (``w``)
leads      lead               lead topic (``l``)                      ``lead.hot``
activities owner (topic key), activity topic (``v``)                  -
           activity (entity)
reps       owner              roster topic (``r``)                    -
========== ================== ======================================= =================

A sixth source is one kpi module (state, pure apply, contributions) and one more
entry in :func:`catalogue`; the worker, its recovery, readiness, lag and the report's
snapshot loop over the specs.
"""

from __future__ import annotations

__all__ = ["LeadBook", "catalogue", "deal_labels", "owner_win_key", "win_lifecycle"]

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from stream_app.config import Settings, organisation_calendar
from stream_app.events.codec import Rejection
from stream_app.events.emitted import (
    AccountWinRecord,
    LeadHot,
    LeadHotData,
    OwnerWinRecord,
    WinMarks,
)
from stream_app.events.models import (
    ActivityLogged,
    CustomerChurned,
    DealCreated,
    DealEvent,
    DealLost,
    DealUpdated,
    DealWon,
    LeadCreated,
    LeadEvent,
    QuotaSet,
    RepUpdated,
    crm_event_adapter,
)
from stream_app.kpi.accounts import (
    AccountState,
    account_contributions,
    apply_account_churn,
    apply_account_win,
)
from stream_app.kpi.activities import ActivityState, activity_contributions, apply_activity_event
from stream_app.kpi.deals import NO_VALUE, DealState, apply_deal_event, deal_contributions
from stream_app.kpi.fold import entity_key, record_of
from stream_app.kpi.kinds import (
    ACCOUNT_ENTITY,
    ACCOUNT_WIN_SOURCE,
    ACTIVITY_ENTITY,
    ACTIVITY_SOURCE,
    CHURN_SOURCE,
    DEAL_ENTITY,
    DEAL_SOURCE,
    FORECAST_ENTITY,
    FORECAST_SOURCE,
    LEAD_ENTITY,
    LEAD_SOURCE,
    OWNER_ENTITY,
    OWNER_WIN_ENTITY,
    OWNER_WIN_SOURCE,
    QUOTA_SOURCE,
    REP_ENTITY,
    REP_SOURCE,
)
from stream_app.kpi.leads import (
    LeadState,
    ScoreInputs,
    apply_lead_event,
    hot_crossings,
    lead_contributions,
    score_inputs,
)
from stream_app.kpi.lifecycle import WON, Lifecycle
from stream_app.kpi.money import Pricing
from stream_app.kpi.owners import (
    OwnerState,
    OwnerWin,
    apply_owner_win,
    apply_quota,
    owner_contributions,
    win_contributions,
)
from stream_app.kpi.reps import RepState, apply_rep_update, rep_contributions
from stream_app.kpi.scoring import ScoringRules
from stream_app.kpi.snapshot import Snapshot
from stream_app.kpi.windows import datetime_from_ms, ms_from_datetime
from stream_app.sources.forecast_book import FORECAST_KEY, ForecastBook
from stream_app.sources.spec import Entity, Feed, Fold, LabelValues, Outgoing, SourceSpec

M = TypeVar("M", bound=BaseModel)


def deal_labels(events: Iterable[DealEvent]) -> dict[str, set[str]]:
    """Values of the capped labels that deal events name."""
    found: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if isinstance(event, DealCreated):
            found["team"].add(event.data.team)
            found["owner"].add(event.data.owner_id)
            found["source"].add(event.data.source or NO_VALUE)
            found["product"].add(event.data.product or NO_VALUE)
        elif isinstance(event, DealWon | DealLost) and event.data.competitor:
            found["competitor"].add(event.data.competitor)
        elif isinstance(event, DealUpdated) and event.data.owner_id:
            found["owner"].add(event.data.owner_id)
    return found


def win_lifecycle(record: AccountWinRecord | OwnerWinRecord) -> Lifecycle:
    """The marks a re-keyed win record carries; a record written before marks existed
    is one win (closes as (time_ms, event_id, kind, won cents))."""
    marks = record.marks
    if marks is None:
        cents = record.cents if isinstance(record, OwnerWinRecord) else 0
        return Lifecycle(closes=((int(record.won_at_ms or 0), "", WON, int(cents or 0)),))
    return Lifecycle().with_marks(tuple(marks.closes), tuple(marks.reopenings),
                                  tuple(marks.deletions))


def owner_win_key(record: OwnerWinRecord) -> str:
    """The owner-win entity of a record: the deal for the owner of its creation (the key
    records written before owner changes used), ``deal@owner`` for a later owner (each
    owner's partition holds its own entity, so two of them on one worker never share a
    record)."""
    if record.creation is None or record.owner_id == record.creation[2]:
        return record.deal_id
    return f"{record.deal_id}@{record.owner_id}"


def _parser(model: type[M]) -> Callable[[bytes | None], M | Rejection]:
    """Validate a re-keyed record; a record that is not one becomes a dead letter."""

    def parse(value: bytes | None) -> M | Rejection:
        try:
            return model.model_validate_json(value or b"")
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "record"
            return Rejection("invalid_field", f"{model.__name__} {where}: {first['msg']}")

    return parse


def _parse_deal_event(value: bytes | None) -> DealEvent | Rejection:
    """A re-keyed deal event (already validated by the contract when first read)."""
    try:
        event = crm_event_adapter.validate_json(value or b"")
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "event"
        return Rejection("invalid_field", f"re-keyed deal event {where}: {first['msg']}")
    if not event.type.startswith("deal."):
        return Rejection("invalid_field", f"re-keyed deal event: a {event.type} event")
    return cast("DealEvent", event)


def _no_contributions(_: DealState) -> dict[Any, tuple[int, ...]]:
    return {}


class LeadBook:
    """Score inputs of the open leads by partition (the live score is computed at the
    report's as-of time, so it cannot be an aggregate)."""

    _PREFIX = entity_key(LEAD_ENTITY, "")

    def __init__(self, rules: ScoringRules):
        self._rules = rules
        self._open: dict[int, dict[str, ScoreInputs]] = defaultdict(dict)
        self._partitions: dict[str, int] = {}
        self._version = 0
        self._listed: tuple[tuple[int, frozenset[int]], list[ScoreInputs]] | None = None

    @property
    def version(self) -> int:
        """Moves at every note and rebuild."""
        return self._version

    def note(self, partition: int, state: LeadState) -> None:
        """The lead's state after a fold: kept while open."""
        self._version += 1
        self._partitions[entity_key(LEAD_ENTITY, state.lead_id)] = partition
        inputs = score_inputs(state, self._rules)
        if inputs is None:
            self._open[partition].pop(state.lead_id, None)
        else:
            self._open[partition][state.lead_id] = inputs

    def note_key(self, key: str, partition: int) -> None:
        """Where a restored lead record lives."""
        if key.startswith(self._PREFIX):
            self._partitions[key] = partition

    def rebuild(self, records: Mapping[str, Any]) -> None:
        """The open leads again, from the restored table."""
        self._version += 1
        self._open.clear()
        for key, partition in list(self._partitions.items()):
            record = records.get(key)
            if record is not None:
                raw = record_of(record)
                self.note(partition, LeadState.from_json(raw["v"]))

    def contribute(self, snapshot: Snapshot, partitions: frozenset[int],
                   keep: Callable[[str, str], bool] | None = None,
                   labels_version: Hashable = None) -> None:
        """The open leads of the exported partitions (the very list of the last call
        while no lead changed)."""
        key = (self._version, partitions)
        if self._listed is None or self._listed[0] != key:
            self._listed = (key, [lead for p in partitions for lead in self._open[p].values()])
        snapshot.open_leads = self._listed[1]


def catalogue(settings: Settings, pricing: Pricing, scoring: ScoringRules
              ) -> tuple[SourceSpec, ...]:
    """Every source under ``settings``, deals first."""
    s = settings
    calendar = organisation_calendar(settings)
    deal = Entity(DEAL_ENTITY, DealState, DealState.from_json, DealState.to_json,
                  partial(deal_contributions, pricing=pricing, calendar=calendar))
    account = Entity(ACCOUNT_ENTITY, AccountState, AccountState.from_json, AccountState.to_json,
                     partial(account_contributions, calendar=calendar))
    owner = Entity(OWNER_ENTITY, OwnerState, OwnerState.from_json, OwnerState.to_json,
                   partial(owner_contributions, pricing=pricing))
    owner_win = Entity(OWNER_WIN_ENTITY, OwnerWin, OwnerWin.from_json, OwnerWin.to_json,
                       partial(win_contributions, calendar=calendar))
    lead = Entity(LEAD_ENTITY, LeadState, LeadState.from_json, LeadState.to_json,
                  partial(lead_contributions, rules=scoring, calendar=calendar))
    activity = Entity(ACTIVITY_ENTITY, ActivityState, ActivityState.from_json,
                      ActivityState.to_json, partial(activity_contributions, calendar=calendar))
    rep = Entity(REP_ENTITY, RepState, RepState.from_json, RepState.to_json,
                 rep_contributions)
    forecast_deal = Entity(FORECAST_ENTITY, DealState, DealState.from_json,
                           DealState.to_json, _no_contributions)

    def forward_deal(before: DealState, state: DealState, event: DealEvent) -> list[Outgoing]:
        """Every deal event again, under the one key of the forecast topic, with what
        :func:`forward_win` sends; again on a replay (the forecast's fold is idempotent
        per event)."""
        return [*forward_win(before, state, event),
                Outgoing(s.topic_forecast_deals, FORECAST_KEY,
                         event.model_dump_json(by_alias=True).encode())]

    def forward_win(_: DealState, state: DealState, __: DealEvent) -> list[Outgoing]:
        """A deal with a win, re-keyed by account and by owner with its closes,
        reopenings and deletions, so a win withdrawn later (reopened, deleted) leaves
        the receivers too. Sent again on every replay: the receivers keep the union of
        the marks, so repeats change nothing. A deal never won, reopened or deleted
        sends nothing."""
        lifecycle = state.lifecycle
        if state.created is None or not (
                lifecycle.revised or any(close[2] == WON for close in lifecycle.closes)):
            return []
        info = state.created[2]
        currency = str(info["currency"])
        marks = WinMarks(
            closes=[(at, event_id, kind,
                     pricing.to_cents(str(won), currency) if kind == WON else 0)
                    for at, event_id, kind, won, *_ in lifecycle.closes],
            reopenings=list(lifecycle.reopenings), deletions=list(lifecycle.deletions))
        out = []
        account_id = info.get("account_id")
        if account_id:
            record = AccountWinRecord(account_id=account_id, deal_id=state.deal_id, marks=marks)
            out.append(Outgoing(s.topic_account_wins, account_id,
                                record.model_dump_json(exclude_none=True).encode()))
        creation = (state.created[0], state.created[1], str(info["owner_id"]))
        for owner_id in dict.fromkeys((creation[2], *(o for _, _, o in state.owners))):
            win = OwnerWinRecord(owner_id=owner_id, deal_id=state.deal_id, marks=marks,
                                 creation=creation, owner_changes=list(state.owners))
            out.append(Outgoing(s.topic_owner_wins, owner_id,
                                win.model_dump_json(exclude_none=True).encode()))
        return out

    def publish_hot(before: LeadState, state: LeadState, event: LeadEvent) -> list[Outgoing]:
        """``lead.hot`` for each crossing of the hot threshold this event made appear:
        its own, and, when it arrives late (a ``lead.created`` after the engagements),
        those of earlier events it completed. Its own crossing again on a redelivery:
        the id is deterministic, so consumers drop repeats."""
        out = []
        crossings = hot_crossings(state, scoring)
        if before is state or all(crossing_id == event.id for _, crossing_id in crossings):
            previous = set(crossings)
        else:
            previous = set(hot_crossings(before, scoring))
        for at, crossing_id in crossings:
            if state.created is None or (
                    crossing_id != event.id and (at, crossing_id) in previous):
                continue
            info = state.created[2]
            hot = LeadHot(specversion="1.0", id=f"{state.lead_id}:hot:{crossing_id}",
                          source=f"pipeline-pulse/{s.app_id}", type="lead.hot",
                          time=datetime_from_ms(at), subject=state.lead_id,
                          datacontenttype="application/json",
                          data=LeadHotData(lead_id=state.lead_id, source=info["source"],
                                           owner_id=info.get("owner_id"),
                                           threshold=scoring.hot_threshold))
            out.append(Outgoing(s.topic_lead_scores, state.lead_id,
                                hot.model_dump_json().encode()))
        return out

    def churn_labels(churns: Sequence[CustomerChurned]) -> LabelValues:
        return {"competitor": {c.data.competitor for c in churns if c.data.competitor}}

    def quota_labels(quotas: Sequence[QuotaSet]) -> LabelValues:
        return {"owner": {q.data.owner_id for q in quotas}, "team": {q.data.team for q in quotas}}

    def lead_labels(events: Sequence[LeadEvent]) -> LabelValues:
        return {"source": {e.data.source for e in events if isinstance(e, LeadCreated)}}

    def activity_labels(activities: Sequence[ActivityLogged]) -> LabelValues:
        return {"owner": {a.data.owner_id for a in activities},
                "team": {a.data.team for a in activities}}

    def rep_labels(reps: Sequence[RepUpdated]) -> LabelValues:
        return {"owner": {r.data.owner_id for r in reps},
                "team": {r.data.team for r in reps if r.data.team}}

    return (
        SourceSpec("deals", "deals", (
            Feed(s.topic_deals, DEAL_SOURCE, emit=forward_deal,
                 fold=lambda e: Fold(deal, e.data.deal_id, ms_from_datetime(e.time),
                                     partial(apply_deal_event, event=e))),
        ), deal_labels),
        SourceSpec("accounts", "customers", (
            Feed(s.topic_customers, CHURN_SOURCE,
                 fold=lambda e: Fold(account, e.data.account_id, ms_from_datetime(e.time),
                                     partial(apply_account_churn,
                                             churned_at_ms=ms_from_datetime(e.time),
                                             event_id=e.id, competitor=e.data.competitor))),
            Feed(s.topic_account_wins, ACCOUNT_WIN_SOURCE, parse=_parser(AccountWinRecord),
                 fold=lambda w: Fold(account, w.account_id, w.time_ms,
                                     partial(apply_account_win, deal_id=w.deal_id,
                                             lifecycle=win_lifecycle(w)))),
        ), churn_labels),
        SourceSpec("owners", "quotas", (
            Feed(s.topic_quotas, QUOTA_SOURCE,
                 fold=lambda q: Fold(owner, q.data.owner_id, ms_from_datetime(q.time),
                                     partial(apply_quota, period=q.data.period,
                                             time_ms=ms_from_datetime(q.time), event_id=q.id,
                                             team=q.data.team, amount=str(q.data.amount),
                                             currency=q.data.currency))),
            Feed(s.topic_owner_wins, OWNER_WIN_SOURCE, parse=_parser(OwnerWinRecord),
                 fold=lambda w: Fold(owner_win, owner_win_key(w), w.time_ms,
                                     partial(apply_owner_win, owner_id=w.owner_id,
                                             lifecycle=win_lifecycle(w), creation=w.creation,
                                             owner_changes=tuple(w.owner_changes)))),
            Feed(s.topic_forecast_deals, FORECAST_SOURCE, parse=_parse_deal_event,
                 labels=deal_labels,
                 fold=lambda e: Fold(forecast_deal, e.data.deal_id, ms_from_datetime(e.time),
                                     partial(apply_deal_event, event=e, for_forecast=True))),
        ), quota_labels, side_book=partial(ForecastBook, pricing, calendar)),
        SourceSpec("leads", "leads", (
            Feed(s.topic_leads, LEAD_SOURCE, emit=publish_hot,
                 fold=lambda e: Fold(lead, e.data.lead_id, ms_from_datetime(e.time),
                                     partial(apply_lead_event, event=e))),
        ), lead_labels, side_book=partial(LeadBook, scoring)),
        SourceSpec("activities", "activities", (
            Feed(s.topic_activities, ACTIVITY_SOURCE,
                 fold=lambda a: Fold(activity, a.data.activity_id or a.id,
                                     ms_from_datetime(a.time),
                                     partial(apply_activity_event, event=a))),
        ), activity_labels),
        SourceSpec("reps", "reps", (
            Feed(s.topic_reps, REP_SOURCE,
                 fold=lambda r: Fold(rep, r.data.owner_id, ms_from_datetime(r.time),
                                     partial(apply_rep_update, time_ms=ms_from_datetime(r.time),
                                             event_id=r.id, name=r.data.name,
                                             team=r.data.team))),
        ), rep_labels),
    )
