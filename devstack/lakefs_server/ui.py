"""A read-only HTML UI at lakeFS's own UI paths, so that "open in lakeFS" links work on the local stack.

    /                                             the repositories
    /repositories/{repo}/objects?ref=&path=       a ref's objects under a prefix, or one object
    /repositories/{repo}/commits?ref=             a ref's commit log
    /repositories/{repo}/commits/{commit_id}      one commit: message, metadata, parents, changes

Plain server-rendered HTML; every value from the repository is escaped.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from devstack.lakefs_server.catalog import Catalog
from devstack.lakefs_server.errors import NotFound
from devstack.lakefs_server.model import Change, Commit, Entry

PAGE = 1000
STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left; font-size: 0.9em; }
code { font-size: 0.9em; }
.added { color: #1a7f37; } .removed { color: #cf222e; } .changed, .prefix_changed { color: #9a6700; }
nav { margin-bottom: 1em; }
"""


def page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)} - lakeFS (local)</title>"
        f"<style>{STYLE}</style></head><body><nav><a href='/'>Repositories</a></nav>{body}</body></html>"
    )


def error_page(status: int, message: str) -> HTMLResponse:
    response = page(f"Error {status}", f"<h1>Error {status}</h1><p>{escape(message)}</p>")
    response.status_code = status
    return response


def _link(target: str, text: str, **query: str) -> str:
    href = quote(target) + (f"?{urlencode(query)}" if query else "")
    return f"<a href='{escape(href, quote=True)}'>{escape(text)}</a>"


def _time(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog


async def repositories(request: Request) -> Response:
    repos, _ = await run_in_threadpool(_catalog(request).list_repositories, "", "", PAGE, "")
    rows = "".join(
        f"<tr><td>{_link(f'/repositories/{r.id}/objects', r.id, ref=r.default_branch)}</td>"
        f"<td>{escape(r.default_branch)}</td><td>{escape(r.storage_namespace)}</td><td>{_time(r.creation_date)}</td></tr>"
        for r in repos
    )
    header = "<tr><th>Repository</th><th>Default branch</th><th>Storage namespace</th><th>Created</th></tr>"
    table = f"<table>{header}{rows}</table>"
    return page("Repositories", f"<h1>Repositories</h1>{table if repos else '<p>No repository yet.</p>'}")


async def repository(request: Request) -> Response:
    repo = request.path_params["repository"]
    default = (await run_in_threadpool(_catalog(request).get_repository, repo)).default_branch
    return RedirectResponse(f"/repositories/{quote(repo)}/objects?{urlencode({'ref': default})}")


async def objects(request: Request) -> Response:
    catalog = _catalog(request)
    repo = request.path_params["repository"]
    ref = request.query_params.get("ref") or (await run_in_threadpool(catalog.get_repository, repo)).default_branch
    path = request.query_params.get("path", "")
    if path and not path.endswith("/"):
        try:
            _, entry = await run_in_threadpool(catalog.get_object, repo, ref, path)
            return _object_page(repo, ref, path, entry)
        except NotFound:
            path += "/"  # not an object: show it as a folder
    _, listed, has_more = await run_in_threadpool(
        catalog.list_objects, repo, ref, path, request.query_params.get("after", ""), "/", PAGE
    )
    head = await run_in_threadpool(catalog.get_commit, repo, ref)
    base = f"/repositories/{repo}/objects"
    rows = "".join(
        f"<tr><td>{_link(base, name[len(path) :], ref=ref, path=name)}</td><td></td><td></td><td></td></tr>"
        if entry is None
        else f"<tr><td>{_link(base, name[len(path) :], ref=ref, path=name)}</td><td>{entry.size}</td>"
        f"<td>{_time(entry.mtime)}</td><td><code>{escape(entry.checksum)}</code></td></tr>"
        for name, entry in listed
    )
    more = _link(base, "Next page", ref=ref, path=path, after=listed[-1][0]) if has_more else ""
    body = (
        f"<h1>{escape(repo)}</h1>{_ref_line(repo, ref, head)}<h2>{_breadcrumbs(repo, ref, path)}</h2>"
        f"<table><tr><th>Name</th><th>Size</th><th>Modified</th><th>Checksum</th></tr>{rows}</table>"
        f"{'' if listed else '<p>No objects.</p>'}{more}"
    )
    return page(f"{repo} @ {ref}", body)


def _ref_line(repo: str, ref: str, head: Commit) -> str:
    return (
        f"<p>Ref <code>{escape(ref)}</code> at commit "
        f"{_link(f'/repositories/{repo}/commits/{head.id}', head.id[:16])} - "
        f"{_link(f'/repositories/{repo}/commits', 'commit log', ref=ref)}</p>"
    )


def _breadcrumbs(repo: str, ref: str, path: str) -> str:
    parts = [_link(f"/repositories/{repo}/objects", repo, ref=ref)]
    prefix = ""
    for name in [p for p in path.split("/") if p]:
        prefix += name + "/"
        parts.append(_link(f"/repositories/{repo}/objects", name, ref=ref, path=prefix))
    return " / ".join(parts)


def _object_page(repo: str, ref: str, path: str, entry: Entry) -> Response:
    download = _link(f"/api/v1/repositories/{repo}/refs/{ref}/objects", "Download", path=path)
    metadata = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in entry.metadata.items())
    body = (
        f"<h1>{escape(repo)}</h1><h2>{_breadcrumbs(repo, ref, path)}</h2><table>"
        f"<tr><th>Size</th><td>{entry.size} bytes</td></tr><tr><th>Modified</th><td>{_time(entry.mtime)}</td></tr>"
        f"<tr><th>Checksum</th><td><code>{escape(entry.checksum)}</code></td></tr>"
        f"<tr><th>Content type</th><td>{escape(entry.content_type)}</td></tr></table>"
        f"<h3>Metadata</h3><table>{metadata or '<tr><td>none</td></tr>'}</table><p>{download}</p>"
    )
    return page(path, body)


async def commit_log(request: Request) -> Response:
    catalog = _catalog(request)
    repo = request.path_params["repository"]
    ref = request.query_params.get("ref") or (await run_in_threadpool(catalog.get_repository, repo)).default_branch
    after = request.query_params.get("after", "")
    commits, has_more = await run_in_threadpool(
        catalog.log_commits, repo, ref, after, 100, [], [], False, False, None, ""
    )
    rows = "".join(
        f"<tr><td>{_link(f'/repositories/{repo}/commits/{c.id}', c.id[:16])}</td><td>{escape(c.message)}</td>"
        f"<td>{escape(c.committer)}</td><td>{_time(c.creation_date)}</td></tr>"
        for c in commits
    )
    more = _link(f"/repositories/{repo}/commits", "Older commits", ref=ref, after=commits[-1].id) if has_more else ""
    body = (
        f"<h1>{escape(repo)}: commits of <code>{escape(ref)}</code></h1>"
        f"<table><tr><th>Commit</th><th>Message</th><th>Committer</th><th>Date</th></tr>{rows}</table>{more}"
    )
    return page(f"{repo} commits", body)


async def commit(request: Request) -> Response:
    catalog = _catalog(request)
    repo, commit_id = request.path_params["repository"], request.path_params["commit_id"]
    found = await run_in_threadpool(catalog.get_commit, repo, commit_id)
    changes = await run_in_threadpool(_changes, catalog, repo, found)
    metadata = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in found.metadata.items())
    parents = ", ".join(_link(f"/repositories/{repo}/commits/{p}", p[:16]) for p in found.parents) or "none"
    rows = "".join(
        f"<tr><td class='{escape(c.type)}'>{escape(c.type)}</td>"
        f"<td>{_link(f'/repositories/{repo}/objects', c.path, ref=found.id, path=c.path)}</td>"
        f"<td>{'' if c.size is None else c.size}</td></tr>"
        for c in changes
    )
    body = (
        f"<h1>Commit <code>{escape(found.id)}</code></h1>"
        f"<table><tr><th>Repository</th><td>{_link(f'/repositories/{repo}/objects', repo, ref=found.id)}</td></tr>"
        f"<tr><th>Message</th><td>{escape(found.message)}</td></tr>"
        f"<tr><th>Committer</th><td>{escape(found.committer)}</td></tr>"
        f"<tr><th>Date</th><td>{_time(found.creation_date)}</td></tr><tr><th>Parents</th><td>{parents}</td></tr>"
        f"</table><h2>Metadata</h2><table>{metadata or '<tr><td>none</td></tr>'}</table>"
        f"<h2>Changes{' from the first parent' if found.parents else ''}</h2>"
        f"<table><tr><th>Change</th><th>Path</th><th>Size</th></tr>{rows}</table>"
        f"{'' if changes else '<p>No changes.</p>'}"
    )
    return page(f"Commit {found.id[:16]}", body)


def _changes(catalog: Catalog, repo: str, commit: Commit) -> list[Change]:
    """The commit's changes against its first parent (all its objects, for the first commit)."""
    if commit.parents:
        changes, _ = catalog.diff_refs(repo, commit.parents[0], commit.id, "two_dot", "", "", "", PAGE)
        return changes
    _, listed, _ = catalog.list_objects(repo, commit.id, "", "", "", PAGE)
    return [Change("added", path, size=entry.size) for path, entry in listed if entry is not None]


ROUTES = [
    Route("/", repositories, methods=["GET"]),
    Route("/repositories", repositories, methods=["GET"]),
    Route("/repositories/{repository}", repository, methods=["GET"]),
    Route("/repositories/{repository}/objects", objects, methods=["GET"]),
    Route("/repositories/{repository}/commits", commit_log, methods=["GET"]),
    Route("/repositories/{repository}/commits/{commit_id}", commit, methods=["GET"]),
]
