"""The image's command run the way the image runs it, without a Docker engine: its
entry point, a user that owns nothing (uid 65534 when the tests run as root), a read-only
working directory, an unwritable home, and only the environment the Dockerfile and
docker-compose.yml set (servers pointed at the embedded ones)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from stream_app.adapters.embedded import EmbeddedServers
from stream_app.adapters.processes import free_port
from stream_app.config import Settings
from tests.compose import with_defaults
from tests.integration.conftest import SESSION_TIMEOUT_SECONDS, last_time, small_stream
from tests.integration.harness import (
    Worker,
    assert_matches,
    produce,
    settled,
    wait_for_health,
)
from tests.reference import expected_metrics

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


def _image_env() -> dict[str, str]:
    """ENV lines of the Dockerfile, then the worker environment of docker-compose.yml."""
    env: dict[str, str] = {}
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env.update({k: with_defaults(str(v))
                for k, v in compose["services"]["worker-1"]["environment"].items()})
    return env


def _entrypoint() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    entry = yaml.safe_load(re.search(r"^ENTRYPOINT (.+)$", text, re.M)[1])  # type: ignore[index]
    command = yaml.safe_load(re.search(r"^CMD (.+)$", text, re.M)[1])  # type: ignore[index]
    return [*entry, *command]


def _as_nobody(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """``argv`` (the image's console script) for uid 65534: the script's interpreter lives
    under /root here, which that user cannot enter, so the entry point pyproject.toml
    declares runs on the system's Python of the same minor version, with the venv's
    packages and the checkout on its path (as the image's site-packages would be)."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts[argv[0]].partition(":")
    python = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not python.exists():
        pytest.fail(f"{python} is missing: the unprivileged run needs a Python 3.11 that "
                    "uid 65534 can execute")
    site = next(Path(sys.prefix, "lib").glob("python3.*/site-packages"))
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    return [str(python), "-c", code, *argv[1:]], {"PYTHONPATH": f"{site}:{ROOT}"}


def test_the_image_command_as_an_unprivileged_user_in_a_read_only_directory_exports_kpis(
        servers: EmbeddedServers, tmp_path: Path) -> None:
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="pulse-image-"))  # pytest's tmp_path is 0700
    base.chmod(0o755)
    workdir = base / "app"
    workdir.mkdir()
    data = base / "data"
    data.mkdir()
    if as_root:
        os.chown(data, NOBODY, NOBODY)
    workdir.chmod(0o555)  # root-owned /app in the image: nothing may be written there
    env = _image_env()
    assert env["PULSE_DATA_DIR"] == "/var/lib/pulse"  # the image's; a temp dir stands in
    web_port = free_port()
    env.update({
        "PULSE_KAFKA_BOOTSTRAP": servers.kafka_bootstrap or "",
        "PULSE_REDIS_URL": servers.redis_url or "",
        "PULSE_WEB_PORT": str(web_port),
        "PULSE_DATA_DIR": str(data),
        "PULSE_CLOCK": "event",  # compose runs the wall clock; replays compare in event time
        "PULSE_SESSION_TIMEOUT_SECONDS": str(SESSION_TIMEOUT_SECONDS),
        "HOME": "/nonexistent",
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
    })
    argv = _entrypoint()
    assert argv == ["stream-app", "worker"]
    if as_root:
        argv, extra = _as_nobody(argv)
        env.update(extra)
    log = tmp_path / "worker.log"
    settings = Settings(kafka_bootstrap=servers.kafka_bootstrap, redis_url=servers.redis_url,
                        clock="event", partitions=int(env["PULSE_PARTITIONS"]),
                        web_port=web_port)
    worker = Worker(settings, log)
    with log.open("wb") as out:
        worker.proc = subprocess.Popen(
            argv, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
            user=NOBODY if as_root else None, group=NOBODY if as_root else None,
            extra_groups=[] if as_root else None)
    try:
        # The worker creates the topics (PULSE_PARTITIONS of compose) before anything is sent.
        wait_for_health(worker, lambda h: h["owned_partitions"] == settings.partitions,
                        "the worker owning every partition", timeout=90)
        events = small_stream(seed=13, months=2, per_day=3)
        produce(settings, events)
        as_of = last_time(events)
        [samples] = settled([worker], settings.partitions, as_of)
        expected = expected_metrics(events, as_of)
        assert assert_matches(expected, samples) == len(expected) > 300
        assert list(workdir.iterdir()) == []
        written = [p for p in data.rglob("*")]
        assert written, "the worker keeps its local files in PULSE_DATA_DIR"
        if as_root:
            assert all(p.stat().st_uid == NOBODY for p in written)
        worker.stop()
        assert worker.proc.returncode == 0, log.read_text()[-2000:]
    finally:
        worker.discard()
        shutil.rmtree(base, ignore_errors=True)


def test_the_ingest_service_runs_as_compose_runs_it_and_answers_its_healthcheck(
        servers: EmbeddedServers, tmp_path: Path) -> None:
    """compose's ``ingest`` service: the image's entry point with ``command: [ingest]``,
    as a user that owns nothing, in a read-only directory, with only the environment
    compose sets (its token variable filled in, the optional mapping variables empty);
    an event gets 202 and compose's healthcheck command passes."""
    import json
    import urllib.request

    from stream_app.adapters.processes import stop_process, wait_for_port

    as_root = os.geteuid() == 0
    workdir = Path(tempfile.mkdtemp(prefix="pulse-ingest-image-"))
    workdir.chmod(0o555)
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["ingest"]
    token = "compose-ingest-token-0123456789"
    env = {k: v for k, v in _image_env().items() if not k.startswith("PULSE_")}
    for name, value in service["environment"].items():
        env[name] = (f"crm={token}" if name == "PULSE_INGEST_TOKENS"
                     else "" if str(value).startswith("${") else str(value))
    port = free_port()
    env.update({"PULSE_KAFKA_BOOTSTRAP": servers.kafka_bootstrap or "",
                "PULSE_INGEST_PORT": str(port), "HOME": "/nonexistent",
                "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    argv = [_entrypoint()[0], *service["command"]]
    assert argv == ["stream-app", "ingest"]
    if as_root:
        argv, extra = _as_nobody(argv)
        env.update(extra)
    log = tmp_path / "ingest.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, user=NOBODY if as_root else None,
                                group=NOBODY if as_root else None,
                                extra_groups=[] if as_root else None)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        event = {"specversion": "1.0", "id": "image-1", "source": "crm/test",
                 "type": "deal.created", "time": "2026-11-02T09:30:00Z",
                 "data": {"deal_id": "D-1", "account_id": None, "owner_id": "ana",
                          "team": "EMEA", "amount": "10", "currency": "USD",
                          "stage": "Prospecting"}}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/events", data=json.dumps(event).encode(),
            headers={"Content-Type": "application/cloudevents+json",
                     "Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 202
        check = service["healthcheck"]["test"]
        assert check[0] == "CMD" and "8080" in check[-1]
        probe = subprocess.run([sys.executable, *check[2:-1],
                                check[-1].replace("8080", str(port))],
                               capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0, probe.stderr
        assert list(workdir.iterdir()) == []
    finally:
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    assert proc.returncode == 0, log.read_text()[-2000:]
