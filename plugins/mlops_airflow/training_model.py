"""The tasks of `ml_training`'s model half: training data, MLflow runs, candidates, the gate, promotion.

Each is a thin call into include/mlops. They pass references (commit ids, run ids, versions) through XCom.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from include.mlops.naming import run_branch_name
from mlops_airflow import mlflow_tracking, pipelines
from mlops_airflow.approval import ANSWER_KEY, APPROVAL_TASK
from mlops_airflow.decorators import lakefs_task, mlflow_task, show_lakefs_commit, show_mlflow_run, show_service_docs
from mlops_airflow.lakefs_hook import LakeFSHook
from mlops_airflow.run_context import airflow_run_metadata, retry_marker

if TYPE_CHECKING:
    from include.mlops.alias_history import Cause  # imports pandas: not at parse time


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


def training_snapshot(repo, requested: str, named_by: str) -> dict:
    """The training snapshot committed as `requested` in `repo` (its manifest's paths and figures); the
    "lakeFS" button points at it. `named_by` says where the commit id came from, for the errors."""
    from include.mlops import versioning

    try:
        commit = versioning.get_commit(repo, requested)
    except versioning.RefNotFound as missing:
        raise AirflowFailException(f"{named_by} {requested!r}: {missing}") from None
    manifest_path = commit.metadata.get("manifest")
    if not manifest_path:
        raise AirflowFailException(
            f"commit {commit.id} of {repo.id!r} ({named_by}) is not a training snapshot (its metadata has no "
            "'manifest'); use the lakefs_commit tag of an earlier MLflow training run"
        )
    manifest = json.loads(versioning.read_bytes(repo, commit.id, manifest_path))
    show_lakefs_commit(repo.id, commit.id)
    return {
        "repository": repo.id,
        "commit": commit.id,
        "manifest_path": manifest_path,
        "paths": manifest["paths"],
        "source_commit": manifest["source_commit"],
        "rows": manifest["rows"],
    }


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
    from include.mlops import tracking, training, versioning
    from include.mlops.lineage import lakefs_uri

    config = pipelines.load(config_file)
    client = mlflow_tracking.client()
    spec = training.CandidateSpec(**candidate)
    repo = LakeFSHook().get_repository(data["repository"])
    splits = {name: versioning.read_parquet(repo, data["commit"], path) for name, path in data["paths"].items()}
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
    from include.mlops import registry, tracking, versioning

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
    test = versioning.read_parquet(repo, data["commit"], data["paths"]["test"])
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
    from include.mlops import packaging, tracking, versioning

    ti = get_current_context()["ti"]
    data = ti.xcom_pull(task_ids="resolve_training_data")
    training_run = ti.xcom_pull(task_ids="start_training_run")
    config = pipelines.load(config_file)
    mlflow_tracking.client()
    pipeline = tracking.load_sklearn_model(decision["challenger_model_uri"])
    repo = LakeFSHook().get_repository(data["repository"])
    test = versioning.read_parquet(repo, data["commit"], data["paths"]["test"])
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
def register_challenger(config_file: str, decision: dict, package: dict) -> dict:
    """Register the challenger as a new version with alias `challenger`, carrying the gate decision, its
    lineage and the parity figures as tags (once per run: a retry finds the version)."""
    from include.mlops import registry

    ti = get_current_context()["ti"]
    training_run = ti.xcom_pull(task_ids="start_training_run")
    config = pipelines.load(config_file)
    client = mlflow_tracking.client()
    tags = {**training_run["tags"], **package["parity_tags"], "onnx_model_uri": package["onnx_model_uri"]}
    gate = registry.GateDecision(**decision)
    before = registry.version_by_alias(client, config.name, registry.CHALLENGER)
    version = registry.register_challenger(client, config, gate, tags)
    client.set_tag(training_run["run_id"], "challenger_version", version)
    record_alias_move(config.name, registry.CHALLENGER, before, version, gate.summary())
    print(f"{config.model.registered_name} v{version} registered with alias challenger")
    return {**decision, "version": version, "onnx_model_uri": package["onnx_model_uri"]}


def record_alias_move(
    model: str,
    alias: str,
    before: Any,
    version: str,
    detail: str,
    cause: Cause = "gate",
    actor: str | None = None,
    kept: bool = False,
) -> None:
    """Append the move of `alias` (from `before`, the version MLflow had, to `version`) by this run to the alias
    history: made by `actor` (a person), or by the run itself. `kept`: the alias stayed where it is (a rolled
    back rollout), recorded from and to that version."""
    from include.mlops import alias_history
    from mlops_airflow.monitoring import inference_log_engine

    context = get_current_context()
    engine = inference_log_engine()
    current = None if before is None else str(before.version)
    origin = current if kept else alias_history.moved_from(engine, model, alias, current, version)
    dag_run: Any = context["dag_run"]
    move = alias_history.AliasMove(
        model_name=model,
        alias=alias,
        from_version=origin,
        to_version=version,
        cause=cause,
        # What started the run: its `reason` param, or its run type (a rollback run has no reason).
        trigger=str(context["params"].get("reason") or getattr(dag_run.run_type, "value", dag_run.run_type)),
        actor=actor or f"Airflow run {context['run_id']}",
        airflow_dag_id=context["dag"].dag_id,
        airflow_run_id=context["run_id"],
        detail=detail,
    )
    if alias_history.record_move(engine, move):
        print(f"alias history: {model} {alias} v{origin or '-'} -> v{version}")


@task.branch
def choose_outcome(decision: dict, params: dict) -> str:
    if decision["promote"] and params.get("promote", True):
        return "go_live"
    return "record_rejection"


SMOKE_TEST_ROWS = 200


@mlflow_task
def deploy_model(config_file: str, decision: dict) -> dict:
    """Roll the challenger out to the running service: into the BentoML model store with its lineage, built
    into a Bento (tag recorded on the model version), switched to without downtime, and smoke-tested (ready,
    then predictions on test rows equal to the offline ONNX ones). On any failure the previous model is put
    back and the task fails; `champion` moves only after this task succeeds."""
    ti = get_current_context()["ti"]
    data = ti.xcom_pull(task_ids="resolve_training_data")
    config = pipelines.load(config_file)
    return deploy(
        config, decision["version"], decision["onnx_model_uri"], decision["challenger_run_id"], data, ti.run_id
    )


def deploy(config, version: str, onnx_model_uri: str, mlflow_run_id: str, data: dict, airflow_run_id: str) -> dict:
    """Deploy `version` of the config's model: into the BentoML model store with its lineage (the MLflow run that
    trained it, the training snapshot `data`, the Airflow run that trained it), built into a Bento, rolled out
    to the service and smoke-tested on the snapshot's test rows; the previous model is put back on failure."""
    from include.mlops import deployment, versioning
    from mlops_airflow import serving

    tag, bento, onnx_bytes = publish(config, version, onnx_model_uri, mlflow_run_id, data, airflow_run_id)
    repo = LakeFSHook().get_repository(data["repository"])
    rows = versioning.read_parquet(repo, data["commit"], data["paths"]["test"]).head(SMOKE_TEST_ROWS)
    expected = deployment.offline_predictions(onnx_bytes, config, rows)
    service = serving.endpoint(config.name)
    try:
        previous = deployment.roll_out(service, tag, deployment.records_of(rows, config.dataset), expected)
    except deployment.ServiceUnreachable:
        raise  # nothing was changed: the task's retries may find the service up again
    except deployment.DeploymentError as failure:
        raise AirflowFailException(str(failure)) from None
    show_service_docs(serving.docs_url())
    print(f"{tag} serves at {service.url}; smoke test passed on {len(rows)} rows")
    return {"bentoml_model_tag": tag, "bento_tag": bento, "previous_tag": previous}


def publish(
    config, version: str, onnx_model_uri: str, mlflow_run_id: str, data: dict, airflow_run_id: str
) -> tuple[str, str, bytes]:
    """Put `version` into the BentoML model store with its lineage and build it into a Bento, both named on the
    model version, and publish it to the object store when one is configured (MLOPS_MODEL_STORE_URL: the
    service's replicas pull it from there); returns the model store tag, the Bento tag and the ONNX model. An
    unreachable object store fails the task before the service is asked to switch: the champion stays."""
    from include.mlops import deployment, object_store, tracking
    from include.mlops.lineage import PROJECT_ROOT

    client = mlflow_tracking.client()
    name = config.model.registered_name
    onnx_bytes = tracking.load_onnx(onnx_model_uri)
    lineage = {
        "mlflow_model_name": name,
        "mlflow_model_version": version,
        "mlflow_run_id": mlflow_run_id,
        "lakefs_repository": data["repository"],
        "lakefs_commit": data["commit"],
        "airflow_run_id": airflow_run_id,
    }
    tag = deployment.save_to_model_store(onnx_bytes, config, version, lineage)
    bento = deployment.build_bento(tag, PROJECT_ROOT / "include" / "serving" / "bentofile.yaml", PROJECT_ROOT, lineage)
    if store := object_store.ObjectStore.from_environment():
        published = object_store.publish(store, tag, onnx_bytes, lineage)
        client.set_model_version_tag(name, version, "model_object", f"s3://{store.bucket}/{published.key}")
        print(f"{tag} is published as s3://{store.bucket}/{published.key} ({published.size} bytes)")
    client.set_model_version_tag(name, version, "bentoml_model_tag", tag)
    client.set_model_version_tag(name, version, "bento_tag", bento)
    print(f"{tag} is in the BentoML model store; Bento {bento}")
    return tag, bento, onnx_bytes


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
    """Load the challenger beside the champion on the running service as a shadow or canary (config
    `rollout`), after what deploy_model does before its switch (model store, Bento). Refused, with the champion
    untouched, when a rollout of the model is on already or the challenger does not load. model_rollout__<model>
    judges it from here on."""
    import datetime as dt

    from include.mlops import deployment, registry, rollouts
    from mlops_airflow import serving
    from mlops_airflow.monitoring import inference_log_engine

    ti = context["ti"]
    config = pipelines.load(config_file)
    name, version, mode = config.name, decision["version"], config.rollout.mode
    engine = inference_log_engine()
    service = serving.endpoint(name)
    client = mlflow_tracking.client()
    champion = registry.version_by_alias(client, name, registry.CHAMPION)
    recorded = rollouts.running(engine, name)
    if recorded is not None and recorded["airflow_run_id"] != ti.run_id:
        raise AirflowFailException(
            f"rollout refused: a {recorded['mode']} rollout of {name} v{recorded['challenger_version']} is on since "
            f"{recorded['started_at']:%Y-%m-%d %H:%M} UTC (run {recorded['airflow_run_id']}); one per model at a time"
        )
    data = ti.xcom_pull(task_ids="resolve_training_data")
    tag, bento, _ = publish(config, version, decision["onnx_model_uri"], decision["challenger_run_id"], data, ti.run_id)
    on_trial = service.rollout()
    if on_trial is None or on_trial["tag"] != tag:  # a retry finds its own rollout on
        try:
            on_trial = service.start_rollout(tag, mode, config.rollout.canary_share)
        except deployment.ServiceUnreachable:
            raise
        except deployment.DeploymentError as refused:
            raise AirflowFailException(f"rollout refused, champion untouched: {refused}") from None
    started_at = dt.datetime.fromisoformat(on_trial["started_at"])
    rollout_id = rollouts.record_start(
        engine,
        {
            "model_name": name,
            "challenger_version": version,
            "champion_version": champion.version if champion else "",
            "mode": mode,
            "share": on_trial["share"],
            "started_at": started_at,
            "airflow_dag_id": ti.dag_id,
            "airflow_run_id": ti.run_id,
        },
    )
    client.set_model_version_tag(name, version, "rollout", f"{mode} from {on_trial['started_at']}")
    show_service_docs(serving.docs_url())
    share = f" ({on_trial['share']:.0%} of requests)" if mode == "canary" else ""
    print(f"{tag}: {mode} rollout{share} beside v{champion.version if champion else '-'} since {started_at}")
    return {"bentoml_model_tag": tag, "bento_tag": bento, "rollout_id": rollout_id, "mode": mode}


# After deploy_model or start_rollout, whichever ran; skipped with both (a rejected challenger). The decision is
# read from XCom, not passed in: as an argument it would make register_challenger an upstream task, whose
# success alone would then run this task for a rejected challenger.
@lakefs_task(trigger_rule="none_failed_min_one_success")
def store_reference(config_file: str, **context: Context) -> dict:
    """Keep what drift_monitor compares live traffic with: a sample of the training split (`drift.reference_rows`
    rows) and the deployed model's predictions on it, committed on the run branch as
    `reference/<model>/<run>/reference.parquet` (merged into `main` with the snapshot) and named on the model
    version (tag `drift_reference`), so that an hourly check never rescans the training data."""
    from include.mlops import deployment, monitoring, tracking, versioning
    from include.mlops.lineage import lakefs_uri
    from include.mlops.naming import run_key

    ti = context["ti"]
    data = ti.xcom_pull(task_ids="resolve_training_data")
    decision = ti.xcom_pull(task_ids="register_challenger")
    config = pipelines.load(config_file)
    # Points MLflow's fluent API (which load_onnx uses) at the server: in a worker, nothing else has.
    client = mlflow_tracking.client()
    name, version = config.model.registered_name, decision["version"]
    repo = LakeFSHook().get_repository(data["repository"])
    sample = monitoring.sample_reference(versioning.read_parquet(repo, data["commit"], data["paths"]["train"]), config)
    predictions = deployment.offline_predictions(tracking.load_onnx(decision["onnx_model_uri"]), config, sample)
    reference = monitoring.with_predictions(sample, predictions, config.dataset)

    branch = run_branch_name(name, ti.run_id)
    path = f"reference/{name}/{run_key(ti.run_id)}/reference.parquet"
    stamp = airflow_run_metadata(context)
    versioning.write_parquet(repo, branch, path, reference)
    metadata = {**stamp, "model_version": version, "rows": len(reference), "training_snapshot": data["commit"]}
    commit = versioning.commit_once(
        repo, branch, f"Drift reference of {name} v{version}", metadata, retry_marker(stamp)
    )
    if commit is None:
        raise AirflowFailException(f"lakeFS {repo.id}: {path} was not written on branch {branch!r}")
    uri = lakefs_uri(repo.id, commit.id, path)
    client.set_model_version_tag(name, version, "drift_reference", uri)
    show_lakefs_commit(repo.id, commit.id)
    print(f"drift reference of v{version}: {len(reference)} rows at {uri}")
    return {"commit": commit.id, "path": path, "uri": uri, "rows": len(reference)}


@mlflow_task
def promote_champion(config_file: str, decision: dict, deployed: dict) -> dict:
    """Move `champion` to the deployed version (the old one keeps `previous-champion`)."""
    from include.mlops import registry

    context = get_current_context()
    name = pipelines.load(config_file).name
    client = mlflow_tracking.client()
    before = registry.version_by_alias(client, name, registry.CHAMPION)
    previous = registry.promote(client, name, decision["version"])
    detail = f"{decision['reason']}; serving {deployed['bentoml_model_tag']}"
    answer = context["ti"].xcom_pull(task_ids=APPROVAL_TASK, key=ANSWER_KEY) if _asks_approval(context) else None
    if answer and answer["approved"]:
        detail = f"approved by {answer['by']} at {answer['at']}; {detail}"
        record_alias_move(name, registry.CHAMPION, before, decision["version"], detail, "approval", answer["by"])
    else:
        record_alias_move(name, registry.CHAMPION, before, decision["version"], detail)
    print(
        f"{name}: champion is now v{decision['version']} ({deployed['bentoml_model_tag']})"
        + (f", was v{previous}" if previous else "")
    )
    return {"version": decision["version"], "previous_version": previous}


def _asks_approval(context: Context) -> bool:
    return APPROVAL_TASK in context["dag"].task_ids
