"""Faults injected into the tasks of the e2e stack's DAG runs, through an Airflow cluster policy.

The e2e stack's Airflow processes import `airflow_local_settings` (written into `$AIRFLOW_HOME/config/` by the e2e
fixture), which hands `task_policy` below to Airflow. The policy applies wherever a DAG file is parsed: in the dag-
processor (so the scheduler sees the retries) and in each task's own process (so the fault fires there). It is a no-
op unless the fault plan file (`MLOPS_FAULT_PLAN`) names the task.

A plan names DAG runs and the tasks of each to fault, and for each task the faults of its tries in order: try 1 gets
the first, try 2 the second, ...; the try after the last fault runs clean. A fault is an exception or a SIGKILL of
the task's process in the middle of its work (a timer at half the task's usual duration, or right after its work
when the work was over first, before Airflow records its result). Each fault writes a line to the fired log before
it fires, and every task that succeeds writes how long its work took: the middle of a task is computed from those.

Only the standard library is imported here: every Airflow process of the stack imports this module.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

PLAN_ENV = "MLOPS_FAULT_PLAN"
# The faults of a planned task's tries, in order: those that can break this project's code, in the middle of a
# task's work (after part of it, or all of it before Airflow records the result), raised, or killed with no
# chance to clean up. Faults at a task's start, before any work, proved Airflow's retry and nothing of ours, and
# were dropped from the matrix (the kills at chosen points of the data half's tasks are
# tests/dags/test_ml_training_data.py's).
MATRIX = ["exception", "kill"]
RETRY_DELAY = dt.timedelta(seconds=1)
# A task with no recorded duration gets its middle fault this soon into its work: it has not run in this stack
# yet.
DEFAULT_MIDDLE_SECONDS = 0.01


class InjectedFault(RuntimeError):
    """The exception a planned fault raises inside a task."""


def _folder() -> Path | None:
    plan = os.environ.get(PLAN_ENV)
    return Path(plan).parent if plan else None


def read_plan() -> dict[str, Any]:
    """{"runs": {dag_id: {run_id: [task_id, ...]}}: the tasks each run's faults go to; "tasks": {dag_id:
    {task_id: [kind, ...]}}: the faults of a task's tries (and its retries, set at parse time);
    "middle_seconds": {dag_id: {task_id: seconds}}}; empty without a plan file."""
    plan = os.environ.get(PLAN_ENV)
    if not plan or not os.path.exists(plan):
        return {}
    with open(plan) as file:
        return json.load(file)


def write_plan(path: Path, plan: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(plan))
    temporary.replace(path)


def _append(name: str, entry: dict[str, Any]) -> None:
    folder = _folder()
    if folder is None:
        return
    with open(folder / name, "a") as file:
        file.write(json.dumps(entry) + "\n")
        file.flush()
        os.fsync(file.fileno())  # a SIGKILL may follow at once


def read_log(folder: Path, name: str) -> list[dict[str, Any]]:
    path = folder / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def fired(folder: Path) -> list[dict[str, Any]]:
    return read_log(folder, "fired.jsonl")


def middle_seconds(folder: Path, dag_id: str) -> dict[str, float]:
    """Half the median duration of each task's work in the successful tries of `dag_id` so far."""
    durations: dict[str, list[float]] = {}
    for entry in read_log(folder, "durations.jsonl"):
        if entry["dag_id"] == dag_id:
            durations.setdefault(entry["task_id"], []).append(entry["seconds"])
    return {task: statistics.median(seconds) / 2 for task, seconds in durations.items()}


def task_policy(task) -> None:
    """Give a planned task its retries; in a task's own process, time its work and fire its faults."""
    if not os.environ.get(PLAN_ENV):
        return
    planned = read_plan().get("tasks", {}).get(task.dag_id, {}).get(task.task_id)
    if planned:
        task.retries = len(planned)
        task.retry_delay = RETRY_DELAY
        task.retry_exponential_backoff = False
    if not _in_task_process():
        return  # the dag-processor serializes the DAG: hooks are no business of its
    if hasattr(task, "partial_kwargs"):  # a mapped task: each of its instances is made from these
        task.partial_kwargs.update(pre_execute=_before_work, post_execute=_after_work)
    else:
        task._pre_execute_hook, task._post_execute_hook = _before_work, _after_work
        task.execute = _execute_ending_the_work_when_it_raises


def _in_task_process() -> bool:
    """Whether the DAG is being parsed by Airflow's task runner (to run one of its tasks)."""
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "parse" and frame.f_code.co_filename.endswith("task_runner.py"):
            return True
        frame = frame.f_back
    return False


# One task runs in a task process: what its hooks share.
_work: dict[str, Any] = {}


def _before_work(context) -> None:
    fault = _fault_of(context)
    _work.update(started=time.monotonic(), fault=fault, timer=None)
    if fault:
        signal.signal(signal.SIGUSR2, _raise_injected)
        timer = threading.Timer(fault["after"], _fire, (fault, f"{fault['after']:.2f} s into its work"))
        timer.daemon = True
        timer.start()
        _work["timer"] = timer


def _after_work(context, result) -> None:
    fault, timer = _work.get("fault"), _work.get("timer")
    if timer is not None:
        timer.cancel()
        timer.join()
        if not fault.get("fired"):
            _fire(fault, "right after its work, before Airflow records its result")
        elif fault["kind"] == "exception":
            # The exception went off inside the work, whose own code caught it (onnxruntime retries a session
            # on any exception, for one): the try still fails, as it would have.
            _append("swallowed.jsonl", fault)
            raise InjectedFault(f"the injected exception of try {fault['try_number']} was caught by the task's code")
    ti = context["ti"]
    seconds = time.monotonic() - _work["started"]
    _append("durations.jsonl", {"dag_id": ti.dag_id, "task_id": ti.task_id, "seconds": seconds})


def _execute_ending_the_work_when_it_raises(context):
    """A branch or a trigger hands its outcome to Airflow by raising, so Airflow never calls its post-execute hook:
    without this its fault would be left to the timer, which a short work ends before (a branch's second try once
    ended without its kill that way)."""
    task = context["ti"].task  # the copy with rendered templates that Airflow runs, not the parsed one
    try:
        return type(task).execute(task, context)
    except InjectedFault:
        raise
    except BaseException:
        _after_work(context, None)
        raise


def _fault_of(context) -> dict[str, Any] | None:
    plan = read_plan()
    ti = context["ti"]
    # A mapped task's first instance gets the faults: the others are the same code on other input.
    if ti.task_id not in plan.get("runs", {}).get(ti.dag_id, {}).get(ti.run_id, []) or ti.map_index > 0:
        return None
    faults = plan.get("tasks", {}).get(ti.dag_id, {}).get(ti.task_id, [])
    if ti.try_number > len(faults):
        return None
    kind = faults[ti.try_number - 1]
    after = plan.get("middle_seconds", {}).get(ti.dag_id, {}).get(ti.task_id, DEFAULT_MIDDLE_SECONDS)
    return {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "try_number": ti.try_number,
        "kind": kind,
        "after": after,
    }


def _fire(fault: dict[str, Any], when: str) -> None:
    fault["fired"] = True
    _append("fired.jsonl", {**fault, "when": when, "at": time.time()})
    if fault["kind"] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif threading.current_thread() is threading.main_thread():
        raise InjectedFault(f"injected exception in the middle of try {fault['try_number']}")
    else:
        os.kill(os.getpid(), signal.SIGUSR2)  # the handler raises it in the task's (main) thread


def _raise_injected(signum, frame) -> None:
    raise InjectedFault("injected exception in the middle of the task's work")
