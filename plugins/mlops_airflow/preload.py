"""Libraries the tasks import, imported once in the process that task processes are forked from.

Airflow forks a process per task try, and a task of this project spends most of its short life importing
pandas, scikit-learn, MLflow, lakeFS's client and Evidently (about 15 s of imports in all on this project's
2-core machine; a task that moves an alias spent 4 s of its 4.1 s on them). Imported in the worker before it
forks, they are shared by every task process, copy-on-write.

Only third-party libraries, never this project's own modules: a task must run the project's code as it is on disk
now, as Airflow's own parse of the DAG file per task promises, not as it was when the worker started.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time

log = logging.getLogger(__name__)

# What the tasks of the training, drift, rollout and batch pipelines import. Each starts no thread at import (a
# thread's lock held at a fork would deadlock the child): preload() checks it.
LIBRARIES = (
    "pandas",
    "pyarrow.parquet",
    "sqlalchemy",
    "alembic",
    "httpx",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.isotonic",
    "sklearn.inspection",
    "sklearn.metrics",
    "lightgbm",
    "mlflow",
    "mlflow.sklearn",
    "lakefs",
    "skl2onnx",
    "onnxmltools",
    "onnxruntime",
    "evidently",
    "skops.card",
)


def preload(libraries: tuple[str, ...] = LIBRARIES) -> float:
    """Import `libraries`; returns the seconds it took. A library that fails to import is logged and left to the
    task that needs it, whose error then names it where its user looks."""
    started = time.monotonic()
    for name in libraries:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a task's own import reports it properly
            log.warning("not preloaded: %s (%s: %s)", name, type(exc).__name__, exc)
    if threading.active_count() > 1:
        names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        raise RuntimeError(f"a preloaded library started threads ({names}): forking now could deadlock a task")
    seconds = time.monotonic() - started
    log.info("preloaded %d libraries for the task processes in %.1f s", len(libraries), seconds)
    return seconds
