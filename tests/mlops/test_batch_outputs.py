"""Batch outputs (`batch.outputs`) against real parts: predictions scored by a penguin classifier (text classes) into
the lakeFS stand-in, copied into a SQLite file, a Postgres database of the session's own, and `moto_server`'s S3.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pandas as pd
import pytest
import sqlalchemy as sa

from devstack.processes import free_port
from include.mlops import batch_outputs, batch_scoring, lakefs_repository, object_store
from include.mlops.config import ConfigError, PipelineConfig
from tests.fixtures.champions import TRAINING_COMMIT, fitted_onnx, zoo_config
from tests.zoo.datasets import ZOO

RUN_ID = "scheduled__2026-12-01T00:00:00+00:00"
KEY = "20261201T000000Z_20261202T000000Z"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
ISLANDS = ["Biscoe", "Dream", "Torgersen"]


@pytest.fixture(scope="module")
def penguins(tmp_path_factory) -> tuple[PipelineConfig, pd.DataFrame, batch_scoring.ScoringModel]:
    """A penguin classifier, as a batch run hands it to its chunk tasks (no registry needed here), and the rows."""
    config = zoo_config(tmp_path_factory.mktemp("penguins"), "penguins", "penguins_out", island={"allowed": ISLANDS})
    labelled = next(z for z in ZOO if z.name == "penguins").rows()
    onnx = fitted_onnx(config, labelled, "LogisticRegression", {"max_iter": 2000})
    model = batch_scoring.ScoringModel(
        name=config.name,
        version="3",
        tag=f"{config.name}:v3",
        sha256="not checked here",
        mlflow_run_id="run",
        lakefs_repository="mlops",
        lakefs_commit=TRAINING_COMMIT,
        resolved_at=dt.datetime(2026, 12, 2, 3, tzinfo=dt.UTC),
        onnx_bytes=onnx,
    )
    return config, labelled.drop(columns=["species"]), model


@pytest.fixture(scope="module")
def s3(moto_s3: str) -> Iterator[str]:
    """A bucket on moto_server; yields the endpoint."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in S3_ENV.items():
            patch.setenv(key, value)
        boto3.session.Session().client("s3", endpoint_url=moto_s3).create_bucket(Bucket="predictions")
        yield moto_s3


def scored(repo, config: PipelineConfig, model, parts: list[pd.DataFrame], key: str = KEY) -> tuple[str, str]:
    """`parts` scored as a batch run scores them (a chunk each) and committed on main; the commit and prefix."""
    folder = f"batch_input/{uuid.uuid4().hex[:8]}/"
    for index, part in enumerate(parts):
        lakefs_repository.write_parquet(repo, "main", f"{folder}part-{index:05d}.parquet", part)
    lakefs_repository.commit(repo, "main", "input")
    prefix = batch_scoring.output_prefix(config, key)
    chunks = batch_scoring.plan_chunks(repo, "main", folder, config.dataset.id_column)
    for chunk in chunks:
        batch_scoring.score_chunk(repo, "main", config, model, chunk, prefix, RUN_ID, "quarantine")
    batch_scoring.stale_outputs(repo, "main", prefix, len(chunks))
    return lakefs_repository.commit(repo, "main", "predictions").id, prefix


def with_outputs(folder: Path, *outputs: dict) -> PipelineConfig:
    return zoo_config(folder, "penguins", "penguins_out", island={"allowed": ISLANDS}, batch={"outputs": list(outputs)})


def parts_of(repo, commit: str, prefix: str) -> pd.DataFrame:
    paths = batch_outputs.prediction_parts(repo, commit, prefix)
    return pd.concat([lakefs_repository.read_parquet(repo, commit, p) for p in paths], ignore_index=True)


def table_rows(engine: sa.Engine, table: str, key: str) -> pd.DataFrame:
    with engine.connect() as connection:
        query = sa.text(f"SELECT * FROM {table} WHERE output_key = :key ORDER BY id")
        return pd.read_sql(query, connection, params={"key": key})


def test_tables_get_the_merged_rows_once_per_key(penguins, lakefs_repo, postgres_url, tmp_path):
    config, rows, model = penguins
    engines = {
        "predictions_sqlite": sa.create_engine(f"sqlite:///{tmp_path / 'predictions.db'}"),
        "predictions_pg": sa.create_engine(postgres_url),
    }
    table = f"penguin_scores_{uuid.uuid4().hex[:6]}"
    outputs = [{"kind": "sql", "connection_id": name, "table": table} for name in engines]
    config = with_outputs(tmp_path, *outputs)
    bad = rows.iloc[200:210].assign(island="Atlantis")  # quarantined: not copied
    commit, prefix = scored(lakefs_repo, config, model, [rows.iloc[:150], pd.concat([rows.iloc[150:200], bad])])
    expected = parts_of(lakefs_repo, commit, prefix).sort_values("id", ignore_index=True)
    assert len(expected) == 200

    written = batch_outputs.write_outputs(lakefs_repo, commit, prefix, KEY, config, engines.__getitem__)
    assert [(w.parts, w.rows) for w in written] == [(2, 200), (2, 200)]
    assert written[1].output.startswith(f"output 2 (sql table {table} of connection 'predictions_pg' at postgresql")
    for engine in engines.values():
        got = table_rows(engine, table, KEY)
        assert list(got.columns) == ["output_key", *expected.columns]
        assert got["id"].tolist() == expected["id"].tolist()
        assert got["prediction"].tolist() == expected["prediction"].tolist()
        probabilities = [c for c in expected.columns if c.startswith("probability_")]
        assert probabilities == ["probability_Adelie", "probability_Chinstrap", "probability_Gentoo"]
        assert (got[probabilities] - expected[probabilities]).abs().max().max() < 1e-12
        assert set(got["model_version"]) == {"3"} and set(got["airflow_run_id"]) == {RUN_ID}
        assert set(pd.to_datetime(got["scored_at"], utc=True)) == {pd.Timestamp(model.resolved_at)}

    # The same key again, from a smaller input: its rows are replaced; another key's stay.
    other, other_prefix = scored(lakefs_repo, config, model, [rows.iloc[300:320]], key="sha256-" + "a" * 64)
    batch_outputs.write_outputs(lakefs_repo, other, other_prefix, "sha256-" + "a" * 64, config, engines.__getitem__)
    commit, prefix = scored(lakefs_repo, config, model, [rows.iloc[:40]])
    batch_outputs.write_outputs(lakefs_repo, commit, prefix, KEY, config, engines.__getitem__)
    batch_outputs.write_outputs(lakefs_repo, commit, prefix, KEY, config, engines.__getitem__)  # a retry
    for engine in engines.values():
        assert table_rows(engine, table, KEY)["id"].tolist() == sorted(rows["id"].iloc[:40])
        assert len(table_rows(engine, table, "sha256-" + "a" * 64)) == 20

    # A write that fails half-way leaves the key's rows as they were.
    def frames() -> Iterator[pd.DataFrame]:
        yield expected
        raise OSError("the input went away")

    for engine in engines.values():
        with pytest.raises(OSError, match="went away"):
            batch_outputs.write_table(engine, table, KEY, frames())
        assert len(table_rows(engine, table, KEY)) == 40


def test_a_table_made_for_other_predictions_is_refused_naming_it(penguins, lakefs_repo, tmp_path):
    config, rows, model = penguins
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'predictions.db'}")
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE scores (output_key TEXT, id TEXT, prediction TEXT)"))
    config = with_outputs(tmp_path, {"kind": "sql", "connection_id": "db", "table": "scores"})
    commit, prefix = scored(lakefs_repo, config, model, [rows.iloc[:10]])
    with pytest.raises(batch_outputs.OutputError) as failed:
        batch_outputs.write_outputs(lakefs_repo, commit, prefix, KEY, config, lambda _: engine)
    message = str(failed.value)
    assert message.startswith("1 of 1 batch output(s) failed:\noutput 1 (sql table scores of connection 'db' at sqlite")
    assert "table scores has no column(s) probability_Adelie, probability_Chinstrap" in message


def test_an_s3_prefix_gets_the_parts_and_loses_stale_ones(penguins, lakefs_repo, s3, tmp_path):
    config, rows, model = penguins
    url = f"s3://predictions/batch/{uuid.uuid4().hex[:6]}/"
    config = with_outputs(tmp_path, {"kind": "s3", "url": url, "endpoint_url": s3})
    commit, prefix = scored(lakefs_repo, config, model, [rows.iloc[:100], rows.iloc[100:200], rows.iloc[200:210]])
    (written,) = batch_outputs.write_outputs(lakefs_repo, commit, prefix, KEY, config, lambda _: None)
    assert written == batch_outputs.Written(f"output 1 ({url} at {s3})", 3)
    store = object_store.ObjectStore.from_url(url, s3)
    folder = store.key(config.name, KEY)
    keys = store.keys(folder + "/")
    assert keys == [f"{folder}/part-0000{i}.parquet" for i in range(3)]
    for key in keys:  # byte for byte as lakeFS holds them
        assert store.get(key) == lakefs_repository.read_bytes(lakefs_repo, commit, prefix + key.rsplit("/", 1)[1])

    # The interval again, in two chunks: the third part goes, another key's parts stay.
    store.put(store.key(config.name, "other", "part-00000.parquet"), b"another run's")
    commit, prefix = scored(lakefs_repo, config, model, [rows.iloc[:100], rows.iloc[100:150]])
    for _ in range(2):  # and a retry
        batch_outputs.write_outputs(lakefs_repo, commit, prefix, KEY, config, lambda _: None)
    assert store.keys(folder + "/") == keys[:2]
    assert store.keys(store.key(config.name, "other")) == [store.key(config.name, "other", "part-00000.parquet")]


def test_each_failed_output_is_named_and_the_others_are_written(penguins, lakefs_repo, tmp_path, monkeypatch):
    config, rows, model = penguins
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    dead_s3, dead_pg = f"http://127.0.0.1:{free_port()}", free_port()  # nothing listens there
    config = with_outputs(
        tmp_path,
        {"kind": "s3", "url": "s3://predictions/batch/", "endpoint_url": dead_s3},
        {"kind": "sql", "connection_id": "predictions_db"},
        {"kind": "sql", "connection_id": "gone_db", "table": "analytics.scores"},
    )
    engines = {
        "predictions_db": sa.create_engine(f"sqlite:///{tmp_path / 'predictions.db'}"),
        "gone_db": sa.create_engine(f"postgresql+psycopg2://scorer:s3cret@127.0.0.1:{dead_pg}/analytics"),
    }
    commit, prefix = scored(lakefs_repo, config, model, [rows.iloc[:10]])
    with pytest.raises(batch_outputs.OutputError) as failed:
        batch_outputs.write_outputs(lakefs_repo, commit, prefix, KEY, config, engines.__getitem__)
    lines = str(failed.value).splitlines()
    assert lines[0] == "2 of 3 batch output(s) failed:"
    assert lines[1].startswith(f"output 1 (s3://predictions/batch/ at {dead_s3}): ObjectStoreError: writing ")
    assert lines[2].startswith(
        f"output 3 (sql table analytics.scores of connection 'gone_db' at "
        f"postgresql+psycopg2://scorer:***@127.0.0.1:{dead_pg}/analytics): OperationalError"
    )
    assert "s3cret" not in str(failed.value)
    assert lines[-1] == (
        "written: output 2 (sql table batch_predictions_penguins_out of connection 'predictions_db' at sqlite:///"
        f"{tmp_path / 'predictions.db'})"
    )
    assert len(table_rows(engines["predictions_db"], "batch_predictions_penguins_out", KEY)) == 10


@pytest.mark.parametrize(
    ("output", "complaint"),
    [
        ({"kind": "sql", "connection_id": "db", "table": "Scores; DROP"}, "batch.outputs.0.sql.table: 'Scores; DROP'"),
        ({"kind": "sql", "table": "scores"}, "batch.outputs.0.sql.connection_id: Field required"),
        ({"kind": "s3", "url": "predictions/batch/"}, "batch.outputs.0.s3.url: 'predictions/batch/': expected s3://"),
        ({"kind": "ftp", "url": "ftp://x"}, "batch.outputs.0: Input tag 'ftp' found using 'kind' does not match"),
    ],
    ids=["table-name", "no-connection", "not-s3", "unknown-kind"],
)
def test_a_wrong_output_is_refused_naming_the_key(output, complaint, tmp_path):
    with pytest.raises(ConfigError, match="penguins.yaml: .*" + complaint.replace("(", "\\(")):
        with_outputs(tmp_path, output)
