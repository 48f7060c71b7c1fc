"""The release steps in-process: `champion` moved with its history for each cause against a real `mlflow server`
and the alias history on SQLite and Postgres, a trial refused while another run's is on, a trial that cannot
reach the service ending nothing, and the mapping of deployment errors to task outcomes."""

from __future__ import annotations

import datetime as dt
import uuid

import mlflow
import pytest
import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from devstack.processes import free_port
from include.mlops import alias_history, operations_store, registry, release, rollouts
from include.mlops.deployment import DeploymentError, ServiceUnreachable, ServingEndpoint
from tests.fixtures.serving import ADMIN_TOKEN, DEMO_MODEL
from tests.serving.conftest import start_service, stored_models  # noqa: F401 (fixtures)

RUN = release.AirflowRun("ml_training__fraud", "manual__r1", "manual")
SNAPSHOT = {"repository": "mlops", "commit": "c" * 64, "paths": {"test": "datasets/fraud/test.parquet"}}


@pytest.fixture
def client(mlflow_server) -> MlflowClient:
    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_registry_uri(mlflow_server.url)
    return MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)


@pytest.fixture
def model(client, config) -> tuple[str, list[str]]:
    """A registered model of the test's own with three versions (each of a run of its own, tagged as ml_training
    tags a version that passed parity); returns its name and versions."""
    name = f"fraud_{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    experiment = client.create_experiment(name)
    versions = []
    for trained_by in ("manual__a", "manual__b", "manual__c"):
        run = client.create_run(experiment)
        tags = {"onnx_model_uri": f"runs:/{run.info.run_id}/onnx", "airflow_run_id": trained_by}
        created = client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id, tags=tags)
        versions.append(str(created.version))
    return name, versions


def _dead_service(model: str) -> ServingEndpoint:
    """An endpoint at a free port nobody listens on: any request to it raises ServiceUnreachable."""
    return ServingEndpoint(f"http://127.0.0.1:{free_port()}", "token", model, timeout=2)


def _champion(client, name: str) -> str | None:
    found = registry.version_by_alias(client, name, registry.CHAMPION)
    return None if found is None else str(found.version)


def test_the_champion_moves_with_its_history_for_each_cause(client, model, history_engine):
    name, (v1, v2, v3) = model
    engine = history_engine

    assert release.move_champion(client, engine, name, v1, RUN, "gate", "first model") is None
    approved = {"approved": True, "by": "alice", "at": "2026-03-01T02:00"}
    promotion = release.move_champion(client, engine, name, v2, RUN, "rollout", "canary held", answer=approved)
    assert promotion == v1 and _champion(client, name) == v2
    assert str(client.get_model_version_by_alias(name, registry.PREVIOUS_CHAMPION).version) == v1
    rollback = release.AirflowRun("model_rollback__fraud", "manual__rb", "manual")
    assert release.move_champion(client, engine, name, v1, rollback, "rollback", "v2 misbehaves", actor="bob") == v2
    rejected = {"approved": False, "by": "carol", "at": "2026-03-01T03:00"}
    check = release.AirflowRun("model_rollout__fraud", "scheduled__c", "scheduled")
    kept = release.move_champion(client, engine, name, v1, check, "rollout", "kept", answer=rejected, kept=True)
    assert kept is None and _champion(client, name) == v1

    moves = alias_history.moves(engine, name)
    assert [(m.from_version, m.to_version, m.cause, m.actor) for m in moves] == [
        (None, v1, "gate", "Airflow run manual__r1"),
        (v1, v2, "approval", "alice"),
        (v2, v1, "rollback", "bob"),
        (v1, v1, "rollout", "Airflow run scheduled__c"),
    ]
    assert moves[1].detail == "approved by alice at 2026-03-01T02:00; canary held"
    assert [(m.airflow_dag_id, m.airflow_run_id, m.trigger) for m in moves[2:]] == [
        ("model_rollback__fraud", "manual__rb", "manual"),
        ("model_rollout__fraud", "scheduled__c", "scheduled"),
    ]
    assert {m.alias for m in moves} == {registry.CHAMPION} and v3 not in {m.to_version for m in moves}


def test_a_retried_move_is_recorded_once_from_where_the_champion_was(client, model, history_engine):
    name, (v1, v2, _) = model
    release.move_champion(client, history_engine, name, v1, release.AirflowRun("d", "r0", "nightly"), "gate", "x")
    retried = release.AirflowRun("d", "r1", "nightly")
    assert release.move_champion(client, history_engine, name, v2, retried, "gate", "better") == v1
    # The retry finds `champion` moved already: nothing moves, and no second row.
    assert release.move_champion(client, history_engine, name, v2, retried, "gate", "better") is None
    moves = alias_history.moves(history_engine, name)
    assert [(m.from_version, m.to_version, m.airflow_run_id) for m in moves] == [(None, v1, "r0"), (v1, v2, "r1")]


def test_keeping_a_champion_that_is_not_there_is_refused(client, model, history_engine):
    name, (v1, v2, _) = model
    with pytest.raises(ValueError, match=rf"{name}'s champion is v-, not v{v1}: it cannot be kept"):
        release.move_champion(client, history_engine, name, v1, RUN, "rollout", "kept", kept=True)
    release.move_champion(client, history_engine, name, v1, RUN, "gate", "first")
    with pytest.raises(ValueError, match=rf"champion is v{v1}, not v{v2}"):
        release.move_champion(client, history_engine, name, v2, RUN, "rollout", "kept", kept=True)
    assert _champion(client, name) == v1 and len(alias_history.moves(history_engine, name)) == 1


def test_a_registered_version_is_released_with_its_lineage(client, model, config):
    name, (v1, _, _) = model
    named = config.model_copy(update={"model": config.model.model_copy(update={"registered_name": name})})
    found = client.get_model_version(name, v1)
    version = release.Release.registered(client, named, v1, SNAPSHOT)
    assert (version.onnx_model_uri, version.mlflow_run_id) == (found.tags["onnx_model_uri"], found.run_id)
    assert version.lineage() == {
        "mlflow_model_name": name,
        "mlflow_model_version": v1,
        "mlflow_run_id": found.run_id,
        "lakefs_repository": "mlops",
        "lakefs_commit": "c" * 64,
        "airflow_run_id": "manual__a",
    }
    client.delete_model_version_tag(name, v1, "onnx_model_uri")
    with pytest.raises(ValueError, match=rf"{name} v{v1} has no onnx_model_uri tag"):
        release.Release.registered(client, named, v1, SNAPSHOT)


def test_a_trial_is_refused_while_another_runs_trial_is_on(client, model, config, history_engine):
    """Refused before anything is published or asked of the service (which would raise ServiceUnreachable)."""
    name, (v1, v2, _) = model
    named = config.model_copy(update={"model": config.model.model_copy(update={"registered_name": name})})
    started = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)
    row = {"model_name": name, "challenger_version": v1, "champion_version": "", "mode": "shadow", "share": 1.0}
    rollouts.record_start(history_engine, row | {"started_at": started, "airflow_dag_id": "d", "airflow_run_id": "r0"})
    challenger = release.Release(named, v2, "runs:/x/onnx", "x", SNAPSHOT, "r1")
    with pytest.raises(DeploymentError, match=rf"a shadow rollout of {name} v{v1} is on since 2026-03-01 02:00 UTC"):
        release.start_trial(client, history_engine, _dead_service(name), None, challenger, RUN)
    assert rollouts.running(history_engine, name)["airflow_run_id"] == "r0"


def test_ending_a_trial_the_service_does_not_answer_changes_nothing(client, model, history_engine):
    name, (v1, v2, _) = model
    release.move_champion(client, history_engine, name, v1, RUN, "gate", "first")
    started = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)
    row = {"model_name": name, "challenger_version": v2, "champion_version": v1, "mode": "canary", "share": 0.1}
    rollout_id = rollouts.record_start(
        history_engine, row | {"started_at": started, "airflow_dag_id": "d", "airflow_run_id": "r0"}
    )
    on_trial = {"model_version": v2, "mode": "canary", "rollout_id": rollout_id}
    with pytest.raises(ServiceUnreachable):
        release.end_trial(client, history_engine, _dead_service(name), on_trial, "error rate 1.0", RUN)
    assert rollouts.running(history_engine, name)["id"] == rollout_id
    assert len(alias_history.moves(history_engine, name)) == 1
    assert "rollout" not in client.get_model_version(name, v2).tags


def test_a_trial_rolled_back_on_the_real_service_is_recorded_everywhere(client, start_service, tmp_path):  # noqa: F811
    """The demo model's v2 as a canary beside v1 on a real service, rolled back after a person said no."""
    try:
        client.create_registered_model(DEMO_MODEL)
    except MlflowException:
        pytest.fail(f"{DEMO_MODEL} is registered already in the session's MLflow: this test needs it to itself")
    experiment = client.create_experiment(f"{DEMO_MODEL}-{uuid.uuid4().hex[:8]}")
    for _ in range(2):
        run = client.create_run(experiment)
        client.create_model_version(DEMO_MODEL, f"{run.info.artifact_uri}/model", run.info.run_id)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'operations.db'}")
    operations_store.upgrade(engine)
    release.move_champion(client, engine, DEMO_MODEL, "1", RUN, "gate", "first")
    service = ServingEndpoint(start_service(MLOPS_MODEL_TAG=f"{DEMO_MODEL}:v1").url, ADMIN_TOKEN, DEMO_MODEL)
    trial = service.start_rollout(f"{DEMO_MODEL}:v2", "canary", 0.25)
    row = {"model_name": DEMO_MODEL, "challenger_version": "2", "champion_version": "1", "mode": "canary"}
    row |= {"share": 0.25, "started_at": dt.datetime.fromisoformat(trial["started_at"])}
    rollout_id = rollouts.record_start(engine, row | {"airflow_dag_id": "d", "airflow_run_id": "r0"})

    on_trial = {**service.rollout(), "rollout_id": rollout_id}
    check = release.AirflowRun("model_rollout__fraud_detector", "scheduled__c", "scheduled")
    answer = {"approved": False, "by": "carol", "at": "2026-03-01T03:00"}
    reason = release.end_trial(client, engine, service, on_trial, "agreement 0.99", check, answer)

    assert reason == "rejected by carol (the check: agreement 0.99)"
    assert service.rollout() is None and service.current_model()["tag"] == f"{DEMO_MODEL}:v1"
    assert rollouts.running(engine, DEMO_MODEL) is None
    assert rollouts.history(engine, DEMO_MODEL)[0]["state"] == rollouts.ROLLED_BACK
    kept = alias_history.moves(engine, DEMO_MODEL)[-1]
    assert (kept.from_version, kept.to_version, kept.cause, kept.airflow_run_id) == (
        "1",
        "1",
        "rollout",
        "scheduled__c",
    )
    assert kept.detail == f"kept v1: the canary rollout of v2 was rolled back: {reason}"
    assert client.get_model_version(DEMO_MODEL, "2").tags["rollout"] == f"rolled back: {reason}"
    assert _champion(client, DEMO_MODEL) == "1"


def test_deployment_errors_fail_the_task_and_an_unreachable_service_is_retried():
    from airflow.sdk.exceptions import AirflowFailException

    from mlops_airflow.releases import deployment_errors

    with pytest.raises(AirflowFailException, match="^rollout refused, champion untouched: cannot load v3$"):
        with deployment_errors("rollout refused, champion untouched: "):
            raise DeploymentError("cannot load v3")
    with pytest.raises(ServiceUnreachable, match="cannot be reached"):  # not a failure: the task's retries run
        with deployment_errors():
            _dead_service("fraud").current_model()
    with pytest.raises(KeyError):  # anything else is no deployment's verdict either
        with deployment_errors():
            raise KeyError("tags")
