"""
### model_rollout__&lt;model&gt;

Judges the model's shadow or canary rollout on live traffic (config `rollout`; ml_training's **start_rollout**
starts one when the mode is not `direct`), every `rollout.check_every_minutes`, or on demand.

1. **check_rollout**: asks the model service which rollout it runs (none: the run ends here) and compares the
   challenger with the champion on the records both scored since it started, from the inference log:
   agreement, drift between the two models' predictions, the challenger's error rate, p99 model time, and,
   once labels arrived in the source, the primary metric of each on the same records. Against the config's
   criteria it waits (too few records or too little time), promotes, or rolls back (a challenger whose error
   rate is over the bound is rolled back without waiting for the minimum).
2. **approve_deployment** (with `gate.approval: required`): a person answers in Required Actions, seeing the
   rollout's figures; Reject, or no answer within `gate.approval_timeout_hours`, goes to **reject_promotion**.
3. **promote_rollout**: ml_training's deployment of the challenger (the service switches to it, which ends the
   rollout; smoke test on its test split; the champion put back on failure); `champion` moves, recorded in the
   alias history with cause `rollout` (`approval`, by the person, when one approved) and the verdict;
   **merge_snapshot** and **merge_reference** merge the training snapshot and drift reference it was trained
   with into `main`.
4. **roll_back** (or reject_promotion): the service unloads the challenger; the alias history records
   `champion` kept (cause `rollout`, with the reason), the version gets tag `rollout`.

The figures of every check are in the rollouts table, shown on the MLOps page.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag
from airflow.timetables.trigger import DeltaTriggerTimetable

from include.mlops.naming import rollout_dag_id
from mlops_airflow import notify, pipelines
from mlops_airflow.approval import RolloutApprovalOperator
from mlops_airflow.lakefs_operators import LakeFSMergeOperator
from mlops_airflow.rollout_check import check_rollout, end_rollout, promote_rollout

PROMOTED = "ti.xcom_pull(task_ids='promote_rollout')"


def model_rollout(config) -> None:
    """The rollout check DAG of one pipeline config."""
    model, config_file = config.name, config.path

    @dag(
        dag_id=rollout_dag_id(model),
        schedule=DeltaTriggerTimetable(dt.timedelta(minutes=config.rollout.check_every_minutes)),
        catchup=False,
        max_active_runs=1,
        doc_md=f"{__doc__}\n**This DAG**: model `{model}`, config `{config_file}`.",
        tags=["ml", "deployment", "rollout", model],
        default_args={"owner": "mlops", "retries": 2, "retry_delay": dt.timedelta(seconds=30)},
        on_failure_callback=notify.on_run_failed(config),
    )
    def pipeline():
        checked = check_rollout(config_file)
        promoted = promote_rollout(config_file)
        merge_snapshot = LakeFSMergeOperator(
            task_id="merge_snapshot",
            source_ref="{{ " + PROMOTED + "['snapshot_commit'] }}",
            destination_branch="main",
            message=f"Promote {model} v{{{{ {PROMOTED}['version'] }}}} (rollout)",
        )
        merge_reference = LakeFSMergeOperator(
            task_id="merge_reference",
            source_ref="{{ " + PROMOTED + "['reference_commit'] }}",
            destination_branch="main",
            message=f"Drift reference of {model} v{{{{ {PROMOTED}['version'] }}}}",
        )
        roll_back = end_rollout.override(task_id="roll_back")(config_file)
        if config.gate.approval == "required":
            approval = RolloutApprovalOperator(
                model=model,
                config_file=config_file,
                timeout=dt.timedelta(hours=config.gate.approval_timeout_hours),
                approve_task="promote_rollout",
                reject_task="reject_promotion",
            )
            checked >> [approval, roll_back]
            approval >> [promoted, end_rollout.override(task_id="reject_promotion")(config_file)]
        else:
            checked >> [promoted, roll_back]
        promoted >> merge_snapshot >> merge_reference

    pipeline()


for pipeline_config in pipelines.to_build(rollout_dag_id):
    model_rollout(pipeline_config)
