"""The gateway's roster: CRM owner ids to teams from the ``rep.updated`` events on the
roster topic, so a webhook that carries only an owner id lands in the owner's team.

:class:`Roster` keeps each owner's latest event (time, then id) by the worker's rule;
:class:`RosterFollower` reads the whole topic from the beginning at start, then follows
it (no consumer group: every gateway process reads every partition). A team from the
roster comes before the mapping file's ``owners`` (the roster's start) and its
``default_team``.
"""

from __future__ import annotations

__all__ = ["Roster", "RosterFollower"]

import asyncio
import logging
from contextlib import suppress

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from stream_app.adapters.kafka import client_kwargs
from stream_app.config import Settings, contract_rules
from stream_app.events.codec import Rejection, decode_event
from stream_app.events.models import RepUpdated
from stream_app.kpi.reps import RepState, apply_rep_update
from stream_app.kpi.windows import ms_from_datetime

log = logging.getLogger(__name__)

#: Seconds between two looks for the roster topic while it does not exist.
TOPIC_POLL_SECONDS = 5.0


class Roster:
    """Each owner's profile, kept by the worker's rule (:func:`apply_rep_update`: the
    latest event by time, then id)."""

    def __init__(self) -> None:
        self._states: dict[str, RepState] = {}

    def note(self, event: RepUpdated) -> None:
        """Fold the event into its owner's profile (any order, any repeat)."""
        owner = event.data.owner_id
        self._states[owner] = apply_rep_update(
            self._states.get(owner) or RepState(owner), ms_from_datetime(event.time),
            event.id, event.data.name, event.data.team)

    def team(self, owner_id: str) -> str | None:
        """The owner's team in the roster; None when unknown or the profile names none."""
        found = self._states.get(owner_id)
        return None if found is None or found.profile is None else found.profile[3]

    def __len__(self) -> int:
        return len(self._states)


class RosterFollower:
    """Reads the roster topic into a :class:`Roster` until stopped."""

    def __init__(self, settings: Settings, roster: Roster):
        self._settings, self.roster = settings, roster
        self._rules = contract_rules(settings)
        self._task: asyncio.Task[None] | None = None
        #: Set once the topic was read up to its end as of the start (or found absent).
        self.loaded = asyncio.Event()

    def start(self) -> None:
        """Start following in the background."""
        self._task = asyncio.create_task(self._follow(), name="roster-follower")

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        topic = self._settings.topic_reps
        while True:
            consumer = AIOKafkaConsumer(**client_kwargs(self._settings), group_id=None,
                                        enable_auto_commit=False)
            try:
                await consumer.start()
                partitions = await self._partitions(topic)
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
                await self._read(consumer, partitions)
            except KafkaError as exc:
                log.warning("roster topic %s unreadable (%s); retrying", topic, exc)
                await asyncio.sleep(TOPIC_POLL_SECONDS)
            finally:
                await consumer.stop()

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        admin = AIOKafkaAdminClient(**client_kwargs(self._settings))
        await admin.start()
        try:
            while True:
                if topic in await admin.list_topics():
                    [described] = await admin.describe_topics([topic])
                    numbers = sorted(p["partition"] for p in described["partitions"])
                    if numbers:
                        return [TopicPartition(topic, n) for n in numbers]
                self.loaded.set()  # no roster yet: the mapping files' owners decide
                await asyncio.sleep(TOPIC_POLL_SECONDS)
        finally:
            await admin.close()

    async def _read(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
                    ) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for part, messages in batches.items():
                for message in messages:
                    event = decode_event(message.value or b"", message.key, "reps",
                                         self._rules)
                    if isinstance(event, RepUpdated):
                        self.roster.note(event)
                    elif isinstance(event, Rejection):
                        log.warning("roster message %s/%s skipped: %s", part.partition,
                                    message.offset, event.detail)
            if not self.loaded.is_set() and await self._caught_up(consumer, partitions):
                self.loaded.set()
                log.warning("roster loaded: %d owners", len(self.roster))

    @staticmethod
    async def _caught_up(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> bool:
        """Whether every partition was read up to the high watermark its last fetch saw
        (not ListOffsets: Tansu answers it with a stale offset)."""
        for part in partitions:
            high = consumer.highwater(part)
            if high is None or await consumer.position(part) < high:
                return False
        return True
