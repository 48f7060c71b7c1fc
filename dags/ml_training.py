"""
### ml_training__&lt;model&gt;

The nightly training pipeline of one model: one config file of the config folder (`MLOPS_CONFIG_DIR`, default
include/config/), run on a lakeFS branch of its own (`run-<model>-<run id>`).

**Data half**
1. **create_run_branch** from `main`; **choose_training_data**: a recorded snapshot (`data_commit`) skips to 6;
2. **collect** the run's days from the config's source, staged on the branch as collected;
3. **validate** them: rejected rows go to `quarantine/` on the branch with a report, and a rejected batch fails
   the run with `main` untouched;
4. **commit_raw** and **merge_raw** the validated partitions (`raw/<dataset>/date=YYYY-MM-DD/`) into `main`;
5. **build_training_snapshot** reads the training window at the merged commit and splits it into
   train/valid/test under `datasets/<model>/<run>/`; **commit_snapshot** commits it on the branch.

**Model half**
6. **resolve_training_data** (the snapshot's commit id) and **start_training_run** (the MLflow run of this
   DAG run, tagged with the lakeFS commit, the Airflow run and the code version);
7. **train_candidate**, one mapped task per candidate of the config, each a child MLflow run;
8. **gate**: the best candidate on valid against the `champion` on this run's test split; **package_onnx**
   converts it to ONNX and fails the run unless it predicts like the sklearn model on the whole test split;
   **register_challenger** registers it as a new version with alias `challenger`, the decision and the parity
   figures as tags, and writes its model card (`model_card.md` on its MLflow run);
9. when the gate passes (and param `promote` is on), **go_live** chooses how it goes live (config `rollout.mode`).
   `direct` (or no champion yet): **deploy_model** puts the ONNX model into the BentoML
   model store, builds a Bento, switches the model's route on the running service to it without downtime and
   smoke-tests it (the previous model is put back on failure); **store_reference** keeps a sample of the
   training split with the model's predictions on it under `reference/<model>/<run>/` for the model's drift
   monitor; then **promote_champion** moves `champion`, and **merge_snapshot** and **merge_reference** merge
   the training snapshot and the reference into `main`. `shadow` or `canary`: **start_rollout** loads it beside
   the champion on the service instead (the champion stays), and **store_reference** keeps its reference;
   `model_rollout__<model>` judges it on live traffic and promotes it (moving `champion`, merging the snapshot
   and the reference) or rolls it back. Otherwise **record_rejection** commits the decision on the run branch,
   which `lakefs_housekeeping` deletes after `retention_days`.
   With `gate.approval: required` in the config, **approve_deployment** first waits for a person (Airflow's
   Required Actions, showing both models' metrics and links): Approve goes on to go_live; Reject, or no
   answer within `gate.approval_timeout_hours`, to record_rejection.

Last, **finish_training_run** (a teardown) ends the MLflow run as FINISHED, or FAILED when a task failed.

Buttons: **lakeFS** on tasks that commit or read lakeFS, **MLflow run** on the training tasks, the gate and
the ONNX packaging, **Service API docs** on the deployment.
"""

from __future__ import annotations

import datetime as dt
import functools

from airflow.sdk import CronTriggerTimetable, Param, dag

from include.mlops.naming import run_branch_name, training_dag_id
from mlops_airflow import notify, pipelines
from mlops_airflow.approval import ANSWER_KEY, APPROVAL_TASK, ChallengerApprovalOperator, why_not_promoted
from mlops_airflow.lakefs_operators import LakeFSCommitOperator, LakeFSCreateBranchOperator, LakeFSMergeOperator
from mlops_airflow.training_data import build_training_snapshot, collect, validate
from mlops_airflow.training_model import (
    choose_outcome,
    choose_training_data,
    deploy_model,
    finish_training_run,
    gate,
    go_live,
    package_onnx,
    plan_candidates,
    promote_champion,
    register_challenger,
    resolve_training_data,
    start_rollout,
    start_training_run,
    store_reference,
    train_candidate,
)

RUN_BRANCH = "{{ run_id | run_branch }}"
DECISION = "ti.xcom_pull(task_ids='register_challenger')"
# A person's answer, when the config asks for one (none otherwise).
ANSWER = f"ti.xcom_pull(task_ids='{APPROVAL_TASK}', key='{ANSWER_KEY}')"


def ml_training(config) -> None:
    """The training DAG of one pipeline config; every task is handed the config's file."""
    model, config_file = config.name, config.path

    @dag(
        dag_id=training_dag_id(model),
        # Nightly at 02:00 UTC. No start date, and run_immediately=timedelta(0): a newly deployed (or unpaused)
        # DAG waits for the next 02:00 instead of training at once for last night, beside the run its user just
        # started. (Airflow 3.3.2 treats run_immediately=False like None: last night's run if under 10 % of a
        # day ago.)
        schedule=CronTriggerTimetable("0 2 * * *", timezone="UTC", run_immediately=dt.timedelta(0)),
        catchup=False,
        max_active_runs=1,
        doc_md=f"{__doc__}\n**This DAG**: model `{model}`, dataset `{config.dataset.name}`, config `{config_file}`.",
        tags=["ml", "training", "lakefs", "mlflow", model],
        default_args={"owner": "mlops", "retries": 2, "retry_delay": dt.timedelta(seconds=30)},
        on_failure_callback=notify.on_run_failed(config),
        user_defined_filters={"run_branch": functools.partial(run_branch_name, model)},
        user_defined_macros={"why_not_promoted": why_not_promoted},
        params={
            "reason": Param(
                "schedule", type="string", description="Why this run was started: schedule, manual, drift, ..."
            ),
            "history_days": Param(
                1, type="integer", minimum=1, maximum=366, description="Days to collect, ending at the run's interval."
            ),
            "data_commit": Param(
                None,
                type=["null", "string"],
                description="Retrain on a recorded snapshot: the lakefs_commit tag of an earlier training run.",
            ),
            "promote": Param(
                True,
                type="boolean",
                description="Deploy and promote the challenger when the gate passes (off: register it only).",
            ),
        },
    )
    def pipeline():
        create_run_branch = LakeFSCreateBranchOperator(task_id="create_run_branch", branch=RUN_BRANCH)
        data_source = choose_training_data()

        staged = collect(config_file)
        validated = validate(config_file, staged)
        commit_raw = LakeFSCommitOperator(
            task_id="commit_raw",
            branch=RUN_BRANCH,
            message=f"Collect validated {config.dataset.name} data ({{{{ params.reason }}}} run)",
            metadata={
                "rows_valid": "{{ ti.xcom_pull(task_ids='validate')['rows_valid'] }}",
                "rows_quarantined": "{{ ti.xcom_pull(task_ids='validate')['rows_quarantined'] }}",
            },
            # Re-collecting days that are on `main` already changes nothing: an empty commit says so.
            allow_empty=True,
            paths=["raw/", "quarantine/"],
        )
        # The commit, not the branch: on a retried run the branch may hold later commits (the snapshot).
        merge_raw = LakeFSMergeOperator(
            task_id="merge_raw", source_ref=commit_raw.output, destination_branch="main", message="Validated data"
        )
        snapshot = build_training_snapshot(config_file, validated, merge_raw.output)
        commit_snapshot = LakeFSCommitOperator(
            task_id="commit_snapshot",
            branch=RUN_BRANCH,
            message=f"Training snapshot of {model} ({{{{ params.reason }}}} run)",
            metadata={
                "rows": "{{ ti.xcom_pull(task_ids='build_training_snapshot')['rows'] }}",
                "manifest": "{{ ti.xcom_pull(task_ids='build_training_snapshot')['manifest_path'] }}",
            },
            paths=["datasets/"],
        )

        data = resolve_training_data()
        training_run = start_training_run(config_file, data)
        candidates = plan_candidates(config_file)
        results = train_candidate.partial(config_file=config_file, data=data, training_run=training_run).expand(
            candidate=candidates
        )
        decided = gate(config_file, results)
        decision = register_challenger(config_file, decided, package_onnx(config_file, decided))
        # With a shadow or canary rollout, model_rollout asks instead, once the challenger held up on live traffic.
        if config.gate.approval == "required" and config.rollout.mode == "direct":
            outcome = ChallengerApprovalOperator(
                model=model,
                config_file=config_file,
                timeout=dt.timedelta(hours=config.gate.approval_timeout_hours),
                approve_task="go_live",
                reject_task="record_rejection",
            )
            decision >> outcome
        else:
            outcome = choose_outcome(decision)
        version = "{{ " + DECISION + "['version'] }}"
        merge_snapshot = LakeFSMergeOperator(
            task_id="merge_snapshot",
            source_ref="{{ ti.xcom_pull(task_ids='resolve_training_data')['commit'] }}",
            destination_branch="main",
            message=f"Promote {model} v{version} ({{{{ {DECISION}['challenger'] }}}})",
        )
        record_rejection = LakeFSCommitOperator(
            task_id="record_rejection",
            branch=RUN_BRANCH,
            message="Not promoted: {{ why_not_promoted(" + DECISION + ", " + ANSWER + ") }}",
            metadata={
                "gate_decision": "{{ 'promote' if " + DECISION + "['promote'] else 'reject' }}",
                "gate_reason": "{{ " + DECISION + "['reason'] }}",
                "model_version": version,
            },
            allow_empty=True,
        )
        merge_reference = LakeFSMergeOperator(
            task_id="merge_reference",
            source_ref="{{ ti.xcom_pull(task_ids='store_reference')['commit'] }}",
            destination_branch="main",
            message=f"Drift reference of {model} v{version}",
        )

        create_run_branch >> data_source >> [staged, data]
        validated >> commit_raw >> merge_raw
        snapshot >> commit_snapshot >> data
        live = go_live(config_file)
        outcome >> [live, record_rejection]
        deployed = deploy_model(config_file, decision)
        started = start_rollout(config_file, decision)
        live >> [deployed, started]
        reference = store_reference(config_file)
        [deployed, started] >> reference
        reference >> promote_champion(config_file, decision, deployed) >> merge_snapshot >> merge_reference
        [merge_reference, record_rejection] >> finish_training_run(training_run).as_teardown(setups=training_run)

    pipeline()


for pipeline_config in pipelines.to_build(training_dag_id):
    ml_training(pipeline_config)
