"""The `/api/v1` object routes: uploads and downloads stream, in both directions."""

from __future__ import annotations

import email.utils
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from devstack.lakefs_server import params, wire
from devstack.lakefs_server.errors import ApiError, BadRequest, RangeNotSatisfiable
from devstack.lakefs_server.handlers import call, catalog_of, json_response, no_content, path_param
from devstack.lakefs_server.model import Entry, Repository
from devstack.lakefs_server.params import BOOLEAN, STRING, STRING_LIST, STRING_MAP

METADATA_HEADER_PREFIX = "x-lakefs-meta-"
UPLOAD_READ_CHUNK = 1024 * 1024


async def upload_object(request: Request) -> Response:
    """The high-level client streams a raw body with `x-lakefs-meta-*` headers; the SDK sends multipart."""
    catalog = catalog_of(request)
    repo, branch = path_param(request, "repository"), path_param(request, "branch")
    path = params.required_query(request, "path")
    if_none_match, if_match = request.headers.get("if-none-match"), request.headers.get("if-match")
    await call(catalog.check_upload, repo, branch, path, if_none_match, if_match)
    # Header names arrive lowercased, so metadata keys are lowercase, as lakeFS stores them.
    metadata = {
        name[len(METADATA_HEADER_PREFIX) :]: value
        for name, value in request.headers.items()
        if name.startswith(METADATA_HEADER_PREFIX)
    }
    content_type = request.headers.get("content-type", "")
    writer = await call(catalog.blobs.writer)
    # Chunks are written from the event loop (a page-cache write and two hashes of a chunk cost less than a
    # thread hop each); the fsync and the rename at the end run in the thread pool.
    try:
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            content = form.get("content")
            if not isinstance(content, UploadFile):
                raise BadRequest("multipart upload missing key 'content': http: no such file")
            content_type = content.content_type or ""
            while chunk := await content.read(UPLOAD_READ_CHUNK):
                writer.write(chunk)
        else:
            async for chunk in request.stream():
                writer.write(chunk)
        blob = await call(writer.finish)
    except BaseException:
        writer.abort()
        raise
    repository, entry = await call(
        catalog.stage_object, repo, branch, path, blob, content_type, metadata, if_none_match, if_match
    )
    return json_response(wire.object_stats(repository, path, entry), 201)


async def get_object(request: Request) -> Response:
    repo, ref = path_param(request, "repository"), path_param(request, "ref")
    if request.method == "HEAD":
        try:
            return await _object_response(request, repo, ref, head=True)
        except ApiError as exc:  # lakeFS answers HEAD errors without a body
            return Response(status_code=exc.status)
    return await _object_response(request, repo, ref, head=False)


async def _object_response(request: Request, repo: str, ref: str, head: bool) -> Response:
    path = params.required_query(request, "path")
    if params.query_bool(request, "presign"):
        raise BadRequest("presign is not supported by the local blockstore")
    catalog = catalog_of(request)
    _, entry = await call(catalog.get_object, repo, ref, path)
    etag = f'"{entry.checksum}"'
    if not head and request.headers.get("if-none-match") == etag:
        return Response(status_code=304)
    headers = {
        "ETag": etag,
        "Last-Modified": email.utils.formatdate(entry.mtime, usegmt=True),
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-store, must-revalidate",
    }
    start, length, status = 0, entry.size, 200
    if "range" in request.headers:
        start, end = _parse_range(request.headers["range"], entry.size)
        length, status = end - start + 1, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
    headers["Content-Length"] = str(length)
    if head:
        return Response(status_code=status, headers=headers, media_type=entry.content_type)
    body = catalog.blobs.read(entry.address, start, length)
    return StreamingResponse(body, status_code=status, headers=headers, media_type=entry.content_type)


def _parse_range(spec: str, size: int) -> tuple[int, int]:
    """One byte range (lakeFS's httputil.ParseRange: no multi-range); any refusal is a 416."""
    refused = RangeNotSatisfiable("Requested Range Not Satisfiable", size)
    unit, _, ranges = spec.partition("=")
    first, dash, last = ranges.partition("-")
    first, last = first.strip(), last.strip()
    if unit.strip() != "bytes" or "," in ranges or not dash or not (first or last):
        raise refused
    if not (first or "0").isdigit() or not (last or "0").isdigit():
        raise refused
    if not first:  # the last N bytes
        if int(last) == 0:
            raise refused
        return max(size - int(last), 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start > size - 1 or (last and int(last) < start):
        raise refused
    return start, end


async def stat_object(request: Request) -> Response:
    if params.query_bool(request, "presign"):
        raise BadRequest("presign is not supported by the local blockstore")
    path = params.required_query(request, "path")
    repository, entry = await call(
        catalog_of(request).get_object, path_param(request, "repository"), path_param(request, "ref"), path
    )
    return json_response(wire.object_stats(repository, path, entry, params.query_bool(request, "user_metadata", True)))


async def list_objects(request: Request) -> Response:
    if params.query_bool(request, "presign"):
        raise BadRequest("presign is not supported by the local blockstore")
    repository, page, has_more = await call(
        catalog_of(request).list_objects,
        path_param(request, "repository"),
        path_param(request, "ref"),
        params.query(request, "prefix"),
        params.query(request, "after"),
        params.query(request, "delimiter"),
        params.query_int(request, "amount"),
    )
    with_metadata = params.query_bool(request, "user_metadata", True)
    results = [_listed(repository, path, entry, with_metadata) for path, entry in page]
    return json_response(wire.listing(results, has_more, page[-1][0] if page else ""))


def _listed(repository: Repository, path: str, entry: Entry | None, with_metadata: bool) -> dict[str, Any]:
    if entry is None:
        return wire.common_prefix(path)
    return wire.object_stats(repository, path, entry, with_metadata)


async def delete_object(request: Request) -> Response:
    await call(
        catalog_of(request).delete_object,
        path_param(request, "repository"),
        path_param(request, "branch"),
        params.required_query(request, "path"),
    )
    return no_content()


async def delete_objects(request: Request) -> Response:
    body = await params.json_body(request, {"paths": (STRING_LIST, True)})
    errors = await call(
        catalog_of(request).delete_objects,
        path_param(request, "repository"),
        path_param(request, "branch"),
        body["paths"],
    )
    return json_response({"errors": errors})


async def copy_object(request: Request) -> Response:
    body = await params.json_body(
        request,
        {
            "src_path": (STRING, True),
            "src_ref": (STRING, False),
            "force": (BOOLEAN, False),
            "shallow": (BOOLEAN, False),
        },
    )
    dest_path = params.required_query(request, "dest_path")
    repository, entry = await call(
        catalog_of(request).copy_object,
        path_param(request, "repository"),
        path_param(request, "branch"),
        dest_path,
        body.get("src_ref") or "",
        body["src_path"],
    )
    return json_response(wire.object_stats(repository, dest_path, entry), 201)


async def upload_object_preflight(request: Request) -> Response:
    # lakeFS only checks the caller's permission here, and the admin may upload anywhere.
    params.required_query(request, "path")
    return no_content()


async def update_object_user_metadata(request: Request) -> Response:
    body = await params.json_body(request, {"set": (STRING_MAP, True)})
    await call(
        catalog_of(request).update_object_metadata,
        path_param(request, "repository"),
        path_param(request, "branch"),
        params.required_query(request, "path"),
        body["set"],
    )
    return Response(status_code=201)
