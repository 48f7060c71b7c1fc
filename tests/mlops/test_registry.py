"""Training runs and the champion/challenger gate against a real `mlflow server`."""

from __future__ import annotations

import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from devstack.processes import free_port
from include.mlops import packaging, registry, tracking, training

AIRFLOW = {"airflow_dag_id": "ml_training", "airflow_run_id": "manual__test", "airflow_task_id": "t"}
GOOD = training.CandidateSpec("gradient_boosting", "GradientBoosting", {"n_estimators": 60, "max_depth": 3})
WEAK = training.CandidateSpec("logistic_regression", "LogisticRegression", {"max_iter": 500})


def _connect(url: str) -> MlflowClient:
    """A client for the server at `url`, with MLflow's fluent API (model logging) pointed at it too."""
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    return MlflowClient(url, registry_uri=url)


@pytest.fixture
def client(mlflow_server) -> MlflowClient:
    return _connect(mlflow_server.url)


@pytest.fixture
def model_config(config):
    """The demo config with a registered model of the test's own, so tests do not share a champion."""
    name = f"fraud_{uuid.uuid4().hex[:8]}"
    return config.model_copy(update={"model": config.model.model_copy(update={"registered_name": name})})


def _uris(commit: str = "c0ffee") -> dict[str, str]:
    return {name: f"lakefs://mlops/{commit}/datasets/fraud/run/{name}.parquet" for name in ("train", "valid", "test")}


def _shuffled_labels(splits: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The same rows with the labels of the training split permuted: a model learns nothing from it."""
    train = splits["train"].copy()
    train["is_fraud"] = np.random.default_rng(0).permutation(train["is_fraud"].to_numpy())
    return {**splits, "train": train}


def _train(client, config, spec, splits, run_name="run") -> tracking.CandidateResult:
    experiment = tracking.experiment_id(client, config.model.registered_name)
    tags = {**tracking.lineage_tags("mlops", "run-x", "c0ffee", "beef", AIRFLOW), "airflow_run_id": run_name}
    parent = tracking.parent_run(client, experiment, run_name, tags)
    return tracking.train_candidate(client, config, spec, splits, _uris(), parent, tags)


def _gate(client, config, challenger, splits) -> registry.GateDecision:
    version, champion_test = registry.champion_test_metrics(client, config, splits["test"])
    decision = registry.decide(config, challenger, version, champion_test, [])
    registered = registry.register_challenger(client, config, decision, {"airflow_run_id": "manual__test"})
    return registry.GateDecision(**{**decision.to_dict(), "version": registered})


def test_the_first_model_becomes_champion(client, model_config, splits):
    decision = _gate(client, model_config, _train(client, model_config, GOOD, splits), splits)
    assert decision.promote and decision.reason.startswith("first model")
    assert decision.champion_version is None and decision.margin is None
    name = model_config.model.registered_name
    assert client.get_model_version_by_alias(name, registry.CHALLENGER).version == decision.version
    assert registry.promote(client, name, decision.version) is None
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == decision.version


def test_a_worse_challenger_is_not_promoted(client, model_config, splits):
    name = model_config.model.registered_name
    champion = _gate(client, model_config, _train(client, model_config, GOOD, splits, "first"), splits)
    registry.promote(client, name, champion.version)

    worse = _train(client, model_config, GOOD, _shuffled_labels(splits), "shuffled")
    decision = _gate(client, model_config, worse, splits)

    assert not decision.promote
    assert decision.champion_version == champion.version and decision.margin < 0
    assert "not better than the champion" in decision.reason or "below the floor" in decision.reason
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == champion.version
    assert client.get_model_version_by_alias(name, registry.CHALLENGER).version == decision.version
    tags = client.get_model_version(name, decision.version).tags
    assert tags["gate_decision"] == "reject" and float(tags["gate_champion_score"]) > float(
        tags["gate_challenger_score"]
    )


def test_a_better_challenger_is_promoted_and_the_old_champion_kept(client, model_config, splits):
    name = model_config.model.registered_name
    no_floors = model_config.model_copy(update={"gate": model_config.gate.model_copy(update={"floors": {}})})
    weak = _gate(client, no_floors, _train(client, no_floors, WEAK, _shuffled_labels(splits), "weak"), splits)
    registry.promote(client, name, weak.version)

    decision = _gate(client, no_floors, _train(client, no_floors, GOOD, splits, "good"), splits)

    assert decision.promote and decision.margin >= no_floors.gate.min_improvement
    assert registry.promote(client, name, decision.version) == weak.version
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == decision.version
    assert client.get_model_version_by_alias(name, registry.PREVIOUS_CHAMPION).version == weak.version
    assert registry.promote(client, name, decision.version) is None  # a retried promotion changes nothing


def test_floors_keep_a_poor_first_model_out(client, model_config, splits):
    decision = _gate(client, model_config, _train(client, model_config, GOOD, _shuffled_labels(splits)), splits)
    assert not decision.promote and decision.reason.startswith("below the floor")
    assert "average_precision" in decision.floors_failed
    assert "REJECT" in decision.summary() and "no champion" in decision.summary()


def test_same_data_same_model(client, model_config, splits):
    """Reproducibility: two trainings of the same candidate on the same snapshot give identical metrics and
    identical predictions."""
    spec = training.CandidateSpec("forest", "RandomForest", {"n_estimators": 40, "max_depth": 8})
    first = _train(client, model_config, spec, splits, "repro-1")
    second = _train(client, model_config, spec, splits, "repro-2")
    assert first.run_id != second.run_id
    assert first.valid == second.valid and first.test == second.test
    features = training.features_of(splits["test"], model_config.dataset)
    np.testing.assert_array_equal(
        mlflow.sklearn.load_model(first.model_uri).predict_proba(features),
        mlflow.sklearn.load_model(second.model_uri).predict_proba(features),
    )


@pytest.mark.parametrize(("estimator", "distribution"), [("LightGBM", "lightgbm"), ("XGBoost", "xgboost-cpu")])
def test_a_boosting_model_is_logged_and_loaded_back_as_it_was_fitted(
    client, model_config, splits, estimator, distribution
):
    """skops with the pipeline's own types trusted: the booster comes back from its model text (LightGBM) or
    buffer (XGBoost) with the same predictions, and the champion's scores on a new split are its own."""
    spec = training.CandidateSpec(estimator.lower(), estimator, {"n_estimators": 40, "max_depth": 3})
    result = _train(client, model_config, spec, splits, f"round-trip-{estimator}")
    loaded = tracking.load_sklearn_model(result.model_uri)
    assert training.evaluate(loaded, model_config, splits["test"]) == result.test
    requirements = open(mlflow.pyfunc.get_model_dependencies(result.model_uri)).read().split()
    assert any(r.startswith(f"{distribution}==") for r in requirements), requirements

    decision = _gate(client, model_config, result, splits)
    registry.promote(client, model_config.model.registered_name, decision.version)
    assert registry.champion_test_metrics(client, model_config, splits["test"]) == (decision.version, result.test)
    onnx_bytes = packaging.to_onnx(loaded, model_config)
    assert packaging.check_parity(loaded, onnx_bytes, model_config, splits["test"]).passed


def test_a_child_run_carries_its_lineage(client, model_config, splits):
    result = _train(client, model_config, GOOD, splits, "lineage")
    run = client.get_run(result.run_id)
    tags = run.data.tags
    assert tags["lakefs_repository"] == "mlops" and tags["lakefs_commit"] == "c0ffee"
    assert tags["airflow_dag_id"] == "ml_training" and tags["code_version"]
    assert tags[tracking.PARENT_TAG] and tags[tracking.CANDIDATE_TAG] == GOOD.name
    assert run.data.params["model_random_state"] == str(model_config.model.random_seed)
    assert {"valid_average_precision", "test_roc_auc", "fit_seconds"} <= set(run.data.metrics)
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"transactions_train", "transactions_valid", "transactions_test"}
    train = inputs["transactions_train"].dataset
    assert train.source_type == "lakefs" and "lakefs://mlops/c0ffee/" in train.source
    model_info = mlflow.models.get_model_info(result.model_uri)
    assert [i["name"] for i in model_info.signature.inputs.to_dict()] == [f.name for f in model_config.dataset.features]
    assert model_info.saved_input_example_info is not None


def test_a_retried_task_finds_its_run_and_version_again(client, model_config, splits):
    first = _train(client, model_config, GOOD, splits, "retry")
    again = _train(client, model_config, GOOD, splits, "retry")
    assert again.run_id == first.run_id and again.test == first.test
    decision = registry.decide(model_config, first, None, None, [])
    versions = {registry.register_challenger(client, model_config, decision, {}) for _ in range(2)}
    assert len(versions) == 1


def test_the_best_candidate_on_valid_wins_and_failures_are_named(client, model_config, splits):
    good = _train(client, model_config, GOOD, splits, "best")
    weak = _train(client, model_config, WEAK, _shuffled_labels(splits), "best")
    best = registry.best_candidate(model_config, [weak, good])
    assert best.candidate == GOOD.name
    decision = registry.decide(model_config, best, None, None, ["random_forest"])
    assert decision.failed_candidates == ["random_forest"] and "failed candidates: random_forest" in decision.summary()
    with pytest.raises(registry.NoCandidate, match="every candidate failed"):
        registry.best_candidate(model_config, [])


def test_an_unreachable_tracking_server_is_named():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(tracking.MLflowUnavailable, match=f"MLflow at {uri} cannot be reached"):
        tracking.check_reachable(uri, timeout=2)


def test_the_gate_reads_lower_is_better_metrics_the_right_way(config):
    regression = config.model_copy(
        update={
            "dataset": config.dataset.model_copy(update={"task": "regression", "target_classes": []}),
            "model": config.model.model_copy(update={"primary_metric": "rmse", "class_weight": "none"}),
            "gate": config.gate.model_copy(update={"min_improvement": 0.5, "floors": {"r2": 0.2}}),
        }
    )

    def result(rmse: float, r2: float) -> tracking.CandidateResult:
        scores = {"rmse": rmse, "mae": rmse, "r2": r2}
        return tracking.CandidateResult("c", "Ridge", "run", "models:/m", scores, scores, 1.0)

    better = registry.decide(regression, result(rmse=9.0, r2=0.5), "1", {"rmse": 10.0}, [])
    assert better.promote and better.margin == pytest.approx(1.0)
    worse = registry.decide(regression, result(rmse=9.8, r2=0.5), "1", {"rmse": 10.0}, [])
    assert not worse.promote and worse.margin == pytest.approx(0.2)
    poor = registry.decide(regression, result(rmse=5.0, r2=0.1), "1", {"rmse": 10.0}, [])
    assert not poor.promote and poor.floors_failed == {"r2": 0.2}


def test_the_approval_request_shows_both_models_metrics_side_by_side_and_the_evidence(config):
    def result(auc: float, ap: float) -> tracking.CandidateResult:
        scores = {"roc_auc": auc, "average_precision": ap}
        return tracking.CandidateResult("gb", "GradientBoosting", "run", "models:/m", scores, scores, 1.0)

    decision = registry.decide(config, result(0.91, 0.42), "3", {"roc_auc": 0.88, "average_precision": 0.30}, [])
    decision = registry.GateDecision.from_dict({**decision.to_dict(), "version": "4", "onnx_model_uri": "models:/x"})
    text = registry.approval_request(decision, {"MLflow run": "http://mlflow/#/run", "lakeFS commit": "http://l/c"})
    assert text.startswith(f"**Gate:** {decision.summary()}")
    assert "| metric (test split) | challenger v4 | champion v3 |" in text
    assert "| average_precision **(gate)** | 0.4200 | 0.3000 |" in text and "| roc_auc | 0.9100 | 0.8800 |" in text
    assert "- [MLflow run](http://mlflow/#/run)" in text and "- [lakeFS commit](http://l/c)" in text
    first = registry.decide(config, result(0.91, 0.42), None, None, [])
    assert "| roc_auc | 0.9100 | - |" in registry.approval_request(first, {})


@pytest.mark.postgres
def test_the_gate_on_a_postgres_backed_server(empty_postgres_url, tmp_path, model_config, splits):
    from devstack import services

    server = services.start_mlflow(tmp_path / "mlflow", free_port(), tmp_path, backend_store_uri=empty_postgres_url)
    try:
        client = _connect(server.url)
        decision = _gate(client, model_config, _train(client, model_config, GOOD, splits), splits)
        registry.promote(client, model_config.model.registered_name, decision.version)
        champion = client.get_model_version_by_alias(model_config.model.registered_name, registry.CHAMPION)
        assert decision.promote and champion.version == decision.version
    finally:
        server.stop()


def test_a_rollback_goes_to_a_deployable_earlier_version_and_refuses_the_rest(client, model_config, splits):
    name = model_config.model.registered_name
    with pytest.raises(registry.RollbackRefused, match=f"{name} has no previous-champion: name the version"):
        registry.rollback_target(client, name)
    no_floors = model_config.model_copy(update={"gate": model_config.gate.model_copy(update={"floors": {}})})
    versions = []
    for run in ("v1", "v2", "v3"):
        decision = _gate(client, no_floors, _train(client, no_floors, WEAK, splits, run), splits)
        versions.append(decision.version)
    first, second, hand_made = versions
    # What register_challenger records for a version that passed parity (package_onnx's tags).
    for version in (first, second):
        client.set_model_version_tag(name, version, "onnx_parity", "passed")
        client.set_model_version_tag(name, version, "onnx_model_uri", f"models:/m-{version}")
    registry.promote(client, name, first)
    registry.promote(client, name, second)

    assert registry.rollback_target(client, name) == first  # the previous champion
    assert registry.rollback_target(client, name, first) == first
    with pytest.raises(registry.RollbackRefused, match=f"{name} v{second} is the champion already"):
        registry.rollback_target(client, name, second)
    with pytest.raises(registry.RollbackRefused, match=rf"{name} has no version '42' \(versions: 1, 2, 3\)"):
        registry.rollback_target(client, name, "42")
    with pytest.raises(registry.RollbackRefused, match=f"{name} has no version 'latest'"):
        registry.rollback_target(client, name, "latest")
    with pytest.raises(registry.RollbackRefused, match=f"v{hand_made} is not deployable: onnx_parity=not recorded"):
        registry.rollback_target(client, name, hand_made)
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == second  # nothing moved


def test_runs_logging_the_same_dataset_at_once_all_get_it(client, config, splits):
    """Candidates of one training run log the same splits at the same moment; the tracking server creates a
    dataset in two steps, and without tracking.log_input's retry some of them failed on its unique constraint."""
    import threading

    from mlflow.data.meta_dataset import MetaDataset

    from include.mlops.lineage import LakeFSDatasetSource

    experiment = client.create_experiment(f"race-{uuid.uuid4().hex[:8]}")
    runs = [client.create_run(experiment).info.run_id for _ in range(8)]
    dataset = MetaDataset(LakeFSDatasetSource("lakefs://mlops/c0ffee/valid.parquet"), name="race", digest="d1")
    start, failures = threading.Barrier(len(runs)), []

    def log(run_id: str) -> None:
        start.wait()
        try:
            with mlflow.start_run(run_id=run_id):
                tracking.log_input(dataset, context="validation")
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=log, args=(run_id,)) for run_id in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert [len(client.get_run(r).inputs.dataset_inputs) for r in runs] == [1] * len(runs)
