"""The tasks of `drift_monitor`: wait for a window of live traffic, measure drift, decide on retraining.

The inference log and the drift history are tables of the operations store (include/mlops/operations_store.py),
the database behind connection `inference_log_db` (the one the model service writes its predictions to).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Context, PokeReturnValue, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.mlops.naming import training_dag_id
from mlops_airflow import mlflow_tracking, operations_store, pipelines
from mlops_airflow.decorators import mlflow_task, show_drift_report, show_mlflow_run
from mlops_airflow.lakefs_hook import LakeFSHook
from mlops_airflow.run_context import run_interval_end
from mlops_airflow.sources import fetcher

# The window has closed when its run starts; the service writes its log a few seconds behind. After this much
# time past the window's end, too few rows is the verdict ("too few rows"), not a reason to wait. Kept short:
# drift_monitor runs one at a time, so a waiting sensor holds back the next check (a manual one too).
LATE_ROWS_GRACE = dt.timedelta(minutes=1)


def _window(context: Context, hours: int) -> tuple[dt.datetime, dt.datetime]:
    end = run_interval_end(context)
    return end - dt.timedelta(hours=hours), end


def _history_row(context: Context, config, window: dict, **figures) -> dict:
    return {
        "airflow_run_id": context["run_id"],
        "model_name": config.model.registered_name,
        "window_start": dt.datetime.fromisoformat(window["start"]),
        "window_end": dt.datetime.fromisoformat(window["end"]),
        **figures,
    }


@task.sensor(mode="reschedule", poke_interval=60, timeout=3600, soft_fail=True)
def wait_for_traffic(config_file: str, **context: Context) -> PokeReturnValue:
    """Wait until the run's window (`drift.window_hours` up to the end of its interval) holds `drift.min_rows`
    logged predictions of the model. Once the window is over (with a grace for late writes) and they are not
    there, the run ends here, skipped with "too few rows" in the drift history: no verdict on too little
    traffic."""
    from include.mlops import monitoring

    config = pipelines.load(config_file)
    start, end = _window(context, config.drift.window_hours)
    engine = operations_store.engine()
    rows = monitoring.count_logged(engine, config.name, start, end)
    window = {"start": start.isoformat(), "end": end.isoformat(), "rows": rows}
    needed = config.drift.min_rows
    print(f"{rows} predictions logged in [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) UTC; {needed} needed")
    if rows >= needed:
        return PokeReturnValue(is_done=True, xcom_value=window)
    if dt.datetime.now(dt.UTC) < end + LATE_ROWS_GRACE:
        return PokeReturnValue(is_done=False)
    decision = monitoring.decide(config, monitoring.DriftCheck(rows=rows, drift_share=None), end, None, False)
    row = _history_row(context, config, window, rows=rows, malformed_rows=0, labelled_rows=0)
    monitoring.record_check(engine, {**row, "retrain": False, "reason": decision.reason})
    raise AirflowSkipException(decision.reason)


def _champion_and_reference(client, config):
    """The champion's model version and its reference sample (its `drift_reference` tag names it in lakeFS)."""
    from include.mlops import lakefs_repository, registry
    from include.mlops.lineage import parse_lakefs_uri

    name = config.model.registered_name
    champion = registry.version_by_alias(client, name, registry.CHAMPION)
    if champion is None:
        raise AirflowSkipException(f"{name} has no champion yet: nothing is served, nothing to watch")
    if "drift_reference" not in champion.tags:
        raise AirflowFailException(
            f"{name} v{champion.version} has no tag drift_reference (it was promoted without a reference sample); "
            "retrain to promote a model with one"
        )
    repository, ref, path = parse_lakefs_uri(champion.tags["drift_reference"])
    return champion, lakefs_repository.read_parquet(LakeFSHook().get_repository(repository), ref, path)


@mlflow_task
def check_drift(config_file: str, window: dict, **context: Context) -> dict:
    """Compare the window's live traffic with the champion's reference: data drift per feature and the share of
    drifted features, drift of the predictions, and (for rows whose labels have arrived in the source) the live
    score against the champion's test score. The report goes to the champion's monitoring run in MLflow (one
    step per check) behind the "Drift report" button."""
    from include.mlops import monitoring, tracking

    config = pipelines.load(config_file)
    name, metric = config.name, config.model.primary_metric
    client = mlflow_tracking.client()
    champion, reference = _champion_and_reference(client, config)

    start, end = dt.datetime.fromisoformat(window["start"]), dt.datetime.fromisoformat(window["end"])
    live = monitoring.read_live_window(operations_store.engine(), name, start, end, config.dataset)
    print(f"{len(live.frame)} predictions read, {live.malformed} malformed left out")
    for problem in live.problems:
        print(f"  malformed: {problem}")
    current = live.frame[live.frame["model_version"] == champion.version]
    if len(current) < len(live.frame):
        print(f"{len(live.frame) - len(current)} predictions of other model versions than v{champion.version} left out")

    report = None
    if len(current) >= config.drift.min_rows:
        report = monitoring.measure_drift(reference, current, config.dataset)
        for column in (*report.features, report.prediction):
            if column is not None:
                verdict = "DRIFTED" if column.drifted else "stable"
                print(f"  {column.column}: {column.method} {column.score:.4f} (threshold {column.threshold}) {verdict}")
    lookback = dt.timedelta(hours=config.drift.label_lookback_hours)
    performance = monitoring.live_performance(config, current, fetcher(config, as_of=end)(end - lookback, end).rows)
    # The champion's test score, as the gate measured it when it was promoted.
    tested = champion.tags.get("gate_metric") == metric
    champion_score = float(champion.tags["gate_challenger_score"]) if tested else None
    if performance.score is None:
        print(f"no live {metric}: {performance.note}")
    else:
        labelled = performance.labelled_rows
        print(f"live {metric} {performance.score:.4f} on {labelled} labelled rows; champion: {champion_score}")

    experiment = tracking.experiment_id(client, name)
    run_id = tracking.monitoring_run(client, experiment, name, champion.version)
    run_url = tracking.run_url(mlflow_tracking.ui_url(), experiment, run_id)
    figures = monitoring.check_figures(config, len(current), live.malformed, report, performance)
    # One step per hour of window end, so that a retried check lands on its own step.
    step = int(end.timestamp() // 3600)
    artifact = None if report is None else f"drift_reports/{end:%Y%m%dT%H%M}.html"
    tracking.log_drift_check(client, run_id, step, figures, None if report is None else report.html, artifact)
    if artifact is not None:
        show_drift_report(f"{run_url}/artifacts/{artifact}")
    show_mlflow_run(run_url)
    return {
        **window,
        "model_version": champion.version,
        "rows": len(current),
        "malformed_rows": live.malformed,
        "drift_share": None if report is None else report.drift_share,
        "drifted_columns": [] if report is None else list(report.drifted_columns),
        "prediction_drift_score": None if report is None or report.prediction is None else report.prediction.score,
        "labelled_rows": performance.labelled_rows,
        "live_score": performance.score,
        "champion_score": champion_score,
        "report_uri": None if artifact is None else f"runs:/{run_id}/{artifact}",
    }


@task.short_circuit(multiple_outputs=False)
def decide_retraining(config_file: str, check: dict, **context: Context) -> dict | None:
    """Retrain or not, and why (the task log and the drift history say): drift share or performance drop, on
    enough rows, outside the cool-down after the model's last drift-triggered run, with no run of its training
    DAG running or queued. Returns the conf of the training run to trigger, or nothing (which skips the
    trigger)."""
    from include.mlops import monitoring

    config = pipelines.load(config_file)
    engine = operations_store.engine()
    end = dt.datetime.fromisoformat(check["end"])
    last = monitoring.last_retraining(engine, config.name, other_than_run=context["run_id"])
    training = training_dag_id(config.name)
    active = context["ti"].get_dr_count(dag_id=training, states=["queued", "running"]) > 0
    measured = monitoring.DriftCheck(
        rows=check["rows"],
        drift_share=check["drift_share"],
        drifted_columns=tuple(check["drifted_columns"]),
        live_score=check["live_score"],
        champion_score=check["champion_score"],
    )
    decision = monitoring.decide(config, measured, end, last, active)
    figures = {k: check[k] for k in ("rows", "malformed_rows", "drift_share", "drifted_columns")}
    figures |= {k: check[k] for k in ("prediction_drift_score", "labelled_rows", "live_score", "champion_score")}
    row = _history_row(context, config, check, model_version=check["model_version"], **figures)
    monitoring.record_check(engine, {**row, "report_uri": check["report_uri"], **decision.to_dict()})
    print(f"{'Retrain' if decision.retrain else 'No retraining'}: {decision.reason}")
    if not decision.retrain:
        return None
    return {
        "reason": "drift",
        "drift_share": check["drift_share"],
        "drifted_columns": check["drifted_columns"],
        "report_uri": check["report_uri"],
        "model_version": check["model_version"],
        "history_days": config.drift.retrain_history_days or config.training.window_days,
    }
