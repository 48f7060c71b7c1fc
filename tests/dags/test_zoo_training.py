"""A dataset of the zoo through the real ml_training DAG: modeldata's credit data, as CSV exports with naive ISO
times, 'good'/'bad' text labels and missing values, under the config infer_config drafted and a person reviewed
(tests/zoo/configs/credit_risk.yaml). Its first run collects, validates, trains, gates, packages, deploys and
promotes; the model service answers with 'bad' and 'good', and MLflow and the page speak the same labels."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from include.mlops import deployment, lakefs_repository, registry
from include.mlops.config import load_config
from mlops_airflow.lakefs_hook import LakeFSHook
from tests.dags.conftest import training_dag
from tests.fixtures.serving import ADMIN_TOKEN
from tests.zoo import sources
from tests.zoo.datasets import DAYS, ZOO

CREDIT = next(d for d in ZOO if d.name == "credit_risk")
# The run of the day after the last day of the rows; it collects them all.
INTERVAL_END = dt.datetime.combine(DAYS[-1] + dt.timedelta(days=1), dt.time(), dt.UTC)


@pytest.fixture
def credit_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The reviewed config as the only file of the config folder, reading the exports written under tmp_path."""
    exports = sources.write_files(CREDIT.rows(), tmp_path / "exports", "csv")
    raw = yaml.safe_load(CREDIT.config_path.read_text())
    raw["source"]["path"] = exports
    folder = tmp_path / "configs"
    folder.mkdir()
    path = folder / "credit_risk.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(folder))
    return load_config(path)


@pytest.fixture
def credit_service(start_model_service, credit_config, monkeypatch: pytest.MonkeyPatch):
    service = start_model_service(expect_model=False, configs=(Path(credit_config.path),))
    address = urlparse(service.url)
    conn = {"conn_type": "http", "host": address.hostname, "port": address.port, "password": ADMIN_TOKEN}
    monkeypatch.setenv("AIRFLOW_CONN_SERVING_DEFAULT", json.dumps({**conn, "schema": "http"}))
    return service


@pytest.mark.usefixtures("airflow_db", "lakefs_connection", "inference_log_db")
def test_the_drafted_credit_config_is_served_by_its_first_training_run(
    credit_config, credit_service, mlflow_connection
):
    dag_run = training_dag(credit_config).test(logical_date=INTERVAL_END, run_conf={"history_days": len(DAYS)})
    assert dag_run.state == "success"

    mlflow.set_tracking_uri(mlflow_connection)
    client = MlflowClient(mlflow_connection, registry_uri=mlflow_connection)
    champion = client.get_model_version_by_alias(credit_config.name, registry.CHAMPION)
    assert champion.tags["gate_decision"] == "promote" and champion.tags["onnx_parity"] == "passed"

    data = dag_run.get_task_instance("resolve_training_data").xcom_pull(task_ids="resolve_training_data")
    repo = LakeFSHook().get_repository()
    assert sum(data["rows"].values()) == len(CREDIT.rows())  # every exported row, collected once
    manifest = lakefs_repository.read_bytes(repo, data["commit"], data["manifest_path"]).decode()
    assert '"bad":' in manifest and '"good":' in manifest  # rows per class, by the data's own labels

    test = lakefs_repository.read_parquet(repo, data["commit"], data["paths"]["test"]).head(40)
    answer = credit_service.predict(deployment.records_of(test, credit_config.dataset), model=credit_config.name)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert answer.json()["model_version"] == champion.version
    assert {p["label"] for p in predictions} <= {"bad", "good"} and len({p["label"] for p in predictions}) == 2
    assert all(set(p["probabilities"]) == {"bad", "good"} for p in predictions)
    assert sum(p["label"] == truth for p, truth in zip(predictions, test["Status"], strict=True)) >= 0.7 * len(test)
