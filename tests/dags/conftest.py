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
import yaml

from include.devstack import simulator
from include.mlops.config import CONFIG_DIR, PipelineConfig, load_config
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
    """Write the demo config with a registered model of the test's own (and `model` changes), and choose it
    with MLOPS_CONFIG. Returns the loaded config."""

    def write(**model: object) -> PipelineConfig:
        raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
        raw["model"].update({"registered_name": f"fraud_{uuid.uuid4().hex[:8]}", "candidates": TEST_CANDIDATES})
        raw["model"].update(model)
        path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(raw))
        monkeypatch.setenv("MLOPS_CONFIG", str(path))
        return load_config(str(path))

    return write


@pytest.fixture
def pipeline_config(write_config) -> PipelineConfig:
    return write_config()


@pytest.fixture
def mlflow_connection(mlflow_server, monkeypatch: pytest.MonkeyPatch) -> str:
    address = urlparse(mlflow_server.url)
    conn = {"conn_type": "http", "host": address.hostname, "port": address.port, "schema": "http"}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(conn))
    return mlflow_server.url


@pytest.fixture
def model_service(start_model_service: StartService, monkeypatch: pytest.MonkeyPatch) -> Service:
    """The model service, serving nothing yet, behind connection `serving_default`: where deploy_model rolls
    models out to."""
    service = start_model_service(expect_model=False)
    address = urlparse(service.url)
    conn = {"conn_type": "http", "host": address.hostname, "port": address.port, "password": ADMIN_TOKEN}
    monkeypatch.setenv("AIRFLOW_CONN_SERVING_DEFAULT", json.dumps({**conn, "schema": "http"}))
    return service


def load_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO_ROOT / "dags" / f"{dag_id}.py")).dags[dag_id]
