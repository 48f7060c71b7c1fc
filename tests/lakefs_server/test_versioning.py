"""Commits, the commit log, diffs between refs, merges, reverts, cherry-picks and hard resets."""

from __future__ import annotations

import datetime as dt

import httpx
import lakefs
import lakefs_sdk
import pytest

from tests.lakefs_server.support import message_of

pytestmark = pytest.mark.contract


def _commit(branch: lakefs.Branch, files: dict[str, bytes], message: str) -> str:
    for path, content in files.items():
        branch.object(path).upload(content)
    return branch.commit(message).get_commit().id


def _read(ref: lakefs.Reference, path: str) -> bytes:
    return ref.object(path).reader().read()


def test_commit_with_metadata(lakefs_repo, lakefs_server):
    main = lakefs_repo.branch("main")
    main.object("a.txt").upload(b"a")
    before = main.head.id
    created = lakefs_server.client().sdk_client.commits_api.commit_with_http_info(
        lakefs_repo.id, "main", lakefs_sdk.CommitCreation(message="add a", metadata={"dag_id": "ml_training"})
    )
    assert created.status_code == 201
    commit = created.data
    assert len(commit.id) == 64 and commit.id == commit.id.lower()
    assert commit.parents == [before] and commit.message == "add a"
    assert commit.metadata == {"dag_id": "ml_training"} and commit.committer
    assert isinstance(commit.creation_date, int)
    assert lakefs_repo.commit(commit.id).get_commit().id == commit.id
    assert lakefs_repo.commit(commit.id[:12]).get_commit().id == commit.id
    assert main.head.id == commit.id and list(main.uncommitted()) == []


def test_an_empty_commit_is_refused_unless_allowed(lakefs_repo):
    main = lakefs_repo.branch("main")
    with pytest.raises(lakefs.exceptions.BadRequestException) as refused:
        main.commit("nothing")
    assert "no changes" in message_of(refused.value)
    empty = main.commit("nothing, on purpose", allow_empty=True).get_commit()
    assert empty.message == "nothing, on purpose"


def test_commit_date_override(lakefs_repo, lakefs_server):
    lakefs_repo.branch("main").object("a").upload(b"a")
    commit = lakefs_server.client().sdk_client.commits_api.commit(
        lakefs_repo.id, "main", lakefs_sdk.CommitCreation(message="dated", date=1_700_000_000)
    )
    assert commit.creation_date == 1_700_000_000


def test_unknown_commit_answers_404(lakefs_repo):
    with pytest.raises(lakefs.exceptions.NotFoundException):
        lakefs_repo.commit("0" * 64).get_commit()


def test_log_pages_filters_and_first_parent(lakefs_repo, lakefs_server):
    main = lakefs_repo.branch("main")
    c1 = _commit(main, {"data/a.csv": b"1"}, "c1")
    c2 = _commit(main, {"other.txt": b"2"}, "c2")
    feature = lakefs_repo.branch("feature").create(main)
    c3 = _commit(feature, {"data/b.csv": b"3"}, "c3")
    c4 = _commit(main, {"data/a.csv": b"4"}, "c4")
    merge = feature.merge_into(main, message="merge feature")

    assert [c.message for c in main.log()] == ["merge feature", "c4", "c3", "c2", "c1", "Repository created"]
    assert [c.id for c in main.log(first_parent=True)][:4] == [merge, c4, c2, c1]
    refs = lakefs_server.client().sdk_client.refs_api
    page = refs.log_commits(lakefs_repo.id, "main", amount=2)
    assert [c.id for c in page.results] == [merge, c4]
    assert page.pagination.has_more and page.pagination.next_offset == c4
    page = refs.log_commits(lakefs_repo.id, "main", amount=2, after=c4)
    assert [c.id for c in page.results] == [c3, c2]
    limited = refs.log_commits(lakefs_repo.id, "main", amount=2, limit=True)
    assert len(limited.results) == 2 and not limited.pagination.has_more
    assert [c.id for c in refs.log_commits(lakefs_repo.id, "main", objects=["data/a.csv"]).results] == [c4, c1]
    assert [c.id for c in refs.log_commits(lakefs_repo.id, "main", prefixes=["data/"]).results] == [merge, c4, c3, c1]
    assert [c.id for c in refs.log_commits(lakefs_repo.id, "main", stop_at=c2).results] == [merge, c4, c3, c2]


def test_log_since(lakefs_repo, lakefs_server):
    lakefs_repo.branch("main").object("a").upload(b"a")
    lakefs_repo.branch("main").commit("recent")
    # Raw HTTP: lakefs_sdk writes date-times as "...+0000", which is not the RFC 3339 the document asks for.
    url = f"{lakefs_server.url}/api/v1/repositories/{lakefs_repo.id}/refs/main/commits"
    auth = (lakefs_server.access_key_id, lakefs_server.secret_access_key)
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert [c["message"] for c in httpx.get(url, params={"since": past}, auth=auth).json()["results"]] == [
        "recent",
        "Repository created",
    ]
    assert httpx.get(url, params={"since": future}, auth=auth).json()["results"] == []


def test_two_dot_and_three_dot_diffs(lakefs_repo, lakefs_server):
    main = lakefs_repo.branch("main")
    _commit(main, {"shared.txt": b"0", "gone.txt": b"0"}, "base")
    feature = lakefs_repo.branch("feature").create(main)
    _commit(main, {"main-only.txt": b"m"}, "on main")
    feature.object("gone.txt").delete()
    _commit(feature, {"shared.txt": b"1", "feature/x.txt": b"x", "feature/y.txt": b"y"}, "on feature")

    three_dot = {(c.path, c.type) for c in main.diff(feature)}
    assert three_dot == {
        ("shared.txt", "changed"),
        ("gone.txt", "removed"),
        ("feature/x.txt", "added"),
        ("feature/y.txt", "added"),
    }
    two_dot = {(c.path, c.type) for c in main.diff(feature, type="two_dot")}
    assert two_dot == three_dot | {("main-only.txt", "removed")}

    refs = lakefs_server.client().sdk_client.refs_api
    page = refs.diff_refs(lakefs_repo.id, "main", "feature", amount=2)
    assert [d.path for d in page.results] == ["feature/x.txt", "feature/y.txt"] and page.pagination.has_more
    rest = refs.diff_refs(lakefs_repo.id, "main", "feature", amount=2, after=page.pagination.next_offset)
    assert [d.path for d in rest.results] == ["gone.txt", "shared.txt"] and not rest.pagination.has_more
    folded = refs.diff_refs(lakefs_repo.id, "main", "feature", delimiter="/")
    assert [(d.path, d.path_type) for d in folded.results][0] == ("feature/", "common_prefix")
    assert [d.path for d in refs.diff_refs(lakefs_repo.id, "main", "feature", prefix="feature/").results] == [
        "feature/x.txt",
        "feature/y.txt",
    ]


def test_merge_is_a_three_way_merge_from_the_merge_base(lakefs_repo, lakefs_server):
    main = lakefs_repo.branch("main")
    base = _commit(main, {"a.txt": b"a0", "b.txt": b"b0", "c.txt": b"c0"}, "base")
    feature = lakefs_repo.branch("feature").create(main)
    _commit(main, {"a.txt": b"a-main"}, "main changes a")
    feature.object("c.txt").delete()
    _commit(feature, {"b.txt": b"b-feature", "d.txt": b"d"}, "feature changes b, adds d, removes c")

    merge_base = lakefs_server.client().sdk_client.refs_api.find_merge_base(lakefs_repo.id, "feature", "main")
    assert merge_base.base_commit_id == base
    assert merge_base.source_commit_id == feature.head.id and merge_base.destination_commit_id == main.head.id

    main_head = main.head.id
    merged = feature.merge_into(main, message="merge", metadata={"run_id": "r1"})
    commit = lakefs_repo.commit(merged).get_commit()
    assert commit.parents == [main_head, feature.head.id]
    assert commit.metadata["run_id"] == "r1"
    assert {o.path: _read(main, o.path) for o in main.objects()} == {
        "a.txt": b"a-main",
        "b.txt": b"b-feature",
        "d.txt": b"d",
    }


def test_merge_conflict_answers_409_and_strategies_resolve_it(lakefs_repo):
    main = lakefs_repo.branch("main")
    _commit(main, {"x.txt": b"base"}, "base")
    feature = lakefs_repo.branch("feature").create(main)
    _commit(main, {"x.txt": b"from main"}, "main")
    _commit(feature, {"x.txt": b"from feature"}, "feature")
    head = main.head.id
    with pytest.raises(lakefs.exceptions.ConflictException) as conflict:
        feature.merge_into(main)
    assert conflict.value.status_code == 409
    assert main.head.id == head

    dest_wins = lakefs_repo.branch("dest").create(main)
    feature.merge_into(dest_wins, strategy="dest-wins")
    assert _read(dest_wins, "x.txt") == b"from main"
    source_wins = lakefs_repo.branch("source").create(main)
    feature.merge_into(source_wins, strategy="source-wins")
    assert _read(source_wins, "x.txt") == b"from feature"
    with pytest.raises(lakefs.exceptions.BadRequestException):
        feature.merge_into(main, strategy="ours")


def test_nothing_to_merge_answers_400_unless_allowed(lakefs_repo):
    main = lakefs_repo.branch("main")
    _commit(main, {"a": b"a"}, "base")
    feature = lakefs_repo.branch("feature").create(main)
    with pytest.raises(lakefs.exceptions.BadRequestException) as refused:
        feature.merge_into(main)
    assert "no changes" in message_of(refused.value)
    merged = feature.merge_into(main, allow_empty=True)
    assert len(lakefs_repo.commit(merged).get_commit().parents) == 2


def test_squash_merge_has_one_parent(lakefs_repo):
    main = lakefs_repo.branch("main")
    feature = lakefs_repo.branch("feature").create(main)
    _commit(feature, {"f1": b"1"}, "one")
    _commit(feature, {"f2": b"2"}, "two")
    head = main.head.id
    merged = feature.merge_into(main, squash_merge=True, message="squashed")
    assert lakefs_repo.commit(merged).get_commit().parents == [head]
    assert sorted(o.path for o in main.objects()) == ["f1", "f2"]


def test_merge_keeps_the_destinations_uncommitted_changes(lakefs_repo):
    main = lakefs_repo.branch("main")
    feature = lakefs_repo.branch("feature").create(main)
    _commit(feature, {"from-feature": b"f"}, "feature")
    main.object("staged-on-main").upload(b"s")
    feature.merge_into(main)
    assert [c.path for c in main.uncommitted()] == ["staged-on-main"]
    assert _read(main, "from-feature") == b"f"


def test_transaction_commits_and_merges_back(lakefs_repo):
    main = lakefs_repo.branch("main")
    with main.transact(commit_message="in a transaction") as tx:
        tx.object("tx.txt").upload(b"t")
    assert _read(main, "tx.txt") == b"t"
    assert [b.id for b in lakefs_repo.branches()] == ["main"]


def test_revert_cherry_pick_and_hard_reset(lakefs_repo, lakefs_server):
    main = lakefs_repo.branch("main")
    first = _commit(main, {"a": b"1"}, "one")
    second = _commit(main, {"b": b"2"}, "two")
    reverted = main.revert(second)
    assert reverted.parents == [second]
    assert sorted(o.path for o in main.objects()) == ["a"]

    other = lakefs_repo.branch("other").create(first)
    picked = other.cherry_pick(second)
    assert picked.metadata["cherry-pick-origin"] == second
    assert sorted(o.path for o in other.objects()) == ["a", "b"]

    branches = lakefs_server.client().sdk_client.experimental_api
    other.object("dirty").upload(b"d")
    with pytest.raises(lakefs_sdk.ApiException) as dirty:
        branches.hard_reset_branch(lakefs_repo.id, "other", first)
    assert dirty.value.status == 400
    other.reset_changes()
    branches.hard_reset_branch(lakefs_repo.id, "other", first)
    assert other.head.id == first


def test_commits_created_in_the_same_second_keep_their_order(lakefs_repo):
    main = lakefs_repo.branch("main")
    ids = [_commit(main, {f"f{i}": b"x"}, f"c{i}") for i in range(4)]
    # Creation dates have one-second resolution: the order must not depend on them alone.
    assert [c.id for c in main.log(max_amount=4)] == ids[::-1]
