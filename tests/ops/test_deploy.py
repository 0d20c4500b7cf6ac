"""Offline checks of what operators deploy: every kustomize overlay renders and validates
against the Kubernetes schemas (and KEDA's resources against their schema), the manifests
keep the promises the services rely on, and docker-compose.yml follows the compose spec."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from compose_spec import ComposeSpecification

from services.capacity.settings import CapacitySettings
from services.intake.app import consumed as intake_consumed
from services.intake.settings import IntakeSettings
from services.reporting.app import TOPICS, consumed
from services.reporting.settings import ReportingSettings
from services.scoring.settings import ScoringSettings
from shared.local import DERIVED
from shared.topics import TOPIC_SPECS

ROOT = Path(__file__).parents[2]
KUBERNETES = "1.32.0"
KEDA = json.loads((ROOT / "deploy" / "schemas" / "keda.json").read_text())
GROUPS = {
    "intake": IntakeSettings().group_id,
    "scoring": ScoringSettings().group_id,
    "capacity": CapacitySettings().group_id,
    "reporting": ReportingSettings(api_token="unused-token-for-defaults").group_id,
}
GRACE = IntakeSettings().shutdown_grace_seconds
# Intake's Deployments and their PMO_INTAKE_ROLE.
INTAKE_ROLES = {"pmo-intake": "submissions", "pmo-intake-duplicates": "duplicates"}
# Reporting's Deployments and their PMO_REPORTING_ROLE.
REPORTING_ROLES = {
    "pmo-reporting": "others",
    "pmo-reporting-projects": "projects",
    "pmo-reporting-api": "api",
}


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed (Debian package kubectl; make test installs it)"
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(params=["dev", "prod"], scope="module")
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_every_resource_validates_against_its_schema(rendered: list[dict[str, Any]]) -> None:
    for doc in rendered:
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, KEDA[doc["kind"]])
        else:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_a_misspelt_field_is_caught() -> None:
    deployment = of_kind(render("dev"), "Deployment")[0]
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    scaled = of_kind(render("dev"), "ScaledObject")[0]
    scaled["spec"]["triggers"][0]["metadata"]["excludePersistentLag"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, KEDA["ScaledObject"])


def test_deployments_keep_the_services_promises(rendered: list[dict[str, Any]]) -> None:
    deployments = of_kind(rendered, "Deployment")
    names = {d["metadata"]["name"] for d in deployments}
    assert names == {f"pmo-{s}" for s in GROUPS} | set(REPORTING_ROLES) | set(INTAKE_ROLES)
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        name = d["metadata"]["name"]
        service = name.removesuffix("-api").removesuffix("-projects").removesuffix("-duplicates")
        assert container["image"].split(":")[0].endswith(service)  # its service's image
        assert pod["terminationGracePeriodSeconds"] > GRACE + 5
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        secrets = [
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container.get("env", [])
            if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
        ]
        assert "pmo-database" in secrets
    assert of_kind(rendered, "Secret") == [], "no secret is committed"
    pdbs = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in of_kind(rendered, "PodDisruptionBudget")
    }
    assert pdbs == {d["metadata"]["name"] for d in deployments}
    assert of_kind(rendered, "Job")[0]["spec"]["template"]["spec"]["containers"][0]["command"][
        -1
    ].endswith("pmo migrate")


def test_autoscaling_follows_each_consumer_groups_lag(rendered: list[dict[str, Any]]) -> None:
    """Each consuming Deployment scales on its group's lag; reporting's two workers, which
    share a group, each on the lag of topics it consumes."""
    partitions = max(spec.partitions for spec in TOPIC_SPECS)
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(rendered, "ScaledObject")}
    workers = {"pmo-reporting-projects": "reporting", "pmo-intake-duplicates": "intake"}
    assert set(scaled) == {f"pmo-{s}" for s in GROUPS} | set(workers)
    for name, spec in ((n, s["spec"]) for n, s in scaled.items()):
        service = workers.get(name, name.removeprefix("pmo-"))
        assert spec["triggers"]
        for trigger in spec["triggers"]:
            assert trigger["type"] == "kafka"
            assert trigger["metadata"]["consumerGroup"] == GROUPS[service]
            assert trigger["metadata"]["excludePersistentLag"] == "true"
        topics = {t["metadata"].get("topic") for t in spec["triggers"]}
        if service == "reporting":
            assert topics <= {t.value for t in consumed(REPORTING_ROLES[name])}, name
        if service == "intake":
            assert topics <= {t.value for t in intake_consumed(INTAKE_ROLES[name])}, name
        assert spec["maxReplicaCount"] <= partitions


def env_of(rendered: list[dict[str, Any]], name: str) -> dict[str, str | None]:
    (deployment,) = (d for d in of_kind(rendered, "Deployment") if d["metadata"]["name"] == name)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_intake_searches_for_duplicates_apart_from_the_submissions_path(
    rendered: list[dict[str, Any]],
) -> None:
    """Intake's two Deployments share its group and together consume what intake reads; the
    duplicate search, derived work, asks for less CPU than the submissions' path."""
    for name, role in INTAKE_ROLES.items():
        assert env_of(rendered, name)["PMO_INTAKE_ROLE"] == role
    assert sorted(t for role in INTAKE_ROLES.values() for t in intake_consumed(role)) == sorted(
        intake_consumed("all")
    )


def test_reporting_runs_its_workers_and_api_apart(rendered: list[dict[str, Any]]) -> None:
    """The workers consume (KEDA scales them on lag); the API process consumes nothing, scales
    on CPU and is what the ingress and the network policy admit."""

    def role(name: str) -> str:
        (deployment,) = (
            d for d in of_kind(rendered, "Deployment") if d["metadata"]["name"] == name
        )
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        return str(env["PMO_REPORTING_ROLE"])

    for name, expected in REPORTING_ROLES.items():
        assert role(name) == expected
    # Together the workers consume every topic reporting reads.
    assert sorted(
        t for name in ("pmo-reporting", "pmo-reporting-projects") for t in consumed(role(name))
    ) == sorted(TOPICS)
    (hpa,) = of_kind(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "pmo-reporting-api"
    services = {s["metadata"]["name"]: s for s in of_kind(rendered, "Service")}
    api = services["pmo-reporting-api"]["spec"]["selector"]["app.kubernetes.io/name"]
    assert api == "pmo-reporting-api"
    assert "pmo-reporting" not in services  # a worker serves nothing but probes and metrics
    (policy,) = (
        p
        for p in of_kind(rendered, "NetworkPolicy")
        if p["metadata"]["name"] == "pmo-reporting-ingress"
    )
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": api}
    for ingress in of_kind(rendered, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] == "pmo-reporting-api"


def test_network_policies_confine_the_services(rendered: list[dict[str, Any]]) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(rendered, "NetworkPolicy")}
    services = policies["pmo-services"]
    assert set(services["policyTypes"]) == {"Ingress", "Egress"}
    ports = {port["port"] for rule in services["egress"] for port in rule["ports"]}
    assert ports == {9092, 9093, 5432, 53}
    assert "pmo-reporting-ingress" in policies


def test_production_talks_to_kafka_over_sasl_ssl() -> None:
    config = of_kind(render("prod"), "ConfigMap")[0]["data"]
    assert config["PMO_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["PMO_KAFKA_ENABLE_IDEMPOTENCE"] == "true"


def test_compose_file_follows_the_compose_specification() -> None:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    spec = ComposeSpecification.model_validate(document)
    assert spec.services is not None
    assert set(spec.services) == {
        "kafka",
        "postgres",
        "init",
        "intake",
        "scoring",
        "capacity",
        "reporting",
    }
    assert document["services"]["kafka"]["image"].startswith("apache/kafka:")
    for name in ("intake", "scoring", "capacity", "reporting"):
        assert "healthcheck" in document["services"][name], name
    assert document["services"]["reporting"]["ports"] == ["8080:8080"]
    # Derived work yields the CPU to a submission's path (reporting is one process here).
    shares = {name: spec.get("cpu_shares", 1024) for name, spec in document["services"].items()}
    assert {name for name, weight in shares.items() if weight < 1024} == set(DERIVED)


def cpu(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_a_submissions_path_outweighs_derived_work_in_production() -> None:
    """On a busy node the kernel shares CPU by the containers' requests."""
    requests = {
        d["metadata"]["name"]: cpu(
            d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
        )
        for d in of_kind(render("prod"), "Deployment")
    }
    path = [requests[n] for n in ("pmo-intake", "pmo-reporting-projects", "pmo-reporting-api")]
    derived = [requests[f"pmo-{s}"] for s in DERIVED] + [
        requests["pmo-reporting"],
        requests["pmo-intake-duplicates"],
    ]
    assert min(path) > max(derived), requests
