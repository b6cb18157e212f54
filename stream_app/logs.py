"""Logging for people (text) and for log shippers (``PULSE_LOG_FORMAT=json``)."""

from __future__ import annotations

__all__ = ["TEXT_FORMAT", "WORKER_LOGGER", "JsonFormatter", "configure_logging",
           "logging_config", "worker_id"]

import datetime as dt
import json
import logging
import logging.config
import socket
from typing import Any

from stream_app.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: The logger of the worker's own announcements.
WORKER_LOGGER = "stream_app.worker"

#: Record attributes (given with ``extra=``) copied into a JSON line when present.
CONTEXT_FIELDS = ("topic", "partition", "offset", "table")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (RFC 3339, UTC), level, logger, message, worker, and
    topic / partition / offset / table when the call gave them; an exception's
    traceback in ``exception``."""

    def __init__(self, worker: str = "") -> None:
        super().__init__()
        self.worker = worker or socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "worker": self.worker,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def worker_id(settings: Settings) -> str:
    """How a worker names itself in logs: host, metrics port and app id."""
    return f"{socket.gethostname()}:{settings.web_port}/{settings.app_id}"


def logging_config(settings: Settings) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``settings``: one stderr handler, text or JSON."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter, "worker": worker_id(settings)}
        if settings.log_format == "json" else {"format": TEXT_FORMAT})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"pulse": formatter},
        "handlers": {"pulse": {"class": "logging.StreamHandler", "formatter": "pulse",
                               "stream": "ext://sys.stderr"}},
        "root": {"level": settings.log_level, "handlers": ["pulse"]},
        # What the worker says about itself (servers, where /metrics is, waiting for a
        # dependency, why it stops) is shown at every level.
        "loggers": {WORKER_LOGGER: {"level": "INFO"}},
    }


def configure_logging(settings: Settings) -> None:
    """Install :func:`logging_config` for this process."""
    logging.config.dictConfig(logging_config(settings))
