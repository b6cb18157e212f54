"""Olist marketing funnel (marketing_qualified_leads.csv, closed_deals.csv) to CloudEvents.

- ``lead.created`` per marketing-qualified lead at first_contact_date (00:00 UTC),
  source = origin (empty: ``unknown``, the value the file already uses);
- per closed deal: ``deal.created`` at the lead's first contact (team ``olist``,
  owner = sr_id, product = business_segment or ``unknown``, amount =
  declared_monthly_revenue in BRL, stage = the first configured stage),
  ``lead.converted`` and ``deal.won`` at won_date. Amounts are in BRL: add it to
  ``PULSE_FX_RATES`` (the worker dead-letters unknown currencies).

Quirk: one deal's won_date is before its lead's first contact; its deal is created
at the won time instead (reported).
"""

from __future__ import annotations

__all__ = ["import_olist"]

import csv
import datetime as dt
from pathlib import Path
from typing import Any

from stream_app.importers.common import ImportReport, cloud_event, finish

SOURCE = "import/olist"


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _date(text: str, fmt: str) -> dt.datetime:
    return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC)


def import_olist(folder: Path, first_stage: str = "Prospecting",
                 currency: str = "BRL") -> tuple[list[dict[str, Any]], ImportReport]:
    """Read both CSV files of ``folder``; events are sorted by time."""
    report = ImportReport()
    events: list[dict[str, Any]] = []
    with (folder / "marketing_qualified_leads.csv").open(newline="") as handle:
        leads = list(csv.DictReader(handle))
    with (folder / "closed_deals.csv").open(newline="") as handle:
        deals = list(csv.DictReader(handle))
    contact: dict[str, dt.datetime] = {}
    for row in leads:
        report.rows += 1
        lead = row["mql_id"]
        contact[lead] = _date(row["first_contact_date"], "%d-%m-%Y")
        origin = row["origin"].strip()
        if not origin:
            report.quirks["empty origin read as 'unknown'"] += 1
            origin = "unknown"
        events.append(cloud_event(SOURCE, "lead.created", f"olist-{lead}-lead",
                                  _iso(contact[lead]), {
                                      "lead_id": lead, "source": origin, "owner_id": None,
                                      "team": None, "industry": None, "company_size": None,
                                      "job_title": None}))
    for line_no, row in enumerate(deals, start=2):
        report.rows += 1
        lead = row["mql_id"]
        if lead not in contact:
            report.skipped.append((line_no, f"mql_id {lead} not in marketing_qualified_leads"))
            continue
        won = _date(row["won_date"], "%d-%m-%Y %H:%M")
        created = contact[lead]
        if won < created:
            report.quirks["won_date before first_contact_date: deal created at won_date"] += 1
            created = won
        segment = row["business_segment"].strip()
        if not segment:
            report.quirks["empty business_segment read as 'unknown'"] += 1
            segment = "unknown"
        amount = row["declared_monthly_revenue"].strip() or "0"
        events.append(cloud_event(SOURCE, "deal.created", f"olist-{lead}-deal", _iso(created), {
            "deal_id": lead, "account_id": row["seller_id"], "owner_id": row["sr_id"],
            "team": "olist", "amount": amount, "currency": currency, "stage": first_stage,
            "source": None, "product": segment, "lead_id": lead, "expected_close": None}))
        events.append(cloud_event(SOURCE, "lead.converted", f"olist-{lead}-converted",
                                  _iso(won), {"lead_id": lead, "deal_id": lead}))
        events.append(cloud_event(SOURCE, "deal.won", f"olist-{lead}-won", _iso(won), {
            "deal_id": lead, "amount": amount, "competitor": None, "competitor_price": None}))
    return finish(events, report), report
