"""End to end on real servers: bad input is dead-lettered, real CRM data is reproduced."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from stream_app.adapters.kafka import client_kwargs
from stream_app.config import Settings
from stream_app.events.schema_export import INVALID_EXAMPLES, VALID_EXAMPLES
from stream_app.importers.maven_crm import import_maven_crm
from tests.integration.conftest import last_time, small_stream
from tests.integration.harness import Worker, assert_matches, produce, settled, worker_settings
from tests.reference import expected_metrics

pytestmark = pytest.mark.e2e

MAVEN = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "maven-crm"


async def _dead_letters(settings: Settings, count: int) -> list[dict]:
    consumer = AIOKafkaConsumer(settings.topic_dead_letters, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None,
                                **client_kwargs(settings))
    await consumer.start()
    out: list[dict] = []
    try:
        while len(out) < count:
            batch = await consumer.getmany(timeout_ms=2000)
            if not batch:
                break
            for records in batch.values():
                for record in records:
                    out.append({"value": record.value,
                                "headers": {k: v.decode() for k, v in record.headers}})
    finally:
        await consumer.stop()
    return out


def _bad_messages(settings: Settings) -> list[tuple[str, bytes | None, bytes, str]]:
    """(topic, key, value, expected reason) for every kind of bad input."""
    deals = settings.topic_deals
    bad = [(deals, b"x", b"\xff\xfe not utf-8", "not_utf8"),
           (deals, b"x", b"{not json", "not_json"),
           (deals, b"x", b"[1, 2, 3]", "not_an_object"),
           (deals, b"x", b"[" * 50_000 + b"]" * 50_000, "too_large"),
           (deals, b"x", json.dumps({"a": "b" * 70_000}).encode(), "too_large"),
           (settings.topic_customers, b"D-1001", json.dumps(
               VALID_EXAMPLES["deal.won"]).encode(), "wrong_topic")]
    for _name, (reason, event) in INVALID_EXAMPLES.items():
        key = str(event.get("data", {}).get("deal_id", "x")).encode()
        bad.append((deals, key, json.dumps(event).encode(), reason))
    valid = json.loads(json.dumps(INVALID_EXAMPLES["negative-amount"][1]))
    valid["data"]["amount"] = "10"
    bad.append((deals, b"not-the-deal-id", json.dumps(valid).encode(), "wrong_key"))
    return bad


def test_bad_input_goes_to_dead_letters_and_valid_events_all_count(
    base_settings: Settings, tmp_path: Path
) -> None:
    from aiokafka import AIOKafkaProducer

    events = small_stream(seed=21, months=2)
    bad = _bad_messages(base_settings)

    async def send() -> None:
        producer = AIOKafkaProducer(max_request_size=4 * 1024 * 1024,
                                    **client_kwargs(base_settings))
        await producer.start()
        try:
            step = max(len(events) // len(bad), 1)
            for i, event in enumerate(events):
                if i % step == 0 and bad:
                    topic, key, value, _ = bad[(i // step) % len(bad)]
                    await producer.send_and_wait(topic, value=value, key=key)
                topic = (base_settings.topic_customers if event["type"].startswith("customer.")
                         else base_settings.topic_deals)
                key = event["data"].get("deal_id") or event["data"]["account_id"]
                await producer.send(topic, value=json.dumps(event).encode(), key=key.encode())
        finally:
            await producer.stop()

    worker = Worker(worker_settings(base_settings), tmp_path / "worker.log").start()
    try:
        asyncio.run(send())
        step = max(len(events) // len(bad), 1)
        sent_bad = [bad[(i // step) % len(bad)] for i in range(0, len(events), step)]
        as_of = last_time(events)
        [samples] = settled([worker], base_settings.partitions, as_of)
        assert_matches(expected_metrics(events, as_of), samples)
        rejected = {dict(labels)["reason"]: v for (name, labels), v in samples.items()
                    if name == "pulse_events_rejected_total"}
        want: dict[str, float] = {}
        for *_, reason in sent_bad:
            want[reason] = want.get(reason, 0) + 1
        assert rejected == want
        letters = asyncio.run(_dead_letters(base_settings, len(sent_bad)))
        assert len(letters) == len(sent_bad)
        assert sorted(letter["headers"]["pulse-reason"] for letter in letters) == sorted(
            r for *_, r in sent_bad)
        originals = {value for _, _, value, _ in sent_bad}
        for letter in letters:
            assert letter["value"] in originals
            assert letter["headers"]["pulse-detail"]
            assert letter["headers"]["pulse-topic"] in (base_settings.topic_deals,
                                                       base_settings.topic_customers)
            assert int(letter["headers"]["pulse-offset"]) >= 0
        detail = {letter["headers"]["pulse-reason"]: letter["headers"]["pulse-detail"]
                  for letter in letters}
        assert detail["missing_field"] == "data.team: required field is missing"
        assert "data.amount" in detail["negative_amount"]
    finally:
        worker.stop()


@pytest.mark.skipif(not MAVEN.exists(), reason=f"dataset folder {MAVEN} not present")
def test_maven_crm_replay_reproduces_the_published_figures(
    base_settings: Settings, tmp_path: Path
) -> None:
    events, report = import_maven_crm(MAVEN)
    assert report.quirks["product 'GTXPro' read as 'GTX Pro'"] == 1480
    worker = Worker(worker_settings(base_settings), tmp_path / "worker.log").start()
    try:
        produce(base_settings, events)
        as_of = last_time(events)
        [s] = settled([worker], base_settings.partitions, as_of, timeout=400)
        everything = (("team", "all"), ("window", "all"))
        assert s[("pulse_deals_won", everything)] == 4238
        assert s[("pulse_deals_lost", everything)] == 2473
        assert round(s[("pulse_win_rate_ratio", everything)], 4) == 0.6315
        assert s[("pulse_win_rate_ratio", everything)] == pytest.approx(4238 / 6711, rel=1e-9)
        assert s[("pulse_won_amount", everything)] == 10_005_534
        assert round(s[("pulse_average_deal_size", everything)], 2) == 2360.91
        assert round(s[("pulse_sales_cycle_seconds", everything)] / 86400, 2) == 51.78
        assert s[("pulse_window_open_deals", everything)] == 2089
        assert_matches(expected_metrics(events, as_of), s)
    finally:
        worker.stop()
