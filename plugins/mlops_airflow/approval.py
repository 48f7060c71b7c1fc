"""A person's approval before a challenger becomes the champion (config `gate.approval: required`).

With `rollout.mode: direct` the training run asks before the challenger goes live, showing the gate's verdict,
both models' metrics on the same test split and links to the evidence. With a shadow or canary rollout, the
rollout check asks once the challenger has held up on live traffic, showing the rollout's figures. Approve
promotes the challenger; Reject, or no answer within `gate.approval_timeout_hours`, rejects it (recorded on the
run branch, or as a rolled back rollout).

It is a HITL *branch* and not the standard provider's ApprovalOperator: that one's Reject skips every task
right after it, so nothing downstream could record the rejection.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import Context

# The task that asks, in ml_training and in model_rollout (the MLOps page lists the ones waiting).
APPROVAL_TASK = "approve_deployment"
APPROVE = "Approve"
REJECT = "Reject"
ANSWER_KEY = "answer"


class _ApprovalOperator(HITLBranchOperator):
    """Approve leads to `approve_task`, Reject or the timeout to `reject_task`. The answer is handed on as XCom
    `answer`: {approved, by (the user's name; none on timeout), at}."""

    # Subject and body are written when the challenger is known (in execute), not rendered from templates.
    template_fields = ()

    def __init__(
        self,
        *,
        model: str,
        config_file: str,
        timeout: dt.timedelta,
        approve_task: str,
        reject_task: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            subject=f"Promote the new challenger of {model}?",
            body="",
            options=[APPROVE, REJECT],
            options_mapping={APPROVE: approve_task, REJECT: reject_task},
            defaults=[REJECT],
            response_timeout=timeout,
            task_id=APPROVAL_TASK,
            **kwargs,
        )
        self.model = model
        self.config_file = config_file

    def ask(self, context: Context, version: str) -> Any:
        """Ask (the subject and body are set), and tell the config's destinations of `approval_waiting` (once per
        run: a retried task asks again, without a second message)."""
        from mlops_airflow import notify, pipelines
        from mlops_airflow.run_context import airflow_run_url

        hours = self.response_timeout.total_seconds() / 3600 if self.response_timeout else None
        where = f"{airflow_run_url(context['dag'].dag_id, context['run_id'])}/tasks/{APPROVAL_TASK}/required_actions"
        why = f"{self.subject} Answer at {where}" + (f"; no answer within {hours:g} h rejects it." if hours else ".")
        notify.tell(pipelines.load(self.config_file), "approval_waiting", context, why=why, version=version)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        user = event.get("responded_by_user") or {}
        answer = {
            "approved": APPROVE in (event.get("chosen_options") or []),
            "by": user.get("name") if isinstance(user, dict) else getattr(user, "name", None),
            "at": event["responded_at"].isoformat() if event.get("responded_at") else None,
        }
        context["ti"].xcom_push(key=ANSWER_KEY, value=answer)
        self.log.info("Answer: %s", answer)
        return super().execute_complete(context, event)


class ChallengerApprovalOperator(_ApprovalOperator):
    """In ml_training: ask whether the challenger `register_challenger` handed on may go live. A challenger the
    gate rejected (or a run with param `promote` off) is not asked about: the run goes straight to
    `reject_task`."""

    def execute(self, context: Context) -> Any:
        decision = context["ti"].xcom_pull(task_ids="register_challenger")
        if not (decision["promote"] and context["params"].get("promote", True)):
            why = "the gate rejected the challenger" if not decision["promote"] else "param promote is off"
            self.log.info("Nothing to approve: %s", why)
            return self.do_branch(context=context, branches_to_execute=[self.options_mapping[REJECT]])
        self.subject = f"Deploy {decision['challenger']} as v{decision['version']} of {self.model}?"
        self.body = _request(self.model, decision, context)
        return self.ask(context, decision["version"])


class RolloutApprovalOperator(_ApprovalOperator):
    """In model_rollout: ask whether the challenger whose rollout `check_rollout` judged worth promoting may
    become the champion, showing the rollout's figures."""

    def execute(self, context: Context) -> Any:
        from include.mlops import rollouts, tracking
        from mlops_airflow import mlflow_tracking
        from mlops_airflow.run_context import airflow_run_url

        ti: Any = context["ti"]
        on_trial = ti.xcom_pull(task_ids="check_rollout", key="rollout")
        figures = ti.xcom_pull(task_ids="check_rollout", key="figures")
        judgement = ti.xcom_pull(task_ids="check_rollout", key="judgement")
        version = on_trial["model_version"]
        self.subject = f"Promote v{version} of {self.model} after its {on_trial['mode']} rollout?"
        links = {"This Airflow run": airflow_run_url(ti.dag_id, ti.run_id)}
        try:
            found = mlflow_tracking.client().get_model_version(self.model, version)
            run = mlflow_tracking.client().get_run(found.run_id)
            links["Challenger's MLflow run"] = tracking.run_url(
                mlflow_tracking.ui_url(), run.info.experiment_id, found.run_id
            )
        except Exception as exc:  # a challenger loaded by hand need not be a registered version
            self.log.info("No MLflow run to link for v%s: %s", version, exc)
        self.body = rollouts.approval_request(on_trial, figures, judgement, links)
        return self.ask(context, version)


def _request(model: str, decision: dict, context: Context) -> str:
    """The Markdown a person reads before answering."""
    from include.mlops import registry, tracking
    from mlops_airflow import mlflow_tracking
    from mlops_airflow.lakefs_hook import LakeFSHook
    from mlops_airflow.run_context import airflow_run_url, model_card_page_url

    ti: Any = context["ti"]
    training_run = ti.xcom_pull(task_ids="start_training_run")
    data = ti.xcom_pull(task_ids="resolve_training_data")
    mlflow_ui = mlflow_tracking.ui_url()
    links = {
        "Model card": model_card_page_url(model, decision["version"]),
        "Challenger's MLflow run": tracking.run_url(
            mlflow_ui, training_run["experiment_id"], decision["challenger_run_id"]
        ),
        "Training run (all candidates)": tracking.run_url(
            mlflow_ui, training_run["experiment_id"], training_run["run_id"]
        ),
        "Training data (lakeFS commit)": LakeFSHook().commit_url(data["repository"], data["commit"]),
        "This Airflow run": airflow_run_url(ti.dag_id, ti.run_id),
    }
    return registry.approval_request(registry.GateDecision.from_dict(decision), links)


def why_not_promoted(decision: dict, answer: dict | None) -> str:
    """Why a run's challenger was not promoted, for the rejection commit: the gate's reason, the person who
    rejected it, no answer in time, or param `promote` off."""
    if not decision["promote"]:
        return decision["reason"]
    if answer is not None and not answer["approved"]:
        return f"rejected by {answer['by']}" if answer["by"] else "no approval before the timeout"
    return "gate passed, promotion is off (param promote)"
