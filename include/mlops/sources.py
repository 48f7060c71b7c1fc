"""Collection: one interval's rows from the dataset's source (a SQL query, an HTTP API, or files).

Every function returns the rows whose event time is in [start, end), as the source gives them, and the count
of rows the source gave outside the interval, which are left out and logged (a file may hold several days, an
API may answer loosely, a SQL query's text bounds may be coarser than the interval). Event times are read by
include/mlops/event_times.py, as validation reads them. Types are coerced and rows checked later, by
validation, which must see bad rows to report them: so rows whose event time cannot be read are kept here.

A SQL query gets the interval as the bind parameters :start and :end (and :as_of), in the form its event-time
column is stored in (`source.event_time_type`):

- `timestamp` (Postgres `timestamptz` or `timestamp`, the session in UTC; a naive column holds UTC): the
  instants, as timezone-aware datetimes.
- `epoch_seconds`, `epoch_milliseconds`: the numbers, exact (an integer when whole).
- `text` (ISO 8601; SQLite's default, as it has no timestamp type): text compares character by character, so
  each bound is a text that sorts right against every ISO form of every instant, whatever the separator
  (space or `T`), fraction or zone suffix (`Z`, `+00:00`). At midnight that is the date alone, `2026-11-14`:
  it sorts at or below every form of that day and above every form of the day before. Elsewhere it is
  `2026-11-14 12:30` or `2026-11-14 12:30:15`: :start and :as_of round down to the second with a space
  (which sorts below `T`), :end rounds up to the second with a `T`, so that no row of the interval is missed;
  the rows of the same day they let through are outside the interval and left out here. An :as_of so bound
  counts no fact later than it, and may leave out facts of its own day written with a `T`.
  What text comparison cannot get right, and no bound mends: a time with a non-UTC offset
  (`2026-11-14T00:30:00+01:00` is 23:30 UTC on the 13th) sorts by its local date, so near midnight it comes
  back on the wrong day (left out here, and counted) and never on its own. On SQLite compare
  `datetime(event_time)` instead, which is UTC text (SQLite keeps milliseconds: a time less than one before
  midnight may move to the next day); on Postgres cast to `timestamptz` with `event_time_type: timestamp`.
  Text that is not ISO 8601 with the date first (`14/11/2026`) does not sort as time: the database decides
  which rows come back, and validation sees only those. On Postgres a text column compares by its collation:
  byte order (`C`) and ICU's (`en-x-icu`) are tested; with another, write `event_time COLLATE "C" >= :start`.

Writers of the demo's data (include/demo_sources/simulator.py) use `sql_timestamps`: SQLite text with six fraction
digits, `YYYY-MM-DD HH:MM:SS.ffffff` (the form SQLAlchemy's own SQLite DateTime writes), datetimes elsewhere.

Every error is a `SourceError` whose message names the source (query, URL or file) and what went wrong.
"""

from __future__ import annotations

import email.utils
import io
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import boto3
import botocore.exceptions
import httpx
import numpy as np
import pandas as pd
import pyarrow
import pyarrow.parquet
import sqlalchemy as sa

from include.mlops.config import EventTimeType, FileSource, HttpPagination, HttpSource, Secret, SqlSource
from include.mlops.event_times import read_event_times

logger = logging.getLogger(__name__)

# Rows read at a time (a SQL round trip, a slice of a Parquet file): large enough to be fast, small enough that
# the driver's row tuples, or the frame, of one piece stay a few tens of MB.
PIECE_ROWS = 50_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A server may ask for a long pause; a task should rather fail and be retried by Airflow than sleep for hours.
_MAX_RETRY_AFTER_SECONDS = 300.0
_ERROR_BODY_CHARS = 200
_MISSING = object()  # a JSON path that is not in the body (None is a value JSON can hold)
_EXAMPLES = 3  # event times shown in the log line about rows outside the interval

# (connection id, field) -> the field's value; raises LookupError when there is no such connection or field.
ConnectionField = Callable[[str, str], str]


class SourceError(RuntimeError):
    """The source could not be read: the message names the query, URL or file, and what went wrong."""


@dataclass(frozen=True)
class Fetched:
    """An interval's rows, and how many rows outside it the source also gave (left out)."""

    rows: pd.DataFrame
    outside_interval: int


def default_event_time_type(dialect: str) -> EventTimeType:
    """How event times are stored when the config does not say: SQLite has no timestamp type."""
    return "text" if dialect == "sqlite" else "timestamp"


def sql_time(moment: datetime, event_time_type: EventTimeType, round_up: bool = False) -> datetime | int | float | str:
    """`moment` as a bind parameter compared with an event-time column stored as `event_time_type`.

    Timestamps and epoch numbers are exact. Text is the shortest of `YYYY-MM-DD`, `YYYY-MM-DD HH:MM` and
    `YYYY-MM-DD HH:MM:SS` (see the module's docstring): rounded down, it sorts at or below every ISO 8601
    form of `moment` and of the instants after it (a lower bound misses no row, `< :as_of` counts none too
    late); rounded up, above every form of the instants before `moment` (an upper bound misses no row).
    """
    moment = _utc(moment)
    if event_time_type == "timestamp":
        return moment
    if event_time_type in ("epoch_seconds", "epoch_milliseconds"):
        micros = (moment - _EPOCH) // timedelta(microseconds=1)
        per_unit = 10**6 if event_time_type == "epoch_seconds" else 10**3
        whole, part = divmod(micros, per_unit)
        return whole if part == 0 else micros / per_unit
    if round_up and moment.microsecond:
        moment += timedelta(seconds=1)
    moment = moment.replace(microsecond=0)
    if moment == moment.replace(hour=0, minute=0, second=0):
        return f"{moment:%Y-%m-%d}"
    separator = "T" if round_up else " "  # the greatest and the least separator an ISO form may have
    return moment.strftime(f"%Y-%m-%d{separator}%H:%M" + (":%S" if moment.second else ""))


def sql_timestamps(times: pd.Series, dialect: str) -> list[Any]:
    """A column of timezone-aware times as values to write to a database of `dialect`: SQLite text with six
    fraction digits, `YYYY-MM-DD HH:MM:SS.ffffff`, UTC; datetimes elsewhere."""
    utc = times.dt.tz_convert(UTC)
    if utc.empty:  # np.char.replace fails on an empty array
        return []
    if dialect != "sqlite":
        return [None if pd.isna(t) else t.to_pydatetime() for t in utc]
    # Vectorised: strftime per value is ten times slower.
    text = np.datetime_as_string(utc.dt.tz_localize(None).to_numpy("datetime64[us]"), unit="us")
    values = np.char.replace(text, "T", " ").astype(object)
    values[utc.isna().to_numpy()] = None
    return values.tolist()


def fetch_sql(
    source: SqlSource,
    url: str,
    start: datetime,
    end: datetime,
    event_time_column: str,
    as_of: datetime | None = None,
    columns: Sequence[str] | None = None,
) -> Fetched:
    """The rows of `source.query` on the database at `url` (SQLAlchemy), for the interval [start, end), in one
    frame: `sql_pieces`, gathered."""
    return gathered(sql_pieces(source, url, start, end, event_time_column, as_of, columns))


def sql_pieces(
    source: SqlSource,
    url: str,
    start: datetime,
    end: datetime,
    event_time_column: str,
    as_of: datetime | None = None,
    columns: Sequence[str] | None = None,
) -> Iterator[Fetched]:
    """The rows of `source.query` on the database at `url` (SQLAlchemy), for the interval [start, end), a piece of
    PIECE_ROWS rows at a time; only `columns` of them (and the event time) when given.

    The query gets the bind parameters :start and :end, and :as_of when it uses it (the time up to which later
    facts, such as labels, count), bound by `source.event_time_type` (module docstring). Rows are streamed (a
    server-side cursor on Postgres), so the driver never holds the whole result as Python tuples, and a reader that
    writes each piece away never holds the whole result at all. Rows the query returns outside [start, end) are
    left out and counted.
    """
    query = sa.text(source.query)
    where = f"query {_first_line(source.query)!r} on {_safe_url(url)}"
    try:
        engine = sa.create_engine(url)
    except sa.exc.ArgumentError as exc:  # a malformed URL, or a database SQLAlchemy has no dialect for
        raise SourceError(f"{where}: not a usable database URL: {exc}") from exc
    dialect = engine.dialect.name
    time_type = source.event_time_type or default_event_time_type(dialect)
    if dialect == "sqlite" and time_type == "timestamp":
        raise SourceError(
            f"{where}: SQLite has no timestamp type; set source.event_time_type to text (ISO 8601 text) or "
            "epoch_seconds / epoch_milliseconds (numbers), as the event times are stored"
        )
    params = {"start": sql_time(start, time_type), "end": sql_time(end, time_type, round_up=True)}
    if "as_of" in query.compile().params:
        if as_of is None:
            raise SourceError(f"{where}: the query uses :as_of, and no as_of time was given")
        params["as_of"] = sql_time(as_of, time_type)
    try:
        with engine.connect() as conn:
            if dialect == "postgresql":
                # timestamptz comes back in the session's time zone, and a naive timestamp compares with
                # :start as a time in it; the pipeline speaks UTC.
                conn.exec_driver_sql("SET TIME ZONE 'UTC'")
            streaming = conn.execution_options(stream_results=True, max_row_buffer=PIECE_ROWS)
            for piece in pd.read_sql_query(query, streaming, params=params, chunksize=PIECE_ROWS):
                yield _in_interval(_only(piece, columns, event_time_column), event_time_column, start, end, where)
    except sa.exc.SQLAlchemyError as exc:
        problem = getattr(exc, "orig", None) or exc
        raise SourceError(f"{where} failed (source.event_time_type {time_type}): {problem}") from exc
    finally:
        engine.dispose()


def header_values(
    headers: Mapping[str, str | Secret], connection_field: ConnectionField | None = None
) -> dict[str, str]:
    """`headers` with each `Secret` replaced by its prefix and value: an environment variable's, or a
    connection's field through `connection_field` (plugins/mlops_airflow/sources.py reads Airflow's).

    An error names the header and where its value was looked for, never a value.
    """
    values = {}
    for name, value in headers.items():
        if isinstance(value, str):
            values[name] = value
            continue
        if value.env is not None:
            found = os.environ.get(value.env)
            if not found:
                raise SourceError(f"headers.{name}: the environment variable {value.env!r} is not set, or empty")
        elif connection_field is None:
            raise SourceError(
                f"headers.{name}: its value is in connection {value.connection!r}, and no connection lookup was given"
            )
        else:
            try:
                found = connection_field(value.connection, value.field)
            except LookupError as exc:
                raise SourceError(f"headers.{name}: {exc}") from exc
        values[name] = value.prefix + found
    return values


def fetch_http(
    source: HttpSource,
    start: datetime,
    end: datetime,
    event_time_column: str,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
    columns: Sequence[str] | None = None,
) -> Fetched:
    """The records an HTTP API answers for [start, end), every page of them, in one frame: `http_pieces`,
    gathered."""
    return gathered(http_pieces(source, start, end, event_time_column, headers, auth, transport, columns))


def http_pieces(
    source: HttpSource,
    start: datetime,
    end: datetime,
    event_time_column: str,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
    columns: Sequence[str] | None = None,
) -> Iterator[Fetched]:
    """The records an HTTP API answers for [start, end), a page at a time (the last, often empty, one too); those
    outside the interval are left out. Only `columns` of them (and the event time) when given.

    The interval goes out as ISO-8601 query parameters. Connection errors, timeouts, 429 and 5xx answers are
    retried with exponential backoff (or after the server's Retry-After); other 4xx answers are not.
    `headers` are `source.headers` with their secrets looked up (`header_values`); by default they are looked
    up here, which reaches environment variables but no connection. `auth` is (user, password) for basic auth;
    `transport` replaces the network (for tests).
    """
    if source.pagination.style == "cursor" and source.format != "json":
        raise SourceError(f"{source.url}: cursor pagination reads the cursor from a JSON body, and format is csv")
    interval = {source.start_param: _utc(start).isoformat(), source.end_param: _utc(end).isoformat()}
    with httpx.Client(
        headers=header_values(source.headers) if headers is None else dict(headers),
        auth=auth,
        timeout=source.timeout_seconds,
        transport=transport,
        follow_redirects=True,
    ) as client:
        for page in _http_pages(client, source, interval):
            yield _in_interval(_only(page, columns, event_time_column), event_time_column, start, end, source.url)


def fetch_files(
    source: FileSource,
    start: datetime,
    end: datetime,
    event_time_column: str,
    s3_client: Any = None,
    columns: Sequence[str] | None = None,
) -> Fetched:
    """The rows of the CSV or Parquet files matching `source.pattern` under `source.path`, in [start, end), in one
    frame: `file_pieces`, gathered. When no file matches, the frame is empty and has no columns; when files match
    and no row is in the interval, it is empty with the files' columns."""
    return gathered(file_pieces(source, start, end, event_time_column, s3_client, columns))


def file_pieces(
    source: FileSource,
    start: datetime,
    end: datetime,
    event_time_column: str,
    s3_client: Any = None,
    columns: Sequence[str] | None = None,
) -> Iterator[Fetched]:
    """The rows of the CSV or Parquet files matching `source.pattern` under `source.path`, in [start, end): a CSV
    file at a time, a Parquet file PIECE_ROWS rows at a time (`parquet_pieces`). Only `columns` of them (and the
    event time) when given (a Parquet file's other columns are not read at all).

    `path` is a local folder or `s3://bucket/prefix`; `pattern` is a glob relative to it (`*` and `?` stay in
    one folder, `**/` crosses folders). Files are read in path order. A CSV file is read whole: read in pieces,
    pandas would guess each piece's types apart (a code column of digits, then of letters). `s3_client` is a boto3
    S3 client; by default one is made for `s3_endpoint_url` (MinIO) with credentials from the environment.
    """
    for name, frame in _read_files(source, s3_client, _wanted(columns, event_time_column)):
        yield _in_interval(frame, event_time_column, start, end, name)


def parquet_pieces(file: Path | IO[bytes], columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
    """The rows of a Parquet file, PIECE_ROWS at a time, typed as pandas' read_parquet types them; only those of
    `columns` the file has when given. A file of no rows gives one empty frame with its columns."""
    parquet = pyarrow.parquet.ParquetFile(file)
    kept = None if columns is None else [c for c in parquet.schema_arrow.names if c in columns]
    empty = True
    for batch in parquet.iter_batches(batch_size=PIECE_ROWS, columns=kept):
        empty = False
        yield batch.to_pandas()
    if empty:
        yield parquet.read(columns=kept).to_pandas()


def gathered(pieces: Iterable[Fetched]) -> Fetched:
    """`pieces` as one: their rows in order, and the rows outside the interval they left out. A piece without
    columns (an empty CSV file, an empty page) adds nothing; empty pieces decide the columns only when no piece
    has rows (they would decide the dtypes of columns the others fill)."""
    rows, last, outside = [], None, 0
    for piece in pieces:
        outside += piece.outside_interval
        if piece.rows.columns.empty:
            continue
        last = piece.rows
        if not piece.rows.empty:
            rows.append(piece.rows)
    if not rows:
        return Fetched(pd.DataFrame() if last is None else last, outside)
    return Fetched(rows[0] if len(rows) == 1 else pd.concat(rows, ignore_index=True), outside)


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


def _read_files(source: FileSource, s3_client: Any, columns: list[str] | None) -> Iterator[tuple[str, pd.DataFrame]]:
    for name, content in _file_contents(source, s3_client):
        try:
            if source.format == "parquet":
                yield from ((name, piece) for piece in parquet_pieces(content, columns))
            else:
                yield name, pd.read_csv(content, usecols=None if columns is None else lambda c: c in columns)
        except pd.errors.EmptyDataError:
            yield name, pd.DataFrame()
        except (ValueError, OSError, pyarrow.ArrowException) as exc:
            raise SourceError(f"{name}: cannot be read as {source.format}: {exc}") from exc


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


def _wanted(columns: Sequence[str] | None, event_time_column: str) -> list[str] | None:
    return None if columns is None else list(dict.fromkeys([*columns, event_time_column]))


def _only(frame: pd.DataFrame, columns: Sequence[str] | None, event_time_column: str) -> pd.DataFrame:
    """`frame` with only `columns` and the event time (those of them it has), or whole without `columns`: a reader
    of a few columns (the labels) holds a chunk of the others at a time, not the window's."""
    wanted = _wanted(columns, event_time_column)
    return frame if wanted is None else frame[[c for c in frame.columns if c in wanted]]


def _in_interval(frame: pd.DataFrame, column: str, start: datetime, end: datetime, where: str) -> Fetched:
    """The rows in [start, end) by `column`; rows whose time cannot be read stay, for validation to report."""
    if frame.columns.empty:
        return Fetched(frame, 0)
    if column not in frame.columns:
        raise SourceError(f"{where}: has no event-time column {column!r} (columns: {list(frame.columns)})")
    times = read_event_times(frame[column]).times
    outside = (times.notna() & ((times < _utc(start)) | (times >= _utc(end)))).to_numpy()
    count = int(outside.sum())
    if count:
        examples = frame.loc[outside, column].head(_EXAMPLES).tolist()
        logger.info(
            "%s: %d row(s) outside [%s, %s) left out (%s: %s)",
            where,
            count,
            _utc(start).isoformat(),
            _utc(end).isoformat(),
            column,
            examples,
        )
    return Fetched(frame.loc[~outside].reset_index(drop=True), count)
