"""ml_training's data half in real DAG runs: simulator database -> lakeFS run branch -> main -> snapshot."""

from __future__ import annotations

import datetime as dt
import json
import signal

import pytest

from include.demo_sources import simulator
from include.mlops import lakefs_repository
from include.mlops.naming import run_branch_name, run_key, training_dag_id
from mlops_airflow.lakefs_hook import LakeFSHook
from tests.conftest import REPO_ROOT
from tests.dags import killed_runs
from tests.dags.conftest import ROWS_PER_DAY, the_config, training_dag

pytestmark = pytest.mark.usefixtures(
    "airflow_db", "lakefs_connection", "mlflow_connection", "pipeline_config", "inference_log_db"
)

# The run for 2026-03-10 collects the day two days earlier (the demo's label lag) and before.
INTERVAL_END = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
# These tests are about the data: the gate's promotion (and its merge of the snapshot) is switched off.
DATA_ONLY = {"promote": False}


def ml_training():
    """ml_training up to its training snapshot: these tests are about the data, and the model half (training,
    packaging, registering) would only add seconds to each run."""
    return training_dag().partial_subset("resolve_training_data", include_upstream=True)


def run(history_days: int, when: dt.datetime = INTERVAL_END):
    """A manual run of ml_training whose data interval ends at `when`."""
    return ml_training().test(logical_date=when, run_conf={"history_days": history_days, **DATA_ONLY})


def _tree(repo, ref: str, prefix: str) -> dict[str, str]:
    return {o.path: o.checksum for o in lakefs_repository.list_objects(repo, ref, prefix)}


def test_the_data_half_lands_validated_days_on_main_and_a_snapshot_on_the_run_branch(transactions_db, pipeline_config):
    dag_run = run(history_days=3)
    assert dag_run.state == "success"

    repo = LakeFSHook().get_repository()
    raw = _tree(repo, "main", "raw/")
    assert sorted(raw) == [f"raw/transactions/date=2026-03-0{d}/part-0000.parquet" for d in (5, 6, 7)]
    assert _tree(repo, "main", "quarantine/") == {} and _tree(repo, "main", "incoming/") == {}
    day = lakefs_repository.read_parquet(repo, "main", "raw/transactions/date=2026-03-07/part-0000.parquet")
    assert len(day) == ROWS_PER_DAY and day["transaction_id"].is_unique
    assert day["event_time"].min() >= dt.datetime(2026, 3, 7, tzinfo=dt.UTC)

    snapshot_commit = dag_run.get_task_instance("commit_snapshot").xcom_pull(task_ids="commit_snapshot")
    manifest = json.loads(
        lakefs_repository.read_bytes(
            repo,
            snapshot_commit,
            f"datasets/{pipeline_config.name}/{run_key(dag_run.run_id)}/manifest.json",
        )
    )
    assert manifest["source_commit"] == lakefs_repository.head_commit(repo, "main")
    assert sum(manifest["rows"].values()) + manifest["unlabelled_rows"] == 3 * ROWS_PER_DAY
    assert {name: sum(counts.values()) for name, counts in manifest["class_counts"].items()} == manifest["rows"]
    assert 0 < sum(counts["1"] for counts in manifest["class_counts"].values()) < 0.05 * 3 * ROWS_PER_DAY
    train = lakefs_repository.read_parquet(repo, snapshot_commit, manifest["paths"]["train"])
    assert abs(len(train) / sum(manifest["rows"].values()) - 0.7) < 0.03
    assert "datasets/" not in str(_tree(repo, "main", ""))  # the snapshot reaches main only at promotion


def _tree_with_rows(repo) -> dict[str, tuple[str, int]]:
    return {
        path: (checksum, len(lakefs_repository.read_parquet(repo, "main", path)))
        for path, checksum in _tree(repo, "main", "raw/").items()
    }


def test_three_runs_of_the_same_interval_leave_the_same_main(transactions_db):
    repo = LakeFSHook().get_repository()
    trees = []
    for _ in range(3):
        assert run(history_days=2).state == "success"
        trees.append(_tree_with_rows(repo))
    assert trees[0] == trees[1] == trees[2]
    assert sorted(trees[0]) == [f"raw/transactions/date=2026-03-0{d}/part-0000.parquet" for d in (6, 7)]
    assert all(rows == ROWS_PER_DAY for _, rows in trees[0].values())


def _unknown_category_on_march_7(url: str, share: float) -> None:
    """Rewrite 2026-03-07 with `share` of its transactions in "crypto", a category the config does not allow."""
    drift = simulator.Drift(new_categories=("crypto",), new_category_share=share)
    simulator.write_days(url, dt.date(2026, 3, 7), 1, ROWS_PER_DAY, seed=11, drift=drift)


def test_a_rejected_batch_fails_the_run_is_kept_in_quarantine_and_main_is_untouched(transactions_db):
    repo = LakeFSHook().get_repository()
    assert run(history_days=1, when=INTERVAL_END - dt.timedelta(days=1)).state == "success"
    main_before = lakefs_repository.head_commit(repo, "main")
    # 5 % of the day's transactions in a merchant category the config does not know: over the 1 % limit.
    _unknown_category_on_march_7(transactions_db, share=0.05)
    dag_run = run(history_days=1)

    assert dag_run.state == "failed"
    validate = dag_run.get_task_instance("validate")
    assert validate.state == "failed" and validate.try_number == 1  # a data error is not retried
    assert dag_run.get_task_instance("merge_raw").state == "upstream_failed"
    assert lakefs_repository.head_commit(repo, "main") == main_before
    branch = run_branch_name(the_config().name, dag_run.run_id)
    report = json.loads(
        lakefs_repository.read_bytes(repo, branch, "quarantine/transactions/date=2026-03-07/report.json")
    )
    checks = {(f["check"], f["column"]): f["rows"] for f in report["failures"]}
    crypto_rows = checks[("category", "merchant_category")]
    assert report["status"] == "failed" and 0.03 * ROWS_PER_DAY < crypto_rows < 0.07 * ROWS_PER_DAY
    assert checks[("invalid_share", None)] == crypto_rows
    rows = lakefs_repository.read_parquet(repo, branch, "quarantine/transactions/date=2026-03-07/rows.parquet")
    assert len(rows) == ROWS_PER_DAY  # the whole rejected batch, kept for inspection
    assert lakefs_repository.get_commit(repo, branch).metadata["validation_status"] == "failed"


def test_a_few_bad_rows_are_quarantined_and_the_rest_reaches_main(transactions_db):
    _unknown_category_on_march_7(transactions_db, share=0.004)
    dag_run = run(history_days=1)
    assert dag_run.state == "success"

    repo = LakeFSHook().get_repository()
    outcome = dag_run.get_task_instance("validate").xcom_pull(task_ids="validate")
    quarantined = outcome["rows_quarantined"]
    assert 0 < quarantined <= 0.01 * ROWS_PER_DAY
    day = lakefs_repository.read_parquet(repo, "main", "raw/transactions/date=2026-03-07/part-0000.parquet")
    assert len(day) == ROWS_PER_DAY - quarantined and "crypto" not in set(day["merchant_category"])
    assert _tree(repo, "main", "quarantine/") == {}
    kept = lakefs_repository.read_parquet(
        repo, outcome["quarantine_commit"], "quarantine/transactions/date=2026-03-07/rows.parquet"
    )
    assert set(kept["merchant_category"]) == {"crypto"} and len(kept) == quarantined


# Kill the process running a task, `delay` seconds after the task started; the run is then retried.
KILL_POINTS = [
    ("create_run_branch", 0.0),
    ("collect", 0.0),
    ("collect", 0.4),
    ("validate", 0.0),
    ("validate", 0.5),
    ("commit_raw", 0.0),
    ("merge_raw", 0.05),
    ("build_training_snapshot", 0.3),
    ("commit_snapshot", 0.0),
]


@pytest.mark.slow
@pytest.mark.parametrize(("task_id", "delay"), KILL_POINTS, ids=[f"{t}+{d}s" for t, d in KILL_POINTS])
def test_sigkill_during_a_task_then_retry_leaves_main_valid(transactions_db, tmp_path, task_id: str, delay: float):
    repo = LakeFSHook().get_repository()
    dag, log = (REPO_ROOT / "dags" / "ml_training.py", training_dag_id(the_config().name)), tmp_path / "killed.log"
    killed = killed_runs.kill_inside(*dag, task_id, delay, INTERVAL_END, {"history_days": 2, **DATA_ONLY}, log)
    assert killed == -signal.SIGKILL, log.read_text(errors="replace")[-4000:]
    # Whatever the kill left behind, main holds validated data only (or nothing yet).
    for path in _tree(repo, "main", ""):
        assert path.startswith("raw/transactions/date="), path

    retried = ml_training().test(
        logical_date=INTERVAL_END, run_after=INTERVAL_END, run_conf={"history_days": 2, **DATA_ONLY}
    )
    assert retried.state == "success"
    tree = _tree_with_rows(repo)
    assert sorted(tree) == [f"raw/transactions/date=2026-03-0{d}/part-0000.parquet" for d in (6, 7)]
    assert all(rows == ROWS_PER_DAY for _, rows in tree.values())
    assert set(_tree(repo, "main", "")) == set(tree)
