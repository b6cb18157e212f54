"""Pins every Faust internal that ``stream_app.adapters.faust_compat`` uses against the
installed faust-streaming: an upgrade that renames or reshapes one fails here."""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Iterator, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiohttp import web
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from stream_app.adapters import faust_compat


@pytest.fixture
def app() -> Iterator[faust.App]:
    yield faust.App("compat-pin", broker="kafka://127.0.0.1:1", store="memory://",
                    autodiscover=False)


def test_the_memory_store_keeps_a_plain_dict_its_reads_go_through(app: faust.App) -> None:
    table = app.Table("pinned", default=None)
    data = faust_compat.store_dict(table)
    assert type(data) is dict
    data["k"] = {"v": 1}
    assert table.data.get("k") == {"v": 1} and "k" in table.data


def test_a_recovery_applies_changelog_batches_through_the_table_attribute(
    app: faust.App,
) -> None:
    source = inspect.getsource(Recovery)
    assert "table.apply_changelog_batch(" in source
    table = app.Table("pinned", default=None)
    seen: list[int] = []

    def wrap(original: faust_compat.ChangelogApply) -> faust_compat.ChangelogApply:
        def apply(batch: Sequence[Any]) -> None:
            seen.append(len(batch))
            original(batch)
        return apply

    faust_compat.wrap_changelog_apply(table, wrap)
    table.apply_changelog_batch([])
    assert seen == [0]


def test_the_assignor_lists_active_assignments_as_topic_partitions(app: faust.App) -> None:
    assert inspect.signature(app.assignor.assigned_actives).parameters == {}
    assert faust_compat.assigned_actives(app) == set()


def test_the_consumer_keeps_committed_offsets_per_topic_partition(app: faust.App) -> None:
    committed = app.consumer._committed_offset
    tp = TP("crm.deals", 0)
    assert committed[tp] is None
    committed[tp] = 41
    assert faust_compat.committed_offset(app, tp) == 41


def test_the_recovery_reports_progress_and_positions(app: faust.App) -> None:
    recovery = app.tables.recovery
    assert faust_compat.recovery_progress(app) == (False, 0)
    assert isinstance(recovery.active_offsets, Mapping)
    assert isinstance(recovery.active_highwaters, Mapping)
    tp = TP("pulse-deals-changelog", 2)
    recovery.active_offsets[tp] = 7
    recovery.active_highwaters[tp] = 9
    assert faust_compat.recovery_positions(app) == [(tp, 7, 9)]


def test_the_recovery_stamps_its_start_and_end(app: faust.App) -> None:
    recovery = app.tables.recovery
    assert Recovery._recovery_started_at is None and Recovery._recovery_ended_at is None
    assert faust_compat.last_recovery_seconds(app) is None
    recovery._set_recovery_started()
    recovery._set_recovery_ended()
    seconds = faust_compat.last_recovery_seconds(app)
    assert seconds is not None and 0 <= seconds < 5


def test_the_high_watermark_patch_replaces_the_driver_lookup() -> None:
    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    was = {name: thread_cls.__dict__[name] for name in
           ("_highwaters", "_pulse_fixed", "_pulse_original_highwaters")
           if name in thread_cls.__dict__}
    original = was.get("_pulse_original_highwaters", was["_highwaters"])
    thread_cls._highwaters = original  # type: ignore[method-assign]
    thread_cls._pulse_fixed = False  # type: ignore[attr-defined]
    assert inspect.iscoroutinefunction(original)
    assert list(inspect.signature(original).parameters) == ["self", "partitions"]
    assert "self._highwaters" in inspect.getsource(thread_cls.highwaters)
    fetched: list[Mapping[Any, int | None]] = []

    async def fetch(listed: Mapping[Any, int | None]) -> dict[Any, int | None]:
        fetched.append(listed)
        return {tp: (offset or 0) + 10 for tp, offset in listed.items()}

    async def end_offsets(partitions: Any) -> dict[Any, int]:
        return {tp: 5 for tp in partitions}

    try:
        faust_compat.install_high_watermark_fix(fetch)
        faust_compat.install_high_watermark_fix(fetch)
        fake = SimpleNamespace(
            consumer=SimpleNamespace(in_transaction=False),
            _ensure_consumer=lambda: SimpleNamespace(end_offsets=end_offsets))
        tp = TP("pulse-deals-changelog", 0)
        got = asyncio.run(thread_cls._highwaters(fake, [tp]))  # type: ignore[arg-type]
        assert got == {tp: 15} and fetched == [{tp: 5}]
    finally:
        for name in ("_pulse_fixed", "_pulse_original_highwaters"):
            if name in thread_cls.__dict__:
                delattr(thread_cls, name)
        for name, value in was.items():
            setattr(thread_cls, name, value)


def test_a_seek_runs_on_the_consumer_thread_and_resets_the_read_offset(app: faust.App) -> None:
    consumer = app.consumer
    # Why: Faust's own seek calls aiokafka's from the caller's thread.
    assert "self._thread.seek(" in inspect.getsource(type(consumer)._seek)
    assert "_read_offset" in inspect.getsource(type(consumer).seek)
    thread = consumer._thread
    calls: list[tuple[Any, ...]] = []

    async def call_thread(fun: Any, *args: Any) -> None:
        calls.append((fun, *args))

    thread.call_thread = call_thread  # type: ignore[method-assign]
    tp = TP("crm.customers", 2)
    consumer._read_offset[tp] = 17
    asyncio.run(faust_compat.seek(app, tp, 0))
    assert calls == [(thread.seek, tp, 0)]
    assert consumer._read_offset[tp] is None
    assert inspect.signature(type(thread).seek).parameters.keys() == {"self", "partition",
                                                                      "offset"}


def test_a_new_assignment_marks_the_running_recovery_superseded(app: faust.App) -> None:
    recovery = app.tables.recovery
    assert "self.signal_recovery_start.set()" in inspect.getsource(Recovery.on_rebalance)
    assert "Recovery rebalancing again" in inspect.getsource(Recovery.on_recovery_completed)
    assert faust_compat.recovery_superseded(app) is False
    recovery.signal_recovery_start.set()
    assert faust_compat.recovery_superseded(app) is True
    recovery.signal_recovery_start.clear()
    assert faust_compat.recovery_superseded(app) is False


def test_broker_connections_are_read_from_the_aiokafka_client_of_faust_s_consumer_thread(
        app: faust.App) -> None:
    import aiokafka.client
    import aiokafka.conn

    assert "self._consumer = self._create_consumer(" in inspect.getsource(
        faust_aiokafka.AIOKafkaConsumerThread)
    assert "self._conns = {}" in inspect.getsource(aiokafka.client.AIOKafkaClient.__init__)
    assert inspect.signature(aiokafka.conn.AIOKafkaConnection.connected).parameters.keys() == {
        "self"}
    assert faust_compat.broker_connections(app) is None  # consumer not started
    conns = {1: SimpleNamespace(connected=lambda: True),
             2: SimpleNamespace(connected=lambda: False)}
    started = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(
        _consumer=SimpleNamespace(_client=SimpleNamespace(_conns=conns)))))
    assert faust_compat.broker_connections(started) == 1  # type: ignore[arg-type]


def test_the_completing_recovery_s_generation_is_noted_before_the_table_callbacks(
        app: faust.App) -> None:
    original = getattr(Recovery, "_pulse_original_on_recovery_completed",
                       Recovery.on_recovery_completed)
    assert "table.on_recovery_completed(" in inspect.getsource(original)
    source = inspect.getsource(Recovery)  # _restart_recovery is a ServiceTask
    assert "generation_id = self._generation_id" in source
    assert "self.on_recovery_completed)(generation_id)" in source
    assert "consumer_generation_id" in faust.types.app.AppT.__annotations__
    faust_compat.install_recovery_generation()
    faust_compat.install_recovery_generation()  # idempotent
    assert Recovery._pulse_original_on_recovery_completed is original  # type: ignore[attr-defined]

    seen: list[int] = []

    async def callbacks(self: Any, generation_id: int = 0) -> None:
        seen.append(self._pulse_generation)

    recovery = SimpleNamespace()
    patched = Recovery.on_recovery_completed
    Recovery._pulse_original_on_recovery_completed = callbacks  # type: ignore[attr-defined]
    try:
        asyncio.run(patched(recovery, 7))  # type: ignore[arg-type]
    finally:
        Recovery._pulse_original_on_recovery_completed = original  # type: ignore[attr-defined]
    assert seen == [7]

    tables_recovery = app.tables.recovery  # type: ignore[attr-defined]
    assert not faust_compat.recovery_stale(app)
    tables_recovery._pulse_generation = 1
    app.consumer_generation_id = 2
    assert faust_compat.recovery_stale(app)  # generation 1's recovery under generation 2
    tables_recovery._pulse_generation = 2
    assert not faust_compat.recovery_stale(app)


def test_the_changelog_loader_runs_before_faust_reads_and_without_its_timeout(
        app: faust.App) -> None:
    source = inspect.getsource(Recovery)  # _restart_recovery is a ServiceTask
    assert "T(self._build_offsets)(\n                        consumer, assigned_active_tps, " \
           "active_offsets, \"active\"" in source
    assert "timeout=self.app.conf.broker_request_timeout" in source
    original_build = getattr(Recovery, "_pulse_original_build_offsets", Recovery._build_offsets)
    assert list(inspect.signature(original_build).parameters) == [
        "self", "consumer", "tps", "destination", "title"]
    assert "max(last_value, new_value)" in inspect.getsource(original_build)
    original_wait = getattr(Recovery, "_pulse_original_wait", Recovery._wait)
    assert list(inspect.signature(original_wait).parameters) == ["self", "coro", "timeout"]
    recovery = app.tables.recovery  # type: ignore[attr-defined]
    assert isinstance(recovery.tp_to_table, Mapping)
    table = app.Table("pinned", default=None)
    loaded, empty = TP("pinned-changelog", 0), TP("pinned-changelog", 1)
    calls: list[tuple[Any, ...]] = []

    async def loader(tables: Any, highwaters: Any, positions: Any) -> None:
        calls.append((dict(tables), dict(highwaters)))
        positions[loaded] = 41

    faust_compat.install_changelog_loader(app, loader)
    faust_compat.install_changelog_loader(app, loader)  # idempotent
    assert Recovery._pulse_original_build_offsets is original_build  # type: ignore[attr-defined]
    recovery.tp_to_table.update({loaded: table, empty: table})
    recovery.active_highwaters.update({loaded: 41, empty: -1})
    recovery.active_offsets.update({loaded: None, empty: None})

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return {tp: 0 for tp in tps}

    consumer = SimpleNamespace(earliest_offsets=earliest_offsets)
    waited: list[Any] = []

    async def wait(self: Any, coro: Any, timeout: Any = None) -> None:
        waited.append(timeout)
        await coro

    Recovery._pulse_original_wait = wait  # type: ignore[attr-defined]
    try:
        # the recovery loop's call, as in _restart_recovery
        asyncio.run(recovery._wait(recovery._build_offsets(
            consumer, {loaded, empty}, recovery.active_offsets, "active"), timeout=90.0))
        asyncio.run(recovery._wait(asyncio.sleep(0), timeout=90.0))
    finally:
        Recovery._pulse_original_wait = original_wait  # type: ignore[attr-defined]
    assert calls == [({loaded: table, empty: table}, {loaded: 41, empty: -1})]
    assert recovery.active_offsets == {loaded: 41, empty: -1}  # Faust reads after 41
    assert set(recovery._active_events_received_at) == {loaded}  # no "no event" warning
    assert "active_events_received_at" in inspect.getsource(Recovery._verify_remaining)
    assert waited == [None, 90.0]  # only the loading step runs without the timeout


def test_the_memory_store_notes_each_key_s_partition_and_drops_revoked_ones(
        app: faust.App) -> None:
    table = app.Table("pinned", default=None)
    owners = faust_compat.key_partitions(table)
    assert type(owners) is dict and not owners
    message = SimpleNamespace(partition=3, value=b"x")
    table.data.apply_changelog_batch(
        [SimpleNamespace(key="restored", value={"v": 1}, message=message)],
        to_key=lambda k: k, to_value=lambda v: v)
    assert owners == {"restored": 3}
    faust_compat.store_dict(table)["written"] = {"v": 2}
    owners["written"] = 1  # what the pipeline notes for the records it writes
    asyncio.run(table.data.on_recovery_completed({TP("pinned-changelog", 3)}, set()))
    assert faust_compat.store_dict(table) == {"restored": {"v": 1}}  # partition 1 dropped
    assert owners == {"restored": 3}


def test_the_worker_consumer_fetches_with_the_configured_longest_wait(app: faust.App) -> None:
    """Faust builds its group consumer with ``fetch_max_wait_ms=1500``, and Tansu holds
    a fetch for half of that even when records arrive meanwhile (0.45 s after a send
    300 ms into a fetch, 3 ms at 100 ms): a worker saw new events ~1.3 s late."""
    import aiokafka.consumer.consumer as aiokafka_consumer

    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(
        aiokafka_consumer.AIOKafkaConsumer.start)
    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    was = dict(thread_cls.__dict__)

    async def built() -> int:
        consumer = app.consumer._thread._create_worker_consumer(app.consumer.transport)
        wait: int = consumer._fetch_max_wait_ms
        await consumer.stop()
        return wait

    try:
        faust_compat.install_fetch_max_wait(0.1)
        faust_compat.install_fetch_max_wait(0.25)
        assert asyncio.run(built()) == 250
    finally:
        for name in ("_create_worker_consumer", "_pulse_original_create_worker_consumer",
                     "_pulse_fetch_max_wait_ms"):
            if name in was:
                setattr(thread_cls, name, was[name])
            elif name in thread_cls.__dict__:
                delattr(thread_cls, name)


def test_send_whole_returns_once_the_connection_holds_no_byte_of_the_response() -> None:
    """aiohttp (Faust's web): the response is sent before the handler returns, and only
    once; ``send_whole`` returns when the transport's write buffer is empty, not at
    aiohttp's usual low-water mark (a socket with a small send buffer keeps the rest)."""
    body = bytes(range(256)) * 4096  # 1 MiB
    buffered_after: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        request.transport.get_extra_info("socket").setsockopt(  # type: ignore[union-attr]
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        response = web.Response(body=body)
        await faust_compat.send_whole(request, response)
        buffered_after.append(request.transport.get_write_buffer_size())  # type: ignore[union-attr]
        return response

    async def exchange() -> bytes:
        application = web.Application()
        application.router.add_get("/", handler)
        runner = web.AppRunner(application)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: pulse\r\nConnection: close\r\n\r\n")
            received = bytearray()
            while chunk := await reader.read(2048):
                received += chunk
                await asyncio.sleep(0)
            writer.close()
            return bytes(received)
        finally:
            await runner.cleanup()

    received = asyncio.run(exchange())
    head, _, sent = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and sent == body
    assert buffered_after == [0]
