"""Batch scoring started by data arrival, through Airflow 3's event-driven scheduling on a real scheduler,
triggerer and dag-processor: a file announced on a model's Redis channel becomes an asset event, the scheduler
starts one asset-triggered run of `batch_scoring__<model>` (the DAG file as shipped), and the run scores that
file with the model's champion into lakeFS and merges it; an announced file that is not there fails its run,
naming it.

The stack is the local stack's Airflow as `make run` runs it (devstack/services.py: one process per component,
LocalExecutor, SQLite), with the batch scoring DAG file alone in its DAGs folder, a config folder holding one
model (palmerpenguins: three text species, missing values), the lakeFS stand-in, `mlflow server`, and the
BentoML model store of this test session, where the champion is. (The e2e package's stack turns the scheduler's
own runs off, which would hold back asset-triggered runs too.)
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lakefs
import pandas as pd
import pytest
import redis
import sqlalchemy as sa
import yaml
from mlflow.tracking import MlflowClient

from devstack import services
from devstack.airflow_api import AirflowAPI
from devstack.processes import free_port
from devstack.supervisor import Supervisor
from include.mlops import batch_runs, deployment, lakefs_repository, operations_store
from include.mlops.batch_arrival import BatchArrival, arrival_channel, publish
from include.mlops.naming import batch_scoring_dag_id
from tests.conftest import REPO_ROOT
from tests.fixtures.champions import fitted_onnx, register_champion, zoo_config
from tests.fixtures.services import REDIS_HOST, REDIS_PORT
from tests.zoo.datasets import ZOO

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ISLANDS = ["Biscoe", "Dream", "Torgersen"]


@dataclass(frozen=True)
class ArrivalStack:
    api: AirflowAPI
    redis: redis.Redis
    model: str
    dag_id: str
    slow_model: str  # one with a run timeout it cannot meet, and no champion
    rows: pd.DataFrame
    repo: lakefs.Repository
    folder: Path
    logs: Path


@pytest.fixture(scope="module")
def arrival_stack(tmp_path_factory, lakefs_server, mlflow_server) -> Iterator[ArrivalStack]:
    folder = tmp_path_factory.mktemp("batch-trigger")
    # A model of this test's own: its channel is not shared with another stack on the same Redis.
    model = f"penguins_{secrets.token_hex(4)}"
    configs = folder / "configs"
    configs.mkdir()
    batch = {"arrivals": True, "chunk_rows": 150}
    config = zoo_config(configs, "penguins", model, island={"allowed": ISLANDS}, batch=batch)
    slow_model = f"{model}_slow"
    slow = yaml.safe_load(Path(config.path).read_text())
    slow["model"]["registered_name"], slow["batch"] = slow_model, {"timeout_hours": 0.0003}  # about 1 s
    slow["dataset"]["name"] += "_slow"  # a config naming the dataset of another is left out
    (configs / "penguins-slow.yaml").write_text(yaml.safe_dump(slow))
    rows = next(z for z in ZOO if z.name == "penguins").rows()
    client = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    onnx = fitted_onnx(config, rows, "LogisticRegression", {"max_iter": 2000})
    run_id = register_champion(client, config)
    deployment.save_to_model_store(onnx, config, "1", {"mlflow_run_id": run_id})
    repo = lakefs.Repository(f"test-{secrets.token_hex(6)}", client=lakefs_server.client())
    repo.create(f"local://{repo.id}", default_branch="main")

    dags = folder / "dags"
    dags.mkdir()
    (dags / "batch_scoring.py").symlink_to(REPO_ROOT / "dags" / "batch_scoring.py")
    home, logs = folder / "airflow", folder / "logs"
    mlflow_host, mlflow_port = mlflow_server.url.removeprefix("http://").split(":")
    store = folder / "operations.db"  # where a batch run records itself (batch_runs) and its drift check
    operations_store.upgrade(sa.create_engine(f"sqlite:///{store}"))
    connections = {
        "INFERENCE_LOG_DB": {"conn_type": "sqlite", "host": str(store)},
        "REDIS_DEFAULT": {"conn_type": "redis", "host": REDIS_HOST, "port": REDIS_PORT},
        "MLFLOW_DEFAULT": {"conn_type": "http", "host": mlflow_host, "port": int(mlflow_port), "schema": "http"},
        "LAKEFS_DEFAULT": {
            "conn_type": "lakefs",
            "host": lakefs_server.url,
            "login": lakefs_server.access_key_id,
            "password": lakefs_server.secret_access_key,
            "extra": json.dumps({"repository": repo.id}),
        },
    }
    env = services.airflow_env(
        home,
        free_port(),
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "MLOPS_CONFIG_DIR": str(configs),
            **{f"AIRFLOW_CONN_{name}": json.dumps(conn) for name, conn in connections.items()},
        },
        database_url=f"sqlite:///{home}/airflow.db",
    )
    env.pop("MLOPS_MODEL_STORE_URL", None)  # the champion is in this session's BentoML model store
    services.write_airflow_password(home, "admin", "admin")
    logs.mkdir()
    with open(logs / "airflow-setup.log", "wb") as log:
        subprocess.run([services.venv_bin("airflow"), "db", "migrate"], env=env, stdout=log, stderr=log, check=True)
    supervisor = Supervisor(say=lambda line: None)
    redis_client = redis.Redis(REDIS_HOST, REDIS_PORT)
    api = None
    try:
        for component in services.airflow_components(env):
            supervisor.start(component[0], lambda c=component: services.start_airflow_component(c, env, logs))
        api = AirflowAPI(env["AIRFLOW__API__BASE_URL"], "admin", "admin")
        dag_id = batch_scoring_dag_id(model)
        yield ArrivalStack(api, redis_client, model, dag_id, slow_model, rows, repo, folder, logs)
    finally:
        if api is not None:
            api.close()
        redis_client.close()
        supervisor.stop_all()
        repo.delete()


def wait_for_subscriber(stack: ArrivalStack, timeout: float = 120) -> float:
    """Until the triggerer listens on the model's channel (a message before that is lost); returns the seconds
    waited."""
    start = time.monotonic()
    channel = arrival_channel(stack.model)
    while stack.redis.pubsub_numsub(channel)[0][1] == 0:
        if time.monotonic() - start > timeout:
            pytest.fail(f"nobody subscribed to {channel} after {timeout:.0f} s\n{log_tail(stack, 'triggerer')}")
        time.sleep(0.2)
    return time.monotonic() - start


def wait_for_runs(stack: ArrivalStack, count: int, timeout: float = 180) -> list[dict]:
    """Until the DAG has `count` finished runs, oldest first."""
    deadline = time.monotonic() + timeout
    while True:
        runs = stack.api.runs(stack.dag_id) if stack.dag_id in set(stack.api.dag_ids()) else []
        if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs):
            return sorted(runs, key=lambda r: r["run_after"])
        if time.monotonic() > deadline:
            states = [(r["dag_run_id"], r["state"]) for r in runs]
            pytest.fail(f"expected {count} finished runs of {stack.dag_id} after {timeout:.0f} s, have {states}")
        time.sleep(0.5)


def log_tail(stack: ArrivalStack, component: str, lines: int = 30) -> str:
    path = stack.logs / f"airflow-{component}.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def test_an_announced_file_is_scored_by_the_champion_and_a_missing_one_fails_naming_it(arrival_stack):
    stack = arrival_stack
    waited = wait_for_subscriber(stack)
    partner = stack.rows.drop(columns=["species"]).head(400)  # a file of rows to score: no label
    batch = stack.folder / "penguins-2026-12-07.parquet"
    partner.to_parquet(batch, index=False)

    published = time.time()
    assert publish(stack.redis, BatchArrival(str(batch), stack.model)) == 1
    [run] = wait_for_runs(stack, 1)

    assert run["state"] == "success", stack.api.failed_task_instances(stack.dag_id, run["dag_run_id"])
    assert run["run_type"] == "asset_triggered" and run["logical_date"] is None
    event = stack.api.xcom(stack.dag_id, run["dag_run_id"], "merge_predictions")
    assert (event["model_version"], event["rows_scored"]) == ("1", str(len(partner))), event
    parts = [o.path for o in lakefs_repository.list_objects(stack.repo, "main", event["predictions"])]
    assert len(parts) == 3  # 400 rows in chunks of 150
    scored = pd.concat([lakefs_repository.read_parquet(stack.repo, "main", p) for p in parts])
    assert sorted(scored["id"]) == sorted(partner["id"].astype(str))  # the zoo config's id column
    assert set(scored["prediction"]) <= {"Adelie", "Chinstrap", "Gentoo"} and set(scored["model_version"]) == {"1"}
    [recorded] = batch_runs.recent(sa.create_engine(f"sqlite:///{stack.folder / 'operations.db'}"), stack.model, 10)
    assert (recorded["state"], recorded["rows_scored"], recorded["airflow_run_id"]) == (
        "merged",
        len(partner),
        run["dag_run_id"],
    )
    start_latency = pd.Timestamp(run["start_date"]).timestamp() - published
    print(f"\nsubscribed {waited:.1f} s after the stack was up; publish to run start {start_latency:.1f} s")

    # The trigger ends after each message and the triggerer starts it again: wait until it listens once more.
    wait_for_subscriber(stack, timeout=30)
    missing = stack.folder / "never-written.parquet"
    announced = subprocess.run(
        [sys.executable, "-m", "include.mlops.publish_batch", "--model", stack.model, "--path", str(missing),
         "--redis-url", f"redis://{REDIS_HOST}:{REDIS_PORT}/0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert announced.returncode == 0, announced.stderr
    first, second = wait_for_runs(stack, 2)

    assert first["dag_run_id"] == run["dag_run_id"] and second["state"] == "failed"
    [failed] = stack.api.failed_task_instances(stack.dag_id, second["dag_run_id"])
    assert failed["task_id"] == "collect_input"
    log = stack.api.task_log(stack.dag_id, second["dag_run_id"], "collect_input", failed["try_number"])
    errors = [json.dumps(line.get("error_detail")) for line in log if line.get("error_detail")]
    assert any(f"names {missing}, which is not a file" in e for e in errors), errors
    # The teardown record_failure ran before the run was failed: its row says so, with the version it resolved.
    rows = batch_runs.recent(sa.create_engine(f"sqlite:///{stack.folder / 'operations.db'}"), stack.model, 10)
    recorded = {r["airflow_run_id"]: r for r in rows}[second["dag_run_id"]]
    assert (recorded["state"], recorded["model_version"], recorded["key"], recorded["rows_scored"]) == (
        "failed",
        "1",
        None,
        0,
    )


def test_a_run_past_its_timeout_is_failed_by_the_scheduler_and_recorded_failed(arrival_stack):
    stack = arrival_stack
    dag_id = batch_scoring_dag_id(stack.slow_model)
    stack.api.wait_for_dags({dag_id})
    run_id = stack.api.trigger(dag_id)
    assert stack.api.wait_for_run(dag_id, run_id, timeout=120, poll_seconds=0.5) == "failed"
    # The scheduler skipped every task left, the teardown record_failure too: the DAG's failure callback, in the
    # dag-processor, recorded the run.
    assert {t.task_id: t.state for t in stack.api.task_states(dag_id, run_id)}["record_failure"] == "skipped"
    store = sa.create_engine(f"sqlite:///{stack.folder / 'operations.db'}")
    deadline = time.monotonic() + 60
    while not (rows := batch_runs.recent(store, stack.slow_model, 10)):
        if time.monotonic() > deadline:
            pytest.fail(f"no batch_runs row for {run_id} after 60 s\n{log_tail(stack, 'dag-processor')}")
        time.sleep(0.5)
    [recorded] = rows
    assert (recorded["airflow_run_id"], recorded["state"], recorded["model_version"]) == (run_id, "failed", None)
