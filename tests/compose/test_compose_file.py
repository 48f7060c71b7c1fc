"""docker-compose.yaml, checked without a Docker engine: against the compose spec, and for the promises the stack
makes (health checks, secrets from .env, one build and one set of keys for Airflow, connections that reach the
compose services, a worker that scales)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from devstack import compose_env, services
from include.bootstrap import airflow_settings
from tests.compose import stack
from tests.conftest import REPO_ROOT

LONG_RUNNING_RESTART = "unless-stopped"


@pytest.fixture(scope="module")
def compose() -> dict:
    return stack.load()


def check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [services.venv_bin("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_compose_file_follows_the_compose_spec():
    result = check_jsonschema(stack.COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_spec_check_catches_a_misspelt_key(tmp_path: Path):
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(stack.COMPOSE_FILE.read_text().replace("    healthcheck:\n", "    healthchek:\n", 1))
    result = check_jsonschema(broken)
    assert result.returncode != 0 and "healthchek" in result.stdout + result.stderr


def test_every_long_running_service_has_a_health_check_and_every_other_is_a_one_shot(compose):
    one_shots = stack.one_shots(compose)
    for name, service in compose["services"].items():
        if name in one_shots:
            assert service.get("restart") == "no", f"{name} runs once: restart 'no' keeps compose from rerunning it"
            continue
        test = (service.get("healthcheck") or {}).get("test")
        assert test and test != ["NONE"], f"{name} runs for good but has no health check"
        assert service.get("restart") == LONG_RUNNING_RESTART, f"{name}: restart {service.get('restart')!r}"


def test_every_dependency_waits_for_health_or_completion(compose):
    one_shots = stack.one_shots(compose)
    for name, service in compose["services"].items():
        for dependency, condition in stack.depends_on(service).items():
            assert dependency in compose["services"], f"{name} depends on {dependency}, which is not a service"
            if dependency in one_shots:
                assert condition == "service_completed_successfully", f"{name} -> {dependency}: {condition}"
            else:
                assert condition == "service_healthy", f"{name} -> {dependency}: {condition}"


def test_every_variable_compose_uses_is_in_env_example():
    missing = compose_env.missing_variables(stack.COMPOSE_FILE.read_text(), stack.ENV_EXAMPLE.read_text())
    assert not missing, f".env.example does not name {missing}"


def test_env_example_holds_no_secret():
    for name, value in stack.example_env().items():
        if re.search(r"PASSWORD|SECRET|TOKEN|FERNET|KEY", name):
            assert value == compose_env.PLACEHOLDER, f".env.example: {name} must be {compose_env.PLACEHOLDER}"


def test_no_secret_is_written_in_the_compose_file(compose):
    assert stack.written_secrets(compose) == []


@pytest.mark.parametrize(
    ("before", "after", "named"),
    [
        ("POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?run make env}", "POSTGRES_PASSWORD: hunter22", "POSTGRES_PASSWORD"),
        ("redis://:${REDIS_PASSWORD}@", "redis://:hunter22@", "a URL with a password"),
        ('"--requirepass", "${REDIS_PASSWORD:?run make env}"', '"--requirepass", "hunter22"', "--requirepass"),
    ],
)
def test_a_written_secret_is_found(before: str, after: str, named: str):
    text = stack.COMPOSE_FILE.read_text()
    assert before in text
    problems = stack.written_secrets(stack.load(text.replace(before, after)))
    assert problems and named in problems[0]


def test_every_airflow_connection_gets_its_variables_from_compose(compose):
    init_env = stack.environment(compose["services"]["airflow-init"])
    for conn_id, names in stack.airflow_settings_variables().items():
        missing = sorted(names - set(init_env))
        assert not missing, f"connection {conn_id} is filled from {missing}, which airflow-init does not set"


def test_the_connections_reach_the_compose_services(compose, monkeypatch: pytest.MonkeyPatch):
    """airflow_settings.yaml filled as airflow-init fills it: each connection names a service and its port."""
    dotenv = stack.generated_env()
    env = {k: stack.interpolate(v, dotenv) for k, v in stack.environment(compose["services"]["airflow-init"]).items()}
    settings = airflow_settings.load(REPO_ROOT / "airflow_settings.yaml", env)
    services_ = compose["services"]
    for conn_id in ("lakefs_default", "mlflow_default", "serving_default"):
        connection = settings.connection(conn_id)
        assert connection.host in services_, f"{conn_id} names {connection.host}, not a compose service"
        assert connection.port in stack.container_ports(services_[connection.host]), f"{conn_id}: port"
    databases = services_["postgres"]["environment"]["MLOPS_DATABASES"].split()
    for conn_id in ("transactions_db", "inference_log_db"):
        connection = settings.connection(conn_id)
        assert (connection.conn_type, connection.host, connection.port) == ("postgres", "postgres", 5432)
        assert connection.schema in databases, f"{conn_id}: database {connection.schema} is not created"
        # What the DAGs' tasks do with it: Airflow's own Postgres hook turns it into a SQLAlchemy URL.
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}", settings.as_environment()[f"AIRFLOW_CONN_{conn_id.upper()}"]
        )
        from mlops_airflow.sources import sqlalchemy_url

        user, password = dotenv["POSTGRES_USER"], dotenv["POSTGRES_PASSWORD"]
        assert sqlalchemy_url(conn_id).endswith(f"://{user}:{password}@postgres:5432/{connection.schema}")
    # A pipeline config that reads files from s3:// gets MinIO through the object store connection.
    object_store = settings.connection("object_store_default")
    assert (object_store.conn_type, object_store.extra["endpoint_url"]) == ("aws", "http://minio:9000")
    assert 9000 in stack.container_ports(services_["minio"])
    assert object_store.login == dotenv["MINIO_ROOT_USER"]
    # The service writes its inference log where drift_monitor reads it.
    serving_env = stack.environment(services_["model-service"])
    assert serving_env["MLOPS_INFERENCE_LOG_URL"].endswith("@postgres:5432/inference_log")
    assert stack.environment(services_["transactions-simulator"])["TRANSACTIONS_URL"].endswith("/transactions")
    assert env["MLOPS_ADMIN_TOKEN"] == stack.interpolate(serving_env["MLOPS_ADMIN_TOKEN"], dotenv)


def test_airflow_components_share_one_build_and_one_set_of_keys(compose):
    airflow = stack.airflow_services(compose)
    assert set(airflow) == {
        "airflow-init",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
    }
    project = {name: s for name, s in compose["services"].items() if s.get("build")}
    assert {str(s.get("image")) for s in project.values()} == {"${AIRFLOW_IMAGE}"}
    assert all(s["build"] == stack.PROJECT_BUILD for s in project.values()), "one build for the project's code"
    assert set(airflow) | {"mlflow", "model-service", "transactions-simulator", "breast-cancer-exports"} == set(project)
    shared = (
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "PYTHONPATH",
        "BENTOML_HOME",
    )
    for key in shared:
        values = {name: stack.environment(service).get(key) for name, service in airflow.items()}
        assert len(set(values.values())) == 1 and None not in values.values(), f"{key} differs: {values}"
    env = stack.environment(airflow["airflow-worker"])
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-api-server:8080/execution/"
    assert env["PYTHONPATH"] == "/opt/airflow"
    for name, service in airflow.items():
        assert "./include:/opt/airflow/include:ro" in service["volumes"], f"{name} does not mount include/"


def test_the_worker_can_be_scaled(compose):
    worker = compose["services"]["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert stack.environment(worker)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    # Its tasks fork from a worker that has imported their libraries (the e2e stack's worker is checked to).
    assert (
        stack.environment(worker)["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"]
        == "mlops_airflow.celery_config.CELERY_CONFIG"
    )
    assert not any("container_name" in service for service in compose["services"].values())


def test_the_model_service_shares_no_disk_with_the_workers_and_can_be_scaled(compose):
    """Models travel through the object store: the deploy task publishes where every replica pulls from."""
    services = compose["services"]
    service, worker = services["model-service"], services["airflow-worker"]
    assert "container_name" not in service
    named = {str(v).split(":", 1)[0] for v in service.get("volumes") or [] if not str(v).startswith("./")}
    assert not named, f"model-service mounts volumes {named}: replicas must share nothing but the object store"
    settings = {name: stack.environment(s) for name, s in (("model-service", service), ("airflow-worker", worker))}
    for key in ("MLOPS_MODEL_STORE_URL", "MLOPS_MODEL_STORE_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"):
        assert settings["model-service"][key] == settings["airflow-worker"][key], key
    bucket = settings["model-service"]["MLOPS_MODEL_STORE_URL"].removeprefix("s3://").split("/")[0]
    assert f"minio/{bucket}" in services["minio-init"]["command"], "minio-init does not create the models bucket"


def test_images_are_pinned_and_ports_are_published_on_loopback_only(compose):
    for name, service in compose["services"].items():
        image = str(service.get("image"))
        if service.get("build"):
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and "$" not in image, f"{name}: image {image} is not pinned"
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_the_mounted_configs_are_in_the_repository(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
