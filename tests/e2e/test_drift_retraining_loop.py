"""The loop on a real scheduler, for two models side by side: both are trained and served by one service, the
demo's world changes, and its drift monitor retrains it while the other model's champion stays.

Airflow runs as compose runs it (api-server, scheduler, dag-processor, triggerer, a Celery worker; Postgres),
every run is started through the REST API v2 with a JWT, and the run the drift monitor starts is the
scheduler's own doing. This is what `make run ARGS=--demo-drift` plays (include/devstack/demo.py), checked step
by step, with the breast cancer model beside the demo.
"""

from __future__ import annotations

import datetime as dt

import httpx
import mlflow
import pytest

from include.devstack import demo
from include.devstack.stack import DEMO_SEED
from include.mlops.naming import monitor_dag_id, training_dag_id
from tests.e2e.conftest import BREAST_CANCER, DEMO, ROWS_PER_DAY, TRAINING_DAYS, changed_since

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def test_drift_in_one_models_traffic_retrains_that_model_only(e2e):
    stack, said = e2e.stack, e2e.said
    api = stack.airflow_api()
    token = stack.credentials["serving_admin_token"]
    serving = stack.urls["Serving"]
    dag_ids = {dag(m) for m in (DEMO, BREAST_CANCER) for dag in (training_dag_id, monitor_dag_id)}
    api.wait_for_dags(dag_ids | {"lakefs_housekeeping"})
    assert api.request("GET", "/api/v2/importErrors")["total_entries"] == 0
    for dag_id in api.paused_dag_ids() & dag_ids:
        api.unpause(dag_id)
    health = api.request("GET", "/api/v2/monitor/health")
    assert {health[c]["status"] for c in ("metadatabase", "scheduler", "dag_processor", "triggerer")} == {"healthy"}, (
        health
    )

    # 1. The first champions, trained at once: the demo's on the days before its world changed.
    confs = {
        DEMO: {"reason": "manual", "history_days": TRAINING_DAYS},
        BREAST_CANCER: {"reason": "manual", "history_days": e2e.config(BREAST_CANCER).training.window_days},
    }
    as_of = {DEMO: dt.datetime.combine(changed_since(), dt.time(), dt.UTC)}
    runs = demo.train(api, said.append, confs, logical_dates=as_of, timeout=900)
    assert {m: r.state for m, r in runs.items()} == {DEMO: "success", BREAST_CANCER: "success"}, (
        "\n".join(said) + e2e.logs()
    )
    champions = {m: demo.served_model(serving, token, m) for m in runs}
    assert champions[DEMO].labels["airflow_run_id"] == runs[DEMO].run_id
    # The breast cancer model may have been trained from the Airflow UI already (test_airflow_ui): any run of its.
    assert champions[BREAST_CANCER] is not None

    # Each prediction leads back to its model's exact data: the MLflow run and the lakeFS commit it names.
    client = mlflow.MlflowClient(stack.urls["MLflow"])
    for model, champion in champions.items():
        records = demo.sample_records(stack.urls["lakeFS"], stack.lakefs_keys, champion.labels, e2e.config(model), 3)
        answer = demo.predict(serving, model, records)
        assert (answer["model_name"], answer["model_version"]) == (model, champion.model_version)
        candidate_run = client.get_run(champion.labels["mlflow_run_id"])
        parent = client.get_run(candidate_run.data.tags.get("mlflow.parentRunId", candidate_run.info.run_id))
        assert parent.data.tags["lakefs_commit"] == champion.labels["lakefs_commit"]
        lakefs_commit = httpx.get(
            f"{stack.urls['lakeFS']}/api/v1/repositories/mlops/commits/{champion.labels['lakefs_commit']}",
            auth=stack.lakefs_keys,
        )
        assert lakefs_commit.status_code == 200
        assert lakefs_commit.json()["metadata"]["airflow_run_id"] == champion.labels["airflow_run_id"]
        assert lakefs_commit.json()["metadata"]["airflow_dag_id"] == training_dag_id(model)

    # 2. The breast cancer model sees traffic like its training data, and its hourly check finds no drift.
    cancer = e2e.config(BREAST_CANCER)
    rows = demo.sample_records(stack.urls["lakeFS"], stack.lakefs_keys, champions[BREAST_CANCER].labels, cancer, 200)
    for _ in range(cancer.drift.min_rows // len(rows) + 1):
        demo.predict(serving, BREAST_CANCER, rows)
    cancer_check = api.trigger(monitor_dag_id(BREAST_CANCER), {})
    assert demo.follow(api, {monitor_dag_id(BREAST_CANCER): cancer_check}, said.append, 600) == {
        monitor_dag_id(BREAST_CANCER): "success"
    }
    log_url = f"sqlite:///{stack.inference_log_db}"
    assert demo.verdict_of(log_url, BREAST_CANCER, cancer_check).startswith("no retraining: no drift")

    # 3. Traffic of the demo's changed world; its hourly check, run now, asks for retraining and starts it itself.
    traffic = demo.Traffic(serving, e2e.config(DEMO), ROWS_PER_DAY, DEMO_SEED)
    outcome = demo.drift_loop(api, traffic, serving, token, log_url, said.append, timeout=900)
    transcript = "\n".join(said)
    assert outcome.decision.startswith("retrain: data drift"), transcript
    assert outcome.training_run_id == f"drift__{outcome.monitor_run_id}", transcript
    assert outcome.training_state == "success", transcript + e2e.logs()
    triggered = api.run(training_dag_id(DEMO), outcome.training_run_id)
    assert triggered["conf"]["reason"] == "drift"
    assert triggered["conf"]["history_days"] == e2e.config(DEMO).training.window_days
    assert triggered["run_type"] == "operator_triggered"  # by the drift monitor's TriggerDagRunOperator, not us

    # 4. The retrained demo model learned the changed world and serves now, without the service restarting; the
    # breast cancer model's drift monitor started nothing, and its champion has not moved.
    assert outcome.champion_after != outcome.champion_before, transcript
    assert demo.served_model(serving, token, DEMO).labels["airflow_run_id"] == outcome.training_run_id
    record = demo.live_records(dt.datetime.now(dt.UTC).date(), ROWS_PER_DAY, DEMO_SEED, False, e2e.config(DEMO))[0]
    assert demo.predict(serving, DEMO, [record])["model_version"] == outcome.champion_after
    assert not [r for r in api.runs(training_dag_id(BREAST_CANCER)) if r["dag_run_id"].startswith("drift__")]
    after = demo.served_model(serving, token, BREAST_CANCER)
    assert after.model_version == champions[BREAST_CANCER].model_version
    assert demo.predict(serving, BREAST_CANCER, rows[:1])["model_version"] == after.model_version
    api.close()
