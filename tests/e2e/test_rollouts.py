"""Shadow and canary rollouts on a real scheduler and the real service, on the stack the e2e tests share.

The breast cancer model's config turns to `rollout.mode: shadow`; a retraining (on its champion's snapshot)
starts a shadow rollout instead of replacing the champion; live traffic goes to the route; model_rollout__<model>
compares the two on the same records, asks a person (the e2e config asks for approval) and promotes the
challenger, recorded in the alias history, and the service answers with it. Then a canary of a challenger that raises on
every request of two records (a real export mistake: its batch dimension fixed at 1) answers no client wrongly
(the champion answers in its place, the failures are logged beside the answers), and the check rolls it back:
the challenger is unloaded and the alias history says why.

It starts from the breast cancer model's champion (the `champions` fixture trains one if there is none yet), and
leaves the config as it found it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
import sqlalchemy as sa

from devstack import demo
from include.mlops import alias_history, registry, rollouts
from include.mlops.naming import rollout_dag_id, training_dag_id
from mlops_airflow.approval import APPROVAL_TASK
from tests.conftest import REPO_ROOT
from tests.e2e import approvals
from tests.e2e.conftest import BREAST_CANCER, wait_for_tasks

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

RUN_TIMEOUT = 600
# Writes a copy of a model with its batch dimension fixed at 1 into the stack's model store (BentoML reads
# BENTOML_HOME when it is imported, so in a process of its own).
FIXED_BATCH_COPY = """
import sys, onnx
from include.mlops import deployment, tracking
from include.mlops.config import load_config
import mlflow
mlflow.set_tracking_uri(sys.argv[2])
model = onnx.load_from_string(tracking.load_onnx(sys.argv[3]))
for graph_input in model.graph.input:
    graph_input.type.tensor_type.shape.dim[0].dim_value = 1
print(deployment.save_to_model_store(model.SerializeToString(), load_config(sys.argv[1]), sys.argv[4], {}))
"""


def test_a_shadow_challenger_that_holds_up_is_promoted_and_a_failing_canary_is_rolled_back(e2e, champions, edit_config):
    stack, config = e2e.stack, e2e.config(BREAST_CANCER)
    client = e2e.mlflow()
    champion = champions[BREAST_CANCER]
    # Model times here are fractions of a millisecond on a busy 2-core machine: their ratio is loose.
    criteria = {"min_agreement": 0.9, "max_latency_ratio": 5}
    edit_config(
        BREAST_CANCER,
        lambda raw: raw.update(rollout={"mode": "shadow", "min_rows": 60, "min_hours": 0, "criteria": criteria}),
    )
    api = stack.airflow_api()
    serving, token = stack.urls["Serving"], stack.credentials["serving_admin_token"]
    engine = sa.create_engine(f"sqlite:///{stack.inference_log_db}")

    # With a rollout, the person is asked after it (in model_rollout), not before it goes live: wait until the
    # dag-processor has parsed the DAG files again after the config change.
    dag_id, check_dag = training_dag_id(BREAST_CANCER), rollout_dag_id(BREAST_CANCER)
    wait_for_tasks(api, dag_id, lambda tasks: APPROVAL_TASK not in tasks)

    # A retraining goes live as a shadow: the champion keeps answering.
    run = api.trigger(dag_id, {"reason": "retrain", "data_commit": champion.tags["lakefs_commit"]})
    assert api.wait_for_run(dag_id, run, RUN_TIMEOUT) == "success", e2e.logs()
    states = {t.task_id: t.state for t in api.task_states(dag_id, run)}
    assert (states["start_rollout"], states["store_reference"]) == ("success", "success"), states
    assert {states[t] for t in ("deploy_model", "promote_champion", "merge_snapshot")} == {"skipped"}, states
    challenger = str(api.xcom(dag_id, run, "register_challenger")["version"])
    assert registry.version_by_alias(client, BREAST_CANCER, registry.CHAMPION).version == champion.version
    on_trial = _admin(serving, token)["rollout"]
    assert (on_trial["tag"], on_trial["mode"], on_trial["loaded"]) == (f"{BREAST_CANCER}:v{challenger}", "shadow", True)
    assert rollouts.running(engine, BREAST_CANCER)["challenger_version"] == challenger

    served = demo.served_model(serving, token, BREAST_CANCER)
    records = demo.sample_records(stack.urls["lakeFS"], stack.lakefs_keys, served.labels, config, 70)
    answers = [demo.predict(serving, BREAST_CANCER, [record]) for record in records]
    assert {(a["model_version"], a["role"]) for a in answers} == {(champion.version, "champion")}

    check = api.trigger(check_dag, {})
    request = approvals.wait_until_asked(api, check_dag, check)
    assert request["subject"] == f"Promote v{challenger} of {BREAST_CANCER} after its shadow rollout?", request
    assert "| agreement | " in request["body"] and "**Check:** PROMOTE" in request["body"], request["body"]
    approvals.answer(api, check_dag, check, "Approve")
    assert api.wait_for_run(check_dag, check, RUN_TIMEOUT) == "success", e2e.logs()
    states = {t.task_id: t.state for t in api.task_states(check_dag, check)}
    assert (states["promote_rollout"], states["merge_reference"], states["roll_back"]) == (
        "success",
        "success",
        "skipped",
    ), states
    assert registry.version_by_alias(client, BREAST_CANCER, registry.CHAMPION).version == challenger
    move = [m for m in alias_history.moves(engine, BREAST_CANCER) if m.alias == "champion"][-1]
    assert (move.from_version, move.to_version, move.cause, move.actor) == (
        champion.version,
        challenger,
        "approval",
        "admin",
    )
    assert move.detail.startswith("approved by admin at ") and "shadow rollout promoted: agreement " in move.detail
    (promoted,) = [r for r in rollouts.history(engine, BREAST_CANCER) if r["challenger_version"] == challenger]
    assert promoted["state"] == "promoted" and promoted["figures"]["pairs"] >= 60, promoted
    assert _admin(serving, token)["rollout"] is None
    assert demo.predict(serving, BREAST_CANCER, records[:1])["model_version"] == challenger

    # A canary that raises on requests of two records, started by hand: no client gets an error, and the check
    # rolls it back for its error rate without waiting for the minimum of records.
    broken = str(int(challenger) + 100)
    copy = subprocess.run(
        [
            sys.executable,
            "-c",
            FIXED_BATCH_COPY,
            config.path,
            stack.urls["MLflow"],
            _onnx_uri(client, challenger),
            broken,
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "BENTOML_HOME": str(e2e.folder / "state" / "bentoml")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert copy.returncode == 0, copy.stderr
    started = httpx.post(
        f"{serving}/admin/models/{BREAST_CANCER}/rollout",
        json={"tag": f"{BREAST_CANCER}:v{broken}", "mode": "canary", "share": 0.9},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert started.status_code == 200, started.text
    pairs = [records[i : i + 2] for i in range(0, 70, 2)] * 3  # ~95 of them go to the canary
    answers = [demo.predict(serving, BREAST_CANCER, pair) for pair in pairs]
    assert {a["model_version"] for a in answers} == {challenger}  # the champion answered every one
    check = api.trigger(check_dag, {})
    assert api.wait_for_run(check_dag, check, RUN_TIMEOUT) == "success", e2e.logs()
    states = {t.task_id: t.state for t in api.task_states(check_dag, check)}
    assert (states["roll_back"], states[APPROVAL_TASK], states["promote_rollout"]) == ("success", "skipped", "skipped")
    judgement = api.xcom(check_dag, check, "check_rollout", "judgement")
    assert judgement["verdict"] == "rollback" and judgement["reason"].startswith("error rate 1.000 above 0.01")
    assert _admin(serving, token)["rollout"] is None
    kept = [m for m in alias_history.moves(engine, BREAST_CANCER) if m.alias == "champion"][-1]
    assert (kept.from_version, kept.to_version, kept.cause) == (challenger, challenger, "rollout")
    assert f"the canary rollout of v{broken} was rolled back: error rate 1.000" in kept.detail
    # Nothing lost: every request has the champion's answer and the challenger's failure (or its scoring) logged.
    with engine.connect() as connection:
        logged = connection.execute(
            sa.text("SELECT role, served, error IS NOT NULL FROM inference_log WHERE request_id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": [a["request_id"] for a in answers]},
        ).all()
    assert sum(1 for role, served, _ in logged if role == "champion" and served) == 2 * len(pairs)
    failed = sum(1 for role, _, error in logged if role == "challenger" and error)
    assert failed > 0 and failed == sum(1 for role, *_ in logged if role == "challenger"), logged
    api.close()


def _admin(serving: str, token: str) -> dict:
    response = httpx.get(
        f"{serving}/admin/models/{BREAST_CANCER}", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    response.raise_for_status()
    return response.json()


def _onnx_uri(client, version: str) -> str:
    return client.get_model_version(BREAST_CANCER, version).tags["onnx_model_uri"]
