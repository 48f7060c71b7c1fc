"""Commits, diffs between refs, merges, reverts and cherry-picks, with the hooks that guard them.

Operations that run hooks hold the write lock from their first read to their last write: the state the
hooks approved is the state that gets committed. A hook must therefore not write to lakeFS itself (lakeFS
advises the same); it may read.
"""

from __future__ import annotations

import sqlite3

from devstack.lakefs_server import changes, hooks, refs, trees, validation
from devstack.lakefs_server.core import CatalogBase, now, page_size
from devstack.lakefs_server.errors import (
    COMMIT_TO_PROTECTED_BRANCH,
    CONFLICT_FOUND,
    NO_CHANGES,
    BadRequest,
    Conflict,
    PreconditionFailed,
)
from devstack.lakefs_server.model import ADMIN_USER, Change, Commit, Entry

MERGE_STRATEGY_KEY = ".lakefs.merge.strategy"
STRATEGIES = ("", changes.DEST_WINS, changes.SOURCE_WINS)


class VersionOperations(CatalogBase):
    # --- commits

    def commit(
        self, repo: str, branch: str, message: str, metadata: dict[str, str], date: int | None, allow_empty: bool
    ) -> Commit:
        with self.db.lock:
            with self.db.snapshot() as conn:
                repository = self._repository(conn, repo)
                head = self._branch_head(conn, repo, branch)
                self._check_not_protected(repository, branch, COMMIT_TO_PROTECTED_BRANCH)
                parent = refs.must_get_commit(conn, repo, head)
                committed = trees.load_tree(conn, repo, parent.tree_id)
                new_tree = trees.overlay(committed, trees.staged(conn, repo, branch))
            if new_tree == committed and not allow_empty:
                raise BadRequest(f"{NO_CHANGES}: branch {branch!r} has no uncommitted changes to commit")
            event = hooks.Event(hooks.PRE_COMMIT, repo, branch, branch, message, ADMIN_USER, metadata)
            pre_run = self._run_pre_hooks(repo, refs.Resolved(head, branch), event)
            with self.db.transaction() as conn:
                tree_id = trees.save_tree(conn, repo, new_tree)
                commit = refs.new_commit(
                    repo, tree_id, [head], ADMIN_USER, message, metadata, date or now(), parent.generation + 1
                )
                self._advance(conn, repo, branch, commit)
                trees.unstage_prefix(conn, repo, branch)
                if pre_run:
                    hooks.save_run(conn, repo, pre_run, commit.id)
            self._run_post_hooks(repo, hooks.POST_COMMIT, branch, branch, commit)
        return commit

    def get_commit(self, repo: str, ref: str) -> Commit:
        with self.db.snapshot() as conn:
            self._repository(conn, repo)
            validation.ref(ref, "commitId")
            return refs.must_get_commit(conn, repo, refs.resolve(conn, repo, ref).commit_id)

    def log_commits(
        self,
        repo: str,
        ref: str,
        after: str,
        amount: int | None,
        objects: list[str],
        prefixes: list[str],
        limit: bool,
        first_parent: bool,
        since: int | None,
        stop_at: str,
    ) -> tuple[list[Commit], bool]:
        """lakeFS's log: newest first, optionally only commits that changed some objects or prefixes."""
        page = page_size(amount)
        found: list[Commit] = []
        with self.db.snapshot() as conn:
            self._repository(conn, repo)
            validation.ref(ref)
            start = refs.resolve(conn, repo, ref).commit_id
            stop_id = refs.resolve(conn, repo, stop_at).commit_id if stop_at else None
            skipping = bool(after)
            for commit in refs.log(conn, repo, start, first_parent):
                if skipping:
                    skipping = commit.id != after
                    continue
                if since is not None and commit.creation_date < since:
                    break
                if (objects or prefixes) and not self._touches(conn, repo, commit, objects, prefixes):
                    continue
                found.append(commit)
                if commit.id == stop_id or len(found) > page:
                    break
        has_more = len(found) > page and not limit
        return found[:page], has_more

    def _touches(
        self, conn: sqlite3.Connection, repo: str, commit: Commit, objects: list[str], prefixes: list[str]
    ) -> bool:
        parent_tree = self._tree_of(conn, repo, commit.parents[0]) if commit.parents else None
        for path in objects:
            before = trees.tree_entry(conn, repo, parent_tree, path) if parent_tree else None
            if before != trees.tree_entry(conn, repo, commit.tree_id, path):
                return True
        for prefix in prefixes:
            before_tree = trees.load_tree(conn, repo, parent_tree, prefix) if parent_tree else {}
            if before_tree != trees.load_tree(conn, repo, commit.tree_id, prefix):
                return True
        return False

    # --- diffs

    def diff_refs(
        self,
        repo: str,
        left: str,
        right: str,
        diff_type: str,
        prefix: str,
        after: str,
        delimiter: str,
        amount: int | None,
    ) -> tuple[list[Change], bool]:
        """Between the committed states of two refs: two-dot (left to right) or three-dot (what right adds)."""
        with self.db.snapshot() as conn:
            self._repository(conn, repo)
            left_id = refs.resolve(conn, repo, validation.ref(left, "leftRef")).commit_id
            right_id = refs.resolve(conn, repo, validation.ref(right, "rightRef")).commit_id
            left_tree = trees.load_tree(conn, repo, self._tree_of(conn, repo, left_id), prefix)
            right_tree = trees.load_tree(conn, repo, self._tree_of(conn, repo, right_id), prefix)
            if diff_type == "two_dot":
                listed = changes.diff(left_tree, right_tree)
            else:
                base = self._merge_base(conn, repo, left_id, right_id)
                listed = changes.compare(left_tree, right_tree, trees.load_tree(conn, repo, base.tree_id, prefix))
        return changes.page_of_changes(listed, prefix, after, delimiter, page_size(amount))

    def find_merge_base(self, repo: str, source: str, destination: str) -> tuple[str, str, str]:
        with self.db.snapshot() as conn:
            self._repository(conn, repo)
            source_id = refs.resolve(conn, repo, validation.ref(source, "sourceRef")).commit_id
            dest_id = refs.resolve(conn, repo, validation.ref(destination, "destinationBranch")).commit_id
            return source_id, dest_id, self._merge_base(conn, repo, source_id, dest_id).id

    @staticmethod
    def _merge_base(conn: sqlite3.Connection, repo: str, left: str, right: str) -> Commit:
        base = refs.merge_base(conn, repo, left, right)
        if base is None:  # only commits of a bare repository's restored history can be unrelated
            raise BadRequest(f"no merge base: {left} and {right} have no common ancestor")
        return base

    # --- merge

    def merge(
        self,
        repo: str,
        source_ref: str,
        destination: str,
        message: str,
        metadata: dict[str, str],
        strategy: str,
        allow_empty: bool,
        squash: bool,
    ) -> str:
        """A three-way merge from the merge base; allowed into a protected branch, like lakeFS."""
        if strategy not in STRATEGIES:
            raise BadRequest(f"invalid merge strategy: {strategy!r} (use dest-wins or source-wins)")
        with self.db.lock:
            with self.db.snapshot() as conn:
                self._repository(conn, repo)
                validation.ref(source_ref, "sourceRef")
                dest_head = self._branch_head(conn, repo, destination)
                source = refs.resolve(conn, repo, source_ref)
                if source.branch == destination:
                    raise BadRequest(f"source and destination are the same branch: {destination!r}")
                source_commit = refs.must_get_commit(conn, repo, source.commit_id)
                dest_commit = refs.must_get_commit(conn, repo, dest_head)
                base = self._merge_base(conn, repo, source_commit.id, dest_head)
                if source_commit.tree_id == base.tree_id and not allow_empty:
                    raise BadRequest(f"{NO_CHANGES}: {source_ref!r} has nothing to merge into {destination!r}")
                merged = self._merged_tree(
                    conn, repo, dest_commit.tree_id, source_commit.tree_id, base.tree_id, strategy
                )
            metadata = {**metadata, MERGE_STRATEGY_KEY: strategy or "default"}
            message = message or f"Merge '{source_ref}' into '{destination}'"
            # Pre-merge actions come from the merge source, as in lakeFS.
            event = hooks.Event(hooks.PRE_MERGE, repo, destination, source_commit.id, message, ADMIN_USER, metadata)
            pre_run = self._run_pre_hooks(repo, refs.Resolved(source_commit.id), event)
            parents = [dest_head] if squash else [dest_head, source_commit.id]
            generation = max(dest_commit.generation, source_commit.generation) + 1
            with self.db.transaction() as conn:
                tree_id = trees.save_tree(conn, repo, merged)
                commit = refs.new_commit(repo, tree_id, parents, ADMIN_USER, message, metadata, now(), generation)
                self._advance(conn, repo, destination, commit)  # uncommitted changes of the destination stay
                if pre_run:
                    hooks.save_run(conn, repo, pre_run, commit.id)
            self._run_post_hooks(repo, hooks.POST_MERGE, destination, commit.id, commit)
        return commit.id

    def _merged_tree(
        self, conn: sqlite3.Connection, repo: str, dest: str, source: str, base: str, strategy: str
    ) -> dict[str, Entry]:
        if dest == base:
            return trees.load_tree(conn, repo, source)
        try:
            return changes.merge(
                trees.load_tree(conn, repo, dest),
                trees.load_tree(conn, repo, source),
                trees.load_tree(conn, repo, base),
                strategy,
            )
        except changes.MergeConflict as conflict:
            shown = ", ".join(repr(path) for path in conflict.paths[:10])
            # lakeFS answers a conflict with an (empty) MergeResult; the message says which paths.
            raise Conflict(
                f"{CONFLICT_FOUND}: {len(conflict.paths)} path(s) changed on both sides: {shown}",
                extra={"reference": ""},
            ) from conflict

    # --- revert, cherry-pick, hard reset

    def revert(
        self,
        repo: str,
        branch: str,
        ref: str,
        parent_number: int,
        allow_empty: bool,
        message: str | None,
        metadata: dict[str, str] | None,
    ) -> Commit:
        """Undo a commit's changes on the branch: merge its parent into the branch, with it as the base."""
        with self.db.transaction() as conn:
            target, parent_tree, head_commit = self._pick(conn, repo, branch, ref, parent_number, revert=True)
            merged = self._merged_tree(conn, repo, head_commit.tree_id, parent_tree, target.tree_id, "")
            return self._commit_result(
                conn,
                repo,
                branch,
                head_commit,
                merged,
                allow_empty,
                message or f"Revert {ref}",
                metadata or {},
            )

    def cherry_pick(self, repo: str, branch: str, ref: str, parent_number: int | None) -> Commit:
        """Replay a commit's changes (relative to its parent) on the branch."""
        with self.db.transaction() as conn:
            target, parent_tree, head_commit = self._pick(conn, repo, branch, ref, parent_number, revert=False)
            merged = self._merged_tree(conn, repo, head_commit.tree_id, target.tree_id, parent_tree, "")
            metadata = {**target.metadata, "cherry-pick-origin": target.id, "cherry-pick-committer": target.committer}
            return self._commit_result(conn, repo, branch, head_commit, merged, False, target.message, metadata)

    def _pick(
        self, conn: sqlite3.Connection, repo: str, branch: str, ref: str, parent_number: int | None, revert: bool
    ) -> tuple[Commit, str, Commit]:
        """The commit to revert or cherry-pick, the tree of the parent it is compared with, and the branch head."""
        repository = self._repository(conn, repo)
        head = self._branch_head(conn, repo, branch)
        self._check_not_protected(repository, branch, COMMIT_TO_PROTECTED_BRANCH)
        target = refs.must_get_commit(conn, repo, refs.resolve(conn, repo, validation.ref(ref)).commit_id)
        if len(target.parents) > 1 and not parent_number:
            if revert:
                raise Conflict("must specify 1-based parent number for reverting merge commit")
            raise BadRequest("must specify 1-based parent number for cherry-picking merge commit")
        number = parent_number or 1
        if number > max(len(target.parents), 1):
            raise BadRequest(f"parent {number}: given commit does not have the given parent number")
        if target.parents:
            parent_tree = self._tree_of(conn, repo, target.parents[number - 1])
        else:
            parent_tree = trees.save_tree(conn, repo, {})
        return target, parent_tree, refs.must_get_commit(conn, repo, head)

    def _commit_result(
        self,
        conn: sqlite3.Connection,
        repo: str,
        branch: str,
        head: Commit,
        tree: dict[str, Entry],
        allow_empty: bool,
        message: str,
        metadata: dict[str, str],
    ) -> Commit:
        tree_id = trees.save_tree(conn, repo, tree)
        if tree_id == head.tree_id and not allow_empty:
            raise BadRequest(f"{NO_CHANGES}: the result leaves branch {branch!r} unchanged")
        commit = refs.new_commit(repo, tree_id, [head.id], ADMIN_USER, message, metadata, now(), head.generation + 1)
        self._advance(conn, repo, branch, commit)
        return commit

    def hard_reset(self, repo: str, branch: str, ref: str) -> None:
        """Point the branch at another commit; it must have no uncommitted changes."""
        with self.db.transaction() as conn:
            repository = self._repository(conn, repo)
            self._branch_head(conn, repo, branch)
            self._check_not_protected(repository, branch, COMMIT_TO_PROTECTED_BRANCH)
            if trees.has_staged_changes(conn, repo, branch):
                raise BadRequest(f"uncommitted changes (dirty branch): {branch!r}")
            commit_id = refs.resolve(conn, repo, validation.ref(ref)).commit_id
            conn.execute("UPDATE branches SET commit_id = ? WHERE repo = ? AND name = ?", (commit_id, repo, branch))

    @staticmethod
    def _advance(conn: sqlite3.Connection, repo: str, branch: str, commit: Commit) -> None:
        refs.insert_commit(conn, repo, commit)
        conn.execute("UPDATE branches SET commit_id = ? WHERE repo = ? AND name = ?", (commit.id, repo, branch))

    # --- hooks

    def _run_pre_hooks(self, repo: str, source: refs.Resolved, event: hooks.Event) -> hooks.Run | None:
        """Run the pre-hooks; a failure is recorded and answers 412. A passed run is saved by the caller."""
        run = self._run_hooks(repo, source, event)
        if run is not None and not run.passed:
            with self.db.transaction() as conn:
                hooks.save_run(conn, repo, run)
            raise PreconditionFailed(run.error)
        return run

    def _run_post_hooks(self, repo: str, event_type: str, branch: str, source_ref: str, commit: Commit) -> None:
        event = hooks.Event(
            event_type, repo, branch, source_ref, commit.message, commit.committer, commit.metadata, commit.id
        )
        run = self._run_hooks(repo, refs.Resolved(commit.id), event)
        if run is not None:  # a failed post-hook changes nothing: the operation is done
            with self.db.transaction() as conn:
                hooks.save_run(conn, repo, run, commit.id)

    def _run_hooks(self, repo: str, source: refs.Resolved, event: hooks.Event) -> hooks.Run | None:
        with self.db.snapshot() as conn:
            found = self._view(conn, repo, source, hooks.ACTIONS_PREFIX)
        files = {
            path: b"".join(self.blobs.read(entry.address))
            for path, entry in found.items()
            if "/" not in path[len(hooks.ACTIONS_PREFIX) :] and path.endswith((".yaml", ".yml"))
        }
        if not files:
            return None
        try:
            actions = hooks.parse_actions(files)
        except hooks.InvalidAction as exc:
            return hooks.failed_to_load(event, exc)
        return hooks.run_hooks(actions, event)
