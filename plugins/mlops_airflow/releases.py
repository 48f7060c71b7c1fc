"""The Airflow side that the release tasks share (ml_training's, model_rollback's, model_rollout's): the training
snapshot a version was trained on, the running task's Airflow run and approval answer as include.mlops.release
takes them, and deployment errors as the task's outcome."""

from __future__ import annotations

import json
from collections.abc import Generator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from mlops_airflow.approval import ANSWER_KEY, APPROVAL_TASK
from mlops_airflow.decorators import show_lakefs_commit
from mlops_airflow.lakefs_hook import LakeFSHook

if TYPE_CHECKING:
    from include.mlops.release import AirflowRun  # imports MLflow: not at parse time


@contextmanager
def deployment_errors(refused: str = "") -> Generator[None]:
    """A DeploymentError in the block fails the task at once, its message after `refused`: the service refused
    the model, and would again. ServiceUnreachable goes on up, so that the task's retries may find the service
    up again; so does any other error."""
    from include.mlops.deployment import DeploymentError, ServiceUnreachable

    try:
        yield
    except ServiceUnreachable:
        raise
    except DeploymentError as failure:
        raise AirflowFailException(f"{refused}{failure}") from None


def airflow_run(context: Context) -> AirflowRun:
    """The running task's Airflow run: it moves aliases, records trials, and names what started it (its `reason`
    param, or its run type: a rollback run has no reason)."""
    from include.mlops.release import AirflowRun

    dag_run: Any = context["dag_run"]
    trigger = str(context["params"].get("reason") or getattr(dag_run.run_type, "value", dag_run.run_type))
    return AirflowRun(context["dag"].dag_id, context["run_id"], trigger)


def approval_answer(context: Context) -> dict | None:
    """A person's answer to the run's approval (`approved`, `by`, `at`): None when the DAG asks for none."""
    if APPROVAL_TASK not in context["dag"].task_ids:
        return None
    return context["ti"].xcom_pull(task_ids=APPROVAL_TASK, key=ANSWER_KEY)


def training_snapshot(repo, requested: str, named_by: str) -> dict:
    """The training snapshot committed as `requested` in `repo` (its manifest's paths and figures); the
    "lakeFS" button points at it. `named_by` says where the commit id came from, for the errors."""
    from include.mlops import lakefs_repository

    try:
        commit = lakefs_repository.get_commit(repo, requested)
    except lakefs_repository.RefNotFound as missing:
        raise AirflowFailException(f"{named_by} {requested!r}: {missing}") from None
    manifest_path = commit.metadata.get("manifest")
    if not manifest_path:
        raise AirflowFailException(
            f"commit {commit.id} of {repo.id!r} ({named_by}) is not a training snapshot (its metadata has no "
            "'manifest'); use the lakefs_commit tag of an earlier MLflow training run"
        )
    manifest = json.loads(lakefs_repository.read_bytes(repo, commit.id, manifest_path))
    show_lakefs_commit(repo.id, commit.id)
    return {
        "repository": repo.id,
        "commit": commit.id,
        "manifest_path": manifest_path,
        "paths": manifest["paths"],
        "source_commit": manifest["source_commit"],
        "rows": manifest["rows"],
    }


def version_snapshot(client, name: str, version: str) -> dict:
    """The training snapshot that version `version` of model `name` was trained on (its lakeFS tags)."""
    tags = client.get_model_version(name, version).tags
    repo = LakeFSHook().get_repository(tags["lakefs_repository"])
    return training_snapshot(repo, tags["lakefs_commit"], f"v{version}'s lakefs_commit")
