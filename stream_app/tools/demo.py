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
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from stream_app.adapters.embedded import (
    EMBEDDED_FETCH_MAX_WAIT_SECONDS,
    EmbeddedServers,
    start_embedded_broker,
    start_embedded_redis,
)
from stream_app.adapters.kafka import ensure_topics
from stream_app.adapters.processes import free_port, spawn_worker, stop_process, wait_for_port
from stream_app.adapters.prometheus_server import firing_alerts, start_local_prometheus
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
    if kind == "x":
        return f"{value:.1f}x"
    return f"{value:,.0f}"


def kpi_table(samples: Samples, window: str, currency: str,
              alerts: list[str] | None = None) -> Table:
    """The headline KPIs per team for one window, and the alerts Prometheus holds."""
    teams = sorted({dict(labels).get("team", "") for (name, labels) in samples
                    if name == "pulse_created_deals" and dict(labels).get("window") == window})
    table = Table(title=f"Pipeline Pulse: trailing {window} (amounts in {currency})")
    for column in ("team", "new", "won", "lost", "win %", "won amt", "avg deal", "cycle d",
                   "open", "vel/day", "cov q", "at quota"):
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
            _fmt(_value(samples, "pulse_pipeline_coverage_ratio", team=team,
                        period="quarter"), "x"),
            _fmt(_value(samples, "pulse_quota_owners_at_quota_ratio", team=team,
                        period="month"), "%"),
        )
    churn = _value(samples, "pulse_customer_churn_rate_ratio", period="last_month")
    leads = _value(samples, "pulse_lead_conversion_ratio", source="all", window=window)
    processed = _processed(samples)
    lines = [f"cov q: open pipeline / this quarter's quota; at quota: reps at this month's "
             f"quota  |  lead conversion {window} {_fmt(leads, '%')}  |  churn last month "
             f"{_fmt(churn, '%')}",
             _forecast_line(samples),
             f"events processed {processed:,.0f}  |  refreshed "
             f"{dt.datetime.now(dt.UTC):%H:%M:%S} UTC"]
    if alerts is not None:
        lines.append("alerts: " + (", ".join(alerts) if alerts else "none"))
    table.caption = "\n".join(lines)
    return table


def _forecast_line(samples: Samples) -> str:
    """This month's forecast for all teams, its band and quota, and how far last month's
    forecast made on day 1 was off."""
    month = {"team": "all", "period": "month"}
    forecast = _value(samples, "pulse_forecast_won_amount", **month)
    if forecast is None:
        return "forecast: none yet (the worker holding the forecast partition exports it)"
    error = _value(samples, "pulse_forecast_error_ratio", team="all", period="last_month",
                   checkpoint="day_1")
    return (f"forecast this month {_fmt(forecast, '$')} (10-90%: "
            f"{_fmt(_value(samples, 'pulse_forecast_won_low_amount', **month), '$')}-"
            f"{_fmt(_value(samples, 'pulse_forecast_won_high_amount', **month), '$')}) of "
            f"quota {_fmt(_value(samples, 'pulse_quota_amount', **month), '$')}  |  "
            f"last month's day-1 forecast off by {_fmt(error, '%')}")


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


def _alert_names(prometheus: str | None) -> list[str] | None:
    """``Name{team} (state)`` of each alert Prometheus holds; None without Prometheus."""
    if prometheus is None:
        return None
    try:
        alerts = firing_alerts(prometheus)
    except OSError:
        return None
    names = []
    for alert in alerts:
        labels = alert["labels"]
        scope = labels.get("team") or labels.get("label") or labels.get("period") or ""
        names.append(f"{labels['alertname']}{f'{{{scope}}}' if scope else ''} "
                     f"({alert['state']})")
    return sorted(names)


async def _live(settings: Settings, events: list[dict[str, Any]], url: str,
                duration: float | None, rate: float, prometheus: str | None) -> None:
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
                samples = await asyncio.to_thread(scrape, url)
                alerts = await asyncio.to_thread(_alert_names, prometheus)
                live.update(kpi_table(samples, "30d", settings.reporting_currency, alerts))
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
    prometheus = None
    try:
        start_embedded_broker(servers, os.path.join(logs, "broker.log"))
        start_embedded_redis(servers, os.path.join(logs, "redis.log"))
        settings = Settings(
            kafka_bootstrap=servers.kafka_bootstrap,
            redis_url=servers.redis_url,
            web_port=free_port(),
            clock="wall",
            fetch_max_wait_seconds=EMBEDDED_FETCH_MAX_WAIT_SECONDS,
        )
        asyncio.run(ensure_topics(settings))
        worker = spawn_worker(settings, os.path.join(logs, "worker.log"))
        url = f"http://{settings.web_host}:{settings.web_port}/metrics"
        console.print(f"[bold]Embedded Kafka (Tansu)[/] {servers.kafka_bootstrap}   "
                      f"[bold]Redis[/] {servers.redis_url}")
        console.print(f"[bold]Worker[/] pid {worker.pid}, logs in {logs}")
        wait_for_port(settings.web_host, settings.web_port, timeout=60)
        started = start_local_prometheus(Path(logs) / "prometheus",
                                         [f"{settings.web_host}:{settings.web_port}"])
        if isinstance(started, str):
            console.print(f"[yellow]{started}[/]: the demo goes on without alerts")
            prometheus_url = None
        else:
            prometheus = started.process
            prometheus_url = started.url
            console.print(f"[bold]Prometheus[/] {prometheus_url} (the shipped recording and "
                          "alert rules, evaluated every 5 s)")
        now = dt.datetime.now(dt.UTC)
        cfg = GeneratorSettings(seed=seed, start=now - dt.timedelta(days=30 * months),
                                end=now + dt.timedelta(days=5), expected_close_error_days=7.0,
                                plan_update_probability=0.3)
        events = list(generate_events(cfg))
        history = [e for e in events if dt.datetime.fromisoformat(e["time"]) <= now]
        future = events[len(history):]
        console.print(f"Replaying {len(history):,} events of {months} months of history...")
        result = asyncio.run(produce_events(settings, history, total=len(history)))
        console.print(f"sent {result.sent:,} events in {result.seconds:.1f}s")
        _catch_up(url, result.sent)
        where = f"\n[bold green]Prometheus:[/] {prometheus_url}" if prometheus_url else ""
        console.print(f"\n[bold green]Metrics:[/] {url}{where}\n"
                      f"More workers: PULSE_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} "
                      f"PULSE_REDIS_URL={servers.redis_url} PULSE_WEB_PORT=<free port> "
                      f"stream-app worker\nCtrl-C stops everything.\n")
        asyncio.run(_live(settings, future, url, duration, rate, prometheus_url))
    except KeyboardInterrupt:
        console.print("\nstopping...")
    finally:
        if prometheus is not None:
            stop_process(prometheus)
        if worker is not None:
            stop_process(worker)
        servers.stop()
        console.print("demo stopped; no process left behind.")
    return 0
