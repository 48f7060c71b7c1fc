"""What every group of operations needs: the stores, and lookups that answer lakeFS's 404s and 403s."""

from __future__ import annotations

import fnmatch
import json
import sqlite3
import time

from devstack.lakefs_server import refs, trees, validation
from devstack.lakefs_server.blobs import BlobStore
from devstack.lakefs_server.db import Database
from devstack.lakefs_server.errors import Forbidden, NotFound
from devstack.lakefs_server.model import Entry, Repository

DEFAULT_AMOUNT = 100
MAX_AMOUNT = 1000


def page_size(amount: int | None) -> int:
    """lakeFS's paginationAmount: 100 unless asked, at most 1000."""
    if amount is None or amount <= 0:
        return DEFAULT_AMOUNT
    return min(amount, MAX_AMOUNT)


def now() -> int:
    return int(time.time())


class CatalogBase:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db = db
        self.blobs = blobs
        with db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created', ?)", (str(now()),))

    def get_installation_time(self) -> int:
        """When the data directory was first used: the admin user's creation date."""
        with self.db.snapshot() as conn:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'created'").fetchone()["value"])

    def _repository(self, conn: sqlite3.Connection, repo_id: str) -> Repository:
        validation.repository_id(repo_id)
        row = conn.execute("SELECT * FROM repositories WHERE id = ?", (repo_id,)).fetchone()
        if row is None:
            raise NotFound(f"repository not found: {repo_id!r}")
        return Repository(
            id=row["id"],
            storage_namespace=row["storage_namespace"],
            default_branch=row["default_branch"],
            creation_date=row["creation_date"],
            metadata=json.loads(row["metadata"]),
            protected_branches=json.loads(row["protected_branches"]),
        )

    def _branch_head(self, conn: sqlite3.Connection, repo: str, branch: str) -> str:
        validation.branch_id(branch)
        row = conn.execute("SELECT commit_id FROM branches WHERE repo = ? AND name = ?", (repo, branch)).fetchone()
        if row is None:
            raise NotFound(f"branch not found: {branch!r} in repository {repo!r}")
        return row["commit_id"]

    def _tree_of(self, conn: sqlite3.Connection, repo: str, commit_id: str) -> str:
        return refs.must_get_commit(conn, repo, commit_id).tree_id

    def _view(
        self, conn: sqlite3.Connection, repo: str, ref: refs.Resolved, prefix: str = "", after: str = ""
    ) -> dict[str, Entry]:
        """The entries a ref shows under `prefix` and past `after`: a branch's include its uncommitted changes."""
        committed = trees.load_tree(conn, repo, self._tree_of(conn, repo, ref.commit_id), prefix, after)
        if ref.branch is None:
            return committed
        return trees.overlay(committed, trees.staged(conn, repo, ref.branch, prefix, after))

    def _entry_at(self, conn: sqlite3.Connection, repo: str, ref: refs.Resolved, path: str) -> Entry | None:
        if ref.branch is not None:
            changed, entry = trees.staged_entry(conn, repo, ref.branch, path)
            if changed:
                return entry
        return trees.tree_entry(conn, repo, self._tree_of(conn, repo, ref.commit_id), path)

    @staticmethod
    def _is_protected(repository: Repository, branch: str) -> bool:
        return any(fnmatch.fnmatchcase(branch, pattern) for pattern in repository.protected_branches)

    def _check_not_protected(self, repository: Repository, branch: str, message: str) -> None:
        if self._is_protected(repository, branch):
            raise Forbidden(f"{message}: {branch!r} matches a branch protection rule of {repository.id!r}")
