"""batch_scoring in real DAG runs: a champion in MLflow and the BentoML model store, the demo's SQL source, the
lakeFS-compatible server.

The module fits one champion in-process; each test scores one day of the source with it (or a day's rows kept in
another lakeFS repository), its config's `batch:` section written as the test needs.
"""

from __future__ import annotations

import datetime as dt
import json
import types
import uuid
from collections.abc import Iterator

import boto3
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from mlflow.tracking import MlflowClient

from include.demo_sources import simulator
from include.mlops import batch_outputs, batch_runs, batch_scoring, deployment, lakefs_repository, operations_store
from include.mlops.config import CONFIG_DIR, load_config
from tests.dags.conftest import ROWS_PER_DAY, batch_run, set_stack_connections, states, xcom
from tests.fixtures.champions import fitted_onnx, register_champion

pytestmark = pytest.mark.usefixtures("airflow_db")

SEED = 11
CHUNK_ROWS = 600  # a day of 1,500 rows is 3 chunks


@pytest.fixture(scope="module")
def champion(tmp_path_factory, lakefs_server, mlflow_server, airflow_db) -> Iterator[types.SimpleNamespace]:
    """A champion fitted in-process on the source's first days (as ml_training's register and publish steps leave
    one: MLflow's `champion` alias, the ONNX bytes in the BentoML model store), and the connections a batch run
    needs. How a champion is made is ml_training's tests' business; these score with one."""
    import lakefs

    home = tmp_path_factory.mktemp("batch-scoring")
    source_path = home / "transactions.db"
    simulator.write_days(f"sqlite:///{source_path}", dt.date(2026, 3, 1), 9, ROWS_PER_DAY, seed=SEED)
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    raw["model"]["registered_name"] = f"fraud_{uuid.uuid4().hex[:8]}"
    (home / "configs").mkdir()
    config_path = home / "configs" / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    config = load_config(config_path)
    days = [simulator.generate_day(dt.date(2026, 3, d), ROWS_PER_DAY, SEED) for d in (1, 2, 3)]
    rows = pd.concat([day.transactions.merge(day.labels, on="transaction_id", how="left") for day in days])
    onnx = fitted_onnx(config, rows, "LogisticRegression", {"max_iter": 500})
    client = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    run_id = register_champion(client, config)
    deployment.save_to_model_store(onnx, config, "1", {"mlflow_run_id": run_id})
    repo_name = f"test-{uuid.uuid4().hex[:12]}"
    repo = lakefs.Repository(repo_name, client=lakefs_server.client())
    repo.create(f"local://{repo_name}", default_branch="main")
    with pytest.MonkeyPatch.context() as env:
        log_path = home / "operations.db"
        operations_store.upgrade(sa.create_engine(f"sqlite:///{log_path}"))
        # No model service: a batch run loads the champion from the model store, not from the service.
        set_stack_connections(
            env, lakefs_server, repo_name, source_path, log_path, mlflow_server.url, "http://127.0.0.1:9"
        )
        env.setenv("MLOPS_CONFIG_DIR", str(config_path.parent))
        env.delenv("MLOPS_MODEL_STORE_URL", raising=False)
        yield types.SimpleNamespace(
            raw=raw,
            path=config_path,
            source=f"sqlite:///{source_path}",
            repo=repo,
            version="1",
            store=sa.create_engine(f"sqlite:///{log_path}"),
            lakefs=lakefs_server,
        )
    repo.delete()


def with_batch(champion, **batch) -> None:
    """The module's config with `batch` as its batch section (the DAG and its tasks read the file)."""
    champion.path.write_text(yaml.safe_dump({**champion.raw, "batch": {"chunk_rows": CHUNK_ROWS, **batch}}))


def score(champion, day: dt.date, conf: dict | None = None):
    return batch_run(champion.path, day, conf)


def source_rows(champion, day: dt.date) -> int:
    engine = sa.create_engine(champion.source)
    with engine.connect() as connection:
        return connection.execute(
            sa.text("SELECT count(*) FROM transactions WHERE event_time >= :start AND event_time < :end"),
            {"start": f"{day} 00:00:00", "end": f"{day + dt.timedelta(days=1)} 00:00:00"},
        ).scalar_one()


def test_a_day_is_scored_in_chunks_by_the_champion_and_merged_with_its_lineage(champion):
    with_batch(champion)
    day = dt.date(2026, 3, 8)
    run = score(champion, day)
    assert run.state == "success", states(run)
    merged = xcom(run, "merge_predictions")
    prefix = merged["predictions"]
    parts = [o.path for o in lakefs_repository.list_objects(champion.repo, "main", prefix)]
    rows = source_rows(champion, day)
    assert len(parts) == -(-rows // CHUNK_ROWS) == 3, parts
    scored = [lakefs_repository.read_parquet(champion.repo, "main", p) for p in parts]
    assert sum(len(s) for s in scored) == rows
    first = scored[0]
    assert set(first["model_version"]) == {champion.version}
    assert {"transaction_id", "prediction", "probability_0", "probability_1", "scored_at"} <= set(first.columns)
    assert set(first["airflow_run_id"]) == {run.run_id}
    commit = lakefs_repository.get_commit(champion.repo, merged["lakefs_commit"])
    assert commit.metadata["model_version"] == champion.version and commit.metadata["rows_scored"] == str(rows)
    assert commit.metadata["airflow_run_id"] == run.run_id and commit.metadata["rows_quarantined"] == "0"


def test_the_same_interval_twice_leaves_one_result(champion):
    with_batch(champion)
    day = dt.date(2026, 3, 7)
    first = score(champion, day)
    prefix = xcom(first, "merge_predictions")["predictions"]
    before = {o.path: o.checksum for o in lakefs_repository.list_objects(champion.repo, "main", prefix)}
    again = score(champion, day)
    assert again.state == "success", states(again)
    after = {o.path: o.checksum for o in lakefs_repository.list_objects(champion.repo, "main", prefix)}
    assert set(after) == set(before) and len(after) == 3


def test_rows_that_do_not_fit_the_schema_are_quarantined_and_named_and_the_rest_scored(champion):
    day = dt.date(2026, 3, 4)
    engine = sa.create_engine(champion.source)
    with engine.begin() as connection:
        bad = connection.execute(
            sa.text(
                "UPDATE transactions SET amount = -5 WHERE transaction_id IN (SELECT transaction_id FROM transactions"
                " WHERE event_time >= :start AND event_time < :end ORDER BY transaction_id LIMIT 7)"
            ),
            {"start": f"{day} 00:00:00", "end": f"{day + dt.timedelta(days=1)} 00:00:00"},
        ).rowcount
    assert bad == 7
    with_batch(champion)
    run = score(champion, day)
    assert run.state == "success", states(run)
    chunks = [ti for ti in run.get_task_instances() if ti.task_id == "score_chunk"]
    summaries = [ti.xcom_pull(task_ids="score_chunk", map_indexes=ti.map_index) for ti in chunks]
    assert sorted(s["rows_quarantined"] for s in summaries) == [0, 0, 7], summaries
    merged = xcom(run, "merge_predictions")
    assert merged["rows_quarantined"] == "7" and int(merged["rows_scored"]) == source_rows(champion, day) - 7
    (report_path,) = [
        o.path
        for o in lakefs_repository.list_objects(champion.repo, "main", merged["predictions"] + "quarantine/")
        if o.path.endswith(".json")
    ]
    report = json.loads(lakefs_repository.read_bytes(champion.repo, "main", report_path))
    assert any(f["column"] == "amount" and f["rows"] == 7 for f in report["failures"]), report

    with_batch(champion, on_invalid="fail")
    failed = score(champion, day)
    assert failed.state == "failed" and "failed" in {
        ti.state for ti in failed.get_task_instances() if ti.task_id == "score_chunk"
    }
    assert states(failed)["merge_predictions"] == "upstream_failed"


def test_an_empty_window_is_skipped_and_nothing_is_merged(champion):
    with_batch(champion)
    head = lakefs_repository.head_commit(champion.repo, "main")
    run = score(champion, dt.date(2026, 4, 20))  # after the source's last day
    assert states(run)["collect_input"] == "skipped" and states(run)["merge_predictions"] == "skipped"
    assert lakefs_repository.head_commit(champion.repo, "main") == head


def test_a_model_without_a_champion_is_skipped_and_nothing_is_written(champion):
    champion.path.write_text(
        yaml.safe_dump(
            {
                **champion.raw,
                "model": {**champion.raw["model"], "registered_name": f"untrained_{uuid.uuid4().hex[:6]}"},
                "batch": {"chunk_rows": CHUNK_ROWS},
            }
        )
    )
    try:
        head = lakefs_repository.head_commit(champion.repo, "main")
        run = score(champion, dt.date(2026, 3, 8))
        assert states(run)["resolve_model"] == "skipped"
        assert set(states(run).values()) == {"skipped"}
        assert lakefs_repository.head_commit(champion.repo, "main") == head
    finally:
        with_batch(champion)


@pytest.fixture
def partner_drops(champion) -> Iterator[types.SimpleNamespace]:
    """Another lakeFS repository, as a partner's: a day's transactions as two Parquet files under `drops/`, at the
    tag `v1`."""
    import lakefs

    name = f"partner-{uuid.uuid4().hex[:10]}"
    repo = lakefs.Repository(name, client=champion.lakefs.client()).create(f"local://{name}", default_branch="main")
    rows = simulator.generate_day(dt.date(2026, 3, 5), 300, SEED).transactions
    lakefs_repository.write_parquet(repo, "main", "drops/a.parquet", rows.iloc[:200])
    lakefs_repository.write_parquet(repo, "main", "drops/b.parquet", rows.iloc[200:])
    commit = lakefs_repository.commit(repo, "main", "the partner's drops").id
    lakefs_repository.tag(repo, "v1", commit)
    yield types.SimpleNamespace(repo=repo, commit=commit, rows=len(rows))
    repo.delete()


def test_a_lakefs_path_given_to_a_run_is_scored_at_its_commit_and_recorded(champion, partner_drops):
    with_batch(champion, input="lakefs://no-such-repository/main/", chunk_rows=10_000)  # the run's param wins
    try:
        run = score(champion, dt.date(2026, 3, 5), {"input": f"lakefs://{partner_drops.repo.id}/v1/drops/"})
    finally:
        with_batch(champion)
    assert run.state == "success", states(run)
    batch, merged = xcom(run, "collect_input"), xcom(run, "merge_predictions")
    source = f"lakefs://{partner_drops.repo.id}/{partner_drops.commit}/drops/"
    assert batch["key"] == batch_scoring.lakefs_key(partner_drops.commit, "drops/") and batch["source"] == source
    assert int(merged["rows_scored"]) == partner_drops.rows
    lineage = lakefs_repository.get_commit(champion.repo, merged["lakefs_commit"]).metadata
    assert lineage["input_source"] == source and lineage["model_version"] == champion.version
    name = load_config(champion.path).name
    recorded = {r["airflow_run_id"]: r for r in batch_runs.recent(champion.store, name, last=50)}[run.run_id]
    assert (recorded["state"], recorded["key"], recorded["rows_scored"]) == ("merged", batch["key"], 300)
    assert states(run)["record_failure"] == "skipped"


def test_a_failed_run_is_recorded_failed_with_what_it_knew(champion, partner_drops):
    with_batch(champion, chunk_rows=10_000)
    head = lakefs_repository.head_commit(champion.repo, "main")
    missing = f"lakefs://{partner_drops.repo.id}/no-such-tag/drops/"
    run = score(champion, dt.date(2026, 3, 5), {"input": missing})
    assert run.state == "failed" and states(run)["collect_input"] == "failed", states(run)
    assert states(run)["record_failure"] == "success"
    assert lakefs_repository.head_commit(champion.repo, "main") == head
    name = load_config(champion.path).name
    recorded = {r["airflow_run_id"]: r for r in batch_runs.recent(champion.store, name, last=50)}[run.run_id]
    assert (recorded["state"], recorded["model_version"], recorded["key"]) == ("failed", champion.version, None)
    assert (recorded["rows_scored"], recorded["lakefs_commit"]) == (0, None)


def test_the_merged_predictions_are_copied_into_a_table_and_an_s3_prefix(champion, moto_s3, tmp_path, monkeypatch):
    s3_env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.session.Session().client("s3", endpoint_url=moto_s3)
    s3.create_bucket(Bucket="scores")
    database = tmp_path / "scores.db"
    monkeypatch.setenv("AIRFLOW_CONN_SCORES_DB", json.dumps({"conn_type": "sqlite", "host": str(database)}))
    outputs = [
        {"kind": "sql", "connection_id": "scores_db", "table": "fraud_scores"},
        {"kind": "s3", "url": "s3://scores/batch/", "endpoint_url": moto_s3},
    ]
    with_batch(champion, outputs=outputs, chunk_rows=10_000)  # one chunk: fewer tasks to wait for
    try:
        day = dt.date(2026, 3, 6)
        run = score(champion, day)
        assert run.state == "success", states(run)
        merged, key = xcom(run, "merge_predictions"), xcom(run, "collect_input")["key"]
        parts = batch_outputs.prediction_parts(champion.repo, merged["lakefs_commit"], merged["predictions"])
        with sa.create_engine(f"sqlite:///{database}").connect() as connection:
            copied = connection.execute(
                sa.text("SELECT output_key, count(*), count(DISTINCT transaction_id) FROM fraud_scores GROUP BY 1")
            ).all()
        assert copied == [(key, source_rows(champion, day), source_rows(champion, day))]
        objects = s3.list_objects_v2(Bucket="scores", Prefix="batch/")["Contents"]
        name = load_config(champion.path).name
        assert len(parts) == 1
        assert [o["Key"] for o in objects] == [f"batch/{name}/{key}/{p.rsplit('/', 1)[1]}" for p in parts]
    finally:
        with_batch(champion)
