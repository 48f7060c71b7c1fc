"""Faults in every task of a drift check and of the model half of training runs, on the real scheduler.

Each planned task fails twice before it succeeds: an exception in the middle of its work, then a SIGKILL of its
process there (tests/e2e/faults.py injects them through a cluster policy; Airflow's retries do the rest). After each
run the system is consistent: `main` holds only validated data and the snapshots and references of promoted models;
the `champion` alias, the model the service serves and the drift reference name the same version; no version is
registered twice; nothing is recorded or triggered twice; and a client sending a request every 0.1 s to the model's
route throughout got no error.

The runs: a drift check of the demo model (its trigger's training run is left queued and deleted: this is about the
check), a retraining on the champion's snapshot that is promoted, and one that goes live as a shadow beside the
champion (faults on its own way only: go_live and start_rollout; the rollout is ended afterwards). Beside them, a
retraining of the breast cancer model, whose config asks a person to approve each challenger, faults its approval
task and the rejection's commit: a reviewer rejects the challenger through the REST API once it asks. The middle of
a task is half its median duration in this stack's earlier runs (tests/e2e/faults.py).

It starts from each model's champion (the `champions` fixture trains them where there are none yet), and leaves the
configs as it found them.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import lakefs
import pytest
import sqlalchemy as sa

from devstack import demo
from devstack.airflow_api import AirflowAPI
from include.mlops import alias_history, deployment, lakefs_repository, monitoring, registry, rollouts
from include.mlops.naming import monitor_dag_id, parse_lakefs_uri, run_branch_name, run_key, training_dag_id
from tests.e2e import approvals, faults
from tests.e2e.conftest import BREAST_CANCER, DEMO

# Over the suite's 900 s per test when the machine is busy, or when run on its own (it trains the champions first).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(1800)]

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
# The own ways of a run that goes live as a shadow and of one that asks a person, who rejects its challenger (the
# tasks before them are the promoted run's).
SHADOW_TASKS = ["go_live", "start_rollout"]
REJECTED_TASKS = [approvals.APPROVAL_TASK, "record_rejection"]


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


def test_faults_in_the_middle_of_every_task_of_a_drift_check_and_of_three_trainings_leave_the_models_consistent(
    e2e, champions, edit_config
):
    stack = e2e.stack
    api = stack.airflow_api()
    serving, token = stack.urls["Serving"], stack.credentials["serving_admin_token"]
    mlflow_client = e2e.mlflow()
    log_engine = sa.create_engine(f"sqlite:///{stack.inference_log_db}")
    lakefs_client = lakefs_repository.connect(f"{stack.urls['lakeFS']}/api/v1", *stack.lakefs_keys)
    training_dag, monitor_dag, cancer_dag = training_dag_id(DEMO), monitor_dag_id(DEMO), training_dag_id(BREAST_CANCER)
    api.wait_for_dags({training_dag, monitor_dag, cancer_dag})
    for dag_id in api.paused_dag_ids() & {training_dag, monitor_dag, cancer_dag}:
        api.unpause(dag_id)
    config = e2e.config(DEMO)
    champion, cancer_champion = champions[DEMO], champions[BREAST_CANCER]
    labels = demo.served_model(serving, token, DEMO).labels
    repo = lakefs.Repository(labels["lakefs_repository"], client=lakefs_client)

    # The checks look at drift in three of the ten features, and retrain (at a share of 0.1) with a cool-down
    # that a retried check would find its own first try in; a challenger as good as the champion passes.
    def faults_settings(raw: dict) -> None:
        raw["gate"]["min_improvement"] = 0.0
        raw["drift"] |= {"threshold": 0.1, "cooldown_hours": 0.02}

    edit_config(DEMO, faults_settings)

    names = ("drift", "promoted", "shadow", "rejected")
    runs = {name: f"faults_{name}_{uuid.uuid4().hex[:6]}" for name in names}
    plan_path = e2e.folder / "faults" / "plan.json"
    folder = plan_path.parent
    plan = {
        "runs": {
            monitor_dag: {runs["drift"]: DRIFT_TASKS},
            training_dag: {runs["promoted"]: PROMOTED_TASKS, runs["shadow"]: SHADOW_TASKS},
            cancer_dag: {runs["rejected"]: REJECTED_TASKS},
        },
        "tasks": {
            monitor_dag: {task: faults.MATRIX for task in DRIFT_TASKS},
            training_dag: {task: faults.MATRIX for task in PROMOTED_TASKS + SHADOW_TASKS},
            cancer_dag: {task: faults.MATRIX for task in REJECTED_TASKS},
        },
        "middle_seconds": {dag: faults.middle_seconds(folder, dag) for dag in (monitor_dag, training_dag, cancer_dag)},
    }
    faults.write_plan(plan_path, plan)
    _wait_for_retries(api, plan["tasks"])

    records = demo.sample_records(stack.urls["lakeFS"], stack.lakefs_keys, labels, config, 400, "train")
    drifted = [_drifted(record) for record in records]
    client = Client(serving, drifted[0])
    client.start()
    reviewer = ThreadPoolExecutor(1)
    try:
        # 0. Beside the demo's runs: a breast cancer retraining whose approval task fails four times before it
        # asks; a reviewer rejects the challenger as soon as it does, and the rejection's commit fails twice.
        cancer_conf = {"reason": "faults", "data_commit": cancer_champion.tags["lakefs_commit"]}
        cancer_main_before = lakefs_repository.get_commit(repo, "main").id  # one repository holds every model's data
        api.trigger(cancer_dag, cancer_conf, run_id=runs["rejected"])
        review = reviewer.submit(approvals.review, stack, cancer_dag, runs["rejected"], "Reject")

        # 1. A drift check: drifted traffic, every task of the check failing twice.
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
        _check_consistency(stack, mlflow_client, log_engine, lakefs_client, DEMO, champion.version)

        # 2. A retraining on the champion's snapshot, promoted, every task from start_training_run on failing.
        conf = {"reason": "faults", "data_commit": champion.tags["lakefs_commit"]}
        main_before = lakefs_repository.get_commit(repo, "main").id
        api.trigger(training_dag, conf, run_id=runs["promoted"])
        assert api.wait_for_run(training_dag, runs["promoted"], RUN_TIMEOUT) == "success", e2e.logs()
        _check_every_fault_fired(api, folder, training_dag, runs["promoted"], PROMOTED_TASKS)
        decision = api.xcom(training_dag, runs["promoted"], "register_challenger")
        promoted = decision["version"]
        assert promoted != champion.version
        _check_consistency(stack, mlflow_client, log_engine, lakefs_client, DEMO, promoted)
        # One merge into main: the reference (the snapshot is the champion's, on main already: merging it again
        # adds nothing), however many tries merged.
        merges = _merges_into_main(repo, main_before, runs["promoted"])
        assert merges == [f"Drift reference of {DEMO} v{promoted}"], merges
        _check_one_champion_move(log_engine, DEMO, runs["promoted"], champion.version, promoted)

        # 3. A retraining that goes live as a shadow beside the champion (the mode is read when go_live runs). It
        # trains the candidate that won the promoted run only (every point of its grid, if it has one): on the same
        # snapshot it scores as the champion does, and passes; fitting the others again would only cost minutes.
        def shadow_of_the_winner(raw: dict) -> None:
            (won,) = [c for c in raw["model"]["candidates"] if c["name"] == decision["challenger"].partition("__")[0]]
            raw["model"]["candidates"] = [won]
            raw["rollout"] = {"mode": "shadow"}

        edit_config(DEMO, shadow_of_the_winner)
        main_before = lakefs_repository.get_commit(repo, "main").id
        api.trigger(training_dag, conf, run_id=runs["shadow"])
        assert api.wait_for_run(training_dag, runs["shadow"], RUN_TIMEOUT) == "success", e2e.logs()
        _check_every_fault_fired(api, folder, training_dag, runs["shadow"], SHADOW_TASKS)
        shadow = api.xcom(training_dag, runs["shadow"], "register_challenger")["version"]
        _check_one_shadow_rollout(api, log_engine, serving, token, records[0], runs["shadow"], promoted, shadow)
        _check_consistency(stack, mlflow_client, log_engine, lakefs_client, DEMO, promoted)
        assert _merges_into_main(repo, main_before, runs["shadow"]) == []
        _end_rollout(log_engine, serving, token)

        # 4. The breast cancer run, rejected by the reviewer after its faults: nothing of it went live or to main.
        request, answered = review.result(timeout=RUN_TIMEOUT)
        assert answered["chosen_options"] == ["Reject"], answered
        assert api.wait_for_run(cancer_dag, runs["rejected"], RUN_TIMEOUT) == "success", e2e.logs()
        _check_every_fault_fired(api, folder, cancer_dag, runs["rejected"], REJECTED_TASKS)
        cancer_version = api.xcom(cancer_dag, runs["rejected"], "register_challenger")["version"]
        assert request["subject"].endswith(f"v{cancer_version} of {BREAST_CANCER}?"), request["subject"]
        moves = [
            m.alias for m in alias_history.moves(log_engine, BREAST_CANCER) if m.airflow_run_id == runs["rejected"]
        ]
        assert moves == ["challenger"], moves
        # Nothing of its model goes to main (its data is its champion's snapshot, which is there already).
        merges = _merges_into_main(repo, cancer_main_before, runs["rejected"])
        assert set(merges) <= {"Validated data"}, merges
        branch = run_branch_name(BREAST_CANCER, runs["rejected"])
        rejections = [
            c.message for c in lakefs_repository.log(repo, branch, 20) if c.message.startswith("Not promoted")
        ]
        assert rejections == ["Not promoted: rejected by admin"], rejections
        _check_consistency(stack, mlflow_client, log_engine, lakefs_client, BREAST_CANCER, cancer_champion.version)
    finally:
        reviewer.shutdown(wait=False, cancel_futures=True)
        client.stop()
        faults.write_plan(plan_path, {})
        api.close()

    cells = Counter(f["kind"] for f in faults.fired(folder) if f["run_id"] in runs.values())
    print(f"faults fired: {dict(cells)}; client: {client.answered} answered, {len(client.failures)} failed")
    assert client.failures == [] and client.answered > 100, client.failures[:10]


def _drifted(record: dict) -> dict:
    """The record moved in three of its ten features: bigger amounts, at night, online."""
    return {**record, "amount": min(float(record["amount"]) * 10 + 500, 50_000.0), "hour": 3, "channel": "online"}


def _wait_for_retries(api: AirflowAPI, tasks: dict[str, dict[str, list]], timeout: float = 180) -> None:
    """Until the dag-processor has parsed the DAGs again with the plan (and the configs): each planned task is
    there, with its retries."""
    deadline = time.monotonic() + timeout
    while True:
        serialized = {dag_id: api.request("GET", f"/api/v2/dags/{dag_id}/tasks")["tasks"] for dag_id in tasks}
        retries = {(dag_id, t["task_id"]): t["retries"] for dag_id, found in serialized.items() for t in found}
        waiting = [
            f"{dag_id}.{task_id}"
            for dag_id, planned in tasks.items()
            for task_id, task_faults in planned.items()
            if retries.get((dag_id, task_id)) != len(task_faults)
        ]
        if not waiting:
            return
        assert time.monotonic() < deadline, f"the fault plan is not applied to {waiting} after {timeout:.0f} s"
        time.sleep(3)


def _check_every_fault_fired(api: AirflowAPI, folder: Path, dag_id: str, run_id: str, tasks: list[str]) -> None:
    """Each planned task of the run got the matrix's faults, one per try, and succeeded on the try after."""
    fired: dict[tuple[str, int], list] = {}
    for fault in faults.fired(folder):
        if fault["run_id"] == run_id:
            fired.setdefault((fault["task_id"], fault["map_index"]), []).append((fault["try_number"], fault["kind"]))
    expected = list(enumerate(faults.MATRIX, 1))
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


def _check_consistency(stack, mlflow_client, log_engine, lakefs_client, model: str, version: str) -> None:
    """The model's champion, served model and drift reference are `version`; main holds validated data and the
    snapshots and references of promoted models only; no version of any model is registered twice."""
    serving, token = stack.urls["Serving"], stack.credentials["serving_admin_token"]
    champion = registry.version_by_alias(mlflow_client, model, registry.CHAMPION)
    served = demo.served_model(serving, token, model)
    assert (champion.version, served.model_version) == (version, version), (champion.version, served)
    repo = lakefs.Repository(served.labels["lakefs_repository"], client=lakefs_client)
    _, reference_commit, reference_path = parse_lakefs_uri(champion.tags["drift_reference"])
    reference = lakefs_repository.get_commit(repo, reference_commit)
    assert reference.metadata["model_version"] == version, reference.metadata
    assert lakefs_repository.object_exists(repo, "main", reference_path), reference_path

    promoted_runs = set()
    for name in {c.name for c in stack.configs}:
        champions = {m.to_version for m in alias_history.moves(log_engine, name) if m.alias == registry.CHAMPION}
        versions = mlflow_client.search_model_versions(f"name = '{name}'")
        run_ids = [v.tags.get("airflow_run_id") for v in versions]
        duplicates = {run: n for run, n in Counter(run_ids).items() if n > 1}
        assert not duplicates, f"{name}: versions registered twice by {duplicates}"
        promoted_runs |= {run_key(v.tags["airflow_run_id"]) for v in versions if v.version in champions}
    for entry in lakefs_repository.list_objects(repo, "main", ""):
        top, *rest = entry.path.split("/")
        if top in ("datasets", "reference"):
            assert rest[1] in promoted_runs, f"{entry.path} on main is of a run that promoted no model"
        else:
            assert entry.path.startswith("raw/") and "/date=" in entry.path, f"{entry.path} on main"


def _check_one_champion_move(log_engine, model: str, run_id: str, before: str, after: str) -> None:
    """The run moved `challenger` once and `champion` once, from `before` to `after`, however many tries did."""
    moves = [m for m in alias_history.moves(log_engine, model) if m.airflow_run_id == run_id]
    assert sorted(m.alias for m in moves) == ["challenger", "champion"], moves
    (to_champion,) = [m for m in moves if m.alias == registry.CHAMPION]
    assert (to_champion.from_version, to_champion.to_version) == (before, after), to_champion


def _check_one_shadow_rollout(
    api, log_engine, serving: str, token: str, record: dict, run_id: str, champion: str, shadow: str
) -> None:
    """The run left one shadow rollout of `shadow` beside the unchanged champion, on the service and recorded
    once; the champion answers; nothing went to main."""
    states = {t.task_id: t.state for t in api.task_states(training_dag_id(DEMO), run_id)}
    assert {states[t] for t in ("deploy_model", "promote_champion", "merge_snapshot", "merge_reference")} == {
        "skipped"
    }, states
    on_trial = deployment.ServingEndpoint(serving, token, DEMO).rollout()
    assert (on_trial["tag"], on_trial["mode"], on_trial["loaded"]) == (f"{DEMO}:v{shadow}", "shadow", True), on_trial
    recorded = [r for r in rollouts.history(log_engine, DEMO, 50) if r["airflow_run_id"] == run_id]
    assert [(r["challenger_version"], r["champion_version"], r["state"]) for r in recorded] == [
        (shadow, champion, rollouts.RUNNING)
    ], recorded
    moves = [m.alias for m in alias_history.moves(log_engine, DEMO) if m.airflow_run_id == run_id]
    assert moves == ["challenger"], moves
    answer = demo.predict(serving, DEMO, [record])
    assert (answer["model_version"], answer["role"]) == (champion, "champion"), answer


def _end_rollout(log_engine, serving: str, token: str) -> None:
    """End the shadow rollout as a person would who decided against it: the service unloads the challenger and
    the rollout is recorded as rolled back."""
    endpoint = deployment.ServingEndpoint(serving, token, DEMO)
    endpoint.end_rollout()
    assert endpoint.rollout() is None
    recorded = rollouts.running(log_engine, DEMO)
    now = dt.datetime.now(dt.UTC)
    rollouts.record_end(log_engine, recorded["id"], rollouts.ROLLED_BACK, "ended by the fault matrix", now)


def _merges_into_main(repo, since: str, run_id: str) -> list[str]:
    """The messages of the commits `run_id` made on main after `since` (its merges), newest first. Main's own
    history is its first parents; other models' runs merge into it meanwhile."""
    messages, commit = [], lakefs_repository.get_commit(repo, "main")
    for _ in range(200):
        if commit.id == since:
            return messages
        if commit.metadata.get("airflow_run_id") == run_id:
            messages.append(commit.message)
        assert commit.parents, f"{since} is not a first parent of main's head"
        commit = lakefs_repository.get_commit(repo, commit.parents[0])
    raise AssertionError(f"{since} is not among the last 200 first parents of main's head")
