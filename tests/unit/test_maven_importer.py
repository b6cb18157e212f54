"""The Maven CRM importer on a small folder with every quirk of the real files."""

from __future__ import annotations

from pathlib import Path

from stream_app.importers.maven_crm import import_maven_crm

PIPELINE = """\
opportunity_id,sales_agent,product,account,deal_stage,engage_date,close_date,close_value
O1,Ann,GTXPro,Acme,Won,2017-01-02,2017-02-01,4500
O2,Ann,GTX Basic,,Lost,2017-01-03,2017-01-20,0
O3,Bob,GTX Basic,Acme,Engaging,2017-01-04,,
O4,Bob,GTX Basic,,Prospecting,,,
O5,Zed,GTX Basic,Acme,Won,2017-01-05,2017-03-01,500
"""


def test_quirks_are_handled_and_reported(tmp_path: Path) -> None:
    (tmp_path / "sales_pipeline.csv").write_text(PIPELINE)
    (tmp_path / "products.csv").write_text(
        "product,series,sales_price\nGTX Pro,GTX,4821\nGTX Basic,GTX,550\n")
    (tmp_path / "sales_teams.csv").write_text(
        "sales_agent,manager,regional_office\nAnn,M,East\nBob,M,West\n")
    events, report = import_maven_crm(tmp_path)
    assert report.quirks["product 'GTXPro' read as 'GTX Pro'"] == 1
    assert report.quirks["Prospecting row without engage_date placed at 2017-03-01"] == 1
    assert report.quirks["deal without account (account_id null)"] == 2
    assert report.skipped == [(6, "agent 'Zed' not in sales_teams.csv")]
    by_id = {e["id"]: e for e in events}
    assert by_id["maven-O1-1-created"]["data"]["amount"] == "4821"
    assert by_id["maven-O1-3-won"]["data"]["amount"] == "4500"
    assert by_id["maven-O4-1-created"]["time"] == "2017-03-01T00:00:00Z"
    assert by_id["maven-O3-2-engaging"]["data"]["to_stage"] == "Engaging"
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)
