"""
### lakefs_housekeeping

Deletes the lakeFS branches of old training runs of every model (`run-<model>-*`) once their last commit is
older than `retention_days`: the param, or else each model's own `branches.retention_days` (run branches of a
model whose config is gone are kept as long as the longest retention of any config). A promoted run's data is
on `main` by then, and a rejected run's branch has served its time as evidence (its gate decision is in its
commit metadata and in MLflow). `main` is never touched.
"""

from __future__ import annotations

import time

from airflow.sdk import Param, dag, task

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
            description="Keep run branches this many days (0: delete them all now); empty: each model's "
            "branches.retention_days.",
        ),
    },
)
def lakefs_housekeeping():
    @task
    def find_expired_run_branches(params: dict) -> list[str]:
        from include.mlops import lakefs_repository
        from include.mlops.config import Branches
        from include.mlops.naming import run_branch_prefix
        from mlops_airflow import pipelines

        override = params["retention_days"]
        retention = {
            run_branch_prefix(config.name): config.branches.retention_days if override is None else override
            for config in pipelines.configs().configs
        }
        longest = max(retention.values(), default=Branches().retention_days)
        repo = LakeFSHook().get_repository()
        return lakefs_repository.expired_run_branches(
            repo, retention, longest if override is None else override, time.time()
        )

    LakeFSDeleteBranchOperator.partial(task_id="delete_run_branch").expand(branch=find_expired_run_branches())


lakefs_housekeeping()
