"""docker-compose.yml and the Dockerfile agree with the code (structure only; see README)."""

from __future__ import annotations

from pathlib import Path

import yaml

from stream_app.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_compose_workers_use_only_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker-1", "worker-2", "prometheus"} <= set(services)
    fields = {f"PULSE_{name.upper()}" for name in Settings.model_fields}
    for name in ("worker-1", "worker-2"):
        env = services[name]["environment"]
        assert set(env) <= fields, set(env) - fields
        settings = Settings(**{k[6:].lower(): v for k, v in env.items()})
        assert settings.kafka_bootstrap == "kafka:9092"


def test_prometheus_scrapes_both_workers() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["worker-1:6066", "worker-2:6066"]


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

    registry = CollectorRegistry()
    PulseCollector(Full(), registry)
    names = {sample.name for family in registry.collect() for sample in family.samples}
    documented = set(re.findall(r"`(pulse_[a-z_]+)[{`]", readme))
    assert names - documented == set()


def test_docker_compose_validates_the_stack() -> None:
    import subprocess

    from tests.prometheus_tools import require_binary

    done = subprocess.run([require_binary("docker-compose"), "config", "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
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
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    for name, text in committed.items():
        board = json.loads(text)
        assert board["uid"].startswith("pulse-") and board["panels"], name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == PROMETHEUS_UID, (name, panel["title"])
        assert len(list(panel_queries(text))) >= len(board["panels"])
