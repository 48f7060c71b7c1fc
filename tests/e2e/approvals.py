"""A training run's request for approval, read and answered through Airflow's REST API as a reviewer's tool
would (`PATCH .../taskInstances/approve_deployment/-1/hitlDetails`)."""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

from devstack.airflow_api import FINISHED, AirflowAPI

APPROVAL_TASK = "approve_deployment"


def hitl_path(dag_id: str, run_id: str) -> str:
    run = urllib.parse.quote(run_id, safe="")
    return f"/api/v2/dags/{dag_id}/dagRuns/{run}/taskInstances/{APPROVAL_TASK}/-1/hitlDetails"


def wait_until_asked(api: AirflowAPI, dag_id: str, run_id: str, timeout: float = 600) -> dict[str, Any]:
    """The run's request for approval (its HITL detail), once its approval task waits for an answer."""
    deadline = time.monotonic() + timeout
    while True:
        states = {t.task_id: t.state for t in api.task_states(dag_id, run_id)}
        if states.get(APPROVAL_TASK) == "awaiting_input":
            return api.request("GET", hitl_path(dag_id, run_id))
        run_state = api.run(dag_id, run_id)["state"]
        if run_state in FINISHED:
            raise AssertionError(f"{dag_id} run {run_id} ended {run_state} without asking for approval: {states}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{dag_id} run {run_id} did not ask for approval in {timeout:.0f} s: {states}")
        time.sleep(2)


def answer(api: AirflowAPI, dag_id: str, run_id: str, option: str) -> dict[str, Any]:
    """Answer the run's request with `option` (Approve or Reject); returns the recorded answer."""
    return api.request("PATCH", hitl_path(dag_id, run_id), json={"chosen_options": [option], "params_input": {}})


def review(stack, dag_id: str, run_id: str, option: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A person's review of a run's challenger, through the REST API on a connection of its own (it runs in a
    thread beside the test): the request they read, and their answer."""
    api = stack.airflow_api()
    try:
        request = wait_until_asked(api, dag_id, run_id)
        return request, answer(api, dag_id, run_id, option)
    finally:
        api.close()
