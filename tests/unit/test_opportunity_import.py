"""The generic opportunity CSV importer: presets on their example files, and every bad input."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from stream_app.config import Settings
from stream_app.events.codec import ContractRules, Rejection, decode_event
from stream_app.importers.opportunities import (
    PRESETS,
    MappingError,
    import_opportunities,
    load_mapping,
)
from stream_app.tools.replay import route

ROOT = Path(__file__).resolve().parents[2]
STAGES = Settings().stage_names
RULES = ContractRules(currencies=frozenset({"USD", "EUR"}), stages=frozenset(STAGES))
EXAMPLES = {"salesforce-opportunity": ROOT / "docs" / "examples" / "salesforce-opportunities.csv",
            "hubspot-deals": ROOT / "docs" / "examples" / "hubspot-deals.csv"}


def test_every_preset_has_an_example_file() -> None:
    assert set(PRESETS) == set(EXAMPLES)


@pytest.mark.parametrize("preset", sorted(EXAMPLES))
def test_presets_turn_their_example_into_valid_events_one_deal_per_usable_row(
    preset: str
) -> None:
    mapping = load_mapping(preset)
    events, report = import_opportunities(EXAMPLES[preset], mapping, STAGES)
    for event in events:
        decoded = decode_event(json.dumps(event).encode(), route(Settings(), event)[1], "deals",
                               RULES)
        assert not isinstance(decoded, Rejection), (event, decoded)
    with EXAMPLES[preset].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    stage_col = mapping.columns.stage
    skipped = {line for line, _ in report.skipped}
    usable = [row for line, row in enumerate(rows, start=2) if line not in skipped]
    assert report.rows == len(rows) and len(usable) + len(skipped) == len(rows)
    kinds = Counter(event["type"] for event in events)
    assert kinds["deal.created"] == len(usable)
    assert kinds["deal.won"] == sum(row[stage_col] in mapping.won_stages for row in usable)
    assert kinds["deal.lost"] == sum(row[stage_col] in mapping.lost_stages for row in usable)
    first = mapping.stage_map
    assert kinds["deal.stage_changed"] == sum(
        first.get(row[stage_col], row[stage_col]) not in (STAGES[0],)
        and row[stage_col] not in (*mapping.won_stages, *mapping.lost_stages) for row in usable)
    assert [event["time"] for event in events] == sorted(event["time"] for event in events)
    again, _ = import_opportunities(EXAMPLES[preset], mapping, STAGES)
    assert again == events  # ids derive from the deal, so a re-import sends nothing new


def test_salesforce_row_in_full() -> None:
    events, _ = import_opportunities(EXAMPLES["salesforce-opportunity"],
                                     load_mapping("salesforce-opportunity"), STAGES)
    mine = [e for e in events if e["data"]["deal_id"] == "0065e00000A1xQ3AAJ"]
    assert [(e["type"], e["time"]) for e in mine] == [
        ("deal.created", "2026-02-02T00:00:00Z"), ("deal.stage_changed", "2026-03-20T00:00:00Z")]
    created = mine[0]["data"]
    assert (created["amount"], created["currency"], created["team"], created["owner_id"],
            created["expected_close"]) == ("86200.00", "USD", "NA Sales", "Ben Okafor",
                                           "2026-04-30")
    assert mine[1]["data"]["to_stage"] == "Negotiation"
    won = next(e for e in events if e["type"] == "deal.won"
               and e["data"]["deal_id"] == "0065e00000A1xQ1AAJ")
    assert (won["time"], won["data"]["amount"], won["data"]["competitor"]) == (
        "2026-02-27T00:00:00Z", "48000.00", "Globex")


HEADER = "Id,Owner,Amount,Stage,Created,Closed\n"


def _mapping(tmp_path: Path, **extra: object) -> Path:
    raw = {"name": "test", "columns": {"deal_id": "Id", "owner_id": "Owner", "amount": "Amount",
                                       "stage": "Stage", "created": "Created",
                                       "closed": "Closed"}, **extra}
    path = tmp_path / "mapping.yml"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize(("row", "reason"), [
    ("D1,ann,100,Closed Won,2026-13-01,2026-02-01", "column 'Created': '2026-13-01' is not a date"),
    ("D1,ann,-5,Closed Won,2026-01-01,2026-02-01", "column 'Amount': '-5' is not an amount >= 0"),
    ("D1,ann,1e,Closed Won,2026-01-01,2026-02-01", "column 'Amount': '1e' is not an amount"),
    ("D1,ann,100,Maybe,2026-01-01,", "column 'Stage': stage 'Maybe' is neither won"),
    ("D1,,100,Prospecting,2026-01-01,", "column 'Owner' is empty"),
    ("D1,ann,100,Closed Lost,2026-01-01,", "column 'Closed': a closed deal ('Closed Lost') "
                                           "needs a close date"),
])
def test_unusable_rows_are_skipped_with_the_column_and_the_reason(
    tmp_path: Path, row: str, reason: str
) -> None:
    (tmp_path / "x.csv").write_text(HEADER + row + "\n" + "D2,bo,7,Prospecting,2026-01-01,\n")
    events, report = import_opportunities(tmp_path / "x.csv",
                                          load_mapping(str(_mapping(tmp_path))), STAGES)
    assert len(report.skipped) == 1
    line, why = report.skipped[0]
    assert line == 2 and why.startswith(reason), why
    assert [e["data"]["deal_id"] for e in events] == ["D2"]


@pytest.mark.parametrize(("row", "quirk", "won_at"), [
    ("D1,ann,100,Closed Won,2026-03-01,2026-02-01", "closed before created: close moved to "
     "creation", "2026-03-01T00:00:00Z"),
    ("D1,ann,,Closed Won,2026-01-01,2026-02-01", "no amount: 0 used", "2026-02-01T00:00:00Z"),
])
def test_repairs_are_counted_as_quirks(tmp_path: Path, row: str, quirk: str,
                                       won_at: str) -> None:
    (tmp_path / "x.csv").write_text(HEADER + row + "\n")
    events, report = import_opportunities(tmp_path / "x.csv",
                                          load_mapping(str(_mapping(tmp_path))), STAGES)
    assert report.quirks[quirk] == 1
    assert next(e["time"] for e in events if e["type"] == "deal.won") == won_at


def test_zone_comma_decimals_and_a_repeated_deal(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text(
        'Id,Owner,Amount,Stage,Created,Closed\n'
        'D1,ann,"EUR 1.234,50",Closed Won,2026-01-01,2026-07-01 18:30\n'
        'D1,ann,9,Closed Lost,2026-01-01,2026-02-01\n')
    mapping = load_mapping(str(_mapping(tmp_path, timezone="Europe/Berlin",
                                        decimal_separator=",",
                                        date_formats=["%Y-%m-%d %H:%M", "%Y-%m-%d"])))
    events, report = import_opportunities(tmp_path / "x.csv", mapping, STAGES)
    assert [(e["type"], e["time"]) for e in events] == [
        ("deal.created", "2025-12-31T23:00:00Z"), ("deal.won", "2026-07-01T16:30:00Z")]
    assert events[1]["data"]["amount"] == "1234.50"
    assert report.skipped == [(3, "deal 'D1' appears again (kept the first row)")]


@pytest.mark.parametrize(("extra", "message"), [
    ({"timezone": "Mars/Olympus"}, "timezone: Value error, unknown time zone 'Mars/Olympus'"),
    ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    ({"default_currency": "euro"}, "default_currency: String should match pattern"),
])
def test_bad_mapping_files_name_the_field(tmp_path: Path, extra: dict, message: str) -> None:
    with pytest.raises(MappingError, match="mapping.yml: .*" + message.replace("(", r"\(")):
        load_mapping(str(_mapping(tmp_path, **extra)))


def test_a_header_without_the_mapped_columns_names_them(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("Id,Owner\nD1,ann\n")
    with pytest.raises(MappingError, match=r"amount -> 'Amount', closed -> 'Closed', "
                                           r"created -> 'Created', stage -> 'Stage'"):
        import_opportunities(tmp_path / "x.csv", load_mapping(str(_mapping(tmp_path))), STAGES)
