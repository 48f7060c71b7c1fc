"""What the MLOps page shows of one model, gathered from MLflow and the history tables, as plain dataclasses.

Per model: the versions behind its aliases (`champion`, `challenger`, `previous-champion`) with the gate's
decision, the ONNX parity figures and the lineage each version carries as tags (lakeFS commit, MLflow run,
Airflow run, Bento, model card); the moves of its aliases, newest first; its drift checks (of live traffic and of
batch runs), oldest first, for the chart; its last batch runs, newest first.
What Airflow knows (the runs of its DAGs, approvals waiting) is added by the page itself
(plugins/mlops_airflow/mlops_page.py); links into the Airflow UI are built by the function it passes in.

A source that does not answer is named in `problems`, and the rest of the model is still shown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from include.mlops import (
    alias_history,
    batch_runs,
    classes,
    lakefs_repository,
    model_card,
    monitoring,
    registry,
    rollouts,
    tracking,
)
from include.mlops.config import PipelineConfig

ALIASES = (registry.CHAMPION, registry.CHALLENGER, registry.PREVIOUS_CHAMPION)
# The chart shows this many of the newest checks (six weeks of hourly checks); the table fewer.
CHART_CHECKS = 1000
LISTED_CHECKS = 10
LISTED_ROLLOUTS = 5
LISTED_MOVES = 20
LISTED_BATCH_RUNS = 10
PARITY_TAGS = ("onnx_parity", "onnx_parity_rows")
GATE_TAGS = ("decision", "reason", "metric", "challenger_score", "champion_version", "champion_score", "margin")


@dataclass(frozen=True)
class Links:
    """Where a person's browser finds the other UIs."""

    mlflow_ui: str
    lakefs_ui: str | None  # None: no lakeFS connection, commits are shown without a link
    airflow_run: Callable[[str, str], str]  # (dag_id, run_id) -> the Airflow UI page of the run


@dataclass(frozen=True)
class Link:
    text: str
    url: str | None = None


@dataclass(frozen=True)
class VersionCard:
    """One version behind an alias: the gate's verdict on it, its ONNX parity, where it came from."""

    alias: str
    version: str
    created: dt.datetime
    gate: dict[str, str]  # gate_* tags without the prefix (decision, reason, metric, scores, margin)
    parity: dict[str, str]  # onnx_* tags without the prefix (parity, parity_rows, label_agreement, ...)
    lakefs_commit: Link | None
    mlflow_run: Link | None
    airflow_run: Link | None
    bento_tag: str | None
    bentoml_model_tag: str | None
    model_card: str | None = None  # where its model card is (`runs:/...`); None: registered without one


@dataclass(frozen=True)
class DriftPoint:
    """One drift check, as the chart and the table show it: of live traffic (drift_monitor, source `online`) or of
    a batch run's scored rows (`batch`)."""

    window_end: dt.datetime
    rows: int
    drift_share: float | None
    live_score: float | None
    champion_score: float | None
    retrain: bool
    reason: str
    model_version: str | None
    report_url: str | None
    source: str = monitoring.ONLINE
    # The primary metric estimated without labels, and its band (none without a calibrator).
    estimated_score: float | None = None
    estimated_low: float | None = None
    estimated_high: float | None = None


@dataclass(frozen=True)
class BatchRun:
    """One run of batch_scoring (a row of `batch_runs`): what it scored with, how many rows, its drift check's
    figures, and where its predictions were merged."""

    finished_at: dt.datetime
    version: str | None  # none: the run failed before resolving its champion
    state: str  # merged, empty (no input: nothing merged), or failed
    rows_scored: int
    rows_quarantined: int
    drift_share: float | None
    live_score: float | None
    key: str | None  # none: the run failed before reading its input
    lakefs_commit: Link | None
    airflow_run: Link


@dataclass(frozen=True)
class ModelOverview:
    name: str
    config_path: str
    metric: str
    drift_threshold: float
    # What it predicts, in the user's words: `Status: bad (positive), good`, or `price (regression)`.
    target: str = ""
    rollout_mode: str = "direct"
    versions: tuple[VersionCard, ...] = ()
    moves: tuple[alias_history.AliasMove, ...] = ()  # newest first
    checks: tuple[DriftPoint, ...] = ()  # oldest first
    # Its last shadow or canary rollouts (the rollouts table's rows), newest first: the running one and how the
    # ones before it ended.
    rollouts: tuple[dict[str, Any], ...] = ()
    batch_configured: bool = False  # the config has a `batch:` section (its DAG exists)
    batch_runs: tuple[BatchRun, ...] = ()  # newest first
    problems: tuple[str, ...] = field(default=())

    @property
    def recent_checks(self) -> tuple[DriftPoint, ...]:
        """The newest checks, newest first."""
        return tuple(reversed(self.checks[-LISTED_CHECKS:]))


def build(client: MlflowClient | None, engine: sa.Engine | None, config: PipelineConfig, links: Links) -> ModelOverview:
    """Everything the page shows of `config`'s model except what Airflow knows; without a client (MLflow is
    known to be down), its versions and report links are left out, and without an engine (the operations store
    is away or not upgraded: the page says so once), its histories."""
    name, problems = config.name, []
    versions: tuple[VersionCard, ...] = ()
    experiment = None
    if client is not None:
        try:
            experiment = _experiment_id(client, name)
            found = {alias: registry.version_by_alias(client, name, alias) for alias in ALIASES}
            versions = tuple(version_card(alias, v, experiment, links) for alias, v in found.items() if v is not None)
        except Exception as exc:  # one unreachable MLflow must not take the page down
            problems.append(f"MLflow: {_one_line(exc)}")
    moves: tuple[alias_history.AliasMove, ...] = ()
    checks: tuple[DriftPoint, ...] = ()
    tried: tuple[dict[str, Any], ...] = ()
    batches: tuple[BatchRun, ...] = ()
    if engine is not None:
        try:
            moves = tuple(reversed(alias_history.moves(engine, name)))
            tried = tuple(rollouts.history(engine, name, last=LISTED_ROLLOUTS))
            rows = monitoring.history(engine, name, last=CHART_CHECKS)
            checks = tuple(drift_point(row, links.mlflow_ui, experiment) for row in rows)
            batches = tuple(batch_run(row, links) for row in batch_runs.recent(engine, name, LISTED_BATCH_RUNS))
        except Exception as exc:
            problems.append(f"inference log database: {_one_line(exc)}")
    return ModelOverview(
        name=name,
        config_path=config.path,
        metric=config.model.primary_metric,
        drift_threshold=config.drift.threshold,
        target=predicts(config),
        rollout_mode=config.rollout.mode,
        versions=versions,
        moves=moves,
        checks=checks,
        rollouts=tried,
        batch_configured=config.batch is not None,
        batch_runs=batches,
        problems=tuple(problems),
    )


def predicts(config: PipelineConfig) -> str:
    """What the model predicts: its target, and the classes as the data holds them (the positive one marked)."""
    dataset = config.dataset
    if dataset.task == "regression":
        return f"{dataset.target} (regression)"
    labels = [classes.text_of(c) for c in dataset.target_classes]
    if len(labels) == 2:
        positive = classes.text_of(classes.positive_label(dataset))
        labels = [f"{label} (positive)" if label == positive else label for label in labels]
    return f"{dataset.target}: {', '.join(labels)}"


def version_card(alias: str, version: Any, experiment: str | None, links: Links) -> VersionCard:
    """The card of a registered model version (as MlflowClient returns it) behind `alias`."""
    tags: dict[str, str] = dict(version.tags or {})
    lakefs_commit = commit_link(links, tags.get("lakefs_repository"), tags.get("lakefs_commit"))
    run_id = version.run_id or None
    mlflow_run = None
    if run_id:
        mlflow_run = Link(run_id[:12], tracking.run_url(links.mlflow_ui, experiment, run_id) if experiment else None)
    dag_id, airflow_run_id = tags.get("airflow_dag_id"), tags.get("airflow_run_id")
    airflow_run = Link(airflow_run_id, links.airflow_run(dag_id, airflow_run_id)) if dag_id and airflow_run_id else None
    return VersionCard(
        alias=alias,
        version=str(version.version),
        created=dt.datetime.fromtimestamp(version.creation_timestamp / 1000, dt.UTC),
        gate={key: tags[f"gate_{key}"] for key in GATE_TAGS if tags.get(f"gate_{key}")},
        parity={k.removeprefix("onnx_"): v for k, v in sorted(tags.items()) if k in PARITY_TAGS or _a_parity_figure(k)},
        lakefs_commit=lakefs_commit,
        mlflow_run=mlflow_run,
        airflow_run=airflow_run,
        bento_tag=tags.get("bento_tag"),
        bentoml_model_tag=tags.get("bentoml_model_tag"),
        model_card=tags.get(model_card.CARD_TAG),
    )


def commit_link(links: Links, repository: str | None, commit: str | None) -> Link | None:
    """A lakeFS commit, linked into the lakeFS UI when it is known."""
    if not (repository and commit):
        return None
    url = lakefs_repository.commit_ui_url(links.lakefs_ui, repository, commit) if links.lakefs_ui else None
    return Link(f"{repository}@{commit[:12]}", url)


def batch_run(row: dict[str, Any], links: Links) -> BatchRun:
    """A row of `batch_runs` (`batch_runs.recent`) as the page lists it."""
    return BatchRun(
        finished_at=row["finished_at"],
        version=row["model_version"],
        state=row["state"],
        rows_scored=row["rows_scored"],
        rows_quarantined=row["rows_quarantined"],
        drift_share=row["drift_share"],
        live_score=row["live_score"],
        key=row["key"],
        lakefs_commit=commit_link(links, row["lakefs_repository"], row["lakefs_commit"]),
        airflow_run=Link(row["airflow_run_id"], links.airflow_run(row["airflow_dag_id"], row["airflow_run_id"])),
    )


def drift_point(row: dict[str, Any], mlflow_ui: str, experiment: str | None) -> DriftPoint:
    """A row of the drift history (`monitoring.history`) as a point; its report linked when MLflow is known."""
    report = row.get("report_uri")
    return DriftPoint(
        window_end=monitoring.as_utc(row["window_end"]),
        rows=row["rows"],
        drift_share=row["drift_share"],
        live_score=row["live_score"],
        champion_score=row["champion_score"],
        retrain=bool(row["retrain"]),
        reason=row["reason"],
        model_version=row["model_version"],
        report_url=tracking.artifact_url(mlflow_ui, experiment, report) if report and experiment else None,
        source=row.get("source") or monitoring.ONLINE,
        estimated_score=row.get("estimated_score"),
        estimated_low=row.get("estimated_score_low"),
        estimated_high=row.get("estimated_score_high"),
    )


def _a_parity_figure(tag: str) -> bool:
    """A figure of `ParityReport.as_tags` (onnx_label_agreement, onnx_max_..._difference, ...)."""
    return tag.startswith(("onnx_label_", "onnx_max_"))


def _experiment_id(client: MlflowClient, name: str) -> str | None:
    """The experiment the model's runs are in (named after the model, as training and monitoring make it)."""
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
