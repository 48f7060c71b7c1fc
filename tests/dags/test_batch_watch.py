"""batch_scoring's runs watched like online traffic, in real DAG runs: the drift check of the merged rows (Evidently,
the live score, the report in MLflow), the drift history with source `batch`, the `batch_runs` rows, retraining
under the model's cool-down, and an empty input recorded.

The champion is made in-process (tests/fixtures/champions.py): a palmerpenguins classifier (three text species,
missing measurements) in the BentoML model store, registered in MLflow with a reference sample tagged
`drift_reference` as ml_training's store_reference leaves it. Each test scores days of its own, written as CSV
files of the config's `files` source; its config's `batch:` section is written as the test needs.
"""

from __future__ import annotations

import datetime as dt
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from mlflow.tracking import MlflowClient

from include.mlops import (
    batch_runs,
    deployment,
    lakefs_repository,
    monitoring,
    operations_store,
    packaging,
    performance_estimate,
)
from include.mlops.naming import lakefs_uri, training_dag_id
from tests.dags.conftest import batch_run, set_stack_connections, states, xcom
from tests.fixtures.champions import fitted, register_champion, zoo_config
from tests.zoo.datasets import ZOO

pytestmark = pytest.mark.usefixtures("airflow_db")

ISLANDS = ["Biscoe", "Dream", "Torgersen"]
DRIFT = {"min_rows": 40, "min_labelled_rows": 30, "threshold": 0.3, "cooldown_hours": 72}
DAY_ROWS = 120  # two chunks of 100


@pytest.fixture(scope="module")
def watched(tmp_path_factory, lakefs_server, mlflow_server, airflow_db) -> Iterator[types.SimpleNamespace]:
    """A penguin champion with its drift reference, the operations store, and the connections a batch run needs."""
    import lakefs

    home = tmp_path_factory.mktemp("batch-watch")
    (home / "configs").mkdir()
    source = home / "source"
    source.mkdir()
    name = f"penguins_{uuid.uuid4().hex[:8]}"
    config = zoo_config(home / "configs", "penguins", name, island={"allowed": ISLANDS})
    raw = yaml.safe_load(Path(config.path).read_text())
    raw["source"]["path"] = str(source)
    raw["drift"] = DRIFT
    rows = next(z for z in ZOO if z.name == "penguins").rows()
    client = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    pipeline = fitted(config, rows, "LogisticRegression", {"max_iter": 2000})
    onnx = packaging.to_onnx(pipeline, config)
    run_id = register_champion(client, config)
    # Its calibrator, as training keeps it (here fitted on the training rows: there is no validation split).
    calibrator = performance_estimate.of_pipeline(config, pipeline, rows.dropna(subset=[config.dataset.target]))
    client.log_dict(run_id, calibrator.to_dict(), performance_estimate.ARTIFACT)
    for tag, value in performance_estimate.version_tag(config, run_id).items():
        client.set_model_version_tag(name, "1", tag, value)
    deployment.save_to_model_store(onnx, config, "1", {"mlflow_run_id": run_id})

    repo_name = f"test-{uuid.uuid4().hex[:12]}"
    repo = lakefs.Repository(repo_name, client=lakefs_server.client())
    repo.create(f"local://{repo_name}", default_branch="main")
    # As ml_training's store_reference leaves it: a sample of the training rows with the model's predictions.
    sample = monitoring.sample_reference(rows, config)
    reference = monitoring.with_predictions(
        sample, deployment.offline_predictions(onnx, config, sample), config.dataset
    )
    path = f"reference/{name}/manual__train/reference.parquet"
    lakefs_repository.write_parquet(repo, "main", path, reference)
    commit = lakefs_repository.commit(repo, "main", f"Drift reference of {name} v1")
    client.set_model_version_tag(name, "1", "drift_reference", lakefs_uri(repo_name, commit.id, path))

    log_path = home / "operations.db"
    engine = sa.create_engine(f"sqlite:///{log_path}")
    operations_store.upgrade(engine)
    with pytest.MonkeyPatch.context() as env:
        # No model service or SQL source here: their connections point nowhere.
        set_stack_connections(
            env, lakefs_server, repo_name, home / "none.db", log_path, mlflow_server.url, "http://x:9"
        )
        env.setenv("MLOPS_CONFIG_DIR", str(home / "configs"))
        env.delenv("MLOPS_MODEL_STORE_URL", raising=False)
        yield types.SimpleNamespace(
            raw=raw, path=Path(config.path), rows=rows, source=source, repo=repo, engine=engine, client=client
        )
    engine.dispose()
    repo.delete()


def with_batch(watched, **batch) -> None:
    """The module's config with `batch` as its batch section (the DAG and its tasks read the file)."""
    watched.path.write_text(yaml.safe_dump({**watched.raw, "batch": {"chunk_rows": 100, **batch}}))


def write_day(
    watched, day: dt.date, rows: int = DAY_ROWS, drifted: bool = False, folder: Path | None = None, labels=True
) -> None:
    """`rows` penguins measured on `day`, as a CSV file of the source (or of `folder`); `drifted`: heavier
    birds with longer flippers and bills than any the model was trained on."""
    frame = watched.rows.sample(rows, random_state=day.toordinal()).drop(columns=["event_time"])
    if drifted:
        frame = frame.assign(
            body_mass_g=frame["body_mass_g"] * 2.5,
            flipper_length_mm=frame["flipper_length_mm"] + 60,
            bill_length_mm=frame["bill_length_mm"] * 1.8,
        )
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    frame = frame.assign(
        id=[f"{day:%m%d}-{i:04d}" for i in range(rows)],
        event_time=[f"{start + dt.timedelta(minutes=i):%Y-%m-%dT%H:%M:%S.000Z}" for i in range(rows)],
    )
    if not labels:
        frame = frame.drop(columns=[watched.raw["dataset"]["target"]])
    frame.to_csv((folder or watched.source) / f"{day}.csv", index=False)


def score(watched, day: dt.date):
    return batch_run(watched.path, day)


def checks_of(watched, dag_run) -> list[dict]:
    name = watched.raw["model"]["registered_name"]
    return [r for r in monitoring.history(watched.engine, name) if r["airflow_run_id"] == dag_run.run_id]


def batch_run_of(watched, dag_run) -> dict:
    name = watched.raw["model"]["registered_name"]
    (row,) = [r for r in batch_runs.recent(watched.engine, name, last=100) if r["airflow_run_id"] == dag_run.run_id]
    return row


def training_runs(watched, run_id: str) -> list:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        training = training_dag_id(watched.raw["model"]["registered_name"])
        runs = session.query(DagRun).filter(DagRun.dag_id == training, DagRun.run_id == run_id).all()
        session.expunge_all()
        return runs


def test_a_drifted_batch_is_recorded_asks_for_retraining_and_the_next_inside_the_cool_down_does_not(watched):
    with_batch(watched)
    first_day, next_day = dt.date(2026, 12, 1), dt.date(2026, 12, 2)
    for day in (first_day, next_day):
        write_day(watched, day, drifted=True)

    first = score(watched, first_day)

    assert first.state == "success", states(first)
    assert states(first)["trigger_ml_training"] == "success"
    checked = xcom(first, "check_drift")
    assert checked["rows"] == DAY_ROWS and checked["drift_share"] >= DRIFT["threshold"]
    assert {"body_mass_g", "flipper_length_mm", "bill_length_mm"} <= set(checked["drifted_columns"])
    # The input holds the species: the live score is measured on its rows.
    assert checked["labelled_rows"] == DAY_ROWS and checked["live_score"] is not None
    (check,) = checks_of(watched, first)
    assert (check["source"], check["retrain"], check["model_version"]) == ("batch", True, "1")
    assert check["reason"].startswith("data drift") and check["drift_share"] == checked["drift_share"]
    assert check["window_end"].replace(tzinfo=dt.UTC) == dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    merged = xcom(first, "merge_predictions")
    run = batch_run_of(watched, first)
    assert (run["state"], run["rows_scored"], run["rows_quarantined"]) == ("merged", DAY_ROWS, 0)
    assert (run["lakefs_commit"], run["lakefs_repository"]) == (merged["lakefs_commit"], watched.repo.id)
    assert (run["drift_share"], run["live_score"]) == (checked["drift_share"], checked["live_score"])
    assert run["key"] == "20261201T000000Z_20261202T000000Z" and run["model_version"] == "1"
    (triggered,) = training_runs(watched, f"batch_drift__{first.run_id}")
    assert triggered.conf["reason"] == "drift" and triggered.conf["report_uri"] == checked["report_uri"]
    # The report and the figures are on the version's monitoring run, the batch's own figures named batch.*.
    monitoring_run, _, report = checked["report_uri"].removeprefix("runs:/").partition("/")
    assert report == "drift_reports/batch/20261201T000000Z_20261202T000000Z.html"
    assert "<html" in Path(watched.client.download_artifacts(monitoring_run, report)).read_text().lower()
    (share,) = watched.client.get_metric_history(monitoring_run, "batch.drift_share")
    assert share.value == pytest.approx(checked["drift_share"])

    second = score(watched, next_day)

    assert states(second)["decide_retraining"] == "success"
    assert states(second)["trigger_ml_training"] == "skipped"
    (check,) = checks_of(watched, second)
    assert not check["retrain"] and check["reason"].startswith("cool-down until 2026-12-05 00:00 UTC"), check
    assert training_runs(watched, f"batch_drift__{second.run_id}") == []


def test_an_empty_input_is_recorded_and_nothing_is_merged(watched):
    with_batch(watched)
    head = lakefs_repository.head_commit(watched.repo, "main")

    run = score(watched, dt.date(2026, 12, 10))  # no file has rows of that day

    assert states(run)["collect_input"] == "skipped" and states(run)["check_drift"] == "skipped"
    row = batch_run_of(watched, run)
    assert (row["state"], row["rows_scored"], row["lakefs_commit"], row["drift_share"]) == ("empty", 0, None, None)
    assert row["key"] == "20261210T000000Z_20261211T000000Z"
    assert checks_of(watched, run) == [] and lakefs_repository.head_commit(watched.repo, "main") == head


def test_a_batch_without_labels_is_scored_against_the_labels_the_source_has_at_check_time(watched, tmp_path):
    """The batch's own source (a partner's files) has no species; the model's source has them by now."""
    day = dt.date(2026, 12, 5)
    write_day(watched, day)
    partner = tmp_path / "partner"
    partner.mkdir()
    write_day(watched, day, folder=partner, labels=False)
    with_batch(watched, source={"kind": "files", "path": str(partner), "format": "csv", "pattern": "*.csv"})

    run = score(watched, day)

    assert run.state == "success", states(run)
    checked = xcom(run, "check_drift")
    assert checked["labelled_rows"] == DAY_ROWS and checked["live_score"] > 0.9  # the same birds: well told apart
    assert checked["drift_share"] < DRIFT["threshold"] and states(run)["trigger_ml_training"] == "skipped"
    (check,) = checks_of(watched, run)
    assert (check["source"], check["live_score"], check["retrain"]) == ("batch", checked["live_score"], False)
    assert batch_run_of(watched, run)["live_score"] == checked["live_score"]
    # Before the labels came, the calibrator's estimate of the same rows' score, kept with the check.
    assert check["estimated_score_low"] <= checked["live_score"] <= check["estimated_score_high"], check
    assert check["estimated_score"] == checked["estimated_score"] and check["estimated_accuracy"] > 0.9


def test_a_batch_below_min_rows_has_no_verdict_but_is_recorded(watched):
    day = dt.date(2026, 12, 7)
    write_day(watched, day, rows=20)
    with_batch(watched)

    run = score(watched, day)

    assert run.state == "success", states(run)
    (check,) = checks_of(watched, run)
    assert (check["source"], check["rows"], check["drift_share"], check["report_uri"]) == ("batch", 20, None, None)
    assert check["reason"] == f"too few rows: 20 in the window, {DRIFT['min_rows']} needed"
    row = batch_run_of(watched, run)
    assert (row["state"], row["rows_scored"], row["drift_share"]) == ("merged", 20, None)


def test_a_version_without_a_reference_is_scored_but_not_watched(watched):
    name = watched.raw["model"]["registered_name"]
    reference = watched.client.get_model_version(name, "1").tags["drift_reference"]
    day = dt.date(2026, 12, 8)
    write_day(watched, day, rows=20)
    with_batch(watched)
    watched.client.delete_model_version_tag(name, "1", "drift_reference")
    try:
        run = score(watched, day)
    finally:
        watched.client.set_model_version_tag(name, "1", "drift_reference", reference)

    assert run.state == "success", states(run)
    assert states(run)["merge_predictions"] == "success" and states(run)["check_drift"] == "skipped"
    assert states(run)["decide_retraining"] == "skipped" and checks_of(watched, run) == []
    row = batch_run_of(watched, run)
    assert (row["state"], row["rows_scored"], row["drift_share"]) == ("merged", 20, None)
