"""Kafka clients that never got going (the broker refused them, or Ctrl-C came while they
connected, as in `stream-app replay` or the demo's live trickle) are closed: no
"Unclosed AIOKafkaProducer" or "Unclosed AIOKafkaConsumer" error at exit."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import Iterator

import pytest
from aiokafka.errors import KafkaConnectionError

from stream_app.adapters.kafka import OutsideConsumer
from stream_app.adapters.processes import free_port
from stream_app.config import Settings
from stream_app.tools.replay import produce_events

EVENT = {"specversion": "1.0", "id": "e-1", "source": "crm/test", "type": "deal.created",
         "time": "2026-10-01T00:00:00Z", "data": {"deal_id": "d-1"}}


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


async def _no_unclosed_client(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
        await asyncio.sleep(0)
    assert "Unclosed AIOKafka" not in caplog.text


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_a_replay_the_broker_refuses_closes_its_producer(
        caplog: pytest.LogCaptureFixture) -> None:
    nobody = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(KafkaConnectionError):
        await produce_events(nobody, [EVENT], show_progress=False)
    await _no_unclosed_client(caplog)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_a_replay_cancelled_while_connecting_closes_its_producer(
        silent_broker: str, caplog: pytest.LogCaptureFixture) -> None:
    task = asyncio.create_task(produce_events(Settings(kafka_bootstrap=silent_broker),
                                              [EVENT], show_progress=False))
    await asyncio.sleep(0.5)  # connecting: no answer comes
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del task
    await _no_unclosed_client(caplog)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_an_outside_consumer_the_broker_refuses_is_closed(
        caplog: pytest.LogCaptureFixture) -> None:
    reader = OutsideConsumer(Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}"))
    with pytest.raises(KafkaConnectionError):
        await reader.started()
    await reader.close()
    await _no_unclosed_client(caplog)
