"""``/metrics`` of a worker: the tables' snapshots brought up to date on the event loop,
the report and the text built in a thread."""

from __future__ import annotations

__all__ = ["Scrape"]

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import TypeVar

from prometheus_client.core import Metric

from stream_app.adapters.exposition import TextRenderer
from stream_app.adapters.forecast_process import ForecastProcess
from stream_app.adapters.forecast_refresh import ForecastRefresher
from stream_app.adapters.label_registry import LabelRegistry
from stream_app.adapters.loop_watch import collector_paused
from stream_app.adapters.metrics import PulseCollector
from stream_app.adapters.pipeline import SourcePipeline
from stream_app.kpi.live import ReportReuse
from stream_app.kpi.report import ReportConfig
from stream_app.kpi.rows import Report
from stream_app.kpi.snapshot import Snapshot, combined

_Sent = TypeVar("_Sent")

#: What a report is built from: what identifies the state read, the snapshot, T.
ReportInputs = tuple[Hashable, Snapshot, int]


class Scrape:
    """Reports and expositions of the partitions a worker exports.

    The snapshots (:class:`~stream_app.adapters.aggregate_index.AggregateIndex`) are
    moved only by :meth:`keep_current` and the start of :meth:`exposition`, on the event
    loop where the folds run; the report and the text read nothing else, so they are
    built in a thread while the loop goes on folding. One scrape at a time. The forecast
    rows come from a :class:`ForecastRefresher` (computed in a child process with
    ``forecast_process``), which a scrape waits for ``forecast_wait_seconds`` at most;
    :meth:`keep_current` and each scrape start the forecast of the state they read."""

    def __init__(self, pipelines: Callable[[], Sequence[SourcePipeline]],
                 exported: Callable[[str], frozenset[int]], labels: LabelRegistry,
                 clock: str, shared_clock_ms: Callable[[], int | None],
                 config: ReportConfig, forecast_wait_seconds: float = 0.5,
                 forecast_process: bool = False):
        self._pipelines, self._exported = pipelines, exported
        self._labels, self._clock, self._shared_clock_ms = labels, clock, shared_clock_ms
        self._calendar = config.calendar
        self.forecast_process = ForecastProcess(config.forecast) if forecast_process else None
        self._forecasts = ForecastRefresher(
            config.forecast, forecast_wait_seconds,
            compute=None if self.forecast_process is None else self.forecast_process.rows)
        self._reports = ReportReuse(config, self._forecasts.rows)
        self._renderer = TextRenderer()
        self._lock = asyncio.Lock()

    def report(self) -> Report | None:
        """KPIs of the partitions exported now (None before any T is known)."""
        prepared = self._inputs()
        return None if prepared is None else self._reports.report(*prepared)

    def keep_current(self) -> None:
        """Fold the records written since the last call into the tables' snapshots (the
        worker calls it once a second), so a scrape's share of the work on the event
        loop stays what the last second wrote, however long since the last scrape; and
        start the forecast of the state now, so a scrape finds it computed."""
        if self._lock.locked():
            return
        self._prefetch(self._inputs())

    def _prefetch(self, prepared: ReportInputs | None) -> None:
        if prepared is None:
            return
        _, snap, as_of = prepared
        if snap.forecast is None or not snap.forecast.states:
            if self.forecast_process is not None:  # the forecast partition is elsewhere
                self.forecast_process.release()
            return
        self._forecasts.prefetch(snap.forecast, self._calendar.day_of(as_of))

    def close(self) -> None:
        """Stop the forecast process, if any."""
        if self.forecast_process is not None:
            self.forecast_process.close()

    async def exposition(self, collector: PulseCollector) -> bytes:
        """The text exposition of ``collector``'s families now."""
        async with self._lock:
            prepared = self._inputs()
            self._prefetch(prepared)  # computed in parallel with the rest of the report
            head, tail = list(collector.head()), list(collector.tail())
            return await asyncio.to_thread(self._render, collector, prepared, head, tail)

    async def respond(self, collector: PulseCollector,
                      send: Callable[[bytes], Awaitable[_Sent]]) -> _Sent:
        """:meth:`exposition`, handed to ``send``, with the cyclic collector paused from
        the report's start until ``send`` returned (:func:`collector_paused`): its first
        pass after a scrape walks every object the scrape kept (8-18 ms), and made then
        it would hold the client waiting for the text."""
        with collector_paused():
            return await send(await self.exposition(collector))

    def _render(self, collector: PulseCollector, prepared: ReportInputs | None,
                head: list[Metric], tail: list[Metric]) -> bytes:
        kpis = ([] if prepared is None
                else collector.kpi_families(self._reports.report(*prepared)))
        return self._renderer.render_families([*head, *kpis, *tail])

    def _parts(self) -> list[tuple[SourcePipeline, frozenset[int]]]:
        return [(pipeline, self._exported(pipeline.spec.topic)) for pipeline in self._pipelines()]

    def _snapshots(self, parts: list[tuple[SourcePipeline, frozenset[int]]]) -> list[Snapshot]:
        return [pipeline.index.snapshot(partitions, self._labels.keep, self._labels.version)
                for pipeline, partitions in parts]

    def _inputs(self) -> ReportInputs | None:
        parts = self._parts()
        snap = combined(self._snapshots(parts))
        for pipeline, partitions in parts:
            if pipeline.book is not None:
                pipeline.book.contribute(snap, partitions, self._labels.keep,
                                        self._labels.version)
        inputs = (self._labels.version, self._forecasts.version, tuple(
            (pipeline.index.version, partitions,
             None if pipeline.book is None else pipeline.book.version)
            for pipeline, partitions in parts))
        if self._clock == "wall":
            as_of = int(time.time() * 1000)
        else:
            candidates = [v for v in (snap.latest_event_ms, self._shared_clock_ms())
                          if v is not None]
            if not candidates:
                return None
            as_of = max(candidates)
        return inputs, snap, as_of
