"""The batch pipeline folds each partition in offset order, whatever order Faust delivers.

Folds are guarded by the offset of the last event applied to an entity, so a later
message folded first makes the entity skip the earlier one for good. Faust can deliver
a message fetched before a rebalance's seek ahead of the messages the seek reads again
(the three-worker replacement test lost one ``quota.set`` that way in a CI run). Here a
batch hands the pipeline offset 2 of a partition whose state holds offset 0: the
pipeline must read offset 1 again (from a stand-in for the broker's log) and fold it
first. No Kafka here: the pipeline's own logic, with a real Faust table in memory.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

import faust
import pytest

from stream_app.adapters.label_registry import LabelRegistry
from stream_app.adapters.pipeline import PipelineContext, SourcePipeline
from stream_app.adapters.redis_store import RedisStore
from stream_app.adapters.source_reader import SourceEvent, SourceMessage
from stream_app.config import Settings, contract_rules, pricing
from stream_app.kpi.fold import entity_key
from stream_app.kpi.kinds import OWNER_ENTITY
from stream_app.kpi.owners import OwnerState
from stream_app.kpi.scoring import load_rules
from stream_app.ops import OperationalStats
from stream_app.sources.catalogue import catalogue

SETTINGS = Settings(clock="event", partitions=1)
TOPIC = SETTINGS.topic_quotas
OWNER = "east-rep-2"


def _quota(index: int, period: str, amount: str) -> SourceEvent:
    event = {"specversion": "1.0", "id": f"quota-{index}", "source": "crm/test",
             "type": "quota.set", "time": "2026-10-01T01:00:00Z",
             "data": {"owner_id": OWNER, "team": "East", "period": period,
                      "amount": amount, "currency": "USD"}}
    return SourceEvent(SourceMessage(TOPIC, 0, index, OWNER.encode(),
                                     json.dumps(event).encode()))


LOG = [_quota(0, "2026-09", "45244.17"), _quota(1, "2026-10", "90961.32"),
       _quota(2, "2026-Q4", "129505.66")]


class _Redis:
    """Dedup by id as the Redis script does (the first position of an id is folded, and
    again when read again there); every label value admitted."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    async def check_many(self, items: list[tuple[str, str]]) -> list[str]:
        verdicts = []
        for event_id, position in items:
            first = self.seen.get(event_id)
            if first is None:
                self.seen[event_id] = position
            verdicts.append("new" if first is None else
                            "replay" if first == position else "duplicate")
        return verdicts

    async def admit_labels(self, label: str, values: list[str], cap: int) -> dict[str, bool]:
        return dict.fromkeys(values, True)


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    async def send(self, *message: Any) -> asyncio.Future[Any]:
        self.sent.append(message)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _Log:
    """The partition's log, read again by offset (:class:`MissingMessages`)."""

    def __init__(self, messages: Iterable[SourceEvent]):
        self.messages = list(messages)
        self.asked: list[tuple[str, int, int, int]] = []

    async def read(self, topic: str, partition: int, first: int, last: int
                   ) -> list[SourceEvent]:
        self.asked.append((topic, partition, first, last))
        return [m for m in self.messages if m.message.topic == topic
                and m.message.partition == partition and first <= m.message.offset <= last]


def _pipeline(missing: _Log | None) -> SourcePipeline:
    spec = next(s for s in catalogue(SETTINGS, pricing(SETTINGS),
                                     load_rules(SETTINGS.lead_scoring_file))
                if TOPIC in s.topics)
    app = faust.App("order-test", broker="kafka://127.0.0.1:9", store="memory://",
                    autodiscover=False)
    table = app.Table(spec.table_name, default=None, partitions=1)
    redis = cast(RedisStore, _Redis())
    producer = _Producer()
    context = PipelineContext(
        rules=contract_rules(SETTINGS), redis=redis,
        labels=LabelRegistry(redis, SETTINGS.label_cap), stats=OperationalStats(),
        producer=lambda: producer, dead_letter_topic=SETTINGS.topic_dead_letters,
        late_grace_ms=7 * 86_400_000, missing=missing)
    return SourcePipeline(spec, table, context)


def _quota_periods(pipeline: SourcePipeline) -> Mapping[str, str]:
    text = pipeline.table.data[entity_key(OWNER_ENTITY, OWNER)]
    state = OwnerState.from_json(json.loads(text)["v"])
    return {quota[0]: quota[4] for quota in state.quotas}


def _run(pipeline: SourcePipeline, *batches: list[SourceEvent]) -> None:
    async def run() -> None:
        for batch in batches:
            await pipeline.run(cast(Any, batch))

    asyncio.run(run())


def test_a_message_delivered_ahead_of_an_earlier_one_does_not_lose_the_earlier_one() -> None:
    log = _Log(LOG)
    pipeline = _pipeline(log)
    # offset 0; then offset 2 (fetched before a seek); then what the seek reads again
    _run(pipeline, [LOG[0]], [LOG[2]], [LOG[1], LOG[2]])
    assert _quota_periods(pipeline) == {"2026-09": "45244.17", "2026-10": "90961.32",
                                        "2026-Q4": "129505.66"}
    assert log.asked == [(TOPIC, 0, 1, 1)]
    assert pipeline._context.stats.reread == {TOPIC: 1}


@pytest.mark.parametrize(("batches", "read_again"), [
    pytest.param([[0, 2]], [(1, 1)], id="a gap inside one batch"),
    pytest.param([[0, 1], [0, 1, 2], [2]], [], id="offset order and replays"),
    pytest.param([[1, 2]], [(0, 0)], id="a partition never folded starts at offset 0"),
])
def test_every_quota_is_held_and_only_skipped_offsets_are_read_again(
        batches: list[list[int]], read_again: list[tuple[int, int]]) -> None:
    log = _Log(LOG)
    pipeline = _pipeline(log)
    _run(pipeline, *([LOG[offset] for offset in batch] for batch in batches))
    assert set(_quota_periods(pipeline)) == {"2026-09", "2026-10", "2026-Q4"}
    assert log.asked == [(TOPIC, 0, first, last) for first, last in read_again]
