"""The tasks of `drift_monitor`: wait for a window of live traffic, measure drift, decide on retraining.

The inference log and the drift history are tables of the operations store (include/mlops/operations_store.py),
the database behind connection `inference_log_db` (the one the model service writes its predictions to).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Context, PokeReturnValue, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from mlops_airflow import drift_checks, mlflow_tracking, operations_store, pipelines
from mlops_airflow.decorators import mlflow_task
from mlops_airflow.run_context import run_interval_end
from mlops_airflow.sources import labels as source_labels

# The window has closed when its run starts; the service writes its log a few seconds behind. After this much
# time past the window's end, too few rows is the verdict ("too few rows"), not a reason to wait. Kept short:
# drift_monitor runs one at a time, so a waiting sensor holds back the next check (a manual one too).
LATE_ROWS_GRACE = dt.timedelta(minutes=1)


def _window(context: Context, hours: int) -> tuple[dt.datetime, dt.datetime]:
    end = run_interval_end(context)
    return end - dt.timedelta(hours=hours), end


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
    row = drift_checks.history_row(
        context, config, start, end, monitoring.ONLINE, rows=rows, malformed_rows=0, labelled_rows=0
    )
    monitoring.record_check(engine, {**row, "retrain": False, "reason": decision.reason})
    raise AirflowSkipException(decision.reason)


@mlflow_task
def check_drift(config_file: str, window: dict, **context: Context) -> dict:
    """Compare the window's live traffic with the champion's reference: data drift per feature and the share of
    drifted features, drift of the predictions, and (for rows whose labels have arrived in the source) the live
    score against the champion's test score. The report goes to the champion's monitoring run in MLflow (one
    step per check) behind the "Drift report" button."""
    from include.mlops import monitoring

    config = pipelines.load(config_file)
    client = mlflow_tracking.client()
    try:
        champion, reference = drift_checks.version_and_reference(client, config)
    except drift_checks.NoReference as exc:
        raise AirflowFailException(str(exc)) from None

    start, end = dt.datetime.fromisoformat(window["start"]), dt.datetime.fromisoformat(window["end"])
    live = monitoring.read_live_window(operations_store.engine(), config.name, start, end, config.dataset)
    print(f"{len(live.frame)} predictions read, {live.malformed} malformed left out")
    for problem in live.problems:
        print(f"  malformed: {problem}")
    current = live.frame[live.frame["model_version"] == champion.version]
    if len(current) < len(live.frame):
        print(f"{len(live.frame) - len(current)} predictions of other model versions than v{champion.version} left out")
    lookback = dt.timedelta(hours=config.drift.label_lookback_hours)
    labels = source_labels(config, end, end - lookback, end)
    report_path = f"drift_reports/{end:%Y%m%dT%H%M}.html"
    check = drift_checks.judge(
        config, client, champion, reference, current, live.malformed, labels, end, report_path, monitoring.ONLINE
    )
    return {**window, **check}


@task.short_circuit(multiple_outputs=False)
def decide_retraining(config_file: str, check: dict, **context: Context) -> dict | None:
    """Retrain or not, and why (the task log and the drift history say): drift share or performance drop, on
    enough rows, outside the cool-down after the model's last drift-triggered run, with no run of its training
    DAG running or queued. Returns the conf of the training run to trigger, or nothing (which skips the
    trigger)."""
    from include.mlops import monitoring

    return drift_checks.decide_and_record(pipelines.load(config_file), check, monitoring.ONLINE, context)
