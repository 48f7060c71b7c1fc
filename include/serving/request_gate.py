"""The request gate: an ASGI middleware in front of every model's routes, answering bad requests itself.

BentoML answers a body that fails its input model with a 400 whose message is pydantic's, and logs the client's
mistake with a full traceback; on a batchable API there is no later point at which the service could answer
instead. So the gate validates the body of each prediction route against that route's request model (the
schema of that route's model) first and answers a bad one itself, each refusal logged as one line without a
traceback:

- 404 for a route of a model the service does not have, naming the models it has;
- 503 while the route's model has no model loaded;
- 415 for a body that is not JSON, 413 for a body beyond the limit, 400 for a body that does not parse as JSON;
- 422 for JSON that does not fit the model's request, with every problem named by record index and field (a
  record of another model: its unknown and missing fields).

It also answers `GET /models/<model>/readyz` (200 while that model serves, 503 before). A good body goes on to
BentoML unchanged, together with what it validated to (`validated(scope)`), so it is not parsed twice.

Found by fuzzing (tests/serving/test_hostile_input.py), and answered here too:

- a call under the admin prefix without the admin token is 401 before anything reads its body: FastAPI reads
  and parses a body before it checks the endpoint's token, so a caller without the token got 422 for a body
  that is not JSON, and could make the service read a body of any size (the admin API's own docs stay open);
- a path with a control character is 404 naming it: Starlette's routes do not match a path holding a newline,
  and the answer was a bare "Not Found".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from include.serving import schema

logger = logging.getLogger(__name__)

_VALIDATED = "mlops.validated_body"
_JSON_TYPES = (b"application/json", b"")
MODELS_PREFIX = "/models/"
# The admin API's own docs (FastAPI's), under its prefix, open without the token.
_OPEN_ADMIN_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def validated(scope: Mapping[str, Any]) -> BaseModel | None:
    """What the gate validated this request's body to, if it did."""
    return scope.get(_VALIDATED)


class RequestGate:
    def __init__(
        self,
        app,
        routes: Mapping[str, tuple[str, type[BaseModel]]],
        models: Collection[str],
        max_body_bytes: int,
        ready: Callable[[str], bool],
        admin: tuple[str, Callable[[str], bool], str] | None = None,
    ):
        """`routes`: prediction path -> (its model, its request model); `ready(model)`: whether it serves;
        `admin`: (the admin API's path prefix, whether an Authorization header value admits a call, the refusal)."""
        self.app = app
        self.routes = routes
        self.models = models
        self.max_body_bytes = max_body_bytes
        self.ready = ready
        self.admin = admin

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if self._needs_admin_token(path):
            _, authorized, refusal = self.admin
            if not authorized(dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")):
                await self._refuse(scope, send, 401, [refusal], detail=True)
                return
        if any(ord(c) < 32 or ord(c) == 127 for c in path):
            await self._refuse(scope, send, 404, [f"path {path!r}: no route has a control character"])
            return
        route = self.routes.get(path)
        if route is None:
            if path.startswith(MODELS_PREFIX):
                await self._model_path(scope, receive, send, path)
            else:
                await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        model, request_model = route
        if not self.ready(model):
            await self._refuse(scope, send, 503, [f"{model} has no model loaded yet (see /models/{model}/readyz)"])
            return
        headers = dict(scope["headers"])
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type not in _JSON_TYPES and not media_type.endswith(b"+json"):
            await self._refuse(scope, send, 415, ["body: send JSON (Content-Type: application/json)"])
            return
        body = await _read_body(receive, self.max_body_bytes)
        if body is None:
            await self._refuse(scope, send, 413, [f"body: larger than {self.max_body_bytes} bytes"])
            return
        try:
            scope[_VALIDATED] = request_model.model_validate_json(body)
        except ValidationError as exc:
            not_json = any(error["type"] == "json_invalid" for error in exc.errors())
            await self._refuse(scope, send, 400 if not_json else 422, schema.problems(exc))
            return
        await self.app(scope, _replay(body, receive), send)

    def _needs_admin_token(self, path: str) -> bool:
        """Whether `path` is under the admin prefix and not one of the admin API's docs pages (compared whole: a
        model named `docs` has its routes at `<prefix>models/docs`)."""
        if self.admin is None or not path.startswith(self.admin[0]):
            return False
        return path.removeprefix(self.admin[0].rstrip("/")) not in _OPEN_ADMIN_PATHS

    async def _model_path(self, scope, receive, send, path: str) -> None:
        """A path under /models/ that is no prediction route: a model's readiness, or an unknown model."""
        model, _, rest = path.removeprefix(MODELS_PREFIX).partition("/")
        if model not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            await self._refuse(scope, send, 404, [f"no model {model!r} on this service; its models are: {known}"])
        elif rest == "readyz" and scope["method"] in ("GET", "HEAD"):
            ready = self.ready(model)
            await _answer(send, 200 if ready else 503, {"model": model, "ready": ready})
        else:
            await self.app(scope, receive, send)

    async def _refuse(self, scope, send, status: int, problems: list[str], detail: bool = False) -> None:
        """Answer `status` naming `problems` (`detail`: as FastAPI does, for the admin API's clients)."""
        path = scope["path"] if scope["path"].isprintable() else repr(scope["path"])
        logger.info("refused %s %s (%d): %s", scope["method"], path, status, "; ".join(problems[:3]))
        content = {"detail": problems[0]} if detail else {"error": "; ".join(problems), "problems": problems}
        await _answer(send, status, content, [(b"www-authenticate", b"Bearer")] if status == 401 else [])


async def _answer(send, status: int, content: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(content).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is longer than `limit`."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """A `receive` that hands the body, already read, to the app, and then waits on the real connection."""
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
