"""lakeFS actions: pre-commit and pre-merge webhooks that can veto the operation, and the record of runs."""

from __future__ import annotations

import lakefs
import pytest

from tests.lakefs_server.support import message_of, webhook_receiver

pytestmark = pytest.mark.contract


def _action(name: str, event: str, url: str, branches: list[str] | None = None, timeout: str = "") -> bytes:
    on = f"  {event}:\n" + (f"    branches: [{', '.join(branches)}]\n" if branches else "")
    properties = f"      url: {url}\n" + (f"      timeout: {timeout}\n" if timeout else "")
    return (
        f"name: {name}\non:\n{on}hooks:\n  - id: check\n    type: webhook\n"
        f"    description: a test hook\n    properties:\n{properties}"
    ).encode()


@pytest.fixture
def receiver():
    with webhook_receiver() as running:
        yield running


def test_a_failing_pre_commit_hook_rejects_the_commit_with_412(lakefs_repo, receiver):
    main = lakefs_repo.branch("main")
    main.object("_lakefs_actions/check.yaml").upload(_action("check data", "pre-commit", f"{receiver.url}/fail"))
    main.object("data.csv").upload(b"a\n1\n")
    head = main.head.id
    with pytest.raises(lakefs.exceptions.ServerException) as rejected:
        main.commit("should be rejected", metadata={"dag_id": "ml_training"})
    assert rejected.value.status_code == 412
    assert "pre-commit hook aborted" in message_of(rejected.value)
    assert main.head.id == head
    assert sorted(c.path for c in main.uncommitted()) == ["_lakefs_actions/check.yaml", "data.csv"]
    event = receiver.events[-1]
    assert event["event_type"] == "pre-commit" and event["branch_id"] == "main"
    assert event["repository_id"] == lakefs_repo.id and event["commit_message"] == "should be rejected"
    assert event["commit_metadata"] == {"dag_id": "ml_training"} and event["hook_id"] == "check"


def test_a_passing_pre_commit_hook_lets_the_commit_through(lakefs_repo, receiver, lakefs_server):
    main = lakefs_repo.branch("main")
    main.object("_lakefs_actions/check.yaml").upload(_action("check data", "pre-commit", f"{receiver.url}/ok"))
    commit = main.commit("approved").get_commit()
    assert main.head.id == commit.id
    assert [e["path"] for e in receiver.events] == ["/ok"]

    actions = lakefs_server.client().sdk_client.actions_api
    runs = actions.list_repository_runs(lakefs_repo.id, branch="main").results
    assert [(r.event_type, r.status, r.commit_id) for r in runs] == [("pre-commit", "completed", commit.id)]
    assert actions.get_run(lakefs_repo.id, runs[0].run_id).status == "completed"
    hooks = actions.list_run_hooks(lakefs_repo.id, runs[0].run_id).results
    assert [(h.action, h.hook_id, h.status) for h in hooks] == [("check data", "check", "completed")]
    output = actions.get_run_hook_output(lakefs_repo.id, runs[0].run_id, hooks[0].hook_run_id)
    assert b"POST" in output


def test_pre_merge_hook_from_the_source_vetoes_or_approves_the_merge(lakefs_repo, receiver):
    main = lakefs_repo.branch("main")
    main.object("_lakefs_actions/gate.yaml").upload(
        _action("merge gate", "pre-merge", f"{receiver.url}/fail", branches=["main"])
    )
    main.commit("add the gate")
    feature = lakefs_repo.branch("feature").create(main)
    feature.object("model.onnx").upload(b"weights")
    feature.commit("candidate")
    head = main.head.id
    with pytest.raises(lakefs.exceptions.ServerException) as rejected:
        feature.merge_into(main)
    assert rejected.value.status_code == 412 and "pre-merge hook aborted" in message_of(rejected.value)
    assert main.head.id == head
    assert receiver.events[-1]["event_type"] == "pre-merge" and receiver.events[-1]["branch_id"] == "main"

    # The actions of the merge source count: approve on the feature branch, then merge again.
    feature.object("_lakefs_actions/gate.yaml").upload(
        _action("merge gate", "pre-merge", f"{receiver.url}/ok", branches=["main"])
    )
    feature.commit("approve")
    merged = feature.merge_into(main)
    assert main.head.id == merged
    # A branch the action does not name is not gated.
    other = lakefs_repo.branch("other").create(main)
    _ = lakefs_repo.branch("side").create(main)
    lakefs_repo.branch("side").object("x").upload(b"x")
    lakefs_repo.branch("side").commit("x")
    calls = len(receiver.events)
    lakefs_repo.branch("side").merge_into(other)
    assert len(receiver.events) == calls


@pytest.mark.parametrize("where", ["unreachable", "timeout", "invalid action"])
def test_unreachable_slow_or_broken_hooks_reject_with_412(lakefs_repo, receiver, where):
    main = lakefs_repo.branch("main")
    if where == "unreachable":
        action = _action("unreachable", "pre-commit", "http://127.0.0.1:9/nothing-listens-here")
    elif where == "timeout":
        receiver.slow_seconds = 2.0
        action = _action("slow", "pre-commit", f"{receiver.url}/slow", timeout="200ms")
    else:
        action = b"name: broken\non: {}\nhooks: []\n"
    main.object("_lakefs_actions/hook.yaml").upload(action)
    with pytest.raises(lakefs.exceptions.ServerException) as rejected:
        main.commit("rejected")
    assert rejected.value.status_code == 412
    assert "hook aborted" in message_of(rejected.value)


def test_post_hooks_run_after_the_fact_and_cannot_veto(lakefs_repo, receiver, lakefs_server):
    main = lakefs_repo.branch("main")
    main.object("_lakefs_actions/notify.yaml").upload(_action("notify", "post-commit", f"{receiver.url}/fail"))
    commit = main.commit("notify me").get_commit()
    assert main.head.id == commit.id
    assert receiver.events[-1]["event_type"] == "post-commit" and receiver.events[-1]["commit_id"] == commit.id
    runs = lakefs_server.client().sdk_client.actions_api.list_repository_runs(lakefs_repo.id, commit=commit.id)
    assert [(r.event_type, r.status) for r in runs.results] == [("post-commit", "failed")]


def test_hooks_on_other_branches_do_not_run(lakefs_repo, receiver):
    main = lakefs_repo.branch("main")
    main.object("_lakefs_actions/only-prod.yaml").upload(
        _action("only prod", "pre-commit", f"{receiver.url}/fail", branches=["prod-*"])
    )
    main.commit("not gated on main")
    assert receiver.events == []
