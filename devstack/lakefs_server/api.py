"""The `/api/v1` routes: HTTP in, catalog operation, lakeFS's JSON out (objects: see object_api)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from devstack.lakefs_server import object_api, params, wire
from devstack.lakefs_server.auth import TOKEN_COOKIE, TOKEN_LIFETIME, Authenticator
from devstack.lakefs_server.errors import AUTHENTICATION_FAILED, BadRequest, Conflict, Unauthorized
from devstack.lakefs_server.handlers import call, catalog_of, json_response, no_content, path_param
from devstack.lakefs_server.model import ADMIN_USER
from devstack.lakefs_server.params import BOOLEAN, INTEGER, OBJECT, STRING, STRING_LIST, STRING_MAP

# --- installation


async def healthcheck(request: Request) -> Response:
    return no_content()


async def get_setup_state(request: Request) -> Response:
    # The installation is set up by the command line: the admin's keys are given at start.
    login = {"RBAC": "none", "login_url": "", "login_cookie_names": [TOKEN_COOKIE], "logout_url": "/logout"}
    return json_response({"state": "initialized", "comm_prefs_missing": False, "login_config": login})


async def setup(request: Request) -> Response:
    body = await params.json_body(request, {"username": (STRING, True), "key": (OBJECT, False)})
    if not body["username"]:
        raise BadRequest("empty user display name")
    raise Conflict("lakeFS already initialized")


async def login(request: Request) -> Response:
    body = await params.json_body(request, {"access_key_id": (STRING, True), "secret_access_key": (STRING, True)})
    authenticator: Authenticator = request.app.state.authenticator
    if not authenticator.valid_keys(body["access_key_id"], body["secret_access_key"]):
        raise Unauthorized(AUTHENTICATION_FAILED)
    token, expires = authenticator.issue_token()
    response = json_response({"token": token, "token_expiration": expires})
    response.set_cookie(TOKEN_COOKIE, token, max_age=TOKEN_LIFETIME, path="/", httponly=True, samesite="strict")
    return response


async def get_current_user(request: Request) -> Response:
    created = await call(catalog_of(request).get_installation_time)
    return json_response({"user": {"id": ADMIN_USER, "creation_date": created, "friendly_name": ADMIN_USER}})


async def get_config(request: Request) -> Response:
    storage = wire.storage_config()
    return json_response(
        {"version_config": wire.version_config(), "storage_config": storage, "storage_config_list": [storage]}
    )


async def get_version(request: Request) -> Response:
    return json_response(wire.version_config())


async def get_storage_config(request: Request) -> Response:
    return json_response(wire.storage_config())


# --- repositories


async def list_repositories(request: Request) -> Response:
    repos, has_more = await call(
        catalog_of(request).list_repositories,
        params.query(request, "prefix"),
        params.query(request, "after"),
        params.query_int(request, "amount"),
        params.query(request, "search"),
    )
    return json_response(wire.listing([wire.repository(r) for r in repos], has_more, repos[-1].id if repos else ""))


async def create_repository(request: Request) -> Response:
    body = await params.json_body(
        request,
        {
            "name": (STRING, True),
            "storage_namespace": (STRING, True),
            "default_branch": (STRING, False),
            "sample_data": (BOOLEAN, False),
            "read_only": (BOOLEAN, False),
            "storage_id": (STRING, False),
        },
    )
    if body.get("sample_data") or body.get("read_only"):
        raise BadRequest("sample_data and read_only repositories are not supported by this server")
    if body.get("storage_id"):
        raise BadRequest(f"storage_id {body['storage_id']!r} not found: this server has a single blockstore")
    repo = await call(
        catalog_of(request).create_repository,
        body["name"],
        body["storage_namespace"],
        body.get("default_branch") or "main",
        params.query_bool(request, "bare"),
    )
    return json_response(wire.repository(repo), 201)


async def get_repository(request: Request) -> Response:
    return json_response(
        wire.repository(await call(catalog_of(request).get_repository, path_param(request, "repository")))
    )


async def delete_repository(request: Request) -> Response:
    await call(catalog_of(request).delete_repository, path_param(request, "repository"))
    return no_content()


async def get_repository_metadata(request: Request) -> Response:
    return json_response(await call(catalog_of(request).get_repository_metadata, path_param(request, "repository")))


async def set_repository_metadata(request: Request) -> Response:
    body = await params.json_body(request, {"metadata": (STRING_MAP, True)})
    await call(catalog_of(request).update_repository_metadata, path_param(request, "repository"), body["metadata"], [])
    return no_content()


async def delete_repository_metadata(request: Request) -> Response:
    body = await params.json_body(request, {"keys": (STRING_LIST, True)})
    await call(catalog_of(request).update_repository_metadata, path_param(request, "repository"), {}, body["keys"])
    return no_content()


# --- branch protection


async def get_branch_protection(request: Request) -> Response:
    patterns, etag = await call(catalog_of(request).get_branch_protection, path_param(request, "repository"))
    return json_response([{"pattern": p} for p in patterns], headers={"ETag": f'"{etag}"'})


async def set_branch_protection(request: Request) -> Response:
    rules = await params.json_array_body(request, {"pattern": (STRING, True)})
    await call(
        catalog_of(request).set_branch_protection,
        path_param(request, "repository"),
        [rule["pattern"] for rule in rules],
        request.headers.get("if-match"),
    )
    return no_content()


async def create_branch_protection_rule(request: Request) -> Response:
    body = await params.json_body(request, {"pattern": (STRING, True)})
    await call(catalog_of(request).add_branch_protection, path_param(request, "repository"), body["pattern"])
    return no_content()


async def delete_branch_protection_rule(request: Request) -> Response:
    body = await params.json_body(request, {"pattern": (STRING, True)})
    await call(catalog_of(request).delete_branch_protection, path_param(request, "repository"), body["pattern"])
    return no_content()


async def branch_protection_preflight(request: Request) -> Response:
    await call(catalog_of(request).get_repository, path_param(request, "repository"))
    return no_content()


# --- branches


async def list_branches(request: Request) -> Response:
    branches, has_more = await call(
        catalog_of(request).list_branches,
        path_param(request, "repository"),
        params.query(request, "prefix"),
        params.query(request, "after"),
        params.query_int(request, "amount"),
        params.query_bool(request, "show_hidden"),
    )
    results = [wire.ref(name, commit_id) for name, commit_id in branches]
    return json_response(wire.listing(results, has_more, branches[-1][0] if branches else ""))


async def create_branch(request: Request) -> Response:
    body = await params.json_body(
        request,
        {"name": (STRING, True), "source": (STRING, True), "force": (BOOLEAN, False), "hidden": (BOOLEAN, False)},
    )
    commit_id = await call(
        catalog_of(request).create_branch,
        path_param(request, "repository"),
        body["name"],
        body["source"],
        bool(body.get("hidden")),
    )
    # lakeFS answers with the commit id as the bare body; its OpenAPI document calls it text/html.
    return PlainTextResponse(commit_id, status_code=201, media_type="text/html")


async def get_branch(request: Request) -> Response:
    branch = path_param(request, "branch")
    commit_id = await call(catalog_of(request).get_branch, path_param(request, "repository"), branch)
    return json_response(wire.ref(branch, commit_id))


async def delete_branch(request: Request) -> Response:
    await call(catalog_of(request).delete_branch, path_param(request, "repository"), path_param(request, "branch"))
    return no_content()


async def reset_branch(request: Request) -> Response:
    body = await params.json_body(request, {"type": (STRING, True), "path": (STRING, False), "force": (BOOLEAN, False)})
    await call(
        catalog_of(request).reset_branch,
        path_param(request, "repository"),
        path_param(request, "branch"),
        body["type"],
        body.get("path") or "",
    )
    return no_content()


async def hard_reset_branch(request: Request) -> Response:
    await call(
        catalog_of(request).hard_reset,
        path_param(request, "repository"),
        path_param(request, "branch"),
        params.required_query(request, "ref"),
    )
    return no_content()


async def diff_branch(request: Request) -> Response:
    found, has_more = await call(
        catalog_of(request).diff_branch,
        path_param(request, "repository"),
        path_param(request, "branch"),
        params.query(request, "prefix"),
        params.query(request, "after"),
        params.query(request, "delimiter"),
        params.query_int(request, "amount"),
    )
    return json_response(wire.listing([wire.change(c) for c in found], has_more, found[-1].path if found else ""))


async def revert_branch(request: Request) -> Response:
    body = await params.json_body(
        request,
        {
            "ref": (STRING, True),
            "parent_number": (INTEGER, True),
            "commit_overrides": (OBJECT, False),
            "allow_empty": (BOOLEAN, False),
            "force": (BOOLEAN, False),
        },
    )
    overrides = params.check_object(
        body.get("commit_overrides") or {}, {"message": (STRING, False), "metadata": (STRING_MAP, False)}
    )
    await call(
        catalog_of(request).revert,
        path_param(request, "repository"),
        path_param(request, "branch"),
        body["ref"],
        body["parent_number"],
        bool(body.get("allow_empty")),
        overrides.get("message"),
        overrides.get("metadata"),
    )
    return no_content()


async def cherry_pick(request: Request) -> Response:
    body = await params.json_body(request, {"ref": (STRING, True), "parent_number": (INTEGER, False)})
    commit = await call(
        catalog_of(request).cherry_pick,
        path_param(request, "repository"),
        path_param(request, "branch"),
        body["ref"],
        body.get("parent_number"),
    )
    return json_response(wire.commit(commit), 201)


# --- commits


async def commit(request: Request) -> Response:
    if "source_metarange" in request.query_params:
        raise BadRequest("source_metarange is not supported by this server")
    body = await params.json_body(
        request,
        {
            "message": (STRING, True),
            "metadata": (STRING_MAP, False),
            "date": (INTEGER, False),
            "allow_empty": (BOOLEAN, False),
            "force": (BOOLEAN, False),
        },
    )
    created = await call(
        catalog_of(request).commit,
        path_param(request, "repository"),
        path_param(request, "branch"),
        body["message"],
        body.get("metadata") or {},
        body.get("date"),
        bool(body.get("allow_empty")),
    )
    return json_response(wire.commit(created), 201)


async def get_commit(request: Request) -> Response:
    found = await call(
        catalog_of(request).get_commit, path_param(request, "repository"), path_param(request, "commitId")
    )
    return json_response(wire.commit(found))


async def log_commits(request: Request) -> Response:
    commits, has_more = await call(
        catalog_of(request).log_commits,
        path_param(request, "repository"),
        path_param(request, "ref"),
        params.query(request, "after"),
        params.query_int(request, "amount"),
        [p for p in request.query_params.getlist("objects") if p],
        [p for p in request.query_params.getlist("prefixes") if p],
        params.query_bool(request, "limit"),
        params.query_bool(request, "first_parent"),
        params.query_time(request, "since"),
        params.query(request, "stop_at"),
    )
    return json_response(wire.listing([wire.commit(c) for c in commits], has_more, commits[-1].id if commits else ""))


# --- diff and merge


async def diff_refs(request: Request) -> Response:
    diff_type = params.query(request, "type", "three_dot")
    if diff_type not in ("two_dot", "three_dot"):
        raise BadRequest(f'parameter "type" in query has an error: value is not one of the allowed values: {diff_type}')
    found, has_more = await call(
        catalog_of(request).diff_refs,
        path_param(request, "repository"),
        path_param(request, "leftRef"),
        path_param(request, "rightRef"),
        diff_type,
        params.query(request, "prefix"),
        params.query(request, "after"),
        params.query(request, "delimiter"),
        params.query_int(request, "amount"),
    )
    return json_response(wire.listing([wire.change(c) for c in found], has_more, found[-1].path if found else ""))


async def merge_into_branch(request: Request) -> Response:
    body = await params.json_body(
        request,
        {
            "message": (STRING, False),
            "metadata": (STRING_MAP, False),
            "strategy": (STRING, False),
            "force": (BOOLEAN, False),
            "allow_empty": (BOOLEAN, False),
            "squash_merge": (BOOLEAN, False),
        },
        required=False,
    )
    reference = await call(
        catalog_of(request).merge,
        path_param(request, "repository"),
        path_param(request, "sourceRef"),
        path_param(request, "destinationBranch"),
        body.get("message") or "",
        body.get("metadata") or {},
        body.get("strategy") or "",
        # lakeFS's `force` also allows a merge that changes nothing.
        bool(body.get("allow_empty") or body.get("force")),
        bool(body.get("squash_merge")),
    )
    return json_response({"reference": reference})


async def find_merge_base(request: Request) -> Response:
    source, destination, base = await call(
        catalog_of(request).find_merge_base,
        path_param(request, "repository"),
        path_param(request, "sourceRef"),
        path_param(request, "destinationBranch"),
    )
    return json_response({"source_commit_id": source, "destination_commit_id": destination, "base_commit_id": base})


# --- tags


async def list_tags(request: Request) -> Response:
    tags, has_more = await call(
        catalog_of(request).list_tags,
        path_param(request, "repository"),
        params.query(request, "prefix"),
        params.query(request, "after"),
        params.query_int(request, "amount"),
    )
    return json_response(wire.listing([wire.ref(n, c) for n, c in tags], has_more, tags[-1][0] if tags else ""))


async def create_tag(request: Request) -> Response:
    body = await params.json_body(request, {"id": (STRING, True), "ref": (STRING, True), "force": (BOOLEAN, False)})
    commit_id = await call(catalog_of(request).create_tag, path_param(request, "repository"), body["id"], body["ref"])
    return json_response(wire.ref(body["id"], commit_id), 201)


async def get_tag(request: Request) -> Response:
    tag = path_param(request, "tag")
    return json_response(wire.ref(tag, await call(catalog_of(request).get_tag, path_param(request, "repository"), tag)))


async def delete_tag(request: Request) -> Response:
    await call(catalog_of(request).delete_tag, path_param(request, "repository"), path_param(request, "tag"))
    return no_content()


# --- actions


async def list_repository_runs(request: Request) -> Response:
    runs, has_more = await call(
        catalog_of(request).list_runs,
        path_param(request, "repository"),
        params.query(request, "branch"),
        params.query(request, "commit"),
        params.query(request, "after"),
        params.query_int(request, "amount"),
    )
    return json_response(wire.listing([wire.action_run(r) for r in runs], has_more, runs[-1]["run_id"] if runs else ""))


async def get_run(request: Request) -> Response:
    run = await call(catalog_of(request).get_run, path_param(request, "repository"), path_param(request, "run_id"))
    return json_response(wire.action_run(run))


async def list_run_hooks(request: Request) -> Response:
    hook_runs, has_more = await call(
        catalog_of(request).list_hook_runs,
        path_param(request, "repository"),
        path_param(request, "run_id"),
        params.query(request, "after"),
        params.query_int(request, "amount"),
    )
    last = hook_runs[-1]["hook_run_id"] if hook_runs else ""
    return json_response(wire.listing([wire.hook_run(h) for h in hook_runs], has_more, last))


async def get_run_hook_output(request: Request) -> Response:
    output = await call(
        catalog_of(request).hook_output,
        path_param(request, "repository"),
        path_param(request, "run_id"),
        path_param(request, "hook_run_id"),
    )
    return Response(output, media_type="application/octet-stream")


REPO = "/repositories/{repository}"
BRANCH = REPO + "/branches/{branch}"

ROUTES = [
    Route("/healthcheck", healthcheck, methods=["GET"]),
    Route("/setup_lakefs", get_setup_state, methods=["GET"]),
    Route("/setup_lakefs", setup, methods=["POST"]),
    Route("/auth/login", login, methods=["POST"]),
    Route("/user", get_current_user, methods=["GET"]),
    Route("/config", get_config, methods=["GET"]),
    Route("/config/version", get_version, methods=["GET"]),
    Route("/config/storage", get_storage_config, methods=["GET"]),
    Route("/repositories", list_repositories, methods=["GET"]),
    Route("/repositories", create_repository, methods=["POST"]),
    Route(REPO, get_repository, methods=["GET"]),
    Route(REPO, delete_repository, methods=["DELETE"]),
    Route(REPO + "/metadata", get_repository_metadata, methods=["GET"]),
    Route(REPO + "/metadata", set_repository_metadata, methods=["POST"]),
    Route(REPO + "/metadata", delete_repository_metadata, methods=["DELETE"]),
    Route(REPO + "/settings/branch_protection", get_branch_protection, methods=["GET"]),
    Route(REPO + "/settings/branch_protection", set_branch_protection, methods=["PUT"]),
    Route(REPO + "/branch_protection", get_branch_protection, methods=["GET"]),
    Route(REPO + "/branch_protection", create_branch_protection_rule, methods=["POST"]),
    Route(REPO + "/branch_protection", delete_branch_protection_rule, methods=["DELETE"]),
    Route(REPO + "/branch_protection/set_allowed", branch_protection_preflight, methods=["GET"]),
    Route(REPO + "/tags", list_tags, methods=["GET"]),
    Route(REPO + "/tags", create_tag, methods=["POST"]),
    Route(REPO + "/tags/{tag}", get_tag, methods=["GET"]),
    Route(REPO + "/tags/{tag}", delete_tag, methods=["DELETE"]),
    Route(REPO + "/branches", list_branches, methods=["GET"]),
    Route(REPO + "/branches", create_branch, methods=["POST"]),
    Route(BRANCH, get_branch, methods=["GET"]),
    Route(BRANCH, delete_branch, methods=["DELETE"]),
    Route(BRANCH, reset_branch, methods=["PUT"]),
    Route(BRANCH + "/hard_reset", hard_reset_branch, methods=["PUT"]),
    Route(BRANCH + "/revert", revert_branch, methods=["POST"]),
    Route(BRANCH + "/cherry-pick", cherry_pick, methods=["POST"]),
    Route(BRANCH + "/commits", commit, methods=["POST"]),
    Route(BRANCH + "/diff", diff_branch, methods=["GET"]),
    Route(BRANCH + "/objects", object_api.upload_object, methods=["POST"]),
    Route(BRANCH + "/objects", object_api.delete_object, methods=["DELETE"]),
    Route(BRANCH + "/objects/delete", object_api.delete_objects, methods=["POST"]),
    Route(BRANCH + "/objects/stage_allowed", object_api.upload_object_preflight, methods=["GET"]),
    Route(BRANCH + "/objects/copy", object_api.copy_object, methods=["POST"]),
    Route(BRANCH + "/objects/stat/user_metadata", object_api.update_object_user_metadata, methods=["PUT"]),
    Route(REPO + "/refs/{ref}/commits", log_commits, methods=["GET"]),
    Route(REPO + "/refs/{sourceRef}/merge/{destinationBranch}", merge_into_branch, methods=["POST"]),
    Route(REPO + "/refs/{sourceRef}/merge/{destinationBranch}", find_merge_base, methods=["GET"]),
    Route(REPO + "/refs/{leftRef}/diff/{rightRef}", diff_refs, methods=["GET"]),
    Route(REPO + "/refs/{ref}/objects", object_api.get_object, methods=["GET", "HEAD"]),
    Route(REPO + "/refs/{ref}/objects/stat", object_api.stat_object, methods=["GET"]),
    Route(REPO + "/refs/{ref}/objects/ls", object_api.list_objects, methods=["GET"]),
    Route(REPO + "/commits/{commitId}", get_commit, methods=["GET"]),
    Route(REPO + "/actions/runs", list_repository_runs, methods=["GET"]),
    Route(REPO + "/actions/runs/{run_id}", get_run, methods=["GET"]),
    Route(REPO + "/actions/runs/{run_id}/hooks", list_run_hooks, methods=["GET"]),
    Route(REPO + "/actions/runs/{run_id}/hooks/{hook_run_id}/output", get_run_hook_output, methods=["GET"]),
]

# Calls lakeFS answers without credentials (the operations with `security: []` in its OpenAPI document).
PUBLIC_PATHS = {"/healthcheck", "/setup_lakefs", "/auth/login"}
