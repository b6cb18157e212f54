"""JSON Schema files and example events under ``schemas/``, generated from the models.

``stream-app schemas`` rewrites them; ``stream-app schemas --check`` (and a test)
fails when the files and the models have drifted apart.
"""

from __future__ import annotations

__all__ = ["INVALID_EXAMPLES", "VALID_EXAMPLES", "expected_files", "write_files"]

import copy
import json
from pathlib import Path
from typing import Any

from stream_app.events.emitted import EMITTED_MODELS
from stream_app.events.models import EVENT_TYPES, crm_event_adapter


def _envelope(kind: str, ident: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"specversion": "1.0", "id": ident, "source": "crm/salesforce", "type": kind,
            "time": "2026-11-02T09:30:00+01:00", "subject": data.get("deal_id"),
            "datacontenttype": "application/json", "data": data}


VALID_EXAMPLES: dict[str, dict[str, Any]] = {
    "deal.created": _envelope("deal.created", "evt-0001", {
        "deal_id": "D-1001", "account_id": "A-77", "owner_id": "rep-ana", "team": "EMEA",
        "amount": "12500.00", "currency": "EUR", "stage": "Prospecting", "source": "Webinar",
        "product": "Growth", "lead_id": "L-555", "expected_close": "2027-01-15"}),
    "deal.stage_changed": _envelope("deal.stage_changed", "evt-0002", {
        "deal_id": "D-1001", "from_stage": "Prospecting", "to_stage": "Qualification",
        "amount": "14000.00"}),
    "deal.updated": _envelope("deal.updated", "evt-0012", {
        "deal_id": "D-1001", "amount": "15500.00", "expected_close": "2027-02-01",
        "forecast_category": "best_case"}),
    "deal.won": _envelope("deal.won", "evt-0003", {
        "deal_id": "D-1001", "amount": "13800.00", "competitor": "Globex",
        "competitor_price": "12900.00"}),
    "deal.lost": _envelope("deal.lost", "evt-0004", {
        "deal_id": "D-1002", "reason": "price", "competitor": "Initech",
        "competitor_price": "9000"}),
    "deal.reopened": _envelope("deal.reopened", "evt-0013", {
        "deal_id": "D-1002", "stage": "Qualification"}),
    "deal.deleted": _envelope("deal.deleted", "evt-0014", {"deal_id": "D-1003"}),
    "deal.restored": _envelope("deal.restored", "evt-0015", {"deal_id": "D-1003"}),
    "customer.churned": {**_envelope("customer.churned", "evt-0005", {
        "account_id": "A-77", "reason": "budget", "competitor": None}), "subject": "A-77"},
    "quota.set": {**_envelope("quota.set", "evt-0006", {
        "owner_id": "rep-ana", "team": "EMEA", "period": "2026-Q4", "amount": "150000.00",
        "currency": "EUR"}), "subject": "rep-ana"},
    "rep.updated": {**_envelope("rep.updated", "evt-0016", {
        "owner_id": "rep-ana", "name": "Ana Lopez", "team": "EMEA"}), "subject": "rep-ana"},
    "lead.created": {**_envelope("lead.created", "evt-0007", {
        "lead_id": "L-555", "source": "Webinar", "owner_id": "rep-ana", "team": "EMEA",
        "industry": "Software", "company_size": 240, "job_title": "VP Sales"}),
        "subject": "L-555"},
    "lead.engaged": {**_envelope("lead.engaged", "evt-0008", {
        "lead_id": "L-555", "action": "demo_request"}), "subject": "L-555"},
    "lead.converted": {**_envelope("lead.converted", "evt-0009", {
        "lead_id": "L-555", "deal_id": "D-1001"}), "subject": "L-555"},
    "lead.disqualified": {**_envelope("lead.disqualified", "evt-0010", {
        "lead_id": "L-556", "reason": "no budget"}), "subject": "L-556"},
    "activity.logged": {**_envelope("activity.logged", "evt-0011", {
        "owner_id": "rep-ana", "team": "EMEA", "kind": "meeting", "deal_id": "D-1001",
        "activity_id": "00T5e00000Xq1"}), "subject": "rep-ana"},
}


def _mutate(kind: str, change: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    event = copy.deepcopy(VALID_EXAMPLES[kind])
    for path, value in change.items():
        target = event
        *parents, leaf = path.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    for path in drop:
        target = event
        *parents, leaf = path.split(".")
        for parent in parents:
            target = target[parent]
        del target[leaf]
    return event


#: name -> (expected rejection reason, event)
INVALID_EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "missing-team": ("missing_field", _mutate("deal.created", {}, drop=("data.team",))),
    "negative-amount": ("negative_amount", _mutate("deal.created", {"data.amount": "-10"})),
    "naive-time": ("naive_timestamp", _mutate("deal.won", {"time": "2026-11-02T09:30:00"})),
    "unknown-type": ("unknown_type", _mutate("deal.won", {"type": "deal.merged"})),
    "unknown-currency": ("unknown_currency", _mutate("deal.created", {"data.currency": "XYZ"})),
    "unknown-stage": ("unknown_stage", _mutate("deal.stage_changed", {"data.to_stage": "Maybe"})),
    "wrong-specversion": ("invalid_field", _mutate("deal.lost", {"specversion": "0.3"})),
    "empty-update": ("invalid_field", _mutate("deal.updated", {
        "data.amount": None, "data.expected_close": None, "data.forecast_category": None})),
    "unknown-activity-kind": ("invalid_field",
                              _mutate("activity.logged", {"data.kind": "lunch"})),
    "amount-not-a-number": ("invalid_field", _mutate("deal.won", {"data.amount": "lots"})),
}


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def expected_files() -> dict[str, str]:
    """Relative path under ``schemas/`` -> file content."""
    files: dict[str, str] = {
        "cloudevent.schema.json": _dump(crm_event_adapter.json_schema()),
    }
    for kind, model in EVENT_TYPES.items():
        files[f"{kind}.schema.json"] = _dump(model.model_json_schema())
    for name, emitted in EMITTED_MODELS.items():
        files[f"emitted/{name}.schema.json"] = _dump(emitted.model_json_schema())
    for kind, event in VALID_EXAMPLES.items():
        files[f"examples/valid/{kind}.json"] = _dump(event)
    for name, (reason, event) in INVALID_EXAMPLES.items():
        files[f"examples/invalid/{name}.json"] = _dump({"expected_reason": reason,
                                                         "event": event})
    return files


def write_files(root: Path) -> list[str]:
    """Write every expected file; returns the paths that changed."""
    changed = []
    for rel, content in expected_files().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            changed.append(rel)
    return changed
