"""The Faust application: one table, one agent and one recovery hook per source spec.

The sources (:mod:`stream_app.sources.catalogue`) say what each table folds; the generic
pipeline (:mod:`stream_app.adapters.pipeline`) runs their batches. Each table holds
entity records and the aggregates derived from them (see :mod:`stream_app.kpi.fold`
for why they share one changelog). This module wires them into Faust and owns what
spans sources: readiness after a recovery, the lag and event-time clock, the report.
"""

from __future__ import annotations

__all__ = ["BATCH_FINISH_SECONDS", "PulseWorker", "StateLostError", "finish_batch"]

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Collection, Sequence
from functools import partial
from typing import Any, cast

import faust
from faust.types import TP, EventT
from prometheus_client import CollectorRegistry

from stream_app.adapters.batch_gate import BatchGate
from stream_app.adapters.changelog_loader import ChangelogLoader
from stream_app.adapters.checkpointer import ChangelogPositions, Checkpointer
from stream_app.adapters.checkpoints import CheckpointFiles
from stream_app.adapters.faust_compat import (
    ChangelogApply,
    Table,
    assigned_actives,
    broker_connections,
    committed_offset,
    install_changelog_loader,
    install_fetch_max_wait,
    install_high_watermark_fix,
    install_recovery_generation,
    last_recovery_seconds,
    recovery_positions,
    recovery_progress,
    recovery_stale,
    seek,
    send_whole,
    wrap_changelog_apply,
)
from stream_app.adapters.kafka import client_kwargs, committed_offsets, fetched_high_watermarks
from stream_app.adapters.label_registry import LabelRegistry
from stream_app.adapters.loop_watch import LoopWatch
from stream_app.adapters.metrics import PulseCollector
from stream_app.adapters.pipeline import PipelineContext, SourcePipeline
from stream_app.adapters.redis_store import RedisStore
from stream_app.adapters.scrape import Scrape
from stream_app.adapters.source_reader import SourceReader, SourceReadError
from stream_app.config import (
    Settings,
    contract_rules,
    organisation_calendar,
    pricing,
    report_config,
)
from stream_app.kpi.fold import (
    clock_key,
    folded_through,
    record_of,
    supersedes,
    zone_conflict,
)
from stream_app.kpi.rows import Report
from stream_app.kpi.scoring import load_rules
from stream_app.ops import OperationalStats
from stream_app.sources.catalogue import catalogue

log = logging.getLogger(__name__)

FATAL_EXIT_GRACE_SECONDS = 10.0

#: How often the event-loop lag probe sleeps (and so measures).


#: How long a batch being folded when the worker stops may take to finish.
BATCH_FINISH_SECONDS = 15.0


def _exit_now(message: str, reason: str = "clean stop timed out") -> None:
    print(f"stream-app worker: {message} ({reason})", file=sys.stderr, flush=True)
    os._exit(2)


async def finish_batch(handler: Awaitable[None],
                       grace_seconds: float = BATCH_FINISH_SECONDS) -> None:
    """Run a batch handler to its end even if the agent is cancelled meanwhile.

    Faust cancels agents when a worker stops, and ``take_events`` then acks the whole
    batch, so the stop's final commit would cover events whose changelog records were
    never sent. Finishing the batch first keeps "committed" meaning "written". A batch
    that cannot finish within ``grace_seconds`` (broker gone) ends the process before
    that commit: its events are read again by the partition's next owner. So does a
    batch whose skipped messages cannot be read again (:class:`SourceReadError`): Faust
    would ack the failed batch, and the commit after it would cover events never folded.
    """
    task = asyncio.ensure_future(handler)
    try:
        await asyncio.shield(task)
    except SourceReadError as error:
        _exit_now(f"{error}; exiting before committing the batch's offsets",
                  "skipped messages could not be read again")
        raise
    except asyncio.CancelledError:
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=grace_seconds)
            if not done:
                _exit_now(f"a batch could not finish within {grace_seconds:g}s of the stop; "
                          "exiting before committing its offsets")
        raise


class StateLostError(RuntimeError):
    """Local state cannot be trusted: the worker stops rather than export wrong KPIs."""


class PulseWorker:
    """One worker process: the Faust app, one pipeline per source, the metrics."""

    def __init__(self, settings: Settings):
        if not settings.kafka_bootstrap or settings.redis_url is None:
            raise ValueError("PulseWorker needs kafka_bootstrap and redis_url")
        install_high_watermark_fix(partial(fetched_high_watermarks, client_kwargs(settings)))
        install_recovery_generation()
        if settings.fetch_max_wait_seconds is not None:
            install_fetch_max_wait(settings.fetch_max_wait_seconds)
        self.settings = settings
        self.reporting_currency = settings.reporting_currency
        self.clock = settings.clock
        self._stats = OperationalStats()
        scoring = load_rules(settings.lead_scoring_file)
        self._report_config = report_config(settings, scoring)
        self._shared_clock_ms: int | None = None
        self._recovery_progress: tuple[int, float] | None = None
        self.fatal: str | None = None
        self._crashing: asyncio.Future[None] | None = None
        self._recovery_watch: asyncio.Future[None] | None = None
        self._loop_probe: asyncio.Future[None] | None = None
        self._loop_watch = LoopWatch(self._stats)
        self._ready: frozenset[tuple[str, int]] = frozenset()
        self._recovered: set[str] = set()
        self._revoked_since_assigned = False
        #: The time zone whose days this worker folds in (and requires of restored state).
        self._state_zone = organisation_calendar(settings).state_zone
        self.redis = RedisStore(
            settings.redis_url.get_secret_value(),
            namespace=settings.app_id,
            ttl_seconds=settings.dedup_ttl_seconds,
        )
        self._labels = LabelRegistry(self.redis, settings.label_cap)
        self.app = self._make_app()
        self._gate = BatchGate()
        files = (CheckpointFiles(settings.data_dir)
                 if settings.data_dir and settings.checkpoint_interval_seconds else None)
        self._changelog_positions: ChangelogPositions | None = None
        self._checkpointer: Checkpointer | None = None
        if files is not None:
            self._changelog_positions = ChangelogPositions()
            self._checkpointer = Checkpointer(settings, files, self._gate,
                                              self._changelog_positions, self._stats)
        install_changelog_loader(self.app, ChangelogLoader(settings, self._stats, files,
                                                           self._note_loaded))
        self._reader = SourceReader(settings)
        self.registry = CollectorRegistry()
        self._collector = PulseCollector(self, self.registry)
        self._scrape = Scrape(lambda: self.pipelines, self._active_partitions, self._labels,
                              self.clock, lambda: self._shared_clock_ms, self._report_config,
                              settings.forecast_wait_seconds, settings.forecast_process)
        context = PipelineContext(
            rules=contract_rules(settings), redis=self.redis, labels=self._labels,
            stats=self._stats, producer=lambda: self.app.producer,
            dead_letter_topic=settings.topic_dead_letters,
            late_grace_ms=round(settings.late_grace_days * 86_400_000),
            changelog_positions=self._changelog_positions,
            state_zone=self._state_zone, missing=self._reader)
        changelog_configs = ({"min.insync.replicas": settings.min_insync_replicas}
                             if settings.min_insync_replicas else {})
        self.pipelines = tuple(
            SourcePipeline(spec, self.app.Table(spec.table_name, default=None,
                                                partitions=settings.partitions,
                                                extra_topic_configs=changelog_configs), context)
            for spec in catalogue(settings, pricing(settings), scoring))
        for pipeline in self.pipelines:
            self._wire_source(pipeline)
        self._wire()

    def _make_app(self) -> faust.App:
        s = self.settings
        credentials: Any = None
        if s.kafka_security_protocol.startswith("SASL"):
            password = s.kafka_sasl_password.get_secret_value() if s.kafka_sasl_password else ""
            credentials = faust.SASLCredentials(
                username=s.kafka_sasl_username, password=password, mechanism=s.kafka_sasl_mechanism
            )
        elif s.kafka_security_protocol == "SSL":
            import ssl

            credentials = ssl.create_default_context(cafile=s.kafka_ssl_cafile)
        bootstrap = s.kafka_bootstrap or ""
        brokers = ";".join(f"kafka://{host}" for host in bootstrap.split(","))
        local: dict[str, Any] = {"datadir": s.data_dir} if s.data_dir else {}
        return faust.App(
            s.app_id,
            **local,
            broker=brokers,
            broker_credentials=credentials,
            store="memory://",
            autodiscover=False,
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            table_standby_replicas=s.table_standby_replicas,
            broker_commit_interval=s.commit_interval_seconds,
            broker_session_timeout=s.session_timeout_seconds,
            broker_heartbeat_interval=s.session_timeout_seconds / 5,
            consumer_group_instance_id=s.group_instance_id,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            stream_recovery_delay=0.2,
            producer_max_batch_size=512 * 1024,
            web_enabled=True,
            web_bind=s.web_host,
            web_host=s.web_host,
            web_port=s.web_port,
        )

    def _wire_source(self, pipeline: SourcePipeline) -> None:
        """The source's agent on its topics, its recovery hook and its changelog hook."""
        s, app, spec = self.settings, self.app, pipeline.spec
        topic = app.topic(*spec.topics, partitions=s.partitions, key_type=bytes,
                          value_type=bytes, key_serializer="raw", value_serializer="raw")
        self._watch_changelog_records(pipeline)

        @pipeline.table.on_recover
        async def _recovered() -> None:
            await self._on_recovered(pipeline)

        @app.agent(topic, name=f"pulse-{spec.name}-agent")
        async def agent(stream: faust.StreamT[Any]) -> None:
            # Faust hands agents a Stream; take_events is not on its StreamT interface.
            batches = cast(faust.Stream[Any], stream).take_events(
                max_=s.batch_max_events, within=s.batch_within_seconds)
            async for events in batches:
                await finish_batch(self._gated(pipeline.run(events)))

    async def _gated(self, batch: Awaitable[None]) -> None:
        async with self._gate.batch():
            await batch

    async def _checkpoint(self) -> None:
        """Write the local checkpoints of the exported partitions; a failure is logged and
        the worker goes on (a restart then reads more of the changelogs)."""
        if self._checkpointer is None or self.fatal is not None:
            return
        exported = [(pipeline.table, frozenset(p for topic, p in self._ready
                                               if topic in pipeline.spec.topics))
                    for pipeline in self.pipelines]
        try:
            written = await self._checkpointer.write(exported, self.app.producer)
        except Exception as error:
            log.warning("local checkpoints not written: %s", error, exc_info=True)
            return
        log.info("local checkpoints written: %d in %.1fs", written,
                 self._stats.last_checkpoint_seconds or 0.0)

    def _wire(self) -> None:
        app = self.app
        if self._checkpointer is not None:
            app.timer(self.settings.checkpoint_interval_seconds)(self._checkpoint)

        # Faust's stubs type a signal handler's return as None or Awaitable[None], which
        # mypy does not match with a coroutine function; the handlers are what Faust calls.
        @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # see above
        async def _revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
            self._revoked_since_assigned = True
            self._ready = frozenset()
            self._recovered.clear()
            if self._changelog_positions is not None:
                self._changelog_positions.forget()

        @app.on_before_shutdown.connect  # type: ignore[arg-type]  # as for _revoked
        async def _closing(sender: Any, *args: Any, **kwargs: Any) -> None:
            await self._reader.close()
            if self._checkpointer is not None:
                await self._checkpointer.close()
            await asyncio.to_thread(self._scrape.close)

        @app.timer(1.0)
        async def _tick() -> None:
            await self._refresh()
            self._scrape.keep_current()
            self._loop_watch.freeze_heap()

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # as for _revoked
        async def _assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
            self._revoked_since_assigned = False
            if self._recovery_watch is None:
                self._recovery_watch = asyncio.ensure_future(self._watch_recovery_forever())
                self._loop_probe = asyncio.ensure_future(
                    self._loop_watch.probe(lambda: self.fatal is None))

        @app.page("/metrics")
        async def metrics(web: Any, request: Any) -> Any:
            async def send(body: bytes) -> Any:
                response = web.bytes(body, content_type="text/plain; version=0.0.4")
                await send_whole(request, response)
                return response

            return await self._scrape.respond(self._collector, send)

        @app.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            return web.json(self.health())

        @app.page("/livez")
        async def livez(web: Any, request: Any) -> Any:
            body = self.liveness()
            return web.json(body, status=200 if body["live"] else 503)

        @app.page("/readyz")
        async def readyz(web: Any, request: Any) -> Any:
            body = self.readiness()
            return web.json(body, status=200 if body["ready"] else 503)

    def liveness(self) -> dict[str, Any]:
        """What ``/livez`` answers: live unless the worker is failing or its event loop
        ran later than ``liveness_max_loop_lag_seconds``."""
        lag = self._stats.loop_lag_seconds
        bound = self.settings.liveness_max_loop_lag_seconds
        live = self.fatal is None and (lag is None or lag < bound)
        return {"live": live, "loop_lag_seconds": lag, "max_loop_lag_seconds": bound,
                "fatal": self.fatal,
                "recent_loop_lags": self._loop_watch.samples()}

    def readiness(self) -> dict[str, Any]:
        """What ``/readyz`` answers: ready once the worker joined the group and every
        partition assigned to it is restored and exported (none being recovered)."""
        assigned = {(tp.topic, tp.partition) for tp in assigned_actives(self.app)}
        waiting = sorted(assigned - self._ready)
        joined = self._recovery_watch is not None
        ready = (joined and not waiting and not self._stats.recovery_in_progress
                 and self.fatal is None)
        return {"ready": ready, "joined": joined, "assigned": len(assigned),
                "recovery_in_progress": self._stats.recovery_in_progress,
                "not_exported": [f"{topic}[{partition}]" for topic, partition in waiting]}

    async def _on_recovered(self, pipeline: SourcePipeline) -> None:
        """A table restored: index it, rebuild its side book, admit the labels its
        aggregates name, sum its cells for the partitions it will export, check it
        reaches the committed offsets; once every table is restored, export the
        assignment.

        Callbacks of a recovery that a new assignment superseded do nothing (Faust calls
        them, then restarts): that state is not restored for the new assignment.
        """
        name = pipeline.table.name
        if self._stale_recovery(name):
            return
        await pipeline.index.rebuild()
        if pipeline.book is not None:
            pipeline.book.rebuild(pipeline.table.data)
        await self._labels.admit(pipeline.index.groups())
        if self._stale_recovery(name):
            return
        exported = frozenset(tp.partition for tp in assigned_actives(self.app)
                             if tp.topic == pipeline.spec.topic)
        await pipeline.index.prime(exported, self._labels.keep,
                                   lambda: self._labels.version)
        if self._stale_recovery(name):
            return
        await self._verify_positions(pipeline.table, set(pipeline.spec.topics))
        if self._stale_recovery(name):
            return
        self._recovered.add(pipeline.spec.name)
        self._loop_watch.freeze_heap(force=True)
        self._maybe_ready()

    def _note_loaded(self, table: Table, keys: Collection[str], partition: int) -> None:
        """Keys a local checkpoint put straight into ``table``: its side book learns
        where they live, as it does from changelog records."""
        for pipeline in self.pipelines:
            if pipeline.table is table and pipeline.book is not None:
                for key in keys:
                    pipeline.book.note_key(key, partition)

    def _stale_recovery(self, table: str) -> bool:
        """Whether the recovery whose callback runs now must not export: a newer
        assignment superseded it, or a rebalance revoked its partitions (and Faust dropped
        their keys) before that assignment came."""
        if not self._revoked_since_assigned and not recovery_stale(self.app):
            return False
        log.info("recovery of %s superseded by a new assignment; checked after the next",
                 table)
        return True

    def _watch_changelog_records(self, pipeline: SourcePipeline) -> None:
        """Count changelog records applied to a table (recovery, standby), drop late
        writes of older states, note the keys for the kept sums and the side book."""
        table, index, book = pipeline.table, pipeline.index, pipeline.book
        applied = self._stats.changelog_applied
        dropped = self._stats.changelog_dropped

        def counting(apply_batch: ChangelogApply) -> ChangelogApply:
            def apply(changelog: Sequence[EventT[Any]]) -> None:
                applied[table.name] += len(changelog)
                batch: list[EventT[Any]] = []
                keys: list[str] = []
                latest: dict[str, Any] = {}
                for event in changelog:
                    key = cast(str, event.key)
                    stored = latest[key] if key in latest else table.data.get(key)
                    if supersedes(event.value, stored):
                        batch.append(event)
                        keys.append(key)
                        latest[key] = event.value
                    else:
                        dropped[table.name] += 1
                index.add(keys)
                if book is not None:
                    for key, event in zip(keys, batch, strict=True):
                        book.note_key(key, event.message.partition)
                apply_batch(batch)

            return apply

        wrap_changelog_apply(table, counting)

    def _fail(self, message: str) -> None:
        """Log, stop the app, and raise: the worker exits non-zero (see the CLI).

        A clean stop talks to the broker (commit, leave group); if that hangs, the
        process exits hard after ``FATAL_EXIT_GRACE_SECONDS``.
        """
        error = StateLostError(message)
        if self.fatal is None:
            self.fatal = message
            log.critical("%s", message)
            self._crashing = asyncio.ensure_future(self.app.crash(error))
            asyncio.get_running_loop().call_later(FATAL_EXIT_GRACE_SECONDS, _exit_now, message)
        raise error

    async def _verify_positions(self, table: Table, topics: set[str]) -> None:
        """After a recovery: the restored state must reach the group's committed offsets.

        If the group committed a source partition beyond the last offset the state
        holds, the changelog lost records (deleted, recreated or truncated) and every
        KPI of that partition would be wrong; the worker stops with the reason.

        A source partition with no committed offset is sought to its beginning: the
        consumer may have fetched (and Faust dropped) its first messages during the
        recovery, and Faust's seek to committed offsets leaves such a partition where
        the fetch left it, so those messages would be skipped.
        """
        owned = sorted((tp.topic, tp.partition) for tp in assigned_actives(self.app)
                       if tp.topic in topics)
        committed = await committed_offsets(self.settings, self.settings.app_id, owned)
        if self._stale_recovery(table.name):
            return
        for topic, partition in owned:
            if (topic, partition) not in committed:
                await seek(self.app, TP(topic, partition), 0)
        if self._stale_recovery(table.name):
            return
        self._verify_zone(table, owned)
        for (topic, partition), offset in sorted(committed.items()):
            applied = folded_through(table.data, partition, topic)
            if offset <= applied + 1:
                continue
            self._fail(
                f"state lost: consumer group {self.settings.app_id!r} committed "
                f"{topic}[{partition}] up to offset {offset}, but table {table.name!r} "
                f"restored from {table.changelog_topic.get_topic_name()!r} holds that "
                f"partition only up to offset {applied} (changelog deleted, recreated or "
                f"truncated). Refusing to export KPIs missing {offset - applied - 1} "
                f"messages. To rebuild, stop every worker, reset the group's offsets to the "
                f"earliest (kafka-consumer-groups --reset-offsets --to-earliest --group "
                f"{self.settings.app_id} --all-topics --execute) and start again."
            )

    def _verify_zone(self, table: Table, owned: list[tuple[str, int]]) -> None:
        """The restored state must have been folded in this worker's time zone: its
        aggregates are keyed by that zone's days, and a fold in another zone would
        subtract contributions from days they were never added to."""
        zone = self._state_zone
        conflict = zone_conflict(table.data, owned, zone)
        if conflict is not None:
            topic, partition, folded = conflict
            self._fail(
                f"time zone changed: table {table.name!r} holds {topic}[{partition}] folded "
                f"with PULSE_TIMEZONE={folded!r}, and this worker runs with {zone!r}; every "
                f"KPI's days would be wrong. Set PULSE_TIMEZONE back to {folded!r}, or "
                f"rebuild the state in the new zone: start a worker group with a new "
                f"PULSE_APP_ID, which reads the CRM topics from the start (README, "
                f"\"Changing the time zone\").")

    def _active_partitions(self, topic: str) -> frozenset[int]:
        """Partitions of ``topic`` whose state is exported: assigned, and recovered.

        Emptied when a rebalance revokes partitions and filled again only when the
        new assignment's recovery is complete, so a partition is never exported by
        its old owner after the revocation or by its new owner before it is restored.
        """
        return frozenset(p for t, p in self._ready if t == topic)

    def _maybe_ready(self) -> None:
        """Export the assignment once every table's recovery callback (of the current
        recovery: :meth:`_on_recovered` drops stale ones) has run."""
        if self._recovered != {pipeline.spec.name for pipeline in self.pipelines}:
            return
        self._ready = frozenset((tp.topic, tp.partition) for tp in assigned_actives(self.app))
        if self._changelog_positions is not None:
            for tp, offset, _ in recovery_positions(self.app):
                if offset is not None:
                    self._changelog_positions.restored(tp.topic, tp.partition, offset)
        self._stats.recoveries += 1

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` answers: progress without computing a KPI (a poller's
        cheap alternative to a ``/metrics`` scrape)."""
        self._note_watermarks()
        stats = self._stats
        return {
            "status": "ok",
            "owned_partitions": self.owned_partitions(),
            "events_processed": sum(stats.processed.values()),
            "events_replayed": stats.replays,
            "recovery_in_progress": stats.recovery_in_progress,
            "lag_refreshes": stats.lag_refreshes,
            "lag": [{"topic": topic, "partition": partition, "messages": messages}
                    for (topic, partition), messages in sorted(stats.lag().items())],
            "exported_partitions": {topic: sorted(partitions) for topic, partitions
                                    in sorted(self.exported_partitions().items())},
        }

    def exported_partitions(self) -> dict[str, frozenset[int]]:
        """Source partitions whose state the KPIs include now, by topic."""
        return {pipeline.spec.topic: self._active_partitions(pipeline.spec.topic)
                for pipeline in self.pipelines}

    def _note_recovery(self) -> None:
        stats = self._stats
        stats.recovery_in_progress, stats.recovery_remaining = recovery_progress(self.app)
        self._watch_recovery(stats.recovery_in_progress, stats.recovery_remaining)
        seconds = last_recovery_seconds(self.app)
        if seconds is not None:
            stats.last_recovery_seconds = seconds

    async def _watch_recovery_forever(self) -> None:
        """Every second from the first assignment on (app timers only start after the
        first recovery): recovery progress for the metrics, and the stall check."""
        while self.fatal is None:
            try:
                self._note_recovery()
            except StateLostError:
                return
            await asyncio.sleep(1.0)

    def _watch_recovery(self, running: bool, remaining: int) -> None:
        """Fail loudly when a recovery restores nothing for ``recovery_stall_seconds``."""
        now = time.monotonic()
        if not running:
            self._recovery_progress = None
            return
        if self._recovery_progress is None or self._recovery_progress[0] != remaining:
            self._recovery_progress = (remaining, now)
            return
        stalled = now - self._recovery_progress[1]
        if stalled >= self.settings.recovery_stall_seconds:
            where = ", ".join(
                f"{tp.topic}[{tp.partition}] at {offset} of {high}"
                for tp, offset, high in recovery_positions(self.app)) or "no changelog offsets yet"
            self._fail(
                f"table recovery made no progress for {stalled:.0f}s with {remaining} "
                f"records left ({where}); the broker is unreachable or a changelog "
                f"ends below its reported high watermark. Exiting instead of hanging "
                f"(PULSE_RECOVERY_STALL_SECONDS={self.settings.recovery_stall_seconds:g})."
            )

    async def _refresh(self) -> None:
        await self.redis.probe()
        if self._labels.pending:
            await self._labels.admit({})
        self._note_watermarks()
        self._stats.lag_refreshes += 1
        self._note_kafka_connections()
        if self.clock == "event":
            local = self._local_latest_ms()
            if local is not None:
                shared = await self.redis.merge_clock(local)
                if shared is not None:
                    self._shared_clock_ms = shared

    def _note_watermarks(self) -> None:
        """Copy the consumer's latest high watermarks and this worker's committed offsets
        of its source partitions into the stats (the consumer's own state: no request),
        so the lag is what the consumer knows now."""
        consumer = self.app.consumer
        sources = {topic for pipeline in self.pipelines for topic in pipeline.spec.topics}
        actives = list(assigned_actives(self.app))
        self._stats.forget_except({(tp.topic, tp.partition) for tp in actives})
        for tp in actives:
            if tp.topic not in sources:
                continue
            try:
                high = consumer.highwater(tp)
            except Exception:
                continue
            if high is not None:
                self._stats.high_watermark[(tp.topic, tp.partition)] = high
            committed = committed_offset(self.app, tp)
            if committed is not None:
                self._stats.committed[(tp.topic, tp.partition)] = committed

    def _note_kafka_connections(self) -> None:
        """Export the consumer's broker connections; say once when none is left and when
        one is back (the client reconnects by itself; the worker goes on)."""
        stats = self._stats
        before, now = stats.kafka_connections, broker_connections(self.app)
        stats.kafka_connections = now
        if now == 0 and before:
            log.warning("Kafka unreachable: the consumer has no broker connection left; "
                        "reconnecting (pulse_kafka_connected_brokers 0)")
        elif now and before == 0:
            log.warning("Kafka is back: %d broker connection(s)", now)

    def _local_latest_ms(self) -> int | None:
        """Latest event time of the owned partitions (their clock records only)."""
        times = [record_of(record)["v"] for pipeline in self.pipelines
                 for p in self._active_partitions(pipeline.spec.topic)
                 if (record := pipeline.table.data.get(clock_key(p))) is not None]
        return max(times, default=None)

    def report(self) -> Report | None:
        """KPIs of the partitions owned now (the ``KpiSource`` protocol)."""
        return self._scrape.report()

    def stats(self) -> OperationalStats:
        """Operational counters of this process, its lags as the consumer knows them now."""
        self._note_watermarks()
        return self._stats

    def dedup_up(self) -> bool:
        """Whether Redis answered last time."""
        return self.redis.up

    def owned_partitions(self) -> int:
        """Deal partitions owned now."""
        return len(self._active_partitions(self.settings.topic_deals))
