"""The names lakeFS refuses, with lakeFS's rules and messages (pkg/validator, pkg/graveler/validate.go).

lakeFS formats a refused argument as "argument <name>: <what>: invalid value: validation error"; the
messages here keep that prefix and add the refused value, so the error names what is wrong.
"""

from __future__ import annotations

import re

from devstack.lakefs_server.errors import BadRequest

# re.ASCII: Go's \w is [0-9A-Za-z_], Python's would also accept non-ASCII letters.
REPOSITORY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$", re.ASCII)
BRANCH_ID = re.compile(r"^\w[-\w]*$", re.ASCII)
REF = re.compile(r"^\S+$")
STORAGE_NAMESPACE = re.compile(r"^(s3|gs|https?|mem|local|transient)://.*$")
# The only blockstore this server has: objects live in its data directory.
LOCAL_NAMESPACE = re.compile(r"^local://")
MAX_PATH_LENGTH = 1024

_INVALID = "invalid value: validation error"
_REQUIRED = "required value: validation error"


def repository_id(value: str, argument: str = "repository") -> str:
    if not value:
        raise BadRequest(f"argument {argument}: {_REQUIRED}")
    if not REPOSITORY_ID.match(value):
        raise BadRequest(
            f"argument {argument}: repository id: {_INVALID}: {value!r} must be 3-63 lowercase letters, "
            "digits and dashes, starting with a letter or digit"
        )
    return value


def branch_id(value: str, argument: str = "branch") -> str:
    if not value:
        raise BadRequest(f"argument {argument}: {_REQUIRED}")
    if not BRANCH_ID.match(value):
        raise BadRequest(
            f"argument {argument}: branch id: {_INVALID}: branch id must consist of letters, digits, "
            f"underscores and dashes, and cannot start with a dash (got {value!r})"
        )
    return value


def tag_id(value: str) -> str:
    """git-check-ref-format, except that lakeFS allows '~'."""
    if not value:
        raise BadRequest(f"argument tagID: {_REQUIRED}")
    refused = (
        value == "@"
        or value.endswith((".", ".lock", "/"))
        or any(part in value for part in ("..", "//", "@{"))
        or any(char in value for char in "^:?*[\\")
        or any(ord(char) <= 0x20 for char in value)
    )
    if refused:
        raise BadRequest(
            f"argument tagID: tag id: {_INVALID}: {value!r} is not a valid tag name (no spaces, control "
            "characters, '..', '//', '@{', '^:?*[\\', and no trailing '.', '.lock' or '/')"
        )
    return value


def ref(value: str, argument: str = "ref") -> str:
    if not value:
        raise BadRequest(f"argument {argument}: {_REQUIRED}")
    if not REF.match(value):
        raise BadRequest(f"argument {argument}: ref: {_INVALID}: {value!r} contains whitespace")
    return value


def path(value: str | None, argument: str = "path") -> str:
    if not value:
        raise BadRequest(f"argument {argument}: missing path: {_REQUIRED}")
    if len(value.encode()) > MAX_PATH_LENGTH:
        raise BadRequest(
            f"argument {argument}: {_INVALID}: {len(value.encode())} is above maximum length ({MAX_PATH_LENGTH})"
        )
    return value


def storage_namespace(value: str) -> str:
    if not STORAGE_NAMESPACE.match(value):
        raise BadRequest(
            "request body has an error: doesn't match schema: Error at \"/storage_namespace\": string doesn't "
            f'match the regular expression "{STORAGE_NAMESPACE.pattern}" (got {value!r})'
        )
    if not LOCAL_NAMESPACE.match(value):
        raise BadRequest(
            f"failed to match required regex {LOCAL_NAMESPACE.pattern}: invalid storage namespace {value!r}, "
            "this server's blockstore type is local"
        )
    return value
