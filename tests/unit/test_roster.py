"""The roster: the worker's profile per owner and the gateway's team per owner follow the
latest ``rep.updated`` in any order; webhooks take the roster's team first, and wait
for the roster to be read."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import random
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from stream_app.config import Settings, contract_rules
from stream_app.events.codec import validate_event
from stream_app.events.models import RepUpdated
from stream_app.importers.roster import RosterError, import_roster
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


AS_OF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def test_a_roster_file_becomes_valid_rep_updated_events_with_stable_ids(tmp_path: Path) -> None:
    path = tmp_path / "roster.yml"
    path.write_text('reps:\n  "0055e000001AbCdAAA": {name: Ana Lopez, team: EMEA}\n'
                    "  900: {name: Ben Okafor}\n")
    events, report = import_roster(path, AS_OF)
    assert [(e["data"]["owner_id"], e["data"]["name"], e["data"]["team"]) for e in events] == [
        ("0055e000001AbCdAAA", "Ana Lopez", "EMEA"), ("900", "Ben Okafor", None)]
    assert report.rows == 2 and all(e["time"] == "2026-11-01T00:00:00Z" for e in events)
    assert all(isinstance(validate_event(e, contract_rules(Settings())), RepUpdated)
               for e in events)
    again, _ = import_roster(path, AS_OF + dt.timedelta(days=3))
    assert [e["id"] for e in again] == [e["id"] for e in events]  # repeats: dropped
    path.write_text("reps:\n  900: {name: Ben Okafor, team: Americas}\n")
    [moved], _ = import_roster(path, AS_OF)
    assert moved["id"] != events[1]["id"]


@pytest.mark.parametrize(("text", "problem"), [
    ("reps: []\n", "expected a mapping 'reps'"),
    ("people: {}\n", "expected a mapping 'reps'"),
    ("reps:\n  9: {name: ''}\n", "reps.9.name: expected text"),
    ("reps:\n  9: {team: EMEA}\n", "reps.9.name: expected text, got None"),
    ("reps:\n  9: {name: Ana, role: AE}\n", "reps.9: unknown keys ['role']"),
    ("reps:\n  9: Ana\n", "reps.9: expected {name, team}"),
    ("reps: [\n", "roster.yml"),
])
def test_a_bad_roster_file_names_the_entry_and_what_was_expected(
        tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "roster.yml"
    path.write_text(text)
    with pytest.raises(RosterError, match=re.escape(problem)):
        import_roster(path, AS_OF)
