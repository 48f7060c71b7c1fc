"""Collection: one interval's rows from the dataset's source (a SQL query, an HTTP API, or files).

Every function returns a pandas DataFrame with the rows whose event time is in [start, end), as the source
gives them. Types are coerced and rows checked later, by validation, which must see bad rows to report them:
so HTTP and file rows whose event time cannot be parsed are kept here, not dropped.

Timestamps in SQL sources follow one convention, which the simulator (include/devstack/simulator.py) writes:
Postgres stores `timestamptz`, and the interval is bound as timezone-aware datetimes; SQLite has no timestamp
type, so times are ISO-8601 UTC text `YYYY-MM-DD HH:MM:SS.ffffff` (always six fraction digits, so that text
order is time order; the form SQLAlchemy's own SQLite DateTime writes) and the interval is bound as such text.

Every error is a `SourceError` whose message names the source (query, URL or file) and what went wrong.
"""

from __future__ import annotations

import email.utils
import io
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import boto3
import botocore.exceptions
import httpx
import numpy as np
import pandas as pd
import pyarrow
import sqlalchemy as sa

from include.mlops.config import FileSource, HttpPagination, HttpSource, SqlSource

logger = logging.getLogger(__name__)

SQLITE_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
# Rows fetched per round trip: large enough to be fast, small enough that the driver's row tuples for one
# chunk stay a few tens of MB.
_SQL_CHUNK_ROWS = 50_000
# A server may ask for a long pause; a task should rather fail and be retried by Airflow than sleep for hours.
_MAX_RETRY_AFTER_SECONDS = 300.0
_ERROR_BODY_CHARS = 200
_MISSING = object()  # a JSON path that is not in the body (None is a value JSON can hold)


class SourceError(RuntimeError):
    """The source could not be read: the message names the query, URL or file, and what went wrong."""


def sql_timestamp(moment: datetime, dialect: str) -> datetime | str:
    """`moment` as a bind parameter for a database of `dialect` (SQLAlchemy's name), by the convention above."""
    moment = _utc(moment)
    return moment.strftime(SQLITE_TIMESTAMP_FORMAT) if dialect == "sqlite" else moment


def sql_timestamps(times: pd.Series, dialect: str) -> list[Any]:
    """A column of timezone-aware times as values to write to a database of `dialect`, by the convention above."""
    utc = times.dt.tz_convert(UTC)
    if utc.empty:  # np.char.replace fails on an empty array
        return []
    if dialect != "sqlite":
        return [None if pd.isna(t) else t.to_pydatetime() for t in utc]
    # Vectorised, and the same text as SQLITE_TIMESTAMP_FORMAT: strftime per value is ten times slower.
    text = np.datetime_as_string(utc.dt.tz_localize(None).to_numpy("datetime64[us]"), unit="us")
    values = np.char.replace(text, "T", " ").astype(object)
    values[utc.isna().to_numpy()] = None
    return values.tolist()


def fetch_sql(
    source: SqlSource, url: str, start: datetime, end: datetime, as_of: datetime | None = None
) -> pd.DataFrame:
    """The rows of `source.query` on the database at `url` (SQLAlchemy), for the interval [start, end).

    The query gets the bind parameters :start and :end, and :as_of when it uses it (the time up to which later
    facts, such as labels, count). Rows are streamed in chunks (a server-side cursor on Postgres), so the driver
    never holds the whole result as Python tuples next to the frame.
    """
    query = sa.text(source.query)
    where = f"query {_first_line(source.query)!r} on {_safe_url(url)}"
    try:
        engine = sa.create_engine(url)
    except sa.exc.ArgumentError as exc:  # a malformed URL, or a database SQLAlchemy has no dialect for
        raise SourceError(f"{where}: not a usable database URL: {exc}") from exc
    dialect = engine.dialect.name
    params = {"start": sql_timestamp(start, dialect), "end": sql_timestamp(end, dialect)}
    if "as_of" in query.compile().params:
        if as_of is None:
            raise SourceError(f"{where}: the query uses :as_of, and no as_of time was given")
        params["as_of"] = sql_timestamp(as_of, dialect)
    try:
        with engine.connect() as conn:
            if dialect == "postgresql":
                # timestamptz comes back in the session's time zone; the pipeline speaks UTC.
                conn.exec_driver_sql("SET TIME ZONE 'UTC'")
            streaming = conn.execution_options(stream_results=True, max_row_buffer=_SQL_CHUNK_ROWS)
            chunks = list(pd.read_sql_query(query, streaming, params=params, chunksize=_SQL_CHUNK_ROWS))
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"{where} failed: {getattr(exc, 'orig', None) or exc}") from exc
    finally:
        engine.dispose()
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)


def fetch_http(
    source: HttpSource,
    start: datetime,
    end: datetime,
    event_time_column: str,
    auth: tuple[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> pd.DataFrame:
    """The records an HTTP API answers for [start, end), every page of them, left in the interval.

    The interval goes out as ISO-8601 query parameters. Connection errors, timeouts, 429 and 5xx answers are
    retried with exponential backoff (or after the server's Retry-After); other 4xx answers are not.
    `auth` is (user, password) for basic auth; `transport` replaces the network (for tests).
    """
    if source.pagination.style == "cursor" and source.format != "json":
        raise SourceError(f"{source.url}: cursor pagination reads the cursor from a JSON body, and format is csv")
    interval = {source.start_param: _utc(start).isoformat(), source.end_param: _utc(end).isoformat()}
    with httpx.Client(
        headers=source.headers,
        auth=auth,
        timeout=source.timeout_seconds,
        transport=transport,
        follow_redirects=True,
    ) as client:
        pages = list(_http_pages(client, source, interval))
    # The last page is often empty; empty pages would only decide the dtypes of columns the others fill.
    non_empty = [page for page in pages if not page.empty] or pages[-1:]
    records = pd.concat(non_empty, ignore_index=True) if len(non_empty) > 1 else non_empty[0]
    return _in_interval(records, event_time_column, start, end, source.url)


def fetch_files(
    source: FileSource, start: datetime, end: datetime, event_time_column: str, s3_client: Any = None
) -> pd.DataFrame:
    """The rows of the CSV or Parquet files matching `source.pattern` under `source.path`, in [start, end).

    `path` is a local folder or `s3://bucket/prefix`; `pattern` is a glob relative to it (`*` and `?` stay in
    one folder, `**/` crosses folders). Files are read in path order and their rows concatenated. When no
    file matches, the frame is empty and has no columns; when files match and no row is in the interval, it
    is empty with the files' columns. `s3_client` is a boto3 S3 client; by default one is made for
    `s3_endpoint_url` (MinIO) with credentials from the environment.
    """
    interval_rows = [
        _in_interval(frame, event_time_column, start, end, name)
        for name, frame in _read_files(source, s3_client)
        if not frame.columns.empty  # an empty CSV file
    ]
    if not interval_rows:
        return pd.DataFrame()
    # Empty frames would only decide the dtypes of columns the other files fill.
    non_empty = [frame for frame in interval_rows if not frame.empty] or interval_rows[:1]
    return pd.concat(non_empty, ignore_index=True)


# --- SQL ---


def _first_line(query: str) -> str:
    line = query.strip().splitlines()[0] if query.strip() else ""
    return line if len(line) <= 80 else line[:77] + "..."


def _safe_url(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "an unparseable database URL"


# --- HTTP ---


def _http_pages(client: httpx.Client, source: HttpSource, interval: dict[str, str]) -> Iterator[pd.DataFrame]:
    """Every page's records, the last (empty or final) one included, so that its columns survive."""
    paging = source.pagination
    offset, cursor = 0, None
    for number in range(paging.max_pages):
        params = {**interval, **_page_params(paging, number, offset, cursor)}
        response = _get(client, source, params)
        records, cursor = _parse_page(response, source)
        yield records
        if paging.style == "none" or records.empty or (paging.style == "cursor" and not cursor):
            return
        offset += len(records)
    raise SourceError(
        f"{source.url}: still more pages after pagination.max_pages={paging.max_pages}; "
        "raise max_pages or narrow the interval"
    )


def _page_params(paging: HttpPagination, number: int, offset: int, cursor: str | None) -> dict[str, Any]:
    if paging.style == "page":
        return {paging.page_param: paging.first_page + number, paging.size_param: paging.page_size}
    if paging.style == "offset":
        return {paging.offset_param: offset, paging.size_param: paging.page_size}
    if paging.style == "cursor":
        return {paging.size_param: paging.page_size} | ({paging.cursor_param: cursor} if cursor else {})
    return {}


def _get(client: httpx.Client, source: HttpSource, params: dict[str, Any]) -> httpx.Response:
    attempts = source.max_retries + 1
    # `params=` would replace a query the configured URL already has (e.g. ?api_version=2); merge instead.
    url = httpx.URL(source.url).copy_merge_params(params)
    problem = ""
    for attempt in range(1, attempts + 1):
        backoff = source.backoff_seconds * 2 ** (attempt - 1)
        try:
            response = client.get(url)
        except httpx.TransportError as exc:  # connection refused or reset, timeouts, broken responses
            problem, wait = f"{type(exc).__name__}: {exc}", backoff
        else:
            if response.status_code != 429 and response.status_code < 500:
                if response.is_error:
                    raise SourceError(
                        f"GET {response.request.url}: HTTP {response.status_code} {response.reason_phrase}, "
                        f"not retried (a client error): {response.text[:_ERROR_BODY_CHARS]!r}"
                    )
                return response
            problem = f"HTTP {response.status_code} {response.reason_phrase}"
            wait = _retry_after(response) if "retry-after" in response.headers else backoff
        if attempt < attempts:
            logger.warning("GET %s: %s; attempt %d of %d, next in %.1f s", source.url, problem, attempt, attempts, wait)
            time.sleep(wait)
    raise SourceError(f"GET {source.url}: gave up after {attempts} attempts; the last one failed with {problem}")


def _retry_after(response: httpx.Response) -> float:
    """The pause the server asked for, in seconds (the header holds seconds or an HTTP date)."""
    value = response.headers["retry-after"].strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (email.utils.parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            seconds = 0.0
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_SECONDS)


def _parse_page(response: httpx.Response, source: HttpSource) -> tuple[pd.DataFrame, str | None]:
    """The page's records, and the cursor to the next page when the pagination uses one."""
    url = response.request.url
    if source.format == "csv":
        try:
            return pd.read_csv(io.StringIO(response.text)), None
        except pd.errors.EmptyDataError:
            return pd.DataFrame(), None
        except ValueError as exc:  # pandas' ParserError among them
            raise SourceError(f"GET {url}: the body is not CSV: {exc}") from exc
    try:
        body = response.json()
    except ValueError as exc:
        raise SourceError(
            f"GET {url}: the body is not JSON (records_path {source.records_path!r}): "
            f"{response.text[:_ERROR_BODY_CHARS]!r}"
        ) from exc
    records = _at_path(body, source.records_path)
    if records is _MISSING:
        raise SourceError(f"GET {url}: records_path {source.records_path!r} is not in the JSON body")
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise SourceError(f"GET {url}: records_path {source.records_path!r} does not hold a list of objects")
    cursor = None
    if source.pagination.style == "cursor":
        found = _at_path(body, source.pagination.cursor_path)
        cursor = None if found is _MISSING or found is None or found == "" else str(found)
    return pd.DataFrame.from_records(records), cursor


def _at_path(body: Any, dotted: str) -> Any:
    """The value at a dotted path in a JSON body ('' is the body itself), or _MISSING."""
    value = body
    for part in dotted.split(".") if dotted else []:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


# --- files ---


def _read_files(source: FileSource, s3_client: Any) -> Iterator[tuple[str, pd.DataFrame]]:
    for name, content in _file_contents(source, s3_client):
        try:
            if source.format == "parquet":
                frame = pd.read_parquet(content)
            else:
                frame = pd.read_csv(content)
        except pd.errors.EmptyDataError:
            frame = pd.DataFrame()
        except (ValueError, OSError, pyarrow.ArrowException) as exc:
            raise SourceError(f"{name}: cannot be read as {source.format}: {exc}") from exc
        yield name, frame


def _file_contents(source: FileSource, s3_client: Any) -> Iterator[tuple[str, Path | IO[bytes]]]:
    """(name, readable) for each matching file, in path order; S3 objects are read into memory one by one."""
    matches = _glob(source.pattern).match
    if not source.path.startswith("s3://"):
        folder = Path(source.path)
        if not folder.is_dir():
            raise SourceError(f"{folder}: no such folder")
        files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
        for relative in sorted(name for name in files if matches(name)):
            yield str(files[relative]), files[relative]
        return

    bucket, _, prefix = source.path.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    client = s3_client or boto3.client("s3", endpoint_url=source.s3_endpoint_url)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = sorted(item["Key"] for page in pages for item in page.get("Contents", []))
        for key in keys:
            if not key.endswith("/") and matches(key[len(prefix) :]):
                body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                yield f"s3://{bucket}/{key}", io.BytesIO(body)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise SourceError(f"{source.path}: cannot be listed or read: {exc}") from exc


def _glob(pattern: str) -> re.Pattern[str]:
    """A regex for a glob over '/'-separated relative paths, the same for folders and S3 keys."""
    meaning = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.lstrip("/"))
    return re.compile("".join(meaning.get(part, re.escape(part)) for part in parts) + r"\Z")


# --- shared ---


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone; interval bounds must be timezone-aware (UTC)")
    return moment.astimezone(UTC)


def _in_interval(frame: pd.DataFrame, column: str, start: datetime, end: datetime, where: str) -> pd.DataFrame:
    """The rows in [start, end) by `column` read as UTC; rows whose time cannot be read stay, for validation."""
    if frame.columns.empty:
        return frame
    if column not in frame.columns:
        raise SourceError(f"{where}: has no event-time column {column!r} (columns: {list(frame.columns)})")
    values = frame[column]
    if pd.api.types.is_datetime64_any_dtype(values):
        times = pd.to_datetime(values, utc=True)
    else:
        times = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    keep = times.isna() | ((times >= _utc(start)) & (times < _utc(end)))
    return frame.loc[keep.to_numpy()].reset_index(drop=True)
