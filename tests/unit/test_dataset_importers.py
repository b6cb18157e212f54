"""X Education, Olist and Telco importers on small files with the real files' quirks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from stream_app.config import Settings
from stream_app.events.codec import ContractRules, Rejection, decode_event
from stream_app.importers.olist import import_olist
from stream_app.importers.telco import import_telco
from stream_app.importers.x_education import import_x_education
from stream_app.tools.replay import route

RULES = ContractRules(currencies=frozenset({"USD", "BRL"}),
                      stages=frozenset({"Prospecting"}))
ROLES = {"deal": "deals", "customer": "customers", "lead": "leads", "quota": "quotas"}


def _all_valid(events: list[dict]) -> None:
    import json

    for event in events:
        key = route(Settings(), event)[1]
        decoded = decode_event(json.dumps(event).encode(), key, ROLES[event["type"].split(".")[0]],
                               RULES)
        assert not isinstance(decoded, Rejection), (event, decoded)


XED = """\
Prospect ID,Lead Number,Lead Origin,Lead Source,Converted,TotalVisits,Last Activity,
p1,1,API,Google,1,2,Email Opened,
p2,2,API,,0,,SMS Sent,
p3,3,API,google,0,0,,
"""


def test_x_education(tmp_path: Path) -> None:
    (tmp_path / "leads.csv").write_text(XED)
    events, report = import_x_education(tmp_path)
    _all_valid(events)
    assert report.rows == 3
    assert report.events == {"lead.created": 3, "lead.engaged": 3, "lead.converted": 1}
    assert report.quirks["empty Lead Source read as 'Unknown'"] == 1
    assert report.quirks["empty TotalVisits read as 0 visits"] == 1
    assert report.quirks["Last Activity 'SMS Sent' has no engagement action: not sent"] == 1
    sources = {e["data"]["lead_id"]: e["data"]["source"] for e in events
               if e["type"] == "lead.created"}
    assert sources == {"p1": "Google", "p2": "Unknown", "p3": "google"}
    p1 = [(e["type"], e["time"]) for e in events if e["data"]["lead_id"] == "p1"]
    assert p1 == [("lead.created", "2025-01-01T00:00:00Z"),
                  ("lead.engaged", "2025-01-01T01:00:00Z"),
                  ("lead.engaged", "2025-01-01T02:00:00Z"),
                  ("lead.engaged", "2025-01-01T03:00:00Z"),
                  ("lead.converted", "2025-01-08T00:00:00Z")]


def test_olist(tmp_path: Path) -> None:
    (tmp_path / "marketing_qualified_leads.csv").write_text(
        "mql_id,first_contact_date,landing_page_id,origin\n"
        "m1,01-02-2018,x,social\nm2,05-02-2018,x,\nm3,10-02-2018,x,email\n")
    (tmp_path / "closed_deals.csv").write_text(
        "mql_id,seller_id,sdr_id,sr_id,won_date,business_segment,declared_monthly_revenue\n"
        "m1,s1,d1,r1,26-02-2018 19:58,pet,0\n"
        "m3,s3,d3,r3,09-02-2018 08:00,,5000\n"
        "m9,s9,d9,r9,09-02-2018 08:00,pet,1\n")
    events, report = import_olist(tmp_path)
    _all_valid(events)
    assert report.events == {"lead.created": 3, "deal.created": 2, "deal.won": 2,
                             "lead.converted": 2}
    assert report.skipped == [(4, "mql_id m9 not in marketing_qualified_leads")]
    assert report.quirks["won_date before first_contact_date: deal created at won_date"] == 1
    won = {e["data"]["deal_id"]: (e["time"], e["data"]["amount"]) for e in events
           if e["type"] == "deal.won"}
    assert won == {"m1": ("2018-02-26T19:58:00Z", "0"), "m3": ("2018-02-09T08:00:00Z", "5000")}


def test_telco(tmp_path: Path) -> None:
    (tmp_path / "telco_customer_churn.csv").write_text(
        "customerID,Tenure,Contract,InternetService,MonthlyCharges,TotalCharges,Churn\n"
        "c1,1,Month-to-month,DSL,29.85,29.85,No\n"
        "c2,34,One year,DSL,56.95,1889.5,Yes\n"
        "c3,0,Two year,No,20.00,,No\n"
        "c4,x,Two year,No,20.00,,No\n")
    as_of = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)
    events, report = import_telco(tmp_path, as_of=as_of)
    _all_valid(events)
    assert report.events == {"deal.created": 3, "deal.won": 3, "customer.churned": 1}
    assert report.skipped == [(5, "Tenure 'x' is not a whole number")]
    won = {e["data"]["deal_id"]: e["time"] for e in events if e["type"] == "deal.won"}
    assert won["telco-c2"] == (as_of - dt.timedelta(days=34 * 30)).isoformat().replace(
        "+00:00", "Z")
    assert won["telco-c3"] == "2026-01-15T00:00:00Z"
    [churn] = [e for e in events if e["type"] == "customer.churned"]
    assert churn["data"]["account_id"] == "c2" and churn["time"] == "2026-01-15T12:00:00Z"
