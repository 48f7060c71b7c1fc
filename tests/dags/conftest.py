"""Fixtures for runs of the project's DAGs: the demo source database, a pipeline config of the test's own
(its own registered model, cheap candidates), and the MLflow and model service connections."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import pytest
import sqlalchemy as sa
import yaml

from include.demo_sources import simulator
from include.mlops import operations_store
from include.mlops.config import CONFIG_DIR, PipelineConfig, load_config
from include.mlops.naming import monitor_dag_id, training_dag_id
from tests.conftest import REPO_ROOT
from tests.fixtures.serving import ADMIN_TOKEN, Service, StartService

ROWS_PER_DAY = 1500
# Two quick candidates: enough for the gate to choose, cheap enough for many DAG runs.
TEST_CANDIDATES = [
    {"name": "logistic_regression", "estimator": "LogisticRegression", "params": {"max_iter": 500}},
    {"name": "gradient_boosting", "estimator": "GradientBoosting", "params": {"n_estimators": 40, "max_depth": 3}},
]


@pytest.fixture
def transactions_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The simulator's database (2026-03-01 to 03-09) behind the demo config's `transactions_db` connection."""
    path = tmp_path / "transactions.db"
    url = f"sqlite:///{path}"
    simulator.write_days(url, dt.date(2026, 3, 1), 9, ROWS_PER_DAY, seed=11)
    monkeypatch.setenv("AIRFLOW_CONN_TRANSACTIONS_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return url


@pytest.fixture
def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., PipelineConfig]:
    """Write the demo config with a registered model of the test's own (and `model` changes, and a `notify`
    section) as the only file of a config folder, and choose that folder with MLOPS_CONFIG_DIR. Returns the loaded
    config."""
    folder = tmp_path / "configs"

    def write(notify: list[dict] | None = None, **model: object) -> PipelineConfig:
        raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
        if notify is not None:
            raw["notify"] = notify
        raw["model"].update({"registered_name": f"fraud_{uuid.uuid4().hex[:8]}", "candidates": TEST_CANDIDATES})
        raw["model"].update(model)
        folder.mkdir(exist_ok=True)
        for old in folder.glob("*.yaml"):
            old.unlink()
        path = folder / "config.yaml"
        path.write_text(yaml.safe_dump(raw))
        monkeypatch.setenv("MLOPS_CONFIG_DIR", str(folder))
        return load_config(path)

    return write


@pytest.fixture
def pipeline_config(write_config) -> PipelineConfig:
    return write_config()


@pytest.fixture
def inference_log_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The operations store behind connection `inference_log_db` (where the tasks keep the alias history), on
    SQLite, brought to its schema as the stack's start does."""
    path = tmp_path / "inference_log.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    operations_store.upgrade(engine)
    engine.dispose()
    monkeypatch.setenv("AIRFLOW_CONN_INFERENCE_LOG_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return f"sqlite:///{path}"


@pytest.fixture
def mlflow_connection(mlflow_server, monkeypatch: pytest.MonkeyPatch) -> str:
    address = urlparse(mlflow_server.url)
    conn = {"conn_type": "http", "host": address.hostname, "port": address.port, "schema": "http"}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(conn))
    return mlflow_server.url


@pytest.fixture
def model_service(
    start_model_service: StartService, pipeline_config: PipelineConfig, monkeypatch: pytest.MonkeyPatch
) -> Service:
    """The model service of the test's config, serving nothing yet, behind connection `serving_default`: where
    deploy_model rolls models out to."""
    service = start_model_service(expect_model=False, configs=(Path(pipeline_config.path),))
    address = urlparse(service.url)
    conn = {"conn_type": "http", "host": address.hostname, "port": address.port, "password": ADMIN_TOKEN}
    monkeypatch.setenv("AIRFLOW_CONN_SERVING_DEFAULT", json.dumps({**conn, "schema": "http"}))
    return service


def load_dag(file: str, dag_id: str):
    """`dag_id` as the DAG file `dags/<file>.py` builds it."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO_ROOT / "dags" / f"{file}.py")).dags[dag_id]


def the_config() -> PipelineConfig:
    """The only config of the folder MLOPS_CONFIG_DIR names (`write_config`'s)."""
    from mlops_airflow import pipelines

    (config,) = pipelines.configs().configs
    return config


def training_dag(config: PipelineConfig | None = None):
    """The training DAG of `config`, by default of the test's config."""
    return load_dag("ml_training", training_dag_id((config or the_config()).name))


def monitor_dag(config: PipelineConfig | None = None):
    return load_dag("drift_monitor", monitor_dag_id((config or the_config()).name))


def batch_run(config_path: Path, day: dt.date, conf: dict | None = None):
    """A batch_scoring run of the config at `config_path` for `day` (its 24-hour window ends at the next
    midnight), with the run's params `conf`."""
    from include.mlops.naming import batch_scoring_dag_id

    dag = load_dag("batch_scoring", batch_scoring_dag_id(load_config(config_path).name))
    return dag.test(logical_date=dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC), run_conf=conf)


def states(dag_run) -> dict[str, str]:
    """Each task's state (a mapped task's: its first instance's)."""
    found: dict[str, str] = {}
    for ti in dag_run.get_task_instances():
        found.setdefault(ti.task_id, ti.state)
    return found


def xcom(dag_run, task_id: str, key: str = "return_value"):
    return dag_run.get_task_instance(task_id).xcom_pull(task_ids=task_id, key=key)


def set_stack_connections(
    env: pytest.MonkeyPatch, lakefs_server, repo_name: str, source: Path, log: Path, mlflow_url: str, service_url: str
) -> None:
    """Every connection a module's DAG runs need, as environment variables: lakeFS (`repo_name`), the demo source
    and the operations store (SQLite files), MLflow, and the model service."""
    mlflow_host, mlflow_port = mlflow_url.removeprefix("http://").split(":")
    connections = {
        "LAKEFS_DEFAULT": {
            "conn_type": "lakefs",
            "host": lakefs_server.url,
            "login": lakefs_server.access_key_id,
            "password": lakefs_server.secret_access_key,
            "extra": json.dumps({"repository": repo_name}),
        },
        "TRANSACTIONS_DB": {"conn_type": "sqlite", "host": str(source)},
        "INFERENCE_LOG_DB": {"conn_type": "sqlite", "host": str(log)},
        "MLFLOW_DEFAULT": {"conn_type": "http", "host": mlflow_host, "port": int(mlflow_port), "schema": "http"},
        "SERVING_DEFAULT": {
            "conn_type": "http",
            "schema": "http",
            "host": "127.0.0.1",
            "port": int(service_url.rsplit(":", 1)[1]),
            "password": ADMIN_TOKEN,
        },
    }
    for name, conn in connections.items():
        env.setenv(f"AIRFLOW_CONN_{name}", json.dumps(conn))
