"""Maven Analytics "CRM Sales Opportunities" (sales_pipeline.csv and friends) to CloudEvents.

Mapping, per opportunity:

- ``deal.created`` at ``engage_date`` (00:00 UTC) in stage Prospecting, valued at
  the product's list price; team = the agent's regional office;
- ``deal.stage_changed`` to Engaging at the same time (event ids order the two);
- ``deal.won`` / ``deal.lost`` at ``close_date`` with ``close_value``.

Quirks handled and reported: the product "GTXPro" is "GTX Pro" in products.csv;
Prospecting rows have no engage_date and are placed at the last date of the data;
open deals have no close_value and keep the list price; deals without an account
get ``account_id: null``.
"""

from __future__ import annotations

__all__ = ["ImportReport", "import_maven_crm"]

import csv
import datetime as dt
from pathlib import Path
from typing import Any

from stream_app.importers.common import ImportReport, cloud_event, finish

PRODUCT_ALIASES = {"GTXPro": "GTX Pro"}
SOURCE = "import/maven-crm"


def _at(date: str) -> str:
    return dt.date.fromisoformat(date).isoformat() + "T00:00:00Z"


def _event(kind: str, ident: str, time: str, data: dict[str, Any]) -> dict[str, Any]:
    return cloud_event(SOURCE, kind, ident, time, data)


def import_maven_crm(folder: Path) -> tuple[list[dict[str, Any]], ImportReport]:
    """Read the four CSV files of ``folder``; events are sorted by time."""
    report = ImportReport()
    with (folder / "products.csv").open(newline="") as handle:
        prices = {row["product"]: row["sales_price"] for row in csv.DictReader(handle)}
    with (folder / "sales_teams.csv").open(newline="") as handle:
        offices = {row["sales_agent"]: row["regional_office"] for row in csv.DictReader(handle)}
    with (folder / "sales_pipeline.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    dates = [row[col] for row in rows for col in ("engage_date", "close_date") if row[col]]
    last_date = max(dates)
    events: list[dict[str, Any]] = []
    for line_no, row in enumerate(rows, start=2):
        report.rows += 1
        opp = row["opportunity_id"]
        product = row["product"]
        if product in PRODUCT_ALIASES:
            report.quirks[f"product {product!r} read as {PRODUCT_ALIASES[product]!r}"] += 1
            product = PRODUCT_ALIASES[product]
        if product not in prices:
            report.skipped.append((line_no, f"product {product!r} not in products.csv"))
            continue
        team = offices.get(row["sales_agent"])
        if team is None:
            report.skipped.append((line_no, f"agent {row['sales_agent']!r} not in sales_teams.csv"))
            continue
        stage = row["deal_stage"]
        engage = row["engage_date"]
        if not engage:
            report.quirks[f"{stage} row without engage_date placed at {last_date}"] += 1
            engage = last_date
        account = row["account"] or None
        if account is None:
            report.quirks["deal without account (account_id null)"] += 1
        created = _event("deal.created", f"maven-{opp}-1-created", _at(engage), {
            "deal_id": opp, "account_id": account, "owner_id": row["sales_agent"], "team": team,
            "amount": prices[product], "currency": "USD", "stage": "Prospecting",
            "source": None, "product": product, "lead_id": None, "expected_close": None,
        })
        events.append(created)
        if stage == "Prospecting":
            continue
        events.append(_event("deal.stage_changed", f"maven-{opp}-2-engaging", _at(engage), {
            "deal_id": opp, "from_stage": "Prospecting", "to_stage": "Engaging", "amount": None,
        }))
        if stage == "Engaging":
            report.quirks["open deal valued at its product's list price"] += 1
            continue
        if not row["close_date"] or row["close_value"] == "":
            report.skipped.append((line_no, f"{stage} row without close_date or close_value"))
            continue
        if stage == "Won":
            events.append(_event("deal.won", f"maven-{opp}-3-won", _at(row["close_date"]), {
                "deal_id": opp, "amount": row["close_value"], "competitor": None,
                "competitor_price": None,
            }))
        elif stage == "Lost":
            events.append(_event("deal.lost", f"maven-{opp}-3-lost", _at(row["close_date"]), {
                "deal_id": opp, "reason": None, "competitor": None, "competitor_price": None,
            }))
        else:
            report.skipped.append((line_no, f"unknown deal_stage {stage!r}"))
    return finish(events, report), report
