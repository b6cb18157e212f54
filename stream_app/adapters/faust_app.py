"""The Faust application: topics, tables and agents. Agents decode, fold and store.

Five tables, each holding entity records and the aggregates derived from them
(see :mod:`stream_app.kpi.fold` for why they share one changelog):

- ``deals``: keyed by deal on the deal topic's partitions;
- ``accounts``: keyed by account on the customer topic's partitions, fed by
  ``customer.churned`` and by won deals re-keyed by account (an internal topic);
- ``owners``: keyed by owner on the quota topic's partitions, fed by ``quota.set``
  and by won deals re-keyed by owner (an internal topic);
- ``leads``: keyed by lead on the lead topic's partitions;
- ``activities``: keyed by activity on the activity topic's partitions (which are
  keyed by owner).
"""

from __future__ import annotations

__all__ = ["BATCH_FINISH_SECONDS", "PulseWorker", "StateLostError", "finish_batch"]

import asyncio
import datetime as dt
import json
import logging
import os
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import faust
from faust.types import TP, EventT
from prometheus_client import CollectorRegistry

from stream_app.adapters.faust_compat import (
    ChangelogApply,
    assigned_actives,
    committed_offset,
    install_high_watermark_fix,
    last_recovery_seconds,
    recovery_positions,
    recovery_progress,
    recovery_superseded,
    seek,
    store_dict,
    wrap_changelog_apply,
)
from stream_app.adapters.kafka import client_kwargs, committed_offsets, fetched_high_watermarks
from stream_app.adapters.metrics import PulseCollector, render
from stream_app.adapters.redis_store import RedisStore
from stream_app.config import Settings, contract_rules, pricing
from stream_app.events.codec import Rejection, decode_event
from stream_app.events.models import (
    ActivityLogged,
    CustomerChurned,
    DealCreated,
    DealEvent,
    DealLost,
    DealWon,
    LeadCreated,
    QuotaSet,
)
from stream_app.events.routing import TopicRole
from stream_app.kpi.accounts import (
    AccountState,
    account_contributions,
    apply_account_churn,
    apply_account_win,
)
from stream_app.kpi.activities import (
    ActivityState,
    activity_contributions,
    apply_activity_event,
)
from stream_app.kpi.deals import NO_VALUE, DealState
from stream_app.kpi.fold import (
    BatchWriter,
    FoldResult,
    clock_key,
    entity_key,
    fold_deal_event,
    guarded_fold,
    parse_aggregate_key,
    position_key,
    supersedes,
)
from stream_app.kpi.kinds import (
    ACCOUNT_ENTITY,
    ACCOUNT_WIN_SOURCE,
    ACTIVITY_ENTITY,
    ACTIVITY_SOURCE,
    CHURN_SOURCE,
    LEAD_ENTITY,
    LEAD_SOURCE,
    OWNER_ENTITY,
    OWNER_QUOTA,
    OWNER_WIN_ENTITY,
    OWNER_WIN_SOURCE,
    POSITION,
    QUOTA_SOURCE,
)
from stream_app.kpi.leads import (
    LeadState,
    ScoreInputs,
    apply_lead_event,
    hot_crossings,
    lead_contributions,
    score_inputs,
)
from stream_app.kpi.owners import (
    OwnerState,
    OwnerWin,
    apply_owner_win,
    apply_quota,
    owner_contributions,
    win_contributions,
)
from stream_app.kpi.report import ReportConfig, build_report
from stream_app.kpi.rows import Report
from stream_app.kpi.scoring import load_rules
from stream_app.kpi.snapshot import KIND_LABEL, Cell, Snapshot, snapshot_from_cells, update_cell
from stream_app.kpi.windows import ms_from_datetime, window_specs
from stream_app.labels import FOLDED_LABELS
from stream_app.ops import OperationalStats

log = logging.getLogger(__name__)

DEAD_LETTER_HEADERS = ("pulse-reason", "pulse-detail", "pulse-topic", "pulse-partition",
                       "pulse-offset")


FATAL_EXIT_GRACE_SECONDS = 10.0


#: How long a batch being folded when the worker stops may take to finish.
BATCH_FINISH_SECONDS = 15.0


def _exit_now(message: str) -> None:
    print(f"stream-app worker: {message} (clean stop timed out)", file=sys.stderr, flush=True)
    os._exit(2)


async def finish_batch(handler: Awaitable[None],
                       grace_seconds: float = BATCH_FINISH_SECONDS) -> None:
    """Run a batch handler to its end even if the agent is cancelled meanwhile.

    Faust cancels agents when a worker stops, and ``take_events`` then acks the whole
    batch, so the stop's final commit would cover events whose changelog records were
    never sent. Finishing the batch first keeps "committed" meaning "written". A batch
    that cannot finish within ``grace_seconds`` (broker gone) ends the process before
    that commit: its events are read again by the partition's next owner.
    """
    task = asyncio.ensure_future(handler)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=grace_seconds)
            if not done:
                _exit_now(f"a batch could not finish within {grace_seconds:g}s of the stop; "
                          "exiting before committing its offsets")
        raise


_LEAD_PREFIX = entity_key(LEAD_ENTITY, "")


def _iso(ms: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)).isoformat()


def _deal_labels(events: Iterable[DealEvent]) -> dict[str, set[str]]:
    """Values of the capped labels that deal events name."""
    found: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if isinstance(event, DealCreated):
            found["team"].add(event.data.team)
            found["source"].add(event.data.source or NO_VALUE)
            found["product"].add(event.data.product or NO_VALUE)
        elif isinstance(event, DealWon | DealLost) and event.data.competitor:
            found["competitor"].add(event.data.competitor)
    return found


class StateLostError(RuntimeError):
    """Local state cannot be trusted: the worker stops rather than export wrong KPIs."""


class _AggregateIndex:
    """Keys of aggregate records in a table, parsed once, and their sum over the
    exported partitions kept up to date as records are written, so a scrape never
    walks the entities, parses a key again, or re-adds an aggregate nobody wrote."""

    def __init__(self, table: faust.Table):
        self.table = table
        self.keys: dict[str, tuple[str, int, str, str]] = {}
        self._cells: dict[Cell, Any] = {}
        self._merged: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._partitions: frozenset[int] | None = None
        self._snapshot: tuple[Any, Snapshot] | None = None

    def rebuild(self) -> None:
        """After a recovery: index every key again and re-sum at the next read."""
        self.keys = {}
        self.add(list(self.table.keys()))
        self._partitions = None

    def add(self, keys: Iterable[str]) -> None:
        """Note keys just written (by a fold or a changelog record); entity keys are
        ignored."""
        known, dirty = self.keys, self._dirty
        for key in keys:
            if key not in known:
                parsed = parse_aggregate_key(key)
                if parsed is None:
                    continue
                known[key] = parsed
            dirty.add(key)

    def groups(self) -> dict[str, set[str]]:
        """Values of each capped label named by the aggregates."""
        found: dict[str, set[str]] = defaultdict(set)
        for parsed in self.keys.values():
            if parsed[0] in KIND_LABEL:
                found[KIND_LABEL[parsed[0]]].add(parsed[2])
            if parsed[0] == OWNER_QUOTA:
                found["team"].add(parsed[3].partition("|")[2])
        return found

    def snapshot(self, partitions: frozenset[int], keep: Callable[[str, str], bool],
                 labels_version: int) -> Snapshot:
        """The table's snapshot; the last one again while no cell, partition or label
        verdict (``labels_version``) changed. Callers must not modify it."""
        changed = self._refresh(partitions)
        if changed or self._snapshot is None or self._snapshot[0] != labels_version:
            self._snapshot = (labels_version, snapshot_from_cells(self._cells, partitions, keep))
        return self._snapshot[1]

    def _refresh(self, partitions: frozenset[int]) -> bool:
        """Bring the per-cell sums of ``partitions`` up to date: from the keys written
        since the last call, or from scratch when the partitions changed; returns
        whether any sum changed."""
        data = store_dict(self.table)
        changed = partitions != self._partitions
        if changed:
            self._cells, self._merged = {}, {}
            self._dirty = set(self.keys)
            self._partitions = partitions
        cells, merged, keys = self._cells, self._merged, self.keys
        for key in self._dirty:
            parsed = keys.get(key)
            if parsed is None or parsed[1] not in partitions or parsed[0] == POSITION:
                continue
            record = data.get(key)
            if record is None:
                continue
            new = record["v"]
            old = merged.get(key)
            if new is not old:
                update_cell(cells, parsed, old, new)
                merged[key] = new
                changed = True
        self._dirty = set()
        return changed


@dataclass(frozen=True)
class _EntityFold:
    """How one table folds its entities: key prefix, state type and its aggregates."""

    prefix: str
    empty: Callable[[str], Any]
    load: Callable[[Any], Any]
    contributions: Callable[[Any], Any]
    dump: Callable[[Any], Any]
    index: _AggregateIndex


#: A message to publish: topic, key, value, headers.
_Message = tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]


@dataclass
class _Batch:
    """The writes of one batch of a table: one changelog writer per partition, and the
    messages it publishes (re-keyed wins, ``lead.hot``, dead letters)."""

    table: faust.Table
    writers: dict[int, BatchWriter]
    outbox: list[_Message]


class PulseWorker:
    """One worker process: the Faust app, its agents and the metrics it exports."""

    def __init__(self, settings: Settings):
        if not settings.kafka_bootstrap or settings.redis_url is None:
            raise ValueError("PulseWorker needs kafka_bootstrap and redis_url")
        install_high_watermark_fix(partial(fetched_high_watermarks, client_kwargs(settings)))
        self.settings = settings
        self.reporting_currency = settings.reporting_currency
        self.clock = settings.clock
        self._stats = OperationalStats()
        self._rules = contract_rules(settings)
        self._pricing = pricing(settings)
        self._scoring = load_rules(settings.lead_scoring_file)
        self._lead_book: dict[int, dict[str, ScoreInputs]] = defaultdict(dict)
        self._lead_key_partitions: dict[str, int] = {}
        self._report_config = ReportConfig(
            specs=window_specs(settings.windows_days),
            stages=settings.stage_names,
            probability=settings.stage_probabilities,
            stuck_days=settings.stuck_days,
            clv_max_years=settings.clv_max_years,
            scoring=self._scoring,
            hot_wait_ms=round(settings.hot_lead_wait_hours * 3_600_000),
        )
        self._grace_ms = round(settings.late_grace_days * 86_400_000)
        self._shared_clock_ms: int | None = None
        self._recovery_progress: tuple[int, float] | None = None
        self.fatal: str | None = None
        self._crashing: asyncio.Future[None] | None = None
        self._recovery_watch: asyncio.Future[None] | None = None
        self._ready: frozenset[tuple[str, int]] = frozenset()
        self._recovered: set[str] = set()
        self._label_verdicts: dict[str, dict[str, bool]] = {label: {} for label in FOLDED_LABELS}
        self._verdicts_changed = 0
        self._undecided: dict[str, set[str]] = {label: set() for label in FOLDED_LABELS}
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
        self.quotas_topic = app.topic(
            s.topic_quotas, s.topic_owner_wins, partitions=s.partitions, **raw
        )
        self.leads_topic = app.topic(s.topic_leads, partitions=s.partitions, **raw)
        self.activities_topic = app.topic(s.topic_activities, partitions=s.partitions, **raw)
        table_args = {"default": None, "partitions": s.partitions}
        self.deals = app.Table("pulse-deals", **table_args)
        self.accounts = app.Table("pulse-accounts", **table_args)
        self.owners = app.Table("pulse-owners", **table_args)
        self.leads = app.Table("pulse-leads", **table_args)
        self.activities = app.Table("pulse-activities", **table_args)
        self._deal_index = _AggregateIndex(self.deals)
        self._account_index = _AggregateIndex(self.accounts)
        self._owner_index = _AggregateIndex(self.owners)
        self._lead_index = _AggregateIndex(self.leads)
        self._activity_index = _AggregateIndex(self.activities)
        self._account_fold = _EntityFold(ACCOUNT_ENTITY, AccountState, AccountState.from_json,
                                         account_contributions, AccountState.to_json,
                                         self._account_index)
        self._lead_fold = _EntityFold(LEAD_ENTITY, LeadState, LeadState.from_json,
                                      partial(lead_contributions, rules=self._scoring),
                                      LeadState.to_json, self._lead_index)
        self._owner_fold = _EntityFold(OWNER_ENTITY, OwnerState, OwnerState.from_json,
                                       partial(owner_contributions, pricing=self._pricing),
                                       OwnerState.to_json, self._owner_index)
        self._owner_win_fold = _EntityFold(OWNER_WIN_ENTITY, OwnerWin, OwnerWin.from_json,
                                           win_contributions, OwnerWin.to_json,
                                           self._owner_index)
        #: Each table's aggregate index and the CRM topic whose partitions it is keyed by.
        self._indexed = ((self._deal_index, s.topic_deals),
                         (self._account_index, s.topic_customers),
                         (self._owner_index, s.topic_quotas),
                         (self._lead_index, s.topic_leads),
                         (self._activity_index, s.topic_activities))
        self._activity_fold = _EntityFold(ACTIVITY_ENTITY, ActivityState, ActivityState.from_json,
                                          activity_contributions, ActivityState.to_json,
                                          self._activity_index)
        for index, _ in self._indexed:
            self._watch_changelog_records(index)

        @self.deals.on_recover
        async def _deals_recovered() -> None:
            self._stats.recoveries += 1
            self._deal_index.rebuild()
            await self._verify_positions(self.deals, {s.topic_deals})
            await self._admit_labels(self._deal_index.groups())
            self._recovered.add("deals")
            self._maybe_ready()

        @self.accounts.on_recover
        async def _accounts_recovered() -> None:
            self._account_index.rebuild()
            await self._admit_labels(self._account_index.groups())
            await self._verify_positions(self.accounts,
                                         {s.topic_customers, s.topic_account_wins})
            self._recovered.add("accounts")
            self._maybe_ready()

        @self.owners.on_recover
        async def _owners_recovered() -> None:
            self._owner_index.rebuild()
            await self._admit_labels(self._owner_index.groups())
            await self._verify_positions(self.owners, {s.topic_quotas, s.topic_owner_wins})
            self._recovered.add("owners")
            self._maybe_ready()

        @self.leads.on_recover
        async def _leads_recovered() -> None:
            self._lead_index.rebuild()
            self._rebuild_lead_book()
            await self._admit_labels(self._lead_index.groups())
            await self._verify_positions(self.leads, {s.topic_leads})
            self._recovered.add("leads")
            self._maybe_ready()

        @self.activities.on_recover
        async def _activities_recovered() -> None:
            self._activity_index.rebuild()
            await self._admit_labels(self._activity_index.groups())
            await self._verify_positions(self.activities, {s.topic_activities})
            self._recovered.add("activities")
            self._maybe_ready()

        @app.on_partitions_revoked.connect
        async def _revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
            self._ready = frozenset()
            self._recovered.clear()

        batch = {"max_": s.batch_max_events, "within": s.batch_within_seconds}

        @app.agent(self.deals_topic, name="pulse-deal-agent")
        async def deal_agent(stream: faust.StreamT) -> None:
            async for events in stream.take_events(**batch):
                await finish_batch(self._on_deal_batch(events))

        @app.agent(self.customers_topic, name="pulse-account-agent")
        async def account_agent(stream: faust.StreamT) -> None:
            async for events in stream.take_events(**batch):
                await finish_batch(self._on_account_batch(events))

        @app.agent(self.quotas_topic, name="pulse-owner-agent")
        async def owner_agent(stream: faust.StreamT) -> None:
            async for events in stream.take_events(**batch):
                await finish_batch(self._on_owner_batch(events))

        @app.agent(self.leads_topic, name="pulse-lead-agent")
        async def lead_agent(stream: faust.StreamT) -> None:
            async for events in stream.take_events(**batch):
                await finish_batch(self._on_lead_batch(events))

        @app.agent(self.activities_topic, name="pulse-activity-agent")
        async def activity_agent(stream: faust.StreamT) -> None:
            async for events in stream.take_events(**batch):
                await finish_batch(self._on_activity_batch(events))

        @app.timer(1.0)
        async def _tick() -> None:
            await self._refresh()

        @app.on_partitions_assigned.connect
        async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
            if self._recovery_watch is None:
                self._recovery_watch = asyncio.ensure_future(self._watch_recovery_forever())

        @app.page("/metrics")
        async def metrics(web: Any, request: Any) -> Any:
            return web.bytes(render(self.registry), content_type="text/plain; version=0.0.4")

        @app.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            return web.json(self.health())

        self._agents = (deal_agent, account_agent, owner_agent, lead_agent, activity_agent)

    def _watch_changelog_records(self, index: _AggregateIndex) -> None:
        """Count changelog records applied to a table (recovery, standby), note where
        lead records live, and mark their keys for the table's kept sums."""
        table = index.table
        applied = self._stats.changelog_applied
        dropped = self._stats.changelog_dropped
        lead_keys = self._lead_key_partitions if table is self.leads else None

        def counting(apply_batch: ChangelogApply) -> ChangelogApply:
            def apply(changelog: Sequence[EventT]) -> None:
                applied[table.name] += len(changelog)
                batch, latest = [], {}
                for event in changelog:
                    key = event.key
                    stored = latest[key] if key in latest else table.data.get(key)
                    if supersedes(event.value, stored):
                        batch.append(event)
                        latest[key] = event.value
                    else:
                        dropped[table.name] += 1
                keys = [event.key for event in batch]
                index.add(keys)
                if lead_keys is not None:
                    for key, event in zip(keys, batch, strict=True):
                        if key.startswith(_LEAD_PREFIX):
                            lead_keys[key] = event.message.partition
                apply_batch(batch)

            return apply

        wrap_changelog_apply(table, counting)

    # -- message handling ------------------------------------------------------------------

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

    def _start_batch(self, table: faust.Table, events: Sequence[EventT]) -> _Batch:
        """One writer per partition of the batch, each marked with the batch's last
        offsets, and an empty outbox."""
        writers: dict[int, BatchWriter] = {}
        for event in events:
            msg = event.message
            writer = writers.get(msg.partition)
            if writer is None:
                writer = writers[msg.partition] = BatchWriter(table.data)
            writer.mark(msg.topic, msg.partition, msg.offset)
        return _Batch(table, writers, [])

    async def _verify_positions(self, table: faust.Table, topics: set[str]) -> None:
        """After a recovery: the restored state must reach the group's committed offsets.

        If the group committed a source partition beyond the last offset the state
        holds, the changelog lost records (deleted, recreated or truncated) and every
        KPI of that partition would be wrong; the worker stops with the reason.

        A source partition with no committed offset is sought to its beginning: the
        consumer may have fetched (and Faust dropped) its first messages during the
        recovery, and Faust's seek to committed offsets leaves such a partition where
        the fetch left it, so those messages would be skipped.
        """
        if recovery_superseded(self.app):
            log.info("recovery of %s superseded by a new assignment; checked after the next",
                     table.name)
            return
        owned = sorted((tp.topic, tp.partition) for tp in assigned_actives(self.app)
                       if tp.topic in topics)
        committed = await committed_offsets(self.settings, self.settings.app_id, owned)
        for topic, partition in owned:
            if (topic, partition) not in committed:
                await seek(self.app, TP(topic, partition), 0)
        for (topic, partition), offset in sorted(committed.items()):
            stored = table.data.get(position_key(partition, topic))
            applied = -1 if stored is None else int(stored["v"])
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

    def _dead_letter(self, batch: _Batch, event: EventT, rejection: Rejection) -> None:
        msg = event.message
        self._stats.rejected[rejection.reason] += 1
        values = (rejection.reason, rejection.detail, msg.topic, str(msg.partition),
                  str(msg.offset))
        headers = [(name, value.encode("utf-8", "replace"))
                   for name, value in zip(DEAD_LETTER_HEADERS, values, strict=True)]
        batch.outbox.append((self.settings.topic_dead_letters, msg.key, msg.value or b"",
                             headers))
        log.info("rejected %s/%s@%s: %s (%s)", msg.topic, msg.partition, msg.offset,
                 rejection.reason, rejection.detail)

    def _note_position(self, event: EventT, time_ms: int | None) -> int:
        """Record the message's offset and event time; returns how many ms its time lies
        behind the latest event time read from its partition before it (0 if not behind)."""
        msg = event.message
        stats, tp = self._stats, (msg.topic, msg.partition)
        stats.last_offset[tp] = msg.offset
        if time_ms is None:
            return 0
        latest = stats.partition_latest_ms.get(tp)
        if latest is None or time_ms > latest:
            stats.partition_latest_ms[tp] = time_ms
            return 0
        return latest - time_ms

    async def _decode_and_admit(
        self, batch: _Batch, events: Sequence[EventT], role: TopicRole
    ) -> list[tuple[EventT, Any]]:
        """Valid, non-duplicate events of a batch; rejects go to the dead-letter topic."""
        valid: list[tuple[EventT, Any]] = []
        for event in events:
            msg = event.message
            decoded = decode_event(msg.value, msg.key, role, self._rules)
            if isinstance(decoded, Rejection):
                self._note_position(event, None)
                self._dead_letter(batch, event, decoded)
            else:
                valid.append((event, decoded))
        verdicts = await self.redis.check_many([
            (decoded.id, f"{e.message.topic}/{e.message.partition}/{e.message.offset}")
            for e, decoded in valid
        ])
        admitted: list[tuple[EventT, Any]] = []
        for (event, decoded), verdict in zip(valid, verdicts, strict=True):
            lateness = self._note_position(event, ms_from_datetime(decoded.time))
            if verdict == "duplicate":
                self._stats.duplicates[decoded.type] += 1
                continue
            if lateness > self._grace_ms:
                self._stats.late[decoded.type] += 1
            if verdict == "unavailable":
                self._stats.dedup_unavailable += 1
            elif verdict == "replay":
                self._stats.replays += 1
            self._stats.processed[decoded.type] += 1
            admitted.append((event, decoded))
        return admitted

    async def _flush(self, batch: _Batch) -> None:
        """Hand the batch's messages and changelog records to the Kafka producer.

        Both go straight to the producer, awaited, before the batch ends (and is
        acked): the commit flushes the producer before committing offsets, so a
        committed event's messages and records are on the broker. Faust's own paths
        are not used: ``send_soon`` queues in a buffer whose flush gives up after
        0.1 s without progress, so a stop or crash could commit an event whose re-keyed
        win was never sent; ``send_changelog`` publishes one event-loop hop per record,
        which capped a worker at ~1,000 events/s. Records are encoded as the table's
        JSON codec would.
        """
        producer = self.app.producer
        for topic, key, value, headers in batch.outbox:
            await producer.send(topic, key, value, None, None, headers)
        batch.outbox.clear()
        changelog = batch.table.changelog_topic.get_topic_name()
        dumps = json.dumps
        for partition, writer in batch.writers.items():
            for key, record in writer.drain():
                await producer.send(changelog, dumps(key).encode(), dumps(record).encode(),
                                    partition, None, None)

    async def _admit_labels(self, values: Mapping[str, Iterable[str]]) -> None:
        """Decide, through the shared Redis registry, which new label values (teams,
        sources, products, competitors) get their own series.

        While Redis is unreachable, undecided values are kept provisionally as long as
        this worker knows fewer than the cap, and decided when Redis answers again.
        """
        for label in FOLDED_LABELS:
            verdicts = self._label_verdicts[label]
            undecided = self._undecided[label]
            new = sorted({v for v in values.get(label, ()) if v not in verdicts} | undecided)
            cap = self.settings.label_cap(label)
            for start in range(0, len(new), 1000):
                chunk = new[start:start + 1000]
                answer = await self.redis.admit_labels(label, chunk, cap)
                if answer is None:
                    self._keep_provisionally(label, new[start:])
                    break
                if any(verdicts.get(value) != kept for value, kept in answer.items()):
                    verdicts.update(answer)
                    self._verdicts_changed += 1
                undecided.difference_update(chunk)

    def _keep_provisionally(self, label: str, values: list[str]) -> None:
        verdicts, undecided = self._label_verdicts[label], self._undecided[label]
        undecided.update(values)
        kept = sum(verdicts.values())
        for value in sorted(undecided):
            if value in verdicts:
                continue
            verdicts[value] = kept < self.settings.label_cap(label)
            kept += verdicts[value]
            self._verdicts_changed += 1

    def _keep_label(self, label: str, value: str) -> bool:
        return self._label_verdicts[label].get(value, False)

    async def _on_deal_batch(self, events: Sequence[EventT]) -> None:
        batch = self._start_batch(self.deals, events)
        admitted = await self._decode_and_admit(batch, events, "deals")
        await self._admit_labels(_deal_labels(e for _, e in admitted))
        for event, deal_event in admitted:
            msg = event.message
            result = fold_deal_event(batch.writers[msg.partition], msg.partition, msg.offset,
                                     deal_event, self._pricing)
            self._deal_index.add(result.written)
            self._forward_win(batch, result.state)
        await self._flush(batch)

    def _forward_win(self, batch: _Batch, state: DealState) -> None:
        """Re-key a won deal by account and by owner (sent again on every replay; the
        receivers keep each deal's earliest win, so repeats change nothing)."""
        if state.created is None or state.closed is None or state.closed[2] != "won":
            return
        info, won_at = state.created[2], state.closed[0]
        account_id = info.get("account_id")
        if account_id:
            payload = {"account_id": account_id, "won_at_ms": won_at, "deal_id": state.deal_id}
            batch.outbox.append((self.settings.topic_account_wins, account_id.encode(),
                                 json.dumps(payload).encode(), None))
        owner_id = str(info["owner_id"])
        cents = self._pricing.to_cents(str(state.closed[3]), str(info["currency"]))
        payload = {"owner_id": owner_id, "won_at_ms": won_at, "deal_id": state.deal_id,
                   "cents": cents}
        batch.outbox.append((self.settings.topic_owner_wins, owner_id.encode(),
                             json.dumps(payload).encode(), None))

    async def _on_rekeyed_batch(
        self, table: faust.Table, events: Sequence[EventT], wins_topic: str, role: TopicRole,
        labels: Callable[[list[Any]], Mapping[str, Iterable[str]]],
        fold_win: Callable[[BatchWriter, EventT, dict[str, Any]], None],
        fold_event: Callable[[BatchWriter, EventT, Any], None],
    ) -> None:
        """A batch of a table fed by a CRM topic and by won deals re-keyed onto it."""
        batch = self._start_batch(table, events)
        decoded = await self._decode_and_admit(
            batch, [e for e in events if e.message.topic != wins_topic], role)
        await self._admit_labels(labels([d for _, d in decoded]))
        admitted = {id(event): value for event, value in decoded}
        for event in events:
            store = batch.writers[event.message.partition]
            if event.message.topic == wins_topic:
                self._note_position(event, None)
                fold_win(store, event, json.loads(event.message.value))
            elif id(event) in admitted:
                fold_event(store, event, admitted[id(event)])
        await self._flush(batch)

    async def _on_account_batch(self, events: Sequence[EventT]) -> None:
        def fold_win(store: BatchWriter, event: EventT, win: dict[str, Any]) -> None:
            self._fold_entity(self._account_fold, store, event, ACCOUNT_WIN_SOURCE,
                              win["account_id"], win["won_at_ms"], partial(apply_account_win,
                                                        won_at_ms=win["won_at_ms"],
                                                        deal_id=win["deal_id"]))

        def fold_churn(store: BatchWriter, event: EventT, churn: CustomerChurned) -> None:
            time_ms = ms_from_datetime(churn.time)
            self._fold_entity(self._account_fold, store, event, CHURN_SOURCE, churn.data.account_id,
                              time_ms, partial(apply_account_churn, churned_at_ms=time_ms,
                                               event_id=churn.id,
                                               competitor=churn.data.competitor))

        await self._on_rekeyed_batch(
            self.accounts, events, self.settings.topic_account_wins, "customers",
            lambda churns: {"competitor": {c.data.competitor for c in churns
                                           if c.data.competitor}},
            fold_win, fold_churn)

    async def _on_owner_batch(self, events: Sequence[EventT]) -> None:
        def fold_win(store: BatchWriter, event: EventT, win: dict[str, Any]) -> None:
            self._fold_entity(self._owner_win_fold, store, event, OWNER_WIN_SOURCE, win["deal_id"],
                              win["won_at_ms"], partial(apply_owner_win,
                                                        won_at_ms=win["won_at_ms"],
                                                        owner_id=win["owner_id"],
                                                        cents=win["cents"]))

        def fold_quota(store: BatchWriter, event: EventT, quota: QuotaSet) -> None:
            d, time_ms = quota.data, ms_from_datetime(quota.time)
            self._fold_entity(self._owner_fold, store, event, QUOTA_SOURCE, d.owner_id, time_ms,
                              partial(apply_quota, period=d.period, time_ms=time_ms,
                                      event_id=quota.id, team=d.team, amount=str(d.amount),
                                      currency=d.currency))

        await self._on_rekeyed_batch(
            self.owners, events, self.settings.topic_owner_wins, "quotas",
            lambda quotas: {"owner": {q.data.owner_id for q in quotas},
                            "team": {q.data.team for q in quotas}},
            fold_win, fold_quota)

    async def _on_lead_batch(self, events: Sequence[EventT]) -> None:
        batch = self._start_batch(self.leads, events)
        admitted = await self._decode_and_admit(batch, events, "leads")
        await self._admit_labels({"source": {e.data.source for _, e in admitted
                                             if isinstance(e, LeadCreated)}})
        for event, lead_event in admitted:
            msg = event.message
            result = self._fold_entity(
                self._lead_fold, batch.writers[msg.partition], event, LEAD_SOURCE,
                lead_event.data.lead_id,
                ms_from_datetime(lead_event.time), partial(apply_lead_event, event=lead_event))
            self._note_lead(msg.partition, result.state)
            self._publish_hot(batch, result.state, lead_event.id)
        await self._flush(batch)

    async def _on_activity_batch(self, events: Sequence[EventT]) -> None:
        batch = self._start_batch(self.activities, events)
        admitted: list[tuple[EventT, ActivityLogged]] = await self._decode_and_admit(
            batch, events, "activities")
        await self._admit_labels({"owner": {a.data.owner_id for _, a in admitted},
                                  "team": {a.data.team for _, a in admitted}})
        for event, activity in admitted:
            self._fold_entity(
                self._activity_fold, batch.writers[event.message.partition], event, ACTIVITY_SOURCE,
                activity.data.activity_id or activity.id, ms_from_datetime(activity.time),
                partial(apply_activity_event, event=activity))
        await self._flush(batch)

    def _note_lead(self, partition: int, state: LeadState) -> None:
        self._lead_key_partitions[entity_key(LEAD_ENTITY, state.lead_id)] = partition
        inputs = score_inputs(state, self._scoring)
        if inputs is None:
            self._lead_book[partition].pop(state.lead_id, None)
        else:
            self._lead_book[partition][state.lead_id] = inputs

    def _rebuild_lead_book(self) -> None:
        """Score inputs of the open leads, from the restored table."""
        self._lead_book.clear()
        data = self.leads.data
        for key, partition in self._lead_key_partitions.items():
            record = data.get(key)
            if record is not None:
                raw = json.loads(record) if isinstance(record, str) else record
                self._note_lead(partition, LeadState.from_json(raw["v"]))

    def _publish_hot(self, batch: _Batch, state: LeadState, event_id: str) -> None:
        """Publish ``lead.hot`` when this event took the lead over the hot threshold
        (again on a replay: the id is deterministic, so consumers can drop repeats)."""
        for at, crossing_id in hot_crossings(state, self._scoring):
            if crossing_id != event_id or state.created is None:
                continue
            hot = {"specversion": "1.0", "id": f"{state.lead_id}:hot:{event_id}",
                   "source": f"pipeline-pulse/{self.settings.app_id}", "type": "lead.hot",
                   "time": _iso(at), "subject": state.lead_id,
                   "datacontenttype": "application/json",
                   "data": {"lead_id": state.lead_id,
                            "source": state.created[2]["source"],
                            "owner_id": state.created[2].get("owner_id"),
                            "threshold": self._scoring.hot_threshold}}
            batch.outbox.append((self.settings.topic_lead_scores, state.lead_id.encode(),
                                 json.dumps(hot).encode(), None))

    def _fold_entity(self, kind: _EntityFold, store: BatchWriter, event: EventT, source: str,
                     entity_id: str, time_ms: int, apply: Callable[[Any], Any]) -> FoldResult:
        msg = event.message
        result = guarded_fold(
            store,
            source=source,
            partition=msg.partition,
            offset=msg.offset,
            key=entity_key(kind.prefix, entity_id),
            empty=partial(kind.empty, entity_id),
            load=kind.load,
            apply=apply,
            contributions=kind.contributions,
            dump=kind.dump,
            event_time_ms=time_ms,
        )
        kind.index.add(result.written)
        return result

    # -- periodic work and the KpiSource protocol ---------------------------------------

    def _active_partitions(self, topic: str) -> frozenset[int]:
        """Partitions of ``topic`` whose state is exported: assigned, and recovered.

        Emptied when a rebalance revokes partitions and filled again only when the
        new assignment's recovery is complete, so a partition is never exported by
        its old owner after the revocation or by its new owner before it is restored.
        """
        return frozenset(p for t, p in self._ready if t == topic)

    def _maybe_ready(self) -> None:
        if self._recovered != {"deals", "accounts", "owners", "leads", "activities"}:
            return
        if recovery_superseded(self.app):
            # A recovery Faust completes after a new assignment arrived: the new
            # partitions are not restored yet; the next recovery's callbacks decide.
            self._recovered.clear()
            return
        self._ready = frozenset((tp.topic, tp.partition) for tp in assigned_actives(self.app))

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` answers: progress without computing a KPI (a poller's
        cheap alternative to a ``/metrics`` scrape)."""
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
        s = self.settings
        return {topic: self._active_partitions(topic) for topic in s.source_topics}

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
        if any(self._undecided.values()):
            await self._admit_labels({})
        consumer = self.app.consumer
        s = self.settings
        sources = {*s.source_topics, s.topic_account_wins, s.topic_owner_wins}
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
        self._stats.lag_refreshes += 1
        if self.clock == "event":
            local = self._local_latest_ms()
            if local is not None:
                shared = await self.redis.merge_clock(local)
                if shared is not None:
                    self._shared_clock_ms = shared

    def _local_latest_ms(self) -> int | None:
        """Latest event time of the owned partitions (their clock records only)."""
        times = [record["v"] for index, topic in self._indexed
                 for p in self._active_partitions(topic)
                 if (record := index.table.data.get(clock_key(p))) is not None]
        return max(times, default=None)

    def report(self) -> Report | None:
        """KPIs of the partitions owned now (the ``KpiSource`` protocol)."""
        first, *others = [index.snapshot(self._active_partitions(topic), self._keep_label,
                                         self._verdicts_changed)
                          for index, topic in self._indexed]
        local = [v for v in (first.latest_event_ms, *(o.latest_event_ms for o in others))
                 if v is not None]
        snap = replace(first, folded=dict(first.folded), latest_event_ms=max(local, default=None))
        for other in others:
            snap.merge(other)
        lead_parts = self._active_partitions(self.settings.topic_leads)
        snap.open_leads = [lead for p in lead_parts for lead in self._lead_book[p].values()]
        if self.clock == "wall":
            as_of = int(time.time() * 1000)
        else:
            candidates = [v for v in (snap.latest_event_ms, self._shared_clock_ms)
                          if v is not None]
            if not candidates:
                return None
            as_of = max(candidates)
        return build_report(snap, as_of, self._report_config)

    def stats(self) -> OperationalStats:
        """Operational counters of this process."""
        return self._stats

    def dedup_up(self) -> bool:
        """Whether Redis answered last time."""
        return self.redis.up

    def owned_partitions(self) -> int:
        """Deal partitions owned now."""
        return len(self._active_partitions(self.settings.topic_deals))
