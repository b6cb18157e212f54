"""The roster: the worker's profile per owner and the gateway's team per owner follow the
latest ``rep.updated`` in any order; webhooks take the roster's team first, and wait
for the roster to be read."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from stream_app.config import Settings
from stream_app.events.models import RepUpdated
from stream_app.ingest.gateway import IngestGateway
from stream_app.ingest.roster import Roster
from stream_app.ingest.vendors.mapping import load_vendor_mapping
from stream_app.ingest.vendors.pipedrive import pipedrive_events
from stream_app.kpi.reps import RepState, apply_rep_update, rep_contributions
from tests.unit.test_ingest import MemorySink

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pipedrive"
SEQUENCE = json.loads((FIXTURES / "deal_sequence.json").read_text())
TOKEN = "t0k3n-for-the-roster-tests-01"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"crm:{TOKEN}".encode()).decode()}


def _rep(ident: str, day: int, owner: str, name: str, team: str | None) -> RepUpdated:
    return RepUpdated.model_validate({
        "specversion": "1.0", "id": ident, "source": "crm", "type": "rep.updated",
        "time": f"2026-09-{day:02d}T09:00:00Z",
        "data": {"owner_id": owner, "name": name, "team": team}})


UPDATES = [_rep("r1", 1, "900", "Ana", "EMEA"), _rep("r2", 5, "900", "Ana Lopez", "Americas"),
           _rep("r3", 3, "900", "A. Lopez", None), _rep("r4", 2, "901", "Bo", None)]


@pytest.mark.parametrize("seed", range(6))
def test_the_latest_update_is_the_profile_in_any_order_and_with_repeats(seed: int) -> None:
    updates = UPDATES + UPDATES[:2]
    random.Random(seed).shuffle(updates)
    roster, states = Roster(), {"900": RepState("900"), "901": RepState("901")}
    for event in updates:
        roster.note(event)
        ms = int(event.time.timestamp() * 1000)
        states[event.data.owner_id] = apply_rep_update(
            states[event.data.owner_id], ms, event.id, event.data.name, event.data.team)
    assert (roster.team("900"), roster.team("901"), roster.team("999")) == ("Americas", None,
                                                                           None)
    assert rep_contributions(states["900"]) == {("i", "900", '["Ana Lopez", "Americas"]'): (1,)}
    assert RepState.from_json(states["901"].to_json()) == states["901"]


def _created_by(owner: int) -> dict[str, Any]:
    body = json.loads(json.dumps(SEQUENCE["deliveries"][0]["body"]))
    body["data"]["owner_id"] = owner
    return body


def test_a_webhook_takes_the_rosters_team_before_the_mapping_files() -> None:
    roster = Roster()
    mapping = load_vendor_mapping(FIXTURES / "mapping.yml", "pipedrive")
    live = replace(mapping, roster=roster.team)

    def team(owner: int) -> str:
        [created] = pipedrive_events(_created_by(owner), live).events
        return str(created["data"]["team"])

    assert (team(901), team(905)) == ("Americas", "EMEA")  # the file's owners, its default
    roster.note(_rep("r9", 1, "905", "Zoe", "APAC"))
    roster.note(_rep("r10", 1, "901", "Bo", "APAC"))
    assert (team(901), team(905)) == ("APAC", "APAC")


async def test_webhooks_wait_for_the_roster_with_503_and_retry_after() -> None:
    settings = Settings(ingest_tokens=SecretStr(f"crm={TOKEN}"),
                        ingest_pipedrive_mapping=str(FIXTURES / "mapping.yml"))
    sink = MemorySink()
    gateway = IngestGateway(settings, sink)
    gateway.roster_loaded = asyncio.Event()
    async with TestClient(TestServer(gateway.app)) as client:
        early = await client.post("/webhooks/pipedrive", headers=BASIC, json=_created_by(900))
        assert early.status == 503 and "Retry-After" in early.headers
        assert (await early.json())["error"] == "roster_loading"
        assert (await (await client.get("/healthz")).json())["roster"] == "loading"
        gateway.roster_loaded.set()
        later = await client.post("/webhooks/pipedrive", headers=BASIC, json=_created_by(900))
        assert later.status == 202
    assert len(sink.records) == 1
