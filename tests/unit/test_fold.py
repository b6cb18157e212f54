"""The guarded fold is exact when a crash keeps any prefix of the changelog writes."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.kpi.deals import DealState, apply_deal_event, deal_contributions
from stream_app.kpi.fold import (
    BatchWriter,
    entity_key,
    guarded_fold,
    parse_aggregate_key,
    position_key,
    record_text,
    supersedes,
    zone_conflict,
)
from stream_app.kpi.money import Pricing
from tests.unit.events import ev

PRICING = Pricing({"USD": Decimal(1)}, {"Prospecting": Decimal("0.1"), "Engaging": Decimal("0.5")})


class ChangelogStore(dict):
    """A dict that also records every write, like a changelog partition."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, Any]] = []

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.log.append((key, value))


def _stream(seed: int, deals: int = 6) -> list[Any]:
    rng = random.Random(seed)
    events = []
    for d in range(deals):
        day = rng.randint(1, 20)
        events.append(ev("deal.created", f"2026-03-{day:02d}T09:00:00Z", deal_id=f"D{d}",
                         team=rng.choice("AB"), amount=str(rng.randint(1, 900))))
        if rng.random() < 0.7:
            events.append(ev("deal.stage_changed", f"2026-03-{day + 2:02d}T09:00:00Z",
                             deal_id=f"D{d}", to_stage="Engaging", amount=str(rng.randint(1, 99))))
        end = rng.random()
        if end < 0.4:
            events.append(ev("deal.won", f"2026-03-{day + 5:02d}T09:00:00Z", deal_id=f"D{d}",
                             amount=str(rng.randint(1, 999))))
        elif end < 0.7:
            events.append(ev("deal.lost", f"2026-03-{day + 6:02d}T09:00:00Z", deal_id=f"D{d}"))
    rng.shuffle(events)
    return events


def _apply(store: Any, offset: int, event: Any) -> None:
    deal_id = event.data.deal_id
    guarded_fold(
        store, source="d", partition=0, offset=offset, key=entity_key("d", deal_id),
        empty=lambda: DealState(deal_id), load=DealState.from_json,
        apply=lambda s: apply_deal_event(s, event),
        contributions=lambda s: deal_contributions(s, PRICING), dump=DealState.to_json,
        event_time_ms=0,
    )


def _aggregates(store: dict) -> dict:
    return {k: (json.loads(v) if isinstance(v, str) else v)["v"] for k, v in store.items()
            if parse_aggregate_key(k) and k[0] not in "tp"}


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.floats(0, 1), committed=st.floats(0, 1))
def test_replay_after_a_crash_at_any_write_gives_the_uninterrupted_state(
    seed: int, cut: float, committed: float
) -> None:
    events = _stream(seed)
    clean = ChangelogStore()
    for offset, event in enumerate(events):
        _apply(clean, offset, event)
    kept = clean.log[: int(len(clean.log) * cut)]
    recovered = ChangelogStore()
    for key, value in kept:
        dict.__setitem__(recovered, key, value)
    applied = {v["g"]["d"] for k, v in kept if k.startswith("d\x1f")}
    start = min(int(len(events) * committed), min(set(range(len(events))) - applied,
                                                   default=len(events)))
    for offset in range(start, len(events)):
        _apply(recovered, offset, events[offset])
    assert _aggregates(recovered) == _aggregates(clean)


def test_replaying_everything_twice_changes_nothing() -> None:
    events = _stream(3)
    store = ChangelogStore()
    for offset, event in enumerate(events):
        _apply(store, offset, event)
    before = _aggregates(store)
    writes = len(store.log)
    for offset, event in enumerate(events):
        _apply(store, offset, event)
    assert _aggregates(store) == before
    assert len(store.log) == writes


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 9), cut=st.floats(0, 1),
       lag=st.integers(0, 3))
def test_coalesced_batches_survive_a_crash_at_any_record(
    seed: int, batch: int, cut: float, lag: int
) -> None:
    events = _stream(seed, deals=8)
    clean = ChangelogStore()
    for offset, event in enumerate(events):
        _apply(clean, offset, event)
    live: dict = {}
    log: list[tuple[str, Any]] = []
    boundaries: list[tuple[int, int]] = []  # (log length after the batch, next offset)
    for first in range(0, len(events), batch):
        writer = BatchWriter(live)
        for offset in range(first, min(first + batch, len(events))):
            writer.mark("crm.deals", 0, offset)
            _apply(writer, offset, events[offset])
        records = writer.drain()
        assert records[-1][0] == position_key(0, "crm.deals")
        log.extend(records)
        boundaries.append((len(log), min(first + batch, len(events))))
    assert _aggregates(live) == _aggregates(clean)
    kept = int(len(log) * cut)
    recovered = ChangelogStore()
    for key, value in log[:kept]:
        dict.__setitem__(recovered, key, value)
    flushed = [next_offset for length, next_offset in boundaries if length <= kept]
    committed = flushed[-1 - lag] if len(flushed) > lag else 0
    mark = recovered.get(position_key(0, "crm.deals"))
    position = -1 if mark is None else mark["v"]
    assert committed <= position + 1
    from_mark = ChangelogStore()
    dict.update(from_mark, recovered)
    replay = BatchWriter(recovered)
    for offset in range(committed, len(events)):
        _apply(replay, offset, events[offset])
    assert _aggregates(recovered) == _aggregates(clean)
    replay = BatchWriter(from_mark)
    for offset in range(position + 1, len(events)):
        _apply(replay, offset, events[offset])
    assert _aggregates(from_mark) == _aggregates(clean)


def _entity(guard: dict[str, int], value: object = None) -> str:
    return json.dumps({"g": guard, "v": value}, separators=(",", ":"))


@pytest.mark.parametrize(("incoming", "stored", "applied"), [
    (_entity({"d": 5}), None, True),
    (None, _entity({"d": 5}), True),
    (_entity({"d": 7}), _entity({"d": 5}), True),
    (_entity({"d": 5}), _entity({"d": 5}), True),
    (_entity({"d": 3}), _entity({"d": 5}), False),
    (_entity({"c": 3}), _entity({"c": 5, "w": 1}), False),
    (_entity({"c": 5, "w": 1}), _entity({"c": 5}), True),
    (_entity({"c": 9, "w": 1}), _entity({"c": 5, "w": 4}), True),
    ({"g": {"d": 2}, "v": [1, 2]}, {"g": {"d": 4}, "v": [3, 4]}, False),
    ({"g": {"d": 6}, "v": [1, 2]}, {"g": {"d": 4}, "v": [3, 4]}, True),
    ({"v": 10}, {"v": 12}, False),
    ({"v": 12}, {"v": 10}, True),
    ({"v": 12}, {"v": 12}, True),
])
def test_a_changelog_record_older_than_the_stored_one_is_not_restored(
    incoming: object, stored: object, applied: bool,
) -> None:
    assert supersedes(incoming, stored) is applied


@pytest.mark.parametrize("value", [
    {"g": {"crm.deals": 7}, "v": {"name": "Zoë Ødegård", "amount": 1250, "stages": [1, 2]}},
    {"g": {"crm.leads": 3}, "v": {"title": "北京 sales 🚀", "score": 12.5}},
    {"g": {}, "v": {"count": 3, "ratio": 1e-07, "big": 10**15, "none": None}},
])
def test_a_record_is_stored_as_ascii_json_text_that_reads_back_equal(value: Any) -> None:
    text = record_text(value)
    assert text.isascii()
    assert json.loads(text) == value
    assert ", " not in text and '": ' not in text


def test_a_record_with_integer_keys_reads_back_with_string_keys_as_json_writes_them() -> None:
    assert json.loads(record_text({"v": {1: "a", 2: "b"}})) == {"v": {"1": "a", "2": "b"}}


def test_a_batch_keeps_and_sends_aggregates_and_entities_as_text_and_marks_as_dicts() -> None:
    """An aggregate record as dicts took about six times its text's memory (two dicts,
    a list, its integers) and there is about one per open deal."""
    live: dict[str, Any] = {}
    writer = BatchWriter(live)
    _apply(writer, 0, ev("deal.created", "2026-03-02T10:00:00Z", deal_id="d1"))
    writer.mark("crm.deals", 0, 0)
    sent = dict(writer.drain())
    assert sent == live
    kinds = {("mark" if key == position_key(0, "crm.deals") else
              "aggregate" if parse_aggregate_key(key) else "entity"): type(value)
             for key, value in live.items()}
    assert kinds == {"aggregate": str, "entity": str, "mark": dict}


def test_a_fold_over_aggregates_stored_as_dicts_by_an_older_worker_adds_to_them() -> None:
    """State restored from a changelog written before aggregates were kept as text."""
    event = ev("deal.created", "2026-03-02T10:00:00Z", deal_id="d1")
    as_text: dict[str, Any] = {}
    _apply(BatchWriter(as_text), 0, event)
    as_dicts = {key: json.loads(value) if parse_aggregate_key(key) else value
                for key, value in as_text.items()}
    second = ev("deal.created", "2026-03-02T11:00:00Z", deal_id="d2", amount="50")
    _apply(BatchWriter(as_text), 1, second)
    _apply(BatchWriter(as_dicts), 1, second)
    assert _aggregates(as_dicts) == _aggregates(as_text)
    assert any(isinstance(value, dict) for value in as_dicts.values())


@pytest.mark.parametrize(("written_in", "read_in", "conflict"), [
    ("UTC", "UTC", None),
    ("Europe/Oslo", "Europe/Oslo", None),
    ("UTC", "Europe/Oslo", ("crm.deals", 1, "UTC")),
    ("Europe/Oslo", "UTC", ("crm.deals", 1, "Europe/Oslo")),
    ("Europe/Oslo", "Europe/Berlin", ("crm.deals", 1, "Europe/Oslo")),
])
def test_a_position_mark_names_the_zone_its_days_were_folded_in(
        written_in: str, read_in: str, conflict: tuple[str, int, str] | None) -> None:
    live: dict[str, Any] = {}
    writer = BatchWriter(live, written_in)
    writer.mark("crm.deals", 1, 41)
    assert dict(writer.drain())[position_key(1, "crm.deals")]["v"] == 41
    owned = [("crm.deals", 0), ("crm.deals", 1)]  # partition 0 has no mark yet
    assert zone_conflict(live, owned, read_in) == conflict


def test_state_written_before_time_zones_existed_reads_as_utc() -> None:
    older = {position_key(0, "crm.deals"): {"v": 7}}
    assert zone_conflict(older, [("crm.deals", 0)], "UTC") is None
    assert zone_conflict(older, [("crm.deals", 0)], "Asia/Tokyo") == ("crm.deals", 0, "UTC")
