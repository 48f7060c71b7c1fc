"""The inference log: every served prediction, written to a SQL database off the request path.

The drift monitor reads this table (include/mlops/monitoring.py), one of the operations store's
(include/mlops/operations_store.py defines it; SQLite locally, Postgres in compose):

    inference_log
      id             BIGINT PRIMARY KEY (autoincrement; INTEGER on SQLite)
      request_id     VARCHAR(32) NOT NULL   the `request_id` of the answer (one per HTTP request)
      record_index   INTEGER NOT NULL       the record's position in its request (0-based)
      record_id      TEXT NULL              the dataset's id column, when the client sent it (joins labels)
      model_name     TEXT NOT NULL          the model (its config's model.registered_name), e.g. fraud_detector
      model_version  TEXT NOT NULL          e.g. 3 (the MLflow registered model version)
      predicted_at   TIMESTAMP WITH TIME ZONE NOT NULL, UTC; on SQLite the text 'YYYY-MM-DD HH:MM:SS.ffffff'
                     in UTC (SQLAlchemy's form, the convention of include/mlops/sources.py)
      inputs         JSON NOT NULL (JSONB on Postgres)   the features as received, null for a missing value;
                                            {} in a row that was not the answer (its answer's row has them)
      label          TEXT NULL              classification: the predicted class, as text
      probabilities  JSON NULL (JSONB on Postgres)       classification: {"<class>": probability, ...}
      value          DOUBLE PRECISION NULL  regression: the predicted value
      role           TEXT NOT NULL          champion, or challenger (a shadow or canary rollout's; default champion)
      served         BOOLEAN NOT NULL       the prediction was the client's answer (false: a rollout's scoring off the
                                            request path, or one that failed)
      error          TEXT NULL              the scoring raised (no prediction): the first line of the error
      latency_ms     DOUBLE PRECISION NULL  the model's time for the request the row belongs to
      INDEX ix_inference_log_model_predicted_at (model_name, predicted_at)

Every model of the service writes to the same table, each row naming its model. A request hands its predictions
to an in-process bounded buffer and returns; one background thread inserts what has gathered every half second,
or as soon as 500 rows wait. When the database is unavailable, or the buffer is full, rows are dropped and
counted by model (`on_dropped`), and the service keeps answering; writing resumes by itself when the database is
back.

When it starts, the writer brings the database to the operations store's newest schema (a no-op where the stack's
start did it), off the request path. The service upgrades rather than refusing: it is often run alone on
a fresh database (a SQLite file), and a writer that only refused would drop every row, quietly.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic_core
import sqlalchemy as sa
from pydantic import BaseModel

from include.mlops import operations_store
from include.mlops.classes import text_of
from include.mlops.operations_store import inference_log
from include.serving.models import first_line

logger = logging.getLogger(__name__)

BATCH_ROWS = 500
FLUSH_SECONDS = 0.5
# Rows that may wait for the database: about a minute of heavy traffic, a few tens of MB.
CAPACITY_ROWS = 50_000


@dataclass(frozen=True)
class LoggedRequest:
    """One request's records and predictions, as the service answered them."""

    request_id: str
    model_name: str
    model_version: str
    predicted_at: dt.datetime
    records: Sequence[BaseModel]
    predictions: Sequence[dict[str, Any]]  # empty when the scoring failed (`error`)
    role: str = "champion"
    served: bool = True
    error: str | None = None
    latency_ms: float | None = None


class InferenceLog:
    """Writes LoggedRequests to `url` (SQLAlchemy) from a background thread; `submit` never blocks.

    `id_columns` names each model's id column (the record field a later label is joined by)."""

    def __init__(
        self,
        url: str,
        id_columns: Mapping[str, str],
        on_dropped: Callable[[str, int], None],
        capacity: int = CAPACITY_ROWS,
    ):
        self._engine = _engine(url)
        self._id_columns = dict(id_columns)
        self._on_dropped = on_dropped
        self._capacity = capacity
        self._pending: deque[LoggedRequest] = deque()
        self._pending_rows = 0
        self._wakeup = threading.Condition()
        self._stopping = False
        self._schema_ready = False
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, request: LoggedRequest) -> None:
        rows = len(request.records)
        with self._wakeup:
            if self._pending_rows + rows > self._capacity:
                self._on_dropped(request.model_name, rows)
                return
            self._pending.append(request)
            self._pending_rows += rows
            if self._pending_rows >= BATCH_ROWS:
                self._wakeup.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is pending (for up to `timeout` seconds) and stop the thread."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        self._thread.join(timeout)
        self._engine.dispose()

    def _run(self) -> None:
        # The schema first, so that it is there for the first request's rows and for the drift gauges' reads; a
        # database that is away now is upgraded before the first write that finds it back.
        try:
            self._upgrade_schema()
        except Exception as exc:  # as a failed write: the service must start all the same
            logger.warning("inference log unavailable at start, trying again at the first write: %s", first_line(exc))
        while True:
            with self._wakeup:
                if not self._stopping and self._pending_rows < BATCH_ROWS:
                    self._wakeup.wait(FLUSH_SECONDS)
                batch = list(self._pending)
                self._pending.clear()
                self._pending_rows = 0
                stopping = self._stopping
            if batch:
                self._write(batch)
            if stopping:
                return

    def _write(self, batch: list[LoggedRequest]) -> None:
        try:
            if not self._schema_ready:
                self._upgrade_schema()
            with self._engine.begin() as connection:
                connection.execute(inference_log.insert(), [row for r in batch for row in self._rows(r)])
        except Exception as exc:  # any database error: the service must keep answering
            for request in batch:
                self._on_dropped(request.model_name, len(request.records))
            self._schema_ready = False  # the database may come back empty
            if not self._failing:
                logger.warning("inference log unavailable, dropping rows until it is back: %s", first_line(exc))
            self._failing = True
            return
        if self._failing:
            logger.warning("inference log is writable again")
        self._failing = False

    def _upgrade_schema(self) -> None:
        operations_store.upgrade(self._engine)
        self._schema_ready = True

    def _rows(self, request: LoggedRequest) -> list[dict[str, Any]]:
        rows = []
        predictions = request.predictions if request.error is None else [{}] * len(request.records)
        id_column = self._id_columns[request.model_name]
        for index, (record, prediction) in enumerate(zip(request.records, predictions, strict=True)):
            if request.served:
                inputs = record.model_dump()
                record_id = inputs.pop(id_column, None)
            else:
                # A rollout's scoring off the path: the answer's row beside it (same request id and record index)
                # holds the inputs; not repeating them halves what the writer serialises during a rollout.
                inputs, record_id = {}, getattr(record, id_column, None)
            rows.append(
                {
                    "request_id": request.request_id,
                    "record_index": index,
                    "record_id": record_id,
                    "model_name": request.model_name,
                    "model_version": request.model_version,
                    "predicted_at": request.predicted_at,
                    "inputs": inputs,
                    "label": None if "label" not in prediction else text_of(prediction["label"]),
                    "probabilities": prediction.get("probabilities"),
                    "value": prediction.get("value"),
                    "role": request.role,
                    "served": request.served,
                    "error": request.error,
                    "latency_ms": request.latency_ms,
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
