"""ml_training's model half in real DAG runs: MLflow runs with lineage, the gate, promotion, branch policy."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import mlflow
import pytest
import sqlalchemy as sa
import yaml
from mlflow.tracking import MlflowClient

from devstack.processes import free_port
from include.mlops import alias_history, deployment, lakefs_repository, model_card, performance_estimate, registry
from include.mlops.naming import rollback_dag_id, rollout_dag_id, run_branch_name
from mlops_airflow.approval import APPROVAL_TASK, APPROVE
from mlops_airflow.lakefs_hook import LakeFSHook
from tests.dags.conftest import load_dag, the_config, training_dag
from tests.fixtures.airflow import answering
from tests.fixtures.notifications import RECIPIENTS, WEBHOOK_PATH, notify_section
from tests.fixtures.serving import ADMIN_TOKEN

# A test that deploys asks for `model_service` itself: starting one costs seconds, and most tests deploy nothing.
pytestmark = pytest.mark.usefixtures("airflow_db", "lakefs_connection", "transactions_db", "inference_log_db")

INTERVAL_END = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)


@pytest.fixture
def pipeline_config(write_config, notification_receivers):
    """The test's config, telling the local SMTP server and webhook receiver of every event (config `notify`)."""
    return write_config(notify=notify_section())


def run(**conf):
    """A manual run of ml_training (a first run collects three days; later runs only re-collect one).

    Runs share a logical date, and `dag.test()` clears the task instances (and XComs) of earlier runs with that
    date: read what a run handed on before starting the next one.
    """
    return training_dag().test(logical_date=INTERVAL_END, run_conf={"history_days": 3, **conf})


def _xcom(dag_run, task_id: str, key: str = "return_value"):
    return dag_run.get_task_instance(task_id).xcom_pull(task_ids=task_id, key=key)


def _client(url: str) -> MlflowClient:
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    return MlflowClient(url, registry_uri=url)


def test_a_first_run_trains_gates_is_approved_deploys_promotes_and_merges_its_snapshot(
    mlflow_connection, pipeline_config, model_service, inference_log_db, notification_receivers
):
    # The config asks a person to approve the challenger: told once that it waits, a reviewer approves.
    config = Path(pipeline_config.path)
    raw = yaml.safe_load(config.read_text())
    raw["gate"]["approval"] = "required"
    config.write_text(yaml.safe_dump(raw))
    with answering(training_dag().dag_id, APPROVAL_TASK, APPROVE):
        dag_run = run()
    assert dag_run.state == "success"

    client, name = _client(mlflow_connection), pipeline_config.model.registered_name
    decision = _xcom(dag_run, "register_challenger")
    assert decision["promote"] and decision["reason"].startswith("first model")
    champion = client.get_model_version_by_alias(name, registry.CHAMPION)
    assert champion.version == decision["version"] == client.get_model_version_by_alias(name, "challenger").version

    data = _xcom(dag_run, "resolve_training_data")
    assert champion.tags["lakefs_commit"] == data["commit"] and champion.tags["gate_decision"] == "promote"
    assert champion.tags["onnx_parity"] == "passed" and float(champion.tags["onnx_max_probability_difference"]) < 1e-4
    parity = client.download_artifacts(decision["challenger_run_id"], "parity_report.json")
    assert json.loads(open(parity).read())["passed"] is True
    assert champion.tags["airflow_run_id"] == dag_run.run_id
    # The calibrator of the challenger's validation probabilities, for the drift checks' label-free estimate.
    calibrator = performance_estimate.load(client, champion.tags)
    assert champion.tags["calibrator"] == f"runs:/{decision['challenger_run_id']}/calibrator.json"
    assert isinstance(calibrator, performance_estimate.Calibrator) and len(calibrator.classes) == 2
    _the_versions_model_card_describes_it(client, champion, decision, data)

    parent = client.get_run(_xcom(dag_run, "start_training_run")["run_id"])
    assert parent.data.tags["lakefs_branch"] == run_branch_name(name, dag_run.run_id)
    assert parent.data.tags["gate_decision"] == "promote"
    assert parent.info.status == "FINISHED" and parent.info.end_time  # not left RUNNING after the Airflow run
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["mlops.candidate"] for c in children) == ["gradient_boosting", "logistic_regression"]
    assert client.download_artifacts(parent.info.run_id, "gate_decision.json")

    repo = LakeFSHook().get_repository()
    on_main = {o.path for o in lakefs_repository.list_objects(repo, "main", "datasets/")}
    assert {p for p in data["paths"].values()} <= on_main  # the promoted snapshot reached main

    for task_id in ("gate", "start_training_run", "package_onnx"):
        assert "/#/experiments/" in _xcom(dag_run, task_id, "_link_MLflowRunLink")
    assert "/commits/" in _xcom(dag_run, "resolve_training_data", "_link_LakeFSCommitLink")
    assert _xcom(dag_run, "deploy_model", "_link_ServiceDocsLink") == model_service.url + "/"

    # The champion serves over HTTP, and leads back to the exact data commit and training run.
    deployed = _xcom(dag_run, "deploy_model")
    assert deployed["bentoml_model_tag"] == champion.tags["bentoml_model_tag"] == f"{name}:v{champion.version}"
    assert champion.tags["bento_tag"] == deployed["bento_tag"] and deployed["previous_tag"] is None
    rows = lakefs_repository.read_parquet(repo, data["commit"], data["paths"]["test"]).head(20)
    answer = model_service.predict(deployment.records_of(rows, pipeline_config.dataset), model=name).json()
    assert answer["model_name"] == name and answer["model_version"] == champion.version
    assert len(answer["predictions"]) == 20 and {"label", "probabilities"} <= set(answer["predictions"][0])
    served = model_service.serving(name)
    assert served["tag"] == deployed["bentoml_model_tag"]
    assert served["labels"]["lakefs_commit"] == data["commit"]
    assert served["labels"]["mlflow_run_id"] == decision["challenger_run_id"]
    assert served["labels"]["airflow_run_id"] == dag_run.run_id

    name, told = pipeline_config.name, notification_receivers
    waiting = f"{name}: v{champion.version} waits for approval"
    assert told.subjects() == told.headers() == [waiting, f"{name}: v{champion.version} is the champion"]
    assert f"/tasks/{APPROVAL_TASK}/required_actions" in told.posts[0]["text"]
    moved = alias_history.moves(sa.create_engine(inference_log_db), name)[-1]
    assert (moved.alias, moved.to_version, moved.cause, moved.actor) == (
        "champion",
        champion.version,
        "approval",
        "reviewer",
    )


def _the_versions_model_card_describes_it(client, version, decision: dict, data: dict) -> None:
    """The card register_challenger wrote: on the challenger's run, named by the version, about this run's data."""
    uri = version.tags[model_card.CARD_TAG]
    assert uri == f"runs:/{decision['challenger_run_id']}/{model_card.CARD_PATH}"
    metadata, body = model_card.split_front_matter(model_card.load(client, uri))
    (result,) = metadata["model-index"][0]["results"]
    metric = decision["metric"]
    assert {m["type"]: m["value"] for m in result["metrics"]}[metric] == round(decision["challenger_test"][metric], 6)
    assert body.startswith(f"# Model card: {version.name} v{version.version}")
    assert f"commit `{data['commit']}`" in body and "- owner: not stated" in body
    test = lakefs_repository.read_parquet(LakeFSHook().get_repository(), data["commit"], data["paths"]["test"])
    assert f"On the {len(test)} rows of the test split." in body
    for channel, rows in test["channel"].value_counts().items():  # a slice per value, with its rows
        assert re.search(rf"^\| {channel} \| {rows} \| (\d\.\d{{4}}|–|too few rows) \|", body, re.M), channel
    assert "| true \\ predicted | 0 | 1 |" in body and "## Permutation importance" in body
    assert "verdict: **passed**" in body and "**promote**: first model" in body
    assert client.get_run(decision["challenger_run_id"]).data.metrics["model_card_seconds"] > 0


def _run_with_a_dead_server(monkeypatch, connection_id: str, task_id: str, **conf):
    """A run whose connection `connection_id` points at a port nobody listens on; `task_id` fails after its
    retries (without waiting between them). Returns the run and the dead server's address."""
    port = free_port()
    dead = {"conn_type": "http", "host": "127.0.0.1", "port": port, "password": "x", "schema": "http"}
    monkeypatch.setenv(f"AIRFLOW_CONN_{connection_id.upper()}", json.dumps(dead))
    dag = training_dag()
    dag.get_task(task_id).retry_delay = dt.timedelta(0)
    dag_run = dag.test(logical_date=INTERVAL_END, run_conf={"history_days": 3, **conf})
    failed = dag_run.get_task_instance(task_id)
    assert dag_run.state == "failed" and failed.state == "failed" and failed.try_number == 3
    return dag_run, f"http://127.0.0.1:{port}"


def test_a_service_that_does_not_answer_fails_the_deploy_and_nothing_is_promoted(
    mlflow_connection, pipeline_config, monkeypatch, capfd, notification_receivers
):
    dag_run, address = _run_with_a_dead_server(monkeypatch, "serving_default", "deploy_model")
    # Told once that the run failed (the DAG's failure callback), though deploy_model failed three times.
    failed = [f"{pipeline_config.name}: a run failed"]
    assert notification_receivers.subjects() == notification_receivers.headers() == failed
    assert f"{dag_run.run_id} failed at task deploy_model (try 3)" in notification_receivers.posts[0]["text"]
    assert f"the model service at {address} cannot be reached" in capfd.readouterr().out
    assert dag_run.get_task_instance("promote_champion").state == "upstream_failed"
    client, name = _client(mlflow_connection), pipeline_config.model.registered_name
    decision = _xcom(dag_run, "register_challenger")
    assert client.get_model_version_by_alias(name, registry.CHALLENGER).version == decision["version"]
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(name, registry.CHAMPION)
    snapshot = _xcom(dag_run, "resolve_training_data")["paths"]["train"]
    assert not lakefs_repository.object_exists(LakeFSHook().get_repository(), "main", snapshot)


def test_an_unreachable_object_store_fails_the_deploy_before_the_switch(
    mlflow_connection, pipeline_config, model_service, monkeypatch, capfd
):
    """With models published to an object store, a store that does not answer fails deploy_model before the
    service is asked to switch: nothing is served, promoted or merged."""
    port = free_port()
    monkeypatch.setenv("MLOPS_MODEL_STORE_URL", "s3://models/serving")
    monkeypatch.setenv("MLOPS_MODEL_STORE_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    name = pipeline_config.model.registered_name
    before = model_service.serving(name)
    dag = training_dag()
    dag.get_task("deploy_model").retry_delay = dt.timedelta(0)
    dag_run = dag.test(logical_date=INTERVAL_END, run_conf={"history_days": 3})
    failed = dag_run.get_task_instance("deploy_model")
    assert dag_run.state == "failed" and failed.state == "failed" and failed.try_number == 3
    out = capfd.readouterr().out
    assert f"s3://models/serving/tags/{name}/v" in out and f"at http://127.0.0.1:{port} failed" in out
    assert dag_run.get_task_instance("promote_champion").state == "upstream_failed"
    assert model_service.serving(name) == before
    with pytest.raises(mlflow.exceptions.MlflowException):
        _client(mlflow_connection).get_model_version_by_alias(name, registry.CHAMPION)


def test_a_challenger_no_better_than_the_champion_is_rejected_and_its_branch_says_so_and_a_rollback_serves_it(
    mlflow_connection, pipeline_config, model_service, inference_log_db, capfd, notification_receivers
):
    first = run()
    assert first.state == "success"
    champion_version = v1 = _xcom(first, "register_challenger")["version"]
    name, told = pipeline_config.name, notification_receivers
    assert told.subjects() == told.headers() == [f"{name}: v{v1} is the champion"]
    data = _xcom(first, "resolve_training_data")  # read before the next run of the same date clears it
    repo = LakeFSHook().get_repository()
    records = deployment.records_of(
        lakefs_repository.read_parquet(repo, data["commit"], data["paths"]["test"]).head(5), pipeline_config.dataset
    )
    second = run(history_days=1)
    assert second.state == "success"

    client, name = _client(mlflow_connection), pipeline_config.model.registered_name
    decision = _xcom(second, "register_challenger")
    assert not decision["promote"], decision
    assert decision["champion_version"] == champion_version
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == decision["champion_version"]
    assert client.get_model_version_by_alias(name, registry.CHALLENGER).version == decision["version"]
    assert second.get_task_instance("promote_champion").state == "skipped"
    for skipped in ("go_live", "deploy_model", "start_rollout", "store_reference"):
        assert second.get_task_instance(skipped).state == "skipped", skipped

    branch = run_branch_name(name, second.run_id)
    recorded = lakefs_repository.get_commit(repo, branch)
    assert recorded.metadata["gate_decision"] == "reject" and recorded.message.startswith("Not promoted: ")
    snapshot = _xcom(second, "resolve_training_data")["paths"]["train"]
    assert not lakefs_repository.object_exists(repo, "main", snapshot)  # a rejected snapshot stays on its branch

    # The alias history: both aliases set by the first run's gate; the second moved only `challenger`.
    engine = sa.create_engine(inference_log_db)
    moves = alias_history.moves(engine, name)
    assert [(m.alias, m.from_version, m.to_version, m.airflow_run_id) for m in moves] == [
        ("challenger", None, champion_version, first.run_id),
        ("champion", None, champion_version, first.run_id),
        ("challenger", champion_version, decision["version"], second.run_id),
    ]
    assert {(m.cause, m.trigger, m.airflow_dag_id) for m in moves} == {("gate", "schedule", training_dag().dag_id)}
    assert moves[1].detail.startswith("first model") and f"{name}:v{champion_version}" in moves[1].detail
    assert moves[2].detail.startswith("REJECT")

    # Told once of each: the promotion, then the rejection, by mail and webhook, with links to the evidence.
    rejected = f"{name}: v{decision['version']} rejected by the gate"
    assert told.subjects() == told.headers() == [f"{name}: v{v1} is the champion", rejected]
    assert told.paths == [WEBHOOK_PATH] * 2 and all(mail["To"] == ", ".join(RECIPIENTS) for mail in told.mails)
    text, mail = told.posts[1]["text"], told.mails[1].get_payload(0).get_payload(decode=True).decode()
    for link in (f"/dags/{first.dag_id}/runs/", "/mlops/", f"/#/models/{name}/versions/{decision['version']}"):
        assert link in text and link in mail, link
    assert decision["reason"].split(":")[0] in text
    told.clear()

    # The rejected challenger passed ONNX parity, so a person may still put it in service: model_rollback.
    _rollbacks_change_what_is_served(
        client, name, model_service, records, engine, v1, decision["version"], second, capfd, told
    )
    told.clear()
    _a_rollout_with_no_verdict_in_time_is_rolled_back(name, model_service, engine, v1, decision["version"], told)


def test_retraining_from_a_recorded_commit_gives_the_same_metrics(mlflow_connection, pipeline_config):
    def metrics(dag_run) -> dict[str, dict]:
        # A mapped task's values, as its downstream (the gate) sees them: one per candidate.
        results = dag_run.get_task_instance("gate").xcom_pull(task_ids="train_candidate")
        return {r["candidate"]: {"valid": r["valid"], "test": r["test"]} for r in results}

    first = run(promote=False)
    first_metrics = metrics(first)
    client = _client(mlflow_connection)
    recorded = client.get_run(_xcom(first, "start_training_run")["run_id"]).data.tags["lakefs_commit"]

    again = run(data_commit=recorded, promote=False)
    assert again.state == "success"
    assert again.get_task_instance("collect").state == "skipped"
    assert metrics(again) == first_metrics
    assert _xcom(again, "resolve_training_data")["commit"] == recorded


def test_a_commit_that_is_not_a_snapshot_is_refused(mlflow_connection, pipeline_config):
    repo = LakeFSHook().get_repository()
    dag_run = run(data_commit=lakefs_repository.head_commit(repo, "main"))
    assert dag_run.state == "failed"
    assert dag_run.get_task_instance("resolve_training_data").state == "failed"


def test_a_candidate_that_fails_to_fit_fails_only_its_task(mlflow_connection, write_config):
    write_config(
        candidates=[
            {"name": "good", "estimator": "LogisticRegression", "params": {"max_iter": 500}},
            {"name": "broken", "estimator": "LogisticRegression", "params": {"C": -1.0}},
        ]
    )
    # Registered, not deployed.
    dag_run = run(promote=False)
    assert dag_run.state == "success"
    states = {ti.map_index: ti.state for ti in dag_run.get_task_instances() if ti.task_id == "train_candidate"}
    assert sorted(states.values()) == ["failed", "success"]
    decision = _xcom(dag_run, "register_challenger")
    assert decision["failed_candidates"] == ["broken"] and decision["challenger"] == "good"


def test_mlflow_unreachable_fails_with_a_clear_message_and_leaves_the_champion(
    mlflow_connection, pipeline_config, model_service, monkeypatch, capfd
):
    assert run().state == "success"
    client, name = _client(mlflow_connection), pipeline_config.model.registered_name
    champion = client.get_model_version_by_alias(name, registry.CHAMPION).version

    _, address = _run_with_a_dead_server(monkeypatch, "mlflow_default", "start_training_run", history_days=1)
    assert f"MLflow at {address} cannot be reached" in capfd.readouterr().out
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == champion


def test_nothing_is_registered_before_the_onnx_form_passes_parity(pipeline_config):
    dag = training_dag()
    assert "package_onnx" in dag.get_task("register_challenger").upstream_task_ids
    assert {"register_challenger"} == dag.get_task("choose_outcome").upstream_task_ids


def rollback(**conf):
    return load_dag("model_rollback", rollback_dag_id(the_config().name)).test(run_conf=conf)


def _rollbacks_change_what_is_served(
    client, name, model_service, records, engine, v1, v2, trained_v2, capfd, notification_receivers
) -> None:
    """Refused rollbacks leave the champion and the service alone; a rollback to v2, and one back by default to
    the previous champion, change what the service answers, and the alias history names them."""

    def served() -> str:
        return model_service.predict(records, model=name).json()["model_version"]

    assert served() == v1
    capfd.readouterr()
    for version, why in [("99", f"{name} has no version '99' (versions: {v1}, {v2})"), (v1, "is the champion already")]:
        refused = rollback(version=version)
        assert refused.state == "failed" and refused.get_task_instance("deploy_version").state == "upstream_failed"
        assert "rollback refused, champion unchanged: " in (log := capfd.readouterr().out) and why in log, why
        assert client.get_model_version_by_alias(name, registry.CHAMPION).version == v1 and served() == v1

    to_v2 = rollback(version=v2)
    assert to_v2.state == "success"
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == v2 and served() == v2
    assert client.get_model_version_by_alias(name, registry.PREVIOUS_CHAMPION).version == v1
    assert model_service.serving(name)["labels"]["airflow_run_id"] == trained_v2.run_id  # the run that trained v2

    back = rollback()  # by default, to the previous champion
    assert back.state == "success" and _xcom(back, "choose_version")["version"] == v1
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == v1 and served() == v1

    moves = [m for m in alias_history.moves(engine, name) if m.alias == "champion"]
    assert [(m.from_version, m.to_version, m.cause) for m in moves] == [
        (None, v1, "gate"),
        (v1, v2, "rollback"),
        (v2, v1, "rollback"),
    ]
    assert moves[1].airflow_dag_id == rollback_dag_id(name) and moves[1].airflow_run_id == to_v2.run_id
    assert moves[1].detail == f"rollback to v{v2}; serving {name}:v{v2}"

    # The refused rollbacks failed their runs; the others rolled back. Each told once.
    failed, told = f"{name}: a run failed", notification_receivers
    expected = [failed, failed, f"{name}: rolled back to v{v2}", f"{name}: rolled back to v{v1}"]
    assert told.subjects() == told.headers() == expected


def _a_rollout_with_no_verdict_in_time_is_rolled_back(name, model_service, engine, v1, v2, told) -> None:
    """A shadow rollout of v2 that sees no traffic before `rollout.max_hours`: model_rollout rolls it back, keeps
    v1 and tells of its verdict once."""
    import time

    config = Path(the_config().path)
    raw = yaml.safe_load(config.read_text())
    raw["rollout"] = {"mode": "shadow", "min_hours": 0, "max_hours": 0.0001}  # 0.36 s
    config.write_text(yaml.safe_dump(raw))
    service = deployment.ServingEndpoint(model_service.url, ADMIN_TOKEN, name)
    service.start_rollout(f"{name}:v{v2}", "shadow", 0.1)
    time.sleep(0.5)

    checked = load_dag("model_rollout", rollout_dag_id(name)).test()
    assert checked.state == "success" and checked.get_task_instance("roll_back").state == "success"
    assert service.rollout() is None and model_service.serving(name)["model_version"] == v1
    kept = alias_history.moves(engine, name)[-1]
    assert (kept.alias, kept.to_version, kept.cause) == ("champion", v1, "rollout")
    assert told.subjects() == told.headers() == [f"{name}: rollout of v{v2} judged"]
    assert "no verdict within 0.0001 h" in told.posts[0]["text"]
