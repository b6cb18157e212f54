"""Real Prometheus and Alertmanager over two real workers: rules, alerts, delivery."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_app.adapters.processes import free_port, spawn, stop_process, wait_for_port
from stream_app.config import Settings
from stream_app.tools.dashboards import panel_queries, variable_queries
from stream_app.tools.forecast_dashboard import QUOTA_MADE
from stream_app.tools.generator import GeneratorSettings, generate_events
from tests.integration.conftest import last_time
from tests.integration.harness import Worker, produce, settled, worker_settings
from tests.prometheus_tools import DEPLOY, query, require_binary, start_prometheus
from tests.reference import expected_metrics

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()


def _start_alertmanager(tmp: Path, webhook_url: str) -> tuple[Any, str]:
    binary = require_binary("prometheus-alertmanager", "alertmanager")
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    config["route"].update(group_wait="0s", group_interval="1s", repeat_interval="1m")
    for receiver in config["receivers"]:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = spawn([binary, f"--config.file={tmp / 'alertmanager.yml'}",
                  f"--storage.path={tmp / 'am-data'}",
                  f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                 log_path=str(tmp / "alertmanager.log"))
    wait_for_port("127.0.0.1", port, timeout=30)
    return proc, f"127.0.0.1:{port}"


#: Alertmanager's group_interval here is 1 s: an alert that fired is at the receiver
#: well within this many seconds.
_DELIVERY_SECONDS = 5.0


def _epoch(rfc3339: str) -> float:
    """Epoch seconds of Go's RFC 3339 time text (nanoseconds, "Z" or an offset)."""
    match = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", rfc3339)
    assert match, rfc3339
    zone = "+00:00" if match[3] == "Z" else match[3]
    return dt.datetime.fromisoformat(match[1] + (match[2] or ".0")[:7] + zone).timestamp()


def _await_evaluations(prometheus: str, group: str, after: float, count: int) -> None:
    """Wait until Prometheus has evaluated the rule ``group`` (every 1 s here) ``count``
    times after the epoch time ``after``, with the settled KPIs in its store, so "not
    firing" is a verdict on the data, not on a rule that never ran."""
    deadline = time.monotonic() + 60
    while True:
        with urllib.request.urlopen(f"{prometheus}/api/v1/rules?type=alert",
                                    timeout=10) as response:
            groups = json.load(response)["data"]["groups"]
        [last] = [g["lastEvaluation"] for g in groups if g["name"] == group]
        if _epoch(last) >= after + count:
            return
        assert time.monotonic() < deadline, f"rule group {group} last evaluated at {last}"
        time.sleep(0.5)


def _stream(churn_probability: float, quota_level: float) -> list[dict[str, Any]]:
    end = dt.datetime(2026, 10, 20, 12, tzinfo=dt.UTC)
    cfg = GeneratorSettings(seed=5, start=end - dt.timedelta(days=420), end=end,
                            deals_per_day=4, accounts=120, churn_probability=churn_probability,
                            quota_level=quota_level, plan_update_probability=0.3)
    return list(generate_events(cfg))


def _label_values(prometheus: str, variable_query: str) -> list[str]:
    """The values Grafana offers for ``label_values(metric, label)``."""
    found = re.fullmatch(r"label_values\((\S+), (\w+)\)", variable_query)
    assert found, variable_query
    metric, label = found.groups()
    return sorted({s["metric"][label] for s in query(prometheus,
                                                     f"group by ({label}) ({metric})")})


def _panel_queries_for_every_variable_value(prometheus: str) -> list[tuple[str, str, str]]:
    """(dashboard, panel, PromQL) of every panel target, once per combination of the
    values of the variables it uses, as Grafana would send them."""
    out = []
    for board in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        text = board.read_text()
        values = {name: _label_values(prometheus, q)
                  for name, q in variable_queries(text).items()}
        assert all(values.values()), (board.name, values)
        for title, expr in panel_queries(text):
            used = sorted(set(re.findall(r"\$(\w+)", expr)))
            for combination in itertools.product(*(values[name] for name in used)):
                sent = expr
                for name, value in zip(used, combination, strict=True):
                    sent = sent.replace(f"${name}", value)
                out.append((board.name, title, sent))
    return out


#: A rep's ratio -> its denominator: the ratio is rightly empty where that is 0.
_OWNER_DENOMINATORS = {
    "owner_window:pulse_owner_win_rate:ratio":
        "owner_window:pulse_owner_deals_won:sum + owner_window:pulse_owner_deals_lost:sum",
    "owner_window:pulse_owner_average_deal_size:ratio": "owner_window:pulse_owner_deals_won:sum",
    "owner_window:pulse_owner_sales_cycle_seconds:ratio": "owner_window:pulse_owner_deals_won:sum",
}


def _rightly_blank(prometheus: str, board: str, title: str, expr: str) -> bool:
    """Whether an empty panel is the right answer: it shows a "no deal" text in place
    of a value (``noValue``), and the denominator of its ratio is 0 for the same rep
    and window (one rep may have won nothing in 30 days); or it shows "quota made" for
    the coverage of the pipeline closing in a period whose quota is already won."""
    covered = re.fullmatch(r"team_period:pulse_forecast_closing_coverage:ratio(\{.*\})", expr)
    if covered is not None:
        panels = json.loads((DEPLOY / "grafana" / "dashboards" / board).read_text())["panels"]
        [panel] = [p for p in panels if p["title"] == title]
        left = query(prometheus, f"team_period:pulse_quota_amount:sum{covered[1]} - "
                                 f"team_period:pulse_quota_won_amount:sum{covered[1]}")
        return panel["fieldConfig"]["defaults"].get("noValue") == QUOTA_MADE and \
            len(left) == 1 and float(left[0]["value"][1]) <= 0
    found = re.fullmatch(r"(\S+?)(\{.*\})", expr)
    if found is None or found[1] not in _OWNER_DENOMINATORS:
        return False
    panels = json.loads((DEPLOY / "grafana" / "dashboards" / board).read_text())["panels"]
    [panel] = [p for p in panels if p["title"] == title]
    if not panel["fieldConfig"]["defaults"].get("noValue", "").startswith("no deal"):
        return False
    denominator = " + ".join(f"{term.strip()}{found[2]}"
                             for term in _OWNER_DENOMINATORS[found[1]].split("+"))
    answer = query(prometheus, denominator)
    return len(answer) == 1 and float(answer[0]["value"][1]) == 0


def _received(received: list[dict[str, Any]]) -> set[str]:
    return {a["labels"]["alertname"] for post in received for a in post["alerts"]
            if a["status"] == "firing"}


@pytest.mark.parametrize(("churn_probability", "quota_level"), [(0.9, 3.0), (0.1, 0.2)])
def test_churn_and_attainment_alerts_reach_the_receiver_only_when_due(
    base_settings: Settings, tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]],
    churn_probability: float, quota_level: float,
) -> None:
    url, received = webhook
    events = _stream(churn_probability, quota_level)
    as_of = last_time(events)
    expected = expected_metrics(events, as_of)
    churn = float(expected.get(("pulse_customer_churn_rate_ratio",
                                (("period", "last_month"),)), 0))
    at_quota = float(expected[("pulse_quota_owners_at_quota_ratio",
                               (("period", "last_month"), ("team", "all")))])
    due = {"PulseMonthlyChurnHigh": churn > 0.05, "PulseRepsAtQuotaLow": at_quota < 0.6}
    high = churn_probability > 0.5
    assert due == {"PulseMonthlyChurnHigh": high, "PulseRepsAtQuotaLow": high}, (churn, at_quota)
    workers = [Worker(worker_settings(base_settings), tmp_path / f"w{i}.log").start()
               for i in range(2)]
    started: list[Any] = []
    try:
        produce(base_settings, events)
        settled(workers, base_settings.partitions, as_of)
        # Prometheus starts on the settled state: with every `for` cut to seconds, scrapes
        # of the replay in progress would fire alerts the final numbers do not call for.
        am_proc, alertmanager = _start_alertmanager(tmp_path, url)
        started.append(am_proc)
        prom_proc, prometheus = start_prometheus(
            tmp_path, [f"127.0.0.1:{w.settings.web_port}" for w in workers], alertmanager)
        started.append(prom_proc)
        checks = {
            'team_window:pulse_win_rate:ratio{team="all",window="all"}':
                expected[("pulse_win_rate_ratio", (("team", "all"), ("window", "all")))],
            'team_period:pulse_quota_owners_at_quota:ratio{team="all",period="last_month"}':
                at_quota,
            "job:pulse_customer_lifetime_value:ratio":
                expected[("pulse_customer_lifetime_value", ())],
            'team_period:pulse_pipeline_coverage:ratio{team="all",period="quarter"}':
                expected[("pulse_pipeline_coverage_ratio", (("period", "quarter"),
                                                            ("team", "all")))],
        }
        deadline = time.monotonic() + 60
        for expr, want in checks.items():
            while True:
                got = query(prometheus, expr)
                if got and abs(float(got[0]["value"][1]) - float(want)) <= 1e-9 * float(want):
                    break
                assert time.monotonic() < deadline, f"PromQL {expr} = {got}, want {float(want)}"
                time.sleep(0.25)
        # Prometheus only ever scraped the settled state, and its recorded KPIs now show it
        recorded_at = time.time()
        rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "recording.yml").read_text())
        kpi_records = [r["record"] for g in rules["groups"] for r in g["rules"]
                       if g["name"] == "pipeline_pulse_kpis"]
        empty = [name for name in kpi_records if not query(prometheus, name)]
        assert not empty, f"recording rules without data: {empty}"
        panels = _panel_queries_for_every_variable_value(prometheus)
        assert len(panels) > 200
        deadline = time.monotonic() + 30
        while blank := [p for p in panels if not query(prometheus, p[2])
                        and not _rightly_blank(prometheus, *p)]:
            assert time.monotonic() < deadline, f"Grafana panels without data: {blank}"
            time.sleep(1)
        print(f"\n{len(panels)} panel queries, "
              f"{sum(1 for p in panels if not query(prometheus, p[2]))} rightly empty "
              "(a rep with no deal won or closed in the window, a quota already made)")
        rate = query(prometheus, 'period:pulse_customer_churn_rate:ratio{period="last_month"}')
        assert abs(float(rate[0]["value"][1]) - churn) <= 1e-9
        _await_evaluations(prometheus, "pipeline_pulse_alerts", after=recorded_at, count=8)
        wanted = {name for name, fire in due.items() if fire}
        deadline = time.monotonic() + 60
        names = _received(received)
        while not wanted <= names:
            assert time.monotonic() < deadline, (wanted, names, tmp_path / "prometheus.log")
            time.sleep(0.5)
            names = _received(received)
        if not all(due.values()):  # an alert not due must not arrive late either
            time.sleep(_DELIVERY_SECONDS)
            names = _received(received)
        for name, fire in due.items():
            firing = query(prometheus, f'ALERTS{{alertname="{name}",alertstate="firing"}}')
            if fire:
                assert firing and name in names, (name, names, tmp_path / "prometheus.log")
                alert = next(a for post in received for a in post["alerts"]
                             if a["labels"]["alertname"] == name)
                assert alert["labels"]["severity"] == "warning"
                assert re.search(rf"docs/runbooks.md#{name.lower()}$",
                                 alert["annotations"]["runbook_url"])
            else:
                assert not query(prometheus, f'ALERTS{{alertname="{name}"}}'), name
                assert name not in names, (name, names)
    finally:
        for worker in workers:
            worker.discard()
        for proc in started:
            stop_process(proc)
