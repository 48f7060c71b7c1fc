"""The JSON shapes of lakeFS's API (the OpenAPI schemas the SDK's models parse)."""

from __future__ import annotations

import sqlite3
from typing import Any

from devstack.lakefs_server.core import MAX_AMOUNT
from devstack.lakefs_server.model import Change, Commit, Entry, Repository

# The lakeFS release whose API this server follows (../shared/lakefs/openapi.yml).
LAKEFS_VERSION = "1.84.0"


def listing(results: list[Any], has_more: bool, next_offset: str) -> dict[str, Any]:
    """lakeFS's paged list: `next_offset` is the key of the last result when more follow."""
    return {
        "pagination": {
            "has_more": has_more,
            "next_offset": next_offset if has_more else "",
            "results": len(results),
            "max_per_page": MAX_AMOUNT,
        },
        "results": results,
    }


def repository(repo: Repository) -> dict[str, Any]:
    return {
        "id": repo.id,
        "creation_date": repo.creation_date,
        "default_branch": repo.default_branch,
        "storage_namespace": repo.storage_namespace,
        "read_only": False,
    }


def commit(c: Commit) -> dict[str, Any]:
    return {
        "id": c.id,
        "parents": c.parents,
        "committer": c.committer,
        "message": c.message,
        "creation_date": c.creation_date,
        "meta_range_id": c.tree_id,
        "metadata": c.metadata,
        "generation": c.generation,
        "version": 1,
    }


def ref(name: str, commit_id: str) -> dict[str, str]:
    return {"id": name, "commit_id": commit_id}


def object_stats(repo: Repository, path: str, entry: Entry, with_metadata: bool = True) -> dict[str, Any]:
    return {
        "path": path,
        "path_type": "object",
        "physical_address": repo.physical_address(entry),
        "checksum": entry.checksum,
        "size_bytes": entry.size,
        "mtime": entry.mtime,
        "content_type": entry.content_type,
        "metadata": dict(entry.metadata) if with_metadata else {},
    }


def common_prefix(path: str) -> dict[str, Any]:
    # lakeFS serializes the required ObjectStats fields of a common prefix as zero values.
    return {"path": path, "path_type": "common_prefix", "physical_address": "", "checksum": "", "mtime": 0}


def change(c: Change) -> dict[str, Any]:
    body: dict[str, Any] = {"type": c.type, "path": c.path, "path_type": c.path_type}
    if c.size is not None:
        body["size_bytes"] = c.size
    return body


def version_config() -> dict[str, Any]:
    return {"version": LAKEFS_VERSION, "upgrade_recommended": False}


def storage_config() -> dict[str, Any]:
    return {
        "blockstore_type": "local",
        "blockstore_namespace_example": "local://example-repository",
        "blockstore_namespace_ValidityRegex": "^local://",
        "default_namespace_prefix": "local://",
        "pre_sign_support": False,
        "pre_sign_support_ui": False,
        "import_support": False,
        "import_validity_regex": "^local://",
        "pre_sign_multipart_upload": False,
        "blockstore_id": "",
        "blockstore_description": "files in the server's data directory",
    }


def action_run(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "run_id": row["run_id"],
        "branch": row["branch"],
        "commit_id": row["commit_id"],
        "event_type": row["event_type"],
        "status": row["status"],
        "start_time": row["start_time"],
        "end_time": row["end_time"],
    }


def hook_run(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "hook_run_id": row["hook_run_id"],
        "action": row["action"],
        "hook_id": row["hook_id"],
        "status": row["status"],
        "start_time": row["start_time"],
        "end_time": row["end_time"],
    }
