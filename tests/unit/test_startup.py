"""The worker's interpreter setting for its event loop."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from stream_app.adapters.startup import SWITCH_INTERVAL_SECONDS, favour_the_event_loop


@pytest.fixture
def default_interval() -> Iterator[float]:
    before = sys.getswitchinterval()
    yield before
    sys.setswitchinterval(before)


def test_the_worker_lets_a_waiting_thread_in_after_a_millisecond(
        default_interval: float) -> None:
    favour_the_event_loop()
    assert SWITCH_INTERVAL_SECONDS == 0.001 < default_interval
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_SECONDS)
