"""The tasks of `model_rollback__<model>`: put an earlier version of a model back in service, then move
`champion` to it and record who did it."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from mlops_airflow import mlflow_tracking, notify, pipelines
from mlops_airflow.decorators import mlflow_task, show_mlflow_run
from mlops_airflow.lakefs_hook import LakeFSHook
from mlops_airflow.releases import airflow_run, deployment_errors, version_snapshot


@mlflow_task
def choose_version(config_file: str, params: dict) -> dict:
    """The version to put back (param `version`, by default the previous champion), refused with the reason
    when it does not exist, serves already, or never passed ONNX parity; and what it was trained on."""
    from include.mlops import registry, release, tracking

    config = pipelines.load(config_file)
    client = mlflow_tracking.client()
    requested = params.get("version")
    try:
        version = registry.rollback_target(client, config.name, None if requested in (None, "") else str(requested))
    except registry.RollbackRefused as refused:
        raise AirflowFailException(f"rollback refused, champion unchanged: {refused}") from None
    target = release.Release.registered(client, config, version, version_snapshot(client, config.name, version))
    champion = registry.version_by_alias(client, config.name, registry.CHAMPION)
    experiment = client.get_run(target.mlflow_run_id).info.experiment_id
    show_mlflow_run(tracking.run_url(mlflow_tracking.ui_url(), experiment, target.mlflow_run_id))
    print(f"{config.name}: rolling back from v{champion.version if champion else '-'} to v{version}")
    return {
        "version": version,
        "from_version": champion.version if champion else None,
        "onnx_model_uri": target.onnx_model_uri,
        "mlflow_run_id": target.mlflow_run_id,
        "trained_by_airflow_run": target.airflow_run_id,
        "data": dict(target.snapshot),
    }


@mlflow_task
def deploy_version(config_file: str, target: dict) -> dict:
    """Switch the running service to the version without downtime and smoke-test it on its own test split
    (ml_training's deployment: the previous model is put back on failure, and `champion` does not move)."""
    from include.mlops import release
    from include.mlops.object_store import ObjectStore
    from mlops_airflow import serving

    config = pipelines.load(config_file)
    rolled_back_to = release.Release(
        config,
        target["version"],
        target["onnx_model_uri"],
        target["mlflow_run_id"],
        target["data"],
        target["trained_by_airflow_run"],
    )
    client, repo = mlflow_tracking.client(), LakeFSHook().get_repository(target["data"]["repository"])
    with deployment_errors():
        switched = release.switch(
            client, ObjectStore.from_environment(), repo, serving.endpoint(config.name), rolled_back_to
        )
    return switched.to_dict()


@mlflow_task
def move_champion(config_file: str, target: dict, deployed: dict, **context: Context) -> dict:
    """Move `champion` to the version that now serves, recorded in the alias history as a rollback by the
    person who triggered it."""
    from include.mlops import release
    from mlops_airflow import operations_store

    config = pipelines.load(config_file)
    name, version = config.name, target["version"]
    dag_run: Any = context["dag_run"]
    detail = f"rollback to v{version}; serving {deployed['bentoml_model_tag']}"
    previous = release.move_champion(
        mlflow_tracking.client(),
        operations_store.engine(),
        name,
        version,
        airflow_run(context),
        "rollback",
        detail,
        actor=dag_run.triggering_user_name or None,
    )
    print(f"{name}: champion is now v{version}" + (f", was v{previous}" if previous else ""))
    by = dag_run.triggering_user_name or "a user"
    why = f"{by} rolled the champion back to v{version}" + (f" from v{previous}" if previous else "")
    notify.tell(config, "rolled_back", context, why=why, version=version)
    return {"version": version, "previous_version": previous}
