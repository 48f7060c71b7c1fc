"""Batch scoring's library against real parts: a real `mlflow server` registry, the lakeFS stand-in through lakeFS's
client, the BentoML model store, `moto_server` as the object store, and real ONNX models run by onnxruntime.

Two datasets unlike the demo: palmerpenguins (three text species, missing measurements and sexes; `island` made a
closed set here) scored from the BentoML model store, and scikit-learn's diabetes (a regression) from the object
store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from devstack.processes import free_port
from include.mlops import batch_input, batch_scoring, deployment, lakefs_repository, object_store
from include.mlops.config import PipelineConfig
from tests.conftest import REPO_ROOT
from tests.fixtures.champions import TRAINING_COMMIT, fitted_onnx, register_champion, zoo_config
from tests.zoo.datasets import ZOO

RUN_ID = "scheduled__2026-12-01T00:00:00+00:00"
BUCKET = "mlops-batch"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
ISLANDS = ["Biscoe", "Dream", "Torgersen"]


@dataclass(frozen=True)
class Champion:
    config: PipelineConfig
    rows: pd.DataFrame  # the dataset's rows, as its source keeps them
    onnx: bytes
    run_id: str  # the MLflow run the version was registered from


@pytest.fixture(scope="module")
def client(mlflow_server) -> MlflowClient:
    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_registry_uri(mlflow_server.url)
    return MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)


@pytest.fixture(scope="module")
def store(moto_s3: str) -> Iterator[object_store.ObjectStore]:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**S3_ENV, object_store.ENDPOINT_URL_ENV: moto_s3}.items():
            patch.setenv(key, value)
        boto3.session.Session().client("s3", endpoint_url=moto_s3).create_bucket(Bucket=BUCKET)
        yield object_store.ObjectStore(BUCKET, "models")


@pytest.fixture(scope="module")
def penguins(client, tmp_path_factory) -> Champion:
    """A penguin classifier as champion, in the BentoML model store (no object store)."""
    name = f"penguins_{uuid.uuid4().hex[:8]}"
    config = zoo_config(tmp_path_factory.mktemp("penguins"), "penguins", name, island={"allowed": ISLANDS})
    rows = next(z for z in ZOO if z.name == "penguins").rows()
    onnx = fitted_onnx(config, rows, "LogisticRegression", {"max_iter": 2000})
    run_id = register_champion(client, config)
    deployment.save_to_model_store(onnx, config, "1", {"mlflow_run_id": run_id})
    return Champion(config, rows, onnx, run_id)


@pytest.fixture(scope="module")
def diabetes(client, store, tmp_path_factory) -> Champion:
    """A diabetes regressor as champion, published to the object store only."""
    name = f"diabetes_{uuid.uuid4().hex[:8]}"
    config = zoo_config(tmp_path_factory.mktemp("diabetes"), "diabetes", name)
    rows = next(z for z in ZOO if z.name == "diabetes").rows()
    onnx = fitted_onnx(config, rows, "Ridge", {"alpha": 1.0})
    run_id = register_champion(client, config)
    object_store.publish(store, deployment.model_store_tag(config, "1"), onnx, {"mlflow_run_id": run_id})
    return Champion(config, rows, onnx, run_id)


def _input(repo, parts: list[pd.DataFrame], prefix: str = "input/batch/") -> str:
    """`parts` as Parquet parts under `prefix` on main, committed; returns the commit id."""
    for index, part in enumerate(parts):
        lakefs_repository.write_parquet(repo, "main", f"{prefix}{index:03d}.parquet", part)
    return lakefs_repository.commit(repo, "main", "batch input").id


def _bad_penguins(rows: pd.DataFrame) -> pd.DataFrame:
    """Ten rows to score, five of them wrong: an unknown island, a negative mass, a mass that is text, no id, and
    an id seen before. As a partner's file might be: numbers as text, a column the model does not know."""
    part = rows.head(10).drop(columns=["species", "event_time"]).astype(object).reset_index(drop=True)
    part.loc[1, "island"] = "Atlantis"
    part.loc[2, "body_mass_g"] = -5
    part.loc[3, "body_mass_g"] = "heavy"
    part.loc[4, "id"] = None
    part.loc[5, "id"] = part.loc[0, "id"]
    part["body_mass_g"] = part["body_mass_g"].astype(str).replace("nan", None)
    return part.assign(comment="from the partner")


def test_no_champion_is_a_clear_skip(client, tmp_path):
    config = zoo_config(tmp_path, "penguins", f"penguins_{uuid.uuid4().hex[:8]}")
    with pytest.raises(batch_scoring.NoChampion, match=f"{config.name} has no champion .* nothing to score with"):
        batch_scoring.resolve_model(client, None, config)
    client.create_registered_model(config.name)  # registered, but no version is champion
    with pytest.raises(batch_scoring.NoChampion, match=f"{config.name} has no champion"):
        batch_scoring.resolve_model(client, None, config)


def test_the_champion_scores_text_classes_and_quarantines_wrong_rows(client, penguins, lakefs_repo):
    config, rows = penguins.config, penguins.rows
    model = batch_scoring.resolve_model(client, None, config)
    assert (model.version, model.tag, model.mlflow_run_id) == ("1", f"{config.name}:v1", penguins.run_id)
    assert model.sha256 == hashlib.sha256(penguins.onnx).hexdigest() and model.onnx_bytes == penguins.onnx
    assert (model.lakefs_repository, model.lakefs_commit) == ("mlops", TRAINING_COMMIT)
    # What a chunk task gets: small JSON values, and the same bytes loaded again by tag and hash.
    described = json.loads(json.dumps(model.to_dict()))
    again = batch_scoring.reload(None, described)
    assert again == model and again.onnx_bytes == model.onnx_bytes

    good = rows.iloc[10:].drop(columns=["species"])  # missing measurements and sexes among them
    assert good.isna().any().any()
    commit = _input(lakefs_repo, [good, _bad_penguins(rows)])
    chunks = batch_scoring.plan_chunks(lakefs_repo, "main", "input/batch/", "id")
    assert [(c.index, c.ref, c.path, c.row_groups, c.rows) for c in chunks] == [
        (0, commit, "input/batch/000.parquet", [0], len(good)),
        (1, commit, "input/batch/001.parquet", [0], 10),
    ]
    chunks = [batch_scoring.Chunk.from_dict(json.loads(json.dumps(c.to_dict()))) for c in chunks]
    lakefs_repository.create_branch(lakefs_repo, "scoring", "main")
    prefix = batch_scoring.output_prefix(config, "20261201T000000Z_20261202T000000Z")
    summaries = [
        batch_scoring.score_chunk(lakefs_repo, "scoring", config, model, c, prefix, RUN_ID, "quarantine")
        for c in chunks
    ]

    first, second = summaries
    assert (first.rows_in, first.rows_scored, first.rows_quarantined) == (len(good), len(good), 0)
    assert (second.rows_in, second.rows_scored, second.rows_quarantined) == (10, 5, 5)
    assert second.failed_checks == {
        "category:island": 1,
        "range:body_mass_g": 1,
        "type:body_mass_g": 1,
        "null:id": 1,
        "duplicate_id:id": 1,
    }
    scored = lakefs_repository.read_parquet(lakefs_repo, "scoring", f"{prefix}part-00000.parquet")
    assert list(scored.columns) == [
        "id",
        "prediction",
        "probability_Adelie",
        "probability_Chinstrap",
        "probability_Gentoo",
        "model_version",
        "airflow_run_id",
        "scored_at",
    ]
    expected = deployment.offline_predictions(penguins.onnx, config, good)
    assert scored["id"].tolist() == good["id"].tolist()
    assert scored["prediction"].tolist() == [e["label"] for e in expected]
    assert set(scored["prediction"]) <= {"Adelie", "Chinstrap", "Gentoo"} and scored["prediction"].nunique() == 3
    probabilities = scored[["probability_Adelie", "probability_Chinstrap", "probability_Gentoo"]].to_numpy()
    assert np.abs(probabilities - [list(e["probabilities"].values()) for e in expected]).max() < 1e-6
    assert set(scored["model_version"]) == {"1"} and set(scored["airflow_run_id"]) == {RUN_ID}
    assert set(scored["scored_at"]) == {pd.Timestamp(model.resolved_at)}

    kept = lakefs_repository.read_parquet(lakefs_repo, "scoring", f"{prefix}part-00001.parquet")
    assert kept["id"].tolist() == rows["id"].iloc[[0, 6, 7, 8, 9]].tolist()
    quarantined = lakefs_repository.read_parquet(lakefs_repo, "scoring", f"{prefix}quarantine/part-00001.parquet")
    assert quarantined["_failed_checks"].tolist() == [
        "category:island",
        "range:body_mass_g",
        "type:body_mass_g",
        "null:id",
        "duplicate_id:id",
    ]
    report = json.loads(lakefs_repository.read_bytes(lakefs_repo, "scoring", f"{prefix}quarantine/part-00001.json"))
    assert report["input_path"] == "input/batch/001.parquet" and report["rows_quarantined"] == 5
    assert {(f["check"], f["column"], f["rows"]) for f in report["failures"]} == {
        ("category", "island", 1),
        ("range", "body_mass_g", 1),
        ("type", "body_mass_g", 1),
        ("null", "id", 1),
        ("duplicate_id", "id", 1),
    }

    metadata = batch_scoring.commit_metadata(model, RUN_ID, commit, summaries)
    landed = lakefs_repository.commit(lakefs_repo, "scoring", f"Predictions of {config.name}", metadata)
    assert landed.metadata == {
        "model_name": config.name,
        "model_version": "1",
        "bentoml_model_tag": f"{config.name}:v1",
        "onnx_sha256": model.sha256,
        "mlflow_run_id": penguins.run_id,
        "training_lakefs_commit": TRAINING_COMMIT,
        "airflow_run_id": RUN_ID,
        "input_ref": commit,
        "chunks": "2",
        "rows_in": str(len(good) + 10),
        "rows_scored": str(len(good) + 5),
        "rows_quarantined": "5",
    }


def test_fail_mode_raises_naming_the_chunk_and_the_checks(client, penguins, lakefs_repo):
    config, rows = penguins.config, penguins.rows
    model = batch_scoring.resolve_model(client, None, config)
    _input(lakefs_repo, [_bad_penguins(rows), rows.head(5).drop(columns=["sex"])])
    bad, no_sex = batch_scoring.plan_chunks(lakefs_repo, "main", "input/batch/", "id")
    prefix = batch_scoring.output_prefix(config, "run-1")

    with pytest.raises(batch_scoring.InvalidInput) as failed:
        batch_scoring.score_chunk(lakefs_repo, "main", config, model, bad, prefix, RUN_ID, "fail")
    message = str(failed.value)
    assert message.startswith("chunk 0 (input/batch/000.parquet row group(s) 0 at ")
    assert "check 'category' on column 'island': 1 row(s)" in message and "'duplicate_id' on column 'id'" in message
    assert not lakefs_repository.object_exists(lakefs_repo, "main", f"{prefix}part-00000.parquet")
    assert lakefs_repository.object_exists(lakefs_repo, "main", f"{prefix}quarantine/part-00000.parquet")

    # A missing feature fails every row: quarantined whole, or the run fails naming the column.
    with pytest.raises(batch_scoring.InvalidInput, match="missing column\\(s\\): 'sex'"):
        batch_scoring.score_chunk(lakefs_repo, "main", config, model, no_sex, prefix, RUN_ID, "fail")
    summary = batch_scoring.score_chunk(lakefs_repo, "main", config, model, no_sex, prefix, RUN_ID, "quarantine")
    assert (summary.rows_in, summary.rows_scored, summary.rows_quarantined) == (5, 0, 5)
    assert summary.failed_checks == {"missing_column:sex": 5}
    empty = lakefs_repository.read_parquet(lakefs_repo, "main", summary.path)
    assert empty.empty and "probability_Gentoo" in empty.columns

    with pytest.raises(ValueError, match="on_invalid='skip': expected 'quarantine' or 'fail'"):
        batch_scoring.score_chunk(lakefs_repo, "main", config, model, no_sex, prefix, RUN_ID, "skip")  # type: ignore[arg-type]


def test_a_chunk_scored_twice_writes_one_part_with_the_same_bytes(client, penguins, lakefs_repo):
    config, rows = penguins.config, penguins.rows
    model = batch_scoring.resolve_model(client, None, config)
    _input(lakefs_repo, [rows.iloc[:100], rows.iloc[100:200], _bad_penguins(rows)])
    chunks = batch_scoring.plan_chunks(lakefs_repo, "main", "input/batch/", "id")
    prefix = batch_scoring.output_prefix(
        config,
        batch_scoring.interval_key(dt.datetime(2026, 12, 1, tzinfo=dt.UTC), dt.datetime(2026, 12, 2, tzinfo=dt.UTC)),
    )
    for chunk in chunks:
        batch_scoring.score_chunk(lakefs_repo, "main", config, model, chunk, prefix, RUN_ID, "quarantine")
    lakefs_repository.commit(lakefs_repo, "main", "first try")
    written = lakefs_repository.list_objects(lakefs_repo, "main", prefix)

    # A retry, by a task that loaded the model again from what the run handed on.
    retried = batch_scoring.reload(None, model.to_dict())
    batch_scoring.score_chunk(lakefs_repo, "main", config, retried, chunks[0], prefix, RUN_ID, "quarantine")
    again = lakefs_repository.list_objects(lakefs_repo, "main", prefix)
    assert [(o.path, o.checksum) for o in again] == [(o.path, o.checksum) for o in written]
    assert [o.path.removeprefix(prefix) for o in again] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
        "quarantine/part-00002.json",
        "quarantine/part-00002.parquet",
    ]

    # The interval again, its input now two clean parts: the third part and its quarantine go.
    _input(lakefs_repo, [rows.iloc[:100], rows.iloc[100:200].drop(index=150)], prefix="input/batch2/")
    chunks = batch_scoring.plan_chunks(lakefs_repo, "main", "input/batch2/", "id")
    assert sorted(batch_scoring.stale_outputs(lakefs_repo, "main", prefix, len(chunks))) == [
        f"{prefix}part-00002.parquet",
        f"{prefix}quarantine/part-00002.json",
        f"{prefix}quarantine/part-00002.parquet",
    ]
    summaries = [
        batch_scoring.score_chunk(lakefs_repo, "main", config, model, c, prefix, RUN_ID, "quarantine") for c in chunks
    ]
    scored = pd.concat(lakefs_repository.read_parquet(lakefs_repo, "main", s.path) for s in summaries)
    assert len(scored) == 199 and scored["id"].is_unique


def test_a_regression_champion_scores_from_the_object_store(client, store, diabetes, lakefs_repo):
    config, rows = diabetes.config, diabetes.rows
    model = batch_scoring.resolve_model(client, store, config)
    assert model.sha256 == hashlib.sha256(diabetes.onnx).hexdigest() and model.onnx_bytes == diabetes.onnx
    assert batch_scoring.load_model(store, model.tag, model.sha256) == diabetes.onnx
    part = rows.drop(columns=["target", "event_time"]).assign(id=rows["id"].str.replace("patient", "p"))
    _input(lakefs_repo, [part])
    (chunk,) = batch_scoring.plan_chunks(lakefs_repo, "main", "input/batch/", "id")
    prefix = batch_scoring.output_prefix(config, batch_scoring.content_key([b"the partner's file"]))
    assert prefix.startswith(f"predictions/{config.name}/sha256-")
    summary = batch_scoring.score_chunk(lakefs_repo, "main", config, model, chunk, prefix, RUN_ID, "fail")

    scored = lakefs_repository.read_parquet(lakefs_repo, "main", summary.path)
    assert list(scored.columns) == ["id", "prediction", "model_version", "airflow_run_id", "scored_at"]
    expected = [e["value"] for e in deployment.offline_predictions(diabetes.onnx, config, part)]
    assert scored["prediction"].dtype == "float64" and len(scored) == len(rows) == summary.rows_scored
    assert np.allclose(scored["prediction"], expected, rtol=1e-6)


def test_an_unreachable_object_store_fails_naming_it_before_anything_is_written(
    client, diabetes, lakefs_repo, monkeypatch
):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv(object_store.ENDPOINT_URL_ENV, endpoint)
    with pytest.raises(object_store.ObjectStoreError, match=f"{diabetes.config.name} v1 .* at {endpoint} failed"):
        batch_scoring.resolve_model(client, object_store.ObjectStore(BUCKET, "models"), diabetes.config)
    assert lakefs_repository.list_objects(lakefs_repo, "main", "predictions/") == []


def test_bytes_whose_hash_differs_are_refused(client, store, diabetes, penguins):
    tag, sha256 = f"{diabetes.config.name}:v1", hashlib.sha256(diabetes.onnx).hexdigest()
    other = "0" * 64
    with pytest.raises(batch_scoring.ChecksumMismatch, match=f"has sha256 {sha256}, the run resolved sha256 {other}"):
        batch_scoring.load_model(store, tag, other)
    # The object under the model's content address is not that model any more.
    key = store.key("models", diabetes.config.name, f"{sha256}.onnx")
    store.put(key, penguins.onnx)
    try:
        with pytest.raises(batch_scoring.ChecksumMismatch, match=f"expected {sha256}"):
            batch_scoring.load_model(store, tag, sha256)
    finally:
        store.put(key, diabetes.onnx)

    # The BentoML model store's file, changed after it was saved.
    tag, sha256 = f"{penguins.config.name}:v1", hashlib.sha256(penguins.onnx).hexdigest()
    path = Path(deployment.stored_model(tag).path_of(deployment.MODEL_FILE))
    path.write_bytes(diabetes.onnx)
    try:
        got = hashlib.sha256(diabetes.onnx).hexdigest()
        with pytest.raises(batch_scoring.ChecksumMismatch, match=f"has sha256 {got}, the store recorded {sha256}"):
            batch_scoring.load_model(None, tag, sha256)
    finally:
        path.write_bytes(penguins.onnx)
    with pytest.raises(object_store.ObjectNotFound, match=f"{tag}\\) is not published in s3://{BUCKET}/models"):
        batch_scoring.load_model(store, tag, sha256)  # the penguins' model was never published there
    with pytest.raises(batch_scoring.ModelUnavailable, match=f"{penguins.config.name}:v9 is not in the BentoML"):
        batch_scoring.load_model(None, f"{penguins.config.name}:v9", sha256)


def test_output_keys_name_one_interval_or_one_content(penguins):
    start = dt.datetime(2026, 12, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert batch_scoring.interval_key(start, start + dt.timedelta(days=1)) == "20261201T000000Z_20261202T000000Z"
    with pytest.raises(ValueError, match="needs times with a time zone"):
        batch_scoring.interval_key(dt.datetime(2026, 12, 1), dt.datetime(2026, 12, 2))
    with pytest.raises(ValueError, match="is empty"):
        batch_scoring.interval_key(start, start)
    for key in ("", "a/b", "../x", "2026-12-01T00:00:00+00:00"):
        with pytest.raises(ValueError, match="one path segment"):
            batch_scoring.output_prefix(penguins.config, key)


def test_a_lakefs_path_is_read_at_its_commit_and_keyed_by_the_commit_and_prefix(penguins, lakefs_repo):
    rows = penguins.rows.drop(columns=["species"])
    lakefs_repository.write_parquet(lakefs_repo, "main", "drops/december/a.parquet", rows.iloc[:100])
    csv = rows.iloc[100:150].to_csv(index=False).encode()
    lakefs_repository.write_bytes(lakefs_repo, "main", "drops/december/b.CSV", csv)
    lakefs_repository.write_parquet(lakefs_repo, "main", "drops/november/a.parquet", rows.iloc[150:])
    commit = lakefs_repository.commit(lakefs_repo, "main", "December's drops").id

    read = batch_input.read_lakefs(lakefs_repo, "main", "drops/december/")
    read_rows = pd.concat(read.pieces, ignore_index=True)
    assert len(read_rows) == 150 and sorted(read_rows["id"]) == sorted(rows["id"].iloc[:150])
    assert read.key == batch_scoring.lakefs_key(commit, "drops/december/") and commit in read.key
    assert read.source == f"lakefs://{lakefs_repo.id}/{commit}/drops/december/"
    batch_scoring.output_prefix(penguins.config, read.key)  # one path segment
    assert batch_scoring.lakefs_key(commit, "drops/november/") != read.key

    # The branch moves on: the commit read names the same input, and the same key; the branch's head another.
    lakefs_repository.write_parquet(lakefs_repo, "main", "drops/december/c.parquet", rows.iloc[150:160])
    lakefs_repository.commit(lakefs_repo, "main", "a late drop")
    assert batch_input.read_lakefs(lakefs_repo, commit, "drops/december/").key == read.key
    moved = batch_input.read_lakefs(lakefs_repo, "main", "drops/december/")
    assert sum(map(len, moved.pieces)) == 160 and moved.key != read.key


def test_a_lakefs_path_that_is_not_there_or_not_tables_is_refused_naming_it(lakefs_server, lakefs_repo):
    with pytest.raises(lakefs_repository.RefNotFound, match="repository 'no-such-repository'"):
        lakefs_repository.existing_repository(lakefs_server.client(), "no-such-repository")
    assert lakefs_repository.existing_repository(lakefs_server.client(), lakefs_repo.id).id == lakefs_repo.id
    with pytest.raises(lakefs_repository.RefNotFound, match=f"ref 'no-such-branch' in '{lakefs_repo.id}'"):
        batch_input.read_lakefs(lakefs_repo, "no-such-branch", "drops/")

    lakefs_repository.write_parquet(lakefs_repo, "main", "drops/a.parquet", pd.DataFrame({"id": ["1"]}))
    lakefs_repository.write_bytes(lakefs_repo, "main", "drops/notes.txt", b"not rows")
    lakefs_repository.write_bytes(lakefs_repo, "main", "drops/b.json", b"[]")
    lakefs_repository.commit(lakefs_repo, "main", "mixed drops")
    with pytest.raises(
        batch_input.UnsupportedFiles, match=r"must be \.parquet or \.csv.*: drops/b\.json, drops/notes\.txt$"
    ):
        batch_input.read_lakefs(lakefs_repo, "main", "drops/")

    empty = batch_input.read_lakefs(lakefs_repo, "main", "nothing/here/")
    assert list(empty.pieces) == [] and empty.key.startswith("lakefs-") and "0 object(s)" in empty.what


def test_arrived_files_are_read_and_keyed_by_their_content(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b"], "x": [1.5, 2.5]})
    frame.to_parquet(tmp_path / "one.parquet")
    frame.assign(id=["c", "d"]).to_csv(tmp_path / "two.csv", index=False)
    paths = [tmp_path / "one.parquet", tmp_path / "two.csv"]
    read = batch_input.read_files(paths)
    assert list(pd.concat(read.pieces)["id"]) == ["a", "b", "c", "d"] and read.source is None
    assert read.key == batch_scoring.content_key([b"".join(p.read_bytes() for p in paths)])
    (tmp_path / "three.xlsx").write_bytes(b"")
    with pytest.raises(batch_input.UnsupportedFiles, match="three.xlsx$"):
        batch_input.read_files([*paths, tmp_path / "three.xlsx"])
    (tmp_path / "empty.csv").write_bytes(b"")  # a partner's file with nothing in it: no rows, not a failure
    assert list(batch_input.read_files([tmp_path / "empty.csv"]).pieces) == []


def test_an_input_is_written_in_parts_of_chunk_rows_holding_one_part_at_a_time():
    pieces = [pd.DataFrame({"id": range(i, i + n)}, index=range(100, 100 + n)) for i, n in ((0, 3), (3, 0), (3, 5))]
    handed = []

    def given():
        for piece in pieces:
            handed.append(len(piece))
            yield piece

    parts = batch_input.in_parts(given(), 4)
    first = next(parts)
    assert first["id"].tolist() == [0, 1, 2, 3] and first.index.tolist() == [0, 1, 2, 3]
    assert handed == [3, 0, 5]  # the first part needed the third piece, and nothing was read ahead of it
    assert [p["id"].tolist() for p in parts] == [[4, 5, 6, 7]]
    assert [p["id"].tolist() for p in batch_input.in_parts(pieces, 3)] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert list(batch_input.in_parts([pieces[1]], 3)) == []
    with pytest.raises(ValueError, match="at least one row"):
        next(batch_input.in_parts(pieces, 0))


def test_chunks_are_row_groups_of_the_input_files_read_alone(client, penguins, lakefs_repo):
    config, rows = penguins.config, penguins.rows.drop(columns=["species"])
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False, row_group_size=40)  # 344 rows: 8 groups of 40, and 24
    lakefs_repository.write_bytes(lakefs_repo, "main", "input/batch/a.parquet", buffer.getvalue())
    lakefs_repository.write_parquet(lakefs_repo, "main", "input/batch/b.parquet", rows.head(50))
    commit = lakefs_repository.commit(lakefs_repo, "main", "input").id

    chunks = batch_scoring.plan_chunks(lakefs_repo, "main", "input/batch/", "id", chunk_rows=100)
    assert [(c.index, c.path[-9:], c.row_groups, c.rows) for c in chunks] == [
        (0, "a.parquet", [0, 1], 80),
        (1, "a.parquet", [2, 3], 80),
        (2, "a.parquet", [4, 5], 80),
        (3, "a.parquet", [6, 7], 80),
        (4, "a.parquet", [8], 24),
        (5, "b.parquet", [0], 50),
    ]
    assert {c.ref for c in chunks} == {commit}
    # A row group above chunk_rows is a chunk of its own.
    assert [c.rows for c in batch_scoring.plan_chunks(lakefs_repo, "main", "input/batch/a", "id", chunk_rows=30)] == [
        *[40] * 8,
        24,
    ]
    model = batch_scoring.resolve_model(client, None, config)
    prefix = batch_scoring.output_prefix(config, "groups")
    summary = batch_scoring.score_chunk(lakefs_repo, "main", config, model, chunks[1], prefix, RUN_ID, "fail")
    scored = lakefs_repository.read_parquet(lakefs_repo, "main", summary.path)
    assert summary.path == f"{prefix}part-00001.parquet" and summary.rows_in == 80
    assert scored["id"].tolist() == rows["id"].iloc[80:160].tolist()


def test_an_input_that_is_not_parquet_is_refused(lakefs_repo, penguins):
    lakefs_repository.write_bytes(lakefs_repo, "main", "input/batch/rows.csv", b"id\n1\n")
    lakefs_repository.write_bytes(lakefs_repo, "main", "input/other/000.parquet", b"id\n1\n")
    lakefs_repository.commit(lakefs_repo, "main", "input")
    with pytest.raises(ValueError, match="not Parquet: input/batch/rows.csv"):
        batch_scoring.plan_chunks(lakefs_repo, "main", "input/batch/", "id")
    with pytest.raises(lakefs_repository.VersioningError, match="'input/other/000.parquet' .* is not a Parquet file"):
        batch_scoring.plan_chunks(lakefs_repo, "main", "input/other/", "id")
    assert batch_scoring.plan_chunks(lakefs_repo, "main", "input/nothing/", "id") == []
    with pytest.raises(ValueError, match="chunk_rows=0: a chunk holds at least one row"):
        batch_scoring.plan_chunks(lakefs_repo, "main", "input/nothing/", "id", chunk_rows=0)


def test_an_id_seen_in_an_earlier_chunk_is_quarantined_as_a_duplicate(client, penguins, lakefs_repo):
    config, rows = penguins.config, penguins.rows.drop(columns=["species"])
    model = batch_scoring.resolve_model(client, None, config)
    buffer = io.BytesIO()
    rows.iloc[:100].to_parquet(buffer, index=False, row_group_size=50)  # chunks 0 and 1
    lakefs_repository.write_bytes(lakefs_repo, "main", "input/batch/a.parquet", buffer.getvalue())
    # Chunk 2: ids 90-99 again (99 twice), a null id, and its own new rows. Chunk 3 has no id column at all.
    again = pd.concat([rows.iloc[90:100], rows.iloc[[99]], rows.iloc[100:150]], ignore_index=True)
    again.loc[len(again) - 1, "id"] = None
    lakefs_repository.write_parquet(lakefs_repo, "main", "input/batch/b.parquet", again)
    lakefs_repository.write_parquet(lakefs_repo, "main", "input/batch/c.parquet", rows.iloc[150:155].drop(columns="id"))
    lakefs_repository.commit(lakefs_repo, "main", "input")

    chunks = batch_scoring.plan_chunks(lakefs_repo, "main", "input/batch/", "id", chunk_rows=50)
    repeated = rows["id"].iloc[90:100].tolist()
    assert [(c.path[-9:], c.rows, c.seen_ids) for c in chunks] == [
        ("a.parquet", 50, []),
        ("a.parquet", 50, []),
        ("b.parquet", 61, repeated),
        ("c.parquet", 5, []),
    ]
    chunk = batch_scoring.Chunk.from_dict(json.loads(json.dumps(chunks[2].to_dict())))  # as the task gets it
    assert chunk == chunks[2]
    prefix = batch_scoring.output_prefix(config, "across-chunks")
    summaries = [
        batch_scoring.score_chunk(lakefs_repo, "main", config, model, c, prefix, RUN_ID, "quarantine")
        for c in (chunks[0], chunks[1], chunk)
    ]
    assert [s.rows_quarantined for s in summaries] == [0, 0, 12]
    assert summaries[2].failed_checks == {"duplicate_id:id": 11, "null:id": 1}
    report = json.loads(lakefs_repository.read_bytes(lakefs_repo, "main", f"{prefix}quarantine/part-00002.json"))
    (duplicates,) = [f for f in report["failures"] if f["check"] == "duplicate_id"]
    assert (duplicates["column"], duplicates["rows"], duplicates["level"]) == ("id", 11, "row")
    quarantined = lakefs_repository.read_parquet(lakefs_repo, "main", f"{prefix}quarantine/part-00002.parquet")
    assert sorted(quarantined["id"].dropna()) == sorted([*repeated, repeated[-1]])
    scored = pd.concat(lakefs_repository.read_parquet(lakefs_repo, "main", s.path) for s in summaries)
    # Each id once, from its first row: the first chunk's 90-99, not the repeats.
    assert scored["id"].is_unique and len(scored) == 149
    first = lakefs_repository.read_parquet(lakefs_repo, "main", summaries[1].path)
    assert set(repeated) <= set(first["id"])

    # The chunk without the id column is planned, and quarantined whole when scored.
    summary = batch_scoring.score_chunk(lakefs_repo, "main", config, model, chunks[3], prefix, RUN_ID, "quarantine")
    assert summary.failed_checks == {"missing_column:id": 5}


def test_the_chunk_tasks_library_does_not_import_mlflow():
    """Only resolve_model asks the registry; every other task of a run imports this module in a process of its own,
    and MLflow's import (about a second, benchmarks/batch_scoring.py) would be paid there for nothing."""
    code = "import sys, include.mlops.batch_scoring; print(sorted(m for m in sys.modules if m.startswith('mlflow')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert done.stdout.strip() == "[]", done.stdout[:500]


def test_scored_rows_are_read_as_the_drift_check_reads_live_traffic(tmp_path):
    config = zoo_config(tmp_path, "penguins", f"penguins_{uuid.uuid4().hex[:8]}")
    rows = next(z for z in ZOO if z.name == "penguins").rows().head(3)
    inputs = rows.assign(id=[7, 8, 9])  # ids as the source holds them; the predictions hold them as text
    scored = pd.DataFrame(
        {
            "id": pd.Series(["9", "7"], dtype="string"),  # row 8 was quarantined
            "prediction": pd.Series(["Gentoo", "Adelie"], dtype="string"),
            "probability_Adelie": [0.1, 0.7],
            "probability_Chinstrap": [0.1, 0.2],
            "probability_Gentoo": [0.8, 0.1],
            "model_version": pd.Series(["1", "1"], dtype="string"),
        }
    )
    traffic = batch_scoring.as_traffic(config, inputs, scored)
    features = [f.name for f in config.dataset.features]
    assert list(traffic.columns) == [*features, "prediction", "probabilities", "record_id", "model_version"]
    assert traffic["record_id"].tolist() == ["9", "7"] and traffic["prediction"].tolist() == ["Gentoo", "Adelie"]
    assert traffic["probabilities"][1] == {"Adelie": 0.7, "Chinstrap": 0.2, "Gentoo": 0.1}
    assert traffic["body_mass_g"].tolist() == [rows["body_mass_g"].iloc[2], rows["body_mass_g"].iloc[0]]
    assert batch_scoring.labels_of(config, inputs)["species"].tolist() == rows["species"].tolist()
    assert batch_scoring.labels_of(config, inputs.drop(columns=["species"])) is None
    assert batch_scoring.labels_of(config, inputs.assign(species=None)) is None
    assert batch_scoring.as_traffic(config, inputs, pd.DataFrame()).empty


def test_a_large_batch_is_checked_on_a_sample_of_its_scored_rows_with_their_inputs(lakefs_repo, penguins):
    rows = penguins.rows.drop(columns=["species"]).head(300).reset_index(drop=True)
    for index in range(3):  # three input parts, and their predictions as score_chunk writes them
        part = rows.iloc[index * 100 : (index + 1) * 100]
        lakefs_repository.write_parquet(lakefs_repo, "main", f"batch_input/m/k/part-{index:05d}.parquet", part)
        scored = pd.DataFrame({"id": part["id"].astype("string"), "prediction": "Adelie"})
        lakefs_repository.write_parquet(lakefs_repo, "main", f"predictions/m/k/part-{index:05d}.parquet", scored)
    lakefs_repository.write_parquet(lakefs_repo, "main", "predictions/m/k/quarantine/part-00000.parquet", rows)
    lakefs_repository.commit(lakefs_repo, "main", "a scored batch")

    def read(at_most: int, seed: int = 7):
        return batch_scoring.read_scored(
            lakefs_repo, "main", "batch_input/m/k/", "predictions/m/k/", "id", at_most, seed
        )

    inputs, scored = read(50)
    assert len(scored) == 50 and scored["id"].is_unique
    # Read a part at a time, the draw is pandas' sample of the whole batch.
    parts = [f"predictions/m/k/part-{index:05d}.parquet" for index in range(3)]
    whole = pd.concat([lakefs_repository.read_parquet(lakefs_repo, "main", p) for p in parts], ignore_index=True)
    assert scored["id"].tolist() == whole.sample(n=50, random_state=7).sort_index()["id"].tolist()
    assert sorted(inputs["id"].astype("string")) == sorted(scored["id"])  # each drawn row's input, and no other
    assert read(50)[1]["id"].tolist() == scored["id"].tolist()  # the same rows for the same batch
    inputs, scored = read(1000)
    assert len(scored) == len(inputs) == 300  # all of a batch under the bound; the quarantine is not read
