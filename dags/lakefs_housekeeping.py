"""
### lakefs_housekeeping

Deletes the lakeFS branches of old training runs of every model (`run-<model>-*`) once their last commit is
older than `retention_days`: the param, or else each model's own `branches.retention_days` (run branches of a
model whose config is gone are kept as long as the longest retention of any config). A promoted run's data is
on `main` by then, and a rejected run's branch has served its time as evidence (its gate decision is in its
commit metadata and in MLflow). `main` is never touched.

It also deletes the records of sent notifications (Variables `mlops_notified.*`, see
plugins/mlops_airflow/notify.py) older than the same retention, except those of DAG runs still queued or
running: a retried task of such a run must find what it sent.
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
            description="Keep run branches, and the records of notifications sent by runs that are over, this "
            "many days (0: delete them all now); empty: each model's branches.retention_days.",
        ),
    },
)
def lakefs_housekeeping():
    @task
    def find_expired_run_branches(params: dict) -> list[str]:
        from include.mlops import lakefs_repository
        from include.mlops.naming import run_branch_prefix

        retention, other = _retention_days(params["retention_days"])
        by_prefix = {run_branch_prefix(model): days for model, days in retention.items()}
        repo = LakeFSHook().get_repository()
        return lakefs_repository.expired_run_branches(repo, by_prefix, other, time.time())

    @task
    def forget_old_notifications(params: dict) -> list[str]:
        from mlops_airflow import notify

        return notify.forget_expired(*_retention_days(params["retention_days"]))

    LakeFSDeleteBranchOperator.partial(task_id="delete_run_branch").expand(branch=find_expired_run_branches())
    forget_old_notifications()


def _retention_days(override: int | None) -> tuple[dict[str, int], int]:
    """The days to keep each model's run evidence (by model name), and those of a model whose config is gone (the
    longest of any config): `override` for all when given."""
    from include.mlops.config import Branches
    from mlops_airflow import pipelines

    retention = {
        config.name: config.branches.retention_days if override is None else override
        for config in pipelines.configs().configs
    }
    longest = max(retention.values(), default=Branches().retention_days)
    return retention, longest if override is None else override


lakefs_housekeeping()
