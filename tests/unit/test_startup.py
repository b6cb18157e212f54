"""The worker's interpreter setting for its event loop."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from stream_app.adapters.startup import SWITCH_INTERVAL_SECONDS, favour_the_event_loop

#: CPython's own switch interval (an earlier test may have left the worker's).
CPYTHON_SWITCH_INTERVAL_SECONDS = 0.005


@pytest.fixture
def default_interval() -> Iterator[float]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(CPYTHON_SWITCH_INTERVAL_SECONDS)
    yield CPYTHON_SWITCH_INTERVAL_SECONDS
    sys.setswitchinterval(before)


def test_the_worker_lets_a_waiting_thread_in_after_a_millisecond(
        default_interval: float) -> None:
    favour_the_event_loop()
    assert SWITCH_INTERVAL_SECONDS == 0.001 < default_interval
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_SECONDS)
