"""Demo data for the model tests (simulated days, validated and split as the pipeline does), and the history
databases beside the inference log, on SQLite and on Postgres."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
import sqlalchemy as sa

from include.demo_sources import simulator
from include.mlops import operations_store
from include.mlops.config import load_config
from include.mlops.datasets import split_rows
from include.mlops.validation import validate_batch


@pytest.fixture(scope="session")
def config():
    return load_config("fraud_demo.yaml")


@pytest.fixture(scope="session")
def splits(config) -> dict[str, pd.DataFrame]:
    """Three simulated days (12,000 transactions), validated, labelled rows split by the config's rule."""
    frames = []
    for offset in range(3):
        day = dt.date(2026, 2, 1) + dt.timedelta(days=offset)
        generated = simulator.generate_day(day, 4000, seed=3)
        rows = generated.transactions.merge(generated.labels[["transaction_id", "is_fraud"]], how="left")
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        end = start + dt.timedelta(days=1)
        frames.append(
            validate_batch(rows[config.dataset.columns], config.dataset, config.validation, start, end, "t").valid
        )
    labelled = pd.concat(frames, ignore_index=True).dropna(subset=["is_fraud"])
    return split_rows(labelled, config.dataset, config.split)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def history_engine(request, tmp_path) -> sa.Engine:
    """An empty operations store (the inference log, the drift, alias and rollout histories) at the newest schema:
    a SQLite file (make run), or Postgres (compose)."""
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'history.db'}")
    else:
        engine = sa.create_engine(request.getfixturevalue("empty_postgres_url"))
    operations_store.upgrade(engine)
    return engine
