"""include/mlops/collection.py on a real lakeFS: what each day's fetch left out is recorded with the day."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from include.mlops import collection, lakefs_repository, sources
from include.mlops.config import Dataset, FileSource


def test_stage_raw_records_per_day_the_rows_the_source_gave_outside_it(lakefs_repo, tmp_path):
    # One export file holding three days: each day's fetch reads it whole and keeps its own rows.
    times = ["2026-11-13 23:59:59.999999", "2026-11-14 00:00:00", "2026-11-14 12:00:00", "2026-11-15 00:00:00"]
    pd.DataFrame({"id": ["a", "b", "c", "d"], "event_time": times, "x": [1.0, 2.0, 3.0, 4.0], "y": 0.0}).to_csv(
        tmp_path / "export.csv", index=False
    )
    source = FileSource(kind="files", path=str(tmp_path), format="csv", pattern="*.csv")
    dataset = Dataset(
        name="events", id_column="id", event_time_column="event_time", target="y", task="regression",
        features=[{"name": "x", "type": "numeric"}],
    )  # fmt: skip
    days = collection.collection_days(dt.datetime(2026, 11, 16, tzinfo=dt.UTC), lag_days=0, history_days=3)

    staged = collection.stage_raw(
        lakefs_repo, "main", dataset, lambda s, e: sources.fetch_files(source, s, e, "event_time"), days
    )

    assert [(p.day, p.rows, p.outside_interval) for p in staged] == [
        ("2026-11-13", 1, 3),
        ("2026-11-14", 2, 2),
        ("2026-11-15", 1, 3),
    ]
    day = lakefs_repository.read_parquet(lakefs_repo, "main", collection.incoming_path(staged[1].path))
    assert day["id"].tolist() == ["b", "c"]
