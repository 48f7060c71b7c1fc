"""Objects on a branch: uploads, reads, listings, deletions, copies, and the staging area behind them."""

from __future__ import annotations

import sqlite3

from devstack.lakefs_server import changes, refs, trees, validation
from devstack.lakefs_server.blobs import Blob
from devstack.lakefs_server.core import CatalogBase, now, page_size
from devstack.lakefs_server.errors import (
    WRITE_TO_PROTECTED_BRANCH,
    ApiError,
    BadRequest,
    Forbidden,
    NotFound,
    PreconditionFailed,
)
from devstack.lakefs_server.model import Change, Entry, Repository

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_DELETE_PATHS = 1000


class ObjectOperations(CatalogBase):
    def check_upload(self, repo: str, branch: str, path: str, if_none_match: str | None, if_match: str | None) -> None:
        """Refuse an upload before its body is read: a large body should not travel for nothing."""
        with self.db.snapshot() as conn:
            self._check_write(conn, repo, branch, path, if_none_match, if_match)

    def stage_object(
        self,
        repo: str,
        branch: str,
        path: str,
        blob: Blob,
        content_type: str,
        metadata: dict[str, str],
        if_none_match: str | None,
        if_match: str | None,
    ) -> tuple[Repository, Entry]:
        entry = Entry(blob.address, blob.checksum, blob.size, now(), content_type or DEFAULT_CONTENT_TYPE, metadata)
        with self.db.transaction() as conn:
            # Checked again: another writer may have got there while the body was uploading.
            repository = self._check_write(conn, repo, branch, path, if_none_match, if_match)
            trees.stage(conn, repo, branch, path, entry)
        return repository, entry

    def _check_write(
        self,
        conn: sqlite3.Connection,
        repo: str,
        branch: str,
        path: str,
        if_none_match: str | None,
        if_match: str | None,
    ) -> Repository:
        repository = self._repository(conn, repo)
        head = self._branch_head(conn, repo, branch)
        validation.path(path)
        self._check_not_protected(repository, branch, WRITE_TO_PROTECTED_BRANCH)
        if if_none_match is None and if_match is None:
            return repository
        current = self._entry_at(conn, repo, refs.Resolved(head, branch), path)
        if if_none_match is not None:
            if if_none_match != "*":
                raise BadRequest('Unsupported value for If-None-Match - Only "*" is supported')
            if current is not None:
                raise PreconditionFailed(f"path already exists: {path!r} on branch {branch!r}")
        if if_match is not None and (current is None or current.checksum != if_match.strip('"')):
            raise PreconditionFailed(f"Precondition failed: the ETag of {path!r} does not match {if_match!r}")
        return repository

    def get_object(self, repo: str, ref: str, path: str) -> tuple[Repository, Entry]:
        with self.db.snapshot() as conn:
            repository = self._repository(conn, repo)
            validation.ref(ref)
            validation.path(path)
            entry = self._entry_at(conn, repo, refs.resolve(conn, repo, ref), path)
        if entry is None:
            raise NotFound(f"object not found: {path!r} on ref {ref!r}")
        return repository, entry

    def list_objects(
        self, repo: str, ref: str, prefix: str, after: str, delimiter: str, amount: int | None
    ) -> tuple[Repository, list[tuple[str, Entry | None]], bool]:
        """One page of (path, entry) and (common prefix, None) pairs, and whether more follow."""
        with self.db.snapshot() as conn:
            repository = self._repository(conn, repo)
            validation.ref(ref)
            # Entries up to `after` cannot be on the page, not even folded into a common prefix.
            view = self._view(conn, repo, refs.resolve(conn, repo, ref), prefix, after)
        page, has_more = changes.list_level(view.items(), prefix, delimiter, after, page_size(amount), lambda _: None)
        return repository, page, has_more

    def delete_object(self, repo: str, branch: str, path: str) -> None:
        with self.db.transaction() as conn:
            repository = self._repository(conn, repo)
            head = self._branch_head(conn, repo, branch)
            validation.path(path)
            self._check_not_protected(repository, branch, WRITE_TO_PROTECTED_BRANCH)
            self._delete(conn, repo, branch, head, path)

    def delete_objects(self, repo: str, branch: str, paths: list[str]) -> list[dict]:
        """Delete several objects; lakeFS answers 200 with one error per path that could not be deleted."""
        if len(paths) > MAX_DELETE_PATHS:
            raise ApiError(f"request size exceeded, max paths is set to {MAX_DELETE_PATHS}")
        with self.db.transaction() as conn:
            repository = self._repository(conn, repo)
            head = self._branch_head(conn, repo, branch)
            if self._is_protected(repository, branch):
                message = f"{WRITE_TO_PROTECTED_BRANCH}: {branch!r}"
                return [{"path": path, "status_code": 403, "message": message} for path in paths]
            for path in paths:
                if path:  # lakeFS ignores empty paths here (Spark deletes "branch/" as a path)
                    validation.path(path)
                    self._delete(conn, repo, branch, head, path)
        return []

    @staticmethod
    def _delete(conn: sqlite3.Connection, repo: str, branch: str, head: str, path: str) -> None:
        committed = trees.tree_entry(conn, repo, refs.must_get_commit(conn, repo, head).tree_id, path)
        if committed is None:
            trees.unstage(conn, repo, branch, path)  # an uncommitted object just disappears
        else:
            trees.stage(conn, repo, branch, path, None)

    def copy_object(
        self, repo: str, branch: str, dest_path: str, src_ref: str, src_path: str
    ) -> tuple[Repository, Entry]:
        with self.db.transaction() as conn:
            repository = self._repository(conn, repo)
            self._branch_head(conn, repo, branch)
            validation.path(dest_path, "dest_path")
            validation.path(src_path, "src_path")
            self._check_not_protected(repository, branch, WRITE_TO_PROTECTED_BRANCH)
            source = self._entry_at(conn, repo, refs.resolve(conn, repo, src_ref or branch), src_path)
            if source is None:
                raise NotFound(f"object not found: {src_path!r} on ref {src_ref or branch!r}")
            copy = Entry(source.address, source.checksum, source.size, now(), source.content_type, source.metadata)
            trees.stage(conn, repo, branch, dest_path, copy)
        return repository, copy

    def update_object_metadata(self, repo: str, branch: str, path: str, metadata: dict[str, str]) -> None:
        with self.db.transaction() as conn:
            repository = self._repository(conn, repo)
            head = self._branch_head(conn, repo, branch)
            validation.path(path)
            self._check_not_protected(repository, branch, WRITE_TO_PROTECTED_BRANCH)
            entry = self._entry_at(conn, repo, refs.Resolved(head, branch), path)
            if entry is None:
                raise NotFound(f"object not found: {path!r} on branch {branch!r}")
            updated = Entry(entry.address, entry.checksum, entry.size, entry.mtime, entry.content_type, metadata)
            trees.stage(conn, repo, branch, path, updated)

    def reset_branch(self, repo: str, branch: str, reset_type: str, path: str) -> None:
        """Drop uncommitted changes: all of them, one object's, or those under a prefix."""
        with self.db.transaction() as conn:
            repository = self._repository(conn, repo)
            self._branch_head(conn, repo, branch)
            if self._is_protected(repository, branch):
                raise Forbidden(f"{WRITE_TO_PROTECTED_BRANCH}: {branch!r}")
            if reset_type == "reset":
                trees.unstage_prefix(conn, repo, branch)
            elif reset_type == "object":
                trees.unstage(conn, repo, branch, validation.path(path))
            elif reset_type == "common_prefix":
                trees.unstage_prefix(conn, repo, branch, path)
            else:
                raise BadRequest(f"unknown reset type: {reset_type!r}")

    def diff_branch(
        self, repo: str, branch: str, prefix: str, after: str, delimiter: str, amount: int | None
    ) -> tuple[list[Change], bool]:
        """The branch's uncommitted changes."""
        with self.db.snapshot() as conn:
            self._repository(conn, repo)
            head = self._branch_head(conn, repo, branch)
            committed = trees.load_tree(conn, repo, self._tree_of(conn, repo, head), prefix)
            staged = trees.staged(conn, repo, branch, prefix)
        uncommitted = changes.diff(committed, trees.overlay(committed, staged))
        return changes.page_of_changes(uncommitted, prefix, after, delimiter, page_size(amount))
