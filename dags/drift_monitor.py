"""
### drift_monitor__&lt;model&gt;

Every hour, compares what one served champion saw in the last `drift.window_hours` (the inference log rows of
its model, which the model service writes) with what it was trained on (the reference sample its
`ml_training__<model>` stored when it was promoted), and retrains that model when it matters.

1. **wait_for_traffic** (a sensor, reschedule mode): waits for `drift.min_rows` logged predictions of the model
   in the window; with fewer once the window is over, the run ends skipped ("too few rows"), with no verdict.
2. **check_drift**: Evidently's data drift per feature and the share of drifted features, drift of the
   predictions, and the live score on predictions whose labels have arrived in the source, against the
   champion's test score. The HTML report and the figures go to the champion's monitoring run in MLflow (one
   step per check); malformed log rows are counted and left out.
3. **decide_retraining**: retrain when the drift share reaches `drift.threshold` or the score dropped by
   `drift.max_performance_drop`, unless inside `drift.cooldown_hours` after the model's last drift-triggered
   run or while its `ml_training__<model>` has a run running or queued. The decision and why go to the task
   log and the drift history table.
4. **trigger_ml_training** starts `ml_training__<model>` with conf `{reason: "drift", drift_share,
   drifted_columns, report_uri, model_version}`; its gate decides whether the retrained model replaces the
   champion.

Buttons on check_drift: **Drift report** (Evidently's report) and **MLflow run** (the monitoring run).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag

from include.mlops.naming import monitor_dag_id
from mlops_airflow import notify, pipelines
from mlops_airflow.drift_checks import trigger_retraining
from mlops_airflow.monitoring import check_drift, decide_retraining, wait_for_traffic


def drift_monitor(config) -> None:
    """The drift DAG of one pipeline config; it triggers that config's training DAG only."""
    model, config_file = config.name, config.path

    @dag(
        dag_id=monitor_dag_id(model),
        schedule="@hourly",
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        doc_md=f"{__doc__}\n**This DAG**: model `{model}`, dataset `{config.dataset.name}`, config `{config_file}`.",
        tags=["ml", "monitoring", "drift", "evidently", model],
        default_args={"owner": "mlops", "retries": 2, "retry_delay": dt.timedelta(seconds=30)},
        on_failure_callback=notify.on_run_failed(config),
    )
    def monitor():
        retraining_conf = decide_retraining(config_file, check_drift(config_file, wait_for_traffic(config_file)))
        retraining_conf >> trigger_retraining(model, retraining_conf, "drift")

    monitor()


for pipeline_config in pipelines.to_build(monitor_dag_id):
    drift_monitor(pipeline_config)
