"""Reading a request's query parameters and JSON body the way lakeFS's OpenAPI validation does.

lakeFS validates every request against its OpenAPI document before a handler runs; refused requests get
400 with kin-openapi's wording ("request body has an error: ..."), which is kept here.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from starlette.requests import Request

from devstack.lakefs_server.errors import BadRequest

# The JSON type a body field must have; "string_map" is an object of strings (metadata).
STRING, BOOLEAN, INTEGER, STRING_MAP, STRING_LIST, OBJECT, OBJECT_LIST = (
    "string",
    "boolean",
    "integer",
    "string_map",
    "string_list",
    "object",
    "object_list",
)
_TYPE_NAMES = {
    STRING: "a string",
    BOOLEAN: "a boolean",
    INTEGER: "an integer",
    STRING_MAP: "an object of strings",
    STRING_LIST: "an array of strings",
    OBJECT: "an object",
    OBJECT_LIST: "an array of objects",
}


def query(request: Request, name: str, default: str = "") -> str:
    return request.query_params.get(name, default)


def required_query(request: Request, name: str) -> str:
    if name not in request.query_params:
        raise BadRequest(f'parameter "{name}" in query has an error: value is required but missing')
    return request.query_params[name]


def query_int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f'parameter "{name}" in query has an error: value {value}: an invalid integer') from None


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    if value.lower() not in ("true", "false", "1", "0"):
        raise BadRequest(f'parameter "{name}" in query has an error: value {value}: an invalid boolean')
    return value.lower() in ("true", "1")


def query_time(request: Request, name: str) -> int | None:
    """A date-time query parameter, as Unix seconds."""
    value = request.query_params.get(name)
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f'parameter "{name}" in query has an error: value {value}: not a date-time') from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


async def json_body(request: Request, fields: dict[str, tuple[str, bool]], required: bool = True) -> dict[str, Any]:
    """The JSON object body, checked against `fields`: name -> (type, required). Unknown fields are ignored."""
    body = await _decode(request, required)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadRequest("request body has an error: doesn't match schema: value must be an object")
    return check_object(body, fields)


async def json_array_body(request: Request, item_fields: dict[str, tuple[str, bool]]) -> list[dict[str, Any]]:
    body = await _decode(request, required=True)
    if not isinstance(body, list):
        raise BadRequest("request body has an error: doesn't match schema: value must be an array")
    return [check_object(item, item_fields, f"/{index}") for index, item in enumerate(body)]


def check_object(body: Any, fields: dict[str, tuple[str, bool]], where: str = "") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(
            f'request body has an error: doesn\'t match schema: Error at "{where or "/"}": value must be an object'
        )
    for name, (kind, needed) in fields.items():
        if name not in body or body[name] is None:
            if needed:
                raise BadRequest(f'request body has an error: doesn\'t match schema: property "{name}" is missing')
            continue
        if not _is(kind, body[name]):
            raise BadRequest(
                f'request body has an error: doesn\'t match schema: Error at "{where}/{name}": value must be '
                f"{_TYPE_NAMES[kind]}"
            )
    return body


async def _decode(request: Request, required: bool) -> Any:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise BadRequest("request body has an error: value is required but missing")
        return None
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise BadRequest(f'request body has an error: header Content-Type has unexpected value "{media_type}"')
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"request body has an error: failed to decode request body: {exc}") from None


def _is(kind: str, value: Any) -> bool:
    if kind == STRING:
        return isinstance(value, str)
    if kind == BOOLEAN:
        return isinstance(value, bool)
    if kind == INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == STRING_MAP:
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if kind == STRING_LIST:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == OBJECT:
        return isinstance(value, dict)
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)
