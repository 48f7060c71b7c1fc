"""Scoring off the request path: during a rollout, the model that did not answer a request scores its records
in a background thread of the worker, so the client waits for one model only.

The queue is bounded: when the thread falls behind (a slow challenger under heavy traffic), further scorings
are dropped and counted (`on_dropped`), never queued without limit or waited for. onnxruntime releases the GIL
while it runs, so this thread costs the request path the CPU it uses, not a lock held.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel

from include.serving.errors import first_line
from include.serving.models import ServedModel

logger = logging.getLogger(__name__)

# Records that may wait to be scored: a few seconds of heavy traffic.
CAPACITY_RECORDS = 10_000


@dataclass(frozen=True)
class ShadowJob:
    """Records one model answered, for `model` to score too."""

    model_name: str
    model: ServedModel
    role: str
    feeds: Mapping[str, np.ndarray]
    records: Sequence[BaseModel]
    # The requests the records came in: (request id, index of its first record, index past its last).
    requests: Sequence[tuple[str, int, int]]
    answered: Sequence[dict[str, Any]]  # what the client got, record by record
    answered_version: str  # the version of the model that answered
    predicted_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


# What to do with a scored job: its predictions (None when the model raised), the error's first line, and the
# model's time in milliseconds.
OnScored = Callable[[ShadowJob, list[dict[str, Any]] | None, str | None, float], None]


class ShadowScorer:
    def __init__(
        self, on_scored: OnScored, on_dropped: Callable[[str, int], None], capacity: int = CAPACITY_RECORDS
    ) -> None:
        self._on_scored = on_scored
        self._on_dropped = on_dropped
        self._capacity = capacity
        self._jobs: deque[ShadowJob] = deque()
        self._waiting = 0
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="shadow-scoring", daemon=True)
        self._thread.start()

    def submit(self, job: ShadowJob) -> None:
        """Queue `job`, or drop it (counted) when the queue is full; never blocks."""
        with self._wakeup:
            if self._waiting + len(job.records) > self._capacity:
                self._on_dropped(job.model_name, len(job.records))
                return
            self._jobs.append(job)
            self._waiting += len(job.records)
            self._wakeup.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Score what waits (for up to `timeout` seconds) and stop the thread."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._jobs and not self._stopping:
                    self._wakeup.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                self._waiting -= len(job.records)
            started = time.perf_counter()
            try:
                predictions, error = job.model.predict(job.feeds), None
            except Exception as exc:  # the challenger's failure is a finding of the rollout, not the service's
                predictions, error = None, first_line(exc)
            latency_ms = (time.perf_counter() - started) * 1000
            try:
                self._on_scored(job, predictions, error, latency_ms)
            except Exception:
                logger.exception("%s: recording a shadow scoring failed", job.model_name)
