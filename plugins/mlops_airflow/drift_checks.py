"""A drift check as a task runs it, the same for live traffic (drift_monitor) and for a batch run's scored rows
(batch_scoring): the version's reference sample, Evidently and the live score (include/mlops/monitoring.py), the
report and figures on the version's monitoring run in MLflow, the retraining decision under the model's one
cool-down, and the check's row in the drift history (`source`: online or batch)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from include.mlops.naming import training_dag_id
from mlops_airflow import mlflow_tracking, notify, operations_store
from mlops_airflow.decorators import show_drift_report, show_mlflow_run
from mlops_airflow.lakefs_hook import LakeFSHook

if TYPE_CHECKING:
    import pandas as pd


class NoReference(LookupError):
    """The version was promoted without a reference sample: there is nothing to check drift against."""


def version_and_reference(client, config, version: str | None = None):
    """The model's version `version` (by default its champion) and its reference sample (its `drift_reference`
    tag names it in lakeFS). Skips the task when the model has no champion; NoReference, saying what to do, when
    the version has no reference."""
    from include.mlops import lakefs_repository, registry
    from include.mlops.naming import parse_lakefs_uri

    name = config.model.registered_name
    if version is None:
        found = registry.version_by_alias(client, name, registry.CHAMPION)
        if found is None:
            raise AirflowSkipException(f"{name} has no champion yet: nothing is served, nothing to watch")
    else:
        found = client.get_model_version(name, version)
    if "drift_reference" not in found.tags:
        raise NoReference(
            f"{name} v{found.version} has no tag drift_reference (it was promoted without a reference sample); "
            "retrain to promote a model with one"
        )
    repository, ref, path = parse_lakefs_uri(found.tags["drift_reference"])
    return found, lakefs_repository.read_parquet(LakeFSHook().get_repository(repository), ref, path)


def judge(
    config,
    client,
    version,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    malformed_rows: int,
    labels: pd.DataFrame,
    end: dt.datetime,
    report_path: str,
    source: str,
) -> dict[str, Any]:
    """Measure `current` (rows of `version`, as `monitoring.read_live_window` gives them) against `reference`
    (`monitoring.assess`, with the version's calibrator for the label-free estimate), say what was found in the
    task log, and log the figures and the HTML report (as `report_path`) to the version's monitoring run, one
    step per hour of `end` (a retried check lands on its own step; a batch check's figures are named
    `batch.<figure>`), behind the task's "Drift report" and "MLflow run" buttons. Returns the check as `decide`
    takes it."""
    from include.mlops import monitoring, performance_estimate, tracking

    name, metric = config.name, config.model.primary_metric
    calibrator = performance_estimate.load(client, version.tags)
    assessment = monitoring.assess(config, dict(version.tags), reference, current, malformed_rows, labels, calibrator)
    report, performance, estimate = assessment.report, assessment.performance, assessment.estimate
    if report is None:
        print(f"{len(current)} rows, {config.drift.min_rows} needed for a drift verdict")
    else:
        for column in (*report.features, report.prediction):
            if column is not None:
                verdict = "DRIFTED" if column.drifted else "stable"
                print(f"  {column.column}: {column.method} {column.score:.4f} (threshold {column.threshold}) {verdict}")
    if performance.score is None:
        print(f"no live {metric}: {performance.note}")
    else:
        labelled, champion = performance.labelled_rows, assessment.champion_score
        print(f"live {metric} {performance.score:.4f} on {labelled} labelled rows; champion: {champion}")
    if estimate.score is None:
        print(f"no estimated {metric}: {estimate.note}")
    else:
        print(
            f"estimated {metric} {estimate.score:.4f} (band {estimate.low:.4f}-{estimate.high:.4f}), estimated "
            f"accuracy {estimate.accuracy:.4f}, on {estimate.rows} rows without labels"
        )

    experiment = tracking.experiment_id(client, name)
    run_id = tracking.monitoring_run(client, experiment, name, str(version.version))
    run_url = tracking.run_url(mlflow_tracking.ui_url(), experiment, run_id)
    prefix = "" if source == monitoring.ONLINE else f"{source}."
    figures = {prefix + k: v for k, v in assessment.figures(config).items()}
    artifact = None if report is None else report_path
    step = int(end.timestamp() // 3600)
    tracking.log_drift_check(client, run_id, step, figures, None if report is None else report.html, artifact)
    if artifact is not None:
        show_drift_report(f"{run_url}/artifacts/{artifact}")
    show_mlflow_run(run_url)
    return {
        **assessment.to_check(str(version.version)),
        "report_uri": None if artifact is None else f"runs:/{run_id}/{artifact}",
    }


# The label-free estimate's columns of the drift history, as `judge` returns them.
ESTIMATED = ("estimated_score", "estimated_score_low", "estimated_score_high", "estimated_accuracy")


def history_row(context: Context, config, start: dt.datetime, end: dt.datetime, source: str, **figures) -> dict:
    return {
        "airflow_run_id": context["run_id"],
        "model_name": config.model.registered_name,
        "window_start": start,
        "window_end": end,
        "source": source,
        **figures,
    }


def decide_and_record(config, check: dict[str, Any], source: str, context: Context) -> dict[str, Any] | None:
    """Retrain or not, and why (the task log and the drift history say): drift share or performance drop, on
    enough rows, outside the cool-down after the model's last check (online or batch) that asked to retrain, with
    no run of its training DAG running or queued. `check`: `judge`'s, with the window's `start` and `end`.
    Returns the conf of the training run to trigger, or None."""
    from include.mlops import monitoring

    engine = operations_store.engine()
    start, end = dt.datetime.fromisoformat(check["start"]), dt.datetime.fromisoformat(check["end"])
    last = monitoring.last_retraining(engine, config.name, other_than_run=context["run_id"], source=source)
    active = context["ti"].get_dr_count(dag_id=training_dag_id(config.name), states=["queued", "running"]) > 0
    measured = monitoring.DriftCheck(
        rows=check["rows"],
        drift_share=check["drift_share"],
        drifted_columns=tuple(check["drifted_columns"]),
        live_score=check["live_score"],
        champion_score=check["champion_score"],
        estimated_score=check["estimated_score"],
    )
    decision = monitoring.decide(config, measured, end, last, active)
    names = ("model_version", "rows", "malformed_rows", "drift_share", "drifted_columns", "prediction_drift_score")
    names += ("labelled_rows", "live_score", "champion_score", "report_uri", *ESTIMATED)
    figures = {k: check[k] for k in names}
    row = history_row(context, config, start, end, source, **figures)
    monitoring.record_check(engine, {**row, **decision.to_dict()})
    print(f"{'Retrain' if decision.retrain else 'No retraining'}: {decision.reason}")
    if not decision.retrain:
        return None
    why = f"{decision.reason} ({source} check of v{check['model_version']}, {check['rows']} rows)"
    notify.tell(config, "retraining_requested", context, why=why, version=check["model_version"])
    return {
        "reason": "drift",
        "drift_share": check["drift_share"],
        "drifted_columns": check["drifted_columns"],
        "report_uri": check["report_uri"],
        "model_version": check["model_version"],
        "history_days": config.drift.retrain_history_days or config.training.window_days,
    }


def trigger_retraining(model: str, conf, run_id_prefix: str):
    """The task that starts `ml_training__<model>` with `conf` (decide_retraining's output, which skips it when
    there is none). Its run id is `<run_id_prefix>__<this run id>`: one training run per check, even when the task
    is retried, and each DAG's apart from the other's."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    return TriggerDagRunOperator(
        task_id="trigger_ml_training",
        trigger_dag_id=training_dag_id(model),
        conf=conf,
        trigger_run_id=run_id_prefix + "__{{ run_id }}",
        skip_when_already_exists=True,
    )
