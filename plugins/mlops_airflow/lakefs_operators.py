"""Operators that create, commit, merge and delete lakeFS branches for a DAG run.

Every commit and merge is stamped with the Airflow run behind it (dag_id, run_id, logical date, task_id and a
link back to the run), and every operator that lands on a commit shows a "lakeFS" button for it. All of them
are safe to retry: a second attempt finds the work of the first and reports it instead of failing or
duplicating it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from mlops_airflow.lakefs_hook import LakeFSHook
from mlops_airflow.links import LakeFSCommitLink
from mlops_airflow.run_context import airflow_run_metadata, retry_marker


class _LakeFSOperator(BaseOperator):
    operator_extra_links = (LakeFSCommitLink(),)
    ui_color = "#a8e6cf"

    def __init__(self, *, repository: str | None = None, lakefs_conn_id: str = "lakefs_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.repository = repository
        self.lakefs_conn_id = lakefs_conn_id

    def _open(self):
        hook = LakeFSHook(self.lakefs_conn_id)
        return hook, hook.get_repository(self.repository)

    def _show_commit(self, context: Context, hook: LakeFSHook, repository: str, commit_id: str) -> None:
        context["ti"].xcom_push(key=LakeFSCommitLink.source_key, value=hook.commit_url(repository, commit_id))


class LakeFSCreateBranchOperator(_LakeFSOperator):
    """Create `branch` from `source_ref` (kept when it exists already). Returns the branch's head commit id."""

    template_fields: Sequence[str] = ("repository", "branch", "source_ref")

    def __init__(self, *, branch: str, source_ref: str = "main", **kwargs) -> None:
        super().__init__(**kwargs)
        self.branch = branch
        self.source_ref = source_ref

    def execute(self, context: Context) -> str:
        from include.mlops import lakefs_repository

        hook, repo = self._open()
        existed = lakefs_repository.branch_exists(repo, self.branch)
        head = lakefs_repository.create_branch(repo, self.branch, self.source_ref)
        verb = "kept existing" if existed else "created"
        self.log.info(
            "lakeFS %s: %s branch %r at commit %s (from %r)", repo.id, verb, self.branch, head, self.source_ref
        )
        self._show_commit(context, hook, repo.id, head)
        return head


class LakeFSCommitOperator(_LakeFSOperator):
    """Commit the staged changes of `branch` with `message`, `metadata` and the Airflow run's stamp.

    Returns the commit id. With nothing staged: when this task made a commit on the branch in this run
    already (an earlier try committed, then died), that commit is returned; otherwise the task fails saying
    so, unless `allow_empty` is set, in which case an empty commit is made, so that the task always hands on a
    commit of its own (and never a later commit of the branch).

    `paths` (prefixes) limits the commit to what this step is about: staged changes elsewhere, such as the
    half-done work of a later task killed in an earlier try of the run, are reset first (and logged).
    """

    template_fields: Sequence[str] = ("repository", "branch", "message", "metadata")
    template_fields_renderers = {"metadata": "json"}

    def __init__(
        self,
        *,
        branch: str,
        message: str,
        metadata: Mapping[str, Any] | None = None,
        allow_empty: bool = False,
        paths: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.branch = branch
        self.message = message
        self.metadata = metadata
        self.allow_empty = allow_empty
        self.paths = tuple(paths) if paths else None

    def execute(self, context: Context) -> str:
        from include.mlops import lakefs_repository

        hook, repo = self._open()
        if self.paths:
            stray = lakefs_repository.reset_uncommitted_outside(repo, self.branch, self.paths)
            if stray:
                self.log.warning(
                    "lakeFS %s: reset %d staged change(s) outside %s: %s", repo.id, len(stray), self.paths, stray
                )
        stamp = airflow_run_metadata(context)
        metadata = {**(self.metadata or {}), **stamp}
        made = lakefs_repository.commit_once(repo, self.branch, self.message, metadata, retry_marker(stamp))
        if made is not None:
            commit_id = made.id
            earlier = made.metadata.get("airflow_try_number") != stamp["airflow_try_number"]
            self.log.info(
                "lakeFS %s: branch %r at %s (%s)",
                repo.id,
                self.branch,
                commit_id,
                "nothing staged; an earlier try of this task committed it" if earlier else "committed",
            )
        elif self.allow_empty:
            commit_id = lakefs_repository.commit(repo, self.branch, self.message, metadata, allow_empty=True).id
            self.log.info("lakeFS %s: nothing new on branch %r; empty commit %s", repo.id, self.branch, commit_id)
        else:
            raise lakefs_repository.NothingToCommit(
                f"lakeFS {repo.id}: nothing to commit on branch {self.branch!r}; "
                "the tasks before this one staged no changes"
            )
        self._show_commit(context, hook, repo.id, commit_id)
        return commit_id


class LakeFSMergeOperator(_LakeFSOperator):
    """Merge `source_ref` into `destination_branch`, stamped with the Airflow run. Returns the commit id.

    When the source holds nothing new for the destination (a retry after a successful merge, or a re-run of an
    interval already on `main`) the destination's head is returned and the log says so. A conflict fails the
    task with the conflicting paths; `strategy` ("source-wins" or "dest-wins") resolves conflicts instead.
    """

    template_fields: Sequence[str] = ("repository", "source_ref", "destination_branch", "message", "metadata")
    template_fields_renderers = {"metadata": "json"}

    def __init__(
        self,
        *,
        source_ref: str,
        destination_branch: str = "main",
        message: str = "",
        metadata: Mapping[str, Any] | None = None,
        strategy: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.source_ref = source_ref
        self.destination_branch = destination_branch
        self.message = message
        self.metadata = metadata
        self.strategy = strategy

    def execute(self, context: Context) -> str:
        from include.mlops import lakefs_repository

        hook, repo = self._open()
        message = self.message or f"Merge {self.source_ref} into {self.destination_branch}"
        metadata = {**(self.metadata or {}), **airflow_run_metadata(context)}
        try:
            commit_id = lakefs_repository.merge(
                repo, self.source_ref, self.destination_branch, message, metadata, strategy=self.strategy
            )
            self.log.info(
                "lakeFS %s: merged %r into %r as %s", repo.id, self.source_ref, self.destination_branch, commit_id
            )
        except lakefs_repository.NothingToCommit:
            commit_id = lakefs_repository.head_commit(repo, self.destination_branch)
            self.log.info(
                "lakeFS %s: %r holds nothing new for %r (already merged); its head is %s",
                repo.id,
                self.source_ref,
                self.destination_branch,
                commit_id,
            )
        self._show_commit(context, hook, repo.id, commit_id)
        return commit_id


class LakeFSDeleteBranchOperator(_LakeFSOperator):
    """Delete `branch`; a branch that is gone already is fine (returns False)."""

    operator_extra_links = ()
    template_fields: Sequence[str] = ("repository", "branch")

    def __init__(self, *, branch: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.branch = branch

    def execute(self, context: Context) -> bool:
        from include.mlops import lakefs_repository

        _, repo = self._open()
        deleted = lakefs_repository.delete_branch(repo, self.branch, missing_ok=True)
        self.log.info("lakeFS %s: branch %r %s", repo.id, self.branch, "deleted" if deleted else "did not exist")
        return deleted
