"""
### lakefs_housekeeping

Deletes the lakeFS branches of old `ml_training` runs (`run-*`) once their last commit is older than
`retention_days` (param, or the config's `branches.retention_days`). A promoted run's data is on `main` by
then, and a rejected run's branch has served its time as evidence (its gate decision is in its commit
metadata and in MLflow). `main` is never touched.
"""

from __future__ import annotations

import time

from airflow.sdk import Param, dag, task

from include.mlops.naming import RUN_BRANCH_PREFIX
from mlops_airflow.lakefs_hook import LakeFSHook
from mlops_airflow.lakefs_operators import LakeFSDeleteBranchOperator


@dag(
    schedule="30 3 * * *",
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lakefs", "housekeeping"],
    default_args={"owner": "mlops", "retries": 2},
    params={
        "retention_days": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="Keep run branches this many days (0: delete them all now); empty: the config's "
            "branches.retention_days.",
        ),
    },
)
def lakefs_housekeeping():
    @task
    def find_expired_run_branches(params: dict) -> list[str]:
        from include.mlops import versioning
        from include.mlops.config import load_config

        days = params["retention_days"]
        if days is None:
            days = load_config().branches.retention_days
        repo = LakeFSHook().get_repository()
        return versioning.expired_branches(repo, RUN_BRANCH_PREFIX, days, time.time())

    LakeFSDeleteBranchOperator.partial(task_id="delete_run_branch").expand(branch=find_expired_run_branches())


lakefs_housekeeping()
