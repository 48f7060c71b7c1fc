"""Repositories and their refs: settings, branches, tags, and the record of action runs."""

from __future__ import annotations

import hashlib
import json
import sqlite3

from devstack.lakefs_server import refs, trees, validation
from devstack.lakefs_server.core import CatalogBase, now, page_size
from devstack.lakefs_server.errors import (
    DELETE_DEFAULT_BRANCH,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
)
from devstack.lakefs_server.model import Repository

INITIAL_COMMIT_MESSAGE = "Repository created"


class RepositoryOperations(CatalogBase):
    # --- repositories

    def create_repository(self, name: str, storage_namespace: str, default_branch: str, bare: bool) -> Repository:
        if not validation.REPOSITORY_ID.match(name):
            # lakeFS refuses it in its OpenAPI request validation, before any handler runs.
            raise BadRequest(
                "request body has an error: doesn't match schema: Error at \"/name\": string doesn't match the "
                f'regular expression "{validation.REPOSITORY_ID.pattern}" (got {name!r})'
            )
        validation.storage_namespace(storage_namespace)
        validation.branch_id(default_branch, "default_branch")
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM repositories WHERE id = ?", (name,)).fetchone():
                raise Conflict(f"error creating repository: not unique: repository {name!r} already exists")
            owner = conn.execute(
                "SELECT id FROM repositories WHERE storage_namespace = ?", (storage_namespace,)
            ).fetchone()
            if owner:
                raise BadRequest(
                    f"failed to create repository: storage namespace already in use: {storage_namespace!r} "
                    f"belongs to repository {owner['id']!r}"
                )
            created = now()
            conn.execute(
                "INSERT INTO repositories (id, storage_namespace, default_branch, creation_date) VALUES (?, ?, ?, ?)",
                (name, storage_namespace, default_branch, created),
            )
            if not bare:
                # Like lakeFS: the default branch starts at an empty commit.
                tree_id = trees.save_tree(conn, name, {})
                commit = refs.new_commit(name, tree_id, [], "", INITIAL_COMMIT_MESSAGE, {}, created, 1)
                refs.insert_commit(conn, name, commit)
                conn.execute(
                    "INSERT INTO branches (repo, name, commit_id) VALUES (?, ?, ?)", (name, default_branch, commit.id)
                )
            return self._repository(conn, name)

    def get_repository(self, name: str) -> Repository:
        with self.db.snapshot() as conn:
            return self._repository(conn, name)

    def list_repositories(
        self, prefix: str, after: str, amount: int | None, search: str
    ) -> tuple[list[Repository], bool]:
        limit = page_size(amount)
        with self.db.snapshot() as conn:
            rows = conn.execute(
                "SELECT id FROM repositories WHERE id > ? AND substr(id, 1, ?) = ? AND instr(id, ?) > 0 "
                "ORDER BY id LIMIT ?",
                (after, len(prefix), prefix, search, limit + 1),
            ).fetchall()
            repositories = [self._repository(conn, row["id"]) for row in rows]
        return repositories[:limit], len(repositories) > limit

    def delete_repository(self, name: str) -> None:
        with self.db.transaction() as conn:
            self._repository(conn, name)
            # The blobs stay: other repositories may share them (content addressing).
            for table in (
                "branches",
                "tags",
                "commits",
                "trees",
                "tree_entries",
                "staging",
                "action_runs",
                "hook_runs",
            ):
                conn.execute(f"DELETE FROM {table} WHERE repo = ?", (name,))
            conn.execute("DELETE FROM repositories WHERE id = ?", (name,))

    def get_repository_metadata(self, name: str) -> dict[str, str]:
        return self.get_repository(name).metadata

    def update_repository_metadata(self, name: str, set_keys: dict[str, str], delete_keys: list[str]) -> None:
        with self.db.transaction() as conn:
            metadata = self._repository(conn, name).metadata
            metadata.update(set_keys)
            for key in delete_keys:
                metadata.pop(key, None)
            conn.execute("UPDATE repositories SET metadata = ? WHERE id = ?", (json.dumps(metadata), name))

    # --- branch protection

    def get_branch_protection(self, name: str) -> tuple[list[str], str]:
        """The protected branch patterns and their ETag."""
        patterns = self.get_repository(name).protected_branches
        return patterns, _etag(patterns)

    def set_branch_protection(self, name: str, patterns: list[str], if_match: str | None) -> None:
        with self.db.transaction() as conn:
            current = self._repository(conn, name).protected_branches
            # An empty If-Match asks that no rule exists yet.
            expected = if_match.strip('"') if if_match is not None else None
            if expected is not None and expected != _etag(current) and (expected or current):
                raise PreconditionFailed("Precondition failed: the branch protection rules changed (ETag mismatch)")
            self._save_protection(conn, name, patterns)

    def add_branch_protection(self, name: str, pattern: str) -> None:
        with self.db.transaction() as conn:
            patterns = self._repository(conn, name).protected_branches
            if pattern not in patterns:
                self._save_protection(conn, name, [*patterns, pattern])

    def delete_branch_protection(self, name: str, pattern: str) -> None:
        with self.db.transaction() as conn:
            patterns = self._repository(conn, name).protected_branches
            if pattern not in patterns:
                raise NotFound(f"branch protection rule not found: {pattern!r}")
            self._save_protection(conn, name, [p for p in patterns if p != pattern])

    @staticmethod
    def _save_protection(conn: sqlite3.Connection, name: str, patterns: list[str]) -> None:
        for pattern in patterns:
            if not pattern:
                raise BadRequest(
                    'request body has an error: doesn\'t match schema: Error at "/pattern": minimum string length is 1'
                )
        conn.execute(
            "UPDATE repositories SET protected_branches = ? WHERE id = ?", (json.dumps(sorted(set(patterns))), name)
        )

    # --- branches

    def list_branches(
        self, repo: str, prefix: str, after: str, amount: int | None, show_hidden: bool
    ) -> tuple[list[tuple[str, str]], bool]:
        limit = page_size(amount)
        with self.db.snapshot() as conn:
            self._repository(conn, repo)
            rows = conn.execute(
                "SELECT name, commit_id FROM branches WHERE repo = ? AND name > ? AND substr(name, 1, ?) = ? "
                "AND (hidden = 0 OR ?) ORDER BY name LIMIT ?",
                (repo, after, len(prefix), prefix, show_hidden, limit + 1),
            ).fetchall()
        return [(row["name"], row["commit_id"]) for row in rows[:limit]], len(rows) > limit

    def create_branch(self, repo: str, name: str, source: str, hidden: bool) -> str:
        with self.db.transaction() as conn:
            self._repository(conn, repo)
            validation.branch_id(name)
            validation.ref(source, "source")
            if conn.execute("SELECT 1 FROM branches WHERE repo = ? AND name = ?", (repo, name)).fetchone():
                raise Conflict(f"branch already exists: not unique: {name!r}")
            if conn.execute("SELECT 1 FROM tags WHERE repo = ? AND name = ?", (repo, name)).fetchone():
                raise Conflict(f"tag ID {name}: conflict found: a tag named {name!r} exists")
            if refs.get_commit(conn, repo, name):
                raise Conflict(f"commit ID {name}: conflict found: a branch cannot be named like a commit")
            # From a branch, the new branch starts at its last commit: uncommitted changes stay behind.
            commit_id = refs.resolve(conn, repo, source).commit_id
            conn.execute(
                "INSERT INTO branches (repo, name, commit_id, hidden) VALUES (?, ?, ?, ?)",
                (repo, name, commit_id, hidden),
            )
            return commit_id

    def get_branch(self, repo: str, name: str) -> str:
        with self.db.snapshot() as conn:
            self._repository(conn, repo)
            return self._branch_head(conn, repo, name)

    def delete_branch(self, repo: str, name: str) -> None:
        with self.db.transaction() as conn:
            repository = self._repository(conn, repo)
            validation.branch_id(name)
            if name == repository.default_branch:
                raise Forbidden(f"{DELETE_DEFAULT_BRANCH}: {name!r} is the default branch of {repo!r}")
            self._branch_head(conn, repo, name)
            trees.unstage_prefix(conn, repo, name)
            conn.execute("DELETE FROM branches WHERE repo = ? AND name = ?", (repo, name))

    # --- tags

    def list_tags(self, repo: str, prefix: str, after: str, amount: int | None) -> tuple[list[tuple[str, str]], bool]:
        limit = page_size(amount)
        with self.db.snapshot() as conn:
            self._repository(conn, repo)
            rows = conn.execute(
                "SELECT name, commit_id FROM tags WHERE repo = ? AND name > ? AND substr(name, 1, ?) = ? "
                "ORDER BY name LIMIT ?",
                (repo, after, len(prefix), prefix, limit + 1),
            ).fetchall()
        return [(row["name"], row["commit_id"]) for row in rows[:limit]], len(rows) > limit

    def create_tag(self, repo: str, name: str, ref: str) -> str:
        with self.db.transaction() as conn:
            self._repository(conn, repo)
            validation.tag_id(name)
            validation.ref(ref)
            if conn.execute("SELECT 1 FROM branches WHERE repo = ? AND name = ?", (repo, name)).fetchone():
                raise Conflict(f"branch name {name}: conflict found: a branch named {name!r} exists")
            if refs.get_commit(conn, repo, name):
                raise Conflict(f"commit ID {name}: conflict found: a tag cannot be named like a commit")
            if conn.execute("SELECT 1 FROM tags WHERE repo = ? AND name = ?", (repo, name)).fetchone():
                raise Conflict(f"tag already exists: not unique: {name!r}")
            commit_id = refs.resolve(conn, repo, ref).commit_id
            conn.execute("INSERT INTO tags (repo, name, commit_id) VALUES (?, ?, ?)", (repo, name, commit_id))
            return commit_id

    def get_tag(self, repo: str, name: str) -> str:
        with self.db.snapshot() as conn:
            self._repository(conn, repo)
            validation.tag_id(name)
            row = conn.execute("SELECT commit_id FROM tags WHERE repo = ? AND name = ?", (repo, name)).fetchone()
        if row is None:
            raise NotFound(f"tag not found: {name!r}")
        return row["commit_id"]

    def delete_tag(self, repo: str, name: str) -> None:
        with self.db.transaction() as conn:
            self._repository(conn, repo)
            validation.tag_id(name)
            if conn.execute("DELETE FROM tags WHERE repo = ? AND name = ?", (repo, name)).rowcount == 0:
                raise NotFound(f"tag not found: {name!r}")

    # --- action runs

    def list_runs(
        self, repo: str, branch: str, commit_id: str, after: str, amount: int | None
    ) -> tuple[list[sqlite3.Row], bool]:
        limit = page_size(amount)
        with self.db.snapshot() as conn:
            self._repository(conn, repo)
            rows = conn.execute(
                "SELECT * FROM action_runs WHERE repo = ? AND (? = '' OR branch = ?) AND (? = '' OR commit_id = ?) "
                "AND (? = '' OR run_id < ?) ORDER BY run_id DESC LIMIT ?",
                (repo, branch, branch, commit_id, commit_id, after, after, limit + 1),
            ).fetchall()
        return rows[:limit], len(rows) > limit

    def get_run(self, repo: str, run_id: str) -> sqlite3.Row:
        with self.db.snapshot() as conn:
            self._repository(conn, repo)
            row = conn.execute("SELECT * FROM action_runs WHERE repo = ? AND run_id = ?", (repo, run_id)).fetchone()
        if row is None:
            raise NotFound(f"run not found: {run_id!r}")
        return row

    def list_hook_runs(self, repo: str, run_id: str, after: str, amount: int | None) -> tuple[list[sqlite3.Row], bool]:
        limit = page_size(amount)
        self.get_run(repo, run_id)
        with self.db.snapshot() as conn:
            rows = conn.execute(
                "SELECT * FROM hook_runs WHERE repo = ? AND run_id = ? AND hook_run_id > ? "
                "ORDER BY hook_run_id LIMIT ?",
                (repo, run_id, after, limit + 1),
            ).fetchall()
        return rows[:limit], len(rows) > limit

    def hook_output(self, repo: str, run_id: str, hook_run_id: str) -> str:
        self.get_run(repo, run_id)
        with self.db.snapshot() as conn:
            row = conn.execute(
                "SELECT output FROM hook_runs WHERE repo = ? AND run_id = ? AND hook_run_id = ?",
                (repo, run_id, hook_run_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"hook run not found: {hook_run_id!r}")
        return row["output"]


def _etag(patterns: list[str]) -> str:
    return hashlib.md5(json.dumps(sorted(patterns)).encode()).hexdigest()
