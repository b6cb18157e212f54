"""The CloudEvents HTTP protocol binding (v1.0): a request's body and headers to the
events it carries, or the reason it carries none.

Three content modes (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md):

- structured: ``Content-Type: application/cloudevents+json``, the body is one event;
- batched: ``Content-Type: application/cloudevents-batch+json``, the body is a JSON
  array of events;
- binary: the attributes in ``ce-*`` headers (``ce-specversion`` says so; values
  percent-decoded), the body is the event's ``data`` (``application/json``: the
  contract's data are objects).

Pure: no HTTP server, no Kafka. The gateway turns a :class:`BindingError` into a 4xx.
"""

from __future__ import annotations

__all__ = [
    "BATCH",
    "STRUCTURED",
    "BindingError",
    "events_of_request",
    "json_depth",
    "parse_json",
]

import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
_BINARY_PREFIX = "ce-"
_JSON = "application/json"


class BindingError(Exception):
    """A request that carries no valid events: the HTTP ``status`` to answer and why."""

    def __init__(self, status: int, reason: str, detail: str):
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_json(body: bytes, max_depth: int) -> Any:
    """A UTF-8 JSON body nested at most ``max_depth`` deep; :class:`BindingError` (400)
    otherwise."""
    return _parse(body, max_depth)


def _parse(body: bytes, max_depth: int) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BindingError(400, "not_utf8",
                           f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise BindingError(400, "too_deep", f"JSON nested deeper than {max_depth}") from None
    except ValueError as exc:
        raise BindingError(400, "not_json", f"body is not JSON: {exc}") from None
    if json_depth(value) > max_depth:
        raise BindingError(400, "too_deep", f"JSON nested deeper than {max_depth}")
    return value


def events_of_request(headers: Mapping[str, str], body: bytes, *, max_events: int,
                      max_depth: int) -> list[dict[str, Any]]:
    """The events of one request as JSON objects (the contract validates them next).

    Header names are matched case-insensitively. Raises :class:`BindingError`: 415 for
    a content type that is no CloudEvents mode, 400 for a body that is not what the mode
    says, 413 for a batch of more than ``max_events``.
    """
    headers = {name.lower(): value for name, value in headers.items()}
    media = _media_type(headers.get("content-type"))
    if media == STRUCTURED:
        value = _parse(body, max_depth)
        if not isinstance(value, dict):
            raise BindingError(400, "not_an_object",
                               f"structured mode: expected one JSON object, got "
                               f"{type(value).__name__}")
        return [value]
    if media == BATCH:
        value = _parse(body, max_depth)
        if not isinstance(value, list):
            raise BindingError(400, "not_a_batch",
                               f"batched mode: expected a JSON array of events, got "
                               f"{type(value).__name__}")
        if len(value) > max_events:
            raise BindingError(413, "too_many_events",
                               f"batch of {len(value)} events, the limit is {max_events} "
                               "(PULSE_INGEST_MAX_EVENTS_PER_REQUEST)")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise BindingError(400, "not_an_object",
                                   f"event {index}: expected a JSON object, got "
                                   f"{type(item).__name__}")
        return value
    if headers.get("ce-specversion") is not None:
        return [_binary(headers, body, media, max_depth)]
    raise BindingError(415, "unsupported_media_type",
                       f"Content-Type {media or '(none)'!r} is no CloudEvents mode: send "
                       f"{STRUCTURED} (one event), {BATCH} (a JSON array) or binary mode "
                       "(ce-specversion, ce-id, ce-type, ce-source, ce-time headers and "
                       "Content-Type application/json)")


def _binary(headers: Mapping[str, str], body: bytes, media: str,
            max_depth: int) -> dict[str, Any]:
    if media != _JSON:
        raise BindingError(415, "unsupported_media_type",
                           f"binary mode: the data must be application/json, got "
                           f"{media or '(none)'!r}")
    event: dict[str, Any] = {}
    for name, value in headers.items():
        if name.startswith(_BINARY_PREFIX) and len(name) > len(_BINARY_PREFIX):
            event[name[len(_BINARY_PREFIX):]] = urllib.parse.unquote(value)
    event["datacontenttype"] = _JSON
    event["data"] = _parse(body, max_depth)
    return event
