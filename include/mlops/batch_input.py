"""What a batch run scores, a piece at a time, and how it is written down in parts.

The rows come from a window of a source (include/mlops/sources.py's pieces), from files that arrived, or from the
objects under a lakeFS prefix at one commit. Files and objects are Parquet or CSV, told apart by name (`.parquet`,
`.csv`); anything else fails the run before anything is written, naming the files. Each input is known by a key
(`batch_scoring.interval_key` of the window, `content_key` of the files' bytes, `lakefs_key` of the commit and
prefix), so that the same input scored twice writes one result.

The rows are read as they are written (`in_parts`): a Parquet file PIECE_ROWS rows at a time, a CSV file whole
(read in pieces, pandas would guess each piece's types apart), so that a run holds a part of the input, never all
of it (a million rows held whole had taken collect_input to about 1 GiB).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import pandas as pd

from include.mlops import batch_scoring, lakefs_repository, sources
from include.mlops.naming import lakefs_uri

if TYPE_CHECKING:
    import lakefs

_FORMATS = (".parquet", ".csv")
_HASHED_BYTES = 1 << 20  # read at a time to hash a file


class UnsupportedFiles(ValueError):
    """Input files that are neither `.parquet` nor `.csv`."""


@dataclass(frozen=True)
class Input:
    """The rows to score, a piece at a time (an iterator, read once: by `in_parts` as the parts are written), their
    output key, what they are (for the log and the commit message), and, for a lakeFS path, the input's URI at the
    commit it was read at (`lakefs://<repository>/<commit>/<prefix>`)."""

    pieces: Iterable[pd.DataFrame]
    key: str
    what: str
    source: str | None = None


def in_parts(pieces: Iterable[pd.DataFrame], rows_per_part: int) -> Iterator[pd.DataFrame]:
    """The rows of `pieces`, in order, as frames of `rows_per_part` rows (the last may hold fewer; no rows, no
    frame), each indexed from 0. It holds one part and one piece at a time."""
    if rows_per_part < 1:
        raise ValueError(f"rows_per_part={rows_per_part}: a part holds at least one row")
    held: list[pd.DataFrame] = []
    count = 0
    for piece in pieces:
        while len(piece):
            taken = piece.iloc[: rows_per_part - count]
            held.append(taken)
            count += len(taken)
            piece = piece.iloc[len(taken) :]
            if count == rows_per_part:
                yield _joined(held)
                held, count = [], 0
    if held:
        yield _joined(held)


def read_window(pieces: Iterable[sources.Fetched], key: str, what: str) -> Input:
    """The rows of a window that a source gives a piece at a time (`sources.*_pieces`)."""
    return Input((piece.rows for piece in pieces), key, what)


def read_files(paths: Sequence[Path]) -> Input:
    """The rows of the Parquet or CSV files `paths` (an arrival's), keyed by their content."""
    _check_formats([str(p) for p in paths], "batch arrival files")
    pieces = (piece for path in paths for piece in _file_pieces(path))
    return Input(pieces, batch_scoring.content_key(_blocks(paths)), ", ".join(map(str, paths)))


def read_lakefs(repo: lakefs.Repository, ref: str, prefix: str) -> Input:
    """The rows of every Parquet or CSV object under `prefix` at the commit `ref` points to now, keyed by that commit
    and `prefix`; each object is downloaded to a temporary file and read from there. No object: no rows. Raises
    RefNotFound naming a ref that does not exist, and UnsupportedFiles naming the objects that are neither Parquet
    nor CSV (nothing is read then)."""
    commit = lakefs_repository.head_commit(repo, ref)
    source = lakefs_uri(repo.id, commit, prefix)
    paths = [o.path for o in lakefs_repository.list_objects(repo, commit, prefix)]
    _check_formats(paths, f"the objects under {source}")

    def pieces() -> Iterator[pd.DataFrame]:
        with tempfile.TemporaryDirectory(prefix="batch-input-") as folder:
            for index, path in enumerate(paths):
                local = Path(folder) / f"{index}{PurePosixPath(path).suffix.lower()}"
                yield from _file_pieces(lakefs_repository.download_file(repo, commit, path, local))
                local.unlink()

    what = f"{len(paths)} object(s) under {lakefs_uri(repo.id, ref, prefix)} at commit {commit}"
    return Input(pieces(), batch_scoring.lakefs_key(commit, prefix), what, source)


def _check_formats(names: list[str], what: str) -> None:
    if unknown := [n for n in names if PurePosixPath(n).suffix.lower() not in _FORMATS]:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise UnsupportedFiles(f"{what} must be .parquet or .csv, and these are not: {shown}")


def _blocks(paths: Sequence[Path]) -> Iterator[bytes]:
    """The files' bytes, in order, a block at a time."""
    for path in paths:
        with path.open("rb") as file:
            while block := file.read(_HASHED_BYTES):
                yield block


def _file_pieces(path: Path) -> Iterator[pd.DataFrame]:
    if path.suffix.lower() == ".parquet":
        yield from sources.parquet_pieces(path)
        return
    try:
        yield pd.read_csv(path)
    except pd.errors.EmptyDataError:  # an empty file: no rows
        return


def _joined(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return frames[0].reset_index(drop=True) if len(frames) == 1 else pd.concat(frames, ignore_index=True)
