"""`gate.approval: required` puts a person's approval between the gate and the deployment; without it the
training DAG goes on as before. A run that asks and is answered is in tests/dags/test_ml_training_model.py (the
first run, answered through the Core API's handler while `dag.test()` waits); tests/e2e answer through the REST
API and in the Airflow UI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml

from mlops_airflow.approval import APPROVE, REJECT, ChallengerApprovalOperator, why_not_promoted
from tests.dags.conftest import training_dag


def test_an_approval_stands_between_the_gate_and_the_deployment(write_config):
    write_config()
    gate_only = training_dag()
    assert "approve_deployment" not in gate_only.task_ids
    assert gate_only.get_task("choose_outcome").downstream_task_ids == {"go_live", "record_rejection"}
    assert gate_only.get_task("go_live").downstream_task_ids == {"deploy_model", "start_rollout"}

    config = Path(write_config().path)
    raw = yaml.safe_load(config.read_text())
    raw["gate"] |= {"approval": "required", "approval_timeout_hours": 0.5}
    config.write_text(yaml.safe_dump(raw))
    dag = training_dag()
    approval = dag.get_task("approve_deployment")
    assert isinstance(approval, ChallengerApprovalOperator)
    assert "choose_outcome" not in dag.task_ids
    assert approval.upstream_task_ids == {"register_challenger"}
    assert approval.downstream_task_ids == {"go_live", "record_rejection"}
    assert approval.options == [APPROVE, REJECT] and approval.defaults == [REJECT]
    assert approval.options_mapping == {APPROVE: "go_live", REJECT: "record_rejection"}
    assert approval.response_timeout == dt.timedelta(minutes=30)
    assert dag.get_task("go_live").upstream_task_ids == {"approve_deployment"}
    assert dag.get_task("deploy_model").upstream_task_ids == {"go_live", "register_challenger"}


def test_the_rejection_commit_says_who_or_what_stopped_the_challenger():
    passed = {"promote": True, "reason": "better than the champion by at least the required margin"}
    failed = {"promote": False, "reason": "not better than the champion by the required margin"}
    assert why_not_promoted(failed, None) == failed["reason"]
    assert why_not_promoted(passed, {"approved": False, "by": "alice", "at": "t"}) == "rejected by alice"
    assert why_not_promoted(passed, {"approved": False, "by": None, "at": "t"}) == "no approval before the timeout"
    assert why_not_promoted(passed, None) == "gate passed, promotion is off (param promote)"
