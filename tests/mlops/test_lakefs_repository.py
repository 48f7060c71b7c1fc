"""include/mlops/lakefs_repository.py against a lakeFS server, through the real `lakefs` client."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from devstack.processes import free_port
from include.mlops import lakefs_repository

pytestmark = pytest.mark.usefixtures("lakefs_server")


def _frame(rows: int = 5) -> pd.DataFrame:
    return pd.DataFrame({"id": range(rows), "amount": [1.5 * i for i in range(rows)], "country": ["DE"] * rows})


def test_connect_names_wrong_credentials(lakefs_server):
    with pytest.raises(lakefs_repository.LakeFSUnavailable, match="refused the credentials of access key 'AKIAWRONG'"):
        lakefs_repository.connect(lakefs_server.url, "AKIAWRONG", "nope")


def test_connect_names_an_unreachable_server():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(lakefs_repository.LakeFSUnavailable, match=f"lakeFS at {url} cannot be reached"):
        lakefs_repository.connect(url, "AKIA", "secret")


def test_ensure_repository_is_idempotent(lakefs_server, lakefs_repo):
    client = lakefs_server.client()
    again = lakefs_repository.ensure_repository(client, lakefs_repo.id, "local://ignored-when-it-exists")
    assert again.id == lakefs_repo.id
    assert lakefs_repository.list_branches(again) == ["main"]


def test_create_branch_is_idempotent_and_keeps_staged_work(lakefs_repo):
    head = lakefs_repository.create_branch(lakefs_repo, "run-1", "main")
    assert head == lakefs_repository.head_commit(lakefs_repo, "main")
    lakefs_repository.write_bytes(lakefs_repo, "run-1", "raw/a.txt", b"first attempt")
    assert lakefs_repository.create_branch(lakefs_repo, "run-1", "main") == head
    assert [c.path for c in lakefs_repository.uncommitted(lakefs_repo, "run-1")] == ["raw/a.txt"]


def test_create_branch_from_a_missing_ref_names_it(lakefs_repo):
    with pytest.raises(lakefs_repository.RefNotFound, match="'nope'"):
        lakefs_repository.create_branch(lakefs_repo, "run-2", "nope")


def test_parquet_round_trip_and_same_frame_same_bytes(lakefs_repo):
    lakefs_repository.create_branch(lakefs_repo, "run-3", "main")
    lakefs_repository.write_parquet(lakefs_repo, "run-3", "raw/a.parquet", _frame(), {"rows": "5"})
    lakefs_repository.write_parquet(lakefs_repo, "run-3", "raw/b.parquet", _frame())
    pd.testing.assert_frame_equal(lakefs_repository.read_parquet(lakefs_repo, "run-3", "raw/a.parquet"), _frame())
    checksums = {o.path: o.checksum for o in lakefs_repository.list_objects(lakefs_repo, "run-3", "raw/")}
    assert checksums["raw/a.parquet"] == checksums["raw/b.parquet"]


def test_upload_and_download_a_file_in_chunks(lakefs_repo, tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(bytes(range(256)) * 80_000)  # 20 MB, more than two upload chunks
    lakefs_repository.create_branch(lakefs_repo, "run-4", "main")
    lakefs_repository.upload_file(lakefs_repo, "run-4", "datasets/big.bin", source)
    target = lakefs_repository.download_file(lakefs_repo, "run-4", "datasets/big.bin", tmp_path / "out" / "big.bin")
    assert target.read_bytes() == source.read_bytes()


def test_commit_carries_metadata_and_an_empty_commit_is_reported(lakefs_repo):
    lakefs_repository.create_branch(lakefs_repo, "run-5", "main")
    lakefs_repository.write_bytes(lakefs_repo, "run-5", "raw/x.csv", b"a,b\n1,2\n")
    commit = lakefs_repository.commit(lakefs_repo, "run-5", "collect", {"rows": 1, "airflow_run_id": "manual__1"})
    assert len(commit.id) == 64
    assert commit.metadata == {"rows": "1", "airflow_run_id": "manual__1"}
    assert lakefs_repository.get_commit(lakefs_repo, "run-5") == commit
    with pytest.raises(lakefs_repository.NothingToCommit, match="no changes"):
        lakefs_repository.commit(lakefs_repo, "run-5", "again")


def test_read_at_a_commit_id_after_the_branch_moved_on(lakefs_repo):
    lakefs_repository.create_branch(lakefs_repo, "run-6", "main")
    lakefs_repository.write_bytes(lakefs_repo, "run-6", "model/input.txt", b"v1")
    first = lakefs_repository.commit(lakefs_repo, "run-6", "v1").id
    lakefs_repository.write_bytes(lakefs_repo, "run-6", "model/input.txt", b"v2")
    lakefs_repository.commit(lakefs_repo, "run-6", "v2")
    assert lakefs_repository.read_bytes(lakefs_repo, first, "model/input.txt") == b"v1"
    assert lakefs_repository.read_bytes(lakefs_repo, "run-6", "model/input.txt") == b"v2"
    assert [c.path for c in lakefs_repository.diff(lakefs_repo, first, "run-6")] == ["model/input.txt"]


def test_merge_and_nothing_left_to_merge(lakefs_repo):
    lakefs_repository.create_branch(lakefs_repo, "run-7", "main")
    lakefs_repository.write_bytes(lakefs_repo, "run-7", "raw/day.csv", b"1")
    lakefs_repository.commit(lakefs_repo, "run-7", "collect")
    merged = lakefs_repository.merge(lakefs_repo, "run-7", "main", "validated", {"rows": "1"})
    assert lakefs_repository.head_commit(lakefs_repo, "main") == merged
    assert lakefs_repository.get_commit(lakefs_repo, merged).metadata["rows"] == "1"
    assert lakefs_repository.read_bytes(lakefs_repo, "main", "raw/day.csv") == b"1"
    with pytest.raises(lakefs_repository.NothingToCommit):
        lakefs_repository.merge(lakefs_repo, "run-7", "main")


def test_a_merge_conflict_names_the_conflicting_paths(lakefs_repo):
    lakefs_repository.create_branch(lakefs_repo, "run-8", "main")
    for branch, content in (("run-8", b"ours"), ("main", b"theirs")):
        lakefs_repository.write_bytes(lakefs_repo, branch, "raw/same.csv", content)
        lakefs_repository.write_bytes(lakefs_repo, branch, f"raw/only-{branch}.csv", content)
        lakefs_repository.commit(lakefs_repo, branch, f"write on {branch}")
    with pytest.raises(lakefs_repository.MergeConflict, match="conflicts on 1 path") as conflict:
        lakefs_repository.merge(lakefs_repo, "run-8", "main")
    assert conflict.value.paths == ["raw/same.csv"]
    assert lakefs_repository.read_bytes(lakefs_repo, "main", "raw/same.csv") == b"theirs"

    lakefs_repository.merge(lakefs_repo, "run-8", "main", strategy="source-wins")
    assert lakefs_repository.read_bytes(lakefs_repo, "main", "raw/same.csv") == b"ours"


def test_tag_is_idempotent_and_refuses_to_move(lakefs_repo):
    first = lakefs_repository.head_commit(lakefs_repo, "main")
    assert lakefs_repository.tag(lakefs_repo, "model-v1", "main") == first
    assert lakefs_repository.tag(lakefs_repo, "model-v1", first) == first
    lakefs_repository.write_bytes(lakefs_repo, "main", "x", b"x")
    lakefs_repository.commit(lakefs_repo, "main", "moves main")
    with pytest.raises(lakefs_repository.VersioningError, match="exists already and points to"):
        lakefs_repository.tag(lakefs_repo, "model-v1", "main")
    assert lakefs_repository.head_commit(lakefs_repo, "model-v1") == first


def test_delete_branch(lakefs_repo):
    lakefs_repository.create_branch(lakefs_repo, "run-9", "main")
    assert lakefs_repository.delete_branch(lakefs_repo, "run-9") is True
    assert lakefs_repository.branch_exists(lakefs_repo, "run-9") is False
    assert lakefs_repository.delete_branch(lakefs_repo, "run-9") is False
    with pytest.raises(lakefs_repository.RefNotFound):
        lakefs_repository.delete_branch(lakefs_repo, "run-9", missing_ok=False)


def test_expired_branches_never_include_the_default_branch(lakefs_repo):
    lakefs_repository.create_branch(lakefs_repo, "run-old", "main")
    lakefs_repository.create_branch(lakefs_repo, "keep-me", "main")
    in_a_month = time.time() + 30 * 86400
    assert lakefs_repository.expired_branches(lakefs_repo, "run-", 14, in_a_month) == ["run-old"]
    assert lakefs_repository.expired_branches(lakefs_repo, "", 14, in_a_month) == ["keep-me", "run-old"]
    assert lakefs_repository.expired_branches(lakefs_repo, "run-", 14, time.time()) == []


def test_expired_run_branches_follow_each_models_retention(lakefs_repo):
    for name in ("run-fraud-1", "run-fraud_v2-1", "run-gone-1", "keep-me"):
        lakefs_repository.create_branch(lakefs_repo, name, "main")
    retention = {"run-fraud-": 7, "run-fraud_v2-": 30}
    in_ten_days, in_forty_days = time.time() + 10 * 86400, time.time() + 40 * 86400
    # run-fraud_v2-1 is not a run of model "fraud": the prefixes end with "-", which model names do not hold.
    assert lakefs_repository.expired_run_branches(lakefs_repo, retention, 20, in_ten_days) == ["run-fraud-1"]
    assert lakefs_repository.expired_run_branches(lakefs_repo, retention, 5, in_ten_days) == [
        "run-fraud-1",
        "run-gone-1",
    ]
    assert lakefs_repository.expired_run_branches(lakefs_repo, retention, 20, in_forty_days) == [
        "run-fraud-1",
        "run-fraud_v2-1",
        "run-gone-1",
    ]


def test_commit_ui_url():
    assert (
        lakefs_repository.commit_ui_url("http://lakefs:8000/", "my repo", "abc")
        == "http://lakefs:8000/repositories/my%20repo/commits/abc"
    )
