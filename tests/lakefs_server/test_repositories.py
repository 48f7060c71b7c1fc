"""Repositories: creation like lakeFS (initial commit, refused names), listing by pages, settings, protection."""

from __future__ import annotations

import uuid

import httpx
import lakefs
import lakefs_sdk
import pytest

from tests.lakefs_server.support import message_of

pytestmark = pytest.mark.contract


def _namespace(lakefs_server, name: str) -> str:
    return f"local://{name}"


def test_a_new_repository_has_its_default_branch_at_an_initial_commit(lakefs_server):
    name = f"test-{uuid.uuid4().hex[:12]}"
    repo = lakefs.Repository(name, client=lakefs_server.client()).create(
        _namespace(lakefs_server, name), default_branch="trunk"
    )
    try:
        assert repo.properties.default_branch == "trunk"
        assert isinstance(repo.properties.creation_date, int)
        commits = list(repo.branch("trunk").log())
        assert [c.message for c in commits] == ["Repository created"]
        assert len(commits[0].id) == 64 and int(commits[0].id, 16) >= 0 and commits[0].parents == []
        fetched = lakefs_server.client().sdk_client.repositories_api.get_repository(name)
        assert fetched.id == name and fetched.storage_namespace == _namespace(lakefs_server, name)
        with pytest.raises(lakefs.exceptions.ConflictException):
            lakefs.Repository(name, client=lakefs_server.client()).create(_namespace(lakefs_server, name))
        assert lakefs.Repository(name, client=lakefs_server.client()).create("local://ignored", exist_ok=True)
    finally:
        repo.delete()
    with pytest.raises(lakefs_sdk.ApiException) as gone:
        lakefs_server.client().sdk_client.repositories_api.get_repository(name)
    assert gone.value.status == 404


@pytest.mark.parametrize(
    "name",
    ["ab", "Upper-case", "under_score", "-starts-with-dash", "x" * 64, "with.dot"],
)
def test_refused_repository_names_answer_400_naming_the_problem(lakefs_server, name):
    # The SDK's model checks the name pattern itself, so only raw HTTP can send these.
    answer = _create_raw(lakefs_server, {"name": name, "storage_namespace": f"local://{uuid.uuid4().hex}"})
    assert answer.status_code == 400
    assert "name" in answer.json()["message"]
    # A name in the URL is refused the same way.
    with pytest.raises(lakefs.exceptions.BadRequestException) as refused:
        lakefs.Repository(name, client=lakefs_server.client()).properties  # noqa: B018
    assert "repository" in message_of(refused.value)


def _create_raw(lakefs_server, body: dict) -> httpx.Response:
    auth = (lakefs_server.access_key_id, lakefs_server.secret_access_key)
    return httpx.post(f"{lakefs_server.url}/api/v1/repositories", json=body, auth=auth)


def test_a_bare_repository_has_no_commit_and_no_branch(lakefs_server):
    name = f"test-{uuid.uuid4().hex[:12]}"
    repositories = lakefs_server.client().sdk_client.repositories_api
    repositories.create_repository(
        lakefs_sdk.RepositoryCreation(name=name, storage_namespace=f"local://{name}"), bare=True
    )
    try:
        assert list(lakefs.Repository(name, client=lakefs_server.client()).branches()) == []
    finally:
        repositories.delete_repository(name)


def test_refused_storage_namespace_and_default_branch(lakefs_server):
    name = f"test-{uuid.uuid4().hex[:12]}"
    answer = _create_raw(lakefs_server, {"name": name, "storage_namespace": "ftp://nowhere"})
    assert answer.status_code == 400 and "storage_namespace" in answer.json()["message"]
    repositories = lakefs_server.client().sdk_client.repositories_api
    with pytest.raises(lakefs_sdk.ApiException) as refused:
        repositories.create_repository(
            lakefs_sdk.RepositoryCreation(name=name, storage_namespace=f"local://{name}", default_branch="bad name")
        )
    assert refused.value.status == 400 and "branch" in message_of(refused.value)


def test_unknown_repository_answers_404(lakefs_server):
    with pytest.raises(lakefs.exceptions.NotFoundException) as missing:
        lakefs.Repository("no-such-repository", client=lakefs_server.client()).properties  # noqa: B018
    assert "not found" in message_of(missing.value)
    with pytest.raises(lakefs.exceptions.NotFoundException):
        list(lakefs.Repository("no-such-repository", client=lakefs_server.client()).branches())


def test_repositories_are_listed_by_pages(lakefs_server):
    prefix = f"page-{uuid.uuid4().hex[:8]}"
    client = lakefs_server.client()
    names = [f"{prefix}-{i}" for i in range(5)]
    repos = [lakefs.Repository(n, client=client).create(f"local://{n}") for n in names]
    try:
        api = client.sdk_client.repositories_api
        first = api.list_repositories(prefix=prefix, amount=2)
        assert [r.id for r in first.results] == names[:2]
        assert first.pagination.has_more and first.pagination.next_offset == names[1]
        assert first.pagination.results == 2 and first.pagination.max_per_page >= 2
        rest = api.list_repositories(prefix=prefix, amount=2, after=first.pagination.next_offset)
        assert [r.id for r in rest.results] == names[2:4]
        last = api.list_repositories(prefix=prefix, amount=2, after=rest.pagination.next_offset)
        assert [r.id for r in last.results] == names[4:] and not last.pagination.has_more
        assert [r.id for r in lakefs.repositories(client=client, prefix=prefix)] == names
    finally:
        for repo in repos:
            repo.delete()


def test_repository_metadata_round_trip(lakefs_repo, lakefs_server):
    assert lakefs_repo.metadata == {}
    internal = lakefs_server.client().sdk_client.internal_api
    internal.set_repository_metadata(
        lakefs_repo.id, lakefs_sdk.RepositoryMetadataSet(metadata={"team": "ml", "x": "1"})
    )
    assert lakefs_repo.metadata == {"team": "ml", "x": "1"}
    internal.delete_repository_metadata(lakefs_repo.id, lakefs_sdk.RepositoryMetadataKeys(keys=["x"]))
    assert lakefs_repo.metadata == {"team": "ml"}


def test_deleting_the_default_branch_answers_403(lakefs_repo):
    with pytest.raises(lakefs.exceptions.ForbiddenException) as refused:
        lakefs_repo.branch("main").delete()
    assert "default branch" in message_of(refused.value)
    assert lakefs_repo.branch("main").head.id


def test_branch_protection_rules_with_etag(lakefs_repo, lakefs_server):
    api = lakefs_server.client().sdk_client.repositories_api
    response = api.get_branch_protection_rules_with_http_info(lakefs_repo.id)
    assert response.data == []
    etag = response.headers["ETag"]
    api.set_branch_protection_rules(
        lakefs_repo.id,
        [lakefs_sdk.BranchProtectionRule(pattern="main"), lakefs_sdk.BranchProtectionRule(pattern="rel-*")],
        if_match=etag,
    )
    assert sorted(r.pattern for r in api.get_branch_protection_rules(lakefs_repo.id)) == ["main", "rel-*"]
    with pytest.raises(lakefs_sdk.ApiException) as stale:
        api.set_branch_protection_rules(lakefs_repo.id, [], if_match=etag)
    assert stale.value.status == 412
    api.set_branch_protection_rules(lakefs_repo.id, [])
    assert api.get_branch_protection_rules(lakefs_repo.id) == []


@pytest.mark.filterwarnings("ignore:.*branch_protection is deprecated:DeprecationWarning")
def test_legacy_branch_protection_endpoints(lakefs_repo, lakefs_server):
    internal = lakefs_server.client().sdk_client.internal_api
    internal.create_branch_protection_rule_preflight(lakefs_repo.id)
    internal.internal_create_branch_protection_rule(lakefs_repo.id, lakefs_sdk.BranchProtectionRule(pattern="main"))
    assert [r.pattern for r in internal.internal_get_branch_protection_rules(lakefs_repo.id)] == ["main"]
    internal.internal_delete_branch_protection_rule(
        lakefs_repo.id, lakefs_sdk.InternalDeleteBranchProtectionRuleRequest(pattern="main")
    )
    assert internal.internal_get_branch_protection_rules(lakefs_repo.id) == []


def test_a_protected_branch_refuses_writes_and_commits_but_accepts_merges(lakefs_repo, lakefs_server):
    main = lakefs_repo.branch("main")
    main.object("before.txt").upload(b"staged before protection")
    feature = lakefs_repo.branch("feature").create(main)
    feature.object("data.csv").upload(b"a,b\n1,2\n")
    feature.commit("add data")
    api = lakefs_server.client().sdk_client.repositories_api
    api.set_branch_protection_rules(lakefs_repo.id, [lakefs_sdk.BranchProtectionRule(pattern="ma*")])

    # The high-level upload raises ForbiddenException, its deletion PermissionException: both are 403s.
    with pytest.raises(lakefs.exceptions.ForbiddenException) as upload_refused:
        main.object("new.txt").upload(b"x")
    assert upload_refused.value.status_code == 403
    with pytest.raises(lakefs.exceptions.PermissionException):
        main.object("before.txt").delete()
    with pytest.raises(lakefs.exceptions.ForbiddenException) as commit_refused:
        main.commit("not allowed")
    assert "protected" in message_of(commit_refused.value)
    with pytest.raises(lakefs_sdk.ApiException) as reset_refused:
        main.reset_changes()
    assert reset_refused.value.status == 403
    errors = (
        lakefs_server.client()
        .sdk_client.objects_api.delete_objects(lakefs_repo.id, "main", lakefs_sdk.PathList(paths=["before.txt"]))
        .errors
    )
    assert [(e.path, e.status_code) for e in errors] == [("before.txt", 403)]

    merged = feature.merge_into(main)
    assert main.head.id == merged
    assert main.object("data.csv").reader().read() == b"a,b\n1,2\n"
    assert [c.path for c in main.uncommitted()] == ["before.txt"]
