"""The tasks of `model_rollout__<model>`: judge the model's shadow or canary rollout on live traffic, then promote
its challenger or roll it back, recorded in the alias history and the rollouts table."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Context, task
from airflow.sdk.exceptions import AirflowFailException

from mlops_airflow import mlflow_tracking, pipelines
from mlops_airflow.approval import ANSWER_KEY, APPROVAL_TASK
from mlops_airflow.decorators import mlflow_task
from mlops_airflow.lakefs_hook import LakeFSHook
from mlops_airflow.training_model import deploy, record_alias_move, training_snapshot

ROLLOUT_KEY = "rollout"


@task.branch  # noqa: AIR004 (it chooses among three: approve, promote, roll back)
def check_rollout(config_file: str, **context: Context) -> list[str]:
    """Measure the rollout the service runs for this model (none: nothing to do) against the champion on the
    records both scored, and choose: wait for more traffic, promote (after a person's approval, when the config
    asks for one) or roll back."""
    from include.mlops import rollouts
    from mlops_airflow import serving
    from mlops_airflow.monitoring import inference_log_engine
    from mlops_airflow.sources import fetcher

    config = pipelines.load(config_file)
    engine = inference_log_engine()
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
        labels = fetcher(config, as_of=now)(max(started_at - lookback, now - lookback), now).rows
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
    """Make the challenger the champion: ml_training's deployment (switching the service to it ends the
    rollout without loading it again; a smoke test on its test split, the champion put back on failure), then
    `champion` moves, recorded with the verdict (and who approved it); the snapshot and reference it was trained
    with are merged next."""
    from include.mlops import registry, rollouts
    from include.mlops.lineage import parse_lakefs_uri
    from mlops_airflow.monitoring import inference_log_engine

    ti: Any = context["ti"]
    on_trial = ti.xcom_pull(task_ids="check_rollout", key=ROLLOUT_KEY)
    judgement = ti.xcom_pull(task_ids="check_rollout", key="judgement")
    config = pipelines.load(config_file)
    name, version = config.name, on_trial["model_version"]
    client = mlflow_tracking.client()
    found = client.get_model_version(name, version)
    tags = found.tags
    data = training_snapshot(
        LakeFSHook().get_repository(tags["lakefs_repository"]), tags["lakefs_commit"], f"v{version}'s lakefs_commit"
    )
    deployed = deploy(config, version, tags["onnx_model_uri"], found.run_id, data, tags.get("airflow_run_id", ""))
    before = registry.version_by_alias(client, name, registry.CHAMPION)
    previous = registry.promote(client, name, version)
    detail = f"{on_trial['mode']} rollout promoted: {judgement['reason']}; serving {deployed['bentoml_model_tag']}"
    answer = _answer(context)
    if answer is not None:
        detail = f"approved by {answer['by']} at {answer['at']}; {detail}"
        record_alias_move(name, registry.CHAMPION, before, version, detail, "approval", answer["by"])
    else:
        record_alias_move(name, registry.CHAMPION, before, version, detail, "rollout")
    client.set_model_version_tag(name, version, "rollout", f"promoted: {judgement['reason']}"[:5000])
    if on_trial["rollout_id"] is not None:
        now = dt.datetime.now(dt.UTC)
        rollouts.record_end(inference_log_engine(), on_trial["rollout_id"], rollouts.PROMOTED, judgement["reason"], now)
    print(f"{name}: champion is now v{version}" + (f", was v{previous}" if previous else ""))
    reference = tags.get("drift_reference")
    return {
        "version": version,
        "snapshot_commit": data["commit"],
        "reference_commit": parse_lakefs_uri(reference)[1] if reference else None,
    }


@task(multiple_outputs=False)
def end_rollout(config_file: str, **context: Context) -> dict:
    """Unload the challenger and record why (the check's verdict, or the person who rejected it, or no answer in
    time): in the alias history (`champion` kept, cause `rollout`), on the model version (tag `rollout`) and in
    the rollouts table. As `roll_back` after the check, and as `reject_promotion` after a person's answer."""
    from include.mlops import deployment, registry, rollouts
    from mlops_airflow import serving
    from mlops_airflow.monitoring import inference_log_engine

    ti: Any = context["ti"]
    on_trial = ti.xcom_pull(task_ids="check_rollout", key=ROLLOUT_KEY)
    judgement = ti.xcom_pull(task_ids="check_rollout", key="judgement")
    config = pipelines.load(config_file)
    name, version = config.name, on_trial["model_version"]
    try:
        serving.endpoint(name).end_rollout()
    except deployment.ServiceUnreachable:
        raise  # the task's retries may find the service up again
    except deployment.DeploymentError as failure:
        raise AirflowFailException(str(failure)) from None
    reason = judgement["reason"]
    answer = _answer(context)
    if answer is not None and not answer["approved"]:
        who = f"rejected by {answer['by']}" if answer["by"] else "no approval before the timeout"
        reason = f"{who} (the check: {reason})"
    client = mlflow_tracking.client()
    champion = registry.version_by_alias(client, name, registry.CHAMPION)
    if champion is not None:
        detail = f"kept v{champion.version}: the {on_trial['mode']} rollout of v{version} was rolled back: {reason}"
        record_alias_move(name, registry.CHAMPION, champion, champion.version, detail, "rollout", kept=True)
    try:
        client.set_model_version_tag(name, version, "rollout", f"rolled back: {reason}"[:5000])
    except Exception as exc:  # a challenger loaded by hand need not be a registered version
        print(f"v{version} is not a version of {name} in MLflow ({exc}); no tag set")
    if on_trial["rollout_id"] is not None:
        now = dt.datetime.now(dt.UTC)
        rollouts.record_end(inference_log_engine(), on_trial["rollout_id"], rollouts.ROLLED_BACK, reason, now)
    print(f"{name}: the {on_trial['mode']} rollout of v{version} is rolled back: {reason}")
    return {"version": version, "reason": reason}


def _answer(context: Context) -> dict | None:
    """A person's answer to the run's approval, when the config asks for one and it was given."""
    if APPROVAL_TASK not in context["dag"].task_ids:
        return None
    return context["ti"].xcom_pull(task_ids=APPROVAL_TASK, key=ANSWER_KEY)
