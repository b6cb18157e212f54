"""Stopping several child processes: every one is asked to stop before any is waited for."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from stream_app.adapters.processes import spawn, stop_processes


def _stubborn(tmp_path: Path, name: str, check: str | None = None) -> list[str]:
    """A shell that notes SIGTERM in ``<name>.term`` and keeps running; with ``check``, a
    second after its own SIGTERM it notes whether ``check`` had been asked to stop too."""
    saw = (f"sleep 1; [ -f {tmp_path}/{check}.term ] && touch {tmp_path}/{name}.saw; "
           if check else "")
    script = (f"trap 'touch {tmp_path}/{name}.term; {saw}' TERM; touch {tmp_path}/{name}.up; "
              "while true; do sleep 0.1; done")
    return ["bash", "-c", script]


def test_every_process_is_asked_to_stop_before_any_is_waited_for(tmp_path: Path) -> None:
    """Two servers that ignore SIGTERM: the first still runs when the second is asked to
    stop (a stop one after the other would ask the second only after the first's grace),
    and both are gone after the stop."""
    first = spawn(_stubborn(tmp_path, "first", check="second"))
    second = spawn(_stubborn(tmp_path, "second"))
    for _ in range(200):
        if (tmp_path / "first.up").exists() and (tmp_path / "second.up").exists():
            break
        time.sleep(0.05)
    stop_processes([first, second], timeout=4)
    assert (tmp_path / "first.term").exists() and (tmp_path / "second.term").exists()
    assert (tmp_path / "first.saw").exists()
    assert first.poll() is not None and second.poll() is not None


def test_a_child_stops_on_sigint_even_when_its_parent_ignores_it(tmp_path: Path) -> None:
    """A parent started in the background of a shell ignores SIGINT, and an ignored signal
    stays ignored across exec: the children the project starts must still take Ctrl-C's
    signal as a stop (``stream-app servers`` was left running by one in CI)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        child = spawn([sys.executable, "-c", "import signal; "
                       "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"],
                      log_path=str(tmp_path / "out.log"))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert child.wait(30) == 0
    assert (tmp_path / "out.log").read_text().strip() == "True"
