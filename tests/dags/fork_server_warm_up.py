"""Imported once by the fork server of tests/dags/killed_runs.py (never by a test): what every killed run needs
before its DAG starts, made before the fork.

Besides the tasks' libraries, Airflow's in-process execution API, which `dag.test()` talks to: its app routes
its first request 5 s slower than the next (it builds its versioned routes then). One request through the ASGI
app here, on an event loop of this thread, does that without leaving a thread behind (its transport, which runs a
loop thread, is made in each child).
"""

import asyncio
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))  # as Airflow puts it there

from airflow.sdk.execution_time.supervisor import in_process_api_server

from mlops_airflow import preload


async def _first_request() -> None:
    app = in_process_api_server().app
    path = "/execution/health"
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b""}
    scope |= {"headers": [], "http_version": "1.1", "scheme": "http", "server": ("in-process", 80), "root_path": ""}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        pass

    await app(scope, receive, send)


preload.preload()
asyncio.run(_first_request())
assert threading.active_count() == 1, f"a thread would not survive the fork: {threading.enumerate()}"
