"""IBM Telco customer churn (telco_customer_churn.csv) to CloudEvents.

The file is a snapshot; times are synthetic and documented here (and printed).
With the snapshot at ``as_of`` (default 2026-01-15T00:00Z), each customer is an
account with one won deal ``tenure`` months of 30 days before the snapshot (team =
Contract, product = InternetService, amount = MonthlyCharges USD, stage = the
first configured stage), and a customer with Churn = Yes churns at the snapshot
plus 12 hours. So the month to date holds every churn, and every customer with a
tenure of at least one month is active at its start.
"""

from __future__ import annotations

__all__ = ["import_telco"]

import csv
import datetime as dt
from pathlib import Path
from typing import Any

from stream_app.importers.common import ImportReport, cloud_event, finish

SOURCE = "import/telco"
SNAPSHOT = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def import_telco(path: Path, as_of: dt.datetime = SNAPSHOT,
                 first_stage: str = "Prospecting") -> tuple[list[dict[str, Any]], ImportReport]:
    """Read the CSV (or the folder holding it); events are sorted by time."""
    if path.is_dir():
        path = path / "telco_customer_churn.csv"
    report = ImportReport()
    report.quirks[f"synthetic times: won tenure x 30 days before {_iso(as_of)}, churned "
                  f"12 hours after it"] = 1
    events: list[dict[str, Any]] = []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for line_no, row in enumerate(rows, start=2):
        report.rows += 1
        customer = row["customerID"]
        tenure_text = row.get("Tenure", row.get("tenure", "")).strip()
        if not tenure_text.isdigit():
            report.skipped.append((line_no, f"Tenure {tenure_text!r} is not a whole number"))
            continue
        tenure = int(tenure_text)
        if tenure == 0:
            report.quirks["tenure 0 (new customer, blank TotalCharges): won at the snapshot"] += 1
        won = as_of - dt.timedelta(days=30 * tenure)
        deal = f"telco-{customer}"
        data = {"deal_id": deal, "account_id": customer, "owner_id": "telco",
                "team": row["Contract"], "amount": row["MonthlyCharges"], "currency": "USD",
                "stage": first_stage, "source": None, "product": row["InternetService"],
                "lead_id": None, "expected_close": None}
        events.append(cloud_event(SOURCE, "deal.created", f"{deal}-created", _iso(won), data))
        events.append(cloud_event(SOURCE, "deal.won", f"{deal}-won", _iso(won), {
            "deal_id": deal, "amount": row["MonthlyCharges"], "competitor": None,
            "competitor_price": None}))
        if row["Churn"].strip() == "Yes":
            if tenure == 0:
                report.skipped.append((line_no, "churned with tenure 0: churn not sent"))
                continue
            events.append(cloud_event(SOURCE, "customer.churned", f"{deal}-churned",
                                      _iso(as_of + dt.timedelta(hours=12)),
                                      {"account_id": customer, "reason": None,
                                       "competitor": None}))
    return finish(events, report), report
