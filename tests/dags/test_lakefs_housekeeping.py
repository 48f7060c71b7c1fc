"""lakefs_housekeeping deletes expired run branches and nothing else, on SQLite and on Postgres, and the records of
sent notifications once they expired and their run is over."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from devstack import services
from include.mlops import lakefs_repository, notifications
from include.mlops.naming import run_branch_prefix
from mlops_airflow.lakefs_hook import LakeFSHook
from tests.conftest import REPO_ROOT
from tests.dags.conftest import xcom

pytestmark = pytest.mark.usefixtures("lakefs_connection")


def _branches_to_clean(repo) -> None:
    for name in ("run-old-1", "run-old-2", "feature-x"):
        lakefs_repository.create_branch(repo, name, "main")


def _housekeeping_dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO_ROOT / "dags" / "lakefs_housekeeping.py")).dags["lakefs_housekeeping"]


def test_retention_zero_deletes_every_run_branch_and_keeps_the_rest(airflow_db):
    repo = LakeFSHook().get_repository()
    _branches_to_clean(repo)
    run = _housekeeping_dag().test(run_conf={"retention_days": 0})
    assert run.state == "success"
    remaining = lakefs_repository.list_branches(repo)
    assert "main" in remaining and "feature-x" in remaining
    assert [b for b in remaining if b.startswith("run-")] == []


def test_fresh_run_branches_are_kept(airflow_db):
    repo = LakeFSHook().get_repository()
    lakefs_repository.create_branch(repo, "run-fresh", "main")
    run = _housekeeping_dag().test(run_conf={"retention_days": 14})
    assert run.state == "success"
    assert lakefs_repository.branch_exists(repo, "run-fresh")


@pytest.mark.postgres
def test_the_dag_runs_on_a_postgres_metadata_db(empty_postgres_url, tmp_path):
    """`airflow db migrate` and `airflow dags test` on Postgres (psycopg2 and asyncpg both in use)."""
    repo = LakeFSHook().get_repository()
    _branches_to_clean(repo)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": empty_postgres_url,
        "PYTHONPATH": str(REPO_ROOT),
    }
    airflow = services.venv_bin("airflow")
    for command in (
        [airflow, "db", "migrate"],
        [airflow, "dags", "test", "lakefs_housekeeping", "-c", json.dumps({"retention_days": 0})],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO_ROOT)
        assert result.returncode == 0, f"{command[1:3]}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert [b for b in lakefs_repository.list_branches(repo) if b.startswith("run-")] == []


def test_each_models_retention_comes_from_its_config_by_default(airflow_db, write_config):
    config = write_config()
    assert config.branches.retention_days == 14
    repo = LakeFSHook().get_repository()
    mine, gone = run_branch_prefix(config.name) + "fresh", "run-removed_model-fresh"
    for branch in (mine, gone):
        lakefs_repository.create_branch(repo, branch, "main")
    assert _housekeeping_dag().test().state == "success"
    assert lakefs_repository.branch_exists(repo, mine) and lakefs_repository.branch_exists(repo, gone)

    # No retention in the config: the model's run branches go.
    raw = yaml.safe_load(Path(config.path).read_text())
    raw["branches"] = {"retention_days": 0}
    Path(config.path).write_text(yaml.safe_dump(raw))
    assert _housekeeping_dag().test().state == "success"
    assert not lakefs_repository.branch_exists(repo, mine)
    # Branches of a model whose config is gone are kept for the longest retention of the configs there are (0).
    assert not lakefs_repository.branch_exists(repo, gone)


def test_records_of_sent_notifications_go_after_the_retention_but_not_while_their_run_may_retry(
    airflow_db, write_config
):
    from airflow.models.variable import Variable
    from airflow.utils.types import DagRunType

    config = write_config()
    assert config.branches.retention_days == 14
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    # dag.test names its run after run_after: the housekeeping run below, running while it looks.
    housekeeping_run = DagRunType.MANUAL.generate_run_id(suffix=now.isoformat())

    def record(dag_id: str, run_id: str, days_ago: float) -> str:
        key = notifications.sent_key(dag_id, run_id, "promoted", 0)
        sent_at = now - dt.timedelta(days=days_ago)
        Variable.set(key, notifications.SentRecord(config.name, dag_id, run_id, sent_at).to_json())
        return key

    over = record("ml_training__gone", "manual__over", 15)  # a run the metadata DB has no more
    fresh = record("ml_training__gone", "manual__recent", 13)
    running = record("lakefs_housekeeping", housekeeping_run, 30)
    by_hand = notifications.SENT_PREFIX + "by_hand"
    Variable.set(by_hand, "yesterday")
    try:
        run = _housekeeping_dag().test(logical_date=now, run_after=now)
        assert run.run_id == housekeeping_run and run.state == "success"
        assert xcom(run, "forget_old_notifications") == [over]
        assert Variable.get(over, default_var=None) is None
        assert all(Variable.get(key, default_var=None) for key in (fresh, running, by_hand))

        # That run is over now: the next one forgets its record.
        run = _housekeeping_dag().test()
        assert run.state == "success" and xcom(run, "forget_old_notifications") == [running]
    finally:
        for key in (fresh, running, by_hand):
            Variable.delete(key)
