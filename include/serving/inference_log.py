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

Every model of the service writes to the same table, each row naming its model. The writing is done by a process
of its own (one per worker), so that serialising rows to JSON and inserting them do not hold the worker's GIL
while it answers: a request only adds its records and predictions, as plain values, to a bundle and returns.
Bundles go to the writer through a multiprocessing queue every 64 rows or 0.1 s, and the writer runs at a lower
priority than the worker, which takes the core from it while it has requests to answer. The writer inserts
what has gathered every half second, or as soon as 500 rows wait, and reports back, by model, the rows it wrote
and the rows it could not.

What can go wrong, and what then happens (each dropped row counted by model, `on_dropped`, which the service
exposes as mlops_inference_log_dropped_total):

- the database is unavailable: the writer drops the batch and says so once; writing resumes by itself when the
  database is back;
- the writer falls behind: at most CAPACITY_ROWS rows wait for it (handed over and not yet reported back);
  beyond that a request's rows are dropped at once, and the service keeps answering;
- the writer dies (killed, out of memory): the rows it had not reported are counted as dropped (some of them
  may have been written), and a new writer is started within a second (`on_restarted`, exposed as
  mlops_inference_log_writer_restarts_total);
- a clean stop: the writer writes every row handed to it before it ends; none is lost.

When it starts, the writer brings the database to the operations store's newest schema (a no-op where the stack's
start did it), off the request path. The service upgrades rather than refusing: it is often run alone on
a fresh database (a SQLite file), and a writer that only refused would drop every row, quietly.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import multiprocessing
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from include.mlops.classes import text_of
from include.serving import log_writer

logger = logging.getLogger(__name__)

# Rows that may wait for the writer: about a minute of heavy traffic, a few tens of MB.
CAPACITY_ROWS = 50_000
# Requests are handed to the writer in bundles, of this many rows or what gathered in HANDOVER_SECONDS: a
# handover per request woke the queue's sending thread once per request, a thread switch each time.
HANDOVER_ROWS = 64
HANDOVER_SECONDS = 0.1
# How long a worker's start waits for its writer to bring the schema up (a writer is a fresh Python process).
START_SECONDS = 60.0
# A fresh process, not a fork of the worker: the worker runs threads (an event loop, onnxruntime, the model
# pointers' watcher), and a fork could copy a lock one of them holds.
_PROCESSES = multiprocessing.get_context("spawn")


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
    """Writes LoggedRequests to `url` (SQLAlchemy) from a writer process; `submit` never blocks.

    `id_columns` names each model's id column (the record field a later label is joined by); `on_dropped(model,
    rows)` counts rows that were not written, `on_restarted()` a writer that died and was replaced."""

    def __init__(
        self,
        url: str,
        id_columns: Mapping[str, str],
        on_dropped: Callable[[str, int], None],
        on_restarted: Callable[[], None] = lambda: None,
        capacity: int = CAPACITY_ROWS,
    ):
        self._url = url
        self._id_columns = dict(id_columns)
        self._on_dropped = on_dropped
        self._on_restarted = on_restarted
        self._capacity = capacity
        # Rows handed to the writer and not yet reported back, by model: what a dead writer may have lost.
        self._unreported: collections.Counter[str] = collections.Counter()
        self._unreported_rows = 0
        # What gathered since the last handover.
        self._bundle: list[log_writer.Message] = []
        self._bundle_rows = 0
        self._lock = threading.Lock()
        self._stopping = False
        self._writer: Any = None
        self._requests: Any = None
        self._reports: Any = None
        self._watcher = threading.Thread(target=self._watch, name="inference-log", daemon=True)

    @property
    def writer_pid(self) -> int | None:
        return self._writer.pid if self._writer else None

    def start(self) -> None:
        """Start the writer and wait until it has brought the database's schema up (or found it away), so that the
        table is there for the first request's rows and for the drift gauges' reads."""
        self._start_writer()
        try:
            self._reports.get(timeout=START_SECONDS)
        except queue.Empty:
            logger.warning("inference log writer not started after %.0f s; rows wait for it", START_SECONDS)
        self._watcher.start()

    def submit(self, request: LoggedRequest) -> None:
        rows = len(request.records)
        if request.served:
            inputs: list[Any] = [record.model_dump() for record in request.records]
        else:
            # A rollout's scoring off the path: the answer's row beside it (same request id and record index)
            # holds the inputs; not repeating them halves what is handed over during a rollout.
            id_column = self._id_columns[request.model_name]
            inputs = [getattr(record, id_column, None) for record in request.records]
        message: log_writer.Message = (
            request.request_id,
            request.model_name,
            request.model_version,
            request.predicted_at,
            inputs,
            # Labels as text here, so that the writer needs neither the classes' module nor numpy to read them.
            [{**p, "label": text_of(p["label"])} if "label" in p else p for p in request.predictions],
            request.role,
            request.served,
            request.error,
            request.latency_ms,
        )
        with self._lock:
            if self._stopping or self._unreported_rows + rows > self._capacity:
                self._on_dropped(request.model_name, rows)
                return
            self._unreported[request.model_name] += rows
            self._unreported_rows += rows
            self._bundle.append(message)
            self._bundle_rows += rows
            if self._bundle_rows >= HANDOVER_ROWS:
                self._hand_over()

    def stop(self, timeout: float = 5.0) -> None:
        """Have the writer write every row handed to it (for up to `timeout` seconds), and end it."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._hand_over()
            self._requests.put(None)
        self._watcher.join(timeout)
        if self._writer.is_alive():
            logger.warning("inference log writer still busy after %.0f s; ending it", timeout)
            self._writer.terminate()
            self._writer.join(1.0)
            self._drain_reports()
            self._drop_unreported()

    def _start_writer(self) -> None:
        self._requests = _PROCESSES.Queue()
        self._reports = _PROCESSES.Queue()
        self._writer = _PROCESSES.Process(
            target=log_writer.write_forever,
            args=(self._url, self._id_columns, self._requests, self._reports),
            name="inference-log-writer",
            daemon=True,
        )
        self._writer.start()

    def _hand_over(self) -> None:
        """Hand what gathered to the writer (called with the lock held)."""
        if self._bundle:
            self._requests.put(self._bundle)
            self._bundle, self._bundle_rows = [], 0

    def _watch(self) -> None:
        """Hand over what gathered every HANDOVER_SECONDS, take the writer's reports, and replace a writer that
        died, counting what it had not reported as dropped."""
        while True:
            try:
                self._report(self._reports.get(timeout=HANDOVER_SECONDS))
            except queue.Empty:
                pass
            except (EOFError, OSError):  # the writer died halfway through a report
                pass
            with self._lock:
                if not self._stopping:
                    self._hand_over()
            if self._writer.is_alive():
                continue
            self._drain_reports()
            if self._stopping and self._writer.exitcode == 0:
                return
            with self._lock:
                if self._stopping:
                    self._drop_unreported()
                    return
                self._bundle, self._bundle_rows = [], 0  # counted in what follows
                lost = self._drop_unreported()
                logger.warning(
                    "inference log writer ended (exit code %s); %d row(s) it had not reported are counted as "
                    "dropped; starting a new one",
                    self._writer.exitcode,
                    lost,
                )
                # The old queue may be left mid-message: the new writer gets queues of its own.
                self._requests.cancel_join_thread()
                self._start_writer()
            self._on_restarted()

    def _report(self, report: tuple[str, dict[str, int]]) -> None:
        outcome, rows_by_model = report
        with self._lock:
            for model, rows in rows_by_model.items():
                self._unreported[model] -= rows
                self._unreported_rows -= rows
        if outcome == "dropped":
            for model, rows in rows_by_model.items():
                self._on_dropped(model, rows)

    def _drain_reports(self) -> None:
        while True:
            try:
                self._report(self._reports.get_nowait())
            except (queue.Empty, EOFError, OSError):
                return

    def _drop_unreported(self) -> int:
        """Count every row the writer has not reported as dropped (called with the lock held, or at the end)."""
        lost = self._unreported_rows
        for model, rows in self._unreported.items():
            if rows:
                self._on_dropped(model, rows)
        self._unreported.clear()
        self._unreported_rows = 0
        return lost
