"""Kafka plumbing: client settings, topic creation, and the Tansu high-watermark fix.

Tansu answers ListOffsets(latest) with the last batch's base offset + 1 instead
of the high watermark, so Faust's changelog recovery would stop early and
silently restore stale tables. :func:`fetched_high_watermarks` (installed into
Faust by :mod:`stream_app.adapters.faust_compat`) makes Faust take the larger of
ListOffsets and the high watermark a Fetch reports; on a real Kafka both agree and
the fix costs one short fetch per recovery.
"""

from __future__ import annotations

__all__ = [
    "OutsideConsumer",
    "client_kwargs",
    "committed_offsets",
    "ensure_topics",
    "fetched_high_watermarks",
    "topic_configs",
    "topic_plan",
]

import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream_app.config import Settings

log = logging.getLogger(__name__)


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection arguments for aiokafka clients (TLS / SASL from the settings)."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value()
            if settings.kafka_sasl_password
            else None
        )
    return kwargs


def topic_plan(settings: Settings) -> dict[str, int]:
    """Every topic the worker reads or writes, with its partition count."""
    internal = (settings.topic_account_wins, settings.topic_owner_wins,
                settings.topic_forecast_deals, settings.topic_lead_scores)
    plan = {topic: settings.partitions for topic in (*settings.source_topics, *internal)}
    plan[settings.topic_dead_letters] = 1
    return plan


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    """Topic-level configs of a topic the worker creates."""
    configs = {}
    if name in (settings.topic_quotas, settings.topic_reps):
        # Keyed by owner, one quota per owner and period: compaction would keep only an
        # owner's latest quota.set. The roster's latest profile is the latest in event
        # time, not in offset order. Both are few, so the topics keep them all.
        configs.update({"cleanup.policy": "delete", "retention.ms": "-1",
                        "retention.bytes": "-1"})
    if settings.min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(settings.min_insync_replicas)
    return configs


async def ensure_topics(settings: Settings, plan: Mapping[str, int] | None = None) -> None:
    """Create the topics of ``plan`` (default :func:`topic_plan`) that do not exist yet."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=count, replication_factor=settings.replication_factor,
                     topic_configs=topic_configs(settings, name) or None)
            for name, count in (topic_plan(settings) if plan is None else plan).items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def committed_offsets(settings: Settings, group: str,
                            partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Offsets ``group`` committed for ``partitions`` (absent: nothing committed)."""
    if not partitions:
        return {}
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    try:
        await admin.start()
        found = await admin.list_consumer_group_offsets(
            group, partitions=[TopicPartition(t, p) for t, p in partitions])
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in found.items()
            if meta.offset >= 0}


async def fetched_high_watermarks(
    kwargs: Mapping[str, Any], listed: Mapping[Any, int | None], timeout: float = 10.0
) -> dict[Any, int | None]:
    """Correct ListOffsets results with the high watermark of a Fetch at the listed end."""
    result: dict[Any, int | None] = dict(listed)
    probe = {tp: offset for tp, offset in listed.items() if offset}
    if not probe:
        return result
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, **kwargs)
    try:
        await consumer.start()
        by_kafka_tp = {TopicPartition(tp.topic, tp.partition): tp for tp in probe}
        consumer.assign(list(by_kafka_tp))
        for ktp, tp in by_kafka_tp.items():
            consumer.seek(ktp, max(probe[tp] - 1, 0))
        pending = set(by_kafka_tp)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            await consumer.getmany(*pending, timeout_ms=200, max_records=1)
            for ktp in list(pending):
                high = consumer.highwater(ktp)
                if high is not None:
                    tp = by_kafka_tp[ktp]
                    result[tp] = max(high, result[tp] or 0)
                    pending.discard(ktp)
        if pending:
            raise RuntimeError(
                f"could not read the high watermark of {sorted(map(str, pending))} "
                f"within {timeout}s; refusing to recover tables from a partial changelog"
            )
    finally:
        await consumer.stop()
    for tp, offset in result.items():
        if offset != listed[tp]:
            log.info("high watermark of %s: ListOffsets said %s, Fetch says %s",
                     tp, listed[tp], offset)
    return result


class OutsideConsumer:
    """A plain consumer outside the consumer group (it never commits), started on first
    use and stopped by :meth:`close`: for reading partitions by offset beside Faust."""

    def __init__(self, settings: Settings, **options: Any):
        self._settings = settings
        self._options = options
        self._consumer: AIOKafkaConsumer | None = None

    async def started(self) -> AIOKafkaConsumer:
        """The consumer, started."""
        if self._consumer is None:
            consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None,
                                        **self._options, **client_kwargs(self._settings))
            try:
                await consumer.start()
            except BaseException:  # refused or cancelled: closed, not left for __del__
                await consumer.stop()
                raise
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        """Stop the consumer (the worker is stopping)."""
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
