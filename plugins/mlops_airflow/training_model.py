"""The tasks of `ml_training`'s model half: training data, MLflow runs, candidates, the gate, promotion.

Each is a thin call into include/mlops. They pass references (commit ids, run ids, versions) through XCom.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from airflow.sdk import Context, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from include.mlops.naming import run_branch_name
from mlops_airflow import mlflow_tracking, notify, pipelines
from mlops_airflow.decorators import lakefs_task, mlflow_task, show_lakefs_commit, show_mlflow_run, show_service_docs
from mlops_airflow.lakefs_hook import LakeFSHook
from mlops_airflow.releases import airflow_run, approval_answer, deployment_errors, training_snapshot
from mlops_airflow.run_context import airflow_run_metadata, retry_marker


@task.branch
def choose_training_data(params: dict) -> list[str]:
    """A recorded snapshot (param `data_commit`) skips collection; otherwise the data half runs first.

    `resolve_training_data` is followed either way (a branch skips the downstream tasks it does not name);
    its trigger rule waits for the snapshot when the data half runs.
    """
    return ["resolve_training_data"] if params.get("data_commit") else ["collect", "resolve_training_data"]


@lakefs_task(trigger_rule="none_failed_min_one_success")
def resolve_training_data(params: dict, **context: Context) -> dict:
    """The snapshot to train on: `data_commit`, or the one this run just committed."""
    requested = params.get("data_commit") or context["ti"].xcom_pull(task_ids="commit_snapshot")
    if not requested:
        raise AirflowFailException("no training snapshot: neither param data_commit nor commit_snapshot gave one")
    snapshot = training_snapshot(LakeFSHook().get_repository(), requested, "data_commit")
    print(f"training on snapshot {snapshot['manifest_path']} at commit {snapshot['commit']}: {snapshot['rows']} rows")
    return snapshot


@mlflow_task
def start_training_run(config_file: str, data: dict, params: dict, **context: Context) -> dict:
    """The MLflow run of this DAG run, tagged with where its data and code come from."""
    from include.mlops import tracking

    config = pipelines.load(config_file)
    client = mlflow_tracking.client()
    experiment = tracking.experiment_id(client, config.name)
    branch = run_branch_name(config.name, context["run_id"])
    tags = tracking.lineage_tags(
        data["repository"], branch, data["commit"], data["source_commit"], airflow_run_metadata(context)
    )
    tags["reason"] = str(params.get("reason", ""))
    # A drift-triggered run names the check that asked for it (drift_monitor's conf).
    conf = context["dag_run"].conf or {}
    drift_tags = {"drift_share": "drift_share", "drifted_columns": "drifted_columns"}
    drift_tags |= {"report_uri": "drift_report_uri", "model_version": "drift_model_version"}
    tags |= {tag: str(conf[key]) for key, tag in drift_tags.items() if key in conf}
    run_id = tracking.parent_run(client, experiment, context["run_id"], tags)
    client.log_dict(run_id, config.model_dump(mode="json"), "pipeline_config.json")
    show_mlflow_run(tracking.run_url(mlflow_tracking.ui_url(), experiment, run_id))
    show_lakefs_commit(data["repository"], data["commit"])
    return {"run_id": run_id, "experiment_id": experiment, "tags": tags}


@task
def finish_training_run(training_run: dict, **context: Context) -> str:
    """End this DAG run's MLflow run with its outcome: FAILED when a task of the run failed, FINISHED otherwise
    (the candidates' runs end on their own), so that MLflow does not show it running forever. A teardown: it
    runs when the rest is done, whatever happened, and does not change the Airflow run's state."""
    ti: Any = context["ti"]
    failed = ti.get_ti_count(dag_id=ti.dag_id, run_ids=[ti.run_id], states=["failed", "upstream_failed"])
    status = "FAILED" if failed else "FINISHED"
    mlflow_tracking.client().set_terminated(training_run["run_id"], status)
    print(f"MLflow run {training_run['run_id']}: {status}")
    return status


@task
def plan_candidates(config_file: str) -> list[dict]:
    """One entry per candidate to train (grids expanded); each becomes a mapped `train_candidate`."""
    from include.mlops import training

    return [spec.to_dict() for spec in training.expand_candidates(pipelines.load(config_file))]


@mlflow_task(map_index_template="{{ task.op_kwargs['candidate']['name'] }}")
def train_candidate(candidate: dict, config_file: str, data: dict, training_run: dict) -> dict:
    """Fit one candidate on the snapshot and log it as a child run. A candidate that cannot be fitted fails
    only its own mapped task (without retries: the same data would fail the same way)."""
    from include.mlops import lakefs_repository, tracking, training
    from include.mlops.naming import lakefs_uri

    config = pipelines.load(config_file)
    client = mlflow_tracking.client()
    spec = training.CandidateSpec(**candidate)
    repo = LakeFSHook().get_repository(data["repository"])
    splits = {name: lakefs_repository.read_parquet(repo, data["commit"], path) for name, path in data["paths"].items()}
    uris = {name: lakefs_uri(repo.id, data["commit"], path) for name, path in data["paths"].items()}
    if problem := training.split_problem(config, splits):
        raise AirflowFailException(problem)  # no retry: the same snapshot gives the same splits
    try:
        result = tracking.train_candidate(
            client, config, spec, splits, uris, training_run["run_id"], training_run["tags"]
        )
    except (ValueError, TypeError) as fit_error:
        raise AirflowFailException(f"candidate {spec.name} ({spec.estimator}) failed to fit: {fit_error}") from None
    show_mlflow_run(tracking.run_url(mlflow_tracking.ui_url(), training_run["experiment_id"], result.run_id))
    primary = config.model.primary_metric
    print(f"{spec.name}: valid {primary}={result.valid[primary]:.4f}, test {primary}={result.test[primary]:.4f}")
    return result.to_dict()


@mlflow_task(trigger_rule="all_done_min_one_success")
def gate(config_file: str, results: list[dict | None]) -> dict:
    """The best candidate on valid against the champion on this run's test split.

    Its only upstream is the candidates, so it runs once all of them are done and at least one succeeded;
    it names the ones that failed. It decides; `register_challenger` records the decision once the ONNX form
    has passed its parity check.
    """
    from include.mlops import lakefs_repository, registry, tracking

    ti = get_current_context()["ti"]
    data = ti.xcom_pull(task_ids="resolve_training_data")
    training_run = ti.xcom_pull(task_ids="start_training_run")
    planned = ti.xcom_pull(task_ids="plan_candidates")
    config = pipelines.load(config_file)
    client = mlflow_tracking.client()
    trained = [tracking.CandidateResult(**r) for r in results if r]
    failed = [c["name"] for c in planned if c["name"] not in {r.candidate for r in trained}]
    challenger = registry.best_candidate(config, trained)
    repo = LakeFSHook().get_repository(data["repository"])
    test = lakefs_repository.read_parquet(repo, data["commit"], data["paths"]["test"])
    champion_version, champion_test = registry.champion_test_metrics(client, config, test)
    decision = registry.decide(config, challenger, champion_version, champion_test, failed)
    parent = training_run["run_id"]
    client.log_dict(parent, decision.to_dict(), "gate_decision.json")
    for key, value in decision.as_tags().items():
        client.set_tag(parent, key, value)
    show_mlflow_run(tracking.run_url(mlflow_tracking.ui_url(), training_run["experiment_id"], parent))
    print(f"Gate: {decision.summary()}")
    return decision.to_dict()


@mlflow_task()
def package_onnx(config_file: str, decision: dict) -> dict:
    """Convert the challenger, preprocessing included, to ONNX and prove on the whole test split that it
    predicts like the sklearn model. A failed parity fails the run here: nothing is registered or deployed.
    The ONNX model and the parity report are logged to the challenger's run either way."""
    from include.mlops import lakefs_repository, packaging, tracking

    ti = get_current_context()["ti"]
    data = ti.xcom_pull(task_ids="resolve_training_data")
    training_run = ti.xcom_pull(task_ids="start_training_run")
    config = pipelines.load(config_file)
    mlflow_tracking.client()
    pipeline = tracking.load_sklearn_model(decision["challenger_model_uri"])
    repo = LakeFSHook().get_repository(data["repository"])
    test = lakefs_repository.read_parquet(repo, data["commit"], data["paths"]["test"])
    onnx_bytes = packaging.to_onnx(pipeline, config)
    report = packaging.check_parity(pipeline, onnx_bytes, config, test)
    onnx_uri = tracking.log_onnx(decision["challenger_run_id"], onnx_bytes, report.to_dict())
    run_url = tracking.run_url(mlflow_tracking.ui_url(), training_run["experiment_id"], decision["challenger_run_id"])
    show_mlflow_run(run_url)
    print(f"ONNX: {report.summary()}")
    if not report.passed:
        raise AirflowFailException(f"{report.summary()}; see parity_report.json in {run_url}")
    return {"onnx_model_uri": onnx_uri, "parity_tags": report.as_tags(), "onnx_bytes": len(onnx_bytes)}


@mlflow_task
def register_challenger(config_file: str, decision: dict, package: dict, **context: Context) -> dict:
    """Register the challenger as a new version with alias `challenger`, carrying the gate decision, its
    lineage, the parity figures and (a classifier) its calibrator's artifact as tags (once per run: a retry finds
    the version), and write its model card (`model_card.md` on the challenger's run, tag `model_card_uri`)."""
    from include.mlops import performance_estimate, registry, release
    from mlops_airflow import operations_store

    training_run = context["ti"].xcom_pull(task_ids="start_training_run")
    config = pipelines.load(config_file)
    client = mlflow_tracking.client()
    tags = {**training_run["tags"], **package["parity_tags"], "onnx_model_uri": package["onnx_model_uri"]}
    tags |= performance_estimate.version_tag(config, decision["challenger_run_id"])
    gate = registry.GateDecision(**decision)
    before = registry.version_by_alias(client, config.name, registry.CHALLENGER)
    version = registry.register_challenger(client, config, gate, tags)
    _write_model_card(client, config, dataclasses.replace(gate, version=version), package["parity_tags"], context)
    client.set_tag(training_run["run_id"], "challenger_version", version)
    engine, current = operations_store.engine(), None if before is None else str(before.version)
    run = airflow_run(context)
    release.record_alias_move(engine, config.name, registry.CHALLENGER, current, version, run, "gate", gate.summary())
    print(f"{config.model.registered_name} v{version} registered with alias challenger")
    if not gate.promote:
        notify.tell(config, "gate_rejected", context, why=gate.reason, version=version)
    return {**decision, "version": version, "onnx_model_uri": package["onnx_model_uri"]}


@task.branch
def choose_outcome(decision: dict, params: dict) -> str:
    if decision["promote"] and params.get("promote", True):
        return "go_live"
    return "record_rejection"


@mlflow_task
def deploy_model(config_file: str, decision: dict, **context: Context) -> dict:
    """Switch the running service to the challenger: into the BentoML model store with its lineage, built into a
    Bento (tag recorded on the model version), switched to without downtime, and smoke-tested (ready, then
    predictions on test rows equal to the offline ONNX ones). On any failure the previous model is put back and
    the task fails; `champion` moves only after this task succeeds."""
    from include.mlops import release
    from include.mlops.object_store import ObjectStore
    from mlops_airflow import serving

    config = pipelines.load(config_file)
    challenger = _challenger(config, decision, context)
    client, repo = mlflow_tracking.client(), LakeFSHook().get_repository(challenger.snapshot["repository"])
    with deployment_errors():
        switched = release.switch(
            client, ObjectStore.from_environment(), repo, serving.endpoint(config.name), challenger
        )
    show_service_docs(serving.docs_url())
    return switched.to_dict()


@task.branch
def go_live(config_file: str) -> str:
    """How an accepted challenger goes live: at once (`rollout.mode: direct`, or no champion yet to compare it
    with), or as a shadow or canary beside the champion."""
    from include.mlops import registry

    config = pipelines.load(config_file)
    if config.rollout.mode == "direct":
        return "deploy_model"
    if registry.version_by_alias(mlflow_tracking.client(), config.name, registry.CHAMPION) is None:
        print(f"rollout.mode is {config.rollout.mode}, but there is no champion to compare with: deploying directly")
        return "deploy_model"
    return "start_rollout"


@mlflow_task
def start_rollout(config_file: str, decision: dict, **context: Context) -> dict:
    """Start a trial of the challenger beside the champion on the running service, as a shadow or canary (config
    `rollout`), after what deploy_model does before its switch (model store, Bento). Refused, with the champion
    untouched, when a trial of the model is on already or the challenger does not load. model_rollout__<model>
    judges it from here on."""
    from include.mlops import release
    from include.mlops.object_store import ObjectStore
    from mlops_airflow import operations_store, serving

    config = pipelines.load(config_file)
    challenger = _challenger(config, decision, context)
    client, engine, service = mlflow_tracking.client(), operations_store.engine(), serving.endpoint(config.name)
    with deployment_errors("rollout refused, champion untouched: "):
        trial = release.start_trial(
            client, engine, service, ObjectStore.from_environment(), challenger, airflow_run(context)
        )
    show_service_docs(serving.docs_url())
    return trial.to_dict()


# After deploy_model or start_rollout, whichever ran; skipped with both (a rejected challenger). The decision is
# read from XCom, not passed in: as an argument it would make register_challenger an upstream task, whose
# success alone would then run this task for a rejected challenger.
@lakefs_task(trigger_rule="none_failed_min_one_success")
def store_reference(config_file: str, **context: Context) -> dict:
    """Keep what drift_monitor compares live traffic with: a sample of the training split (`drift.reference_rows`
    rows) and the deployed model's predictions on it, committed on the run branch as
    `reference/<model>/<run>/reference.parquet` (merged into `main` with the snapshot) and named on the model
    version (tag `drift_reference`), so that an hourly check never rescans the training data."""
    from include.mlops import release

    decision = context["ti"].xcom_pull(task_ids="register_challenger")
    challenger = _challenger(pipelines.load(config_file), decision, context)
    client = mlflow_tracking.client()  # also points MLflow's fluent API (which loads the ONNX model) at the server
    repo = LakeFSHook().get_repository(challenger.snapshot["repository"])
    stamp = airflow_run_metadata(context)
    try:
        stored = release.store_reference(client, repo, challenger, context["run_id"], stamp, retry_marker(stamp))
    except release.ReferenceNotStored as missing:
        raise AirflowFailException(str(missing)) from None
    show_lakefs_commit(repo.id, stored["commit"])
    print(f"drift reference of v{challenger.version}: {stored['rows']} rows at {stored['uri']}")
    return stored


@mlflow_task
def promote_champion(config_file: str, decision: dict, deployed: dict, **context: Context) -> dict:
    """Move `champion` to the deployed version (the old one keeps `previous-champion`), recorded in the alias
    history as the gate's move (or the approver's)."""
    from include.mlops import release
    from mlops_airflow import operations_store

    config = pipelines.load(config_file)
    name, version = config.name, decision["version"]
    detail = f"{decision['reason']}; serving {deployed['bentoml_model_tag']}"
    answer = approval_answer(context)
    previous = release.move_champion(
        mlflow_tracking.client(),
        operations_store.engine(),
        name,
        version,
        airflow_run(context),
        "gate",
        detail,
        answer=answer,
    )
    print(
        f"{name}: champion is now v{version} ({deployed['bentoml_model_tag']})"
        + (f", was v{previous}" if previous else "")
    )
    why = f"{decision['reason']}" + (f"; approved by {answer['by']}" if answer and answer.get("by") else "")
    why += f"; the champion was v{previous}" if previous else "; the first champion"
    notify.tell(config, "promoted", context, why=why, version=version)
    return {"version": version, "previous_version": previous}


def _write_model_card(client, config, decision, parity_tags: dict, context: Context) -> None:
    """The version's model card, from the challenger as the gate judged it on this run's test split. What it cost
    (reading the test split, loading the model, the card itself) is the challenger run's `model_card_seconds`."""
    import time

    from include.mlops import lakefs_repository, model_card, tracking

    began = time.perf_counter()
    data = context["ti"].xcom_pull(task_ids="resolve_training_data")
    repo = LakeFSHook().get_repository(data["repository"])
    manifest = json.loads(lakefs_repository.read_bytes(repo, data["commit"], data["manifest_path"]))
    test = lakefs_repository.read_parquet(repo, data["commit"], data["paths"]["test"])
    pipeline = tracking.load_sklearn_model(decision.challenger_model_uri)
    training_data = model_card.TrainingData.from_manifest(data["repository"], data["commit"], manifest)
    card = model_card.render(config, pipeline, test, training_data, decision, parity_tags)
    uri = model_card.store(client, config.name, decision.version, decision.challenger_run_id, card)
    seconds = time.perf_counter() - began
    client.log_metric(decision.challenger_run_id, "model_card_seconds", seconds)
    print(f"model card of v{decision.version} at {uri} ({seconds:.2f} s)")


def _challenger(config, decision: dict, context: Context):
    """The challenger register_challenger handed on (`decision`), trained by this run on its training snapshot."""
    from include.mlops.release import Release

    data = context["ti"].xcom_pull(task_ids="resolve_training_data")
    onnx_model_uri, trained_by = decision["onnx_model_uri"], decision["challenger_run_id"]
    return Release(config, decision["version"], onnx_model_uri, trained_by, data, context["run_id"])
