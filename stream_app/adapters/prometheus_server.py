"""A local Prometheus (Debian's ``prometheus`` binary) over the shipped rules, for the demo."""

from __future__ import annotations

__all__ = ["DEPLOY", "LocalPrometheus", "firing_alerts", "start_local_prometheus"]

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stream_app.adapters.processes import free_port, spawn, wait_for_port

#: The deploy/ folder of a checkout (absent from an installed wheel).
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@dataclass
class LocalPrometheus:
    """A running Prometheus and where to reach it."""

    process: subprocess.Popen[bytes]
    url: str


def start_local_prometheus(workdir: Path, targets: list[str], evaluation: str = "5s",
                           scrape_interval: str | None = None,
                           rule_files: list[str] | None = None,
                           alertmanager: str | None = None) -> LocalPrometheus | str:
    """Prometheus on a free loopback port with ``deploy/prometheus``'s configuration,
    scraping ``targets`` every ``scrape_interval`` (default: ``evaluation``), evaluating
    ``rule_files`` (default: the shipped rules) every ``evaluation`` and alerting
    ``alertmanager`` if given; ready to answer, or, when it cannot start, why."""
    binary = shutil.which("prometheus")
    if binary is None:
        return ("no Prometheus: the `prometheus` binary is not installed "
                "(apt-get install prometheus; `make test` does it when run as root)")
    rules = rule_files or [str(p) for p in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))]
    if not rules:
        return f"no Prometheus: no rule files under {DEPLOY / 'prometheus' / 'rules'}"
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": scrape_interval or evaluation,
                        "evaluation_interval": evaluation}
    config["rule_files"] = rules
    if alertmanager is None:
        config.pop("alerting", None)
    else:
        config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    config["scrape_configs"][0]["static_configs"] = [{"targets": targets}]
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = spawn([binary, f"--config.file={workdir / 'prometheus.yml'}",
                     f"--storage.tsdb.path={workdir / 'data'}",
                     f"--web.listen-address=127.0.0.1:{port}"],
                    log_path=str(workdir / "prometheus.log"))
    wait_for_port("127.0.0.1", port, timeout=60)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=5):
                return LocalPrometheus(process, url)
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                return f"Prometheus at {url} not ready within 60 s (see its log)"
            time.sleep(0.2)


def firing_alerts(url: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Alerts Prometheus holds now (``/api/v1/alerts``): pending and firing."""
    with urllib.request.urlopen(f"{url}/api/v1/alerts", timeout=timeout) as answer:
        body: dict[str, Any] = json.load(answer)
    alerts: list[dict[str, Any]] = body["data"]["alerts"]
    return alerts
