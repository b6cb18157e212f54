"""Read a /metrics endpoint into a dict of samples (for the demo table and the tests)."""

from __future__ import annotations

__all__ = ["DuplicateSeriesError", "Samples", "parse_metrics", "scrape"]

import httpx
from prometheus_client.parser import text_string_to_metric_families

#: (metric name, sorted label items) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class DuplicateSeriesError(ValueError):
    """An exposition names the same series twice (Prometheus rejects such a scrape)."""


def parse_metrics(text: str) -> Samples:
    """Samples of a Prometheus text exposition; a series seen twice raises
    :class:`DuplicateSeriesError` instead of one value silently replacing the other."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            if key in samples:
                raise DuplicateSeriesError(
                    f"series {sample.name}{dict(key[1])} exposed twice "
                    f"({samples[key]!r} and {sample.value!r})")
            samples[key] = sample.value
    return samples


def scrape(url: str, timeout: float = 5.0) -> Samples:
    """GET and parse one /metrics URL."""
    response = httpx.get(url, timeout=timeout)
    response.raise_for_status()
    return parse_metrics(response.text)
