"""
### ml_training

The nightly training pipeline, run on a lakeFS branch of its own (`run-<run id>`):

1. **create_run_branch** from `main`;
2. **collect** the run's days from the configured source (`MLOPS_CONFIG`), staged on the branch as collected;
3. **validate** them: rejected rows go to `quarantine/` on the branch with a report, and a rejected batch fails
   the run with `main` untouched;
4. **commit_raw** and **merge_raw** the validated partitions (`raw/<dataset>/date=YYYY-MM-DD/`) into `main`;
5. **build_training_snapshot**: the training window, read at the merged commit, split into train/valid/test
   under `datasets/<model>/<run>/` on the branch, and **commit_snapshot**, whose commit id is what training
   reads.

Every task that commits or reads lakeFS has a **lakeFS** button to that commit. Params: `reason` (why the run
was started), `history_days` (how many days to collect, ending at the run's interval; use the training window
for a first run).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag

from include.mlops.naming import run_branch_name
from mlops_airflow.lakefs_operators import LakeFSCommitOperator, LakeFSCreateBranchOperator, LakeFSMergeOperator
from mlops_airflow.training_data import build_training_snapshot, collect, validate

RUN_BRANCH = "{{ run_id | run_branch }}"


@dag(
    schedule="0 2 * * *",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["ml", "training", "lakefs"],
    default_args={"owner": "mlops", "retries": 2, "retry_delay": dt.timedelta(seconds=30)},
    user_defined_filters={"run_branch": run_branch_name},
    params={
        "reason": Param(
            "schedule", type="string", description="Why this run was started: schedule, manual, drift, ..."
        ),
        "history_days": Param(
            1, type="integer", minimum=1, maximum=366, description="Days to collect, ending at the run's interval."
        ),
    },
)
def ml_training():
    create_run_branch = LakeFSCreateBranchOperator(task_id="create_run_branch", branch=RUN_BRANCH)
    staged = collect()
    validated = validate(staged)
    commit_raw = LakeFSCommitOperator(
        task_id="commit_raw",
        branch=RUN_BRANCH,
        message="Collect validated data ({{ params.reason }} run)",
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
    snapshot = build_training_snapshot(validated, merge_raw.output)
    commit_snapshot = LakeFSCommitOperator(
        task_id="commit_snapshot",
        branch=RUN_BRANCH,
        message="Training snapshot of {{ params.reason }} run",
        metadata={"rows": "{{ ti.xcom_pull(task_ids='build_training_snapshot')['rows'] }}"},
        paths=["datasets/"],
    )

    create_run_branch >> staged
    validated >> commit_raw >> merge_raw
    snapshot >> commit_snapshot


ml_training()
