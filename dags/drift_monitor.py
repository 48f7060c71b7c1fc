"""
### drift_monitor

Every hour, compares what the served champion saw in the last `drift.window_hours` (the inference log the
model service writes) with what it was trained on (the reference sample `ml_training` stored when it was
promoted), and retrains when that matters.

1. **wait_for_traffic** (a sensor, reschedule mode): waits for `drift.min_rows` logged predictions in the
   window; with fewer once the window is over, the run ends skipped ("too few rows"), with no verdict.
2. **check_drift**: Evidently's data drift per feature and the share of drifted features, drift of the
   predictions, and the live score on predictions whose labels have arrived in the source, against the
   champion's test score. The HTML report and the figures go to the champion's monitoring run in MLflow (one
   step per check); malformed log rows are counted and left out.
3. **decide_retraining**: retrain when the drift share reaches `drift.threshold` or the score dropped by
   `drift.max_performance_drop`, unless inside `drift.cooldown_hours` after the last drift-triggered run or
   while `ml_training` has a run running or queued. The decision and why go to the task log and the drift
   history table.
4. **trigger_ml_training** starts `ml_training` with conf `{reason: "drift", drift_share, drifted_columns,
   report_uri, model_version}`; its gate decides whether the retrained model replaces the champion.

Buttons on check_drift: **Drift report** (Evidently's report) and **MLflow run** (the monitoring run).
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag

from mlops_airflow.monitoring import TRAINING_DAG, check_drift, decide_retraining, wait_for_traffic


@dag(
    schedule="@hourly",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["ml", "monitoring", "drift", "evidently"],
    default_args={"owner": "mlops", "retries": 2, "retry_delay": dt.timedelta(seconds=30)},
)
def drift_monitor():
    retraining_conf = decide_retraining(check_drift(wait_for_traffic()))
    retraining_conf >> TriggerDagRunOperator(
        task_id="trigger_ml_training",
        trigger_dag_id=TRAINING_DAG,
        conf=retraining_conf,
        # One training run per check, even when this task is retried.
        trigger_run_id="drift__{{ run_id }}",
        skip_when_already_exists=True,
    )


drift_monitor()
