"""What `make run` does once the stack is up, and what the end-to-end tests check step by step.

- `train` starts the training DAGs of several models through the REST API at once and shows their progress
  until all have finished;
- `sample_records` are rows of a served model's own training data (its lakeFS snapshot), as request records;
- `Traffic` plays the simulator's live transactions to the demo model's route, as card payments would arrive;
- `drift_loop` changes the world the traffic comes from, runs the demo model's hourly drift check at once, and
  follows the training run that the drift monitor starts by itself, up to the new champion being served.

The demo is the model whose config reads the simulator's database (connection `transactions_db`); every other
model is left to its own source, and none of this code assumes its columns.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from devstack.airflow_api import FINISHED, AirflowAPI, AirflowAPIError, progress_line
from include.mlops import failures
from include.mlops.config import PipelineConfig
from include.mlops.naming import monitor_dag_id, training_dag_id

Say = Callable[[str], None]
# The Airflow connection behind the simulator's database: a config that reads it is the demo.
SIMULATOR_CONNECTION = "transactions_db"


def is_demo(config: PipelineConfig) -> bool:
    return config.source.kind == "sql" and config.source.connection_id == SIMULATOR_CONNECTION


@dataclass(frozen=True)
class TrainingRun:
    model: str
    run_id: str
    state: str


def train(
    api: AirflowAPI,
    say: Say,
    confs: Mapping[str, dict[str, Any]],
    logical_dates: Mapping[str, dt.datetime] | None = None,
    timeout: float = 1800,
) -> dict[str, TrainingRun]:
    """Trigger the training DAG of each model of `confs` (model -> conf), and wait for all of them, printing
    each change of progress; returns each model's run and its final state."""
    runs = {}
    for model, conf in confs.items():
        when = (logical_dates or {}).get(model)
        runs[model] = api.trigger(training_dag_id(model), conf, logical_date=when)
        say(f"{training_dag_id(model)} run {runs[model]} started ({', '.join(f'{k}={v}' for k, v in conf.items())})")
    states = follow(api, {training_dag_id(model): run for model, run in runs.items()}, say, timeout)
    return {model: TrainingRun(model, run, states[training_dag_id(model)]) for model, run in runs.items()}


def follow(api: AirflowAPI, runs: Mapping[str, str], say: Say, timeout: float = 1800) -> dict[str, str]:
    """Wait for runs (dag id -> run id), printing a DAG's progress line whenever it changes; returns each DAG's
    final state."""
    deadline = time.monotonic() + timeout
    shown: dict[str, str] = {}
    states: dict[str, str] = {}
    while True:
        for dag_id, run_id in runs.items():
            if dag_id in states:
                continue
            state = api.run(dag_id, run_id)["state"]
            line = progress_line(api.task_states(dag_id, run_id))
            if line != shown.get(dag_id):
                say(f"  {dag_id}: {line}")
                shown[dag_id] = line
            if state in FINISHED:
                states[dag_id] = state
                say(f"{dag_id} run {run_id}: {state}")
        if len(states) == len(runs):
            return states
        if time.monotonic() > deadline:
            waiting = sorted(set(runs) - set(states))
            raise AirflowAPIError(f"runs of {', '.join(waiting)} still not finished after {timeout:.0f} s")
        time.sleep(3.0)


def what_failed(api: AirflowAPI, dag_id: str, run_id: str) -> list[str]:
    """For a terminal: each failed task of a run (the first few), the first lines of its error and the address
    of its log in the Airflow UI."""
    try:
        instances = api.failed_task_instances(dag_id, run_id)
        tasks = [_failed_task(api, dag_id, run_id, ti) for ti in instances[: failures.SHOWN_TASKS]]
    except AirflowAPIError as exc:
        return [f"  what failed could not be read: {exc}"]
    lines = []
    for task in tasks:
        lines.append(f"  {task.name} failed:")
        if task.error is None:
            lines.append("    its log does not say why")
        else:
            lines += [f"    {line}" for line in task.error.first_lines]
            if task.error.lines_left_out:
                lines.append(f"    ({task.error.lines_left_out} more lines in the log)")
        lines.append(f"    log: {task.log_url}")
    if rest := instances[failures.SHOWN_TASKS :]:
        lines.append(f"  and {len(rest)} more failed: {', '.join(sorted({ti['task_id'] for ti in rest}))}")
    return lines


def _failed_task(api: AirflowAPI, dag_id: str, run_id: str, ti: dict[str, Any]) -> failures.FailedTask:
    """A task instance of the REST API with why it failed, from the log of its last try."""
    task_id, map_index, try_number = ti["task_id"], ti["map_index"], ti["try_number"]
    return failures.FailedTask(
        task_id=task_id,
        map_index=map_index,
        map_name=ti["rendered_map_index"],
        try_number=try_number,
        error=failures.task_error(api.task_log(dag_id, run_id, task_id, try_number, map_index)),
        log_url=failures.task_log_url(api.base_url, dag_id, run_id, task_id, map_index, try_number),
    )


@dataclass(frozen=True)
class ServedModel:
    model_version: str
    labels: dict[str, str]


def served_model(serving_url: str, admin_token: str, model: str) -> ServedModel | None:
    """What the model's route answers with and its lineage (MLflow run, lakeFS commit, Airflow run)."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    response = httpx.get(f"{serving_url}/admin/models/{model}", headers=headers, timeout=10)
    response.raise_for_status()
    serving = response.json()["serving"]
    return None if serving is None else ServedModel(serving["model_version"], serving["labels"])


def predict(serving_url: str, model: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    response = httpx.post(f"{serving_url}/models/{model}/predict", json={"records": records}, timeout=30)
    response.raise_for_status()
    return response.json()


def sample_records(
    lakefs_url: str,
    lakefs_keys: tuple[str, str],
    labels: Mapping[str, str],
    config: PipelineConfig,
    rows: int = 1,
    split: str = "test",
) -> list[dict[str, Any]]:
    """The first `rows` rows of a split of the served model's snapshot (by default the test split it was checked
    on), read at the lakeFS commit its lineage labels name, as request records: a prediction any model can
    answer, whatever its columns."""
    import lakefs

    from include.mlops import deployment, lakefs_repository

    client = lakefs_repository.connect(f"{lakefs_url}/api/v1", *lakefs_keys)
    repo = lakefs.Repository(labels["lakefs_repository"], client=client)
    commit = labels["lakefs_commit"]
    manifest = json.loads(
        lakefs_repository.read_bytes(repo, commit, lakefs_repository.get_commit(repo, commit).metadata["manifest"])
    )
    frame = lakefs_repository.read_parquet(repo, commit, manifest["paths"][split])
    return deployment.records_of(frame.head(rows), config.dataset)


def live_records(day: dt.date, rows_per_day: int, seed: int, changed: bool, config: PipelineConfig) -> list[dict]:
    """The simulator's transactions of `day` as the demo model's request records (the normal or changed world)."""
    from include.demo_sources import simulator
    from include.mlops import deployment

    world = simulator.DEMO_WORLD_CHANGE if changed else simulator.NO_DRIFT
    transactions = simulator.generate_day(day, rows_per_day, seed, world).transactions
    return deployment.records_of(transactions, config.dataset, with_id=True)


class Traffic(threading.Thread):
    """Today's transactions sent to the demo model's route in small batches, round after round, until `stop()`.

    `changed` switches the world the transactions come from; the service logs every prediction, which is what
    the model's drift monitor reads.
    """

    def __init__(
        self,
        serving_url: str,
        config: PipelineConfig,
        rows_per_day: int,
        seed: int,
        batch: int = 25,
        every_seconds: float = 5.0,
    ) -> None:
        super().__init__(name="traffic", daemon=True)
        self.serving_url, self.config, self.rows_per_day, self.seed = serving_url, config, rows_per_day, seed
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
            predict(self.serving_url, self.config.name, records[start : start + 100])

    def _records(self) -> list[dict[str, Any]]:
        key = (dt.datetime.now(dt.UTC).date(), self.changed)
        if key not in self._made:
            today = {made: records for made, records in self._made.items() if made[0] == key[0]}
            self._made = {**today, key: live_records(key[0], self.rows_per_day, self.seed, key[1], self.config)}
        return self._made[key]

    def run(self) -> None:
        offset = 0
        while not self._stopping.wait(self.every_seconds):
            records = self._records()
            batch = records[offset % len(records) :][: self.batch]
            offset += self.batch
            try:
                predict(self.serving_url, self.config.name, batch)
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
    """Change the world of the demo model's traffic, check for drift now, and follow the retraining its drift
    monitor asks for by itself."""
    model, config = traffic.config.name, traffic.config
    training_dag, monitor_dag = training_dag_id(model), monitor_dag_id(model)
    before = served_model(serving_url, admin_token, model)
    say("the world changes: payments move to other shops, countries and channels, and fraud to daytime shopping")
    traffic.changed = True
    rows = config.drift.min_rows + 100
    traffic.send(rows)
    say(f"sent {rows} transactions of the changed world to {model}")
    # The hourly check, run now rather than at the top of the hour: its window is the hour before now.
    monitor_run = api.trigger(monitor_dag, {})
    say(f"{monitor_dag} run {monitor_run} started")
    follow(api, {monitor_dag: monitor_run}, say, timeout=600)
    verdict = verdict_of(inference_log_url, model, monitor_run)
    say(f"{monitor_dag} says: {verdict}")
    training_run = f"drift__{monitor_run}"
    if not any(r["dag_run_id"] == training_run for r in api.runs(training_dag)):
        return LoopOutcome(monitor_run, verdict, None, None, before and before.model_version, None)
    say(f"{monitor_dag} started {training_dag} run {training_run} by itself")
    state = follow(api, {training_dag: training_run}, say, timeout)[training_dag]
    after = served_model(serving_url, admin_token, model)
    if after and before and after.model_version != before.model_version:
        say(f"new champion: {model} version {after.model_version} now serves (was {before.model_version})")
    elif state == "success":
        decision = api.xcom(training_dag, training_run, "gate")
        say(f"the gate kept the champion ({decision['reason']}); it keeps serving")
    else:
        say(f"{training_dag} run {training_run} failed; the champion keeps serving:")
        for line in what_failed(api, training_dag, training_run):
            say(line)
    return LoopOutcome(
        monitor_run,
        verdict,
        training_run,
        state,
        before and before.model_version,
        after and after.model_version,
    )


def verdict_of(inference_log_url: str, model: str, monitor_run_id: str) -> str:
    """A drift monitor run's decision, from the drift history it keeps beside the inference log."""
    import sqlalchemy as sa

    from include.mlops import monitoring

    engine = sa.create_engine(inference_log_url)
    try:
        checks = monitoring.history(engine, model)
    finally:
        engine.dispose()
    mine = [c for c in checks if c["airflow_run_id"] == monitor_run_id]
    if not mine:
        return f"no check recorded for run {monitor_run_id}"
    return f"{'retrain' if mine[-1]['retrain'] else 'no retraining'}: {mine[-1]['reason']}"
