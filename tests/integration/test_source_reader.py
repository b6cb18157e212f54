"""The reader that puts back messages a batch skipped, against the embedded broker: it
returns exactly the offsets asked for, with their keys, values and headers, and fails
loudly when the log does not reach them."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream_app.adapters.kafka import client_kwargs
from stream_app.adapters.source_reader import SourceReader, SourceReadError
from stream_app.config import Settings

TOPIC = "reread-test"
MESSAGES = 10


async def _fill(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        for index in range(MESSAGES):
            await producer.send(TOPIC, value=f"value-{index}".encode(),
                                key=f"key-{index}".encode(), partition=0,
                                headers=[("ce_id", f"id-{index}".encode())])
        await producer.flush()
    finally:
        await producer.stop()


def test_reads_the_offsets_asked_for_and_fails_when_the_log_ends_before_them(
        base_settings: Settings) -> None:
    async def run() -> None:
        await _fill(base_settings)
        reader = SourceReader(base_settings, timeout_seconds=3.0)
        try:
            middle = await reader.read(TOPIC, 0, 3, 6)
            assert [e.message.offset for e in middle] == [3, 4, 5, 6]
            assert [(e.message.key, e.message.value, e.message.headers) for e in middle] == [
                (f"key-{i}".encode(), f"value-{i}".encode(), [("ce_id", f"id-{i}".encode())])
                for i in range(3, 7)]
            assert {(e.message.topic, e.message.partition) for e in middle} == {(TOPIC, 0)}
            tail = await reader.read(TOPIC, 0, MESSAGES - 1, MESSAGES - 1)
            assert [e.message.offset for e in tail] == [MESSAGES - 1]
            with pytest.raises(SourceReadError, match=f"{TOPIC}\\[0\\] offsets 8-12"):
                await reader.read(TOPIC, 0, 8, 12)
        finally:
            await reader.close()

    asyncio.run(run())
