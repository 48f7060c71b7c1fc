"""The loop on a real scheduler: a champion is trained and served, the world changes, and drift_monitor retrains.

Airflow runs as compose runs it (api-server, scheduler, dag-processor, triggerer; LocalExecutor on Postgres),
every run is started through the REST API v2 with a JWT, and the run drift_monitor starts is the scheduler's
own doing. This is what `make run ARGS=--demo-drift` plays (include/devstack/demo.py), checked step by step.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import mlflow
import pytest

from include.devstack import demo
from include.devstack.stack import DEMO_SEED
from include.mlops.config import load_config
from tests.e2e.conftest import ROWS_PER_DAY, TRAINING_DAYS, changed_since, e2e_stack, logs_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres]


def test_drift_in_live_traffic_retrains_and_serves_a_new_champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    said: list[str] = []
    with e2e_stack(tmp_path, "LocalExecutor", monkeypatch) as stack:
        api = stack.airflow_api()
        token = stack.credentials["serving_admin_token"]
        serving = stack.urls["Serving"]
        api.wait_for_dags({"ml_training", "drift_monitor", "lakefs_housekeeping"})
        assert api.request("GET", "/api/v2/importErrors")["total_entries"] == 0
        for dag_id in ("ml_training", "drift_monitor"):
            api.unpause(dag_id)
        health = api.request("GET", "/api/v2/monitor/health")
        assert {health[c]["status"] for c in ("metadatabase", "scheduler", "dag_processor", "triggerer")} == {
            "healthy"
        }, health

        # 1. The first champion, trained on the days before the world changed.
        as_of = dt.datetime.combine(changed_since(), dt.time(), dt.UTC)
        conf = {"reason": "manual", "history_days": TRAINING_DAYS}
        first_run, state = demo.train(api, said.append, conf, logical_date=as_of, timeout=900)
        assert state == "success", "\n".join(said) + logs_of(tmp_path)
        champion = demo.served_model(serving, token)
        assert champion is not None, "ml_training succeeded but no model is served"
        assert champion.labels["airflow_run_id"] == first_run

        # The served prediction leads back to the exact data: the MLflow run and the lakeFS commit it names.
        record = demo.live_records(dt.datetime.now(dt.UTC).date(), ROWS_PER_DAY, DEMO_SEED, changed=False)[0]
        answer = demo.predict(serving, [record])
        assert answer["model_version"] == champion.model_version
        client = mlflow.MlflowClient(stack.urls["MLflow"])
        training_run = client.get_run(champion.labels["mlflow_run_id"])
        parent = client.get_run(training_run.data.tags.get("mlflow.parentRunId", training_run.info.run_id))
        assert parent.data.tags["lakefs_commit"] == champion.labels["lakefs_commit"]
        lakefs_commit = httpx.get(
            f"{stack.urls['lakeFS']}/api/v1/repositories/mlops/commits/{champion.labels['lakefs_commit']}",
            auth=stack.lakefs_keys,
        )
        assert lakefs_commit.status_code == 200
        assert lakefs_commit.json()["metadata"]["airflow_run_id"] == first_run

        # 2. Traffic of the changed world; the hourly check, run now, asks for retraining and starts it itself.
        traffic = demo.Traffic(serving, ROWS_PER_DAY, DEMO_SEED)
        outcome = demo.drift_loop(
            api, traffic, serving, token, f"sqlite:///{stack.inference_log_db}", said.append, timeout=900
        )
        transcript = "\n".join(said)
        assert outcome.decision.startswith("retrain: data drift"), transcript
        assert outcome.training_run_id == f"drift__{outcome.monitor_run_id}", transcript
        assert outcome.training_state == "success", transcript + logs_of(tmp_path)
        triggered = api.run("ml_training", outcome.training_run_id)
        assert triggered["conf"]["reason"] == "drift"
        assert triggered["conf"]["history_days"] == load_config().training.window_days
        assert triggered["run_type"] == "operator_triggered"  # by drift_monitor's TriggerDagRunOperator, not us

        # 3. The retrained model learned the changed world and serves now, without the service restarting.
        assert outcome.champion_after != outcome.champion_before, transcript
        assert demo.served_model(serving, token).labels["airflow_run_id"] == outcome.training_run_id
        assert demo.predict(serving, [record])["model_version"] == outcome.champion_after
