"""A sample of a dataset to draft its config from (include/mlops/infer_config.py): rows of CSV or Parquet files,
of a SQL table or query, or of an HTTP API's answer, with what was read in the terms of the config's `source`.

Rows are read the way the pipeline's collection reads them (include/mlops/sources.py: pandas' CSV and Parquet
readers, a textual SQL query, JSON records as pandas takes them), so that the drafted types are the ones
validation will see. Every error is a `SampleError` naming the file, query or URL and what went wrong.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import pandas as pd
import pyarrow
import pyarrow.parquet as pq
import sqlalchemy as sa

from include.mlops.config import PROJECT_ROOT

# At most this many files of a folder are read, spread over it in path order: a folder of daily exports is
# then sampled from its first day to its last, not only from its first days, and years of them are read whole
# (a sample that misses a day misses the values only that day holds).
MAX_FILES = 1000
_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_GLOB_CHARACTERS = re.compile(r"[*?\[]")
_HTTP_TIMEOUT_SECONDS = 30
_ERROR_BODY_CHARS = 200


class SampleError(ValueError):
    """The data could not be read: the message names the file, query or URL, and what went wrong."""


@dataclass(frozen=True)
class FilesRead:
    """CSV or Parquet files: `path` and `pattern` as the config's files source takes them."""

    path: str
    pattern: str
    format: Literal["csv", "parquet"]
    files: tuple[str, ...]
    files_matching: int


@dataclass(frozen=True)
class SqlRead:
    """A SQL table or query. `url` is the one drafted from; `dialect` quotes the drafted query's names."""

    url: sa.URL
    dialect: sa.Dialect
    table: str | None
    query: str | None


@dataclass(frozen=True)
class HttpRead:
    """One answer of an HTTP API: `records_path` is where its records were, as given or as found."""

    url: str
    format: Literal["json", "csv"]
    records_path: str
    records_path_found: bool
    headers: dict[str, str]


@dataclass(frozen=True)
class Sample:
    rows: pd.DataFrame
    origin: FilesRead | SqlRead | HttpRead
    # Where the rows came from and how many, for the drafted config's first comment.
    description: str


def read_files(location: str, max_rows: int, file_format: Literal["csv", "parquet"] | None = None) -> Sample:
    """Up to `max_rows` rows of a CSV or Parquet file, of the files under a folder, or of the files a glob
    (`exports/date=*.csv`, `**` crossing folders) matches; of a folder, up to MAX_FILES files spread over it."""
    base, pattern, files = _matching_files(location)
    suffixes = {_SUFFIXES.get(_suffix(f)) for f in files} - {None}
    if file_format is None:
        if len(suffixes) != 1:
            found = "both CSV and Parquet files" if suffixes else "no .csv, .parquet or .pq file"
            raise SampleError(f"{location}: {found}; say which with --format")
        file_format = suffixes.pop()
    if pattern is None:  # a folder: every file of the format, in any subfolder
        files = [f for f in files if _SUFFIXES.get(_suffix(f)) == file_format]
        pattern = "**/*" + (_suffix(files[0]) if files else "")
    if not files:
        raise SampleError(f"{location}: no {file_format} file")
    spread = np.linspace(0, len(files) - 1, min(MAX_FILES, len(files)))
    chosen = [files[i] for i in sorted({round(i) for i in spread})]
    per_file = max(1, max_rows // len(chosen))
    frames = [_read_file(f, file_format, per_file) for f in chosen]
    read = [frame for frame in frames if not frame.columns.empty]  # an empty CSV file has no columns
    rows = _with_text_names(pd.concat(read, ignore_index=True) if read else pd.DataFrame())
    if len(files) == 1:
        description = f"{'the first ' if len(rows) == per_file else ''}{len(rows):,} rows of {files[0].name}"
    else:
        cut = f" (at most {per_file:,} of each)" if any(len(frame) == per_file for frame in frames) else ""
        description = f"{len(rows):,} rows of {len(chosen)} of the {len(files)} files matching {pattern}{cut}"
    return Sample(
        rows,
        FilesRead(_as_configured(base), pattern, file_format, tuple(str(f) for f in chosen), len(files)),
        f"{description} under {base}",
    )


def read_sql(url: str, max_rows: int, table: str | None = None, query: str | None = None) -> Sample:
    """The first `max_rows` rows of a table (`schema.table` or `table`) or of a query without :start/:end."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise SampleError(f"{url}: not a SQLAlchemy URL: {exc}") from exc
    safe = parsed.render_as_string(hide_password=True)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        # SQLite would create an empty database file for a mistyped path.
        if not Path(database).is_file():
            raise SampleError(f"{safe}: no such SQLite database file {database}")
        parsed = parsed.set(database=str(Path(database).resolve()))
    if query is not None and re.search(r":(start|end)\b", query):
        raise SampleError(
            "the query already filters on :start/:end; give it without them (the drafted config adds the window "
            "on the event-time column it finds)"
        )
    try:
        engine = sa.create_engine(parsed)
    except (sa.exc.ArgumentError, ImportError) as exc:  # no dialect or no driver installed for it
        raise SampleError(f"{safe}: cannot connect: {exc}") from exc
    preparer = engine.dialect.identifier_preparer
    query_text = (query or "").strip().rstrip(";")
    try:
        with engine.connect() as conn:
            if table is not None:
                schema, _, name = table.rpartition(".")
                if not sa.inspect(conn).has_table(name, schema=schema or None):
                    tables = sa.inspect(conn).get_table_names(schema=schema or None)
                    raise SampleError(f"{safe}: no table {table!r} (its tables: {', '.join(tables) or 'none'})")
                # Textual SQL, as the pipeline's collection runs it: SQLite's times stay the text they are stored
                # as, which the drafted event_time_type must say.
                query_text = "SELECT * FROM " + (preparer.quote_schema(schema) + "." if schema else "")
                query_text += preparer.quote(name)
            streaming = conn.execution_options(stream_results=True, max_row_buffer=max_rows)
            chunks = pd.read_sql_query(sa.text(query_text), streaming, chunksize=max_rows)
            rows = next(iter(chunks), pd.DataFrame())
    except sa.exc.SQLAlchemyError as exc:
        raise SampleError(f"{safe}: {query_text!r} failed: {getattr(exc, 'orig', None) or exc}") from exc
    finally:
        engine.dispose()
    what = f"table {table}" if table is not None else "the query"
    first = "the first " if len(rows) == max_rows else ""
    return Sample(
        _with_text_names(rows),
        SqlRead(parsed, engine.dialect, table, query),
        f"{first}{len(rows):,} rows of {what} on {safe}",
    )


def read_http(
    url: str,
    max_rows: int,
    file_format: Literal["json", "csv"] | None = None,
    records_path: str | None = None,
    headers: dict[str, str] | None = None,
) -> Sample:
    """The first `max_rows` records of one GET of `url`: JSON (the list of objects at `records_path`, or the one
    list of objects the body holds when no path is given) or CSV (by `file_format`, else the Content-Type)."""
    headers = headers or {}
    try:
        response = httpx.get(url, headers=headers, timeout=_HTTP_TIMEOUT_SECONDS, follow_redirects=True)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise SampleError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
    if response.is_error:
        raise SampleError(
            f"GET {url}: HTTP {response.status_code} {response.reason_phrase}: {response.text[:_ERROR_BODY_CHARS]!r}"
        )
    file_format = file_format or ("csv" if "csv" in response.headers.get("content-type", "") else "json")
    found = False
    if file_format == "csv":
        try:
            rows = pd.read_csv(io.StringIO(response.text), nrows=max_rows)
        except pd.errors.EmptyDataError:
            rows = pd.DataFrame()
        except ValueError as exc:
            raise SampleError(f"GET {url}: the body is not CSV: {exc}") from exc
        records_path = ""
    else:
        try:
            body = response.json()
        except ValueError as exc:
            raise SampleError(f"GET {url}: the body is not JSON: {response.text[:_ERROR_BODY_CHARS]!r}") from exc
        if records_path is None:
            records_path, found = _records_path(body, url), True
        records = _records_at(body, records_path, url)
        rows = pd.DataFrame.from_records(records[:max_rows])
    return Sample(
        _with_text_names(rows),
        HttpRead(url, file_format, records_path, found, dict(headers)),
        f"{'the first ' if len(rows) == max_rows else ''}{len(rows):,} records of GET {url}",
    )


# --- files ---


def _matching_files(location: str) -> tuple[Path, str | None, list[Path]]:
    """The folder the config's `path` names, the glob under it (None for a whole folder), the files in order."""
    if _GLOB_CHARACTERS.search(location):
        parts = Path(location).parts
        first_glob = next(i for i, part in enumerate(parts) if _GLOB_CHARACTERS.search(part))
        base = Path(*parts[:first_glob]) if first_glob else Path(".")
        pattern = "/".join(parts[first_glob:])
        files = sorted(p for p in base.glob(pattern) if p.is_file())
        if not files:
            raise SampleError(f"{location}: no file matches")
        return base, pattern, files
    path = Path(location)
    if path.is_file():
        # Exports are usually one file per day or batch: the config reads every file of its kind beside it.
        return path.parent, "*" + _suffix(path), [path]
    if path.is_dir():
        return path, None, sorted(p for p in path.rglob("*") if p.is_file())
    raise SampleError(f"{location}: no such file or folder")


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _read_file(path: Path, file_format: str, max_rows: int) -> pd.DataFrame:
    try:
        if file_format == "csv":
            return pd.read_csv(path, nrows=max_rows)
        batches = pq.ParquetFile(path).iter_batches(batch_size=max_rows)
        first = next(batches, None)
        return first.to_pandas() if first is not None else pq.read_schema(path).empty_table().to_pandas()
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (ValueError, OSError, pyarrow.ArrowException) as exc:
        raise SampleError(f"{path}: cannot be read as {file_format}: {exc}") from exc


def _as_configured(folder: Path) -> str:
    """The folder as a files source's `path`: relative to the project's root when inside it (the config then
    means the same folder on every checkout), absolute otherwise."""
    absolute = folder.resolve()
    return absolute.relative_to(PROJECT_ROOT).as_posix() if absolute.is_relative_to(PROJECT_ROOT) else str(absolute)


# --- HTTP ---


def _records_path(body: Any, url: str) -> str:
    """The dotted path of the one list of objects in a JSON body ('' for a body that is one)."""
    found = [path for path, value in _lists_of_objects(body, "")]
    if len(found) != 1:
        keys = f" (its keys: {sorted(body)})" if isinstance(body, dict) else ""
        what = "no list of objects" if not found else f"lists of objects at {found}"
        raise SampleError(f"GET {url}: the JSON body holds {what}{keys}; say which with --records-path")
    return found[0]


def _lists_of_objects(value: Any, path: str) -> list[tuple[str, list]]:
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return [(path, value)]
    if isinstance(value, dict):
        return [
            found for key, item in value.items() for found in _lists_of_objects(item, f"{path}.{key}" if path else key)
        ]
    return []


def _records_at(body: Any, records_path: str, url: str) -> list[dict[str, Any]]:
    value = body
    for depth, part in enumerate(records_path.split(".") if records_path else []):
        if not isinstance(value, dict) or part not in value:
            where = ".".join(records_path.split(".")[:depth]) or "the body"
            keys = f"; its keys: {sorted(value)}" if isinstance(value, dict) else ""
            raise SampleError(f"GET {url}: records_path {records_path!r}: no {part!r} in {where}{keys}")
        value = value[part]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise SampleError(f"GET {url}: records_path {records_path!r} does not hold a list of objects")
    return value


# --- shared ---


def _with_text_names(rows: pd.DataFrame) -> pd.DataFrame:
    """Column names as the text a config names them by (Parquet and JSON may give others)."""
    return rows.set_axis([str(c) for c in rows.columns], axis=1)
