"""The breast cancer drops: every sample once, on the days asked for, the same bytes every time, and collectable
with the shipped config (include/config/breast_cancer.yaml) without a row quarantined."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from include.demo_sources import breast_cancer
from include.demo_sources.breast_cancer import write_drops
from include.mlops.config import PROJECT_ROOT, load_config
from include.mlops.sources import fetch_files
from include.mlops.validation import validate_batch

END = date(2026, 1, 31)
DAYS = 35
SEED = 3
MALIGNANT_SAMPLES = 212
CONFIG = load_config("breast_cancer.yaml")


@pytest.fixture(scope="module")
def drops(tmp_path_factory) -> list[Path]:
    return write_drops(tmp_path_factory.mktemp("drops"), END, DAYS, SEED)


def _read(paths: list[Path]) -> pd.DataFrame:
    """All drops as one frame, each row with the day its file is named after."""
    frames = [pd.read_csv(p).assign(file_day=date.fromisoformat(p.stem.removeprefix("date="))) for p in paths]
    return pd.concat(frames, ignore_index=True)


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_the_drops_cover_exactly_the_requested_days(drops):
    expected = [f"date={END - timedelta(days=n):%Y-%m-%d}.csv" for n in range(DAYS - 1, -1, -1)]
    assert [p.name for p in drops] == expected
    assert sorted(p.name for p in drops[0].parent.iterdir()) == expected
    sizes = [len(pd.read_csv(p)) for p in drops]
    assert min(sizes) >= 16 and max(sizes) <= 17, sizes


def test_every_sample_appears_once_with_its_features_and_malignant_as_1(drops):
    rows = _read(drops)
    sklearn_data = load_breast_cancer(as_frame=True)
    assert len(rows) == len(sklearn_data.data) == 569
    assert rows["sample_id"].is_unique
    # The id is the sample's row in sklearn's data.
    by_row = rows.assign(row=rows["sample_id"].str.removeprefix("bc-").astype(int)).set_index("row").sort_index()
    assert list(by_row.index) == list(range(569))
    features = sklearn_data.data.rename(columns=breast_cancer.snake_case)
    assert np.array_equal(by_row[features.columns].to_numpy(), features.to_numpy())  # exact: no float drift
    # sklearn's target is 1 for benign; the drops' `malignant` is 1 for malignant.
    assert (by_row["malignant"] == 1 - sklearn_data.target).all()
    assert int(rows["malignant"].sum()) == MALIGNANT_SAMPLES
    assert set(rows["malignant"]) == {0, 1}


def test_writing_again_gives_byte_identical_files(drops, tmp_path):
    first = _contents(drops[0].parent)
    write_drops(tmp_path, END, DAYS, SEED)
    assert _contents(tmp_path) == first
    write_drops(tmp_path, END, DAYS, SEED)  # over its own files
    assert _contents(tmp_path) == first


def test_another_seed_shuffles_the_days_but_keeps_the_ids(drops, tmp_path):
    other = _read(write_drops(tmp_path, END, DAYS, SEED + 1))
    ours = _read(drops)
    assert set(other["sample_id"]) == set(ours["sample_id"])
    day_of = ours.set_index("sample_id")["file_day"]
    assert (other.set_index("sample_id")["file_day"] != day_of.loc[other["sample_id"]]).mean() > 0.5


def test_moving_the_end_on_a_day_adds_a_file_and_changes_none(drops, tmp_path):
    """A date's rows depend on the date, not on the window, so tomorrow's run rewrites today's files unchanged."""
    write_drops(tmp_path, END + timedelta(days=1), DAYS, SEED)
    later = _contents(tmp_path)
    earlier = _contents(drops[0].parent)
    shared = sorted(set(later) & set(earlier))
    assert len(shared) == DAYS - 1
    assert all(later[name] == earlier[name] for name in shared)
    assert _read(sorted(tmp_path.iterdir()))["sample_id"].is_unique  # still every sample once


def test_event_times_are_utc_inside_their_files_day_and_spread_over_it(drops):
    rows = _read(drops)
    assert rows["event_time"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
    times = pd.to_datetime(rows["event_time"], utc=True, format="ISO8601")
    assert (times.dt.date == rows["file_day"]).all()
    for day, group in times.groupby(rows["file_day"]):
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        hours = (group - midnight).dt.total_seconds() / 3600
        assert hours.is_monotonic_increasing
        assert hours.min() < 2 and hours.max() > 22, (day, hours.min(), hours.max())


def test_the_shipped_config_matches_the_files_columns(drops):
    header = list(pd.read_csv(drops[0], nrows=0).columns)
    dataset = CONFIG.dataset
    assert header == dataset.columns  # id, event time, features, target: what validation requires
    assert [f.name for f in dataset.features] == breast_cancer.feature_columns() == header[2:-1]
    assert all(f.type == "numeric" and f.min == 0 and f.max is not None for f in dataset.features)
    assert (dataset.id_column, dataset.event_time_column, dataset.target) == ("sample_id", "event_time", "malignant")
    # Written relative to the project (make run's and compose's working folder alike), read from under it.
    assert CONFIG.source.kind == "files" and Path(CONFIG.source.path) == PROJECT_ROOT / ".local/source/breast_cancer"


def test_every_day_collects_and_validates_without_a_quarantined_row(drops):
    source = CONFIG.source.model_copy(update={"path": str(drops[0].parent)})
    collected = 0
    for path in drops:
        day = date.fromisoformat(path.stem.removeprefix("date="))
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        frame = fetch_files(source, start, start + timedelta(days=1), CONFIG.dataset.event_time_column).rows
        result = validate_batch(frame, CONFIG.dataset, CONFIG.validation, start, start + timedelta(days=1), path.name)
        assert result.report.status == "passed", result.report.summary()
        collected += len(result.valid)
    assert collected == 569


def test_the_cli_prints_one_line(tmp_path, capsys):
    assert breast_cancer.main(["--out", str(tmp_path), "--end", "2026-02-10", "--days", "3", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "3 daily drops" in lines[0] and "2026-02-08 to 2026-02-10" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"date=2026-02-{d:02d}.csv" for d in (8, 9, 10)]


@pytest.mark.parametrize("days", [0, 570])
def test_impossible_day_counts_are_refused(tmp_path, days):
    with pytest.raises(ValueError, match="days must be"):
        write_drops(tmp_path, END, days, SEED)
