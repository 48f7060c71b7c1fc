"""A reverse proxy that checks every lakeFS request/response pair against lakeFS's OpenAPI document.

The tests talk to lakeFS through it, so the same checks run against the project's server and against a
real lakeFS (LAKEFS_ENDPOINT). What it finds is recorded as a `Violation`; the fixtures fail the test that
caused one. Object contents stream through untouched: uploads of 50+ MB are not buffered here.

What counts as a violation:
- a response that does not match the operation's documented responses (status, headers, body schema);
- a request that does not match the document but was accepted (2xx/3xx). A malformed request the server
  refused with 4xx is the behaviour the tests want, not a violation.
The places where lakeFS itself departs from its document are tolerated (see `_documented_gap`).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path

import httpx
import uvicorn
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.media_types.exceptions import MediaTypeNotFound
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.validation.response.exceptions import InvalidHeader
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from werkzeug.datastructures import Headers, ImmutableMultiDict

from devstack.processes import free_port

API_PREFIX = "/api/v1"
# Object contents: streamed both ways, checked without their bodies (the document declares a binary blob).
UPLOAD = re.compile(r"^/api/v1/repositories/[^/]+/branches/[^/]+/objects$")
DOWNLOAD = re.compile(r"^/api/v1/repositories/[^/]+/refs/[^/]+/objects$")
CREATE_BRANCH = re.compile(r"^/api/v1/repositories/[^/]+/branches$")
HOP_BY_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "content-length"}
# The proxy's own server writes these.
PROXY_WRITES = {"date", "server"}


@dataclass(frozen=True)
class Violation:
    method: str
    url: str
    status: int
    problem: str

    def __str__(self) -> str:
        return f"{self.method} {self.url} -> {self.status}: {self.problem}"


class _Request:
    """openapi-core's request protocol over what the proxy received."""

    def __init__(self, request: Request, host_url: str, body: bytes | None) -> None:
        self.host_url = host_url
        self.path = request.scope["raw_path"].decode("latin-1")
        self.method = request.method.lower()
        self.body = body
        self.content_type = request.headers.get("content-type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(request.query_params.multi_items()),
            header=Headers(list(request.headers.items())),
            cookie=ImmutableMultiDict(request.cookies),
        )


class _Response:
    def __init__(self, status: int, headers: httpx.Headers, data: bytes) -> None:
        self.status_code = status
        self.headers = Headers(list(headers.items()))
        self.content_type = headers.get("content-type", "")
        self.data = data


@cache
def _load(spec_path: Path) -> OpenAPI:
    return OpenAPI.from_file_path(str(spec_path))  # half a second: once per document


class SpecValidator:
    def __init__(self, spec_path: Path) -> None:
        self.openapi = _load(spec_path)

    def problems(self, request: _Request, response: _Response) -> list[str]:
        request_errors = list(self.openapi.iter_request_errors(request))
        if any(isinstance(error, PathError) for error in request_errors):
            # An undocumented path or method must be refused, like lakeFS does.
            return [] if response.status_code >= 400 else [f"answered an undocumented operation: {request_errors[0]}"]
        found = []
        if request_errors and response.status_code < 400:
            found += [f"request accepted although invalid: {_describe(error)}" for error in request_errors]
        for error in self.openapi.iter_response_errors(request, response):
            if not _documented_gap(request, response, error):
                found.append(f"response: {_describe(error)}")
        return found


def _documented_gap(request: _Request, response: _Response, error: Exception) -> bool:
    """Where lakeFS's own answers depart from its OpenAPI document, for every server alike."""
    cause = error.__cause__
    if isinstance(error, ResponseNotFound) and response.status_code == 401:
        # lakeFS's authentication answers 401 on every secured operation, documented or not.
        return _is_error_body(response.data)
    if request.method in ("get", "head") and DOWNLOAD.match(request.path):
        # Objects are served with their own content type, and Content-Range is RFC 9110's
        # "bytes 0-9/100", not the document's "bytes=..." pattern.
        return isinstance(cause, MediaTypeNotFound) or (
            isinstance(error, InvalidHeader) and error.name == "Content-Range"
        )
    if request.method == "post" and CREATE_BRANCH.match(request.path) and isinstance(cause, MediaTypeNotFound):
        # lakeFS writes the new commit id as text/plain; the document says text/html.
        return cause.mimetype.startswith("text/plain")
    return False


def _is_error_body(data: bytes | None) -> bool:
    try:
        body = json.loads(data or b"")
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("message"), str)


def _describe(error: Exception) -> str:
    details = [str(error) or type(error).__name__]
    cause = error.__cause__
    while cause is not None:
        details.append(str(cause))
        cause = cause.__cause__
    for nested in getattr(error, "schema_errors", None) or []:
        details.append(str(nested).splitlines()[0])
    return "; ".join(details)


class ValidatingProxy:
    """Forwards everything to `upstream`; checks /api/v1 traffic when a spec is given."""

    def __init__(self, upstream: str, spec_path: Path | None) -> None:
        self.upstream = upstream.rstrip("/")
        self.validator = SpecValidator(spec_path) if spec_path else None
        self.violations: list[Violation] = []
        self._lock = threading.Lock()
        self._client: httpx.AsyncClient | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(
            routes=[Route("/{path:path}", self._forward, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"])],
            lifespan=self._lifespan,
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="lakefs-validating-proxy", daemon=True)

    def start(self) -> ValidatingProxy:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the validating proxy did not start")
            self._thread.join(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def record(self, violation: Violation) -> None:
        with self._lock:
            self.violations.append(violation)

    def violations_since(self, mark: int) -> list[Violation]:
        with self._lock:
            return self.violations[mark:]

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncGenerator[None]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(300.0)) as client:
            # Keep no cookie: one set for a test's client must not log in the next caller.
            client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            self._client = client
            yield

    async def _forward(self, request: Request) -> Response:
        assert self._client is not None
        # The raw path: an encoded "/" inside a name (a tag "release/1") must stay encoded.
        path = request.scope["raw_path"].decode("latin-1")
        streamed_upload = request.method == "POST" and bool(UPLOAD.match(path))
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        if streamed_upload and "content-length" in request.headers:
            headers.append(("content-length", request.headers["content-length"]))
        body = None if streamed_upload else await request.body()
        upstream_request = self._client.build_request(
            request.method,
            self.upstream + path,
            params=request.query_params.multi_items(),
            headers=headers,
            content=request.stream() if streamed_upload else body,
        )
        upstream = await self._client.send(upstream_request, stream=True)
        if DOWNLOAD.match(path) and upstream.status_code in (200, 206):
            # The content is a binary string to the document: any bytes stand for it.
            self._check(request, body, upstream, b"streamed" if request.method == "GET" else b"")
            if request.method == "HEAD":
                await upstream.aclose()
                return _with_headers(Response(status_code=upstream.status_code), upstream, keep_length=True)
            streamed = StreamingResponse(
                upstream.aiter_raw(), status_code=upstream.status_code, background=BackgroundTask(upstream.aclose)
            )
            return _with_headers(streamed, upstream, keep_length=True)
        data = await upstream.aread()
        await upstream.aclose()
        self._check(request, body, upstream, data)
        return _with_headers(Response(data, status_code=upstream.status_code), upstream, keep_length=False)

    def _check(self, request: Request, body: bytes | None, upstream: httpx.Response, data: bytes) -> None:
        if self.validator is None or not request.url.path.startswith(API_PREFIX):
            return
        checked = _Request(request, self.url, body)
        for problem in self.validator.problems(checked, _Response(upstream.status_code, upstream.headers, data)):
            self.record(Violation(request.method, str(request.url), upstream.status_code, problem))


def _with_headers(response: Response, upstream: httpx.Response, keep_length: bool) -> Response:
    """The upstream's headers, repeated ones (Set-Cookie) included; the length is the upstream's or ours."""
    own_length = [(k, v) for k, v in response.raw_headers if k == b"content-length" and not keep_length]
    passed = [
        (k.lower().encode(), v.encode())
        for k, v in upstream.headers.multi_items()
        if k.lower() not in HOP_BY_HOP | PROXY_WRITES or (keep_length and k.lower() == "content-length")
    ]
    response.raw_headers = own_length + passed
    return response
