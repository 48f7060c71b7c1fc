"""Scratch Postgres databases for the servers the tests and benchmarks start (Airflow, MLflow own their schema).

The server is the one at 127.0.0.1:5432 (MLOPS_TEST_POSTGRES_PORT, MLOPS_TEST_POSTGRES_USER to change); each
database is made for one user of it and dropped afterwards, whatever connections are still open.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator
from contextlib import contextmanager

HOST = "127.0.0.1"
PORT = int(os.environ.get("MLOPS_TEST_POSTGRES_PORT", "5432"))
USER = os.environ.get("MLOPS_TEST_POSTGRES_USER", "postgres")


@contextmanager
def scratch_database(prefix: str) -> Generator[str]:
    """A new, empty database `<prefix>_<random>` for the `with` block; yields its SQLAlchemy URL. Raises
    psycopg2.OperationalError when the server does not answer."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(host=HOST, port=PORT, user=USER, dbname="postgres", connect_timeout=5)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://{USER}@{HOST}:{PORT}/{name}"
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
