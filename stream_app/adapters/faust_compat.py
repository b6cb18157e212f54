"""Every Faust (faust-streaming) internal the worker relies on, in one place.

Faust offers no public way to read a memory store's dict, the offsets a consumer
committed, the partitions assigned to this worker, or the progress of a table
recovery, nor to see the changelog records a recovery applies or to correct the high
watermarks it reads. Each accessor and patch below names the private attribute it
uses; ``tests/unit/test_faust_compat.py`` pins every one against the installed
faust-streaming, so an upgrade that renames or reshapes one fails there, loudly,
before a worker exports wrong numbers.
"""

from __future__ import annotations

__all__ = [
    "ChangelogApply",
    "Table",
    "assigned_actives",
    "broker_connections",
    "committed_offset",
    "faust_worker",
    "install_changelog_loader",
    "install_fetch_max_wait",
    "install_high_watermark_fix",
    "install_recovery_generation",
    "key_partitions",
    "last_recovery_seconds",
    "recovery_positions",
    "recovery_progress",
    "recovery_stale",
    "recovery_superseded",
    "seek",
    "send_whole",
    "store_dict",
    "wrap_changelog_apply",
]

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import faust
from faust.types import TP, EventT, TableT

#: A table of the worker (keys are str, values JSON records).
Table = TableT[Any, Any]
#: What a table does with a batch of changelog records read during recovery.
ChangelogApply = Callable[[Sequence[EventT[Any]]], None]
#: Reads active changelog partitions before Faust does: given each partition's table and
#: its last offset (high watermark - 1, or -1 when empty), moves ``positions[tp]`` to the
#: last offset applied as it goes.
ChangelogLoader = Callable[[Mapping[TP, Table], Mapping[TP, int], MutableMapping[TP, Any]],
                           Awaitable[None]]


def _internals(component: object) -> Any:
    """A Faust component, to reach the private attributes below (untyped by design:
    each use is pinned by a test instead)."""
    return component


async def send_whole(request: Any, response: Any) -> None:
    """Send ``response`` (Faust's web: aiohttp's) to ``request``'s client now and return
    only once every byte left the process (the connection's write buffer empty: its
    high-water mark set to 0, so aiohttp's drain waits for it), so what the handler does
    next does not delay the client. Faust's web hands the handler aiohttp's own request;
    aiohttp sends nothing again for a response already prepared and ended, and meets a
    client gone meanwhile again when it ends the response itself (as for any handler)."""
    transport = request.transport
    if transport is not None:
        transport.set_write_buffer_limits(high=0)
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        return


def faust_worker(app: faust.App, loglevel: str, logging_config: dict[str, Any]) -> faust.Worker:
    """A Faust worker for ``app`` that logs through ``logging_config`` at ``loglevel``.

    Without its terminal spinner (``Worker.spinner``): at WARNING and above, Faust hangs
    the spinner on the root logger and sets that logger to DEBUG, so every debug line of
    aiokafka and Faust (one per message sent) is built and then dropped.
    """
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, logging_config=logging_config)
    _internals(worker).spinner = None
    return worker


def store_dict(table: Table) -> MutableMapping[Any, Any]:
    """The dict behind a table's store (``Store.data`` of the memory store), read and
    written without Faust's per-key changelog path."""
    data: MutableMapping[Any, Any] = table.data
    return getattr(data, "data", data)


def key_partitions(table: Table) -> MutableMapping[Any, int]:
    """The partition each key of a table's memory store was last written to
    (``Store._key_partition``): Faust fills it for changelog records it applies and, when
    a recovery completes, drops the keys of partitions no longer assigned; with local
    checkpoints on, the pipeline fills it for the records it writes."""
    partitions: MutableMapping[Any, int] = _internals(table.data)._key_partition
    return partitions


def wrap_changelog_apply(table: Table,
                         wrap: Callable[[ChangelogApply], ChangelogApply]) -> None:
    """Route the changelog batches a recovery (or a standby) applies to ``table``
    through ``wrap(original)``: the recovery calls ``table.apply_changelog_batch``."""
    _internals(table).apply_changelog_batch = wrap(table.apply_changelog_batch)


def assigned_actives(app: faust.App) -> set[TP]:
    """Topic partitions actively assigned to this worker (``assignor.assigned_actives``);
    empty before the first assignment."""
    try:
        return set(app.assignor.assigned_actives())
    except Exception:
        return set()


def broker_connections(app: faust.App) -> int | None:
    """Open connections of this worker's consumer client to brokers (aiokafka's
    ``AIOKafkaClient._conns``, reached through Faust's ``AIOKafkaConsumerThread._consumer``);
    None before the consumer started."""
    thread = getattr(_internals(app.consumer), "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    client = getattr(consumer, "_client", None)
    if client is None:
        return None
    return sum(1 for conn in list(client._conns.values()) if conn.connected())


def committed_offset(app: faust.App, tp: TP) -> int | None:
    """The offset this worker last committed for ``tp`` (``Consumer._committed_offset``;
    Faust keeps no public accessor)."""
    offset: int | None = _internals(app.consumer)._committed_offset.get(tp)
    return offset


async def seek(app: faust.App, tp: TP, offset: int) -> None:
    """Seek ``tp`` to ``offset`` on the consumer's own thread.

    Faust's ``Consumer.seek`` calls aiokafka's ``seek`` from the caller's thread while
    the fetcher runs on the consumer thread (``AIOKafkaConsumerThread``); the two race
    on the fetcher's record buffer, and a worker crashed with ``KeyError`` in
    ``Fetcher.fetched_records``. This runs the seek through ``call_thread`` and then
    resets Faust's read offset as ``Consumer.seek`` does (``Consumer._read_offset``).
    """
    consumer = _internals(app.consumer)
    thread = consumer._thread
    await thread.call_thread(thread.seek, tp, offset)
    consumer._read_offset[tp] = offset if offset else None


def recovery_progress(app: faust.App) -> tuple[bool, int]:
    """(a table recovery is running, changelog records it still has to read)."""
    recovery = _internals(app.tables).recovery
    running = bool(recovery.in_recovery)
    return running, recovery.active_remaining_total() if running else 0


def recovery_superseded(app: faust.App) -> bool:
    """Whether a new assignment arrived while the finishing recovery ran
    (``Recovery.signal_recovery_start`` is set until its loop restarts).

    Faust then still calls the tables' recovery callbacks, for an assignment that is no
    longer current and with changelogs maybe half read, and only afterwards logs
    "Recovery rebalancing again" and restarts; callbacks must not trust that state.
    """
    return bool(_internals(app.tables).recovery.signal_recovery_start.is_set())


def install_recovery_generation() -> None:
    """Patch ``Recovery.on_recovery_completed(generation_id)`` to note the consumer
    generation whose recovery is completing (``Recovery._pulse_generation``), before the
    tables' recovery callbacks run; idempotent."""
    from faust.tables.recovery import Recovery

    if getattr(Recovery, "_pulse_generation_noted", False):
        return
    patched = _internals(Recovery)
    patched._pulse_original_on_recovery_completed = Recovery.on_recovery_completed

    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        self._pulse_generation = generation_id
        await Recovery._pulse_original_on_recovery_completed(  # type: ignore[attr-defined]
            self, generation_id)  # set just above: the original, kept for the pin test

    patched.on_recovery_completed = on_recovery_completed
    patched._pulse_generation_noted = True


def install_fetch_max_wait(seconds: float) -> None:
    """Patch Faust's group consumer to wait at most ``seconds`` for a fetch to fill
    (``AIOKafkaConsumerThread._create_worker_consumer`` hard-codes 1.5 s; aiokafka reads
    ``AIOKafkaConsumer._fetch_max_wait_ms`` when it starts). Kafka answers a fetch as soon
    as a record arrives; Tansu holds it for half the wait, which delayed every new event.
    The last call's value applies."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    patched = _internals(AIOKafkaConsumerThread)
    patched._pulse_fetch_max_wait_ms = round(seconds * 1000)
    if "_pulse_original_create_worker_consumer" in AIOKafkaConsumerThread.__dict__:
        return
    patched._pulse_original_create_worker_consumer = (
        AIOKafkaConsumerThread._create_worker_consumer)

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = patched._pulse_original_create_worker_consumer(self, transport)
        consumer._fetch_max_wait_ms = patched._pulse_fetch_max_wait_ms
        return consumer

    patched._create_worker_consumer = create_worker_consumer


def recovery_stale(app: faust.App) -> bool:
    """Whether the recovery whose callbacks run now no longer matches the assignment.

    Faust runs the tables' callbacks as tasks; a rebalance while they run restarts the
    recovery loop, which clears ``signal_recovery_start`` (:func:`recovery_superseded`)
    while late callbacks of the old recovery still run. The consumer generation the
    completing recovery was started for (:func:`install_recovery_generation`) against the
    app's current one (``App.consumer_generation_id``) tells them apart for good.
    """
    completing = getattr(_internals(app.tables).recovery, "_pulse_generation", None)
    current = getattr(app, "consumer_generation_id", None)
    return recovery_superseded(app) or (completing is not None and completing != current)


def last_recovery_seconds(app: faust.App) -> float | None:
    """Duration of the last completed recovery (``Recovery._recovery_started_at`` and
    ``_recovery_ended_at``, monotonic seconds); None before one completed."""
    recovery = _internals(app.tables).recovery
    started = getattr(recovery, "_recovery_started_at", None)
    ended = getattr(recovery, "_recovery_ended_at", None)
    if started is None or ended is None or ended < started:
        return None
    return float(ended - started)


def recovery_positions(app: faust.App) -> list[tuple[TP, int | None, int | None]]:
    """(changelog partition, offset read, high watermark) of every active changelog
    partition being restored (``Recovery.active_offsets`` / ``active_highwaters``)."""
    recovery = _internals(app.tables).recovery
    return [(tp, recovery.active_offsets.get(tp), recovery.active_highwaters.get(tp))
            for tp in sorted(recovery.active_highwaters)]


def install_high_watermark_fix(
    fetch_high_watermarks: Callable[[Mapping[Any, int | None]], Any],
) -> None:
    """Patch Faust's aiokafka driver (``AIOKafkaConsumerThread._highwaters``) so the
    high watermarks a recovery reads to are corrected by ``fetch_high_watermarks``
    (an async function of the listed ``{tp: offset}``); idempotent."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread_cls, "_pulse_fixed", False):
        return
    original = thread_cls._highwaters

    async def _highwaters(self: Any, partitions: Any) -> Mapping[Any, int]:
        listed = await original(self, partitions)
        if self.consumer.in_transaction:
            return listed
        fixed: Mapping[Any, int] = await fetch_high_watermarks(listed)
        return fixed

    patched = _internals(thread_cls)
    patched._highwaters = _highwaters
    patched._pulse_original_highwaters = original
    patched._pulse_fixed = True


class _ReceivedPositions(MutableMapping[TP, Any]):
    """A recovery's ``active_offsets`` that also stamps each partition as having received
    records when a loader moves its position (``Recovery._active_events_received_at``,
    which Faust's stall warnings read)."""

    def __init__(self, positions: MutableMapping[TP, Any], received: MutableMapping[TP, float]):
        self._positions, self._received = positions, received

    def __getitem__(self, tp: TP) -> Any:
        return self._positions[tp]

    def __setitem__(self, tp: TP, offset: Any) -> None:
        self._positions[tp] = offset
        self._received[tp] = time.monotonic()

    def __delitem__(self, tp: TP) -> None:
        del self._positions[tp]

    def __iter__(self) -> Iterator[TP]:
        return iter(self._positions)

    def __len__(self) -> int:
        return len(self._positions)


def install_changelog_loader(app: faust.App, loader: ChangelogLoader) -> None:
    """Let ``loader`` read the active changelog partitions of each recovery of ``app``
    before Faust's own recovery does.

    Patches ``Recovery._build_offsets`` (run by the recovery loop once the high
    watermarks, ``Recovery.active_highwaters``, are known and before it seeks): for the
    active partitions it first awaits ``loader(Recovery.tp_to_table, highwaters,
    Recovery.active_offsets)``; Faust then starts reading after the offsets the loader
    reached (the larger of those and the earliest offsets), so it reads only what was
    written since. ``Recovery._wait`` runs that step without Faust's request timeout (a
    large restore outlasts it), still interrupted by a new rebalance or a stop. Recovery
    progress (``active_remaining``) moves as the loader moves the offsets. Idempotent;
    the loader is looked up per app (``App._pulse_changelog_loader``).
    """
    from faust.tables.recovery import Recovery

    _internals(app)._pulse_changelog_loader = loader
    if getattr(Recovery, "_pulse_loader_installed", False):
        return
    patched = _internals(Recovery)
    patched._pulse_original_build_offsets = Recovery._build_offsets
    patched._pulse_original_wait = Recovery._wait

    async def _build_offsets(self: Any, consumer: Any, tps: Any, destination: Any,
                             title: str) -> None:
        load = getattr(self.app, "_pulse_changelog_loader", None)
        if load is not None and destination is self.active_offsets and tps:
            highwaters = {tp: self.active_highwaters[tp] for tp in tps
                          if self.active_highwaters.get(tp) is not None}
            await load({tp: self.tp_to_table[tp] for tp in highwaters}, highwaters,
                       _ReceivedPositions(destination, self._active_events_received_at))
        await Recovery._pulse_original_build_offsets(  # type: ignore[attr-defined]
            self, consumer, tps, destination, title)  # kept above, for the pin test

    async def _wait(self: Any, coro: Any, timeout: Any = None) -> None:
        if getattr(coro, "cr_code", None) is _build_offsets.__code__:
            timeout = None
        await Recovery._pulse_original_wait(self, coro, timeout)  # type: ignore[attr-defined]

    patched._build_offsets = _build_offsets
    patched._wait = _wait
    patched._pulse_loader_installed = True
