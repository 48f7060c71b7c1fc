"""The lakeFS hook and operators in real DAG runs (`dag.test()`) against a lakeFS server."""

from __future__ import annotations

import datetime as dt
import functools
import json

import pytest
from airflow.sdk import DAG, task

from include.mlops import lakefs_repository
from include.mlops.naming import run_branch_name
from mlops_airflow.lakefs_hook import LakeFSConnectionError, LakeFSHook
from mlops_airflow.lakefs_operators import (
    LakeFSCommitOperator,
    LakeFSCreateBranchOperator,
    LakeFSDeleteBranchOperator,
    LakeFSMergeOperator,
)

pytestmark = pytest.mark.usefixtures("lakefs_connection")
MODEL = "lakefs_ops_model"


def _pipeline(dag_id: str, payload: bytes, delete_branch: bool = True) -> DAG:
    """create run branch -> stage a file -> commit -> merge into main -> delete the branch."""
    with DAG(dag_id, schedule=None, default_args={"owner": "test", "retries": 0}) as dag:
        branch = "{{ run_id | run_branch }}"

        @task
        def stage(branch: str) -> str:
            repo = LakeFSHook().get_repository()
            lakefs_repository.write_bytes(repo, branch, "raw/day.csv", payload)
            return branch

        create = LakeFSCreateBranchOperator(task_id="create_branch", branch=branch)
        commit = LakeFSCommitOperator(
            task_id="commit", branch=branch, message="collected {{ ds }}", metadata={"rows": "{{ 1 + 1 }}"}
        )
        merge = LakeFSMergeOperator(task_id="merge", source_ref=branch, destination_branch="main")
        create >> stage(branch) >> commit >> merge
        if delete_branch:
            merge >> LakeFSDeleteBranchOperator(task_id="delete_branch", branch=branch)
    dag.user_defined_filters = {"run_branch": functools.partial(run_branch_name, MODEL)}
    return dag


def _xcom(dag_run, task_id: str, key: str = "return_value"):
    ti = dag_run.get_task_instance(task_id)
    return ti.xcom_pull(task_ids=task_id, key=key) if hasattr(ti, "xcom_pull") else None


def test_a_run_commits_and_merges_with_the_airflow_stamp(run_dag, lakefs_server):
    dag = _pipeline("lakefs_ops_happy_path", b"amount\n1\n")
    run = run_dag(dag, logical_date=dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    assert run.state == "success"

    repo = LakeFSHook().get_repository()
    assert lakefs_repository.read_bytes(repo, "main", "raw/day.csv") == b"amount\n1\n"
    merge_commit = lakefs_repository.get_commit(repo, "main")
    committed = lakefs_repository.get_commit(repo, merge_commit.parents[1] if len(merge_commit.parents) > 1 else "main")
    for commit, task_id in ((merge_commit, "merge"), (committed, "commit")):
        assert commit.metadata["airflow_dag_id"] == "lakefs_ops_happy_path"
        assert commit.metadata["airflow_run_id"] == run.run_id
        assert commit.metadata["airflow_task_id"] == task_id
        assert commit.metadata["airflow_logical_date"].startswith("2026-01-02T00:00:00")
        assert commit.metadata["airflow_run_url"].endswith(
            f"/dags/lakefs_ops_happy_path/runs/{run.run_id}".replace(":", "%3A").replace("+", "%2B")
        )
    assert committed.message == "collected 2026-01-02"
    assert committed.metadata["rows"] == "2"
    assert not lakefs_repository.branch_exists(repo, run_branch_name(MODEL, run.run_id))


def test_the_lakefs_link_points_at_the_commit(run_dag, lakefs_server, lakefs_repo):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dag = _pipeline("lakefs_ops_links", b"amount\n2\n", delete_branch=False)
    run = run_dag(dag, logical_date=dt.datetime(2026, 1, 3, tzinfo=dt.UTC))
    assert run.state == "success"
    with create_session() as session:
        query = session.query(XComModel).filter(XComModel.dag_id == "lakefs_ops_links", XComModel.run_id == run.run_id)
        rows = {(x.task_id, x.key): XComModel.deserialize_value(x) for x in query}
    commit_id = rows[("commit", "return_value")]
    link = rows[("commit", "_link_LakeFSCommitLink")]
    assert link == f"{lakefs_server.url}/repositories/{lakefs_repo.id}/commits/{commit_id}"


class _CrashAfterFirstTry:
    """Mixin: the first try does its work, then the worker "dies" before Airflow hears of it."""

    def execute(self, context):
        result = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError("worker lost right after the lakeFS call")
        return result


class CommitThenCrash(_CrashAfterFirstTry, LakeFSCommitOperator):
    pass


class MergeThenCrash(_CrashAfterFirstTry, LakeFSMergeOperator):
    pass


def test_retries_after_a_commit_and_a_merge_that_succeeded_are_safe(run_dag, lakefs_server):
    """A retry finds the commit and the merge of its first try: no error, no second commit or merge."""
    args = {"owner": "test", "retries": 1, "retry_delay": dt.timedelta(0)}
    with DAG("lakefs_ops_retry", schedule=None, default_args=args) as dag:
        branch = "retry-branch"

        @task
        def stage() -> None:
            lakefs_repository.write_bytes(LakeFSHook().get_repository(), branch, "raw/day.csv", b"amount\n3\n")

        create = LakeFSCreateBranchOperator(task_id="create_branch", branch=branch)
        commit = CommitThenCrash(task_id="commit", branch=branch, message="collected")
        merge = MergeThenCrash(task_id="merge", source_ref=branch, destination_branch="main")
        create >> stage() >> commit >> merge
    run = run_dag(dag, logical_date=dt.datetime(2026, 1, 4, tzinfo=dt.UTC))

    assert run.state == "success"
    assert run.get_task_instance("commit").try_number == 2
    assert run.get_task_instance("merge").try_number == 2
    repo = LakeFSHook().get_repository()
    assert [c.metadata.get("airflow_task_id") for c in lakefs_repository.log(repo, branch)].count("commit") == 1
    merges = [c for c in lakefs_repository.log(repo, "main") if c.metadata.get("airflow_task_id") == "merge"]
    assert len(merges) == 1
    assert lakefs_repository.read_bytes(repo, "main", "raw/day.csv") == b"amount\n3\n"


def test_a_commit_with_nothing_staged_fails_and_says_so(run_dag, lakefs_server):
    with DAG("lakefs_ops_empty", schedule=None, default_args={"owner": "test", "retries": 0}) as dag:
        LakeFSCreateBranchOperator(task_id="create_branch", branch="empty-branch") >> LakeFSCommitOperator(
            task_id="commit", branch="empty-branch", message="nothing"
        )
    run = run_dag(dag, logical_date=dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
    assert run.state == "failed"
    assert run.get_task_instance("commit").state == "failed"


def test_the_hook_names_a_missing_connection(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_LAKEFS_MISSING", raising=False)
    with pytest.raises(LakeFSConnectionError, match="connection 'lakefs_missing' is not defined"):
        LakeFSHook("lakefs_missing").get_conn()


def test_the_hook_names_wrong_credentials(lakefs_server, monkeypatch):
    conn = {"conn_type": "lakefs", "host": lakefs_server.url, "login": "AKIAWRONG", "password": "nope"}
    monkeypatch.setenv("AIRFLOW_CONN_LAKEFS_WRONG", json.dumps(conn))
    with pytest.raises(
        LakeFSConnectionError, match="'lakefs_wrong'.*refused the credentials of access key 'AKIAWRONG'"
    ):
        LakeFSHook("lakefs_wrong").get_conn()
    ok, message = LakeFSHook("lakefs_wrong").test_connection()
    assert not ok and "AKIAWRONG" in message
