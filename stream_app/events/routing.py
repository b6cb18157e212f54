"""One routing table for CRM events: the topic each event family goes to and the field
its Kafka key carries. The codec (which topic and key a message must have), the
replay tool (where to send an event) and their tests read it; a new family is one row.
"""

from __future__ import annotations

__all__ = ["ROUTES", "Route", "TopicRole", "route_of"]

from dataclasses import dataclass
from typing import Literal

#: The CRM topics by what they carry (a worker reads each with one agent).
TopicRole = Literal["deals", "customers", "quotas", "leads", "activities", "reps"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where the events of one family go."""

    #: The topic's role (what the worker's agent for it expects).
    role: TopicRole
    #: The name of the setting that holds the topic (``Settings.topic_deals``...).
    topic_setting: str
    #: The ``data`` field whose value is the Kafka key (the entity the topic is keyed by).
    key_field: str


#: Event family (the event type before its dot) -> its route.
ROUTES: dict[str, Route] = {
    "deal": Route("deals", "topic_deals", "deal_id"),
    "customer": Route("customers", "topic_customers", "account_id"),
    "quota": Route("quotas", "topic_quotas", "owner_id"),
    "lead": Route("leads", "topic_leads", "lead_id"),
    "activity": Route("activities", "topic_activities", "owner_id"),
    "rep": Route("reps", "topic_reps", "owner_id"),
}


def route_of(event_type: str) -> Route | None:
    """The route of an event type (``deal.won`` -> the deal route); None for an unknown
    family."""
    family, dot, _ = event_type.partition(".")
    return ROUTES.get(family) if dot else None
