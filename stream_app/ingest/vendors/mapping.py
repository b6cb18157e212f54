"""What a CRM's webhooks need besides their payload: a mapping file per vendor (YAML,
like the CSV import presets): CRM stage ids to the configured stages, owners to teams,
the currency of amounts without one, the CloudEvent source. Pure: no HTTP, no Kafka."""

from __future__ import annotations

__all__ = ["Translation", "TranslationError", "VendorMapping", "amount_text", "deal_event",
           "iso_time", "json_object", "load_vendor_mapping", "utc_datetime"]

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml


class TranslationError(Exception):
    """A webhook the gateway cannot turn into events: the HTTP ``status`` (400 a payload
    that is not the vendor's format, 422 a value the mapping file does not cover), the
    ``reason`` and the ``field`` at fault."""

    def __init__(self, status: int, reason: str, field: str, detail: str):
        super().__init__(f"{field}: {detail}")
        self.status, self.reason, self.field, self.detail = status, reason, field, detail


@dataclass(frozen=True, slots=True)
class VendorMapping:
    """One vendor's mapping file."""

    vendor: str
    source: str
    default_currency: str
    default_team: str | None
    #: CRM stage id (as text) -> a configured stage (``PULSE_STAGES``).
    stages: Mapping[str, str]
    #: CRM owner id (as text) -> the owner's team (a start of the roster).
    owner_teams: Mapping[str, str] = field(default_factory=dict)
    #: CRM stage ids that mean won / lost (vendors whose deals carry no status field).
    won_stages: frozenset[str] = frozenset()
    lost_stages: frozenset[str] = frozenset()
    #: The live roster (owner id -> team from ``rep.updated``), consulted first.
    roster: Callable[[str], str | None] | None = field(default=None, compare=False)

    def closes(self, crm_stage: str) -> bool:
        """Whether a CRM stage means won or lost."""
        return crm_stage in self.won_stages or crm_stage in self.lost_stages

    @property
    def first_stage(self) -> str:
        """The stage listed first: where a deal created already closed enters."""
        return next(iter(self.stages.values()))

    def stage(self, crm_stage: Any, where: str) -> str:
        """The configured stage of a CRM stage id; 422 when the mapping lacks it."""
        name = self.stages.get(str(crm_stage))
        if name is None:
            known = ", ".join(sorted(self.stages)) or "none"
            raise TranslationError(422, "unmapped_stage", where,
                                   f"CRM stage {crm_stage!r} is not in the {self.vendor} "
                                   f"mapping's stages (known: {known}); add it and resend")
        return name

    def team(self, owner_id: str, where: str) -> str:
        """The owner's team in the roster, else in the mapping's ``owners``, else
        ``default_team``; 422 without any."""
        team = (self.roster(owner_id) if self.roster is not None else None) or \
            self.owner_teams.get(owner_id, self.default_team)
        if team is None:
            raise TranslationError(422, "unmapped_owner", where,
                                   f"owner {owner_id!r} has no team in the {self.vendor} "
                                   "mapping's owners and there is no default_team")
        return team


@dataclass(frozen=True, slots=True)
class Translation:
    """The CloudEvents of one webhook, and the changes in it Pipeline Pulse does not
    model yet (counted and logged, never guessed): (reason, detail)."""

    events: list[dict[str, Any]]
    ignored: list[tuple[str, str]] = field(default_factory=list)


def load_vendor_mapping(path: Path, vendor: str) -> VendorMapping:
    """Read and check a mapping file; a ValueError names the file and the key at fault."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the {vendor} mapping: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top")
    stages = raw.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise ValueError(f"{path}: `stages` must map CRM stage ids to configured stages")
    owners = raw.get("owners") or {}
    if not isinstance(owners, dict):
        raise ValueError(f"{path}: `owners` must map CRM owner ids to {{team: ...}}")
    owner_teams = {}
    for owner, info in owners.items():
        if not isinstance(info, dict) or not isinstance(info.get("team"), str):
            raise ValueError(f"{path}: owners.{owner}: expected {{team: <name>}}")
        owner_teams[str(owner)] = info["team"]
    currency = raw.get("default_currency")
    if not isinstance(currency, str) or len(currency) != 3:
        raise ValueError(f"{path}: `default_currency` must be an ISO 4217 code")
    return VendorMapping(
        vendor=vendor, source=str(raw.get("source") or f"crm/{vendor}"),
        default_currency=currency, default_team=raw.get("default_team"),
        stages={str(k): str(v) for k, v in stages.items()}, owner_teams=owner_teams,
        won_stages=frozenset(str(s) for s in raw.get("won_stages") or ()),
        lost_stages=frozenset(str(s) for s in raw.get("lost_stages") or ()))


def utc_datetime(value: Any, where: str) -> dt.datetime:
    """A CRM's UTC time ("2024-09-27T14:25:27Z", "2024-09-27T14:25:27.000+0000",
    Pipedrive v1's "2024-09-27 14:25:27", or epoch milliseconds as Salesforce's Pub/Sub
    API and HubSpot send them) as an aware datetime in UTC."""
    if isinstance(value, int) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    if not isinstance(value, str) or not value:
        raise TranslationError(400, "missing_field", where, "expected a UTC timestamp")
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise TranslationError(400, "invalid_field", where,
                               f"expected a UTC timestamp, got {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def iso_time(value: Any, where: str) -> str:
    """:func:`utc_datetime` as RFC 3339 text ending in Z."""
    return utc_datetime(value, where).isoformat().replace("+00:00", "Z")


def amount_text(value: Any, where: str) -> str:
    """A CRM amount (a JSON number or text; none is 0) as exact decimal text."""
    if value is None:
        return "0"
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise TranslationError(400, "invalid_field", where,
                               f"expected a number, got {value!r}") from None
    return str(amount)


def deal_event(mapping: VendorMapping, event_id: str, kind: str, time: str, deal_id: str,
               data: dict[str, Any]) -> dict[str, Any]:
    """The CloudEvent ``deal.<kind>`` of one deal, in the mapping's source."""
    return {"specversion": "1.0", "id": event_id, "source": mapping.source,
            "type": f"deal.{kind}", "time": time, "subject": deal_id,
            "datacontenttype": "application/json", "data": {"deal_id": deal_id, **data}}


def json_object(value: Any, where: str) -> dict[str, Any]:
    """``value`` when it is a JSON object; else a 400 naming ``where``."""
    if not isinstance(value, dict):
        raise TranslationError(400, "invalid_field", where,
                               f"expected an object, got {type(value).__name__}")
    return value
