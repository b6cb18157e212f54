"""``stream-app demo``: embedded servers, a worker, a year of history, then a live trickle."""

from __future__ import annotations

__all__ = ["run_demo"]

import asyncio
import contextlib
import datetime as dt
import os
import signal
import tempfile
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from stream_app.adapters.embedded import (
    EmbeddedServers,
    start_embedded_broker,
    start_embedded_redis,
)
from stream_app.adapters.kafka import ensure_topics
from stream_app.adapters.processes import free_port, spawn_worker, stop_process, wait_for_port
from stream_app.config import Settings
from stream_app.tools.generator import GeneratorSettings, generate_events
from stream_app.tools.replay import produce_events
from stream_app.tools.scrape import Samples, scrape

console = Console()


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _fmt(value: float | None, kind: str = "n") -> str:
    if value is None:
        return "-"
    if kind == "%":
        return f"{value:.1%}"
    if kind == "$":
        return f"{value:,.0f}"
    if kind == "d":
        return f"{value / 86400:.1f}"
    return f"{value:,.0f}"


def kpi_table(samples: Samples, window: str, currency: str) -> Table:
    """The headline KPIs per team for one window."""
    teams = sorted({dict(labels).get("team", "") for (name, labels) in samples
                    if name == "pulse_created_deals" and dict(labels).get("window") == window})
    table = Table(title=f"Pipeline Pulse: trailing {window} (amounts in {currency})")
    for column in ("team", "new", "won", "lost", "win %", "won amt", "avg deal", "cycle d",
                   "open", "vel/day"):
        table.add_column(column, justify="right" if column != "team" else "left")
    for team in teams:
        w = {"team": team, "window": window}
        velocity = _value(samples, "pulse_sales_velocity_amount_per_second", **w)
        table.add_row(
            team,
            _fmt(_value(samples, "pulse_created_deals", **w)),
            _fmt(_value(samples, "pulse_deals_won", **w)),
            _fmt(_value(samples, "pulse_deals_lost", **w)),
            _fmt(_value(samples, "pulse_win_rate_ratio", **w), "%"),
            _fmt(_value(samples, "pulse_won_amount", **w), "$"),
            _fmt(_value(samples, "pulse_average_deal_size", **w), "$"),
            _fmt(_value(samples, "pulse_sales_cycle_seconds", **w), "d"),
            _fmt(_value(samples, "pulse_window_open_deals", **w)),
            _fmt(None if velocity is None else velocity * 86400, "$"),
        )
    churn = _value(samples, "pulse_customer_churn_rate_ratio", period="last_month")
    processed = _processed(samples)
    table.caption = (f"churn last month {_fmt(churn, '%')}  |  events processed {processed:,.0f}"
                     f"  |  refreshed {dt.datetime.now(dt.UTC):%H:%M:%S} UTC")
    return table


def _processed(samples: Samples) -> float:
    return sum(v for (name, _), v in samples.items() if name == "pulse_events_processed_total")


def _catch_up(url: str, total: int, timeout: float = 900) -> None:
    """Show the worker folding the history until it has processed every event."""
    columns = (TextColumn("[bold]worker"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("fold", total=total)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done = _processed(scrape(url))
            except Exception:
                done = 0
            progress.update(task, completed=min(done, total))
            if done >= total:
                return
            time.sleep(0.5)


class _PlainLive:
    """Stand-in for rich's Live when stdout is not a terminal: print each table as it comes."""

    def __init__(self, every: float = 10.0) -> None:
        self._every = every
        self._last = -every

    def update(self, renderable: Any) -> None:
        if time.monotonic() - self._last >= self._every:
            self._last = time.monotonic()
            console.print(renderable)


async def _live(settings: Settings, events: list[dict[str, Any]], url: str,
                duration: float | None, rate: float) -> None:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        live: Live | _PlainLive = (stack.enter_context(Live(console=console, refresh_per_second=1))
                                   if console.is_terminal else _PlainLive())
        index = 0
        while duration is None or time.monotonic() - started < duration:
            batch = []
            for _ in range(max(int(rate * 2), 1)):
                if index >= len(events):
                    break
                event = dict(events[index])
                event["time"] = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
                batch.append(event)
                index += 1
            if batch:
                await produce_events(settings, batch, show_progress=False)
            try:
                live.update(kpi_table(await asyncio.to_thread(scrape, url), "30d",
                                      settings.reporting_currency))
            except Exception as exc:
                live.update(f"waiting for {url}: {exc}")
            await asyncio.sleep(2)


def run_demo(months: int, duration: float | None, rate: float, seed: int) -> int:
    """Run the demo until Ctrl-C (or ``duration`` seconds of live trickle).

    Ctrl-C (SIGINT) stops it even when it was started with SIGINT ignored, as a shell
    starts background jobs (``make demo &``): the demo restores Python's handler.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logs = tempfile.mkdtemp(prefix="pipeline-pulse-demo-")
    servers = EmbeddedServers()
    worker = None
    try:
        start_embedded_broker(servers, os.path.join(logs, "broker.log"))
        start_embedded_redis(servers, os.path.join(logs, "redis.log"))
        settings = Settings(
            kafka_bootstrap=servers.kafka_bootstrap,
            redis_url=servers.redis_url,
            web_port=free_port(),
            clock="wall",
        )
        asyncio.run(ensure_topics(settings))
        worker = spawn_worker(settings, os.path.join(logs, "worker.log"))
        url = f"http://{settings.web_host}:{settings.web_port}/metrics"
        console.print(f"[bold]Embedded Kafka (Tansu)[/] {servers.kafka_bootstrap}   "
                      f"[bold]Redis[/] {servers.redis_url}")
        console.print(f"[bold]Worker[/] pid {worker.pid}, logs in {logs}")
        wait_for_port(settings.web_host, settings.web_port, timeout=60)
        now = dt.datetime.now(dt.UTC)
        cfg = GeneratorSettings(seed=seed, start=now - dt.timedelta(days=30 * months),
                                end=now + dt.timedelta(days=5))
        events = list(generate_events(cfg))
        history = [e for e in events if dt.datetime.fromisoformat(e["time"]) <= now]
        future = events[len(history):]
        console.print(f"Replaying {len(history):,} events of {months} months of history...")
        result = asyncio.run(produce_events(settings, history, total=len(history)))
        console.print(f"sent {result.sent:,} events in {result.seconds:.1f}s")
        _catch_up(url, result.sent)
        console.print(f"\n[bold green]Metrics:[/] {url}\n"
                      f"More workers: PULSE_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} "
                      f"PULSE_REDIS_URL={servers.redis_url} PULSE_WEB_PORT=<free port> "
                      f"stream-app worker\nCtrl-C stops everything.\n")
        asyncio.run(_live(settings, future, url, duration, rate))
    except KeyboardInterrupt:
        console.print("\nstopping...")
    finally:
        if worker is not None:
            stop_process(worker)
        servers.stop()
        console.print("demo stopped; no process left behind.")
    return 0
