"""Log lines for shippers: one JSON object a line, with the context a call gives."""

from __future__ import annotations

import json
import logging

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
