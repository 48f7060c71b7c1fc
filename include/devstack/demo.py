"""What `make run` does once the stack is up, and what the end-to-end tests check step by step.

- `train` starts `ml_training` through the REST API and shows its progress until it has finished;
- `Traffic` plays the simulator's live transactions to the model service, as card payments would arrive;
- `drift_loop` changes the world the traffic comes from, runs the hourly `drift_monitor` check at once, and
  follows the `ml_training` run that drift_monitor starts by itself, up to the new champion being served.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from include.devstack.airflow_api import AirflowAPI, TaskState, progress_line
from include.mlops.config import load_config

Say = Callable[[str], None]
TRAINING_DAG = "ml_training"
MONITOR_DAG = "drift_monitor"


def train(
    api: AirflowAPI,
    say: Say,
    conf: dict[str, Any],
    logical_date: dt.datetime | None = None,
    timeout: float = 1800,
) -> tuple[str, str]:
    """Trigger `ml_training` and wait for it, printing each change of progress; returns (run id, state)."""
    run_id = api.trigger(TRAINING_DAG, conf, logical_date=logical_date)
    say(f"ml_training run {run_id} started ({', '.join(f'{k}={v}' for k, v in conf.items())})")
    return run_id, follow(api, TRAINING_DAG, run_id, say, timeout)


def follow(api: AirflowAPI, dag_id: str, run_id: str, say: Say, timeout: float = 1800) -> str:
    """Wait for a run, printing a progress line whenever it changes; returns the run's final state."""
    last = [""]

    def show(tasks: list[TaskState]) -> None:
        line = progress_line(tasks)
        if line != last[0]:
            say(f"  {dag_id}: {line}")
            last[0] = line

    state = api.wait_for_run(dag_id, run_id, timeout, on_progress=show)
    say(f"{dag_id} run {run_id}: {state}")
    return state


@dataclass(frozen=True)
class ServedModel:
    model_version: str
    labels: dict[str, str]


def served_model(serving_url: str, admin_token: str) -> ServedModel | None:
    """The model the service answers with and its lineage (MLflow run, lakeFS commit, Airflow run)."""
    response = httpx.get(f"{serving_url}/admin/model", headers={"Authorization": f"Bearer {admin_token}"}, timeout=10)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    body = response.json()
    return ServedModel(body["model_version"], body["labels"])


def live_records(day: dt.date, rows_per_day: int, seed: int, changed: bool) -> list[dict[str, Any]]:
    """The simulator's transactions of `day` as the service's request records (the normal or changed world)."""
    from include.devstack import simulator
    from include.mlops import deployment

    world = simulator.DEMO_WORLD_CHANGE if changed else simulator.NO_DRIFT
    transactions = simulator.generate_day(day, rows_per_day, seed, world).transactions
    return deployment.records_of(transactions, load_config().dataset, with_id=True)


def predict(serving_url: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    response = httpx.post(f"{serving_url}/predict", json={"records": records}, timeout=30)
    response.raise_for_status()
    return response.json()


class Traffic(threading.Thread):
    """Today's transactions sent to the service in small batches, round after round, until `stop()`.

    `changed` switches the world the transactions come from; the service logs every prediction, which is what
    drift_monitor reads.
    """

    def __init__(
        self, serving_url: str, rows_per_day: int, seed: int, batch: int = 25, every_seconds: float = 5.0
    ) -> None:
        super().__init__(name="traffic", daemon=True)
        self.serving_url, self.rows_per_day, self.seed = serving_url, rows_per_day, seed
        self.batch, self.every_seconds = batch, every_seconds
        self.changed = False
        self._stopping = threading.Event()
        # Today's records of each world, made once: generating a day costs far more than sending a batch.
        self._made: dict[tuple[dt.date, bool], list[dict[str, Any]]] = {}

    def stop(self) -> None:
        self._stopping.set()

    def send(self, rows: int) -> None:
        """Send `rows` of today's records now, in batches (the demo's burst of changed traffic)."""
        records = self._records()[:rows]
        for start in range(0, len(records), 100):
            predict(self.serving_url, records[start : start + 100])

    def _records(self) -> list[dict[str, Any]]:
        key = (dt.datetime.now(dt.UTC).date(), self.changed)
        if key not in self._made:
            today = {made: records for made, records in self._made.items() if made[0] == key[0]}
            self._made = {**today, key: live_records(key[0], self.rows_per_day, self.seed, key[1])}
        return self._made[key]

    def run(self) -> None:
        offset = 0
        while not self._stopping.wait(self.every_seconds):
            records = self._records()
            batch = records[offset % len(records) :][: self.batch]
            offset += self.batch
            try:
                predict(self.serving_url, batch)
            except httpx.HTTPError:
                pass  # no model yet, or the service restarting: the next round tries again


@dataclass(frozen=True)
class LoopOutcome:
    monitor_run_id: str
    decision: str
    training_run_id: str | None
    training_state: str | None
    champion_before: str | None
    champion_after: str | None


def drift_loop(
    api: AirflowAPI,
    traffic: Traffic,
    serving_url: str,
    admin_token: str,
    inference_log_url: str,
    say: Say,
    timeout: float = 1800,
) -> LoopOutcome:
    """Change the world, check for drift now, and follow the retraining drift_monitor asks for by itself."""
    before = served_model(serving_url, admin_token)
    say("the world changes: payments move to other shops, countries and channels, and fraud to daytime shopping")
    traffic.changed = True
    rows = load_config().drift.min_rows + 100
    traffic.send(rows)
    say(f"sent {rows} transactions of the changed world to the model service")
    # The hourly check, run now rather than at the top of the hour: its window is the hour before now.
    monitor_run = api.trigger(MONITOR_DAG, {})
    say(f"drift_monitor run {monitor_run} started")
    follow(api, MONITOR_DAG, monitor_run, say, timeout=600)
    verdict = verdict_of(inference_log_url, monitor_run)
    say(f"drift_monitor says: {verdict}")
    training_run = f"drift__{monitor_run}"
    if not any(r["dag_run_id"] == training_run for r in api.runs(TRAINING_DAG)):
        return LoopOutcome(monitor_run, verdict, None, None, before and before.model_version, None)
    say(f"drift_monitor started ml_training run {training_run} by itself")
    state = follow(api, TRAINING_DAG, training_run, say, timeout)
    after = served_model(serving_url, admin_token)
    if after and before and after.model_version != before.model_version:
        say(f"new champion: version {after.model_version} now serves (was {before.model_version})")
    elif state == "success":
        decision = api.xcom(TRAINING_DAG, training_run, "gate")
        say(f"the gate kept the champion ({decision['reason']}); it keeps serving")
    return LoopOutcome(
        monitor_run,
        verdict,
        training_run,
        state,
        before and before.model_version,
        after and after.model_version,
    )


def verdict_of(inference_log_url: str, monitor_run_id: str) -> str:
    """A drift_monitor run's decision, from the drift history it keeps beside the inference log."""
    import sqlalchemy as sa

    from include.mlops import monitoring

    engine = sa.create_engine(inference_log_url)
    try:
        checks = monitoring.history(engine, load_config().model.registered_name)
    finally:
        engine.dispose()
    mine = [c for c in checks if c["airflow_run_id"] == monitor_run_id]
    if not mine:
        return f"no check recorded for run {monitor_run_id}"
    return f"{'retrain' if mine[-1]['retrain'] else 'no retraining'}: {mine[-1]['reason']}"
