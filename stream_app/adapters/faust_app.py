"""The Faust application: topics, tables and agents. Agents decode, fold and store.

Two tables, each holding entity records and the aggregates derived from them
(see :mod:`stream_app.kpi.fold` for why they share one changelog):

- ``deals``: keyed by deal on the deal topic's partitions;
- ``accounts``: keyed by account on the customer topic's partitions, fed by
  ``customer.churned`` and by won deals re-keyed by account (an internal topic).
"""

from __future__ import annotations

__all__ = ["PulseWorker"]

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import faust
from faust.types import EventT
from prometheus_client import CollectorRegistry

from stream_app.adapters.kafka import install_high_watermark_fix
from stream_app.adapters.metrics import PulseCollector, render
from stream_app.adapters.redis_store import RedisStore
from stream_app.config import Settings
from stream_app.events.codec import ContractRules, Rejection, TopicRole, decode_event
from stream_app.events.models import CustomerChurned
from stream_app.kpi.accounts import (
    AccountState,
    account_contributions,
    apply_account_churn,
    apply_account_win,
)
from stream_app.kpi.deals import DealState
from stream_app.kpi.fold import (
    BatchWriter,
    entity_key,
    fold_deal_event,
    guarded_fold,
    parse_aggregate_key,
)
from stream_app.kpi.money import Pricing
from stream_app.kpi.report import Report, build_report, snapshot_from_aggregates
from stream_app.kpi.windows import ms_from_datetime, window_specs
from stream_app.ops import OperationalStats

log = logging.getLogger(__name__)

DEAD_LETTER_HEADERS = ("pulse-reason", "pulse-detail", "pulse-topic", "pulse-partition",
                       "pulse-offset")


class _AggregateIndex:
    """Keys of aggregate records in a table, so a scrape never walks the entities."""

    def __init__(self, table: faust.Table):
        self.table = table
        self.keys: set[str] = set()

    def rebuild(self) -> None:
        self.keys = {key for key in list(self.table.keys()) if parse_aggregate_key(key)}

    def items(self) -> Iterable[tuple[str, Any]]:
        table = self.table
        return [(key, table.get(key)) for key in self.keys]


class PulseWorker:
    """One worker process: the Faust app, its agents and the metrics it exports."""

    def __init__(self, settings: Settings):
        if not settings.kafka_bootstrap or settings.redis_url is None:
            raise ValueError("PulseWorker needs kafka_bootstrap and redis_url")
        install_high_watermark_fix(settings)
        self.settings = settings
        self.reporting_currency = settings.reporting_currency
        self.clock = settings.clock
        self._stats = OperationalStats()
        self._rules = ContractRules(
            currencies=frozenset(settings.fx_rates),
            stages=frozenset(settings.stage_names),
            max_event_bytes=settings.max_event_bytes,
        )
        self._pricing = Pricing(dict(settings.fx_rates), settings.stage_probabilities)
        self._specs = window_specs(settings.windows_days)
        self._shared_clock_ms: int | None = None
        self.redis = RedisStore(
            settings.redis_url.get_secret_value(),
            namespace=settings.app_id,
            ttl_seconds=settings.dedup_ttl_seconds,
        )
        self.app = self._make_app()
        self.registry = CollectorRegistry()
        PulseCollector(self, self.registry)
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
        brokers = ";".join(f"kafka://{host}" for host in s.kafka_bootstrap.split(","))  # type: ignore[union-attr]
        return faust.App(
            s.app_id,
            broker=brokers,
            broker_credentials=credentials,
            store="memory://",
            autodiscover=False,
            topic_partitions=s.partitions,
            topic_replication_factor=1,
            table_standby_replicas=s.table_standby_replicas,
            broker_commit_interval=s.commit_interval_seconds,
            broker_session_timeout=s.session_timeout_seconds,
            broker_heartbeat_interval=s.session_timeout_seconds / 5,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            stream_recovery_delay=0.2,
            producer_max_batch_size=512 * 1024,
            web_enabled=True,
            web_bind=s.web_host,
            web_host=s.web_host,
            web_port=s.web_port,
        )

    def _wire(self) -> None:
        s, app = self.settings, self.app
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
               "value_serializer": "raw"}
        self.deals_topic = app.topic(s.topic_deals, partitions=s.partitions, **raw)
        self.customers_topic = app.topic(
            s.topic_customers, s.topic_account_wins, partitions=s.partitions, **raw
        )
        self.account_wins_topic = app.topic(s.topic_account_wins, partitions=s.partitions, **raw)
        self.dead_letters = app.topic(s.topic_dead_letters, **raw)
        table_args = {"default": None, "partitions": s.partitions}
        self.deals = app.Table("pulse-deals", **table_args)
        self.accounts = app.Table("pulse-accounts", **table_args)
        self._deal_index = _AggregateIndex(self.deals)
        self._account_index = _AggregateIndex(self.accounts)
        for table in (self.deals, self.accounts):
            self._count_changelog_records(table)

        @self.deals.on_recover
        async def _deals_recovered() -> None:
            self._stats.recoveries += 1
            self._deal_index.rebuild()

        @self.accounts.on_recover
        async def _accounts_recovered() -> None:
            self._account_index.rebuild()

        batch = {"max_": s.batch_max_events, "within": s.batch_within_seconds}

        @app.agent(self.deals_topic, name="pulse-deal-agent")
        async def deal_agent(stream: faust.StreamT) -> None:
            async for events in stream.take_events(**batch):
                await self._on_deal_batch(events)

        @app.agent(self.customers_topic, name="pulse-account-agent")
        async def account_agent(stream: faust.StreamT) -> None:
            async for events in stream.take_events(**batch):
                await self._on_account_batch(events)

        @app.timer(1.0)
        async def _tick() -> None:
            await self._refresh()

        @app.page("/metrics")
        async def metrics(web: Any, request: Any) -> Any:
            return web.bytes(render(self.registry), content_type="text/plain; version=0.0.4")

        @app.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            return web.json({"status": "ok", "owned_partitions": self.owned_partitions()})

        self._agents = (deal_agent, account_agent)

    def _count_changelog_records(self, table: faust.Table) -> None:
        apply_batch, applied = table.apply_changelog_batch, self._stats.changelog_applied

        def counting(batch: Sequence[EventT]) -> None:
            applied[table.name] += len(batch)
            apply_batch(batch)

        table.apply_changelog_batch = counting  # type: ignore[method-assign]

    # -- message handling ------------------------------------------------------------------

    def _dead_letter(self, event: EventT, rejection: Rejection) -> None:
        msg = event.message
        self._stats.rejected[rejection.reason] += 1
        headers = [
            ("pulse-reason", rejection.reason.encode()),
            ("pulse-detail", rejection.detail.encode("utf-8", "replace")),
            ("pulse-topic", msg.topic.encode()),
            ("pulse-partition", str(msg.partition).encode()),
            ("pulse-offset", str(msg.offset).encode()),
        ]
        self.dead_letters.send_soon(key=msg.key, value=msg.value or b"", headers=headers)
        log.info("rejected %s/%s@%s: %s (%s)", msg.topic, msg.partition, msg.offset,
                 rejection.reason, rejection.detail)

    def _note_position(self, event: EventT, time_ms: int | None) -> None:
        msg = event.message
        self._stats.last_offset[(msg.topic, msg.partition)] = msg.offset
        if time_ms is not None and (
            self._stats.last_event_ms is None or time_ms > self._stats.last_event_ms
        ):
            self._stats.last_event_ms = time_ms

    async def _decode_and_admit(
        self, events: Sequence[EventT], role: TopicRole
    ) -> list[tuple[EventT, Any]]:
        """Valid, non-duplicate events of a batch; rejects go to the dead-letter topic."""
        valid: list[tuple[EventT, Any]] = []
        for event in events:
            msg = event.message
            decoded = decode_event(msg.value, msg.key, role, self._rules)
            if isinstance(decoded, Rejection):
                self._note_position(event, None)
                self._dead_letter(event, decoded)
            else:
                valid.append((event, decoded))
        verdicts = await self.redis.check_many([
            (decoded.id, f"{e.message.topic}/{e.message.partition}/{e.message.offset}")
            for e, decoded in valid
        ])
        admitted: list[tuple[EventT, Any]] = []
        for (event, decoded), verdict in zip(valid, verdicts, strict=True):
            self._note_position(event, ms_from_datetime(decoded.time))
            if verdict == "duplicate":
                self._stats.duplicates[decoded.type] += 1
                continue
            if verdict == "unavailable":
                self._stats.dedup_unavailable += 1
            elif verdict == "replay":
                self._stats.replays += 1
            self._stats.processed[decoded.type] += 1
            admitted.append((event, decoded))
        return admitted

    async def _flush(self, table: faust.Table, writers: dict[int, BatchWriter]) -> None:
        """Send the batch's changelog records straight to the Kafka producer.

        Faust's own path (``send_changelog``) queues each record in its producer
        buffer and publishes them one event-loop hop at a time, which capped a
        worker at ~1,000 events/s. Records are encoded as the table's JSON codec
        would; the commit still flushes the producer before committing offsets.
        """
        producer = self.app.producer
        topic = table.changelog_topic.get_topic_name()
        dumps = json.dumps
        for partition, writer in writers.items():
            for key, value in writer.drain():
                await producer.send(topic, dumps(key).encode(), dumps(value).encode(),
                                    partition, None, None)

    async def _on_deal_batch(self, events: Sequence[EventT]) -> None:
        writers: dict[int, BatchWriter] = {}
        for event, deal_event in await self._decode_and_admit(events, "deals"):
            msg = event.message
            store = writers.setdefault(msg.partition, BatchWriter(self.deals.data))
            result = fold_deal_event(store, msg.partition, msg.offset, deal_event,
                                     self._pricing)
            self._deal_index.keys.update(result.written)
            self._forward_win(result.state)
        await self._flush(self.deals, writers)

    def _forward_win(self, state: DealState) -> None:
        """Re-key a won deal by account (sent again on every replay; min() downstream)."""
        if state.created is None or state.closed is None or state.closed[2] != "won":
            return
        account_id = state.created[2].get("account_id")
        if not account_id:
            return
        payload = {"account_id": account_id, "won_at_ms": state.closed[0],
                   "deal_id": state.deal_id}
        self.account_wins_topic.send_soon(
            key=account_id.encode(), value=json.dumps(payload).encode()
        )

    async def _on_account_batch(self, events: Sequence[EventT]) -> None:
        wins_topic = self.settings.topic_account_wins
        churns = await self._decode_and_admit(
            [e for e in events if e.message.topic != wins_topic], "customers"
        )
        admitted = {id(event): churn for event, churn in churns}
        writers: dict[int, BatchWriter] = {}
        for event in events:
            msg = event.message
            store = writers.setdefault(msg.partition, BatchWriter(self.accounts.data))
            if msg.topic == wins_topic:
                win = json.loads(msg.value)
                self._note_position(event, None)
                self._fold_account(store, msg.partition, msg.offset, "w", win["account_id"],
                                   win["won_at_ms"], partial(apply_account_win,
                                                             won_at_ms=win["won_at_ms"],
                                                             deal_id=win["deal_id"]))
            elif id(event) in admitted:
                churn: CustomerChurned = admitted[id(event)]
                time_ms = ms_from_datetime(churn.time)
                self._fold_account(store, msg.partition, msg.offset, "c", churn.data.account_id,
                                   time_ms, partial(apply_account_churn, churned_at_ms=time_ms,
                                                    event_id=churn.id))
        await self._flush(self.accounts, writers)

    def _fold_account(self, store: BatchWriter, partition: int, offset: int, source: str,
                      account_id: str, time_ms: int,
                      apply: Callable[[AccountState], AccountState]) -> None:
        result = guarded_fold(
            store,
            source=source,
            partition=partition,
            offset=offset,
            key=entity_key("a", account_id),
            empty=lambda: AccountState(account_id),
            load=AccountState.from_json,
            apply=apply,
            contributions=account_contributions,
            dump=AccountState.to_json,
            event_time_ms=time_ms,
        )
        self._account_index.keys.update(result.written)

    # -- periodic work and the KpiSource protocol ---------------------------------------

    def _active_partitions(self, topic: str) -> set[int]:
        try:
            actives = self.app.assignor.assigned_actives()
        except Exception:
            return set()
        return {tp.partition for tp in actives if tp.topic == topic}

    def _note_recovery(self) -> None:
        recovery = self.app.tables.recovery
        stats = self._stats
        stats.recovery_in_progress = bool(recovery.in_recovery)
        stats.recovery_remaining = recovery.active_remaining_total() if recovery.in_recovery else 0
        started = getattr(recovery, "_recovery_started_at", None)
        ended = getattr(recovery, "_recovery_ended_at", None)
        if started is not None and ended is not None and ended >= started:
            stats.last_recovery_seconds = ended - started

    async def _refresh(self) -> None:
        self._note_recovery()
        consumer = self.app.consumer
        sources = {self.settings.topic_deals, self.settings.topic_customers,
                   self.settings.topic_account_wins}
        for tp in list(self.app.assignor.assigned_actives()):
            if tp.topic not in sources:
                continue
            try:
                high = consumer.highwater(tp)
            except Exception:
                continue
            if high is not None:
                self._stats.high_watermark[(tp.topic, tp.partition)] = high
            committed = consumer._committed_offset.get(tp)  # Faust keeps no public accessor
            if committed is not None:
                self._stats.committed[(tp.topic, tp.partition)] = committed
        if self.clock == "event":
            local = self._local_latest_ms()
            if local is not None:
                shared = await self.redis.merge_clock(local)
                if shared is not None:
                    self._shared_clock_ms = shared

    def _local_latest_ms(self) -> int | None:
        snap = snapshot_from_aggregates(
            self._deal_index.items(), self._active_partitions(self.settings.topic_deals)
        )
        return snap.latest_event_ms

    def report(self) -> Report | None:
        """KPIs of the partitions owned now (the ``KpiSource`` protocol)."""
        deal_parts = self._active_partitions(self.settings.topic_deals)
        account_parts = self._active_partitions(self.settings.topic_customers)
        snap = snapshot_from_aggregates(self._deal_index.items(), deal_parts)
        accounts = snapshot_from_aggregates(self._account_index.items(), account_parts)
        snap.new_customers, snap.churned = accounts.new_customers, accounts.churned
        if self.clock == "wall":
            as_of = int(time.time() * 1000)
        else:
            candidates = [v for v in (snap.latest_event_ms, accounts.latest_event_ms,
                                      self._shared_clock_ms) if v is not None]
            if not candidates:
                return None
            as_of = max(candidates)
        return build_report(snap, as_of, self._specs, self.settings.stage_names,
                            self.settings.stage_probabilities)

    def stats(self) -> OperationalStats:
        """Operational counters of this process."""
        return self._stats

    def dedup_up(self) -> bool:
        """Whether Redis answered last time."""
        return self.redis.up

    def owned_partitions(self) -> int:
        """Deal partitions owned now."""
        return len(self._active_partitions(self.settings.topic_deals))
