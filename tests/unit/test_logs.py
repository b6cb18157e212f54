"""Log lines for shippers: one JSON object a line, with the context a call gives."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import faust
import pytest

from stream_app.adapters.faust_compat import faust_worker
from stream_app.config import Settings
from stream_app.logs import JsonFormatter, logging_config


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("stream_app.adapters.pipeline", logging.INFO, __file__, 1,
                               message, args, None)
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def test_a_json_line_has_time_level_logger_message_worker_and_the_given_context() -> None:
    line = JsonFormatter("w1").format(_record("rejected %s", "x", topic="crm.deals",
                                              partition=3, offset=17))
    parsed = json.loads(line)
    assert parsed == {"time": parsed["time"], "level": "INFO",
                      "logger": "stream_app.adapters.pipeline", "message": "rejected x",
                      "worker": "w1", "topic": "crm.deals", "partition": 3, "offset": 17}
    assert parsed["time"].endswith("+00:00") and "\n" not in line


def test_an_exception_stays_inside_its_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        record = _record("failed")
        record.exc_info = sys.exc_info()
    line = JsonFormatter("w1").format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_the_format_setting_chooses_the_formatter() -> None:
    assert "()" not in logging_config(Settings())["formatters"]["pulse"]
    assert logging_config(Settings(log_format="json"))["formatters"]["pulse"]["()"] is (
        JsonFormatter)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize("level", ["WARNING", "ERROR"])
def test_a_quiet_worker_does_not_build_debug_records_of_its_dependencies(
        restored_logging: None, level: str) -> None:
    """Faust's terminal spinner set the root logger to DEBUG whenever the level was
    WARNING or above: every send's debug line in aiokafka was built, then dropped
    (8% of a worker's CPU in a py-spy profile of the bench stream)."""
    settings = Settings(log_level=level)
    app = faust.App("pulse-logging-test", broker="kafka://127.0.0.1:1")
    worker = faust_worker(app, settings.log_level, logging_config(settings))
    worker._setup_logging()
    assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("faust").getEffectiveLevel() == logging.getLevelName(level)
