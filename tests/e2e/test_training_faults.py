"""Faults in every task of a drift check and of the model half of a training run, on the real scheduler.

Each planned task fails four times before it succeeds: an exception at its start, a SIGKILL of its process at
its start, an exception in its middle and a SIGKILL in its middle (tests/e2e/faults.py injects them through a
cluster policy; Airflow's retries do the rest). After each run the system is consistent: `main` holds only
validated data and the snapshots and references of promoted models; the `champion` alias, the model the service
serves and the drift reference name the same version; no version is registered twice; nothing is recorded or
triggered twice; and a client sending a request every 0.1 s to the model's route throughout got no error.

The runs: a drift check of the demo model (its trigger's training run is left queued and deleted: this is about
the check), a retraining on the champion's snapshot that is promoted, and one that the gate rejects (faults on its
own way only: choose_outcome and record_rejection). The middle of a task is half its median duration in this
stack's earlier runs (tests/e2e/faults.py).

It runs last of the e2e package (pytest runs the files in name order), on the demo model's champion.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import lakefs
import mlflow
import pytest
import sqlalchemy as sa
import yaml

from include.devstack import demo
from include.devstack.airflow_api import AirflowAPI
from include.mlops import alias_history, monitoring, registry, versioning
from include.mlops.lineage import parse_lakefs_uri
from include.mlops.naming import monitor_dag_id, run_branch_name, run_key, training_dag_id
from tests.e2e import faults
from tests.e2e.conftest import DEMO, TRAINING_DAYS, changed_since

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

RUN_TIMEOUT = 1200
DRIFT_TASKS = ["wait_for_traffic", "check_drift", "decide_retraining", "trigger_ml_training"]
# From start_training_run on, on the way of a promoted challenger (direct rollout) and of a rejected one.
PROMOTED_TASKS = [
    "start_training_run",
    "plan_candidates",
    "train_candidate",
    "gate",
    "package_onnx",
    "register_challenger",
    "choose_outcome",
    "go_live",
    "deploy_model",
    "store_reference",
    "promote_champion",
    "merge_snapshot",
    "merge_reference",
    "finish_training_run",
]
# The rejected run's own way (the tasks before it are the promoted run's).
REJECTED_TASKS = ["choose_outcome", "record_rejection"]


@dataclass(eq=False)  # a thread must stay hashable
class Client(threading.Thread):
    """Sends one record to the model's route every 0.1 s until stopped; counts what failed and why."""

    url: str
    record: dict
    answered: int = 0
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(name="faults-client", daemon=True)
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=30)

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self._stopping.wait(0.1):
                try:
                    response = http.post(f"{self.url}/models/{DEMO}/predict", json={"records": [self.record]})
                    if response.status_code == 200:
                        self.answered += 1
                    else:
                        self.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as error:
                    self.failures.append(f"{type(error).__name__}: {error}")


def test_four_faults_in_every_task_of_a_drift_check_and_of_two_trainings_leave_the_models_consistent(e2e):
    stack = e2e.stack
    api = stack.airflow_api()
    serving, token = stack.urls["Serving"], stack.credentials["serving_admin_token"]
    mlflow_client = mlflow.MlflowClient(stack.urls["MLflow"], registry_uri=stack.urls["MLflow"])
    log_engine = sa.create_engine(f"sqlite:///{stack.inference_log_db}")
    lakefs_client = versioning.connect(f"{stack.urls['lakeFS']}/api/v1", *stack.lakefs_keys)
    config = e2e.config(DEMO)
    training_dag, monitor_dag = training_dag_id(DEMO), monitor_dag_id(DEMO)
    api.wait_for_dags({training_dag, monitor_dag})
    for dag_id in api.paused_dag_ids() & {training_dag, monitor_dag}:
        api.unpause(dag_id)
    if registry.version_by_alias(mlflow_client, DEMO, registry.CHAMPION) is None:  # this file run on its own
        as_of = {DEMO: dt.datetime.combine(changed_since(), dt.time(), dt.UTC)}
        first = demo.train(api, e2e.said.append, {DEMO: {"reason": "manual", "history_days": TRAINING_DAYS}}, as_of)
        assert first[DEMO].state == "success", e2e.logs()
    champion = registry.version_by_alias(mlflow_client, DEMO, registry.CHAMPION)
    labels = demo.served_model(serving, token, DEMO).labels
    repo = lakefs.Repository(labels["lakefs_repository"], client=lakefs_client)

    # The checks look at drift in three of the ten features, and retrain (at a share of 0.1) with a cool-down
    # that a retried check would find its own first try in; a challenger as good as the champion passes.
    raw = yaml.safe_load(Path(config.path).read_text())
    raw["gate"]["min_improvement"] = 0.0
    raw["drift"] |= {"threshold": 0.1, "cooldown_hours": 0.02}
    Path(config.path).write_text(yaml.safe_dump(raw))

    runs = {name: f"faults_{name}_{uuid.uuid4().hex[:6]}" for name in ("drift", "promoted", "rejected")}
    plan_path = e2e.folder / "faults" / "plan.json"
    folder = plan_path.parent
    plan = {
        "runs": {
            monitor_dag: {runs["drift"]: DRIFT_TASKS},
            training_dag: {runs["promoted"]: PROMOTED_TASKS, runs["rejected"]: REJECTED_TASKS},
        },
        "tasks": {
            monitor_dag: {task: faults.ALL_FAULTS for task in DRIFT_TASKS},
            training_dag: {task: faults.ALL_FAULTS for task in PROMOTED_TASKS + REJECTED_TASKS},
        },
        "middle_seconds": {dag: faults.middle_seconds(folder, dag) for dag in (monitor_dag, training_dag)},
    }
    faults.write_plan(plan_path, plan)
    _wait_for_retries(api, plan["tasks"])

    records = demo.sample_records(stack.urls["lakeFS"], stack.lakefs_keys, labels, config, 400, "train")
    drifted = [_drifted(record) for record in records]
    client = Client(serving, drifted[0])
    client.start()
    try:
        # 1. A drift check: drifted traffic, every task of the check failing four times.
        for start in range(0, len(drifted), 100):
            demo.predict(serving, DEMO, drifted[start : start + 100])
        api.request("PATCH", f"/api/v2/dags/{training_dag}", json={"is_paused": True})  # its trigger waits
        api.trigger(monitor_dag, {}, run_id=runs["drift"])
        assert api.wait_for_run(monitor_dag, runs["drift"], RUN_TIMEOUT) == "success", e2e.logs()
        _check_every_fault_fired(api, folder, monitor_dag, runs["drift"], DRIFT_TASKS)
        (check,) = [c for c in monitoring.history(log_engine, DEMO) if c["airflow_run_id"] == runs["drift"]]
        assert check["retrain"] and check["reason"].startswith("data drift"), check
        triggered = [r for r in api.runs(training_dag) if r["dag_run_id"].startswith("drift__")]
        assert [r["dag_run_id"] for r in triggered if r["state"] == "queued"] == [f"drift__{runs['drift']}"]
        api.request("DELETE", f"/api/v2/dags/{training_dag}/dagRuns/drift__{runs['drift']}")
        api.unpause(training_dag)
        _check_consistency(stack, mlflow_client, log_engine, repo, serving, token, champion.version)

        # 2. A retraining on the champion's snapshot, promoted, every task from start_training_run on failing.
        conf = {"reason": "faults", "data_commit": champion.tags["lakefs_commit"]}
        main_before = versioning.get_commit(repo, "main").id
        api.trigger(training_dag, conf, run_id=runs["promoted"])
        assert api.wait_for_run(training_dag, runs["promoted"], RUN_TIMEOUT) == "success", e2e.logs()
        _check_every_fault_fired(api, folder, training_dag, runs["promoted"], PROMOTED_TASKS)
        promoted = api.xcom(training_dag, runs["promoted"], "register_challenger")["version"]
        assert promoted != champion.version
        _check_consistency(stack, mlflow_client, log_engine, repo, serving, token, promoted)
        # One merge into main: the reference (the snapshot is the champion's, on main already: merging it again
        # adds nothing), however many tries merged.
        merges = [c.message for c in _first_parents_since(repo, "main", main_before)]
        assert merges == [f"Drift reference of {DEMO} v{promoted}"], merges
        moves = [m for m in alias_history.moves(log_engine, DEMO) if m.airflow_run_id == runs["promoted"]]
        assert sorted(m.alias for m in moves) == ["challenger", "champion"], moves
        (to_champion,) = [m for m in moves if m.alias == registry.CHAMPION]
        assert (to_champion.from_version, to_champion.to_version) == (champion.version, promoted), to_champion

        # 3. A retraining that the gate rejects (it asks for an improvement no model makes).
        raw["gate"]["min_improvement"] = 1.0
        Path(config.path).write_text(yaml.safe_dump(raw))
        main_before = versioning.get_commit(repo, "main").id
        api.trigger(training_dag, conf, run_id=runs["rejected"])
        assert api.wait_for_run(training_dag, runs["rejected"], RUN_TIMEOUT) == "success", e2e.logs()
        _check_every_fault_fired(api, folder, training_dag, runs["rejected"], REJECTED_TASKS)
        _check_consistency(stack, mlflow_client, log_engine, repo, serving, token, promoted)
        assert versioning.get_commit(repo, "main").id == main_before
        branch = run_branch_name(DEMO, runs["rejected"])
        rejections = [c for c in versioning.log(repo, branch, 20) if c.message.startswith("Not promoted")]
        assert len(rejections) == 1, [c.message for c in rejections]
    finally:
        client.stop()
        faults.write_plan(plan_path, {})

    cells = Counter((f["kind"], f["point"]) for f in faults.fired(folder) if f["run_id"] in runs.values())
    print(f"faults fired: {dict(cells)}; client: {client.answered} answered, {len(client.failures)} failed")
    assert client.failures == [] and client.answered > 100, client.failures[:10]


def _drifted(record: dict) -> dict:
    """The record moved in three of its ten features: bigger amounts, at night, online."""
    return {**record, "amount": min(float(record["amount"]) * 10 + 500, 50_000.0), "hour": 3, "channel": "online"}


def _wait_for_retries(api: AirflowAPI, tasks: dict[str, dict[str, list]], timeout: float = 180) -> None:
    """Until the dag-processor has parsed the DAGs again with the plan: each planned task has its retries."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = [
            f"{dag_id}.{task_id}"
            for dag_id, planned in tasks.items()
            for task_id, task_faults in planned.items()
            if api.request("GET", f"/api/v2/dags/{dag_id}/tasks/{task_id}")["retries"] != len(task_faults)
        ]
        if not waiting:
            return
        assert time.monotonic() < deadline, f"the fault plan is not applied to {waiting} after {timeout:.0f} s"
        time.sleep(3)


def _check_every_fault_fired(api: AirflowAPI, folder: Path, dag_id: str, run_id: str, tasks: list[str]) -> None:
    """Each planned task of the run got its four faults, one per try, and succeeded on its fifth try."""
    fired: dict[tuple[str, int], list] = {}
    for fault in faults.fired(folder):
        if fault["run_id"] == run_id:
            fired.setdefault((fault["task_id"], fault["map_index"]), []).append(
                (fault["try_number"], fault["kind"], fault["point"])
            )
    expected = [(number, kind, point) for number, (kind, point) in enumerate(faults.ALL_FAULTS, 1)]
    for task_id in tasks:
        instances = [key for key in fired if key[0] == task_id]
        assert instances, f"{task_id}: no fault fired in {run_id}"
        for key in instances:
            assert sorted(fired[key]) == expected, (key, fired[key])
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
    for instance in api.request("GET", path, params={"limit": 500})["task_instances"]:
        if instance["task_id"] in tasks:
            # A try of the trigger can die after Airflow made the training run: the next finds it and skips.
            done = ("success", "skipped") if instance["task_id"] == "trigger_ml_training" else ("success",)
            # A mapped task's first instance gets the faults; the others run once.
            tries = len(expected) + 1 if instance["map_index"] <= 0 else 1
            assert instance["state"] in done and instance["try_number"] == tries, instance


def _check_consistency(stack, mlflow_client, log_engine, repo, serving: str, token: str, version: str) -> None:
    """The champion, the served model and the drift reference are `version`; main holds validated data and the
    snapshots and references of promoted models only; no version is registered twice."""
    champion = registry.version_by_alias(mlflow_client, DEMO, registry.CHAMPION)
    served = demo.served_model(serving, token, DEMO)
    assert (champion.version, served.model_version) == (version, version), (champion.version, served)
    _, reference_commit, reference_path = parse_lakefs_uri(champion.tags["drift_reference"])
    reference = versioning.get_commit(repo, reference_commit)
    assert reference.metadata["model_version"] == version, reference.metadata
    assert versioning.object_exists(repo, "main", reference_path), reference_path

    promoted_runs = set()
    for model in {c.name for c in stack.configs}:
        champions = {m.to_version for m in alias_history.moves(log_engine, model) if m.alias == registry.CHAMPION}
        versions = mlflow_client.search_model_versions(f"name = '{model}'")
        run_ids = [v.tags.get("airflow_run_id") for v in versions]
        duplicates = {run: n for run, n in Counter(run_ids).items() if n > 1}
        assert not duplicates, f"{model}: versions registered twice by {duplicates}"
        promoted_runs |= {run_key(v.tags["airflow_run_id"]) for v in versions if v.version in champions}
    for entry in versioning.list_objects(repo, "main", ""):
        top, *rest = entry.path.split("/")
        if top in ("datasets", "reference"):
            assert rest[1] in promoted_runs, f"{entry.path} on main is of a run that promoted no model"
        else:
            assert entry.path.startswith("raw/") and "/date=" in entry.path, f"{entry.path} on main"


def _first_parents_since(repo, branch: str, since: str) -> list:
    """The commits of `branch` after `since` along first parents (its own commits and merges), newest first."""
    commits, commit = [], versioning.get_commit(repo, branch)
    while commit.id != since:
        commits.append(commit)
        assert commit.parents and len(commits) < 50, f"{since} is not a first parent of {branch}'s head"
        commit = versioning.get_commit(repo, commit.parents[0])
    return commits
