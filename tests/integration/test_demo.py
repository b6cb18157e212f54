"""`stream-app demo` end to end: it shows KPIs and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _processes_mentioning(needles: list[str]) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(needle in cmdline for needle in needles):
            found.append(f"{pid}: {cmdline}")
    return found


def _children(parent: int, needle: str) -> list[int]:
    """Processes whose parent is ``parent`` and whose command line holds ``needle``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and needle in cmdline:
            found.append(int(pid))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_ctrl_c_stops_every_process_the_demo_started(tmp_path: Path) -> None:
    from tests.prometheus_tools import require_binary

    require_binary("prometheus")
    out = tmp_path / "demo.out"
    with out.open("wb") as handle:
        demo = subprocess.Popen([sys.executable, "-m", "stream_app", "demo", "--months", "2",
                                 "--rate", "5"], stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while "refreshed" not in out.read_text(errors="replace"):
            assert demo.poll() is None, out.read_text(errors="replace")
            assert time.monotonic() < deadline, out.read_text(errors="replace")
            time.sleep(0.5)
        text = out.read_text(errors="replace")
        broker = re.search(r"Embedded Kafka \(Tansu\)\S* (127\.0\.0\.1:\d+)", text)
        redis = re.search(r"redis://(127\.0\.0\.1:\d+)", text)
        worker = re.search(r"Worker\S* pid (\d+)", text)
        assert broker and redis and worker, text
        assert re.search(r"Metrics:\S* http://127\.0\.0\.1:\d+/metrics", text)
        prometheus = re.search(r"Prometheus\S* http://(127\.0\.0\.1:\d+)", text)
        assert prometheus, text
        assert re.search(r"all\s+│\s+\d+", text), text
        assert "cov q" in text and "at quota" in text and "lead conversion 30d" in text
        while "alerts: " not in out.read_text(errors="replace"):  # Prometheus answered
            assert demo.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        needles = [f"--listener-url tcp://{broker.group(1)}", f"redis-server {redis.group(1)}",
                   f"--web.listen-address={prometheus.group(1)}"]
        assert len(_processes_mentioning(needles)) == 3
        forecast_process = "stream_app.adapters.forecast_process"
        while not (forecasters := _children(int(worker.group(1)), forecast_process)):
            assert demo.poll() is None and time.monotonic() < deadline, \
                "the worker started no forecast process"
            time.sleep(0.5)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
    time.sleep(0.5)
    assert _processes_mentioning(needles) == []
    assert not Path(f"/proc/{worker.group(1)}").exists()
    assert not [pid for pid in forecasters if _running(pid)], "the forecast process outlived it"
