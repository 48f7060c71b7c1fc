"""The tasks of `model_rollback__<model>`: put an earlier version of a model back in service, then move
`champion` to it and record who did it."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from mlops_airflow import mlflow_tracking, pipelines
from mlops_airflow.decorators import mlflow_task, show_mlflow_run
from mlops_airflow.lakefs_hook import LakeFSHook
from mlops_airflow.training_model import deploy, record_alias_move, training_snapshot


@mlflow_task
def choose_version(config_file: str, params: dict) -> dict:
    """The version to put back (param `version`, by default the previous champion), refused with the reason
    when it does not exist, serves already, or never passed ONNX parity; and what it was trained on."""
    from include.mlops import registry, tracking

    name = pipelines.load(config_file).name
    client = mlflow_tracking.client()
    requested = params.get("version")
    try:
        version = registry.rollback_target(client, name, None if requested in (None, "") else str(requested))
    except registry.RollbackRefused as refused:
        raise AirflowFailException(f"rollback refused, champion unchanged: {refused}") from None
    found = client.get_model_version(name, version)
    tags = found.tags
    champion = registry.version_by_alias(client, name, registry.CHAMPION)
    data = training_snapshot(
        LakeFSHook().get_repository(tags["lakefs_repository"]), tags["lakefs_commit"], f"v{version}'s lakefs_commit"
    )
    run = client.get_run(found.run_id)
    show_mlflow_run(tracking.run_url(mlflow_tracking.ui_url(), run.info.experiment_id, found.run_id))
    print(f"{name}: rolling back from v{champion.version if champion else '-'} to v{version}")
    return {
        "version": version,
        "from_version": champion.version if champion else None,
        "onnx_model_uri": tags["onnx_model_uri"],
        "mlflow_run_id": found.run_id,
        "trained_by_airflow_run": tags.get("airflow_run_id", ""),
        "data": data,
    }


@mlflow_task
def deploy_version(config_file: str, target: dict) -> dict:
    """Roll the version out to the running service without downtime and smoke-test it on its own test split
    (ml_training's deployment: the previous model is put back on failure, and `champion` does not move)."""
    config = pipelines.load(config_file)
    return deploy(
        config,
        target["version"],
        target["onnx_model_uri"],
        target["mlflow_run_id"],
        target["data"],
        target["trained_by_airflow_run"],
    )


@mlflow_task
def move_champion(config_file: str, target: dict, deployed: dict, **context: Context) -> dict:
    """Move `champion` to the version that now serves, recorded in the alias history as a rollback by the
    person who triggered it."""
    from include.mlops import registry

    name = pipelines.load(config_file).name
    client = mlflow_tracking.client()
    before = registry.version_by_alias(client, name, registry.CHAMPION)
    previous = registry.promote(client, name, target["version"])
    dag_run: Any = context["dag_run"]
    user = dag_run.triggering_user_name or None
    detail = f"rollback to v{target['version']}; serving {deployed['bentoml_model_tag']}"
    record_alias_move(name, registry.CHAMPION, before, target["version"], detail, "rollback", user)
    print(f"{name}: champion is now v{target['version']}" + (f", was v{previous}" if previous else ""))
    return {"version": target["version"], "previous_version": previous}
