"""Replays of the shared public datasets through a real worker: the published figures
and every KPI of the batch computation (skipped, with the reason, when the datasets
folder is not beside the project; failed instead under CI)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from stream_app.config import Settings
from stream_app.importers.olist import import_olist
from stream_app.importers.telco import import_telco
from stream_app.importers.x_education import import_x_education
from tests.datasets import dataset_folder, requires_dataset
from tests.integration.conftest import last_time
from tests.integration.harness import Worker, assert_matches, produce, settled, worker_settings
from tests.reference import ReferenceConfig, expected_metrics

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def _replay(settings: Settings, tmp_path: Path, events: list[dict],
            env: dict[str, str] | None = None) -> dict:
    worker = Worker(worker_settings(settings), tmp_path / "worker.log", env=env or {}).start()
    try:
        produce(settings, events)
        [samples] = settled([worker], settings.partitions, last_time(events), timeout=500)
        return samples
    finally:
        worker.discard()


@requires_dataset("x-education-leads")
def test_x_education_reproduces_the_published_conversion(
    base_settings: Settings, tmp_path: Path
) -> None:
    events, _ = import_x_education(dataset_folder("x-education-leads"))
    s = _replay(base_settings, tmp_path, events)
    everything = {"source": "all", "window": "all"}
    assert s[_key("pulse_created_leads", **everything)] == 9240
    assert s[_key("pulse_leads_converted", **everything)] == 3561
    assert round(s[_key("pulse_lead_conversion_ratio", **everything)], 4) == 0.3854
    published = {"Google": 0.400, "Direct Traffic": 0.322, "Olark Chat": 0.255,
                 "Reference": 0.918}
    for source, rate in published.items():
        got = s[_key("pulse_lead_conversion_ratio", source=source, window="all")]
        assert round(got, 3) == rate, source
    assert_matches(expected_metrics(events, last_time(events)), s)


@requires_dataset("olist-funnel")
def test_olist_reproduces_leads_and_won_deals(base_settings: Settings, tmp_path: Path) -> None:
    events, _ = import_olist(dataset_folder("olist-funnel"))
    fx = {"USD": "1", "EUR": "1.08", "GBP": "1.27", "BRL": "0.18"}
    segments = {e["data"]["product"] for e in events if e["type"] == "deal.created"}
    assert len(segments) > base_settings.max_products  # so the test lifts the cap
    s = _replay(base_settings, tmp_path, events, env={"PULSE_FX_RATES": json.dumps(fx),
                                                      "PULSE_MAX_PRODUCTS": "100"})
    assert s[_key("pulse_created_leads", source="all", window="all")] == 8000
    assert s[_key("pulse_deals_won", team="all", window="all")] == 842
    assert s[_key("pulse_leads_converted", source="all", window="all")] == 842
    cfg = ReferenceConfig(fx={k: Decimal(v) for k, v in fx.items()})
    assert_matches(expected_metrics(events, last_time(events), cfg), s)


@requires_dataset("telco-churn")
def test_telco_reproduces_customers_and_churn(base_settings: Settings, tmp_path: Path) -> None:
    events, _ = import_telco(dataset_folder("telco-churn"))
    s = _replay(base_settings, tmp_path, events)
    assert s[_key("pulse_deals_won", team="all", window="all")] == 7043
    assert s[_key("pulse_customers_churned", period="month_to_date")] == 1869
    assert s[_key("pulse_customers_active_at_period_start", period="month_to_date")] == 7032
    assert_matches(expected_metrics(events, last_time(events)), s)
