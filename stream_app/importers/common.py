"""What every importer shares: the report of what it did, and the event envelope."""

from __future__ import annotations

__all__ = ["ImportReport", "cloud_event", "finish"]

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ImportReport:
    """What an import produced and every quirk it met."""

    rows: int = 0
    events: Counter[str] = field(default_factory=Counter)
    quirks: Counter[str] = field(default_factory=Counter)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary."""
        out = [f"rows read: {self.rows}"]
        out += [f"events {kind}: {n}" for kind, n in sorted(self.events.items())]
        out += [f"quirk: {what}: {n}" for what, n in sorted(self.quirks.items())]
        out += [f"skipped row {row}: {why}" for row, why in self.skipped]
        return out


def cloud_event(source: str, kind: str, ident: str, time: str,
                data: dict[str, Any]) -> dict[str, Any]:
    """A CloudEvent of the contract as a JSON-ready dict."""
    return {"specversion": "1.0", "id": ident, "source": source, "type": kind, "time": time,
            "datacontenttype": "application/json", "data": data}


def finish(events: list[dict[str, Any]], report: ImportReport) -> list[dict[str, Any]]:
    """Sort events by time (then id) and count them in the report."""
    events.sort(key=lambda event: (event["time"], event["id"]))
    for event in events:
        report.events[event["type"]] += 1
    return events
