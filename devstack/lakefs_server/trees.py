"""Trees (the committed path -> entry tables) and staging areas (a branch's uncommitted changes) in SQLite.

A tree is stored whole, keyed by a hash of its content: a commit that changes nothing reuses its parent's
rows, and two branches with the same content share one tree. Repositories hold thousands of objects, not
millions, so whole-tree copies stay small and every read is a plain indexed query.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping

from devstack.lakefs_server.model import Entry

_ENTRY_COLUMNS = "path, address, checksum, size, mtime, content_type, metadata"


def tree_id_of(entries: Mapping[str, Entry]) -> str:
    digest = hashlib.sha256()
    for path in sorted(entries):
        digest.update(f"{path}\0{entries[path].identity()}\n".encode())
    return digest.hexdigest()


def save_tree(conn: sqlite3.Connection, repo: str, entries: Mapping[str, Entry]) -> str:
    tree_id = tree_id_of(entries)
    if conn.execute("SELECT 1 FROM trees WHERE repo = ? AND id = ?", (repo, tree_id)).fetchone():
        return tree_id
    conn.execute("INSERT INTO trees (repo, id) VALUES (?, ?)", (repo, tree_id))
    conn.executemany(
        f"INSERT INTO tree_entries (repo, tree_id, {_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(repo, tree_id, path, *_entry_values(entry)) for path, entry in entries.items()],
    )
    return tree_id


def load_tree(conn: sqlite3.Connection, repo: str, tree_id: str, prefix: str = "", after: str = "") -> dict[str, Entry]:
    """The tree's entries under `prefix` and past `after`, in path order."""
    rows = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM tree_entries WHERE repo = ? AND tree_id = ? AND path >= ? AND path > ? "
        "AND substr(path, 1, ?) = ? ORDER BY path",
        (repo, tree_id, prefix, after, len(prefix), prefix),
    )
    return {row["path"]: _entry(row) for row in rows}


def tree_entry(conn: sqlite3.Connection, repo: str, tree_id: str, path: str) -> Entry | None:
    row = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM tree_entries WHERE repo = ? AND tree_id = ? AND path = ?",
        (repo, tree_id, path),
    ).fetchone()
    return _entry(row) if row else None


def staged(
    conn: sqlite3.Connection, repo: str, branch: str, prefix: str = "", after: str = ""
) -> dict[str, Entry | None]:
    """The branch's uncommitted changes under `prefix` and past `after`: an entry, or None for a deletion."""
    rows = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM staging WHERE repo = ? AND branch = ? AND path >= ? AND path > ? "
        "AND substr(path, 1, ?) = ? ORDER BY path",
        (repo, branch, prefix, after, len(prefix), prefix),
    )
    return {row["path"]: _entry(row) if row["address"] is not None else None for row in rows}


def staged_entry(conn: sqlite3.Connection, repo: str, branch: str, path: str) -> tuple[bool, Entry | None]:
    """(True, entry or None for a deletion) when `path` has an uncommitted change, (False, None) if not."""
    row = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM staging WHERE repo = ? AND branch = ? AND path = ?", (repo, branch, path)
    ).fetchone()
    if row is None:
        return False, None
    return True, _entry(row) if row["address"] is not None else None


def stage(conn: sqlite3.Connection, repo: str, branch: str, path: str, entry: Entry | None) -> None:
    values = _entry_values(entry) if entry else (None,) * 6
    conn.execute(
        f"INSERT OR REPLACE INTO staging (repo, branch, {_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (repo, branch, path, *values),
    )


def unstage(conn: sqlite3.Connection, repo: str, branch: str, path: str) -> None:
    conn.execute("DELETE FROM staging WHERE repo = ? AND branch = ? AND path = ?", (repo, branch, path))


def unstage_prefix(conn: sqlite3.Connection, repo: str, branch: str, prefix: str = "") -> None:
    conn.execute(
        "DELETE FROM staging WHERE repo = ? AND branch = ? AND substr(path, 1, ?) = ?",
        (repo, branch, len(prefix), prefix),
    )


def has_staged_changes(conn: sqlite3.Connection, repo: str, branch: str) -> bool:
    row = conn.execute("SELECT 1 FROM staging WHERE repo = ? AND branch = ? LIMIT 1", (repo, branch))
    return row.fetchone() is not None


def overlay(committed: Mapping[str, Entry], changes: Mapping[str, Entry | None]) -> dict[str, Entry]:
    """What a branch shows: its committed entries with the staged changes applied, in path order."""
    view = dict(committed)
    for path, entry in changes.items():
        if entry is None:
            view.pop(path, None)
        else:
            view[path] = entry
    return dict(sorted(view.items()))


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(
        address=row["address"],
        checksum=row["checksum"],
        size=row["size"],
        mtime=row["mtime"],
        content_type=row["content_type"],
        metadata=json.loads(row["metadata"]),
    )


def _entry_values(entry: Entry) -> tuple:
    meta = json.dumps(dict(entry.metadata), sort_keys=True)
    return entry.address, entry.checksum, entry.size, entry.mtime, entry.content_type, meta
