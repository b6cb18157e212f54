"""Per-deal state that any order of a deal's events folds to the same value.

Each field keeps the winner of a commutative choice: the earliest ``deal.created``,
the set of stage changes, amount updates and reopenings (by event id), and the marks of
:mod:`stream_app.kpi.lifecycle` (closes, reopenings, deletions and restores), each
ordered by (event time, event id). Duplicates and shuffles within a deal therefore give
the same state, and KPI contributions are a pure function of the state
(:func:`deal_contributions`).

A deal's timeline is read off the state: it starts at ``deal.created`` in its
initial stage; each stage change (and each reopening, a move to its stage) after
creation and before the close in effect moves it (a change to the stage it is already in
only updates the amount); the close in effect ends it. The close in effect is the
earliest close after the latest reopening: a reopened deal's earlier close leaves every
KPI of its day. Stage changes timed before the creation or after the close are ignored.
A deleted deal contributes nothing, on any day, until it is restored.
"""

from __future__ import annotations

__all__ = [
    "BUCKET",
    "CREATED_FIELDS",
    "KIND",
    "MOVEMENTS",
    "NO_VALUE",
    "STINT_BUCKETS_DAYS",
    "STINT_FIELDS",
    "BucketFields",
    "Contributions",
    "DealState",
    "Stint",
    "Timeline",
    "add_vector",
    "apply_deal_event",
    "deal_contributions",
    "deal_timeline",
    "earliest",
    "price_gap_femto",
    "state_before",
    "stint_bucket",
]

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from itertools import pairwise
from typing import Any, NamedTuple

from stream_app.events.models import (
    DealCreated,
    DealDeleted,
    DealEvent,
    DealLost,
    DealReopened,
    DealRestored,
    DealStageChanged,
    DealUpdated,
    DealWon,
)
from stream_app.kpi.calendar import UTC_CALENDAR, Calendar
from stream_app.kpi.kinds import (
    COMPETITOR_DAY,
    OPEN_PIPELINE,
    OWNER_DAY,
    OWNER_OPEN,
    PRODUCT_DAY,
    SOURCE_DAY,
    STAGE_STINT,
    TEAM_DAY,
    WATERFALL,
)
from stream_app.kpi.lifecycle import LOST, WON, Close, Lifecycle, merged_marks, owner_at
from stream_app.kpi.money import Pricing
from stream_app.kpi.windows import MS_PER_DAY, ms_from_datetime

#: Aggregate kinds written by deals, by what they hold.
KIND = {
    "team_day": TEAM_DAY,
    "open": OPEN_PIPELINE,
    "source_day": SOURCE_DAY,
    "product_day": PRODUCT_DAY,
    "stint": STAGE_STINT,
    "waterfall": WATERFALL,
    "competitor_day": COMPETITOR_DAY,
    "owner_day": OWNER_DAY,
    "owner_open": OWNER_OPEN,
}


class BucketFields(NamedTuple):
    """The fields of a (team, day) bucket vector; :data:`BUCKET` holds their positions."""

    created: int
    won: int
    lost: int
    won_cents: int
    cycle_ms: int
    won_with_account: int


#: Position of each field in a (team, day) bucket vector: ``vector[BUCKET.won]``.
BUCKET = BucketFields(*range(len(BucketFields._fields)))
#: Upper bounds (days) of the stint-length histogram; a last bucket holds the rest.
STINT_BUCKETS_DAYS = (1, 3, 7, 14, 30, 60, 90, 180, 365)
#: Fields of a (team, "end_day:stage") stint vector, then one count per histogram bucket.
STINT_FIELDS = ("stints", "stint_ms", "forward", "backward", "lost")
#: Waterfall movements, each a (count, cents) vector per team.
MOVEMENTS = ("created", "advanced", "regressed", "won", "lost", "increased", "decreased")
#: Label value of a deal with no source or product.
NO_VALUE = "(none)"
#: The ``deal.created`` fields a deal keeps, in the order its record lists them.
CREATED_FIELDS = ("account_id", "owner_id", "team", "amount", "currency", "stage", "source",
                  "product")

_FEMTO = 10**15
#: Later than any event time (ms): the owner "now" of an open deal.
_END_OF_TIME = 2**62

#: Contribution vectors keyed by (kind, group, part).
Contributions = dict[tuple[str, str, Any], tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class DealState:
    """What is known of one deal. Tuples start with (time_ms, event_id) for ordering.

    ``changes`` holds every stage change as (time_ms, event_id, to_stage, amount or
    None), every amount update (``deal.updated``) as (time_ms, event_id, None, amount) and
    every reopening as (time_ms, event_id, stage, None), sorted; ``lifecycle`` holds the
    closes (time_ms, event_id, "won" or "lost", won amount or None, competitor or None,
    competitor price or None), reopenings, deletions and restores
    (:mod:`stream_app.kpi.lifecycle`).
    """

    deal_id: str
    created: tuple[int, str, dict[str, Any]] | None = None
    changes: tuple[tuple[int, str, str | None, str | None], ...] = ()
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    #: Owner changes (``deal.updated`` with an owner_id): (time_ms, event_id, owner), sorted.
    owners: tuple[tuple[int, str, str], ...] = ()
    #: The CRM's plan for the deal: (time_ms, event_id, expected close "YYYY-MM-DD" or None,
    #: forecast category or None) of each ``deal.created`` or ``deal.updated`` naming
    #: either (None: not changed by that event), sorted.
    plans: tuple[tuple[int, str, str | None, str | None], ...] = ()

    def marks(self) -> Iterator[tuple[int, str]]:
        """(time_ms, event_id) of every event the state holds."""
        if self.created is not None:
            yield int(self.created[0]), str(self.created[1])
        lifecycle = self.lifecycle
        for mark in (*self.changes, *lifecycle.closes, *lifecycle.reopenings,
                     *lifecycle.deletions, *self.owners, *self.plans):
            yield int(mark[0]), str(mark[1])

    def plan_at(self, time_ms: int | None = None) -> tuple[str | None, str | None]:
        """(expected close, forecast category) in effect at ``time_ms`` (None: now): the
        latest of each named by an event timed at or before it."""
        expected = category = None
        for at, _, close, named in self.plans:
            if time_ms is not None and at > time_ms:
                break
            expected = close if close is not None else expected
            category = named if named is not None else category
        return expected, category

    def owner_at(self, time_ms: int) -> str:
        """The deal's owner at ``time_ms`` (:func:`stream_app.kpi.lifecycle.owner_at`)."""
        assert self.created is not None
        at, event_id, info = self.created
        return owner_at((at, event_id, str(info["owner_id"])), self.owners, time_ms)

    @property
    def closed(self) -> Close | None:
        """The close in effect (see :attr:`Lifecycle.close`), or None while open."""
        return self.lifecycle.close

    @property
    def deleted(self) -> bool:
        """Whether the deal is deleted (it then contributes to no KPI)."""
        return self.lifecycle.deleted

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the state table; the ``deal.created`` fields are written
        as a list in :data:`CREATED_FIELDS` order (a record per open deal, so the names
        would be a seventh of the worker's memory). Stage changes are ``h``; a single
        close is ``x``, several ``xs``; each of these, reopenings ``r`` and deletions
        ``del`` appear only when there are some."""
        created = None
        if self.created:
            at, event_id, info = self.created
            created = [at, event_id, [info.get(name) for name in CREATED_FIELDS]]
        closes = self.lifecycle.closes
        out: dict[str, Any] = {"id": self.deal_id, "c": created}
        if self.changes:
            out["h"] = [list(change) for change in self.changes]
        if len(closes) == 1:
            out["x"] = list(closes[0])
        elif closes:
            out["xs"] = [list(close) for close in closes]
        if self.owners:
            out["ow"] = [list(change) for change in self.owners]
        if self.plans:
            out["pl"] = [list(plan) for plan in self.plans]
        marks = self.lifecycle.to_json()
        marks.pop("x", None)
        return out | marks

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DealState:
        """Inverse of :meth:`to_json`; also reads records written with field names."""
        created = raw["c"]
        if created:
            at, event_id, info = created
            if isinstance(info, list):
                info = dict(zip(CREATED_FIELDS, info, strict=True))
            created = (at, event_id, info)
        closes = raw.get("xs") or ([raw["x"]] if raw.get("x") else [])
        return cls(
            deal_id=raw["id"],
            created=created or None,
            changes=tuple(tuple(change) for change in raw.get("h") or ()),
            lifecycle=Lifecycle.from_json({**raw, "x": closes}),
            owners=tuple((int(at), str(event), str(owner))
                         for at, event, owner in raw.get("ow") or ()),
            plans=tuple((int(at), str(event), close, category)
                        for at, event, close, category in raw.get("pl") or ()),
        )


@dataclass(frozen=True, slots=True)
class Stint:
    """Time a deal spent in one stage; ``exit`` is None while it is still there."""

    stage: str
    start_ms: int
    end_ms: int | None
    exit: str | None  # "forward" (later stage or won), "backward" or "lost"


@dataclass(frozen=True, slots=True)
class Timeline:
    """A created deal's path: its stints, stage moves and amounts, in time order."""

    stints: tuple[Stint, ...]
    #: ("advanced" | "regressed", amount after the move, time_ms of the move)
    moves: tuple[tuple[str, str, int], ...]
    #: the amount at creation, then after each change of it
    amounts: tuple[str, ...]
    #: when each of ``amounts`` took effect (the creation time first)
    amounts_at: tuple[int, ...] = ()


def add_vector(target: dict[Any, list[int]], key: Any, vector: Sequence[int]) -> None:
    """Add ``vector`` element-wise to ``target[key]`` (a copy of it when absent)."""
    current = target.get(key)
    if current is None:
        target[key] = list(vector)
    else:
        for i, value in enumerate(vector):
            current[i] += value


def earliest(current: tuple[Any, ...] | None,
             candidate: tuple[Any, ...]) -> tuple[Any, ...]:
    """Of two versions ``(time_ms, event_id, ...)``, the earlier by (time, id): how every
    entity keeps the first of repeated or reordered events."""
    return candidate if current is None or candidate[:2] < current[:2] else current


def apply_deal_event(state: DealState, event: DealEvent, for_forecast: bool = False
                     ) -> DealState:
    """Fold one event into the state; commutative and idempotent per event. The
    forecast's fold (``for_forecast``) keeps every lifecycle mark unpruned, so
    :func:`state_before` can answer for any earlier time, and records the CRM's plan
    (expected close, forecast category), which no other KPI reads."""
    prune = not for_forecast
    at = ms_from_datetime(event.time)
    if isinstance(event, DealCreated):
        d = event.data
        info = {
            "account_id": d.account_id,
            "owner_id": d.owner_id,
            "team": d.team,
            "amount": str(d.amount),
            "currency": d.currency,
            "stage": d.stage,
            "source": d.source,
            "product": d.product,
        }
        if for_forecast and d.expected_close is not None:
            plans = merged_marks(state.plans, ((at, event.id, d.expected_close.isoformat(),
                                                None),))
            if plans is not state.plans:
                state = replace(state, plans=plans)
        return replace(state, created=earliest(state.created, (at, event.id, info)))
    if isinstance(event, DealStageChanged | DealUpdated | DealReopened):
        if any(change[1] == event.id for change in state.changes):
            return state
        if isinstance(event, DealReopened):
            lifecycle = state.lifecycle.with_marks(reopenings=((at, event.id),), prune=prune)
            if lifecycle is not state.lifecycle:
                state = replace(state, lifecycle=lifecycle)
            if event.data.stage is None:
                return state
            change: tuple[int, str, str | None, str | None] = (at, event.id, event.data.stage,
                                                               None)
        else:
            amount = None if event.data.amount is None else str(event.data.amount)
            if isinstance(event, DealUpdated) and event.data.owner_id is not None:
                owners = merged_marks(state.owners, ((at, event.id, event.data.owner_id),))
                if owners is not state.owners:
                    state = replace(state, owners=owners)
            if for_forecast and isinstance(event, DealUpdated) and (
                    event.data.expected_close is not None
                    or event.data.forecast_category is not None):
                expected = event.data.expected_close
                plans = merged_marks(state.plans, ((
                    at, event.id, None if expected is None else expected.isoformat(),
                    event.data.forecast_category),))
                if plans is not state.plans:
                    state = replace(state, plans=plans)
            if isinstance(event, DealUpdated) and amount is None:
                return state  # owner, expected close, forecast category: no amount change
            to_stage = event.data.to_stage if isinstance(event, DealStageChanged) else None
            change = (at, event.id, to_stage, amount)
        return replace(state, changes=tuple(sorted((*state.changes, change),
                                                   key=lambda c: (c[0], c[1]))))
    if isinstance(event, DealWon | DealLost):
        closing = event.data
        price = (None if closing.competitor_price is None
                 else str(closing.competitor_price))
        won = str(event.data.amount) if isinstance(event, DealWon) else None
        kind = WON if isinstance(event, DealWon) else LOST
        lifecycle = state.lifecycle.with_marks(
            closes=((at, event.id, kind, won, closing.competitor, price),), prune=prune)
        return state if lifecycle is state.lifecycle else replace(state, lifecycle=lifecycle)
    if isinstance(event, DealDeleted | DealRestored):
        lifecycle = state.lifecycle.with_marks(
            deletions=((at, event.id, isinstance(event, DealDeleted)),), prune=prune)
        return state if lifecycle is state.lifecycle else replace(state, lifecycle=lifecycle)
    raise TypeError(f"not a deal event: {type(event).__name__}")


def state_before(state: DealState, cutoff_ms: int) -> DealState:
    """What the events timed before ``cutoff_ms`` fold to, from the forecast's fold
    (``apply_deal_event(..., for_forecast=True)``): every mark at or after the cutoff
    dropped."""
    created = state.created if state.created is not None and state.created[0] < cutoff_ms \
        else None
    lifecycle = state.lifecycle
    return DealState(
        deal_id=state.deal_id,
        created=created,
        changes=tuple(change for change in state.changes if change[0] < cutoff_ms),
        lifecycle=Lifecycle(
            closes=tuple(c for c in lifecycle.closes if int(c[0]) < cutoff_ms),
            reopenings=tuple(r for r in lifecycle.reopenings if int(r[0]) < cutoff_ms),
            deletions=tuple(d for d in lifecycle.deletions if int(d[0]) < cutoff_ms)),
        owners=tuple(owner for owner in state.owners if owner[0] < cutoff_ms),
        plans=tuple(plan for plan in state.plans if plan[0] < cutoff_ms),
    )


def deal_timeline(state: DealState, rank: dict[str, int] | None = None) -> Timeline | None:
    """The deal's stints, stage moves and amounts; None until ``deal.created`` is known.

    ``rank`` orders stages (pipeline order) to tell advanced from regressed moves;
    without it every move counts as advanced.
    """
    if state.created is None:
        return None
    created_at, created_id, info = state.created
    start = (created_at, created_id)
    end = None if state.closed is None else state.closed[:2]
    stage, since = str(info["stage"]), created_at
    amounts, amounts_at = [str(info["amount"])], [created_at]
    stints: list[Stint] = []
    moves: list[tuple[str, str, int]] = []
    for at, event_id, to_stage, amount in state.changes:
        if (at, event_id) < start or (end is not None and (at, event_id) >= end):
            continue
        if amount is not None and amount != amounts[-1]:
            amounts.append(amount)
            amounts_at.append(at)
        if to_stage is None or to_stage == stage:
            continue
        forward = rank is None or rank.get(to_stage, 0) > rank.get(stage, 0)
        stints.append(Stint(stage, since, at, "forward" if forward else "backward"))
        moves.append(("advanced" if forward else "regressed", amounts[-1], at))
        stage, since = to_stage, at
    if state.closed is None:
        stints.append(Stint(stage, since, None, None))
    else:
        exit_ = "forward" if state.closed[2] == "won" else "lost"
        stints.append(Stint(stage, since, state.closed[0], exit_))
    return Timeline(tuple(stints), tuple(moves), tuple(amounts), tuple(amounts_at))


def stint_bucket(duration_ms: int) -> int:
    """Index of the histogram bucket of a stint lasting ``duration_ms``."""
    for index, days in enumerate(STINT_BUCKETS_DAYS):
        if duration_ms <= days * MS_PER_DAY:
            return index
    return len(STINT_BUCKETS_DAYS)


def price_gap_femto(our_amount: str, competitor_price: str) -> int | None:
    """(our amount / competitor price - 1) in units of 1e-15, rounded half to even;
    None when the price is zero."""
    price = Fraction(competitor_price)
    if not price:
        return None
    return round((Fraction(our_amount) / price - 1) * _FEMTO)


def deal_contributions(state: DealState, pricing: Pricing,
                       calendar: Calendar = UTC_CALENDAR) -> Contributions:
    """The deal's share of every aggregate; nothing until its ``deal.created`` is known.

    - ``(TEAM_DAY, team, day)``: created on the creation day; won, won cents, cycle ms and
      won-with-account on the won day; lost on the lost day;
    - ``(SOURCE_DAY, source, day)`` / ``(PRODUCT_DAY, product, day)``: created, won, lost,
      won cents;
    - ``(OPEN_PIPELINE, team, "since_day:stage")`` while open: 1 and the current amount, where
      since_day is the day the deal entered its current stage;
    - ``(STAGE_STINT, team, "end_day:stage")`` per ended stint: 1, its length, its exit
      (forward, backward or lost) and its histogram bucket;
    - ``(WATERFALL, team, "day:movement")``: the waterfall (count, cents) of each movement on
      the day it happened;
    - ``(COMPETITOR_DAY, competitor, close_day)``: won, lost, priced, summed price gap (1e-15);
    - ``(OWNER_DAY, owner, day)``: created, won, lost, won cents, cycle ms, as ``TEAM_DAY``:
      the created count for the owner of the ``deal.created``, the close for the owner at
      the close (:meth:`DealState.owner_at`); ``(OWNER_OPEN, owner, stage)`` while open: 1
      and the current amount, for the current owner.
    """
    timeline = deal_timeline(state, pricing.stage_rank)
    if timeline is None or state.created is None or state.deleted:
        return {}
    created_at, _, info = state.created
    team = str(info["team"])
    owner = str(info["owner_id"])
    currency = str(info["currency"])
    dims = ((SOURCE_DAY, info.get("source") or NO_VALUE),
            (PRODUCT_DAY, info.get("product") or NO_VALUE))
    day_of = calendar.day_of
    created_day = day_of(created_at)
    out: dict[tuple[str, str, Any], list[int]] = {}

    def cents(amount: str) -> int:
        return pricing.to_cents(amount, currency)

    add_vector(out, (TEAM_DAY, team, created_day), (1, 0, 0, 0, 0, 0))
    add_vector(out, (OWNER_DAY, owner, created_day), (1, 0, 0, 0, 0))
    for kind, value in dims:
        add_vector(out, (kind, value, created_day), (1, 0, 0, 0))
    def movement(name: str, at_ms: int, amount_cents: int) -> None:
        add_vector(out, (WATERFALL, team, f"{day_of(at_ms)}:{name}"), (1, amount_cents))

    movement("created", created_at, cents(timeline.amounts[0]))
    for name, amount, at_ms in timeline.moves:
        movement(name, at_ms, cents(amount))
    for (before, after), at_ms in zip(pairwise(timeline.amounts), timeline.amounts_at[1:],
                                      strict=True):
        delta = cents(after) - cents(before)
        if delta:
            movement("increased" if delta > 0 else "decreased", at_ms, abs(delta))
    for stint in timeline.stints:
        if stint.end_ms is None:
            since_day = day_of(stint.start_ms)
            open_cents = cents(timeline.amounts[-1])
            add_vector(out, (OPEN_PIPELINE, team, f"{since_day}:{stint.stage}"), (1, open_cents))
            add_vector(out, (OWNER_OPEN, state.owner_at(_END_OF_TIME), stint.stage),
                       (1, open_cents))
            continue
        length = stint.end_ms - stint.start_ms
        vector = [1, length, stint.exit == "forward", stint.exit == "backward",
                  stint.exit == "lost"] + [0] * (len(STINT_BUCKETS_DAYS) + 1)
        vector[len(STINT_FIELDS) + stint_bucket(length)] = 1
        add_vector(out, (STAGE_STINT, team, f"{day_of(stint.end_ms)}:{stint.stage}"),
                   [int(v) for v in vector])
    if state.closed is not None:
        closed_at, _, kind, won_amount, competitor, price = state.closed
        closed_day = day_of(closed_at)
        our_amount = won_amount if kind == "won" and won_amount is not None \
            else timeline.amounts[-1]
        if kind == "won":
            won_cents = cents(our_amount)
            has_account = int(bool(info.get("account_id")))
            add_vector(out, (TEAM_DAY, team, closed_day),
                       (0, 1, 0, won_cents, closed_at - created_at, has_account))
            add_vector(out, (OWNER_DAY, state.owner_at(closed_at), closed_day),
                       (0, 1, 0, won_cents, closed_at - created_at))
            for dim, value in dims:
                add_vector(out, (dim, value, closed_day), (0, 1, 0, won_cents))
            movement("won", closed_at, won_cents)
        else:
            add_vector(out, (TEAM_DAY, team, closed_day), (0, 0, 1, 0, 0, 0))
            add_vector(out, (OWNER_DAY, state.owner_at(closed_at), closed_day), (0, 0, 1, 0, 0))
            for dim, value in dims:
                add_vector(out, (dim, value, closed_day), (0, 0, 1, 0))
            movement("lost", closed_at, cents(our_amount))
        if competitor is not None:
            gap = None if price is None else price_gap_femto(our_amount, price)
            add_vector(out, (COMPETITOR_DAY, competitor, closed_day),
                       (int(kind == "won"), int(kind == "lost"), int(gap is not None), gap or 0))
    return {key: tuple(vector) for key, vector in out.items()}
