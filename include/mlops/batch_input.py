"""What a batch run scores when it is not a window of a source: files that arrived, or the objects under a lakeFS
prefix at one commit.

Either is Parquet or CSV files, told apart by name (`.parquet`, `.csv`), read whole into one frame as a window's
rows are, and known by a key (`batch_scoring.content_key` of the files' bytes, `batch_scoring.lakefs_key` of the
commit and prefix), so that the same input scored twice writes one result. Anything else fails the run before
anything is written, naming the files.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import pandas as pd

from include.mlops import batch_scoring, lakefs_repository
from include.mlops.naming import lakefs_uri

if TYPE_CHECKING:
    import lakefs

_READERS = {".parquet": pd.read_parquet, ".csv": pd.read_csv}


class UnsupportedFiles(ValueError):
    """Input files that are neither `.parquet` nor `.csv`."""


@dataclass(frozen=True)
class Input:
    """The rows to score, their output key, what they are (for the log and the commit message), and, for a lakeFS
    path, the input's URI at the commit it was read at (`lakefs://<repository>/<commit>/<prefix>`)."""

    rows: pd.DataFrame
    key: str
    what: str
    source: str | None = None


def read_files(paths: Sequence[Path]) -> Input:
    """The rows of the Parquet or CSV files `paths` (an arrival's), keyed by their content."""
    _check_formats([str(p) for p in paths], "batch arrival files")
    rows = _concat([_read(p.suffix, p) for p in paths])
    key = batch_scoring.content_key(b"".join(p.read_bytes() for p in paths))
    return Input(rows, key, ", ".join(map(str, paths)))


def read_lakefs(repo: lakefs.Repository, ref: str, prefix: str) -> Input:
    """The rows of every Parquet or CSV object under `prefix` at the commit `ref` points to now, keyed by that commit
    and `prefix`. No object: no rows. Raises RefNotFound naming a ref that does not exist, and UnsupportedFiles
    naming the objects that are neither Parquet nor CSV (nothing is read then)."""
    commit = lakefs_repository.head_commit(repo, ref)
    source = lakefs_uri(repo.id, commit, prefix)
    paths = [o.path for o in lakefs_repository.list_objects(repo, commit, prefix)]
    _check_formats(paths, f"the objects under {source}")
    frames = [_read(PurePosixPath(p).suffix, io.BytesIO(lakefs_repository.read_bytes(repo, commit, p))) for p in paths]
    what = f"{len(paths)} object(s) under {lakefs_uri(repo.id, ref, prefix)} at commit {commit}"
    return Input(_concat(frames), batch_scoring.lakefs_key(commit, prefix), what, source)


def _check_formats(names: list[str], what: str) -> None:
    if unknown := [n for n in names if PurePosixPath(n).suffix.lower() not in _READERS]:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise UnsupportedFiles(f"{what} must be .parquet or .csv, and these are not: {shown}")


def _read(suffix: str, source: Path | io.BytesIO) -> pd.DataFrame:
    return _READERS[suffix.lower()](source)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
