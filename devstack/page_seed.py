"""Realistic state for the MLOps page's tests and benchmark, written through the real clients and the library's own
functions: config files (one per model), registered model versions with the tags and aliases ml_training gives
them (lineage, gate, ONNX parity, Bento), their MLflow training runs, the alias history, the drift history and
the batch runs.

    write_configs(folder, ["model_a", "model_b"])         the breast cancer config, once per model
    seed_model(client, engine, "model_a", checks=1000)    three versions: previous champion, champion, challenger
    seed_model(..., batches=12)                           and batch runs, each merged one with its drift check
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import yaml
from mlflow.tracking import MlflowClient

from include.mlops import alias_history, batch_runs, monitoring, operations_store, registry, rollouts, tracking
from include.mlops.config import CONFIG_DIR, load_config
from include.mlops.naming import batch_scoring_dag_id, training_dag_id

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
LAKEFS_REPOSITORY = "mlops"
DRIFT_THRESHOLD = 0.3


def write_configs(folder: Path, models: list[str]) -> list[Path]:
    """The shipped breast cancer config once per model (its own model and dataset name) in `folder`."""
    raw = yaml.safe_load((CONFIG_DIR / "breast_cancer.yaml").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for model in models:
        raw["dataset"]["name"] = f"{model}_data"
        raw["model"]["registered_name"] = model
        raw["drift"]["threshold"] = DRIFT_THRESHOLD
        path = folder / f"{model}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        paths.append(path)
    return paths


@dataclass(frozen=True)
class SeededVersion:
    version: str
    run_id: str  # the candidate run the version was registered from
    training_run_id: str  # the parent run, tagged with the Airflow run
    airflow_run_id: str
    lakefs_commit: str
    tags: dict[str, str]


def training_run_id(n: int) -> str:
    return f"manual__2026-11-0{n}T02:00:00+00:00"


def seed_model(
    client: MlflowClient, engine: sa.Engine, model: str, versions: int = 3, checks: int = 48, batches: int = 0
) -> list[SeededVersion]:
    """`versions` versions of `model`, each from its own training run: the last is the challenger (rejected
    by the gate), the one before the champion, the one before that the previous champion; the alias moves
    that put them there; `checks` hourly drift checks (every 10th with labels, every 50th asking to
    retrain, the last 24 with an HTML report); and `batches` batch runs of the champion every 4 hours from 03:00
    on the first day (the 6th found no input; the others were merged and checked). The operations store behind
    `engine` is brought to its schema."""
    operations_store.upgrade(engine)
    experiment = tracking.experiment_id(client, model)
    client.create_registered_model(model)
    seeded = [_version(client, experiment, model, n, versions) for n in range(1, versions + 1)]
    champion = seeded[-2] if versions > 1 else seeded[-1]
    for n, v in enumerate(seeded, start=1):
        client.set_registered_model_alias(model, registry.CHALLENGER, v.version)
        _move(engine, model, registry.CHALLENGER, seeded[n - 2].version if n > 1 else None, v, "gate")
        if int(v.version) <= int(champion.version):
            if n > 1:
                client.set_registered_model_alias(model, registry.PREVIOUS_CHAMPION, seeded[n - 2].version)
            client.set_registered_model_alias(model, registry.CHAMPION, v.version)
            _move(engine, model, registry.CHAMPION, seeded[n - 2].version if n > 1 else None, v, "gate")
    if versions > 2:
        _rolled_back_canary(engine, model, seeded[-1].version, champion.version)
    if checks:
        monitoring_run = tracking.monitoring_run(client, experiment, model, champion.version)
        for i in range(checks):
            monitoring.record_check(engine, drift_row(model, champion.version, i, checks, monitoring_run))
    for i in range(batches):
        run, check = batch_rows(model, champion.version, i)
        batch_runs.record(engine, run)
        if check is not None:
            monitoring.record_check(engine, check)
    return seeded


def batch_run_id(i: int) -> str:
    return f"scheduled__{T0 + dt.timedelta(hours=3 + 4 * i):%Y-%m-%dT%H:%M:%S}+00:00"


def batch_rows(model: str, version: str, i: int) -> tuple[dict, dict | None]:
    """The `i`-th batch run's row of `batch_runs` and its drift check's row (None for a run without input), as
    batch_scoring writes them."""
    end = T0 + dt.timedelta(hours=3 + 4 * i)
    key = f"{end - dt.timedelta(hours=4):%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}"
    empty = i == 5
    share = None if empty else round((i % 6) / 10, 4)
    live = None if empty else 0.93 + i / 1000
    run = {
        "model_name": model,
        "model_version": version,
        "airflow_dag_id": batch_scoring_dag_id(model),
        "airflow_run_id": batch_run_id(i),
        "key": key,
        "state": batch_runs.EMPTY if empty else batch_runs.MERGED,
        "rows_scored": 0 if empty else 1000 + i,
        "rows_quarantined": 0 if empty else i % 3,
        "lakefs_repository": LAKEFS_REPOSITORY,
        "lakefs_commit": None if empty else f"{i:02d}" + "ba7c4" * 12 + "00",
        "drift_share": share,
        "live_score": live,
        "finished_at": end + dt.timedelta(minutes=10),
    }
    if empty:
        return run, None
    check = {
        "airflow_run_id": run["airflow_run_id"],
        "model_name": model,
        "model_version": version,
        "window_start": end - dt.timedelta(hours=4),
        "window_end": end,
        "rows": run["rows_scored"],
        "malformed_rows": run["rows_quarantined"],
        "drift_share": share,
        "drifted_columns": [f"feature_{c}" for c in range(int(share * 10))],
        "labelled_rows": run["rows_scored"],
        "live_score": live,
        "champion_score": 0.97,
        "retrain": False,
        "reason": f"no drift: {share:.0%} of features drifted",
        "source": monitoring.BATCH,
    }
    return run, check


def _rolled_back_canary(engine: sa.Engine, model: str, challenger: str, champion: str) -> None:
    """A 10 % canary of `challenger` that its check rolled back for disagreeing with the champion."""
    started = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    row = {
        "model_name": model,
        "challenger_version": challenger,
        "champion_version": champion,
        "mode": "canary",
        "share": 0.1,
        "started_at": started,
        "airflow_dag_id": training_dag_id(model),
        "airflow_run_id": f"seeded__{challenger}",
    }
    rollout_id = rollouts.record_start(engine, row)
    figures = rollouts.Figures(640, 0.81, None, 641, 1, 0.21, 0.25, hours=2.0)
    # The demo's default criteria: agreement 0.81 is below its 0.9.
    judgement = rollouts.judge(figures, load_config(CONFIG_DIR / "fraud_demo.yaml"))
    rollouts.record_check(engine, rollout_id, figures, judgement, started + dt.timedelta(hours=2))
    rollouts.record_end(engine, rollout_id, rollouts.ROLLED_BACK, judgement.reason, started + dt.timedelta(hours=2))


def drift_row(model: str, version: str, i: int, checks: int, monitoring_run: str) -> dict:
    """The `i`-th of `checks` hourly checks, as drift_monitor's decide_retraining writes it."""
    end = T0 + dt.timedelta(hours=i + 1)
    share = round((i % 24) / 40, 4)  # 0 .. 0.575: over the threshold a few hours a day
    labelled = i % 10 == 0
    retrain = i % 50 == 20
    report = f"runs:/{monitoring_run}/drift_reports/{end:%Y%m%dT%H%M}.html" if i >= checks - 24 else None
    return {
        "airflow_run_id": f"scheduled__{end.isoformat()}",
        "model_name": model,
        "model_version": version,
        "window_start": end - dt.timedelta(hours=1),
        "window_end": end,
        "rows": 600 + i % 7,
        "malformed_rows": 0,
        "drift_share": share,
        "drifted_columns": [f"feature_{c}" for c in range(int(share * 10))],
        "prediction_drift_score": 0.01,
        "labelled_rows": 250 if labelled else 0,
        "live_score": 0.95 - share / 10 if labelled else None,
        "champion_score": 0.97,
        # Every check has the label-free estimate (a calibrated champion), a little above the live score.
        "estimated_score": 0.96 - share / 10,
        "estimated_score_low": 0.945 - share / 10,
        "estimated_score_high": 0.975 - share / 10,
        "estimated_accuracy": 0.98,
        "retrain": retrain,
        "reason": "data drift: share over the threshold" if retrain else f"no drift: {share:.0%} of features drifted",
        "report_uri": report,
    }


def _version(client: MlflowClient, experiment: str, model: str, n: int, versions: int) -> SeededVersion:
    airflow_run = training_run_id(n)
    commit = f"{n:02d}" + "c0ffee" * 10 + "00"
    lineage = {
        "lakefs_repository": LAKEFS_REPOSITORY,
        "lakefs_branch": f"run-{model}-{n}",
        "lakefs_commit": commit,
        "airflow_dag_id": training_dag_id(model),
        "airflow_run_id": airflow_run,
    }
    promote = n < versions or versions == 1
    gate = {
        "gate_decision": "promote" if promote else "reject",
        "gate_reason": "better than the champion by at least the required margin"
        if promote
        else "not better than the champion by the required margin",
        "gate_metric": "roc_auc",
        "gate_challenger_score": f"{0.95 + n / 1000:.6f}",
        "gate_champion_version": str(n - 1) if n > 1 else "",
        "gate_champion_score": f"{0.95 + (n - 1) / 1000:.6f}" if n > 1 else "",
        "gate_margin": "0.001000" if n > 1 else "",
    }
    parity = {
        "onnx_parity": "passed",
        "onnx_parity_rows": "114",
        "onnx_label_agreement": "1.000000",
        "onnx_max_probability_difference": "1.2e-07",
        "onnx_model_uri": f"models:/m-onnx{n}",
    }
    bento = {"bentoml_model_tag": f"{model}:v{n}abc", "bento_tag": f"mlops_service:v{n}def"}
    parent = client.create_run(
        experiment, run_name=f"training-{n}", tags={**lineage, tracking.ROLE_TAG: "training", **gate}
    ).info.run_id
    candidate = client.create_run(
        experiment, run_name="gradient_boosting", tags={**lineage, tracking.PARENT_TAG: parent}
    ).info.run_id
    tags = {**lineage, **gate, **parity, **(bento if promote else {})}
    version = client.create_model_version(model, f"runs:/{candidate}/model", run_id=candidate, tags=tags).version
    client.set_tag(parent, "challenger_version", str(version))
    return SeededVersion(str(version), candidate, parent, airflow_run, commit, tags)


def _move(engine: sa.Engine, model: str, alias: str, before: str | None, v: SeededVersion, cause: str) -> None:
    alias_history.record_move(
        engine,
        alias_history.AliasMove(
            model_name=model,
            alias=alias,
            from_version=before,
            to_version=v.version,
            cause=cause,
            trigger="nightly",
            actor=f"airflow run {v.airflow_run_id}",
            airflow_dag_id=training_dag_id(model),
            airflow_run_id=v.airflow_run_id,
            detail=v.tags["gate_reason"],
            moved_at=T0 + dt.timedelta(days=int(v.version) - 1, minutes=1 if alias == registry.CHAMPION else 0),
        ),
    )
