"""Handler cost: microseconds per event of every spec's decode, fold, contributions and
published messages, without Faust, Kafka or Redis (:class:`InMemoryPipeline`, the
pipeline's semantics in memory), on a generated stream of the whole catalogue.

``python -m bench.handlers`` prints it; ``make bench`` writes it to
``bench/results.json`` as ``handler_us_per_event``.
"""

from __future__ import annotations

__all__ = ["handler_us_per_event"]

import datetime as dt
import time
from typing import Any

from stream_app.config import Settings, pricing
from stream_app.kpi.scoring import load_rules
from stream_app.sources.catalogue import catalogue
from stream_app.sources.memory import InMemoryPipeline
from stream_app.tools.generator import GeneratorSettings, generate_events


def handler_us_per_event(days: int = 120, deals_per_day: float = 12.0, seed: int = 11,
                         repeats: int = 3) -> dict[str, Any]:
    """The best of ``repeats`` in-memory folds of one generated stream, per event."""
    settings = Settings(clock="event", partitions=1)
    end = dt.datetime(2026, 10, 20, 12, tzinfo=dt.UTC)
    events = list(generate_events(GeneratorSettings(
        seed=seed, start=end - dt.timedelta(days=days), end=end, deals_per_day=deals_per_day)))
    best = float("inf")
    for _ in range(repeats):
        specs = catalogue(settings, pricing(settings), load_rules(settings.lead_scoring_file))
        pipeline = InMemoryPipeline(specs, settings)
        started = time.perf_counter()
        pipeline.run(events)
        best = min(best, time.perf_counter() - started)
    return {"events": len(events), "repeats": repeats,
            "us_per_event": best / len(events) * 1e6}


if __name__ == "__main__":
    result = handler_us_per_event()
    print(f"{result['events']:,} events: {result['us_per_event']:.1f} us per event in the "
          f"handlers (best of {result['repeats']}, in memory)")
