"""The ASGI application: the API under /api/v1, the UI at lakeFS's UI paths, and who may call them."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from devstack.lakefs_server import api, ui
from devstack.lakefs_server.auth import Authenticator, Credentials
from devstack.lakefs_server.catalog import open_catalog
from devstack.lakefs_server.errors import AUTHENTICATION_FAILED, ApiError, RangeNotSatisfiable

API_PREFIX = "/api/v1"


def create_app(data_dir: Path, credentials: Credentials) -> Starlette:
    app = Starlette(
        routes=[Mount(API_PREFIX, routes=api.ROUTES), *ui.ROUTES],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            ClientDisconnect: _client_gone,
            Exception: _unexpected_error,
        },
    )
    app.state.catalog = open_catalog(data_dir)
    app.state.authenticator = Authenticator(credentials)
    app.add_middleware(AuthMiddleware, authenticator=app.state.authenticator)
    app.add_middleware(EncodedSlashMiddleware)
    return app


def _is_api(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if not _is_api(request):
        return ui.error_page(exc.status, exc.message)
    headers = {"Content-Range": f"bytes */{exc.size}"} if isinstance(exc, RangeNotSatisfiable) else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "invalid API endpoint" if exc.status_code == 404 else exc.detail
    if not _is_api(request):
        return ui.error_page(exc.status_code, message)
    return JSONResponse({"message": message}, status_code=exc.status_code, headers=exc.headers)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client hung up mid-upload; the partial blob was discarded, and nobody reads this answer.
    return Response(status_code=499)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # Starlette re-raises the exception after this answer, so uvicorn logs its traceback.
    return JSONResponse({"message": f"internal server error: {type(exc).__name__}: {exc}"}, status_code=500)


class EncodedSlashMiddleware:
    """Routes on the raw path, where "%2F" inside a name (a tag "release/1") is not a separator.

    The encoded slash stays "%2F" in the routed path; `api.path_param` turns it back into "/".
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and raw and b"%2f" in raw.lower():
            protected = re.sub(r"%2[fF]", "%252F", raw.decode("latin-1"))
            scope = {**scope, "path": unquote(protected)}
        await self.app(scope, receive, send)


class AuthMiddleware:
    """Every call needs the admin's credentials, except the few lakeFS answers anonymously."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = request.url.path
        public = path.startswith(API_PREFIX) and path[len(API_PREFIX) :] in api.PUBLIC_PATHS
        if public or self.authenticator.authenticated(request.headers, request.cookies):
            await self.app(scope, receive, send)
            return
        if path.startswith(API_PREFIX):
            response: Response = JSONResponse({"message": AUTHENTICATION_FAILED}, status_code=401)
        else:
            # Lets a browser ask for the access key and secret, so the UI works without a login page.
            response = ui.error_page(401, AUTHENTICATION_FAILED)
            response.headers["WWW-Authenticate"] = 'Basic realm="lakeFS", charset="UTF-8"'
        await response(scope, receive, send)
