"""The names that tie a model's parts together: DAG ids and run branches per model."""

from __future__ import annotations

import pytest

from include.mlops.naming import (
    monitor_dag_id,
    rollback_dag_id,
    run_branch_name,
    run_branch_prefix,
    run_key,
    training_dag_id,
)


def test_each_model_has_its_own_dags():
    assert training_dag_id("fraud_detector") == "ml_training__fraud_detector"
    assert monitor_dag_id("fraud_detector") == "drift_monitor__fraud_detector"
    assert rollback_dag_id("fraud_detector") == "model_rollback__fraud_detector"


def test_two_models_runs_of_the_same_id_get_branches_of_their_own():
    run_id = "scheduled__2026-12-02T02:00:00+00:00"
    assert run_key(run_id) == "scheduled__2026-12-02T02-00-00-00-00"
    first, second = run_branch_name("fraud", run_id), run_branch_name("fraud_v2", run_id)
    assert first == "run-fraud-scheduled__2026-12-02T02-00-00-00-00" and first != second
    assert first.startswith(run_branch_prefix("fraud")) and not second.startswith(run_branch_prefix("fraud"))


def test_a_run_id_with_nothing_usable_is_refused():
    with pytest.raises(ValueError, match="nothing usable"):
        run_key("::")
