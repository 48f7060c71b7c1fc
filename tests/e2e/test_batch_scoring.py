"""Batch scoring started by data arrival, on the real scheduler and triggerer of the stack the e2e tests share.

A partner's file of transactions is announced on the demo model's Redis channel (as `python -m
devstack.publish_batch` does); the triggerer's watcher turns the message into an asset event, and
`batch_scoring__fraud_detector` scores the file with the champion into lakeFS and merges it. An announced file
that is not there fails its run, naming it.
"""

from __future__ import annotations

import time
from pathlib import Path

import lakefs
import pandas as pd
import pytest
import redis

from devstack import demo
from include.mlops import lakefs_repository
from include.mlops.batch_arrival import BatchArrival, publish
from include.mlops.naming import batch_scoring_dag_id
from tests.e2e.conftest import DEMO
from tests.fixtures.services import REDIS_HOST, REDIS_PORT

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

RUN_TIMEOUT = 300


def test_an_announced_file_is_scored_by_the_champion_and_a_missing_one_fails_naming_it(e2e, champions, tmp_path):
    stack = e2e.stack
    api = stack.airflow_api()
    dag_id = batch_scoring_dag_id(DEMO)
    api.wait_for_dags({dag_id})
    api.unpause(dag_id)
    served = demo.served_model(stack.urls["Serving"], stack.credentials["serving_admin_token"], DEMO)
    records = demo.sample_records(stack.urls["lakeFS"], stack.lakefs_keys, served.labels, e2e.config(DEMO), 250)
    partner = pd.DataFrame([{"transaction_id": f"partner-{n}", **r} for n, r in enumerate(records)])
    path = tmp_path / "partner_2026-12-07.parquet"
    partner.to_parquet(path, index=False)

    run = announce(api, dag_id, path)
    assert api.wait_for_run(dag_id, run, RUN_TIMEOUT) == "success", e2e.logs()
    event = api.xcom(dag_id, run, "merge_predictions")
    assert (event["model_version"], event["rows_scored"]) == (champions[DEMO].version, "250"), event
    client = lakefs_repository.connect(f"{stack.urls['lakeFS']}/api/v1", *stack.lakefs_keys)
    repo = lakefs.Repository(event["lakefs_repository"], client=client)
    found = lakefs_repository.list_objects(repo, "main", event["predictions"])
    parts = [o.path for o in found if "/quarantine/" not in o.path]
    scored = pd.concat([lakefs_repository.read_parquet(repo, "main", p) for p in parts])
    assert sorted(scored["transaction_id"]) == sorted(partner["transaction_id"])
    assert set(scored["model_version"]) == {champions[DEMO].version}

    missing = tmp_path / "never_written.parquet"
    failed = announce(api, dag_id, missing)
    assert api.wait_for_run(dag_id, failed, RUN_TIMEOUT) == "failed"
    why = "\n".join(demo.what_failed(api, dag_id, failed))
    assert "collect_input" in why and f"names {missing}, which is not a file" in why, why
    api.close()


def announce(api, dag_id: str, path: Path, timeout: float = 120) -> str:
    """Publish the file's arrival until the watcher hears it (pub/sub keeps nothing, and the watcher comes up a
    parse after the DAG is unpaused, and is away for ~2 s after each message); the run it started."""
    before = {r["dag_run_id"] for r in api.runs(dag_id)}
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    deadline = time.monotonic() + timeout
    try:
        while publish(client, BatchArrival(path=str(path), model=DEMO)) == 0:
            assert time.monotonic() < deadline, f"no watcher on {DEMO}'s arrival channel after {timeout:.0f} s"
            time.sleep(1)
    finally:
        client.close()
    while True:
        new = [r for r in api.runs(dag_id) if r["dag_run_id"] not in before]
        if new:
            (run,) = new
            assert run["run_type"] == "asset_triggered", run
            return run["dag_run_id"]
        assert time.monotonic() < deadline, f"no run of {dag_id} after the arrival of {path}"
        time.sleep(1)
