"""What every route handler uses: the catalog, the thread pool, path parameters and JSON answers.

Handlers are coroutines so that uploads and downloads stream; every catalog call (SQLite, fsync) runs in
the thread pool, so the event loop never blocks on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from devstack.lakefs_server.catalog import Catalog

T = TypeVar("T")


def catalog_of(request: Request) -> Catalog:
    return request.app.state.catalog


async def call(fn: Callable[..., T], *args: Any) -> T:
    return await run_in_threadpool(fn, *args)


def path_param(request: Request, name: str) -> str:
    # See app.EncodedSlashMiddleware: a "/" inside a name arrives still encoded.
    return request.path_params[name].replace("%2F", "/")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=headers)


def no_content() -> Response:
    return Response(status_code=204)
