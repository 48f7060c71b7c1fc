"""The inference log's writer process: what runs there, apart from the worker's code, so that the process imports
little: SQLAlchemy and the operations store's tables, not the worker's pandas and scikit-learn (a writer's PSS is
43 MiB; 178 MiB when it imported the worker's modules).

A worker's InferenceLog (include/serving/inference_log.py) hands it bundles of Messages through a queue; it inserts
them in batches and reports each batch's rows by model as written or dropped.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import queue
import signal
import time
from collections.abc import Mapping
from typing import Any

import pydantic_core
import sqlalchemy as sa

from include.mlops import operations_store
from include.mlops.operations_store import inference_log
from include.serving.errors import first_line

logger = logging.getLogger(__name__)

BATCH_ROWS = 500
FLUSH_SECONDS = 0.5
# The writer's nice value: when the worker has a request to answer it takes the core from the writer, which
# catches up when the worker waits (rows wait for it, up to CAPACITY_ROWS).
WRITER_NICENESS = 10

# What crosses to the writer: a LoggedRequest as plain values (pickled by the queue's thread, unpickled by the
# writer), with each record's inputs as a dict when it was the answer, and only its id otherwise.
Message = tuple[str, str, str, dt.datetime, list[Any], list[dict[str, Any]], str, bool, str | None, float | None]


def write_forever(url: str, id_columns: Mapping[str, str], requests: Any, reports: Any) -> None:
    """The writer process: insert the requests' rows in batches until the stop message (None), reporting each
    batch's rows by model as written or dropped. It ends too when the worker that started it is gone."""
    # Its lines go where the worker's go (the inherited stderr), in the form of BentoML's.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(name)s] %(levelname)s: %(message)s")
    # Alembic names the migrations it runs (worth a line); its plugin set-up and dialect notes, ten lines at every
    # worker's start, are not.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)
    # Ctrl-C reaches the whole process group: the worker's clean stop, not the signal, ends the writer.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(WRITER_NICENESS)
    worker = os.getppid()
    writer = _Writer(_engine(url), id_columns)
    # The schema first, so that it is there for the first request's rows and for the drift gauges' reads; a
    # database that is away now is upgraded before the first write that finds it back.
    try:
        writer.upgrade_schema()
    except Exception as exc:  # as a failed write: the writer must go on all the same
        logger.warning("inference log unavailable at start, trying again at the first write: %s", first_line(exc))
    reports.put(("started", {}))
    stopping = False
    while not stopping:
        batch: list[Message] = []
        rows = 0
        deadline = time.monotonic() + FLUSH_SECONDS
        while rows < BATCH_ROWS:
            try:
                bundle = requests.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                stopping = os.getppid() != worker  # orphaned: write what was handed over, and end
                break
            if bundle is None:
                stopping = True
                break
            batch += bundle
            rows += sum(len(message[4]) for message in bundle)
        if batch:
            rows_by_model: collections.Counter[str] = collections.Counter()
            for message in batch:
                rows_by_model[message[1]] += len(message[4])
            outcome = "written" if writer.write(batch) else "dropped"
            reports.put((outcome, dict(rows_by_model)))
    writer.engine.dispose()
    reports.close()
    reports.join_thread()


class _Writer:
    def __init__(self, engine: sa.Engine, id_columns: Mapping[str, str]):
        self.engine = engine
        self._id_columns = id_columns
        self._schema_ready = False
        self._failing = False

    def upgrade_schema(self) -> None:
        try:
            operations_store.upgrade(self.engine)
        except operations_store.SchemaAhead as exc:
            # Newer code (the stack's start, or a newer replica) migrated the store first, as a rolling upgrade
            # does: its migrations add, so this writer's rows still fit; dropping them would lose what it serves.
            logger.warning("%s; writing the inference log as this code knows it", exc)
        self._schema_ready = True

    def write(self, batch: list[Message]) -> bool:
        """Insert the batch's rows; False when the database would not take them."""
        try:
            if not self._schema_ready:
                self.upgrade_schema()
            with self.engine.begin() as connection:
                connection.execute(inference_log.insert(), [row for message in batch for row in self._rows(message)])
        except Exception as exc:  # any database error: the rows are dropped and counted, the writer goes on
            self._schema_ready = False  # the database may come back empty
            if not self._failing:
                logger.warning("inference log unavailable, dropping rows until it is back: %s", first_line(exc))
            self._failing = True
            return False
        if self._failing:
            logger.warning("inference log is writable again")
        self._failing = False
        return True

    def _rows(self, message: Message) -> list[dict[str, Any]]:
        request_id, model_name, version, predicted_at, inputs, predictions, role, served, error, latency_ms = message
        if error is not None:
            predictions = [{}] * len(inputs)
        id_column = self._id_columns[model_name]
        rows = []
        for index, (record, prediction) in enumerate(zip(inputs, predictions, strict=True)):
            if served:
                record_id = record.pop(id_column, None)
            else:
                record, record_id = {}, record
            rows.append(
                {
                    "request_id": request_id,
                    "record_index": index,
                    "record_id": record_id,
                    "model_name": model_name,
                    "model_version": version,
                    "predicted_at": predicted_at,
                    "inputs": record,
                    "label": prediction.get("label"),
                    "probabilities": prediction.get("probabilities"),
                    "value": prediction.get("value"),
                    "role": role,
                    "served": served,
                    "error": error,
                    "latency_ms": latency_ms,
                }
            )
        return rows


def _engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    # An unreachable Postgres should fail a write in seconds, not hang the writer for the OS's TCP timeout.
    connect_args = {"connect_timeout": 5} if parsed.get_backend_name() == "postgresql" else {}
    engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args, json_serializer=_json_text)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_for_concurrent_readers)
    return engine


def _json_text(value: Any) -> str:
    # pydantic's serializer takes a third off the writer's time per row against json.dumps.
    return pydantic_core.to_json(value).decode()


def _sqlite_for_concurrent_readers(dbapi_connection, _record) -> None:
    # WAL lets the drift monitor read while workers write; the busy timeout lets workers take turns writing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
