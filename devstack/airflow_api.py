"""A small client of Airflow's REST API v2, as `make run`, the end-to-end tests and the benchmarks use it.

It logs in the way any API user does (`POST /auth/token` with the admin's password gives a JWT) and keeps to
the public API, so what works here works against any Airflow 3 deployment, compose's included.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

FINISHED = ("success", "failed")
# A call answered 5xx is tried this many times in all, pausing 1 s, 2 s, ... between tries.
TRANSIENT_TRIES = 5
TRANSIENT_PAUSE_SECONDS = 1.0


class AirflowAPIError(RuntimeError):
    """Airflow answered with an error; the message says which call and what Airflow said."""


@dataclass(frozen=True)
class TaskState:
    task_id: str
    state: str | None


class AirflowAPI:
    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._token = ""

    def close(self) -> None:
        self._client.close()

    def _login(self) -> None:
        response = self._client.post("/auth/token", json=self._credentials)
        if response.status_code not in (200, 201):
            user = self._credentials["username"]
            raise AirflowAPIError(f"login to {self.base_url} as {user} failed: {response.text}")
        self._token = response.json()["access_token"]

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call; logs in first, and again once when the token has expired (401). An answer of 5xx (on
        SQLite, a metadata database another component holds locked) is tried again, up to TRANSIENT_TRIES
        times with a growing pause: Airflow rolled the call's transaction back, so trying again is safe."""
        relogged = False
        for attempt in range(1, TRANSIENT_TRIES + 1):
            if not self._token:
                self._login()
            response = self._client.request(method, path, headers={"Authorization": f"Bearer {self._token}"}, **kwargs)
            if response.status_code == 401 and not relogged:
                self._token, relogged = "", True
                continue
            if response.status_code >= 500 and attempt < TRANSIENT_TRIES:
                time.sleep(TRANSIENT_PAUSE_SECONDS * attempt)
                continue
            if response.status_code >= 400:
                raise AirflowAPIError(f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}")
            return response.json() if response.content else None
        raise AirflowAPIError(f"{method} {path}: no answer after {TRANSIENT_TRIES} tries")

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self._dags()}

    def paused_dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self._dags() if d["is_paused"]}

    def _dags(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/v2/dags", params={"limit": 1000})["dags"]

    def wait_for_dags(self, dag_ids: set[str], timeout: float = 180.0) -> None:
        """Until the dag-processor has parsed all of `dag_ids`."""
        deadline = time.monotonic() + timeout
        while not dag_ids <= (known := self.dag_ids()):
            if time.monotonic() > deadline:
                raise AirflowAPIError(f"DAGs {sorted(dag_ids - known)} not parsed after {timeout:.0f} s")
            time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(
        self,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        run_id: str | None = None,
        logical_date: dt.datetime | None = None,
    ) -> str:
        """Start a run; without a logical date it runs for now, as the UI's trigger button does. Returns its id."""
        body: dict[str, Any] = {"logical_date": logical_date and logical_date.isoformat(), "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def runs(self, dag_id: str, limit: int = 50) -> list[dict[str, Any]]:
        params = {"order_by": "-run_after", "limit": limit}
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns", params=params)["dag_runs"]

    def task_states(self, dag_id: str, run_id: str) -> list[TaskState]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        instances = self.request("GET", path, params={"limit": 500})["task_instances"]
        return [TaskState(t["task_id"], t["state"]) for t in instances]

    def failed_task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's task instances that failed (not those left upstream_failed by them), first failed first."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        instances = self.request("GET", path, params={"state": "failed", "limit": 500})["task_instances"]
        return sorted(instances, key=lambda t: (t["end_date"] or "", t["map_index"]))

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> list[dict]:
        """One try's log as Airflow 3 keeps it: structured lines (event, level, and the exception of a failed
        try as `error_detail`), the whole of it once the try has ended."""
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
            f"/logs/{try_number}"
        )
        return self.request("GET", path, params={"map_index": map_index})["content"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
            f"/xcomEntries/{key}"
        )
        return self.request("GET", path, params={"deserialize": True})["value"]

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float,
        on_progress: Callable[[list[TaskState]], None] | None = None,
        poll_seconds: float = 3.0,
    ) -> str:
        """Until the run has finished; returns its state. `on_progress` sees the task states at every poll."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.run(dag_id, run_id)["state"]
            if on_progress is not None:
                on_progress(self.task_states(dag_id, run_id))
            if state in FINISHED:
                return state
            if time.monotonic() > deadline:
                raise AirflowAPIError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")
            time.sleep(poll_seconds)


def progress_line(tasks: list[TaskState]) -> str:
    """`7/18 tasks done, running: gate` for a terminal."""
    done = [t for t in tasks if t.state in ("success", "skipped")]
    running = sorted({t.task_id for t in tasks if t.state == "running"})
    failed = sorted({t.task_id for t in tasks if t.state in ("failed", "upstream_failed")})
    line = f"{len(done)}/{len(tasks)} tasks done"
    if running:
        line += f", running: {', '.join(running)}"
    if failed:
        line += f", failed: {', '.join(failed)}"
    return line
