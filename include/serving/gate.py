"""The request gate: an ASGI middleware that validates prediction requests before BentoML sees them.

BentoML answers a body that fails its input model with a 400 whose message is pydantic's, and logs the client's
mistake with a full traceback; on a batchable API there is no later point at which the service could answer
instead. So the gate validates the body of each prediction route against that route's request model first and
answers a bad one itself: 400 (the status BentoML's OpenAPI document gives for bad input) with every problem
named by record index and field, 413 for a body beyond the
limit, 415 for a body that is not JSON, 503 while no model is loaded, each logged as one line without a
traceback. A good body goes on to
BentoML unchanged, together with what it validated to (`validated(scope)`), so it is not parsed twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from include.serving import schema

logger = logging.getLogger(__name__)

_VALIDATED = "mlops.validated_body"
_JSON_TYPES = (b"application/json", b"")


def validated(scope: Mapping[str, Any]) -> BaseModel | None:
    """What the gate validated this request's body to, if it did."""
    return scope.get(_VALIDATED)


class RequestGate:
    def __init__(self, app, routes: Mapping[str, type[BaseModel]], max_body_bytes: int, ready: Callable[[], bool]):
        self.app = app
        self.routes = routes
        self.max_body_bytes = max_body_bytes
        self.ready = ready

    async def __call__(self, scope, receive, send) -> None:
        model = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if model is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if not self.ready():
            await self._refuse(scope, send, 503, ["no model is loaded yet (see /readyz)"])
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
            scope[_VALIDATED] = model.model_validate_json(body)
        except ValidationError as exc:
            await self._refuse(scope, send, 400, schema.problems(exc))
            return
        await self.app(scope, _replay(body, receive), send)

    async def _refuse(self, scope, send, status: int, problems: list[str]) -> None:
        logger.info("refused %s %s (%d): %s", scope["method"], scope["path"], status, "; ".join(problems[:3]))
        body = json.dumps({"error": "; ".join(problems), "problems": problems}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
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
