"""The errors the API answers with: an HTTP status and lakeFS's `{"message": ...}` body."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error the client should see; `extra` adds fields to the JSON body (a merge conflict's reference)."""

    status = 500

    def __init__(self, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"message": self.message, **self.extra}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PreconditionFailed(ApiError):
    status = 412


class RangeNotSatisfiable(ApiError):
    status = 416

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        # The high-level client reads the object's size from "bytes */<size>" to stop reading at the end.
        self.size = size


# lakeFS's own wording, kept so that clients matching on it behave the same.
AUTHENTICATION_FAILED = "error authenticating request"
NO_CHANGES = "no changes"
CONFLICT_FOUND = "conflict found"
WRITE_TO_PROTECTED_BRANCH = "cannot write to protected branch"
COMMIT_TO_PROTECTED_BRANCH = "cannot commit to protected branch"
DELETE_DEFAULT_BRANCH = "cannot delete repository default branch"
