"""The metadata store: one SQLite file in WAL mode with synchronous=FULL.

Every API operation that changes state is one transaction, so a crash leaves either all of it or none.
Writers are serialized by one lock (SQLite allows a single writer anyway, and the lock keeps the
read-check-write sequences of an operation free of races); readers use their own thread's connection and
see the last committed state without waiting.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS repositories (
    id TEXT PRIMARY KEY,
    storage_namespace TEXT NOT NULL,
    default_branch TEXT NOT NULL,
    creation_date INTEGER NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    protected_branches TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE IF NOT EXISTS branches (
    repo TEXT NOT NULL, name TEXT NOT NULL, commit_id TEXT NOT NULL, hidden INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (repo, name)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS tags (
    repo TEXT NOT NULL, name TEXT NOT NULL, commit_id TEXT NOT NULL,
    PRIMARY KEY (repo, name)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS commits (
    repo TEXT NOT NULL, id TEXT NOT NULL, tree_id TEXT NOT NULL, parents TEXT NOT NULL,
    committer TEXT NOT NULL, message TEXT NOT NULL, metadata TEXT NOT NULL,
    creation_date INTEGER NOT NULL, generation INTEGER NOT NULL, created_ns INTEGER NOT NULL,
    PRIMARY KEY (repo, id)
) WITHOUT ROWID;

-- A tree is the full path -> entry table of one commit, shared by every commit with the same content.
CREATE TABLE IF NOT EXISTS trees (repo TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (repo, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tree_entries (
    repo TEXT NOT NULL, tree_id TEXT NOT NULL, path TEXT NOT NULL,
    address TEXT NOT NULL, checksum TEXT NOT NULL, size INTEGER NOT NULL, mtime INTEGER NOT NULL,
    content_type TEXT NOT NULL, metadata TEXT NOT NULL,
    PRIMARY KEY (repo, tree_id, path)
) WITHOUT ROWID;

-- Uncommitted changes of a branch; a NULL address is a deletion (tombstone).
CREATE TABLE IF NOT EXISTS staging (
    repo TEXT NOT NULL, branch TEXT NOT NULL, path TEXT NOT NULL,
    address TEXT, checksum TEXT, size INTEGER, mtime INTEGER, content_type TEXT, metadata TEXT,
    PRIMARY KEY (repo, branch, path)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS action_runs (
    repo TEXT NOT NULL, run_id TEXT NOT NULL, branch TEXT NOT NULL, commit_id TEXT NOT NULL,
    event_type TEXT NOT NULL, status TEXT NOT NULL, start_time TEXT NOT NULL, end_time TEXT NOT NULL,
    PRIMARY KEY (repo, run_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hook_runs (
    repo TEXT NOT NULL, run_id TEXT NOT NULL, hook_run_id TEXT NOT NULL, action TEXT NOT NULL,
    hook_id TEXT NOT NULL, status TEXT NOT NULL, start_time TEXT NOT NULL, end_time TEXT NOT NULL,
    output TEXT NOT NULL,
    PRIMARY KEY (repo, run_id, hook_run_id)
) WITHOUT ROWID;
"""


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Reentrant: an operation that runs hooks holds it across its read phase, the hooks and its write.
        self.lock = threading.RLock()
        self._local = threading.local()
        with self.lock:
            # executescript manages its own transaction; each statement is idempotent.
            self._connection().executescript(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: transactions are opened explicitly below, never implicitly.
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Generator[sqlite3.Connection]:
        """A write transaction: all of it is committed, or none of it if anything raises."""
        with self.lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Generator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state."""
        conn = self._connection()
        if conn.in_transaction:  # already inside this thread's write transaction
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")
