"""Releasing a version of a model: publish it, switch the service to it or try it beside the champion, end the
trial, and move `champion` with its history.

- publish: into the BentoML model store with its lineage, built into a Bento, and into the object store when one
  is configured; tags on the model version name all three.
- switch: the service serves the version, smoke-tested on its training snapshot's test rows; on any failure the
  model it served before is put back (`deployment.roll_out`).
- trial: the version beside the champion as a shadow or canary (config `rollout`), judged on live traffic by
  model_rollout; it ends promoted (a switch to it) or rolled back (unloaded).
- move_champion: `champion` moves (`registry.promote`), recorded in the alias history with its cause and who
  made it.

Each step takes its clients: the MLflow client, the operations store (the engine of the alias history and the
rollouts table), the lakeFS repository of the training snapshot, the model service's `ServingEndpoint` and the
object store. A DeploymentError says the service refused (a retry would be refused again); ServiceUnreachable,
a DeploymentError too, that it did not answer (a retry may find it up).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mlflow.exceptions import MlflowException

from include.mlops import (
    alias_history,
    deployment,
    lakefs_repository,
    monitoring,
    object_store,
    registry,
    rollouts,
    tracking,
)
from include.mlops.config import PipelineConfig
from include.mlops.deployment import DeploymentError, ServingEndpoint
from include.mlops.lineage import PROJECT_ROOT
from include.mlops.naming import lakefs_uri, run_branch_name, run_key

if TYPE_CHECKING:
    import sqlalchemy as sa
    from mlflow.tracking import MlflowClient

    from include.mlops.alias_history import Cause

logger = logging.getLogger(__name__)

SMOKE_TEST_ROWS = 200
BENTOFILE = PROJECT_ROOT / "include" / "serving" / "bentofile.yaml"
# MLflow refuses longer tag values.
TAG_LIMIT = 5000


@dataclass(frozen=True)
class Release:
    """A registered version of the config's model to put in service, and where it comes from."""

    config: PipelineConfig
    version: str
    onnx_model_uri: str
    mlflow_run_id: str  # the MLflow run that trained it
    snapshot: Mapping[str, Any]  # the training snapshot it was trained on: repository, commit, paths
    airflow_run_id: str  # the Airflow run that trained it

    @classmethod
    def registered(
        cls, client: MlflowClient, config: PipelineConfig, version: str, snapshot: Mapping[str, Any]
    ) -> Release:
        """`version` as the registry records it: its ONNX model, its training run, the Airflow run behind it."""
        found = client.get_model_version(config.name, version)
        onnx_model_uri = found.tags.get("onnx_model_uri")
        if not onnx_model_uri:
            raise ValueError(f"{config.name} v{version} has no onnx_model_uri tag: it never passed ONNX parity")
        return cls(config, str(version), onnx_model_uri, found.run_id, snapshot, found.tags.get("airflow_run_id", ""))

    def lineage(self) -> dict[str, str]:
        """What the model store entry, the Bento and the object store record say about where it comes from."""
        return {
            "mlflow_model_name": self.config.name,
            "mlflow_model_version": self.version,
            "mlflow_run_id": self.mlflow_run_id,
            "lakefs_repository": self.snapshot["repository"],
            "lakefs_commit": self.snapshot["commit"],
            "airflow_run_id": self.airflow_run_id,
        }


@dataclass(frozen=True)
class AirflowRun:
    """The Airflow run that releases: its DAG, its id, and what started it (its `reason` param, or its run type).
    It is who moved an alias, unless a person did."""

    dag_id: str
    run_id: str
    trigger: str


@dataclass(frozen=True)
class Published:
    tag: str  # in the BentoML model store
    bento: str
    onnx_bytes: bytes


@dataclass(frozen=True)
class Switched:
    """What the service serves after a switch, and what it served before (None: nothing)."""

    bentoml_model_tag: str
    bento_tag: str
    previous_tag: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Trial:
    """A trial the service runs, as the rollouts table records it."""

    bentoml_model_tag: str
    bento_tag: str
    rollout_id: int
    mode: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def publish(client: MlflowClient, store: object_store.ObjectStore | None, release: Release) -> Published:
    """Put the version into the BentoML model store with its lineage and build it into a Bento, both named on the
    model version (tags `bentoml_model_tag`, `bento_tag`), and into the object store `store` when there is one (the
    service's replicas pull it from there; tag `model_object`). An object store that does not answer raises
    ObjectStoreError before anything is asked of the service."""
    name, version = release.config.name, release.version
    onnx_bytes = tracking.load_onnx(release.onnx_model_uri)
    lineage = release.lineage()
    tag = deployment.save_to_model_store(onnx_bytes, release.config, version, lineage)
    bento = deployment.build_bento(tag, BENTOFILE, PROJECT_ROOT, lineage)
    if store is not None:
        published = object_store.publish(store, tag, onnx_bytes, lineage)
        uri = f"s3://{store.bucket}/{published.key}"
        client.set_model_version_tag(name, version, "model_object", uri)
        logger.info("%s is published as %s (%d bytes)", tag, uri, published.size)
    client.set_model_version_tag(name, version, "bentoml_model_tag", tag)
    client.set_model_version_tag(name, version, "bento_tag", bento)
    logger.info("%s is in the BentoML model store; Bento %s", tag, bento)
    return Published(tag, bento, onnx_bytes)


def switch(
    client: MlflowClient,
    store: object_store.ObjectStore | None,
    repo: Any,
    service: ServingEndpoint,
    release: Release,
) -> Switched:
    """Publish the version and switch the service to it without downtime, smoke-tested on the first test rows of
    its training snapshot (in lakeFS `repo`): ready, then predictions equal to the offline ONNX ones. On any
    failure the service is put back to what it served (DeploymentError says so)."""
    published = publish(client, store, release)
    snapshot = release.snapshot
    rows = lakefs_repository.read_parquet(repo, snapshot["commit"], snapshot["paths"]["test"]).head(SMOKE_TEST_ROWS)
    expected = deployment.offline_predictions(published.onnx_bytes, release.config, rows)
    records = deployment.records_of(rows, release.config.dataset)
    previous = deployment.roll_out(service, published.tag, records, expected)
    logger.info("%s serves at %s; smoke test passed on %d rows", published.tag, service.url, len(rows))
    return Switched(published.tag, published.bento, previous)


def start_trial(
    client: MlflowClient,
    engine: sa.Engine,
    service: ServingEndpoint,
    store: object_store.ObjectStore | None,
    release: Release,
    run: AirflowRun,
) -> Trial:
    """Publish the version and load it beside the champion as a shadow or canary (config `rollout`), recorded in
    the rollouts table and on the version (tag `rollout`). Refused (DeploymentError), the champion untouched,
    while another run's trial of the model is on, or when the service cannot load the version. A retry of the
    same run finds its own trial on and records it once."""
    config, version = release.config, release.version
    name, mode = config.name, config.rollout.mode
    recorded = rollouts.running(engine, name)
    if recorded is not None and recorded["airflow_run_id"] != run.run_id:
        raise DeploymentError(
            f"a {recorded['mode']} rollout of {name} v{recorded['challenger_version']} is on since "
            f"{recorded['started_at']:%Y-%m-%d %H:%M} UTC (run {recorded['airflow_run_id']}); one per model at a time"
        )
    champion = registry.version_by_alias(client, name, registry.CHAMPION)
    champion_version = str(champion.version) if champion else ""
    published = publish(client, store, release)
    on_trial = service.rollout()
    if on_trial is None or on_trial["tag"] != published.tag:
        on_trial = service.start_rollout(published.tag, mode, config.rollout.canary_share)
    started_at = dt.datetime.fromisoformat(on_trial["started_at"])
    row = {"model_name": name, "challenger_version": version, "champion_version": champion_version, "mode": mode}
    row |= {"share": on_trial["share"], "started_at": started_at}
    rollout_id = rollouts.record_start(engine, row | {"airflow_dag_id": run.dag_id, "airflow_run_id": run.run_id})
    client.set_model_version_tag(name, version, "rollout", f"{mode} from {on_trial['started_at']}")
    share = f" ({on_trial['share']:.0%} of requests)" if mode == "canary" else ""
    logger.info("%s: %s rollout%s beside v%s since %s", published.tag, mode, share, champion_version or "-", started_at)
    return Trial(published.tag, published.bento, rollout_id, mode)


def promote_trial(
    client: MlflowClient,
    engine: sa.Engine,
    service: ServingEndpoint,
    store: object_store.ObjectStore | None,
    repo: Any,
    release: Release,
    on_trial: Mapping[str, Any],
    reason: str,
    run: AirflowRun,
    answer: Mapping[str, Any] | None = None,
) -> str | None:
    """End the trial `on_trial` (the service's `rollout`, with the rollouts table's `rollout_id`) by making its
    challenger the champion: a switch to it (which ends the trial without loading it again), then `champion`
    moves (cause rollout, or approval with a person's `answer`), the version is tagged and the rollouts table
    says promoted, all with the check's `reason`. Returns the version `champion` left."""
    switched = switch(client, store, repo, service, release)
    name, version = release.config.name, release.version
    detail = f"{on_trial['mode']} rollout promoted: {reason}; serving {switched.bentoml_model_tag}"
    previous = move_champion(client, engine, name, version, run, "rollout", detail, answer=answer)
    client.set_model_version_tag(name, version, "rollout", f"promoted: {reason}"[:TAG_LIMIT])
    if on_trial["rollout_id"] is not None:
        rollouts.record_end(engine, on_trial["rollout_id"], rollouts.PROMOTED, reason, dt.datetime.now(dt.UTC))
    return previous


def end_trial(
    client: MlflowClient,
    engine: sa.Engine,
    service: ServingEndpoint,
    on_trial: Mapping[str, Any],
    reason: str,
    run: AirflowRun,
    answer: Mapping[str, Any] | None = None,
) -> str:
    """Roll the trial `on_trial` back: unload its challenger and record why (the check's `reason`, or the
    person's `answer` that rejected it, or none in time) in the alias history (`champion` kept, cause rollout),
    on the version (tag `rollout`) and in the rollouts table. Returns the reason recorded."""
    service.end_rollout()
    if answer is not None and not answer["approved"]:
        who = f"rejected by {answer['by']}" if answer["by"] else "no approval before the timeout"
        reason = f"{who} (the check: {reason})"
    name, version = service.model, on_trial["model_version"]
    champion = registry.version_by_alias(client, name, registry.CHAMPION)
    if champion is not None:
        detail = f"kept v{champion.version}: the {on_trial['mode']} rollout of v{version} was rolled back: {reason}"
        move_champion(client, engine, name, str(champion.version), run, "rollout", detail, kept=True)
    try:
        client.set_model_version_tag(name, version, "rollout", f"rolled back: {reason}"[:TAG_LIMIT])
    except MlflowException as exc:  # a challenger loaded by hand need not be a registered version
        logger.info("v%s is not a version of %s in MLflow (%s); no tag set", version, name, exc)
    if on_trial["rollout_id"] is not None:
        rollouts.record_end(engine, on_trial["rollout_id"], rollouts.ROLLED_BACK, reason, dt.datetime.now(dt.UTC))
    return reason


def move_champion(
    client: MlflowClient,
    engine: sa.Engine,
    name: str,
    version: str,
    run: AirflowRun,
    cause: Cause,
    detail: str,
    *,
    actor: str | None = None,
    answer: Mapping[str, Any] | None = None,
    kept: bool = False,
) -> str | None:
    """Move `champion` of model `name` to `version` (the version it leaves keeps `previous-champion`) and record
    the move in the alias history with `cause` and `detail`, made by `actor` (a person) or by `run`. A person's
    `answer` that approved the move makes it theirs (cause approval). `kept`: the champion stays where it is,
    `version` (a rolled-back trial), recorded from and to it. Returns the version `champion` left (None: there
    was none, or it is there already)."""
    before = registry.version_by_alias(client, name, registry.CHAMPION)
    current = None if before is None else str(before.version)
    if kept and current != str(version):
        raise ValueError(f"{name}'s champion is v{current or '-'}, not v{version}: it cannot be kept at v{version}")
    if answer is not None and answer["approved"]:
        cause, actor, detail = "approval", answer["by"], f"approved by {answer['by']} at {answer['at']}; {detail}"
    previous = None if kept else registry.promote(client, name, version)
    record_alias_move(engine, name, registry.CHAMPION, current, version, run, cause, detail, actor=actor, kept=kept)
    return previous


def record_alias_move(
    engine: sa.Engine,
    name: str,
    alias: str,
    current: str | None,
    version: str,
    run: AirflowRun,
    cause: Cause,
    detail: str,
    *,
    actor: str | None = None,
    kept: bool = False,
) -> None:
    """Append the move of `alias` to `version` by `run` to the alias history: from `current`, where MLflow had the
    alias before the move (a retry that finds it moved takes the origin from the history), made by `actor` (a
    person) or by the run. `kept`: the alias stayed at `current`."""
    origin = current if kept else alias_history.moved_from(engine, name, alias, current, version)
    move = alias_history.AliasMove(
        model_name=name,
        alias=alias,
        from_version=origin,
        to_version=str(version),
        cause=cause,
        trigger=run.trigger,
        actor=actor or f"Airflow run {run.run_id}",
        airflow_dag_id=run.dag_id,
        airflow_run_id=run.run_id,
        detail=detail,
    )
    if alias_history.record_move(engine, move):
        logger.info("alias history: %s %s v%s -> v%s", name, alias, origin or "-", version)


class ReferenceNotStored(RuntimeError):
    """The drift reference was written but no commit holds it (a retry would find the same)."""


def store_reference(
    client: MlflowClient,
    repo: Any,
    release: Release,
    run_id: str,
    metadata: Mapping[str, str],
    marker: Mapping[str, str],
) -> dict[str, Any]:
    """Keep what drift_monitor compares live traffic with: a sample of the version's training split
    (`drift.reference_rows` rows) and its ONNX model's predictions on it, committed on the run branch of `run_id`
    in lakeFS `repo` as `reference/<model>/<run>/reference.parquet` with `metadata` (`marker`: what every try of
    the step shares, so a retry commits once), and named on the version (tag `drift_reference`)."""
    config, snapshot, version = release.config, release.snapshot, release.version
    train = lakefs_repository.read_parquet(repo, snapshot["commit"], snapshot["paths"]["train"])
    sample = monitoring.sample_reference(train, config)
    predictions = deployment.offline_predictions(tracking.load_onnx(release.onnx_model_uri), config, sample)
    reference = monitoring.with_predictions(sample, predictions, config.dataset)
    branch = run_branch_name(config.name, run_id)
    path = f"reference/{config.name}/{run_key(run_id)}/reference.parquet"
    lakefs_repository.write_parquet(repo, branch, path, reference)
    metadata = {**metadata, "model_version": version, "rows": len(reference), "training_snapshot": snapshot["commit"]}
    message = f"Drift reference of {config.name} v{version}"
    if (commit := lakefs_repository.commit_once(repo, branch, message, metadata, marker)) is None:
        raise ReferenceNotStored(f"lakeFS {repo.id}: {path} was not written on branch {branch!r}")
    uri = lakefs_uri(repo.id, commit.id, path)
    client.set_model_version_tag(config.name, version, "drift_reference", uri)
    return {"commit": commit.id, "path": path, "uri": uri, "rows": len(reference)}
