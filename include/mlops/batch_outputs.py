"""Copies of a batch run's predictions outside lakeFS (`batch.outputs`): SQL tables and S3 prefixes.

lakeFS stays the record: a copy is made from the merge commit on `main`, once the merge succeeded, and holds the
same rows (the Parquet parts `predictions/<model>/<key>/part-<chunk>.parquet`, quarantine left out). Each copy
is keyed by the run's output key (`batch_scoring.interval_key` or `content_key`), so that a retried or re-run
interval leaves one result there too:

- a SQL table gets the parts' rows with one more column, `output_key`; in one transaction the rows of the key
  are deleted and the run's inserted (a reader sees the old rows or the new, never both or none).
- an S3 prefix gets the parts byte for byte as `<prefix>/<model>/<key>/part-<chunk>.parquet`, then loses the
  parts of that key a run with more chunks wrote. S3 has no transactions: while a copy is written, a reader of
  the key's folder may see new parts beside old ones.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import sqlalchemy as sa

from include.mlops import lakefs_repository
from include.mlops.config import Output, PipelineConfig, SqlOutput
from include.mlops.object_store import ObjectStore

if TYPE_CHECKING:
    import lakefs

OUTPUT_KEY_COLUMN = "output_key"
# Rows turned into Python values and sent at a time: a part's 250,000 rows as dicts would take ~250 MiB.
INSERT_ROWS = 10_000
_NULL = "\\N"
_PART = re.compile(r"^part-\d+\.parquet$")


class OutputError(RuntimeError):
    """An output could not be written; the message names each such output (table and database, or S3 URL and
    endpoint) and why."""


@dataclass(frozen=True)
class Written:
    """What one output holds for the key now: which output (as `describe` names it), the parts copied, and for a
    table the rows."""

    output: str
    parts: int
    rows: int | None = None


def default_table(config: PipelineConfig) -> str:
    return f"batch_predictions_{config.name}"


def prediction_parts(repo: lakefs.Repository, ref: str, prefix: str) -> list[str]:
    """The paths of the scored parts under `prefix` at `ref` (not the quarantine), in chunk order."""
    return [o.path for o in lakefs_repository.list_objects(repo, ref, prefix) if _PART.match(o.path[len(prefix) :])]


def write_outputs(
    repo: lakefs.Repository,
    ref: str,
    prefix: str,
    output_key: str,
    config: PipelineConfig,
    engine_for: Callable[[str], sa.Engine],
) -> list[Written]:
    """Copy the parts under `prefix` at `ref` into each of `config.batch.outputs`, in order; `engine_for` gives
    the SQLAlchemy engine of an Airflow connection id. Every output is tried; if any failed, OutputError names
    each that did (the others are written)."""
    outputs: Sequence[Output] = config.batch.outputs if config.batch else []
    parts = prediction_parts(repo, ref, prefix)
    if outputs and not parts:
        raise OutputError(f"no scored parts under {prefix!r} at {ref!r} in {repo.id!r}: nothing to copy")
    written, failed = [], []
    for number, output in enumerate(outputs, start=1):
        what = f"output {number} ({describe(output, config)})"
        try:
            if isinstance(output, SqlOutput):
                engine = engine_for(output.connection_id)
                what = f"output {number} ({describe(output, config, engine)})"
                frames = (lakefs_repository.read_parquet(repo, ref, p) for p in parts)
                rows = write_table(engine, output.table or default_table(config), output_key, frames)
                written.append(Written(what, len(parts), rows))
            else:
                store = ObjectStore.from_url(output.url, output.endpoint_url)
                folder = store.key(config.name, output_key)
                write_prefix(store, folder, ((p, lakefs_repository.read_bytes(repo, ref, p)) for p in parts))
                written.append(Written(what, len(parts)))
        except Exception as exc:
            failed.append(f"{what}: {type(exc).__name__}: {exc}")
    if failed:
        done = "\nwritten: " + ", ".join(w.output for w in written) if written else ""
        raise OutputError(f"{len(failed)} of {len(outputs)} batch output(s) failed:\n" + "\n".join(failed) + done)
    return written


def describe(output: Output, config: PipelineConfig, engine: sa.Engine | None = None) -> str:
    """The output as a message names it: the table, its connection and database, or the S3 URL and endpoint."""
    if isinstance(output, SqlOutput):
        where = f" at {engine.url.render_as_string(hide_password=True)}" if engine is not None else ""
        return f"sql table {output.table or default_table(config)} of connection {output.connection_id!r}{where}"
    return f"{output.url} at {ObjectStore.from_url(output.url, output.endpoint_url).endpoint}"


def write_table(engine: sa.Engine, name: str, output_key: str, frames: Iterable[pd.DataFrame]) -> int:
    """Replace the rows of `output_key` in the table `name` (`schema.table` allowed) with the rows of `frames`
    (one at least), in one transaction; the table is made from the first frame's columns when it does not exist.
    Returns the rows inserted. Raises OutputError when the table lacks a column the rows have (the model's
    classes changed, or the table holds other predictions)."""
    schema, _, table_name = name.rpartition(".")
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"no rows of key {output_key!r} to write into table {name}")
    inserted = 0
    with engine.begin() as connection:
        table = _table(connection, table_name, schema or None, first)
        connection.execute(sa.delete(table).where(table.c[OUTPUT_KEY_COLUMN] == output_key))
        for frame in itertools.chain([first], frames):
            if connection.dialect.driver == "psycopg2":
                _copy(connection, table, frame, output_key)
            else:
                for start in range(0, len(frame), INSERT_ROWS):
                    connection.execute(table.insert(), _records(frame.iloc[start : start + INSERT_ROWS], output_key))
            inserted += len(frame)
    return inserted


def _table(connection: sa.Connection, name: str, schema: str | None, frame: pd.DataFrame) -> sa.Table:
    """The table for rows like `frame`'s, made (with an index on the key) if it does not exist, checked to have
    their columns if it does."""
    columns = [sa.Column(OUTPUT_KEY_COLUMN, sa.String(200), nullable=False)]
    columns += [sa.Column(str(c), _sql_type(frame[c].dtype)) for c in frame.columns]
    table = sa.Table(name, sa.MetaData(), *columns, schema=schema)
    sa.Index(f"ix_{name[:48]}_{OUTPUT_KEY_COLUMN}", table.c[OUTPUT_KEY_COLUMN])  # 63 characters at most
    inspector = sa.inspect(connection)
    if not inspector.has_table(name, schema=schema):
        table.create(connection)
        return table
    present = {c["name"] for c in inspector.get_columns(name, schema=schema)}
    if missing := [c.name for c in columns if c.name not in present]:
        raise OutputError(
            f"table {table.fullname} has no column(s) {', '.join(missing)} (it has {', '.join(sorted(present))}): "
            "it was made for other predictions; name another table, or add the columns"
        )
    return table


def _sql_type(dtype) -> sa.types.TypeEngine:
    if isinstance(dtype, pd.DatetimeTZDtype):
        return sa.DateTime(timezone=True)
    if pd.api.types.is_bool_dtype(dtype):
        return sa.Boolean()
    if pd.api.types.is_integer_dtype(dtype):
        return sa.BigInteger()
    if pd.api.types.is_float_dtype(dtype):
        return sa.Float(53)
    return sa.Text()


def _records(frame: pd.DataFrame, output_key: str) -> list[dict[str, object]]:
    """`frame`'s rows as Python values, nulls as None, with the key: what DB-API drivers take (pandas' Timestamps
    are datetimes)."""
    values: dict[str, list[object]] = {OUTPUT_KEY_COLUMN: [output_key] * len(frame)}
    for name, column in frame.items():
        values[str(name)] = column.astype(object).where(column.notna(), None).tolist()
    return [dict(zip(values, row, strict=True)) for row in zip(*values.values(), strict=True)]


def _copy(connection: sa.Connection, table: sa.Table, frame: pd.DataFrame, output_key: str) -> None:
    """`frame`'s rows into `table` with Postgres' COPY, in the connection's transaction: 250,000 rows of the demo's
    predictions took ~4 s here, against ~18 s as INSERTs. Text is quoted, so that "" stays an empty text, and a
    null is \\N (also when quoted: FORCE_NULL)."""
    rows = frame.assign(**{OUTPUT_KEY_COLUMN: output_key})[[c.name for c in table.columns]]
    buffer = io.StringIO()
    rows.to_csv(buffer, index=False, header=False, quoting=csv.QUOTE_NONNUMERIC, na_rep=_NULL)
    buffer.seek(0)
    quote = connection.dialect.identifier_preparer
    columns = ", ".join(quote.quote(c.name) for c in table.columns)
    options = f"FORMAT csv, NULL '{_NULL}', FORCE_NULL ({columns})"
    with connection.connection.cursor() as cursor:
        cursor.copy_expert(f"COPY {quote.format_table(table)} ({columns}) FROM STDIN WITH ({options})", buffer)


def write_prefix(store: ObjectStore, folder: str, parts: Iterable[tuple[str, bytes]]) -> list[str]:
    """Put each part (its lakeFS path and bytes) as `<folder>/<file name>`, then delete what else is in `folder`
    (parts of a run with more chunks). Returns the keys written."""
    written = []
    for path, body in parts:
        key = f"{folder}/{path.rsplit('/', 1)[-1]}"
        store.put(key, body, "application/vnd.apache.parquet")
        written.append(key)
    if stale := sorted(set(store.keys(f"{folder}/")) - set(written)):
        store.delete(stale)
    return written
