"""Branches, tags and ref expressions."""

from __future__ import annotations

import lakefs
import lakefs_sdk
import pytest

from tests.lakefs_server.support import message_of

pytestmark = pytest.mark.contract


def _commit(branch: lakefs.Branch, path: str, content: bytes, message: str) -> str:
    branch.object(path).upload(content)
    return branch.commit(message).get_commit().id


def test_create_branch_answers_201_with_the_commit_id_as_text(lakefs_repo, lakefs_server):
    main = lakefs_repo.branch("main")
    head = _commit(main, "a.txt", b"a", "first")
    branches = lakefs_server.client().sdk_client.branches_api
    created = branches.create_branch_with_http_info(
        lakefs_repo.id, lakefs_sdk.BranchCreation(name="feature", source="main")
    )
    assert created.status_code == 201
    assert created.data == head
    assert branches.get_branch(lakefs_repo.id, "feature") == lakefs_sdk.Ref(id="feature", commit_id=head)


def test_a_branch_starts_from_the_committed_state_of_its_source(lakefs_repo):
    main = lakefs_repo.branch("main")
    _commit(main, "committed.txt", b"c", "first")
    main.object("staged.txt").upload(b"s")
    feature = lakefs_repo.branch("feature").create(main)
    assert [o.path for o in feature.objects()] == ["committed.txt"]
    assert [c.path for c in main.uncommitted()] == ["staged.txt"]


def test_branch_sources_may_be_tags_commits_and_ref_expressions(lakefs_repo):
    main = lakefs_repo.branch("main")
    first = _commit(main, "a.txt", b"1", "one")
    second = _commit(main, "a.txt", b"2", "two")
    lakefs_repo.tag("v1").create(first)
    assert lakefs_repo.branch("from-tag").create("v1").head.id == first
    assert lakefs_repo.branch("from-commit").create(second).head.id == second
    assert lakefs_repo.branch("from-prefix").create(second[:12]).head.id == second
    assert lakefs_repo.branch("from-tilde").create("main~1").head.id == first
    assert lakefs_repo.branch("from-caret").create("main^").head.id == first


def test_existing_branch_answers_409_and_exist_ok_accepts_it(lakefs_repo):
    with pytest.raises(lakefs.exceptions.ConflictException):
        lakefs_repo.branch("main").create("main")
    assert lakefs_repo.branch("main").create("main", exist_ok=True).id == "main"


@pytest.mark.parametrize("name", ["bad name", "-dash-first", "has/slash", "dot.ted", "ümlaut"])
def test_refused_branch_names_answer_400_naming_the_problem(lakefs_repo, name):
    with pytest.raises(lakefs.exceptions.BadRequestException) as refused:
        lakefs_repo.branch(name).create("main")
    assert "branch" in message_of(refused.value)


def test_unknown_branch_source_and_ref_answer_404(lakefs_repo):
    with pytest.raises(lakefs.exceptions.NotFoundException):
        lakefs_repo.branch("new").create("no-such-ref")
    with pytest.raises(lakefs.exceptions.NotFoundException):
        lakefs_repo.branch("no-such-branch").head  # noqa: B018
    with pytest.raises(lakefs.exceptions.NotFoundException):
        lakefs_repo.branch("no-such-branch").delete()
    with pytest.raises(lakefs.exceptions.NotFoundException):
        list(lakefs_repo.ref("no-such-ref").log())


def test_branches_are_listed_by_pages_with_prefix_and_after(lakefs_repo, lakefs_server):
    for name in ["b-1", "b-2", "b-3", "other"]:
        lakefs_repo.branch(name).create("main")
    api = lakefs_server.client().sdk_client.branches_api
    page = api.list_branches(lakefs_repo.id, prefix="b-", amount=2)
    assert [r.id for r in page.results] == ["b-1", "b-2"]
    assert page.pagination.has_more and page.pagination.next_offset == "b-2"
    page = api.list_branches(lakefs_repo.id, prefix="b-", amount=2, after="b-2")
    assert [r.id for r in page.results] == ["b-3"] and not page.pagination.has_more
    assert [b.id for b in lakefs_repo.branches()] == ["b-1", "b-2", "b-3", "main", "other"]
    assert [b.id for b in lakefs_repo.branches(after="main")] == ["other"]


def test_hidden_branches_are_listed_only_when_asked(lakefs_repo, lakefs_server):
    api = lakefs_server.client().sdk_client.branches_api
    api.create_branch(lakefs_repo.id, lakefs_sdk.BranchCreation(name="tx-hidden", source="main", hidden=True))
    assert [b.id for b in lakefs_repo.branches()] == ["main"]
    listed = api.list_branches(lakefs_repo.id, show_hidden=True).results
    assert [r.id for r in listed] == ["main", "tx-hidden"]


def test_deleted_branch_is_gone_with_its_uncommitted_changes(lakefs_repo):
    feature = lakefs_repo.branch("feature").create("main")
    feature.object("staged.txt").upload(b"x")
    feature.delete()
    assert [b.id for b in lakefs_repo.branches()] == ["main"]
    recreated = lakefs_repo.branch("feature").create("main")
    assert list(recreated.uncommitted()) == []


def test_tags_create_list_get_delete(lakefs_repo, lakefs_server):
    main = lakefs_repo.branch("main")
    first = _commit(main, "a.txt", b"1", "one")
    second = _commit(main, "a.txt", b"2", "two")
    tags = lakefs_server.client().sdk_client.tags_api
    created = tags.create_tag_with_http_info(lakefs_repo.id, lakefs_sdk.TagCreation(id="v1", ref="main~1"))
    assert created.status_code == 201 and created.data == lakefs_sdk.Ref(id="v1", commit_id=first)
    lakefs_repo.tag("v2").create(main)
    lakefs_repo.tag("release/2024").create(second)
    assert tags.get_tag(lakefs_repo.id, "v2").commit_id == second
    assert tags.get_tag(lakefs_repo.id, "release/2024").commit_id == second
    page = tags.list_tags(lakefs_repo.id, amount=2)
    assert [t.id for t in page.results] == ["release/2024", "v1"] and page.pagination.has_more
    assert [t.id for t in lakefs_repo.tags(prefix="v")] == ["v1", "v2"]
    with pytest.raises(lakefs.exceptions.ConflictException):
        lakefs_repo.tag("v1").create(main)
    assert lakefs_repo.tag("v1").create(main, exist_ok=True).get_commit().id == first
    with pytest.raises(lakefs.exceptions.ConflictException):
        lakefs_repo.tag("main").create(main)  # a branch has that name
    lakefs_repo.tag("v1").delete()
    with pytest.raises(lakefs.exceptions.NotFoundException):
        lakefs_repo.tag("v1").delete()
    with pytest.raises(lakefs_sdk.ApiException) as missing:
        tags.get_tag(lakefs_repo.id, "v1")
    assert missing.value.status == 404
    assert lakefs_repo.ref("v2").object("a.txt").reader().read() == b"2"


@pytest.mark.parametrize("name", ["bad tag", "ends.", "two..dots", "x.lock", "a^b", "@", "colon:"])
def test_refused_tag_names_answer_400(lakefs_repo, name):
    with pytest.raises(lakefs.exceptions.BadRequestException) as refused:
        lakefs_repo.tag(name).create("main")
    assert "tag" in message_of(refused.value)


def test_ref_expressions(lakefs_repo):
    main = lakefs_repo.branch("main")
    first = _commit(main, "a.txt", b"1", "one")
    second = _commit(main, "a.txt", b"2", "two")
    feature = lakefs_repo.branch("feature").create(main)
    third = _commit(feature, "b.txt", b"b", "three")
    merge = feature.merge_into(main)
    main.object("a.txt").upload(b"uncommitted")

    def read(ref: str) -> bytes:
        return lakefs_repo.ref(ref).object("a.txt").reader().read()

    assert read("main") == b"uncommitted"
    assert read("main@") == b"2"
    assert read("main~2") == b"1"
    assert read(second) == read(second[:10]) == b"2"
    assert lakefs_repo.ref("main^1").get_commit().id == second
    assert lakefs_repo.ref("main^2").get_commit().id == third
    assert lakefs_repo.ref("main~1~1").get_commit().id == first
    assert lakefs_repo.ref(f"{merge}^").get_commit().id == second
    with pytest.raises(lakefs.exceptions.NotFoundException):
        lakefs_repo.ref("main~10").get_commit()
    with pytest.raises(lakefs.exceptions.BadRequestException):
        lakefs_repo.ref(f"{first}@").get_commit()  # `@` only follows a branch
