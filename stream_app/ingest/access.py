"""Who may send to the gateway, and how fast: bearer tokens compared in constant time,
and a token bucket per token. Pure: no HTTP server."""

from __future__ import annotations

__all__ = ["RateLimiter", "TokenBook", "parse_tokens"]

import hmac
import math
from collections.abc import Callable, Mapping


def parse_tokens(text: str) -> dict[str, str]:
    """``name=token,name=token`` (``PULSE_INGEST_TOKENS``) to {name: token}. Names label
    the metrics and the rate limit; tokens are never logged."""
    tokens: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, token = item.partition("=")
        name, token = name.strip(), token.strip()
        if not sep or not name or not token:
            raise ValueError("PULSE_INGEST_TOKENS: expected name=token pairs separated by "
                             f"commas, got an item without a name or a token ({name or '?'}=...)")
        if name in tokens:
            raise ValueError(f"PULSE_INGEST_TOKENS: the name {name!r} is given twice")
        if len(token) < 16:
            raise ValueError(f"PULSE_INGEST_TOKENS: the token of {name!r} has {len(token)} "
                             "characters; use at least 16 (e.g. `openssl rand -hex 24`)")
        tokens[name] = token
    return tokens


class TokenBook:
    """The configured tokens; :meth:`holder` names the one a request presents."""

    def __init__(self, tokens: Mapping[str, str]):
        self._tokens = [(name, token.encode()) for name, token in tokens.items()]

    def holder(self, presented: str | None) -> str | None:
        """The name of the token ``presented`` (every token is compared, each in constant
        time, so the answer's timing says nothing about which one nearly matched)."""
        if not presented:
            return None
        candidate = presented.encode()
        found = None
        for name, token in self._tokens:
            if hmac.compare_digest(candidate, token):
                found = name
        return found


class RateLimiter:
    """A token bucket per caller: ``rate`` requests a second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]):
        self._rate, self._burst, self._clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def admit(self, caller: str) -> float:
        """0 when the request may go on (one token taken), else the seconds until the
        caller's next token (the ``Retry-After``)."""
        now = self._clock()
        tokens, since = self._buckets.get(caller, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - since) * self._rate)
        if tokens >= 1:
            self._buckets[caller] = (tokens - 1, now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return max((1 - tokens) / self._rate, 1e-3)

    @staticmethod
    def retry_after(seconds: float) -> str:
        """A ``Retry-After`` header value: whole seconds, at least 1."""
        return str(max(1, math.ceil(seconds)))
