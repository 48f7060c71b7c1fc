"""The tasks of `batch_scoring__<model>`: score a window of rows with the champion, chunk by chunk, on a lakeFS
branch of the run's own, merge the input and its predictions into `main`, and check the scored rows for drift as
drift_monitor checks live traffic (mlops_airflow/drift_checks.py). Each calls into include/mlops/batch_scoring.py;
they pass references (the model's tag and SHA-256, paths, counts) through XCom, never data. The run's row in the
operations store's `batch_runs` is written when it merges (or finds no input) and completed by its drift check, or
marked failed by the teardown `record_failure`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, Context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.mlops.naming import batch_branch_name
from mlops_airflow import drift_checks, mlflow_tracking, operations_store, pipelines
from mlops_airflow.decorators import lakefs_task, mlflow_task, show_lakefs_commit
from mlops_airflow.lakefs_hook import LakeFSHook
from mlops_airflow.run_context import airflow_run_metadata, retry_marker, run_interval_end

if TYPE_CHECKING:
    from include.mlops.batch_input import Input


def predictions_asset(model: str) -> Asset:
    """What a batch run of `model` updates when it merges: downstream DAGs can be scheduled on it."""
    return Asset(name=f"batch_predictions__{model}", uri=f"mlops-predictions://{model}")


def input_prefix(model: str, key: str) -> str:
    """Where a run keeps the rows it scores, beside their predictions."""
    return f"batch_input/{model}/{key}/"


@task(multiple_outputs=False)
def resolve_model(config_file: str) -> dict[str, str]:
    """The champion, resolved once for the whole run: its version, store tag and the SHA-256 of its ONNX bytes.
    Without a champion the run is skipped, and nothing is written."""
    from include.mlops import batch_scoring
    from include.mlops.object_store import ObjectStore
    from mlops_airflow import mlflow_tracking

    config = pipelines.load(config_file)
    try:
        model = batch_scoring.resolve_model(mlflow_tracking.client(), ObjectStore.from_environment(), config)
    except batch_scoring.NoChampion as exc:
        raise AirflowSkipException(f"{exc}; nothing is scored or written") from None
    except (batch_scoring.ModelUnavailable, batch_scoring.ChecksumMismatch) as exc:
        raise AirflowFailException(str(exc)) from None
    print(f"scoring with {model.tag} (sha256 {model.sha256}), resolved at {model.resolved_at.isoformat()}")
    return model.to_dict()


@lakefs_task
def collect_input(config_file: str, model: dict[str, str], **context: Context) -> dict[str, Any]:
    """Commit the rows to score as Parquet on the run's branch, in files of `batch.chunk_rows` rows: the arrived
    file(s) of a run an arrival started (a file that is not there fails the run naming it), or else the Parquet and
    CSV objects under the lakeFS path of the run's param `input` or `batch.input` (at the commit its ref points to
    now; a repository or ref that does not exist, or an object of another kind, fails the run naming it), or else
    the window's rows from the batch source. No rows skips the run: the log says why, the run is recorded in
    `batch_runs` as `empty`, and nothing is merged."""
    from include.mlops import batch_input, batch_runs, batch_scoring, lakefs_repository

    config = pipelines.load(config_file)
    arrived = _arrived_files(config, context)
    lakefs_input = None if arrived else _lakefs_input(config, context)
    end = run_interval_end(context)
    windowed = not arrived and not lakefs_input
    start = end - dt.timedelta(hours=config.batch.window_hours) if windowed else end
    if arrived:
        read = _read_arrived(arrived)
    elif lakefs_input:
        read = _read_lakefs(lakefs_input)
    else:
        read = _read_window(config, start, end)
    key, what = read.key, read.what
    repo = LakeFSHook().get_repository()
    branch = batch_branch_name(config.name, context["run_id"])
    prefix = input_prefix(config.name, key)
    rows = 0
    # Each part is written as it is read: the task holds one part of the input, not all of it.
    for index, part in enumerate(batch_input.in_parts(read.pieces, config.batch.chunk_rows)):
        if index == 0:
            if not lakefs_repository.branch_exists(repo, branch):
                lakefs_repository.create_branch(repo, branch, "main")
            lakefs_repository.reset_uncommitted(repo, branch, prefix)  # what a try that died left
        lakefs_repository.write_parquet(repo, branch, batch_scoring.part_path(prefix, index), part)
        rows += len(part)
    if not rows:
        nothing = {"rows_scored": 0, "rows_quarantined": 0}
        row = _batch_run(config, model, context, key, batch_runs.EMPTY, repo.id, None, **nothing)
        batch_runs.record(operations_store.engine(), row)
        raise AirflowSkipException(f"no rows of {config.dataset.name} in {what}: nothing scored or merged")
    stamp = airflow_run_metadata(context)
    message = f"Batch input of {config.name}: {rows} row(s) of {what}"
    read_from = {"input_source": read.source} if read.source else {}
    committed = lakefs_repository.commit_once(repo, branch, message, stamp | read_from, retry_marker(stamp))
    commit = committed.id if committed else lakefs_repository.head_commit(repo, branch)
    show_lakefs_commit(repo.id, commit)
    print(f"{rows} row(s) of {what} to score with {model['tag']}")
    window = {"start": start.isoformat(), "end": end.isoformat()}
    return {
        "branch": branch,
        "key": key,
        "input_prefix": prefix,
        "rows": rows,
        "commit": commit,
        "source": read.source,
        **window,
    }


def _batch_run(config, model: dict[str, str], context: Context, key: str, state: str, repository: str, commit, **rows):
    """The run's row of `batch_runs` (its drift figures empty until its drift check)."""
    return {
        "model_name": config.name,
        "model_version": model["version"],
        "airflow_dag_id": context["dag_run"].dag_id,
        "airflow_run_id": context["run_id"],
        "key": key,
        "state": state,
        **rows,
        "lakefs_repository": repository,
        "lakefs_commit": commit,
        "drift_share": None,
        "live_score": None,
        "finished_at": dt.datetime.now(dt.UTC),
    }


def _arrived_files(config, context: Context) -> list[Path]:
    """The files the arrivals behind this run name (none for a run not started by an arrival), each checked to
    be there and for this model."""
    from include.mlops.batch_arrival import ArrivalError, require_file
    from mlops_airflow.batch_arrivals import arrivals_of_run

    run_type = context["dag_run"].run_type
    if not config.batch.arrivals or getattr(run_type, "value", run_type) != "asset_triggered":
        return []
    try:
        return [require_file(a, config.name) for a in arrivals_of_run(context["triggering_asset_events"], config.name)]
    except (ArrivalError, FileNotFoundError) as exc:
        raise AirflowFailException(str(exc)) from None


def _lakefs_input(config, context: Context) -> str | None:
    """The lakeFS path to score: the run's param `input` (a run started by hand may give one), else `batch.input`."""
    from include.mlops.naming import parse_lakefs_uri

    given = context["params"].get("input")
    if given:
        try:
            parse_lakefs_uri(given)
        except ValueError as exc:
            raise AirflowFailException(f"run param input: {exc}") from None
    return given or config.batch.input


def _read_arrived(paths: list[Path]) -> Input:
    """The rows of the arrived Parquet or CSV files, keyed by their content."""
    from include.mlops import batch_input

    try:
        return batch_input.read_files(paths)
    except batch_input.UnsupportedFiles as exc:
        raise AirflowFailException(str(exc)) from None


def _read_lakefs(uri: str) -> Input:
    """The rows of the Parquet and CSV objects under the lakeFS path `uri`, read at the commit its ref points to
    now, and keyed by that commit and the prefix."""
    from include.mlops import batch_input, lakefs_repository
    from include.mlops.naming import parse_lakefs_uri

    repository, ref, prefix = parse_lakefs_uri(uri)
    try:
        repo = lakefs_repository.existing_repository(LakeFSHook().get_conn(), repository)
        return batch_input.read_lakefs(repo, ref, prefix)
    except (lakefs_repository.RefNotFound, batch_input.UnsupportedFiles) as exc:
        # Neither comes right by retrying: the path is wrong, and nothing is written.
        raise AirflowFailException(f"batch input {uri}: {exc}") from None


def _read_window(config, start: dt.datetime, end: dt.datetime) -> Input:
    """The rows whose event time is in [start, end) (the `batch.window_hours` before the run's logical date), a
    piece at a time, keyed by that interval."""
    from include.mlops import batch_input, batch_scoring
    from mlops_airflow.sources import reader

    pieces = reader(config, end, config.batch.source)(start, end)
    interval = f"[{start.isoformat()}, {end.isoformat()})"
    return batch_input.read_window(pieces, batch_scoring.interval_key(start, end), interval)


@task
def plan_chunks(config_file: str, batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The input's chunks (row groups of its files, `batch.chunk_rows` rows at most), each for a task of its own,
    each knowing the ids an earlier chunk has (its rows with one of them are quarantined as duplicates)."""
    from include.mlops import batch_scoring

    config = pipelines.load(config_file)
    repo = LakeFSHook().get_repository()
    chunks = batch_scoring.plan_chunks(
        repo, batch["commit"], batch["input_prefix"], config.dataset.id_column, config.batch.chunk_rows
    )
    return [chunk.to_dict() for chunk in chunks]


@lakefs_task
def score_chunk(
    config_file: str, model: dict[str, str], batch: dict[str, Any], chunk: dict[str, Any], **context: Context
) -> dict[str, Any]:
    """Score one chunk with the run's model (its bytes loaded again by tag and SHA-256: the champion may have moved
    since); rows that do not fit the model's schema go to quarantine, with a report."""
    from include.mlops import batch_scoring
    from include.mlops.object_store import ObjectStore

    config = pipelines.load(config_file)
    try:
        scoring_model = batch_scoring.reload(ObjectStore.from_environment(), model)
    except batch_scoring.ChecksumMismatch as exc:
        raise AirflowFailException(str(exc)) from None
    repo = LakeFSHook().get_repository()
    prefix = batch_scoring.output_prefix(config, batch["key"])
    try:
        summary = batch_scoring.score_chunk(
            repo,
            batch["branch"],
            config,
            scoring_model,
            batch_scoring.Chunk.from_dict(chunk),
            prefix,
            context["run_id"],
            config.batch.on_invalid,
        )
    except batch_scoring.InvalidInput as exc:
        raise AirflowFailException(str(exc)) from None
    left_out = f"; {summary.rows_quarantined} quarantined: {summary.failed_checks}" if summary.rows_quarantined else ""
    print(f"chunk {summary.index}: {summary.rows_scored} of {summary.rows_in} row(s) into {summary.path}{left_out}")
    return summary.to_dict()


@lakefs_task
def merge_predictions(
    config_file: str, model: dict[str, str], batch: dict[str, Any], summaries: list[dict[str, Any]], **context: Context
) -> dict[str, Any]:
    """Commit the predictions on the run's branch with their lineage and merge the branch into `main`: a re-run of
    the same interval writes the same files, and `main` keeps one result. Downstream DAGs are told through the
    model's predictions asset (its event: model, version, rows, commit), and the run is recorded in `batch_runs`
    as `merged`."""
    from include.mlops import batch_runs, batch_scoring, lakefs_repository
    from include.mlops.object_store import ObjectStore

    config = pipelines.load(config_file)
    repo = LakeFSHook().get_repository()
    branch, prefix = batch["branch"], batch_scoring.output_prefix(config, batch["key"])
    chunks = [batch_scoring.ChunkSummary.from_dict(s) for s in summaries]
    batch_scoring.stale_outputs(repo, branch, prefix, len(chunks))
    scoring_model = batch_scoring.reload(ObjectStore.from_environment(), model)
    stamp = airflow_run_metadata(context)
    lineage = batch_scoring.commit_metadata(scoring_model, context["run_id"], batch["commit"], chunks, batch["source"])
    metadata = lineage | stamp
    message = f"Batch predictions of {config.name} v{scoring_model.version} for {batch['key']}"
    lakefs_repository.commit_once(repo, branch, message, metadata, retry_marker(stamp))
    try:
        merged = lakefs_repository.merge(repo, branch, "main", message, metadata)
    except lakefs_repository.NothingToCommit:  # a re-run of the interval, or a try that merged before it died
        merged = lakefs_repository.head_commit(repo, "main")
    show_lakefs_commit(repo.id, merged)
    event = {
        "model": config.name,
        "model_version": scoring_model.version,
        "rows_scored": metadata["rows_scored"],
        "rows_quarantined": metadata["rows_quarantined"],
        "lakefs_repository": repo.id,
        "lakefs_commit": merged,
        "predictions": prefix,
    }
    context["outlet_events"][predictions_asset(config.name)].extra = event
    figures = {name: int(metadata[name]) for name in ("rows_scored", "rows_quarantined")}
    row = _batch_run(config, model, context, batch["key"], batch_runs.MERGED, repo.id, merged, **figures)
    batch_runs.record(operations_store.engine(), row)
    print(f"{metadata['rows_scored']} prediction(s) of {config.name} v{scoring_model.version} merged as {merged}")
    return event


@task
def write_outputs(config_file: str, batch: dict[str, Any], merged: dict[str, Any]) -> list[dict[str, Any]]:
    """Copy the predictions, as the merge commit on `main` holds them, into each of `batch.outputs`: SQL tables
    through their Airflow connections, S3 prefixes. A re-run of the interval (or file) replaces its rows and parts
    there. An output that fails fails the task naming it (table and database, or URL and endpoint), once the
    others are written; a retry writes them all again."""
    from dataclasses import asdict

    import sqlalchemy as sa

    from include.mlops import batch_outputs
    from mlops_airflow.sources import sqlalchemy_url

    config = pipelines.load(config_file)
    repo = LakeFSHook().get_repository()
    written = batch_outputs.write_outputs(
        repo,
        merged["lakefs_commit"],
        merged["predictions"],
        batch["key"],
        config,
        lambda connection_id: sa.create_engine(sqlalchemy_url(connection_id)),
    )
    for output in written:
        rows = f", {output.rows} row(s)" if output.rows is not None else ""
        print(f"{output.output}: {output.parts} part(s){rows} of {batch['key']}")
    return [asdict(output) for output in written]


@mlflow_task
def check_drift(
    config_file: str, model: dict[str, str], batch: dict[str, Any], merged: dict[str, Any], **context: Context
) -> dict[str, Any]:
    """The merged rows (the input's features and their predictions) against the reference sample of the version
    that scored them, as drift_monitor checks live traffic: drift per feature and of the predictions, with a
    verdict from `drift.min_rows` rows on, and the live score on the rows with labels: the input's own when it
    has them, else the config's source's (the `drift.label_lookback_hours` before the batch's end, read now). The
    report and figures (`batch.<figure>`) go to the version's monitoring run in MLflow. A version without a
    reference sample skips the check, saying so."""
    from include.mlops import batch_scoring, monitoring
    from mlops_airflow.sources import labels as source_labels

    config = pipelines.load(config_file)
    client = mlflow_tracking.client()
    try:
        version, reference = drift_checks.version_and_reference(client, config, model["version"])
    except drift_checks.NoReference as exc:
        # The predictions are merged: the batch is scored, only not watched (drift_monitor fails on this).
        raise AirflowSkipException(f"{exc}; the batch is not checked for drift") from None
    repo = LakeFSHook().get_repository()
    at = merged["lakefs_commit"]
    inputs, scored = batch_scoring.read_scored(
        repo,
        at,
        batch["input_prefix"],
        merged["predictions"],
        config.dataset.id_column,
        config.batch.check_rows,
        config.model.random_seed,
    )
    current = batch_scoring.as_traffic(config, inputs, scored)
    end = dt.datetime.fromisoformat(batch["end"])
    labels = batch_scoring.labels_of(config, inputs)
    if labels is None:
        lookback = dt.timedelta(hours=config.drift.label_lookback_hours)
        labels = source_labels(config, dt.datetime.now(dt.UTC), end - lookback, end)
    drawn = f"{len(current)} of {merged['rows_scored']} scored row(s) of v{version.version}"
    print(f"{drawn} (batch.check_rows: {config.batch.check_rows}), {merged['rows_quarantined']} quarantined left out")
    report_path = f"drift_reports/batch/{batch['key']}.html"
    quarantined = int(merged["rows_quarantined"])
    check = drift_checks.judge(
        config, client, version, reference, current, quarantined, labels, end, report_path, monitoring.BATCH
    )
    return {"start": batch["start"], "end": batch["end"], **check}


@task.short_circuit(multiple_outputs=False)
def decide_retraining(config_file: str, check: dict[str, Any], **context: Context) -> dict[str, Any] | None:
    """Retrain or not, as drift_monitor decides, under the same cool-down (a check, online or batch, that asked
    to retrain starts it); the check goes to the drift history (source `batch`) and its drift share and live
    score to the run's `batch_runs` row. Returns the conf of the training run to trigger, or nothing (which skips
    the trigger)."""
    from include.mlops import batch_runs, monitoring

    config = pipelines.load(config_file)
    batch_runs.record_drift(
        operations_store.engine(), config.name, context["run_id"], check["drift_share"], check["live_score"]
    )
    return drift_checks.decide_and_record(config, check, monitoring.BATCH, context)


@task
def record_failure(config_file: str, **context: Context) -> None:
    """The DAG's teardown: when a task of the run failed, the run's row in `batch_runs` says `failed`, with what
    the run knew (`record_failed`). It runs once every other task is done: a task waiting to be retried is not, so
    a failure that a retry mends records nothing. Without a failure it skips."""
    ti: Any = context["ti"]
    if not ti.get_ti_count(dag_id=ti.dag_id, run_ids=[ti.run_id], states=["failed", "upstream_failed"]):
        raise AirflowSkipException("no task of this run failed: nothing to record")
    record_failed(pipelines.load(config_file), ti.dag_id, ti.run_id, ti)


def on_run_failed(config):
    """A DAG's on_failure_callback: the run's row in `batch_runs` says `failed` (`record_failed`) also when the
    teardown `record_failure` did not run: a run past `batch.timeout_hours` is failed by the scheduler, which skips
    every task left, the teardown too. It runs where Airflow runs DAG callbacks (the dag-processor)."""

    def callback(context: Context) -> None:
        record_failed(config, context["dag"].dag_id, context["run_id"], context.get("ti"))

    return callback


def record_failed(config, dag_id: str, run_id: str, ti: Any) -> None:
    """Mark the run failed in `batch_runs`, with what it knew: the version resolve_model resolved and the key
    collect_input read, through the XComs of `ti` (a task instance of the run, when there is one), when it got
    that far; a run that merged before failing keeps its rows and commit. Written twice (the teardown, then the
    callback), the row is the same but for its finish time, the later one."""
    from include.mlops import batch_runs

    def pushed(task_id: str) -> dict[str, Any]:
        return (ti.xcom_pull(task_ids=task_id) if ti is not None else None) or {}

    version, key = pushed("resolve_model").get("version"), pushed("collect_input").get("key")
    engine, repository = operations_store.engine(), LakeFSHook().repository_name
    batch_runs.record_failed(engine, config.name, dag_id, run_id, version, key, repository, dt.datetime.now(dt.UTC))
    print(f"run {run_id} of {config.name} recorded as failed (version {version or 'unresolved'}, key {key})")
