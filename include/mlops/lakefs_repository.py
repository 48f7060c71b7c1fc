"""Data versioning on lakeFS: a small API over the high-level `lakefs` SDK.

Every function takes a `lakefs.Repository` (or a client to make one) and speaks in commit ids and paths, so
that Airflow tasks can hand references on through XCom and never data. Errors are turned into the
exceptions below, each with a sentence that names the repository, branch or path involved.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import lakefs
import urllib3.exceptions
from lakefs.exceptions import (
    BadRequestException,
    ConflictException,
    ForbiddenException,
    LakeFSException,
    NotAuthorizedException,
    NotFoundException,
    ServerException,
)

from include.mlops.naming import RUN_BRANCH_PREFIX

if TYPE_CHECKING:
    import pandas as pd

PARQUET = "application/vnd.apache.parquet"
# Reading and uploading in chunks keeps memory flat for training snapshots of hundreds of MB.
_CHUNK_BYTES = 8 * 1024 * 1024


class VersioningError(RuntimeError):
    """Base of every error this module raises."""


class LakeFSUnavailable(VersioningError):
    """lakeFS cannot be reached, or refused our credentials."""


class RefNotFound(VersioningError):
    """A repository, branch, tag, commit or object does not exist."""


class NothingToCommit(VersioningError):
    """A commit (or merge) was asked for, but there are no changes."""


class MergeConflict(VersioningError):
    """Both sides changed the same paths since their merge base."""

    def __init__(self, source: str, destination: str, paths: list[str]):
        self.source = source
        self.destination = destination
        self.paths = paths
        shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
        super().__init__(
            f"merging {source!r} into {destination!r} conflicts on {len(paths)} path(s): {shown or 'unknown'}"
        )


class HookRejected(VersioningError):
    """A lakeFS pre-commit or pre-merge hook refused the operation (HTTP 412)."""


class ProtectedBranch(VersioningError):
    """The branch is protected: it takes merges, not direct writes or commits (HTTP 403)."""


@dataclass(frozen=True)
class CommitInfo:
    id: str
    message: str
    metadata: dict[str, str]
    parents: list[str]
    creation_date: int


@dataclass(frozen=True)
class Change:
    """One difference between two refs: `type` is added, removed, changed or conflict."""

    type: str
    path: str
    size_bytes: int | None = None


@dataclass(frozen=True)
class ObjectEntry:
    path: str
    size_bytes: int
    checksum: str


def connect(endpoint: str, access_key_id: str, secret_access_key: str) -> lakefs.Client:
    """A client for `endpoint`, checked with one call so a wrong URL or key fails here and says so."""
    client = lakefs.Client(host=endpoint.rstrip("/"), username=access_key_id, password=secret_access_key)
    try:
        client.sdk_client.auth_api.get_current_user()
    except Exception as exc:  # the SDK raises urllib3 errors when unreachable, ApiException on 401
        status = getattr(exc, "status", None)
        if status == 401:
            raise LakeFSUnavailable(
                f"lakeFS at {endpoint} refused the credentials of access key {access_key_id!r} (HTTP 401)"
            ) from exc
        raise LakeFSUnavailable(f"lakeFS at {endpoint} cannot be reached: {_reason(exc)}") from exc
    return client


def ensure_repository(
    client: lakefs.Client, name: str, storage_namespace: str, default_branch: str = "main"
) -> lakefs.Repository:
    """The repository `name`, created when missing (an existing one is kept as it is)."""
    with _translated(f"repository {name!r}"):
        return lakefs.Repository(name, client=client).create(
            storage_namespace=storage_namespace, default_branch=default_branch, exist_ok=True
        )


def existing_repository(client: lakefs.Client, name: str) -> lakefs.Repository:
    """The repository `name`, which must exist (RefNotFound names it otherwise): one to read from, never made."""
    repo = lakefs.Repository(name, client=client)
    with _translated(f"repository {name!r}"):
        repo.properties  # noqa: B018 - the call is the check
    return repo


def create_branch(repo: lakefs.Repository, name: str, source_ref: str) -> str:
    """Create branch `name` from `source_ref`; when it exists already it is kept. Returns its head commit id.

    Idempotent on purpose: a retried task finds the branch its first attempt made, with that attempt's
    uncommitted work still on it.
    """
    with _translated(f"branch {name!r} from {source_ref!r} in {repo.id!r}"):
        branch = repo.branch(name).create(source_ref, exist_ok=True)
        return branch.head.id


def branch_exists(repo: lakefs.Repository, name: str) -> bool:
    try:
        with _translated(f"branch {name!r} in {repo.id!r}"):
            repo.branch(name).head  # noqa: B018 - the call is the check
    except RefNotFound:
        return False
    return True


def head_commit(repo: lakefs.Repository, ref: str) -> str:
    """The commit id that `ref` (a branch, tag, commit id or ref expression) points to."""
    with _translated(f"ref {ref!r} in {repo.id!r}"):
        return repo.ref(ref).get_commit().id


def get_commit(repo: lakefs.Repository, ref: str) -> CommitInfo:
    with _translated(f"ref {ref!r} in {repo.id!r}"):
        commit = repo.ref(ref).get_commit()
    return _commit_info(commit)


def log(repo: lakefs.Repository, ref: str, max_amount: int | None = None) -> list[CommitInfo]:
    """Commits reachable from `ref`, newest first."""
    with _translated(f"log of {ref!r} in {repo.id!r}"):
        return [_commit_info(c) for c in repo.ref(ref).log(max_amount=max_amount)]


def write_bytes(
    repo: lakefs.Repository,
    branch: str,
    path: str,
    data: bytes,
    metadata: Mapping[str, str] | None = None,
    content_type: str = "application/octet-stream",
) -> None:
    with _translated(f"{path!r} on branch {branch!r} of {repo.id!r}"):
        repo.branch(branch).object(path).upload(
            data, mode="wb", content_type=content_type, metadata=dict(metadata or {})
        )


def upload_file(
    repo: lakefs.Repository,
    branch: str,
    path: str,
    local_path: Path,
    metadata: Mapping[str, str] | None = None,
    content_type: str = "application/octet-stream",
) -> None:
    """Upload a local file without holding it in memory."""
    with _translated(f"{path!r} on branch {branch!r} of {repo.id!r}"):
        obj = repo.branch(branch).object(path)
        with (
            open(local_path, "rb") as source,
            obj.writer("wb", content_type=content_type, metadata=dict(metadata or {})) as target,
        ):
            shutil.copyfileobj(source, target, _CHUNK_BYTES)


def read_bytes(repo: lakefs.Repository, ref: str, path: str) -> bytes:
    with _translated(f"{path!r} at {ref!r} in {repo.id!r}"):
        with repo.ref(ref).object(path).reader(mode="rb") as reader:
            return reader.read()


def download_file(repo: lakefs.Repository, ref: str, path: str, local_path: Path) -> Path:
    with _translated(f"{path!r} at {ref!r} in {repo.id!r}"):
        local_path.parent.mkdir(parents=True, exist_ok=True)
        with repo.ref(ref).object(path).reader(mode="rb") as reader, open(local_path, "wb") as target:
            while chunk := reader.read(_CHUNK_BYTES):
                target.write(chunk)
    return local_path


def write_parquet(
    repo: lakefs.Repository,
    branch: str,
    path: str,
    frame: pd.DataFrame,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write `frame` as Parquet."""
    write_bytes(repo, branch, path, parquet_bytes(frame), metadata, content_type=PARQUET)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """`frame` as Parquet (no index, zstd). The same frame always gives the same bytes."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, engine="pyarrow", compression="zstd")
    return buffer.getvalue()


def read_parquet(repo: lakefs.Repository, ref: str, path: str) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(io.BytesIO(read_bytes(repo, ref, path)), engine="pyarrow")


def parquet_row_groups(repo: lakefs.Repository, ref: str, path: str) -> list[int]:
    """The rows of each row group of the Parquet object at `path`, read from its footer alone (range reads)."""
    import pyarrow.parquet as pq

    with _translated(f"{path!r} at {ref!r} in {repo.id!r}"), repo.ref(ref).object(path).reader(mode="rb") as reader:
        try:
            metadata = pq.ParquetFile(reader).metadata
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise VersioningError(f"{path!r} at {ref!r} in {repo.id!r} is not a Parquet file ({exc})") from exc
        return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]


def read_parquet_row_groups(
    repo: lakefs.Repository, ref: str, path: str, row_groups: list[int], columns: list[str] | None = None
) -> pd.DataFrame:
    """The rows of `row_groups` of the Parquet object at `path`, reading those groups (and the footer) only; with
    `columns`, only those of them the file has."""
    import pyarrow.parquet as pq

    with _translated(f"{path!r} at {ref!r} in {repo.id!r}"), repo.ref(ref).object(path).reader(mode="rb") as reader:
        return pq.ParquetFile(reader).read_row_groups(row_groups, columns=columns).to_pandas()


def object_exists(repo: lakefs.Repository, ref: str, path: str) -> bool:
    with _translated(f"{path!r} at {ref!r} in {repo.id!r}"):
        return repo.ref(ref).object(path).exists()


def object_metadata(repo: lakefs.Repository, ref: str, path: str) -> dict[str, str]:
    """The user metadata of the object at `path` (empty when there is no such object)."""
    try:
        with _translated(f"{path!r} at {ref!r} in {repo.id!r}"):
            return dict(repo.ref(ref).object(path).stat().metadata or {})
    except RefNotFound:
        return {}


def reset_uncommitted(repo: lakefs.Repository, branch: str, path: str) -> None:
    """Drop the uncommitted change of one object on `branch`, back to its committed state (or absence)."""
    with _translated(f"reset of {path!r} on branch {branch!r} of {repo.id!r}"):
        repo.branch(branch).reset_changes(path_type="object", path=path)


def reset_uncommitted_outside(repo: lakefs.Repository, branch: str, prefixes: tuple[str, ...]) -> list[str]:
    """Reset every uncommitted change on `branch` whose path starts with none of `prefixes`; return their paths."""
    stray = [c.path for c in uncommitted(repo, branch) if not c.path.startswith(prefixes)]
    for path in stray:
        reset_uncommitted(repo, branch, path)
    return stray


def list_objects(repo: lakefs.Repository, ref: str, prefix: str = "") -> list[ObjectEntry]:
    """Every object under `prefix` at `ref`, in path order (no delimiter: the whole subtree)."""
    with _translated(f"objects under {prefix!r} at {ref!r} in {repo.id!r}"):
        return [
            ObjectEntry(path=o.path, size_bytes=o.size_bytes or 0, checksum=o.checksum)
            for o in repo.ref(ref).objects(prefix=prefix)
        ]


def delete_objects(repo: lakefs.Repository, branch: str, paths: list[str]) -> None:
    if not paths:
        return
    with _translated(f"{len(paths)} object(s) on branch {branch!r} of {repo.id!r}"):
        repo.branch(branch).delete_objects(paths)


def uncommitted(repo: lakefs.Repository, branch: str, prefix: str = "") -> list[Change]:
    with _translated(f"uncommitted changes on {branch!r} in {repo.id!r}"):
        return [_change(c) for c in repo.branch(branch).uncommitted(prefix=prefix or None)]


def diff(
    repo: lakefs.Repository, left_ref: str, right_ref: str, prefix: str = "", three_dot: bool = False
) -> list[Change]:
    """What changed from `left_ref` to `right_ref`.

    Two-dot compares the two trees; three-dot lists only what `right_ref` changed since the merge base of both,
    as a merge would see it.
    """
    kind = "three_dot" if three_dot else "two_dot"
    with _translated(f"diff {left_ref!r}..{right_ref!r} in {repo.id!r}"):
        return [_change(c) for c in repo.ref(left_ref).diff(right_ref, prefix=prefix or None, type=kind)]


def commit(
    repo: lakefs.Repository,
    branch: str,
    message: str,
    metadata: Mapping[str, str] | None = None,
    allow_empty: bool = False,
) -> CommitInfo:
    """Commit the branch's staged changes. With none, `NothingToCommit` is raised (callers decide what that
    means), unless `allow_empty`, which makes a commit without changes."""
    with _translated(f"commit on branch {branch!r} of {repo.id!r}"):
        ref = repo.branch(branch).commit(message=message, metadata=_stringify(metadata), allow_empty=allow_empty)
        return _commit_info(ref.get_commit())


def commit_once(
    repo: lakefs.Repository, branch: str, message: str, metadata: Mapping[str, str], marker: Mapping[str, str]
) -> CommitInfo | None:
    """Commit the branch's staged changes. With none staged, the commit on `branch` whose metadata has all of
    `marker` (what an earlier try of the same step committed before it died), or None: a retry never commits
    twice."""
    try:
        return commit(repo, branch, message, metadata)
    except NothingToCommit:
        return find_commit(repo, branch, marker)


def find_commit(
    repo: lakefs.Repository, ref: str, metadata: Mapping[str, str], max_amount: int = 200
) -> CommitInfo | None:
    """The newest of the last `max_amount` commits reachable from `ref` whose metadata has all of `metadata`."""
    for candidate in log(repo, ref, max_amount=max_amount):
        if all(candidate.metadata.get(k) == v for k, v in metadata.items()):
            return candidate
    return None


def merge(
    repo: lakefs.Repository,
    source_ref: str,
    destination_branch: str,
    message: str = "",
    metadata: Mapping[str, str] | None = None,
    strategy: str | None = None,
) -> str:
    """Merge `source_ref` into `destination_branch` and return the merge commit id.

    A conflict raises `MergeConflict` with the conflicting paths (lakeFS's 409 does not list them, so they are
    worked out from the merge base); a rejecting pre-merge hook raises `HookRejected`.
    """
    what = f"merge of {source_ref!r} into {destination_branch!r} in {repo.id!r}"
    kwargs: dict[str, object] = {"metadata": _stringify(metadata)}
    if message:
        kwargs["message"] = message
    if strategy:
        kwargs["strategy"] = strategy
    try:
        with _translated(what):
            return repo.ref(source_ref).merge_into(destination_branch, **kwargs)
    except _Conflict:
        raise MergeConflict(
            source_ref, destination_branch, conflicting_paths(repo, source_ref, destination_branch)
        ) from None


def conflicting_paths(repo: lakefs.Repository, source_ref: str, destination_branch: str) -> list[str]:
    """Paths that both sides changed, to different contents, since their merge base."""
    ours = {c.path: c for c in diff(repo, destination_branch, source_ref, three_dot=True)}
    theirs = {c.path: c for c in diff(repo, source_ref, destination_branch, three_dot=True)}
    conflicts = []
    for path in sorted(ours.keys() & theirs.keys()):
        if ours[path].type == "removed" and theirs[path].type == "removed":
            continue
        if _checksum(repo, source_ref, path) != _checksum(repo, destination_branch, path):
            conflicts.append(path)
    return conflicts


def tag(repo: lakefs.Repository, name: str, ref: str) -> str:
    """Tag `ref` as `name` and return the tagged commit id. Re-tagging the same commit is a no-op."""
    with _translated(f"tag {name!r} on {ref!r} in {repo.id!r}"):
        commit_id = repo.ref(ref).get_commit().id
        created = repo.tag(name).create(commit_id, exist_ok=True)
        tagged = created.get_commit().id
    if tagged != commit_id:
        raise VersioningError(f"tag {name!r} in {repo.id!r} exists already and points to {tagged}, not {commit_id}")
    return tagged


def delete_branch(repo: lakefs.Repository, name: str, missing_ok: bool = True) -> bool:
    """Delete branch `name`; returns False when it did not exist (and `missing_ok`)."""
    try:
        with _translated(f"branch {name!r} in {repo.id!r}"):
            repo.branch(name).delete()
    except RefNotFound:
        if missing_ok:
            return False
        raise
    return True


def list_branches(repo: lakefs.Repository, prefix: str = "") -> list[str]:
    with _translated(f"branches of {repo.id!r}"):
        return [b.id for b in repo.branches(prefix=prefix or None)]


class _Conflict(VersioningError):
    """Internal: a 409 seen by `_translated`, turned into `MergeConflict` by `merge`."""


@contextmanager
def _translated(what: str) -> Generator[None, None, None]:
    """Turn the SDK's exceptions into this module's, naming `what` was being done."""
    try:
        yield
    except VersioningError:
        raise
    except NotAuthorizedException as exc:
        raise LakeFSUnavailable(f"{what}: lakeFS refused the credentials ({_reason(exc)})") from exc
    except ForbiddenException as exc:
        raise ProtectedBranch(f"{what}: forbidden by lakeFS ({_reason(exc)})") from exc
    except NotFoundException as exc:
        raise RefNotFound(f"{what}: not found ({_reason(exc)})") from exc
    except ConflictException as exc:
        raise _Conflict(f"{what}: conflict ({_reason(exc)})") from exc
    except BadRequestException as exc:
        if "no changes" in _reason(exc).lower():
            raise NothingToCommit(f"{what}: no changes") from exc
        raise VersioningError(f"{what}: refused by lakeFS ({_reason(exc)})") from exc
    except ServerException as exc:
        if exc.status_code == 412:
            raise HookRejected(f"{what}: rejected by a lakeFS hook ({_reason(exc)})") from exc
        raise VersioningError(f"{what}: {_reason(exc)}") from exc
    except LakeFSException as exc:
        raise VersioningError(f"{what}: {_reason(exc)}") from exc
    except (urllib3.exceptions.HTTPError, ConnectionError) as exc:
        raise LakeFSUnavailable(f"{what}: lakeFS cannot be reached ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status or reason:
        return f"HTTP {status} {reason or ''}".strip()
    return str(exc) or type(exc).__name__


def _stringify(metadata: Mapping[str, object] | None) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in (metadata or {}).items()}


def _commit_info(commit) -> CommitInfo:
    return CommitInfo(
        id=commit.id,
        message=commit.message,
        metadata=dict(commit.metadata or {}),
        parents=list(commit.parents or []),
        creation_date=int(commit.creation_date),
    )


def _change(change) -> Change:
    return Change(type=change.type, path=change.path, size_bytes=change.size_bytes)


def _checksum(repo: lakefs.Repository, ref: str, path: str) -> str | None:
    try:
        return repo.ref(ref).object(path).stat().checksum
    except NotFoundException:
        return None


def commit_ui_url(ui_base_url: str, repository: str, commit_id: str) -> str:
    """The lakeFS UI page of a commit."""
    return f"{ui_base_url.rstrip('/')}/repositories/{quote(repository, safe='')}/commits/{quote(commit_id, safe='')}"


def expired_branches(repo: lakefs.Repository, prefix: str, retention_days: float, now: float) -> list[str]:
    """Branches named `prefix`* whose head commit is older than `retention_days` (`now`: epoch seconds).

    The repository's default branch never counts, whatever its name.
    """
    default_branch = repo.properties.default_branch
    cutoff = now - retention_days * 86400
    expired = []
    for name in list_branches(repo, prefix):
        if name != default_branch and get_commit(repo, name).creation_date < cutoff:
            expired.append(name)
    return expired


def expired_run_branches(
    repo: lakefs.Repository, retention_days: Mapping[str, float], other_days: float, now: float
) -> list[str]:
    """Run branches (`run-*`) older than the retention of the model they belong to, `retention_days` by branch
    prefix (`run-<model>-`); those of no listed model (a config since removed) older than `other_days`."""
    expired = []
    for name in expired_branches(repo, RUN_BRANCH_PREFIX, min([other_days, *retention_days.values()]), now):
        days = next((d for prefix, d in retention_days.items() if name.startswith(prefix)), other_days)
        if get_commit(repo, name).creation_date < now - days * 86400:
            expired.append(name)
    return expired
