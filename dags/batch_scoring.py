"""
### batch_scoring__&lt;model&gt;

Scores a window of rows, or an arrived file, with the model's champion and keeps the predictions in lakeFS beside
their input, for each config with a `batch:` section: on its `batch.schedule`, when a file arrives
(`batch.arrivals`: a message on the Redis channel `mlops.batch-arrivals.<model>` names it), or when triggered.

1. **resolve_model**: `champion`, asked of the MLflow registry once for the whole run: its version, store tag and
   the SHA-256 of the ONNX model the service serves. Without a champion the run is skipped and writes nothing.
2. **collect_input**: the rows of the arrived file(s) (a run started by an arrival; a file that is not there
   fails the run naming it), or else of the Parquet and CSV objects under a lakeFS path (the run's param `input`,
   or `batch.input`: `lakefs://<repository>/<ref>/<prefix>`, read at the commit the ref points to), or else those
   whose event time is in the `batch.window_hours` before the run's logical date, from `batch.source` (default:
   the config's source), committed as Parquet files (each written as it is read) on the run's branch
   `run-<model>-batch-<run>` under `batch_input/<model>/<key>/` (the interval, the files' content hash, or the
   lakeFS commit and prefix). An empty input skips the run.
3. **plan_chunks**: the input's chunks of at most `batch.chunk_rows` rows, each told the ids an earlier chunk has
   (its rows with one of them are quarantined as duplicates, as a repeated id within the chunk is).
4. **score_chunk** (one task per chunk): the model's bytes loaded again by tag and SHA-256 (a champion that moves
   during the run does not mix versions); rows that do not fit the model's schema go to quarantine with a
   report, and the chunk's other rows are scored (`batch.on_invalid: quarantine`) or the run fails naming them
   (`fail`). Predictions go to `predictions/<model>/<key>/part-<chunk>.parquet`: the id, `prediction`,
   `probability_<class>` for a classifier, `model_version`, `airflow_run_id`, `scored_at`.
5. **merge_predictions**: a commit with the lineage (model, version, SHA-256, its MLflow run and training data,
   the input commit, the rows) merged into `main`. A re-run of the same interval (or file) writes the same files:
   `main` holds one result. It updates the asset `batch_predictions__<model>` (event: model, version, rows, commit),
   which downstream DAGs can be scheduled on. The run is recorded in the operations store's `batch_runs` (with
   an empty input too, as `empty`), which the MLOps page lists.
6. **write_outputs** (with `batch.outputs` only): the merged predictions copied into SQL tables (through Airflow
   connections) and S3 prefixes; a re-run of the interval replaces its rows and parts there too. lakeFS stays the
   record: a failed output fails this task, naming it, after the merge.
7. **check_drift**: the merged rows against the reference sample of the version that scored them, as
   `drift_monitor__<model>` checks live traffic: Evidently's drift per feature and of the predictions (a verdict
   from `drift.min_rows` rows on), and the live score where the input, or else the config's source, has labels.
   The report and the figures (`batch.<figure>`) go to the version's monitoring run in MLflow. A version without
   a reference sample skips the check (the batch is scored, only not watched).
8. **decide_retraining**: as drift_monitor decides, under the same cool-down (a retraining asked by either
   source starts it); the check goes to the drift history with source `batch`.
9. **trigger_ml_training** starts `ml_training__<model>` (run id `batch_drift__<this run id>`) when it was
   decided.
10. **record_failure** (a teardown, once every other task is done): when a task failed, the run's `batch_runs`
   row says `failed`, with the version and key when the run got that far; otherwise it skips. A run still going
   after `batch.timeout_hours` is failed by the scheduler, which skips every task left: the DAG's failure
   callback records that one.

Buttons on check_drift: **Drift report** and **MLflow run**.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag

from include.mlops.naming import batch_scoring_dag_id
from mlops_airflow import notify, pipelines
from mlops_airflow.batch_arrivals import arrival_asset
from mlops_airflow.batch_scoring import (
    check_drift,
    collect_input,
    decide_retraining,
    merge_predictions,
    on_run_failed,
    plan_chunks,
    predictions_asset,
    record_failure,
    resolve_model,
    score_chunk,
    write_outputs,
)
from mlops_airflow.drift_checks import trigger_retraining


def schedule(config):
    """`batch.schedule`, and each arrival announced on the model's channel with `batch.arrivals`."""
    batch, timetable = config.batch, None
    if batch.schedule:
        # As ml_training's (no start date either): a newly deployed (or unpaused) DAG waits for the next time
        # instead of running at once for the last one.
        timetable = CronTriggerTimetable(batch.schedule, timezone="UTC", run_immediately=dt.timedelta(0))
    if not batch.arrivals:
        return timetable
    arrivals = [arrival_asset(config.name)]
    return AssetOrTimeSchedule(assets=arrivals, timetable=timetable) if timetable else arrivals


def batch_scoring(config) -> None:
    """The batch scoring DAG of one pipeline config."""
    model, config_file = config.name, config.path

    @dag(
        dag_id=batch_scoring_dag_id(model),
        schedule=schedule(config),
        catchup=False,
        max_active_runs=1,
        doc_md=f"{__doc__}\n**This DAG**: model `{model}`, dataset `{config.dataset.name}`, config `{config_file}`.",
        tags=["ml", "batch", "scoring", model],
        default_args={"owner": "mlops", "retries": 2, "retry_delay": dt.timedelta(seconds=30)},
        dagrun_timeout=dt.timedelta(hours=config.batch.timeout_hours),
        on_failure_callback=[notify.on_run_failed(config), on_run_failed(config)],
        params={
            "input": Param(
                None,
                type=["null", "string"],
                pattern=r"^lakefs://[^/]+/[^/]+(/|$)",
                description="Score this lakeFS path instead (lakefs://<repository>/<ref>/<prefix>: its Parquet and "
                "CSV objects at the ref's commit); none: `batch.input`, or else the window.",
            ),
        },
    )
    def scoring():
        champion = resolve_model(config_file)
        batch = collect_input(config_file, champion)
        chunks = plan_chunks(config_file, batch)
        scored = score_chunk.partial(config_file=config_file, model=champion, batch=batch).expand(chunk=chunks)
        merged = merge_predictions.override(outlets=[predictions_asset(model)])(config_file, champion, batch, scored)
        retraining_conf = decide_retraining(config_file, check_drift(config_file, champion, batch, merged))
        trigger = trigger_retraining(model, retraining_conf, "batch_drift")
        retraining_conf >> trigger
        outputs = [write_outputs(config_file, batch, merged)] if config.batch.outputs else []
        [trigger, *outputs] >> record_failure(config_file).as_teardown()

    scoring()


for pipeline_config in pipelines.to_build(batch_scoring_dag_id):
    if pipeline_config.batch is not None:
        batch_scoring(pipeline_config)
