"""Debian's prometheus and docker-compose binaries for the tests (required in CI and as
root, skipped elsewhere), and a real Prometheus over the shipped config and rules."""

from __future__ import annotations

__all__ = ["DEPLOY", "query", "query_range", "require_binary", "start_prometheus"]

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_app.adapters.prometheus_server import start_local_prometheus

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"

#: Every alert's `for` in the tests: a few rule evaluations, so the first scrapes (one
#: worker scraped, the other not yet) cannot fire an alert the summed numbers do not.
FAST_FOR = "4s"


def require_binary(*names: str) -> str:
    """Path of the first of ``names`` on PATH.

    Missing in CI (``CI`` set) or as root, where `make test` installs the packages,
    the test fails; elsewhere it is skipped with the install command.
    """
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI") or os.geteuid() == 0:
        pytest.fail(f"{names[0]} is missing: `make test` installs Debian's prometheus, "
                    "prometheus-alertmanager and docker-compose packages when run as root")
    pytest.skip(f"{names[0]} is missing and this is not CI or root: "
                "apt-get install prometheus prometheus-alertmanager docker-compose")


def _fast_rules(target: Path) -> list[str]:
    """The shipped rule files with every `for` and group interval cut to seconds."""
    target.mkdir()
    names = []
    for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml")):
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = FAST_FOR
        (target / path.name).write_text(yaml.safe_dump(rules))
        names.append(str(target / path.name))
    return names


def start_prometheus(tmp: Path, targets: list[str], alertmanager: str | None = None,
                     scrape_interval: str = "1s") -> tuple[subprocess.Popen[bytes], str]:
    """The shipped prometheus.yml and rules (evaluated every second), scraping ``targets``
    every ``scrape_interval``; returns the process and its URL once ready."""
    require_binary("prometheus")
    started = start_local_prometheus(tmp, targets, evaluation="1s",
                                     scrape_interval=scrape_interval,
                                     rule_files=_fast_rules(tmp / "rules"),
                                     alertmanager=alertmanager)
    assert not isinstance(started, str), started
    return started.process, started.url


def _api(prometheus: str, path: str, **params: str) -> Any:
    url = f"{prometheus}/api/v1/{path}?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def query(prometheus: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    """The instant vector of ``expr`` (now, or at epoch seconds ``at``)."""
    params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
    return _api(prometheus, "query", **params)


def query_range(prometheus: str, expr: str, start: float, end: float,
                step: float) -> list[dict[str, Any]]:
    """The range vector of ``expr`` between epoch seconds ``start`` and ``end``."""
    return _api(prometheus, "query_range", query=expr, start=f"{start:.3f}",
                end=f"{end:.3f}", step=f"{step}s")
