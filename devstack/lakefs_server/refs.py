"""Commits and the commit graph: ref expressions, merge bases and the commit log."""

from __future__ import annotations

import hashlib
import heapq
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

from devstack.lakefs_server.errors import BadRequest, NotFound
from devstack.lakefs_server.model import Commit

_HASH = re.compile(r"^[a-fA-F0-9]{1,64}$")
_MODIFIER = re.compile(r"([~^@$])([^~^@$]*)")


@dataclass(frozen=True)
class Resolved:
    """What a ref names: a commit, and the branch when reads should include its uncommitted changes."""

    commit_id: str
    branch: str | None = None


def new_commit(
    repo: str,
    tree_id: str,
    parents: list[str],
    committer: str,
    message: str,
    metadata: dict[str, str],
    creation_date: int,
    generation: int,
) -> Commit:
    """A commit whose id is a hash of its content, like lakeFS's: 64 lowercase hex characters."""
    content = [repo, tree_id, parents, committer, message, metadata, creation_date, generation]
    commit_id = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return Commit(commit_id, tree_id, parents, committer, message, metadata, creation_date, generation, time.time_ns())


def insert_commit(conn: sqlite3.Connection, repo: str, commit: Commit) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO commits (repo, id, tree_id, parents, committer, message, metadata, "
        "creation_date, generation, created_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            repo,
            commit.id,
            commit.tree_id,
            json.dumps(commit.parents),
            commit.committer,
            commit.message,
            json.dumps(commit.metadata),
            commit.creation_date,
            commit.generation,
            commit.created_ns,
        ),
    )


def get_commit(conn: sqlite3.Connection, repo: str, commit_id: str) -> Commit | None:
    row = conn.execute("SELECT * FROM commits WHERE repo = ? AND id = ?", (repo, commit_id)).fetchone()
    if row is None:
        return None
    return Commit(
        id=row["id"],
        tree_id=row["tree_id"],
        parents=json.loads(row["parents"]),
        committer=row["committer"],
        message=row["message"],
        metadata=json.loads(row["metadata"]),
        creation_date=row["creation_date"],
        generation=row["generation"],
        created_ns=row["created_ns"],
    )


def must_get_commit(conn: sqlite3.Connection, repo: str, commit_id: str) -> Commit:
    commit = get_commit(conn, repo, commit_id)
    if commit is None:
        raise NotFound(f"commit not found: {commit_id!r}")
    return commit


def resolve(conn: sqlite3.Connection, repo: str, ref: str) -> Resolved:
    """A ref expression: a commit id or unique prefix, a branch or a tag, then `@`, `~N` or `^N` modifiers.

    Like lakeFS, a hex-looking name is tried as a commit id first, then as a branch, then as a tag.
    """
    base = re.match(r"[^~^@$]*", ref).group(0)  # type: ignore[union-attr]
    modifiers = _MODIFIER.findall(ref[len(base) :])
    if not base:
        raise BadRequest(
            f"ref: invalid value: validation error: {ref!r} has no branch, tag or commit before its modifiers"
        )
    resolved = _resolve_base(conn, repo, base)
    if resolved is None:
        raise NotFound(f"not found: no commit, branch or tag {base!r} in repository {repo!r}")
    if not modifiers:
        return resolved
    commit_id = resolved.commit_id
    for symbol, argument in modifiers:
        if symbol in "@$":
            if resolved.branch is None or len(modifiers) != 1 or argument:
                raise BadRequest(
                    f"ref: invalid value: validation error: {ref!r} ('{symbol}' only follows a branch name)"
                )
            if symbol == "$":
                raise BadRequest(f"ref: invalid value: validation error: {ref!r} (staging-only refs are not supported)")
            return Resolved(commit_id)  # `branch@`: the branch's committed state, without its staging area
        count = _modifier_count(ref, argument)
        commit = must_get_commit(conn, repo, commit_id)
        if symbol == "~":
            for _ in range(count):
                if not commit.parents:
                    raise NotFound(f"not found: {ref!r} goes past the first commit")
                commit = must_get_commit(conn, repo, commit.parents[0])
        elif count:
            if count > len(commit.parents):
                raise BadRequest(
                    f"ref: invalid value: validation error: {ref!r} (commit has {len(commit.parents)} parents)"
                )
            commit = must_get_commit(conn, repo, commit.parents[count - 1])
        commit_id = commit.id
    return Resolved(commit_id)


def _modifier_count(ref: str, argument: str) -> int:
    if not argument:
        return 1
    if not argument.isdigit():
        raise BadRequest(f"ref: invalid value: validation error: could not parse modifier in {ref!r}")
    return int(argument)


def _resolve_base(conn: sqlite3.Connection, repo: str, name: str) -> Resolved | None:
    if _HASH.match(name):
        prefix = name.lower()
        rows = conn.execute(
            "SELECT id FROM commits WHERE repo = ? AND id >= ? AND substr(id, 1, ?) = ? LIMIT 2",
            (repo, prefix, len(prefix), prefix),
        ).fetchall()
        if len(rows) == 1:
            return Resolved(rows[0]["id"])
    row = conn.execute("SELECT commit_id FROM branches WHERE repo = ? AND name = ?", (repo, name)).fetchone()
    if row:
        return Resolved(row["commit_id"], branch=name)
    row = conn.execute("SELECT commit_id FROM tags WHERE repo = ? AND name = ?", (repo, name)).fetchone()
    return Resolved(row["commit_id"]) if row else None


def merge_base(conn: sqlite3.Connection, repo: str, left: str, right: str) -> Commit | None:
    """The best common ancestor: the one with the highest generation (no other is its descendant)."""
    left_ancestors = {commit.id for commit in _walk(conn, repo, left)}
    for commit in _walk(conn, repo, right):
        if commit.id in left_ancestors:
            return commit
    return None


def log(conn: sqlite3.Connection, repo: str, start: str, first_parent: bool = False) -> Iterator[Commit]:
    """The commits reachable from `start`, newest first (lakeFS's order: by creation date)."""
    if first_parent:
        commit: Commit | None = must_get_commit(conn, repo, start)
        while commit is not None:
            yield commit
            commit = must_get_commit(conn, repo, commit.parents[0]) if commit.parents else None
        return
    yield from _walk(conn, repo, start, key=lambda c: (-c.creation_date, -c.created_ns))


def _walk(conn: sqlite3.Connection, repo: str, start: str, key=None) -> Iterator[Commit]:
    """Every ancestor of `start` (itself included) once, highest `key` first (default: generation)."""
    key = key or (lambda c: (-c.generation, c.id))
    first = must_get_commit(conn, repo, start)
    queue = [(key(first), first.id, first)]
    seen = {first.id}
    while queue:
        _, _, commit = heapq.heappop(queue)
        yield commit
        for parent_id in commit.parents:
            if parent_id not in seen:
                seen.add(parent_id)
                parent = must_get_commit(conn, repo, parent_id)
                heapq.heappush(queue, (key(parent), parent.id, parent))
