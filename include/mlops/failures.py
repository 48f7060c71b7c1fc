"""Why an Airflow task failed, in a few lines read from its log, and where the Airflow UI shows the rest.

Airflow 3 keeps a task's log as structured lines, one JSON object each; the REST API's log endpoint and Airflow's
own log reader hand them out as dicts. A task that raised has the task runner's line "Task failed with
exception", whose `error_detail` is the exception chain as structlog renders it: the raised exception first
(`exc_type`, `exc_value`), then what caused it. A task killed from outside raised nothing: its supervisor writes
an error or critical line instead ("Process terminated by signal. Likely out of memory error (OOM). ...").

`make run` prints these lines for a failed training run; the MLOps page shows them for each model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

EXCEPTION_EVENT = "Task failed with exception"
ERROR_LEVELS = ("error", "critical")
# Enough for a validation report's summary and its first rejected batch; the rest is in the log.
FIRST_LINES = 4
LINE_CHARS = 300
# A run whose every candidate failed has one failed task per candidate: the first few say enough.
SHOWN_TASKS = 3


@dataclass(frozen=True)
class TaskError:
    first_lines: tuple[str, ...]
    lines_left_out: int = 0


@dataclass(frozen=True)
class FailedTask:
    task_id: str
    map_index: int  # -1: not a mapped task
    map_name: str | None  # what the UI names a mapped task instance by (train_candidate's: the candidate)
    try_number: int
    error: TaskError | None  # None: its log says nothing of why (unreadable, or the task was failed by hand)
    log_url: str

    @property
    def name(self) -> str:
        if self.map_index < 0:
            return self.task_id
        named = f", {self.map_name}" if self.map_name and self.map_name != str(self.map_index) else ""
        return f"{self.task_id} (map index {self.map_index}{named})"


def task_error(log: Iterable[Mapping[str, Any]], first_lines: int = FIRST_LINES) -> TaskError | None:
    """The first lines of the error a task's log ends with: the exception it failed with (`Type: message`),
    or, when it raised none, its last error or critical line."""
    failure = last_error = None
    for line in log:
        if line.get("event") == EXCEPTION_EVENT and line.get("error_detail"):
            failure = line
        elif str(line.get("level", "")).lower() in ERROR_LEVELS:
            last_error = line
    if failure is not None:
        raised = failure["error_detail"][0]
        text = f"{raised['exc_type']}: {raised['exc_value']}"
    elif last_error is not None:
        text = str(last_error["event"])
    else:
        return None
    lines = text.strip().splitlines()
    shown = tuple(_shortened(line) for line in lines[:first_lines])
    return TaskError(shown, max(0, len(lines) - first_lines))


def run_url(airflow_ui: str, dag_id: str, run_id: str) -> str:
    """The Airflow UI page of a DAG run (Airflow 3's UI: /dags/<dag_id>/runs/<run_id>)."""
    return f"{airflow_ui.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def task_log_url(airflow_ui: str, dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
    """The Airflow UI page of one try of a task instance, which opens on its log."""
    mapped = f"/mapped/{map_index}" if map_index >= 0 else ""
    return f"{run_url(airflow_ui, dag_id, run_id)}/tasks/{quote(task_id, safe='')}{mapped}?try_number={try_number}"


def _shortened(line: str) -> str:
    return line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1] + "…"
