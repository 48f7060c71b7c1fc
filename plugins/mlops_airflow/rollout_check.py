"""The tasks of `model_rollout__<model>`: judge the model's shadow or canary rollout on live traffic, then promote
its challenger or roll it back, recorded in the alias history and the rollouts table."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Context, task

from mlops_airflow import mlflow_tracking, notify, pipelines
from mlops_airflow.approval import APPROVAL_TASK
from mlops_airflow.decorators import mlflow_task
from mlops_airflow.lakefs_hook import LakeFSHook
from mlops_airflow.releases import airflow_run, approval_answer, deployment_errors, version_snapshot

ROLLOUT_KEY = "rollout"


@task.branch  # noqa: AIR004 (it chooses among three: approve, promote, roll back)
def check_rollout(config_file: str, **context: Context) -> list[str]:
    """Measure the rollout the service runs for this model (none: nothing to do) against the champion on the
    records both scored, and choose: wait for more traffic, promote (after a person's approval, when the config
    asks for one) or roll back."""
    from include.mlops import rollouts
    from mlops_airflow import operations_store, serving
    from mlops_airflow.sources import labels as source_labels

    config = pipelines.load(config_file)
    engine = operations_store.engine()
    recorded = rollouts.running(engine, config.name)
    on_trial = serving.endpoint(config.name).rollout()
    now = dt.datetime.now(dt.UTC)
    if on_trial is None:
        if recorded is not None:
            why = "the service runs it no more (ended by hand, or by a switch of the model)"
            rollouts.record_end(engine, recorded["id"], rollouts.ROLLED_BACK, why, now)
            print(f"{config.name} v{recorded['challenger_version']}: {why}; recorded as rolled back")
        else:
            print(f"{config.name}: no rollout on")
        return []
    version, started_at = on_trial["model_version"], dt.datetime.fromisoformat(on_trial["started_at"])
    context["ti"].xcom_push(key=ROLLOUT_KEY, value={**on_trial, "rollout_id": recorded["id"] if recorded else None})
    if not on_trial["loaded"]:
        judgement = rollouts.Judgement("rollback", f"the service cannot load the challenger {on_trial['tag']} any more")
        context["ti"].xcom_push(key="judgement", value=judgement.to_dict())
        print(judgement.reason)
        return ["roll_back"]
    try:
        lookback = dt.timedelta(hours=config.drift.label_lookback_hours)
        labels = source_labels(config, now, max(started_at - lookback, now - lookback), now)
    except Exception as exc:  # labels are optional evidence: the other criteria still judge
        print(f"no labels from the source ({exc}); judging without the live metric")
        labels = None
    figures = rollouts.compare(engine, config, version, started_at, now, labels)
    judgement = rollouts.judge(figures, config)
    if recorded is not None:
        rollouts.record_check(engine, recorded["id"], figures, judgement, now)
    context["ti"].xcom_push(key="judgement", value=judgement.to_dict())
    context["ti"].xcom_push(key="figures", value=figures.to_dict())
    print(f"{config.name}: {on_trial['mode']} rollout of v{version} since {started_at:%Y-%m-%d %H:%M} UTC")
    for name, value in figures.to_dict().items():
        print(f"  {name}: {value}")
    print(f"verdict: {judgement.verdict}: {judgement.reason}")
    promote = APPROVAL_TASK if APPROVAL_TASK in context["dag"].task_ids else "promote_rollout"
    return {"wait": [], "promote": [promote], "rollback": ["roll_back"]}[judgement.verdict]


@mlflow_task
def promote_rollout(config_file: str, **context: Context) -> dict:
    """Make the challenger the champion: ml_training's switch (which ends the trial without loading it again; a
    smoke test on its test split, the champion put back on failure), then `champion` moves, recorded with the
    verdict (and who approved it); the snapshot and reference it was trained with are merged next."""
    from include.mlops import release
    from include.mlops.naming import parse_lakefs_uri
    from include.mlops.object_store import ObjectStore
    from mlops_airflow import operations_store, serving

    on_trial, judgement = _trial(context)
    config = pipelines.load(config_file)
    client, engine, version = mlflow_tracking.client(), operations_store.engine(), str(on_trial["model_version"])
    challenger = release.Release.registered(client, config, version, version_snapshot(client, config.name, version))
    service, store = serving.endpoint(config.name), ObjectStore.from_environment()
    repo = LakeFSHook().get_repository(challenger.snapshot["repository"])
    run, answer, reason = airflow_run(context), approval_answer(context), judgement["reason"]
    with deployment_errors():
        previous = release.promote_trial(
            client, engine, service, store, repo, challenger, on_trial, reason, run, answer
        )
    print(f"{config.name}: champion is now v{version}" + (f", was v{previous}" if previous else ""))
    why = f"promoted after its {on_trial['mode']} rollout: {reason}"
    notify.tell(config, "rollout_verdict", context, why=why, version=version)
    previously = f"; the champion was v{previous}" if previous else ""
    notify.tell(config, "promoted", context, why=why + previously, version=version)
    reference = client.get_model_version(config.name, version).tags.get("drift_reference")
    return {
        "version": version,
        "snapshot_commit": challenger.snapshot["commit"],
        "reference_commit": parse_lakefs_uri(reference)[1] if reference else None,
    }


@task(multiple_outputs=False)
def end_rollout(config_file: str, **context: Context) -> dict:
    """Unload the challenger and record why (the check's verdict, or the person who rejected it, or no answer in
    time): in the alias history (`champion` kept, cause `rollout`), on the model version (tag `rollout`) and in
    the rollouts table. As `roll_back` after the check, and as `reject_promotion` after a person's answer."""
    from include.mlops import release
    from mlops_airflow import operations_store, serving

    on_trial, judgement = _trial(context)
    config = pipelines.load(config_file)
    name, version = config.name, on_trial["model_version"]
    client, engine, service = mlflow_tracking.client(), operations_store.engine(), serving.endpoint(name)
    with deployment_errors():
        reason = release.end_trial(
            client, engine, service, on_trial, judgement["reason"], airflow_run(context), approval_answer(context)
        )
    print(f"{name}: the {on_trial['mode']} rollout of v{version} is rolled back: {reason}")
    why = f"the {on_trial['mode']} rollout is rolled back, the champion stays: {reason}"
    notify.tell(config, "rollout_verdict", context, why=why, version=version)
    return {"version": version, "reason": reason}


def _trial(context: Context) -> tuple[dict, dict]:
    """The trial check_rollout found on the service (with its `rollout_id`), and its judgement."""
    ti: Any = context["ti"]
    on_trial = ti.xcom_pull(task_ids="check_rollout", key=ROLLOUT_KEY)
    return on_trial, ti.xcom_pull(task_ids="check_rollout", key="judgement")
