"""Read a /metrics endpoint into a dict of samples (for the demo table and the tests)."""

from __future__ import annotations

__all__ = ["Samples", "parse_metrics", "scrape"]

import httpx
from prometheus_client.parser import text_string_to_metric_families

#: (metric name, sorted label items) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Samples of a Prometheus text exposition."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(url: str, timeout: float = 5.0) -> Samples:
    """GET and parse one /metrics URL."""
    response = httpx.get(url, timeout=timeout)
    response.raise_for_status()
    return parse_metrics(response.text)
