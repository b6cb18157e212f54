"""Any CRM's opportunity (deal) export as CSV, read through a column mapping file.

An opportunity report holds one row per deal in its *current* state, not its
history, so each row becomes:

- ``deal.created`` at the created date, in the first configured stage, with the
  row's amount (0 when empty, reported);
- for an open deal not in the first stage: ``deal.stage_changed`` to its mapped
  stage, at the ``stage_entered`` column's time when the mapping names one, else at
  the created time (reported: time in stage then counts from creation);
- for a deal in a won (lost) stage: ``deal.won`` (``deal.lost``) at the close date
  with the amount, competitor and loss reason when mapped. A close date before the
  created date is moved to the created date (reported).

Event ids are derived from the deal id (``<prefix>-<deal id>-created``,
``-stage-<stage>``, ``-won``, ``-lost``), so importing the same export twice sends
nothing new, and a later export adds only a deal's new stage or close. The mapping is YAML (see
:class:`OpportunityMapping`); presets ship for a Salesforce Opportunity report and
a HubSpot deals export (``stream_app/importers/presets/``), each with an example
file in ``docs/examples/``.
"""

from __future__ import annotations

__all__ = ["PRESETS", "MappingError", "OpportunityMapping", "import_opportunities",
           "load_mapping"]

import csv
import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stream_app.importers.common import ImportReport, cloud_event, finish

PRESET_DIR = Path(__file__).resolve().parent / "presets"
#: Preset name -> mapping file.
PRESETS = {path.stem: path for path in sorted(PRESET_DIR.glob("*.yml"))}


class MappingError(ValueError):
    """A mapping file or a CSV header that cannot be used, with the reason."""


class Columns(BaseModel):
    """CSV column names (headers) for each deal field; optional ones may be omitted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deal_id: str
    owner_id: str
    amount: str
    stage: str
    created: str
    closed: str | None = Field(None, description="Close date (expected close while open).")
    account_id: str | None = None
    team: str | None = None
    currency: str | None = None
    source: str | None = None
    product: str | None = None
    competitor: str | None = None
    lost_reason: str | None = None
    stage_entered: str | None = Field(None, description="When the current stage began.")


class OpportunityMapping(BaseModel):
    """How an opportunity export maps onto deal events."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    source: str = Field("import/opportunities", description="CloudEvent source.")
    id_prefix: str = Field("opp", pattern=r"^[A-Za-z0-9_.-]+$")
    columns: Columns
    default_team: str = "Sales"
    default_currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    date_formats: tuple[str, ...] = ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S%z")
    timezone: str = "UTC"
    decimal_separator: str = Field(".", pattern=r"^[.,]$")
    won_stages: tuple[str, ...] = ("Closed Won",)
    lost_stages: tuple[str, ...] = ("Closed Lost",)
    stage_map: dict[str, str] = Field(
        default_factory=dict, description="CRM stage -> configured Pipeline Pulse stage; "
        "a stage missing here is used as is.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as "
                             "Europe/Berlin)") from exc
        return value


def load_mapping(name_or_path: str) -> OpportunityMapping:
    """A preset by name (``salesforce-opportunity``, ``hubspot-deals``) or a YAML file."""
    path = PRESETS.get(name_or_path) or Path(name_or_path)
    if not path.is_file():
        raise MappingError(f"mapping {name_or_path!r}: not a preset ({', '.join(PRESETS)}) "
                           "and no such file")
    try:
        raw = yaml.safe_load(path.read_text())
        return OpportunityMapping.model_validate(raw)
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise MappingError(f"{path}: {problems}") from None


class _RowError(ValueError):
    pass


def _parser(mapping: OpportunityMapping) -> tuple[Callable[[str, str], dt.datetime],
                                                  Callable[[str, str], Decimal]]:
    zone = ZoneInfo(mapping.timezone)
    formats = mapping.date_formats
    expected = " or ".join(formats)

    def when(column: str, text: str) -> dt.datetime:
        for fmt in formats:
            try:
                parsed = dt.datetime.strptime(text.strip(), fmt)  # noqa: DTZ007
            except ValueError:
                continue
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).astimezone(dt.UTC)
        raise _RowError(f"column {column!r}: {text!r} is not a date ({expected})")

    thousands = "," if mapping.decimal_separator == "." else "."

    def amount(column: str, text: str) -> Decimal:
        cleaned = re.sub(r"^[A-Z]{3}\s*|[$€£¥\s]", "", text.strip()).replace(thousands, "")
        try:
            value = Decimal(cleaned.replace(mapping.decimal_separator, "."))
        except InvalidOperation:
            raise _RowError(f"column {column!r}: {text!r} is not an amount") from None
        if not value.is_finite() or value < 0:
            raise _RowError(f"column {column!r}: {text!r} is not an amount >= 0")
        return value

    return when, amount


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def import_opportunities(path: Path, mapping: OpportunityMapping, stages: tuple[str, ...]
                         ) -> tuple[list[dict[str, Any]], ImportReport]:
    """Read ``path`` (CSV with a header row) with ``mapping``; ``stages`` are the
    configured Pipeline Pulse stages. Events are sorted by time."""
    report = ImportReport()
    when, amount = _parser(mapping)
    cols = mapping.columns
    won, lost = set(mapping.won_stages), set(mapping.lost_stages)
    events: list[dict[str, Any]] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        wanted = {field: column for field, column in cols.model_dump().items() if column}
        missing = sorted(f"{field} -> {column!r}" for field, column in wanted.items()
                         if column not in header)
        if missing:
            found = ", ".join(map(repr, header))
            raise MappingError(f"{path}: columns of mapping {mapping.name!r} not in the header: "
                               f"{', '.join(missing)}; the header has {found}")
        seen: set[str] = set()
        for line_no, row in enumerate(reader, start=2):
            report.rows += 1
            try:
                row_events = _row_events(row, mapping, stages, won, lost, when, amount, report)
            except _RowError as exc:
                report.skipped.append((line_no, str(exc)))
                continue
            deal_id = row_events[0]["data"]["deal_id"]
            if deal_id in seen:
                report.skipped.append((line_no, f"deal {deal_id!r} appears again (kept the "
                                                "first row)"))
                continue
            seen.add(deal_id)
            events.extend(row_events)
    return finish(events, report), report


def _row_events(row: dict[str, str], mapping: OpportunityMapping, stages: tuple[str, ...],
                won: set[str], lost: set[str], when: Callable[[str, str], dt.datetime],
                amount: Callable[[str, str], Decimal],
                report: ImportReport) -> list[dict[str, Any]]:
    cols = mapping.columns

    def cell(column: str | None) -> str | None:
        value = (row.get(column) or "").strip() if column else ""
        return value or None

    deal_id = cell(cols.deal_id)
    owner = cell(cols.owner_id)
    created_text = cell(cols.created)
    crm_stage = cell(cols.stage)
    for column, given in ((cols.deal_id, deal_id), (cols.owner_id, owner),
                          (cols.created, created_text), (cols.stage, crm_stage)):
        if given is None:
            raise _RowError(f"column {column!r} is empty")
    assert deal_id and owner and created_text and crm_stage
    created = when(cols.created, created_text)
    amount_text = cell(cols.amount)
    if amount_text is None:
        report.quirks["no amount: 0 used"] += 1
        value = Decimal(0)
    else:
        value = amount(cols.amount, amount_text)
    team = cell(cols.team)
    if team is None:
        report.quirks[f"no team: {mapping.default_team!r} used"] += 1
        team = mapping.default_team
    currency = (cell(cols.currency) or mapping.default_currency).upper()
    if crm_stage in won or crm_stage in lost:
        stage = None
    else:
        stage = mapping.stage_map.get(crm_stage, crm_stage)
        if stage not in stages:
            raise _RowError(f"column {cols.stage!r}: stage {crm_stage!r} is neither won "
                            f"({', '.join(sorted(won))}), lost ({', '.join(sorted(lost))}) nor "
                            f"mapped to a configured stage ({', '.join(stages)}); add it to "
                            "stage_map")
    closed_text = cell(cols.closed)
    closed = when(cols.closed or "", closed_text) if closed_text else None
    prefix = f"{mapping.id_prefix}-{deal_id}"
    amount_str = str(value)
    created_event = cloud_event(mapping.source, "deal.created", f"{prefix}-created",
                                _iso(created), {
        "deal_id": deal_id, "account_id": cell(cols.account_id), "owner_id": owner,
        "team": team, "amount": amount_str, "currency": currency, "stage": stages[0],
        "source": cell(cols.source), "product": cell(cols.product), "lead_id": None,
        "expected_close": closed.date().isoformat() if closed and stage else None})
    out = [created_event]
    if stage is not None:
        if stage != stages[0]:
            entered_text = cell(cols.stage_entered)
            entered = when(cols.stage_entered or "", entered_text) if entered_text else None
            if entered is None:
                report.quirks["open deal: current stage entered at creation (no stage date)"] += 1
                entered = created
            elif entered < created:
                report.quirks["stage date before creation: moved to creation"] += 1
                entered = created
            out.append(cloud_event(mapping.source, "deal.stage_changed", f"{prefix}-stage-{stage}",
                                   _iso(entered), {"deal_id": deal_id,
                                                   "from_stage": stages[0], "to_stage": stage,
                                                   "amount": None}))
        return out
    if closed is None:
        raise _RowError(f"column {cols.closed!r}: a closed deal ({crm_stage!r}) needs a close "
                        "date")
    if closed < created:
        report.quirks["closed before created: close moved to creation"] += 1
        closed = created
    competitor = cell(cols.competitor)
    if crm_stage in won:
        out.append(cloud_event(mapping.source, "deal.won", f"{prefix}-won", _iso(closed), {
            "deal_id": deal_id, "amount": amount_str, "competitor": competitor,
            "competitor_price": None}))
    else:
        out.append(cloud_event(mapping.source, "deal.lost", f"{prefix}-lost", _iso(closed), {
            "deal_id": deal_id, "reason": cell(cols.lost_reason), "competitor": competitor,
            "competitor_price": None}))
    return out
