"""A roster file (YAML) to ``rep.updated`` events: the start of the roster, before an
HR system or the CRM sends profiles of its own.

::

    reps:
      "0055e000001AbCdAAA": {name: Ana Lopez, team: EMEA}
      "900": {name: Ben Okafor}          # no team: the mapping file's decides

Every profile takes effect at ``as_of`` (default: now). An event's id is derived from
the owner and the profile, so importing the same file again sends repeats the worker
drops, and a changed entry a new profile that wins over the old one.
"""

from __future__ import annotations

__all__ = ["RosterError", "import_roster"]

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import yaml

from stream_app.importers.common import ImportReport, cloud_event, finish

SOURCE = "pipeline-pulse/roster-file"


class RosterError(ValueError):
    """A roster file that cannot be read, naming the entry and what was expected."""


def _text(value: Any, where: str, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str | int) or isinstance(value, bool) or not str(value).strip():
        raise RosterError(f"{where}: expected text, got {value!r}")
    return str(value).strip()


def import_roster(path: Path, as_of: dt.datetime) -> tuple[list[dict[str, Any]], ImportReport]:
    """One ``rep.updated`` per entry of the file's ``reps``."""
    if as_of.tzinfo is None:
        raise RosterError("--as-of needs a UTC offset, e.g. 2026-11-01T00:00:00+00:00")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RosterError(f"{path}: {exc}") from None
    reps = loaded.get("reps") if isinstance(loaded, dict) else None
    if not isinstance(reps, dict) or not reps:
        raise RosterError(f"{path}: expected a mapping 'reps' of owner id -> "
                          "{name, team}")
    time = as_of.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    report, events = ImportReport(), []
    for owner, profile in reps.items():
        report.rows += 1
        where = f"reps.{owner}"
        if not isinstance(profile, dict):
            raise RosterError(f"{where}: expected {{name, team}}, got {profile!r}")
        unknown = set(profile) - {"name", "team"}
        if unknown:
            raise RosterError(f"{where}: unknown keys {sorted(unknown)} (name, team)")
        owner_id = _text(owner, where, required=True)
        name = _text(profile.get("name"), f"{where}.name", required=True)
        team = _text(profile.get("team"), f"{where}.team", required=False)
        digest = hashlib.sha256(f"{owner_id}\x1f{name}\x1f{team}".encode()).hexdigest()[:16]
        events.append(cloud_event(SOURCE, "rep.updated", f"roster-{owner_id}-{digest}", time,
                                  {"owner_id": owner_id, "name": name, "team": team}))
    return finish(events, report), report
