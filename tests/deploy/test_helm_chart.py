"""The Helm chart deploy/helm/airflow-mlops and the values files for the official charts, checked offline.

No cluster and no helm binary: the chart is rendered with Helm's own Go SDK (helm-python-sdk), every manifest is
validated strictly against the Kubernetes API schemas kubernetes-validate bundles, and the invariants the chart
promises are checked in Python. Each invariant check is also shown to catch a manifest broken on purpose.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from include.mlops import operations_store
from include.mlops.config import load_folder
from tests.conftest import REPO_ROOT

CHART = REPO_ROOT / "deploy" / "helm" / "airflow-mlops"
PROFILES = CHART / "profiles"
VALUES = REPO_ROOT / "deploy" / "helm" / "values"
RELEASE = "airflow-mlops"
NAMESPACE = "mlops"
# The oldest version the chart declares (Chart.yaml kubeVersion) and the newest kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30", "1.37")
# Not in Kubernetes' own API: the Prometheus Operator's CRDs, checked by hand below.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet"}
CREDENTIAL_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|CREDENTIAL|_URI$|_URL$")
# Variables whose names look like credentials but hold none: where things are, not how to get in.
NOT_CREDENTIALS = {
    "MLOPS_MODEL_STORE_URL",
    "AWS_ENDPOINT_URL",
    "MLOPS_MODEL_STORE_ENDPOINT_URL",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "LAKEFS_ENDPOINT",
}
URL_WITH_PASSWORD = re.compile(r"://[^/@\s]+:[^/@\s]+@")


# --- rendering --------------------------------------------------------------------------------------------------


def profile_values(name: str) -> dict[str, Any]:
    """A profile's values; minio's configs are given as `--set-file pipelineConfigs.files.<f>=...` would."""
    values = yaml.safe_load((PROFILES / f"{name}.yaml").read_text())
    if values.get("pipelineConfigs", {}).get("source") == "values":
        configs = sorted((REPO_ROOT / "include" / "config").glob("*.yaml"))
        values["pipelineConfigs"]["files"] = {path.name: path.read_text() for path in configs}
    return values


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders for `values` (hooks included), in template order."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        document
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for document in yaml.safe_load_all(text)
        if document
    ]


def render_error(values: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmError) as raised:
        render(values)
    return str(raised.value)


def with_changes(values: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """`values` with dotted keys set (`**{"image.tag": "x"}`); None removes the key."""
    changed = copy.deepcopy(values)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = changed
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return changed


PROFILE_NAMES = ("minimal", "production", "minio")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(profile_values(name)) for name in PROFILE_NAMES}


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    (found,) = [m for m in of_kind(manifests, kind) if m["metadata"]["name"].endswith(suffix)]
    return found


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


# --- the invariants -------------------------------------------------------------------------------------------


def container_problems(manifests: list[dict[str, Any]]) -> list[str]:
    """Resources on every container, probes on long-running ones, probe ports declared, images pinned, and the
    pod and container security settings."""
    problems = []
    for workload in (m for m in manifests if m["kind"] in WORKLOADS):
        where = f"{workload['kind']} {workload['metadata']['name']}"
        spec = pod_spec(workload)
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{where}: the pod does not require a non-root user")
        for container in containers(workload):
            at = f"{where}, container {container['name']}"
            resources = container.get("resources") or {}
            for part in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(resources.get(part) or {})
                if missing:
                    problems.append(f"{at}: no {part} for {', '.join(sorted(missing))}")
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                if workload["kind"] in LONG_RUNNING and probe not in container:
                    problems.append(f"{at}: no {probe}")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                handler = (container.get(probe) or {}).get("httpGet") or (container.get(probe) or {}).get("tcpSocket")
                if handler and handler["port"] not in ports and handler["port"] not in ports.values():
                    problems.append(f"{at}: {probe} port {handler['port']!r} is not a declared containerPort")
            image = container.get("image", "")
            name_and_tag = image.split("@")[0].rsplit("/", 1)[-1]
            tag = name_and_tag.partition(":")[2]
            if not tag or tag == "latest":
                problems.append(f"{at}: image {image!r} has no explicit tag other than latest")
            security = container.get("securityContext") or {}
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{at}: allowPrivilegeEscalation is not false")
    return problems


def secret_problems(manifests: list[dict[str, Any]]) -> list[str]:
    """No Secret with a value, and no environment value that is, or carries, a credential."""
    problems = [
        f"Secret {m['metadata']['name']} holds values"
        for m in of_kind(manifests, "Secret")
        if m.get("data") or m.get("stringData")
    ]
    for workload in (m for m in manifests if m["kind"] in WORKLOADS):
        for container in containers(workload):
            for entry in container.get("env", []):
                at = f"{workload['metadata']['name']}/{container['name']}: {entry['name']}"
                if "value" not in entry:
                    continue
                if CREDENTIAL_NAME.search(entry["name"]) and entry["name"] not in NOT_CREDENTIALS:
                    problems.append(f"{at} is set by value, not from a Secret (secretKeyRef)")
                if URL_WITH_PASSWORD.search(str(entry["value"])):
                    problems.append(f"{at} holds a URL with a password")
    return problems


def service_problems(manifests: list[dict[str, Any]]) -> list[str]:
    """Each Deployment's selector matches its pods, a Service selects it, and the Service's targetPort is the
    port its readiness probe checks."""
    problems = []
    deployments = of_kind(manifests, "Deployment")
    services = of_kind(manifests, "Service")
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if not selects(deployment["spec"]["selector"]["matchLabels"], labels):
            problems.append(f"Deployment {name}: its selector does not match its pod labels")
        serving = [s for s in services if selects(s["spec"].get("selector", {}), labels)]
        if not serving:
            problems.append(f"Deployment {name}: no Service selects its pods")
        for container in pod_spec(deployment)["containers"]:
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            probe_port = ((container.get("readinessProbe") or {}).get("httpGet") or {}).get("port")
            probe_port = ports.get(probe_port, probe_port)
            for service in serving:
                for port in service["spec"]["ports"]:
                    target = ports.get(port["targetPort"], port["targetPort"])
                    if target not in ports.values():
                        problems.append(f"Service {service['metadata']['name']}: targetPort {target!r} is not a port")
                    elif target != probe_port:
                        problems.append(
                            f"Service {service['metadata']['name']}: targetPort {target} is not the port the "
                            f"readiness probe of {name} checks ({probe_port})"
                        )
    for service in services:
        if not any(
            selects(service["spec"].get("selector", {}), d["spec"]["template"]["metadata"]["labels"])
            for d in deployments
        ):
            problems.append(f"Service {service['metadata']['name']} selects no pods")
    return problems


def scaling_problems(manifests: list[dict[str, Any]]) -> list[str]:
    """HPA bounds, and a PDB that leaves room for an eviction."""
    problems = []
    deployments = {d["metadata"]["name"]: d for d in of_kind(manifests, "Deployment")}
    minimum_replicas = {name: d["spec"].get("replicas", 1) for name, d in deployments.items()}
    for hpa in of_kind(manifests, "HorizontalPodAutoscaler"):
        spec, name = hpa["spec"], hpa["metadata"]["name"]
        if not 1 <= spec["minReplicas"] <= spec["maxReplicas"]:
            problems.append(f"HPA {name}: minReplicas {spec['minReplicas']} is not within 1..{spec['maxReplicas']}")
        target = spec["scaleTargetRef"]["name"]
        if target not in deployments:
            problems.append(f"HPA {name}: scales {target}, which is not rendered")
        elif "replicas" in deployments[target]["spec"]:
            problems.append(f"HPA {name}: Deployment {target} sets replicas too (each upgrade would reset them)")
        else:
            minimum_replicas[target] = spec["minReplicas"]
    for pdb in of_kind(manifests, "PodDisruptionBudget"):
        name = pdb["metadata"]["name"]
        matched = [
            d
            for d in deployments.values()
            if selects(pdb["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])
        ]
        if not matched:
            problems.append(f"PDB {name} selects no pods")
        for deployment in matched:
            replicas = minimum_replicas[deployment["metadata"]["name"]]
            if pdb["spec"]["minAvailable"] >= replicas:
                problems.append(f"PDB {name}: minAvailable {pdb['spec']['minAvailable']} >= {replicas} replicas")
    return problems


def network_policy_problems(manifests: list[dict[str, Any]]) -> list[str]:
    """Every NetworkPolicy selects pods of the release, and with a default deny every Service's pods are let in
    on the Service's port by some policy."""
    problems = []
    policies = of_kind(manifests, "NetworkPolicy")
    pods = [(m["metadata"]["name"], m["spec"]["template"]) for m in manifests if m["kind"] in WORKLOADS]
    for policy in policies:
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if not any(selects(selector, template["metadata"]["labels"]) for _, template in pods):
            problems.append(f"NetworkPolicy {policy['metadata']['name']} selects no pod of the release")
    if not any(not p["spec"].get("ingress") and "Ingress" in p["spec"]["policyTypes"] for p in policies):
        return problems
    for service in of_kind(manifests, "Service"):
        for deployment in of_kind(manifests, "Deployment"):
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            if not selects(service["spec"]["selector"], labels):
                continue
            ports = {p["name"]: p["containerPort"] for c in pod_spec(deployment)["containers"] for p in c["ports"]}
            for port in service["spec"]["ports"]:
                wanted = ports.get(port["targetPort"], port["targetPort"])
                allowed = any(
                    selects(p["spec"]["podSelector"].get("matchLabels", {}), labels)
                    and any(
                        wanted in [q["port"] for q in rule.get("ports", [])] for rule in p["spec"].get("ingress", [])
                    )
                    for p in policies
                )
                if not allowed:
                    problems.append(
                        f"Service {service['metadata']['name']}: no NetworkPolicy lets traffic in on {wanted}"
                    )
    return problems


INVARIANTS = (container_problems, secret_problems, service_problems, scaling_problems, network_policy_problems)


# --- the profiles -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_every_manifest_of_each_profile_is_valid_kubernetes(rendered, profile, kubernetes_version):
    manifests = rendered[profile]
    checked = 0
    for manifest in manifests:
        if manifest["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(manifest, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{profile}: {manifest['kind']} {manifest['metadata']['name']}: {error.message}")
        checked += 1
    print(f"{profile}: {checked} of {len(manifests)} manifests valid for Kubernetes {kubernetes_version} (strict)")
    assert checked >= 6


def test_strict_validation_catches_a_misspelt_field(rendered):
    deployment = copy.deepcopy(named(rendered["minimal"], "Deployment", "model-service"))
    pod_spec(deployment)["containers"][0]["readinesProbe"] = pod_spec(deployment)["containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_each_profile_renders_what_it_asks_for(rendered):
    kinds = {name: sorted({m["kind"] for m in manifests}) for name, manifests in rendered.items()}
    core = {"Deployment", "Service", "Job", "ServiceAccount"}
    assert core <= set(kinds["minimal"])
    assert not {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"} & set(
        kinds["minimal"]
    )
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"} <= set(
        kinds["production"]
    )
    assert "ConfigMap" in kinds["minio"]
    # Two Deployments (model service, MLflow), three bootstrap Jobs, each a Helm hook after install and upgrade.
    for manifests in rendered.values():
        assert len(of_kind(manifests, "Deployment")) == 2
        jobs = of_kind(manifests, "Job")
        assert len(jobs) == 3
        for job in jobs:
            assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"


@pytest.mark.parametrize("invariant", INVARIANTS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_the_invariants_hold_for_each_profile(rendered, profile, invariant):
    assert invariant(rendered[profile]) == []


# Each invariant check, shown to catch what it is for: a manifest of the production profile broken on purpose.
def _drop_limits(manifests):
    pod_spec(named(manifests, "Job", "bootstrap-mlflow"))["containers"][0]["resources"].pop("limits")


def _drop_liveness(manifests):
    pod_spec(named(manifests, "Deployment", "-mlflow"))["containers"][0].pop("livenessProbe")


def _probe_undeclared_port(manifests):
    pod_spec(named(manifests, "Deployment", "model-service"))["containers"][0]["readinessProbe"]["httpGet"]["port"] = (
        8080
    )


def _latest_image(manifests):
    pod_spec(named(manifests, "Deployment", "model-service"))["containers"][0]["image"] = (
        "registry/airflow-mlops:latest"
    )


def _untagged_image(manifests):
    pod_spec(named(manifests, "Job", "bootstrap-lakefs"))["containers"][0]["image"] = "registry:5000/airflow-mlops"


def _root_pod(manifests):
    pod_spec(named(manifests, "Deployment", "-mlflow"))["securityContext"].pop("runAsNonRoot")


def _secret_with_data(manifests):
    manifests.append({"kind": "Secret", "metadata": {"name": "leak"}, "stringData": {"token": "s3cr3t"}})


def _token_by_value(manifests):
    env = pod_spec(named(manifests, "Deployment", "model-service"))["containers"][0]["env"]
    env.append({"name": "MLOPS_ADMIN_TOKEN", "value": "s3cr3t"})


def _password_in_url(manifests):
    env = pod_spec(named(manifests, "Deployment", "model-service"))["containers"][0]["env"]
    env.append({"name": "DATABASE_HOST", "value": "postgresql://mlops:s3cr3t@db:5432/inference_log"})


def _service_misses_pods(manifests):
    named(manifests, "Service", "model-service")["spec"]["selector"]["app.kubernetes.io/component"] = "other"


def _target_port_not_probed(manifests):
    deployment = named(manifests, "Deployment", "model-service")
    pod_spec(deployment)["containers"][0]["ports"].append({"name": "debug", "containerPort": 9000})
    named(manifests, "Service", "model-service")["spec"]["ports"][0]["targetPort"] = "debug"


def _selector_not_labels(manifests):
    named(manifests, "Deployment", "-mlflow")["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "x"


def _hpa_min_above_max(manifests):
    named(manifests, "HorizontalPodAutoscaler", "model-service")["spec"]["minReplicas"] = 9


def _pdb_blocks_eviction(manifests):
    named(manifests, "PodDisruptionBudget", "model-service")["spec"]["minAvailable"] = 2


def _policy_selects_nothing(manifests):
    policy = named(manifests, "NetworkPolicy", "-mlflow")
    policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] = "mlflw"


def _no_policy_lets_clients_in(manifests):
    named(manifests, "NetworkPolicy", "model-service")["spec"]["ingress"][0]["ports"][0]["port"] = 3001


@pytest.mark.parametrize(
    ("invariant", "breakage", "complaint"),
    [
        (container_problems, _drop_limits, "no limits for cpu, memory"),
        (container_problems, _drop_liveness, "no livenessProbe"),
        (container_problems, _probe_undeclared_port, "port 8080 is not a declared containerPort"),
        (container_problems, _latest_image, "no explicit tag other than latest"),
        (container_problems, _untagged_image, "no explicit tag other than latest"),
        (container_problems, _root_pod, "does not require a non-root user"),
        (secret_problems, _secret_with_data, "Secret leak holds values"),
        (secret_problems, _token_by_value, "MLOPS_ADMIN_TOKEN is set by value"),
        (secret_problems, _password_in_url, "holds a URL with a password"),
        (service_problems, _service_misses_pods, "Service airflow-mlops-model-service selects no pods"),
        (service_problems, _target_port_not_probed, "is not the port the readiness probe"),
        (service_problems, _selector_not_labels, "its selector does not match its pod labels"),
        (scaling_problems, _hpa_min_above_max, "minReplicas 9 is not within 1..8"),
        (scaling_problems, _pdb_blocks_eviction, "minAvailable 2 >= 2 replicas"),
        (network_policy_problems, _policy_selects_nothing, "selects no pod of the release"),
        (network_policy_problems, _no_policy_lets_clients_in, "no NetworkPolicy lets traffic in on 3000"),
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else None,
)
def test_each_invariant_check_catches_a_broken_manifest(rendered, invariant, breakage, complaint):
    manifests = copy.deepcopy(rendered["production"])
    assert invariant(manifests) == []
    breakage(manifests)
    assert any(complaint in problem for problem in invariant(manifests)), invariant(manifests)


def test_the_service_monitor_scrapes_the_model_service_port(rendered):
    manifests = rendered["production"]
    monitor = named(manifests, "ServiceMonitor", "model-service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = named(manifests, "Service", "model-service")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # Annotation-based scraping instead where there is no Prometheus Operator (the default).
    annotations = named(rendered["minimal"], "Deployment", "model-service")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "3000"


def test_the_operator_gets_compose_alerting_rules_and_route(rendered):
    """With alerting on (production): alerts.yml as a PrometheusRule and alertmanager.yml's route and receiver as
    an AlertmanagerConfig, its webhook URL from the Secret the values name; off by default."""
    manifests = rendered["production"]
    rule = named(manifests, "PrometheusRule", "alerting")
    alerts = yaml.safe_load((REPO_ROOT / "deploy/prometheus/alerts.yml").read_text())
    assert rule["spec"] == alerts and rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    config = named(manifests, "AlertmanagerConfig", "alerting")["spec"]
    compose = yaml.safe_load((REPO_ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    assert config["route"]["groupBy"] == compose["route"]["group_by"]
    assert config["route"]["repeatInterval"] == compose["route"]["repeat_interval"]
    (receiver,) = config["receivers"]
    (slack,) = receiver["slackConfigs"]
    (composed,) = compose["receivers"][0]["slack_configs"]
    assert slack["apiURL"] == {"name": "mlops-alertmanager-webhook", "key": "url"}
    assert (slack["title"], slack["text"]) == (composed["title"], composed["text"])
    assert not of_kind(rendered["minimal"], "PrometheusRule") and not of_kind(rendered["minimal"], "AlertmanagerConfig")
    message = render_error(with_changes(profile_values("production"), **{"alerting.webhookUrl.name": ""}))
    assert "alerting.webhookUrl.name" in message and "is required" in message


# --- what the model service and MLflow are given -------------------------------------------------------------


def test_the_model_service_gets_its_interface(rendered):
    for profile, manifests in rendered.items():
        deployment = named(manifests, "Deployment", "model-service")
        (container,) = pod_spec(deployment)["containers"]
        assert container["command"] == ["/usr/bin/dumb-init", "--"]
        assert container["args"][:3] == ["bentoml", "serve", "include.serving.service:ModelService"]
        assert container["workingDir"] == "/opt/airflow"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        # Not killed while it waits for a first model: liveness and start-up look at /livez only.
        assert container["livenessProbe"]["httpGet"]["path"] == container["startupProbe"]["httpGet"]["path"] == "/livez"
        env = env_of(container)
        assert env["MLOPS_MODEL_STORE_URL"]["value"] == "s3://mlops-models/serving"
        assert env["MLFLOW_TRACKING_URI"]["value"] == f"http://{RELEASE}-mlflow:5000"
        assert env["BENTOML_DO_NOT_TRACK"]["value"] == "true"
        assert env["MLOPS_SERVING_WORKERS"]["value"] == ("2" if profile == "production" else "1")
        for name in ("MLOPS_ADMIN_TOKEN", "MLOPS_INFERENCE_LOG_URL"):
            assert set(env[name]["valueFrom"]) == {"secretKeyRef"}, name
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        assert "emptyDir" in volumes[mounts[env["BENTOML_HOME"]["value"]]]
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_airflow_reaches_the_model_service_before_it_is_ready(rendered):
    manifests = rendered["production"]
    pods = named(manifests, "Deployment", "model-service")["spec"]["template"]["metadata"]["labels"]
    clients = named(manifests, "Service", "model-service")
    admin = named(manifests, "Service", "model-service-admin")
    assert selects(admin["spec"]["selector"], pods) and selects(clients["spec"]["selector"], pods)
    # Clients get ready replicas only; Airflow's switch gets through before the first model, and its smoke test
    # meets the replica it switched.
    assert not clients["spec"].get("publishNotReadyAddresses")
    assert admin["spec"]["publishNotReadyAddresses"] is True
    assert admin["spec"]["sessionAffinity"] == "ClientIP"
    # Scraped once: the ServiceMonitor selects the clients' Service only.
    monitor = named(manifests, "ServiceMonitor", "model-service")["spec"]["selector"]["matchLabels"]
    assert selects(monitor, clients["metadata"]["labels"]) and not selects(monitor, admin["metadata"]["labels"])


def test_s3_keys_come_from_a_secret_only_when_one_is_named(rendered):
    minimal = env_of(pod_spec(named(rendered["minimal"], "Deployment", "model-service"))["containers"][0])
    assert not {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
        "MLOPS_MODEL_STORE_ENDPOINT_URL",
    } & set(minimal)
    service_account = of_kind(rendered["minimal"], "ServiceAccount")[0]
    assert "eks.amazonaws.com/role-arn" in service_account["metadata"]["annotations"]
    for name in ("model-service", "-mlflow"):
        env = env_of(pod_spec(named(rendered["minio"], "Deployment", name))["containers"][0])
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
            "name": "mlops-minio-keys",
            "key": "access-key-id",
        }
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mlops-minio-keys"
        assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage.svc.cluster.local:9000"
    service = env_of(pod_spec(named(rendered["minio"], "Deployment", "model-service"))["containers"][0])
    assert service["MLOPS_MODEL_STORE_ENDPOINT_URL"]["value"] == "http://minio.storage.svc.cluster.local:9000"


def test_mlflow_runs_as_compose_runs_it(rendered):
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())["services"]["mlflow"]
    (container,) = pod_spec(named(rendered["production"], "Deployment", "-mlflow"))["containers"]
    args = container["args"]
    assert args[:2] == ["mlflow", "server"] and "--serve-artifacts" in args
    assert "--artifacts-destination=s3://mlops-mlflow/artifacts" in args
    assert {a.split("=")[0] for a in compose["command"] if a.startswith("--")} <= {a.split("=")[0] for a in args}
    env = env_of(container)
    assert set(env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]) == {"secretKeyRef"}
    assert (
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"]
        == compose["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]
    )
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    service = f"{RELEASE}-mlflow"
    assert {f"{service}:5000", f"{service}.{NAMESPACE}.svc.cluster.local:5000", "mlflow.example.com"} <= set(allowed)
    assert {p["httpGet"]["path"] for p in (container["readinessProbe"], container["livenessProbe"])} == {"/health"}


def test_the_configmap_holds_configs_that_load(rendered, tmp_path):
    configmap = named(rendered["minio"], "ConfigMap", "pipeline-configs")
    for name, text in configmap["data"].items():
        (tmp_path / name).write_text(text)
    folder = load_folder(tmp_path)
    assert folder.errors == ()
    assert sorted(c.name for c in folder.configs) == ["breast_cancer_classifier", "fraud_detector"]
    deployment = named(rendered["minio"], "Deployment", "model-service")
    assert env_of(pod_spec(deployment)["containers"][0])["MLOPS_CONFIG_DIR"]["value"] == "/etc/mlops/pipeline-configs"
    assert "checksum/pipeline-configs" in deployment["spec"]["template"]["metadata"]["annotations"]


# --- bad values are refused, naming what is wrong ----------------------------------------------------------------


@pytest.mark.parametrize(
    "secret", ["adminToken", "inferenceLogUrl", "mlflowBackendStoreUri", "lakefsCredentials"], ids=str
)
def test_a_missing_secret_name_fails_the_render_naming_it(secret):
    message = render_error(with_changes(profile_values("minimal"), **{f"secrets.{secret}.name": ""}))
    assert f"secrets.{secret}.name" in message and "is required" in message


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"image.tag": None}, "image.tag: the project image's tag is required"),
        ({"image.tag": "latest"}, "image.tag: `latest` is refused"),
        ({"image.repository": ""}, "image.repository: the project image's repository is required"),
        ({"image.digest": "md5:abc"}, 'image.digest: "md5:abc" is not a sha256 digest'),
        ({"modelStore.url": ""}, "modelStore.url: the model store's s3://<bucket>/<prefix> is required"),
        ({"modelStore.url": "/models"}, 'modelStore.url: "/models" is not an s3://'),
        ({"mlflow.artifactsDestination": ""}, "mlflow.artifactsDestination: where MLflow keeps artifacts"),
        ({"bootstrap.lakefsRepository.endpoint": ""}, "bootstrap.lakefsRepository.endpoint: lakeFS's URL"),
        ({"pipelineConfigs.source": "values"}, "pipelineConfigs.files: with pipelineConfigs.source `values`"),
        ({"pipelineConfigs.source": "git"}, 'pipelineConfigs.source: "git" is neither'),
        ({"mlflow.enabled": False}, "mlflow.externalTrackingUri: with mlflow.enabled false"),
    ],
    ids=lambda value: ",".join(value) if isinstance(value, dict) else None,
)
def test_bad_values_fail_the_render_naming_the_value(changes, complaint):
    assert complaint in render_error(with_changes(profile_values("minimal"), **changes))


def test_autoscaling_bounds_are_checked():
    production = profile_values("production")
    message = render_error(with_changes(production, **{"modelService.autoscaling.minReplicas": 9}))
    assert "modelService.autoscaling: minReplicas (9) is above maxReplicas (8)" in message
    message = render_error(with_changes(production, **{"modelService.podDisruptionBudget.minAvailable": 2}))
    assert "modelService.podDisruptionBudget.minAvailable (2) must be below the replica count (2" in message
    message = render_error(
        with_changes(profile_values("minimal"), **{"modelService.podDisruptionBudget.enabled": True})
    )
    assert "must be below the replica count (1, modelService.replicas)" in message
    # Within bounds it renders, the HPA owning the replica count.
    manifests = render(with_changes(production, **{"modelService.autoscaling.minReplicas": 8}))
    assert named(manifests, "HorizontalPodAutoscaler", "model-service")["spec"]["minReplicas"] == 8
    assert "replicas" not in named(manifests, "Deployment", "model-service")["spec"]


def test_mlflow_elsewhere_leaves_it_out():
    values = with_changes(profile_values("minimal"), **{"mlflow.enabled": False})
    values["mlflow"]["externalTrackingUri"] = "https://mlflow.example.com"
    manifests = render(values)
    assert [d["metadata"]["name"] for d in of_kind(manifests, "Deployment")] == [f"{RELEASE}-model-service"]
    env = env_of(pod_spec(named(manifests, "Deployment", "model-service"))["containers"][0])
    assert env["MLFLOW_TRACKING_URI"]["value"] == "https://mlflow.example.com"


# --- the bootstrap Jobs run the project's own code ------------------------------------------------------------


def job_script(manifests: list[dict[str, Any]], suffix: str) -> tuple[str, dict[str, str]]:
    """The Job's Python program and its plain environment values."""
    (container,) = pod_spec(named(manifests, "Job", suffix))["containers"]
    assert container["args"][:2] == ["python", "-c"]
    return container["args"][2], {e["name"]: e["value"] for e in container["env"] if "value" in e}


def run_job(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_lakefs_job_makes_the_repository_and_keeps_an_existing_one(rendered, lakefs_server):
    script, env = job_script(rendered["minimal"], "bootstrap-lakefs")
    assert env["LAKEFS_STORAGE_NAMESPACE"] == "s3://mlops-lakefs/mlops"
    name = f"test-bootstrap-{uuid.uuid4().hex[:8]}"
    env |= {
        "LAKEFS_ENDPOINT": lakefs_server.url,
        "LAKEFS_REPOSITORY": name,
        "LAKEFS_STORAGE_NAMESPACE": f"local://{name}",
        "LAKEFS_ACCESS_KEY_ID": lakefs_server.access_key_id,
        "LAKEFS_SECRET_ACCESS_KEY": lakefs_server.secret_access_key,
    }
    try:
        for _ in range(2):
            result = run_job(script, env)
            assert result.returncode == 0, result.stderr
            assert f"lakeFS repository {name!r}" in result.stdout
    finally:
        lakefs_server.client().sdk_client.repositories_api.delete_repository(name)
    refused = run_job(script, env | {"LAKEFS_SECRET_ACCESS_KEY": "wrong"})
    assert refused.returncode != 0 and "refused the credentials" in refused.stderr


def test_the_mlflow_job_makes_one_experiment_per_config(rendered, tmp_path):
    script, env = job_script(rendered["minimal"], "bootstrap-mlflow")
    assert env["MLOPS_CONFIG_DIR"] == "/opt/airflow/include/config"
    # In place of the MLflow server: a tracking store in a folder (the server's API is not what is tested).
    configs = tmp_path / "configs"
    configs.mkdir()
    for config in (REPO_ROOT / "include" / "config").glob("*.yaml"):
        (configs / config.name).write_text(config.read_text())
    (configs / "broken.yaml").write_text("dataset: {}\n")
    env |= {
        "MLOPS_CONFIG_DIR": str(configs),
        "MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
    }
    # A config that does not load is named and fails the Job, after the others' experiments are made.
    first = run_job(script, env)
    assert first.returncode == 1 and "broken.yaml" in first.stderr
    (configs / "broken.yaml").unlink()
    again = run_job(script, env)
    assert again.returncode == 0, again.stderr
    assert sorted(again.stdout.splitlines()) == sorted(first.stdout.splitlines())
    made = sorted(line.rpartition(":")[0] for line in again.stdout.splitlines())
    assert made == ["MLflow experiment 'breast_cancer_classifier'", "MLflow experiment 'fraud_detector'"]


def test_the_operations_store_job_brings_the_schema_up_before_the_other_jobs(rendered, tmp_path):
    job = named(rendered["minimal"], "Job", "bootstrap-operations-store")
    others = [j for j in of_kind(rendered["minimal"], "Job") if j is not job]
    weight = int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert all(weight < int(j["metadata"]["annotations"]["helm.sh/hook-weight"]) for j in others)
    (container,) = pod_spec(job)["containers"]
    assert env_of(container)["MLOPS_INFERENCE_LOG_URL"]["valueFrom"]["secretKeyRef"]["key"] == "url"
    # Its command, on a SQLite file in place of the Secret's Postgres URL; a second run finds nothing to do.
    assert container["args"][0] == "python"
    url = f"sqlite:///{tmp_path / 'operations.db'}"
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, *container["args"][1:]],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "MLOPS_INFERENCE_LOG_URL": url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert f"operations store at {url}: schema revision {operations_store.head_revision()}" in result.stdout


# --- the values files for the official charts ----------------------------------------------------------------


def airflow_values() -> dict[str, Any]:
    return yaml.safe_load((VALUES / "airflow.yaml").read_text())


def airflow_schema() -> dict[str, Any]:
    path = Path(
        os.environ.get("AIRFLOW_CHART_VALUES_SCHEMA")
        or REPO_ROOT.parent / "shared" / "helm" / "airflow-chart-values.schema.json"
    )
    if not path.is_file():
        pytest.skip(
            f"the official Airflow chart's values.schema.json is not at {path} (set AIRFLOW_CHART_VALUES_SCHEMA; "
            "see deploy/helm/schemas/README.md): the values file's keys are not checked against it"
        )
    return json.loads(path.read_text())


def airflow_schema_problems(values: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """The schema's own errors, and top-level keys it does not name (it allows unknown ones at the top)."""
    problems = [
        f"{'.'.join(map(str, error.absolute_path)) or '(top level)'}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(values)
    ]
    problems += [f"{key}: not a value of the chart" for key in values if key not in schema["properties"]]
    return problems


def test_the_airflow_values_fit_the_official_charts_schema():
    schema = airflow_schema()
    assert airflow_schema_problems(airflow_values(), schema) == []


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"triggerer": {"enabeld": True}}, "'enabeld' was unexpected"),
        ({"executer": "KubernetesExecutor"}, "executer: not a value of the chart"),
        ({"secret": [{"envName": "X", "secretName": "s", "key": "k"}]}, "'key' was unexpected"),
    ],
    ids=["nested", "top-level", "secret-entry"],
)
def test_a_misspelt_airflow_value_is_caught(changes, complaint):
    schema = airflow_schema()
    values = airflow_values() | changes
    assert any(complaint in problem for problem in airflow_schema_problems(values, schema))


def test_the_airflow_values_fit_the_project():
    values = airflow_values()
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    (base_version,) = re.findall(r"^FROM apache/airflow:([0-9.]+)-python", dockerfile, re.MULTILINE)
    assert values["airflowVersion"] == base_version
    chart = profile_values("production")
    assert values["defaultAirflowRepository"] == chart["image"]["repository"]
    assert values["defaultAirflowTag"] == chart["image"]["tag"] != "latest"
    assert values["executor"] == "KubernetesExecutor" and values["triggerer"]["enabled"] is True
    assert values["postgresql"]["enabled"] is False and values["data"]["metadataSecretName"]
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert values[key], key
    env = {entry["name"]: entry["value"] for entry in values["env"]}
    assert env["MLOPS_MODEL_STORE_URL"] == chart["modelStore"]["url"]
    assert (
        env["MLOPS_CONFIG_DIR"] == yaml.safe_load((CHART / "values.yaml").read_text())["pipelineConfigs"]["imagePath"]
    )
    for name, value in env.items():
        assert not (CREDENTIAL_NAME.search(name) and name not in NOT_CREDENTIALS), f"{name} is set by value"
        assert not URL_WITH_PASSWORD.search(value), name
    # Every connection airflow_settings.yaml defines comes from a Secret, as do the S3 keys.
    settings = yaml.safe_load((REPO_ROOT / "airflow_settings.yaml").read_text())
    wanted = {f"AIRFLOW_CONN_{c['conn_id'].upper()}" for c in settings["airflow"]["connections"]}
    secret_envs = {entry["envName"] for entry in values["secret"]}
    assert wanted | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secret_envs
    assert all(entry["secretName"] and entry["secretKey"] for entry in values["secret"])
    # No shared volume between task pods and the model service any more.
    text = (VALUES / "airflow.yaml").read_text()
    assert "persistentVolumeClaim" not in text and "ReadWriteMany" not in text


# The keys lakeFS's chart 1.10.0 reads (values.yaml and templates of treeverse/charts, charts/lakefs): it ships
# no values schema, and Helm would silently ignore any other key.
LAKEFS_CHART_KEYS = {
    "affinity", "auditLog", "committedLocalCacheVolume", "deployment", "enterprise", "existingSecret",
    "extraEnvVars", "extraEnvVarsSecret", "extraManifests", "extraVolumeMounts", "extraVolumes",
    "fullnameOverride", "gcpFallback", "image", "ingress", "jobPodAnnotations", "lakefsConfig", "livenessProbe",
    "mds", "nameOverride", "nodeSelector", "podAnnotations", "podSecurityContext", "readinessProbe",
    "replicaCount", "replication", "resources", "s3Fallback", "secretKeys", "secrets", "securityContext",
    "service", "serviceAccount", "tolerations", "topologySpreadConstraints", "useDevPostgres",
}  # fmt: skip


def lakefs_problems(values: dict[str, Any]) -> list[str]:
    problems = [f"{key}: not a value lakeFS's chart reads" for key in values if key not in LAKEFS_CHART_KEYS]
    if not values.get("existingSecret"):
        problems.append("existingSecret: unset, so the chart would use its fixed public encryption key")
    for entry in values.get("extraEnvVars") or []:
        if CREDENTIAL_NAME.search(entry["name"]) and "value" in entry:
            problems.append(f"extraEnvVars: {entry['name']} is set by value, not from a Secret")
    config = yaml.safe_load(values.get("lakefsConfig") or "") or {}
    flat = json.dumps(config)
    for word in ("secret_key", "secret_access_key", "connection_string", "password", "access_key_id"):
        if word in flat:
            problems.append(f"lakefsConfig: holds {word} (secrets come from the environment)")
    return problems


def test_the_lakefs_values_fit_the_chart_and_compose():
    values = yaml.safe_load((VALUES / "lakefs.yaml").read_text())
    assert lakefs_problems(values) == []
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())["services"]["lakefs"]
    assert f"{values['image']['repository']}:{values['image']['tag']}" == compose["image"]
    # The same lakeFS configuration as compose's, less what is about MinIO and the listening address.
    ours = yaml.safe_load(values["lakefsConfig"])
    theirs = yaml.safe_load((REPO_ROOT / "deploy" / "lakefs" / "lakefs.yaml").read_text())
    theirs.pop("listen_address")
    for minio_only in ("endpoint", "force_path_style"):
        theirs["blockstore"]["s3"].pop(minio_only)
    assert {k: sorted(v) if isinstance(v, dict) else v for k, v in ours.items() if k != "logging"} == {
        k: sorted(v) if isinstance(v, dict) else v for k, v in theirs.items() if k != "logging"
    }
    assert ours["database"] == theirs["database"] and ours["installation"] == theirs["installation"]
    # The bootstrap Job's lakeFS keys are the installation's.
    envs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in values["extraEnvVars"]}
    minimal = profile_values("minimal")["secrets"]["lakefsCredentials"]
    assert envs["LAKEFS_INSTALLATION_ACCESS_KEY_ID"]["name"] == minimal["name"]


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"extraEnvVar": []}, "extraEnvVar: not a value lakeFS's chart reads"),
        ({"existingSecret": None}, "existingSecret: unset"),
        ({"extraEnvVars": [{"name": "LAKEFS_AUTH_ENCRYPT_SECRET_KEY", "value": "x"}]}, "is set by value"),
        ({"lakefsConfig": "auth:\n  encrypt:\n    secret_key: x\n"}, "lakefsConfig: holds secret_key"),
    ],
    ids=["misspelt-key", "no-existing-secret", "secret-by-value", "secret-in-config"],
)
def test_a_bad_lakefs_value_is_caught(changes, complaint):
    values = yaml.safe_load((VALUES / "lakefs.yaml").read_text()) | changes
    assert any(complaint in problem for problem in lakefs_problems(values))


def test_every_connection_compose_gives_airflow_comes_from_a_secret_the_docs_make():
    """Compose sets some connections by variable, not through airflow_settings.yaml (`redis_default`, which the
    batch arrivals' watcher in the triggerer needs): the Helm values take each from the connections Secret, and
    docs/operating.md's command that makes the Secret has each of its keys."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    from_compose = {name for name in compose["x-airflow-common"]["environment"] if name.startswith("AIRFLOW_CONN_")}
    assert "AIRFLOW_CONN_REDIS_DEFAULT" in from_compose
    secrets = {entry["envName"]: entry for entry in airflow_values()["secret"]}
    assert from_compose <= set(secrets), from_compose - set(secrets)
    operating = (REPO_ROOT / "docs" / "operating.md").read_text()
    command = operating[operating.index("create secret generic mlops-connections") :].split("\n\n", 1)[0]
    for entry in secrets.values():
        if entry["secretName"] == "mlops-connections":
            (made,) = re.findall(rf"--from-literal={entry['secretKey']}='(.+?)'", command)
            connection = json.loads(made)
            assert connection["conn_type"], entry
    redis = json.loads(re.findall(r"--from-literal=redis_default='(.+?)'", command)[0])
    assert (redis["conn_type"], redis["port"]) == ("redis", 6379)
