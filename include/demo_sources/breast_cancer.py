"""A second real dataset, offline: the Wisconsin breast cancer data that ships inside scikit-learn, as daily CSVs.

The 569 samples of `sklearn.datasets.load_breast_cancer` (read from the CSV inside the sklearn package; nothing
is downloaded) become one file per UTC day, `DIR/date=YYYY-MM-DD.csv`, the way a team's daily exports land in a
folder; include/config/breast_cancer.yaml collects them with its `files` source. Columns, in the config's order:

    sample_id             "bc-0000" .. "bc-0568": the sample's row in sklearn's data, so ids never change
    event_time            ISO-8601 UTC inside the file's day, spread over the day
    mean_radius .. worst_fractal_dimension
                          sklearn's 30 features, snake_case ("mean concave points" -> mean_concave_points)
    malignant             1 = malignant, 0 = benign (sklearn's own target is the other way round: 1 = benign)

The rows are shuffled by the seed and dealt over the `days` days ending at `end`. A day's share of rows is
chosen by its date (its ordinal modulo `days`), not by its place in the window, so any `days` consecutive days
hold every sample exactly once and a date's file is the same whichever window wrote it: moving `end` on by a day
adds a file and leaves the existing ones as they were. Writing the same arguments again gives byte-identical
files.

    python -m include.demo_sources.breast_cancer --out .local/source/breast_cancer --end 2026-01-31 --days 35
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ID_COLUMN = "sample_id"
EVENT_TIME_COLUMN = "event_time"
TARGET = "malignant"
DEFAULT_DAYS = 35
DEFAULT_SEED = 0
_SECONDS_PER_DAY = 86_400


def is_shipped(config) -> bool:
    """Whether a pipeline config collects these drops (the shipped config, or a copy of it with another folder):
    the local stack then writes them where its source looks."""
    return config.dataset.name == "breast_cancer" and config.source.kind == "files"


def samples() -> pd.DataFrame:
    """Every sample of sklearn's copy, in its order: id, the 30 features (snake_case) and `malignant` (0/1)."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    features = bunch.data.rename(columns=snake_case)
    # sklearn labels benign as 1; the pipeline's positive class (what average precision and recall are about)
    # should be the disease, so 1 means malignant here.
    is_malignant = bunch.target_names[bunch.target.to_numpy()] == "malignant"
    ids = pd.Series([f"bc-{i:04d}" for i in range(len(features))], name=ID_COLUMN)
    return pd.concat([ids, features, pd.Series(is_malignant.astype("int64"), name=TARGET)], axis=1)


def snake_case(name: str) -> str:
    """sklearn's feature name as a column name: "mean concave points" -> "mean_concave_points"."""
    return "_".join(name.lower().split())


def feature_columns() -> list[str]:
    """The 30 feature columns, in the order the files (and the config) have them."""
    return [c for c in samples().columns if c not in (ID_COLUMN, TARGET)]


def drop_days(end: date, days: int) -> list[date]:
    """The `days` UTC days ending at `end` (inclusive), oldest first."""
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    return [end - timedelta(days=n) for n in range(days - 1, -1, -1)]


def day_frame(rows: pd.DataFrame, day: date, days: int, seed: int) -> pd.DataFrame:
    """The rows of `day`'s drop: its date's share of the seeded shuffle, with event times spread over the day."""
    order = np.random.default_rng(seed).permutation(len(rows))
    share = np.array_split(order, days)[day.toordinal() % days]
    picked = rows.iloc[share].reset_index(drop=True)
    # One slot of the day per row and a seeded moment inside it: times cover the whole day, in row order, and
    # depend only on the seed and the date.
    slot = _SECONDS_PER_DAY / max(len(picked), 1)
    jitter = np.random.default_rng([seed, day.toordinal()]).random(len(picked))
    seconds = np.floor((np.arange(len(picked)) + jitter) * slot).astype("int64")
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    times = [(midnight + timedelta(seconds=int(s))).strftime("%Y-%m-%dT%H:%M:%SZ") for s in seconds]
    picked.insert(1, EVENT_TIME_COLUMN, times)
    return picked


def drop_path(folder: Path, day: date) -> Path:
    return folder / f"date={day:%Y-%m-%d}.csv"


def write_drops(folder: Path, end: date, days: int, seed: int) -> list[Path]:
    """Write one CSV per day of the `days` days ending at `end` into `folder`; return the files, oldest first.

    Files of other days already in `folder` are left alone. Each file is written whole under a temporary name
    and then renamed, so a collection reading the folder meanwhile never sees half a day; a file whose bytes
    would not change is not touched.
    """
    rows = samples()
    if days > len(rows):
        raise ValueError(f"days must be at most {len(rows)} (one sample a day), not {days}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for day in drop_days(end, days):
        path = drop_path(folder, day)
        data = day_frame(rows, day, days, seed).to_csv(index=False, lineterminator="\n").encode()
        if not (path.exists() and path.read_bytes() == data):
            partial = path.with_name(f".{path.name}.tmp")  # does not match the config's pattern "date=*.csv"
            partial.write_bytes(data)
            partial.replace(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m include.demo_sources.breast_cancer", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write date=YYYY-MM-DD.csv files into")
    parser.add_argument(
        "--end", type=date.fromisoformat, default=datetime.now(UTC).date(), help="last day, YYYY-MM-DD (today, UTC)"
    )
    parser.add_argument(
        "--days", type=int, default=DEFAULT_DAYS, help=f"days to spread the samples over ({DEFAULT_DAYS})"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the shuffle's seed")
    args = parser.parse_args(argv)
    try:
        paths = write_drops(args.out, args.end, args.days, args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    first, last = drop_days(args.end, args.days)[0], args.end
    print(f"wrote {len(paths)} daily drops of the breast cancer samples ({first} to {last}) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
