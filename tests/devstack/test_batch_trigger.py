"""Data arrival starts a DAG run through Airflow 3's event-driven scheduling, on a real scheduler, triggerer and
dag-processor: a batch arrival published on the model's Redis channel becomes an asset event, the scheduler
starts one asset-triggered run for it, and the run's task reads the arrival from `triggering_asset_events`.

The stack is the local stack's Airflow (devstack/services.py: one process per component, LocalExecutor, SQLite)
with only a tiny DAG in its DAGs folder, scheduled on `arrival_asset(model)`: the arrival mechanism as `make run`
runs it, in under a minute. tests/e2e/test_batch_scoring.py proves the real batch_scoring DAG on it, with
CeleryExecutor and Postgres as compose runs Airflow.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from devstack import services
from devstack.airflow_api import AirflowAPI
from devstack.processes import free_port
from devstack.supervisor import Supervisor
from include.mlops.batch_arrival import BatchArrival, arrival_channel, publish
from tests.conftest import REPO_ROOT
from tests.fixtures.services import REDIS_HOST, REDIS_PORT

pytestmark = [pytest.mark.redis, pytest.mark.slow]

DAG_ID = "batch_arrival_test"
TASK_ID = "read_arrivals"
DAG_FILE = """
from airflow.sdk import dag, task
from mlops_airflow.batch_arrivals import arrival_asset, arrivals_of_run

from include.mlops.batch_arrival import require_file

MODEL = {model!r}


@dag(dag_id={dag_id!r}, schedule=[arrival_asset(MODEL)], catchup=False)
def batch_arrival_test():
    @task(task_id={task_id!r})
    def read_arrivals(**context):
        run = context["dag_run"]
        arrivals = arrivals_of_run(context["triggering_asset_events"], MODEL)
        return {{
            "run_id": run.run_id,
            "run_type": run.run_type.value,
            "paths": [str(require_file(arrival, MODEL)) for arrival in arrivals],
        }}

    read_arrivals()


batch_arrival_test()
"""


@dataclass(frozen=True)
class ArrivalStack:
    api: AirflowAPI
    redis: redis.Redis
    model: str
    folder: Path
    logs: Path


@pytest.fixture(scope="module")
def arrival_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrivalStack]:
    folder = tmp_path_factory.mktemp("batch-trigger")
    # A model of this test's own: its channel is not shared with another stack on the same Redis.
    model = f"arrival_test_{secrets.token_hex(4)}"
    dags = folder / "dags"
    dags.mkdir()
    (dags / "batch_arrival_test.py").write_text(DAG_FILE.format(model=model, dag_id=DAG_ID, task_id=TASK_ID))
    home, logs = folder / "airflow", folder / "logs"
    redis_connection = {"conn_type": "redis", "host": REDIS_HOST, "port": REDIS_PORT, "extra": {"db": 0}}
    env = services.airflow_env(
        home,
        free_port(),
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW_CONN_REDIS_DEFAULT": json.dumps(redis_connection),
        },
    )
    services.write_airflow_password(home, "admin", "admin")
    logs.mkdir()
    with open(logs / "airflow-setup.log", "wb") as log:
        subprocess.run([services.venv_bin("airflow"), "db", "migrate"], env=env, stdout=log, stderr=log, check=True)
    supervisor = Supervisor(say=lambda line: None)
    client = redis.Redis(REDIS_HOST, REDIS_PORT)
    api = None
    try:
        for component in services.airflow_components(env):
            supervisor.start(component[0], lambda c=component: services.start_airflow_component(c, env, logs))
        api = AirflowAPI(env["AIRFLOW__API__BASE_URL"], "admin", "admin")
        yield ArrivalStack(api, client, model, folder, logs)
    finally:
        if api is not None:
            api.close()
        client.close()
        supervisor.stop_all()


def wait_for_subscriber(stack: ArrivalStack, timeout: float = 120) -> float:
    """Until the triggerer listens on the model's channel (a message before that is lost); returns the seconds
    waited."""
    start = time.monotonic()
    channel = arrival_channel(stack.model)
    while stack.redis.pubsub_numsub(channel)[0][1] == 0:
        if time.monotonic() - start > timeout:
            pytest.fail(f"nobody subscribed to {channel} after {timeout:.0f} s\n{triggerer_log(stack)}")
        time.sleep(0.2)
    return time.monotonic() - start


def wait_for_runs(stack: ArrivalStack, count: int, timeout: float = 90) -> list[dict]:
    """Until the DAG has `count` finished runs, oldest first."""
    deadline = time.monotonic() + timeout
    while True:
        known = set(stack.api.dag_ids())
        runs = stack.api.runs(DAG_ID) if DAG_ID in known else []
        if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs):
            return sorted(runs, key=lambda r: r["run_after"])
        if time.monotonic() > deadline:
            states = [(r["dag_run_id"], r["state"]) for r in runs]
            pytest.fail(f"expected {count} finished runs of {DAG_ID} after {timeout:.0f} s, have {states}")
        time.sleep(0.5)


def triggerer_log(stack: ArrivalStack, lines: int = 30) -> str:
    path = stack.logs / "airflow-triggerer.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def test_an_arrival_starts_one_run_that_reads_its_file_and_one_naming_a_missing_file_fails_naming_it(
    arrival_stack: ArrivalStack,
):
    stack = arrival_stack
    waited = wait_for_subscriber(stack)
    batch = stack.folder / "batch-0001.csv"
    batch.write_text("id,amount\n1,9.5\n")

    published = time.time()
    assert publish(stack.redis, BatchArrival(str(batch), stack.model)) == 1
    [run] = wait_for_runs(stack, 1)

    assert run["state"] == "success", stack.api.failed_task_instances(DAG_ID, run["dag_run_id"])
    assert run["run_type"] == "asset_triggered" and run["dag_run_id"].startswith("asset_triggered__")
    assert run["logical_date"] is None  # an asset-triggered run has no data interval of its own
    result = stack.api.xcom(DAG_ID, run["dag_run_id"], TASK_ID)
    assert result == {"run_id": run["dag_run_id"], "run_type": "asset_triggered", "paths": [str(batch)]}
    start_latency = dt.datetime.fromisoformat(run["start_date"]).timestamp() - published
    print(f"\nsubscribed {waited:.1f} s after the stack was up; publish to run start {start_latency:.1f} s")

    # The trigger ends after each message and the triggerer starts it again: wait until it listens once more.
    wait_for_subscriber(stack, timeout=30)
    missing = stack.folder / "never-written.csv"
    announced = subprocess.run(
        [sys.executable, "-m", "devstack.publish_batch", "--model", stack.model, "--path", str(missing),
         "--redis-url", f"redis://{REDIS_HOST}:{REDIS_PORT}/0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert announced.returncode == 0, announced.stderr
    first, second = wait_for_runs(stack, 2)

    assert first["dag_run_id"] == run["dag_run_id"]
    assert second["state"] == "failed"
    [failed] = stack.api.failed_task_instances(DAG_ID, second["dag_run_id"])
    log = stack.api.task_log(DAG_ID, second["dag_run_id"], TASK_ID, failed["try_number"])
    errors = [json.dumps(line.get("error_detail")) for line in log if line.get("error_detail")]
    assert any("FileNotFoundError" in e and str(missing) in e for e in errors), errors
