"""Read a /metrics endpoint into a dict of samples (for the demo table and the tests)."""

from __future__ import annotations

__all__ = ["DuplicateSeriesError", "Samples", "get", "parse_metrics", "scrape"]

import functools

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


@functools.cache
def _client() -> httpx.Client:
    # One client for every poll: ``httpx.get`` builds a client, and with it an SSL context
    # loading the CA store, on each call (tens of ms of CPU, most of a poller's time).
    # No kept-alive connections: the servers polled are restarted and killed.
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


def get(url: str, timeout: float = 5.0) -> httpx.Response:
    """GET ``url`` (plain HTTP on a local port), raising for an error status."""
    response = _client().get(url, timeout=timeout)
    response.raise_for_status()
    return response


def scrape(url: str, timeout: float = 5.0) -> Samples:
    """GET and parse one /metrics URL."""
    return parse_metrics(get(url, timeout).text)
