"""Why a task failed, read from its log: on the logs of real failed tasks.

The logs in task_logs/ are the files Airflow 3.3 wrote for three tasks of `make run` (`python -m devstack`
with two breast cancer configs of their own), copied as they were: a train_candidate whose candidate's parameters
sklearn refused (LogisticRegression with C: -1), the validate of a config whose range check every row failed
(mean_radius at most 1), and a train_candidate whose process was SIGKILLed while it trained.
"""

from __future__ import annotations

import json
from pathlib import Path

from include.mlops import failures

LOGS = Path(__file__).parent / "task_logs"


def log(name: str) -> list[dict]:
    return [json.loads(line) for line in (LOGS / name).read_text().splitlines()]


def test_a_task_that_raised_shows_its_exception_type_and_message():
    error = failures.task_error(log("train_candidate_failed_to_fit.jsonl"))
    assert error == failures.TaskError(
        (
            "AirflowFailException: candidate logreg (LogisticRegression) failed to fit: The 'C' parameter of "
            "LogisticRegression must be a float in the range (0.0, inf]. Got -1.0 instead.",
        )
    )


def test_a_long_error_shows_its_first_lines_and_how_many_are_left_out():
    error = failures.task_error(log("validate_rejected_batches.jsonl"))
    assert error.first_lines[0].startswith("AirflowFailException: 30 batch(es) rejected, kept in quarantine")
    assert error.first_lines[1:] == (
        "raw/cells_data/date=2026-11-07/part-0000.parquet: failed (16 rows in, 0 valid, 16 quarantined)",
        "- row check 'range' on column 'mean_radius': 16 row(s) - value outside [0.0, 1.0]",
        "- batch check 'invalid_share': 16 row(s) - 100.00% of rows fail row-level checks; at most 10.00% may be "
        "quarantined",
    )
    assert error.lines_left_out == 87
    assert failures.task_error(log("validate_rejected_batches.jsonl"), first_lines=1).lines_left_out == 90


def test_a_line_longer_than_a_screen_is_cut():
    lines = log("train_candidate_failed_to_fit.jsonl")
    [failed] = [line for line in lines if "error_detail" in line]
    failed["error_detail"][0]["exc_value"] = "x" * 5000
    [shown] = failures.task_error(lines).first_lines
    assert len(shown) == failures.LINE_CHARS and shown.endswith("x…")


def test_a_killed_task_shows_what_its_supervisor_wrote():
    error = failures.task_error(log("train_candidate_killed.jsonl"))
    assert error.first_lines == (
        "Process terminated by signal. Likely out of memory error (OOM). For more information, see "
        "https://airflow.apache.org/docs/apache-airflow/stable/troubleshooting.html#process-terminated-by-signal.",
    )


def test_a_log_without_an_error_says_nothing():
    lines = log("train_candidate_failed_to_fit.jsonl")
    before_the_failure = lines[: next(n for n, line in enumerate(lines) if "error_detail" in line)]
    assert before_the_failure and failures.task_error(before_the_failure) is None
    assert failures.task_error([]) is None


def test_a_mapped_task_is_named_by_its_map_index_and_what_it_maps_over():
    def task(map_index: int, map_name: str | None) -> failures.FailedTask:
        return failures.FailedTask("train_candidate", map_index, map_name, 1, None, "")

    assert task(0, "logreg").name == "train_candidate (map index 0, logreg)"
    assert task(2, None).name == task(2, "2").name == "train_candidate (map index 2)"
    assert failures.FailedTask("validate", -1, None, 1, None, "").name == "validate"


def test_the_log_of_a_try_is_a_page_of_the_airflow_ui():
    run = "manual__2026-12-07T03:38:30.729171+00:00"
    ui = "http://127.0.0.1:8080/"
    assert failures.run_url(ui, "ml_training__cells", run) == (
        "http://127.0.0.1:8080/dags/ml_training__cells/runs/manual__2026-12-07T03%3A38%3A30.729171%2B00%3A00"
    )
    mapped = failures.task_log_url(ui, "ml_training__cells", run, "train_candidate", 0, 2)
    assert mapped == f"{failures.run_url(ui, 'ml_training__cells', run)}/tasks/train_candidate/mapped/0?try_number=2"
    assert (
        failures.task_log_url(ui, "d", "r", "validate", -1, 1)
        == "http://127.0.0.1:8080/dags/d/runs/r/tasks/validate?try_number=1"
    )
