"""Child processes that never outlive their parent, and free loopback ports."""

from __future__ import annotations

__all__ = ["free_port", "spawn", "spawn_worker", "stop_process", "stop_processes",
           "wait_for_port"]

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from stream_app.config import Settings, worker_env

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # A parent in a shell's background ignores SIGINT, and exec keeps it ignored: the
    # children take it as a stop (Ctrl-C) however the parent was started.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.setpgrp()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log_path: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group that is killed when this process dies."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    finally:
        if not isinstance(out, int):
            out.close()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it is still there."""
    stop_processes([proc], timeout)


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM every child's process group at once, then SIGKILL the groups of those still
    there ``timeout`` seconds later: stopping several takes one grace period, not one each."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def spawn_worker(settings: Settings, log_path: str, **env: str) -> subprocess.Popen[bytes]:
    """``stream-app worker`` with ``settings`` (as the environment it reads, plus ``env``)
    in its own process group, its output appended to ``log_path``."""
    return spawn([sys.executable, "-m", "stream_app", "worker"],
                 env=worker_env(settings, **env), log_path=log_path)
