"""X Education lead-scoring data (Leads.csv) to lead CloudEvents.

The file has no dates, so times are synthetic and documented here (and printed):

- ``lead.created`` for row k (0-based, file order) at 2025-01-01T00:00Z + 55 k
  minutes (the 9,240 leads span about a year); lead_id = Prospect ID, source =
  Lead Source (empty: ``Unknown``; other spellings such as "google" are kept as
  they are, as the published per-source figures count them apart);
- one ``lead.engaged`` ``site_visit`` per visit of TotalVisits, hour after hour
  from the creation (empty TotalVisits: no visits);
- Last Activity as one more engagement an hour after the last visit, when it maps
  to an action (Email Opened, Email Link Clicked, Page Visited on Website, Form
  Submitted on Website, View in browser link Clicked); other activities (SMS, chat,
  calls, bounces...) have no action in the contract and are counted as skipped;
- ``lead.converted`` 7 days after the creation when Converted is 1; other leads
  stay open (the data does not say they were disqualified).
"""

from __future__ import annotations

__all__ = ["ACTIVITY_ACTIONS", "import_x_education"]

import csv
import datetime as dt
from pathlib import Path
from typing import Any

from stream_app.importers.common import ImportReport, cloud_event, finish

SOURCE = "import/x-education"
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
ACTIVITY_ACTIONS = {
    "Email Opened": "email_open",
    "Email Link Clicked": "email_click",
    "View in browser link Clicked": "email_click",
    "Page Visited on Website": "site_visit",
    "Form Submitted on Website": "form_submit",
}


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def import_x_education(path: Path) -> tuple[list[dict[str, Any]], ImportReport]:
    """Read ``leads.csv`` (or the folder holding it); events are sorted by time."""
    if path.is_dir():
        path = path / "leads.csv"
    report = ImportReport()
    report.quirks["synthetic times: lead k created at 2025-01-01 + 55k minutes"] = 1
    events: list[dict[str, Any]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for k, row in enumerate(rows):
        report.rows += 1
        lead = row["Prospect ID"]
        created = START + dt.timedelta(minutes=55 * k)
        source = row["Lead Source"].strip()
        if not source:
            report.quirks["empty Lead Source read as 'Unknown'"] += 1
            source = "Unknown"

        def emit(kind: str, suffix: str, at: dt.datetime, data: dict[str, Any],
                 lead: str = lead) -> None:
            events.append(cloud_event(SOURCE, kind, f"xed-{lead}-{suffix}", _iso(at),
                                      {"lead_id": lead, **data}))

        emit("lead.created", "created", created, {
            "source": source, "owner_id": None, "team": None, "industry": None,
            "company_size": None, "job_title": None})
        visits_text = row["TotalVisits"].strip()
        if not visits_text:
            report.quirks["empty TotalVisits read as 0 visits"] += 1
        visits = int(float(visits_text)) if visits_text else 0
        for i in range(visits):
            emit("lead.engaged", f"visit-{i:03d}", created + dt.timedelta(hours=i + 1),
                 {"action": "site_visit"})
        activity = row["Last Activity"].strip()
        action = ACTIVITY_ACTIONS.get(activity)
        if action is not None:
            emit("lead.engaged", "last-activity", created + dt.timedelta(hours=visits + 1),
                 {"action": action})
        else:
            report.quirks[f"Last Activity {activity or '(empty)'!r} has no engagement action: "
                          f"not sent"] += 1
        if row["Converted"].strip() == "1":
            emit("lead.converted", "converted", created + dt.timedelta(days=7),
                 {"deal_id": None})
    return finish(events, report), report
