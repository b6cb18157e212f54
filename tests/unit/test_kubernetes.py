"""The Kubernetes manifests, checked without a cluster: `kubectl kustomize` renders them,
built-in kinds validate against the Kubernetes schemas, the PrometheusRule holds the very
rules of deploy/prometheus (promtool checks them), the dashboards are the generated
ones, and the worker's settings, probes, volume and grace period fit the code."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from stream_app.adapters.faust_app import BATCH_FINISH_SECONDS
from stream_app.config import Settings
from stream_app.settings_report import env_name
from stream_app.tools.dashboards import dashboard_files
from stream_app.tools.manifests import DASHBOARD_LABEL, manifest_files
from tests.prometheus_tools import require_binary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
RULES = ROOT / "deploy" / "prometheus" / "rules"
#: The oldest Kubernetes the manifests claim to work on (policy/v1 PDB, seccompProfile).
KUBERNETES_VERSION = "1.27.0"


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = require_binary("kubectl")
    done = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                          timeout=60, check=True)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [d for d in docs if d["kind"] == kind
               and (name is None or d["metadata"]["name"] == name)]
    return found


def test_the_generated_manifests_are_what_their_sources_give() -> None:
    current = manifest_files(RULES)
    for name, text in current.items():
        assert (K8S / "generated" / name).read_text() == text, (
            f"deploy/kubernetes/generated/{name} is stale: run `make manifests`")
    assert set(current) == {p.name for p in (K8S / "generated").iterdir()}


def test_built_in_kinds_validate_against_the_kubernetes_schemas(
        rendered: list[dict[str, Any]]) -> None:
    built_in = [d for d in rendered if d["apiVersion"] in {"v1", "apps/v1", "policy/v1"}]
    assert {d["kind"] for d in built_in} == {"ConfigMap", "Service", "StatefulSet",
                                             "PodDisruptionBudget"}
    for doc in built_in:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_prometheus_rule_holds_the_deployed_rules_and_promtool_accepts_them(
        rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    rule = _one(rendered, "PrometheusRule")
    groups = [group for path in sorted(RULES.glob("*.yml"))
              for group in yaml.safe_load(path.read_text())["groups"]]
    assert rule["spec"]["groups"] == groups
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    promtool = require_binary("promtool")
    done = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboards_are_config_maps_for_grafanas_sidecar(
        rendered: list[dict[str, Any]]) -> None:
    maps = [d for d in rendered if d["kind"] == "ConfigMap"
            and d["metadata"].get("labels", {}).get(DASHBOARD_LABEL) == "1"]
    shipped = {name: text for doc in maps for name, text in doc["data"].items()}
    assert shipped == dashboard_files()


def test_the_service_monitor_scrapes_the_workers_as_the_job_the_alerts_name(
        rendered: list[dict[str, Any]]) -> None:
    monitor = _one(rendered, "ServiceMonitor")
    service = _one(rendered, "Service")
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v
               for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    ports = {port["name"] for port in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    job = labels[monitor["spec"]["jobLabel"]]
    assert f'up{{job="{job}"}}' in (RULES / "alerts.yml").read_text()


def test_the_worker_pod_fits_the_code(rendered: list[dict[str, Any]],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    config = _one(rendered, "ConfigMap", "pipeline-pulse-worker")["data"]
    known = {env_name(field) for field in Settings.model_fields}
    assert set(config) <= known, set(config) - known
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"]
    assert set(secret) <= known
    for name in [n for n in os.environ if n.startswith("PULSE_")]:
        monkeypatch.delenv(name)
    for name, value in {**config, **secret}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.web_host == "0.0.0.0" and settings.log_format == "json"

    stateful = _one(rendered, "StatefulSet")
    spec = stateful["spec"]
    assert spec["replicas"] <= settings.partitions
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > BATCH_FINISH_SECONDS
    [container] = pod["containers"]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_names == {"metrics": settings.web_port}
    probes = {kind: container[kind]["httpGet"] for kind in
              ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {p["port"] for p in probes.values()} == {"metrics"}
    assert probes["livenessProbe"]["path"] == "/livez"
    assert probes["readinessProbe"]["path"] == "/readyz"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == settings.data_dir
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == ["data"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {ref.get("configMapRef", ref.get("secretRef"))["name"]
            for ref in container["envFrom"]} == {"pipeline-pulse-worker", "pipeline-pulse"}
    env = {item["name"]: item for item in container["env"]}
    assert set(env) <= known
    # static membership: each pod's name, stable across its restarts, is a valid id
    assert env["PULSE_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.name")
    pod_name = f"{stateful['metadata']['name']}-{spec['replicas'] - 1}"
    monkeypatch.setenv("PULSE_GROUP_INSTANCE_ID", pod_name)
    assert Settings().group_instance_id == pod_name
    pdb = _one(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == spec["selector"]
    assert pdb["spec"]["maxUnavailable"] == 1
