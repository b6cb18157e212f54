"""The Faust baselines Pipeline Pulse is measured against in ``make bench``.

- ``passthrough``: an agent that only iterates the stream (Faust's own per-event cost);
- ``naive``: the textbook Faust implementation of two KPIs, one table write per event
  and a hopping window (30 days, 1-day step) updated per won deal: events by team
  and type in a plain table, won amount by team in the windowed table.

Each runs as its own process (``python -m bench.baselines KIND ...``), counts the
events it handles and, when it has seen ``--expect`` of them, writes the seconds
from its first to its last event to ``--out`` as JSON.
"""

from __future__ import annotations

__all__ = ["EventClock", "make_app"]

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import faust

from stream_app.adapters.faust_compat import install_fetch_max_wait


class EventClock:
    """Counts events, remembers the current event time, and reports when done."""

    def __init__(self, expect: int, out: Path):
        self.expect = expect
        self.out = out
        self.count = 0
        self.first: float | None = None
        self.event_time = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

    def tick(self) -> None:
        """One more event handled."""
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.count += 1
        if self.count == self.expect:
            seconds = now - self.first
            self.out.write_text(json.dumps({"events": self.count, "seconds": seconds}))


def make_app(kind: str, bootstrap: str, topic: str, partitions: int,
             clock: EventClock) -> faust.App:
    """A Faust app with the ``kind`` baseline agent on ``topic``."""
    app = faust.App(
        f"bench-{kind}-{time.time_ns()}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        autodiscover=False,
        topic_partitions=partitions,
        topic_replication_factor=1,
        broker_session_timeout=6,
        broker_heartbeat_interval=1.2,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw", partitions=partitions)
    if kind == "passthrough":

        @app.agent(source)
        async def passthrough(stream: Any) -> None:
            async for _ in stream:
                clock.tick()

        return app

    deal_team = app.Table("deal-team", default=str, partitions=partitions)
    by_team = app.Table("events-by-team", default=int, partitions=partitions)
    won = app.Table("won-by-team", default=float, partitions=partitions).hopping(
        dt.timedelta(days=30), dt.timedelta(days=1), expires=dt.timedelta(days=400)
    ).relative_to(lambda event: clock.event_time)

    @app.agent(source)
    async def naive(stream: Any) -> None:
        async for value in stream:
            event = json.loads(value)
            data = event["data"]
            clock.event_time = dt.datetime.fromisoformat(event["time"])
            if event["type"] == "deal.created":
                deal_team[data["deal_id"]] = data["team"]
            team = deal_team[data["deal_id"]]
            by_team[f"{team}/{event['type']}"] += 1
            if event["type"] == "deal.won":
                won[team] += float(data["amount"])
            clock.tick()

    return app


def main() -> None:
    """Run one baseline until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("passthrough", "naive"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--expect", type=int, required=True, help="events to wait for")
    parser.add_argument("--out", type=Path, required=True, help="where to write the result")
    parser.add_argument("--fetch-max-wait", type=float, default=None,
                        help="seconds a fetch waits for records, as the Pulse worker measured "
                        "beside it (default: Faust's 1.5 s)")
    args = parser.parse_args()
    if args.fetch_max_wait is not None:
        install_fetch_max_wait(args.fetch_max_wait)
    clock = EventClock(args.expect, args.out)
    app = make_app(args.kind, args.bootstrap, args.topic, args.partitions, clock)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    # As the Pulse worker (faust_compat.faust_worker): the spinner would set the root
    # logger to DEBUG and build every debug line of aiokafka and Faust.
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
