"""The training snapshot: the training window read at one commit of `main`, split into train/valid/test.

Splits are deterministic: by a hash of the id (a row stays in its split as the window moves) or by event time
(the latest rows are the test set). The snapshot lives under `datasets/<model>/<run>/` on the run branch with
a manifest that says what it was built from, so that training can be repeated from its commit id alone.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass

import lakefs
import numpy as np
import pandas as pd

from include.mlops import classes, lakefs_repository
from include.mlops.config import Dataset, PipelineConfig, Split

SPLITS = ("train", "valid", "test")
_PARTITION_DAY = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")


class EmptyTrainingWindow(RuntimeError):
    """The training window holds no labelled rows at the commit read."""


@dataclass(frozen=True)
class SnapshotManifest:
    model: str
    run: str
    source_commit: str
    window_start: str
    window_end: str
    partitions: list[str]
    paths: dict[str, str]
    rows: dict[str, int]
    # Classification: rows per class in each split, by the label as text.
    class_counts: dict[str, dict[str, int]]
    unlabelled_rows: int
    split_method: str

    def to_dict(self) -> dict:
        return asdict(self)


def snapshot_prefix(model: str, run: str) -> str:
    return f"datasets/{model}/{run}/"


def manifest_path(model: str, run: str) -> str:
    return snapshot_prefix(model, run) + "manifest.json"


def window_partitions(
    repo: lakefs.Repository, ref: str, dataset: str, window_start: dt.date, window_end: dt.date
) -> list[str]:
    """Raw partitions at `ref` whose day is in [window_start, window_end), in day order."""
    paths = []
    for entry in lakefs_repository.list_objects(repo, ref, f"raw/{dataset}/"):
        match = _PARTITION_DAY.search(entry.path)
        if match and window_start <= dt.date.fromisoformat(match.group(1)) < window_end:
            paths.append(entry.path)
    return sorted(paths)


def split_rows(frame: pd.DataFrame, dataset: Dataset, split: Split) -> dict[str, pd.DataFrame]:
    """Assign every row to train, valid or test; the same rows always land in the same splits."""
    if split.method == "hash":
        # pandas' hash uses a fixed key, so an id hashes the same in every run and on every machine.
        hashes = pd.util.hash_pandas_object(frame[dataset.id_column].astype(str), index=False).to_numpy()
        position = hashes / np.float64(2**64)
        ordered = frame.assign(_position=position)
    else:
        ordered = frame.sort_values([dataset.event_time_column, dataset.id_column], kind="stable")
        ordered = ordered.assign(_position=np.arange(len(ordered)) / max(len(ordered), 1))
    train_end = 1 - split.valid_fraction - split.test_fraction
    valid_end = 1 - split.test_fraction
    masks = {
        "train": ordered["_position"] < train_end,
        "valid": (ordered["_position"] >= train_end) & (ordered["_position"] < valid_end),
        "test": ordered["_position"] >= valid_end,
    }
    return {
        name: ordered.loc[mask]
        .drop(columns="_position")
        .sort_values(dataset.id_column, kind="stable")
        .reset_index(drop=True)
        for name, mask in masks.items()
    }


def build_snapshot(
    repo: lakefs.Repository,
    source_commit: str,
    branch: str,
    config: PipelineConfig,
    run: str,
    window_end: dt.date,
) -> SnapshotManifest:
    """Read the training window at `source_commit`, split it, and stage the splits and manifest on `branch`."""
    dataset = config.dataset
    window_start = window_end - dt.timedelta(days=config.training.window_days)
    partitions = window_partitions(repo, source_commit, dataset.name, window_start, window_end)
    frames = [lakefs_repository.read_parquet(repo, source_commit, path) for path in partitions]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=dataset.columns)
    labelled = rows[rows[dataset.target].notna()]
    if labelled.empty:
        raise EmptyTrainingWindow(
            f"no labelled rows of {dataset.name!r} in [{window_start}, {window_end}) at commit {source_commit} "
            f"({len(partitions)} partition(s), {len(rows)} row(s) without labels)"
        )

    prefix = snapshot_prefix(config.model.registered_name, run)
    paths, counts, class_counts = {}, {}, {}
    for name, frame in split_rows(labelled, dataset, config.split).items():
        paths[name] = f"{prefix}{name}.parquet"
        counts[name] = len(frame)
        class_counts[name] = _class_counts(frame, dataset)
        lakefs_repository.write_parquet(repo, branch, paths[name], frame)
    manifest = SnapshotManifest(
        model=config.model.registered_name,
        run=run,
        source_commit=source_commit,
        window_start=window_start.isoformat(),
        window_end=window_end.isoformat(),
        partitions=partitions,
        paths=paths,
        rows=counts,
        class_counts=class_counts,
        unlabelled_rows=len(rows) - len(labelled),
        split_method=config.split.method,
    )
    manifest_bytes = json.dumps(manifest.to_dict(), indent=2).encode()
    path = manifest_path(config.model.registered_name, run)
    lakefs_repository.write_bytes(repo, branch, path, manifest_bytes, content_type="application/json")
    return manifest


def _class_counts(frame: pd.DataFrame, dataset: Dataset) -> dict[str, int]:
    if dataset.task != "classification":
        return {}
    counts = frame[dataset.target].value_counts()
    return {classes.text_of(label): int(n) for label, n in sorted(counts.items(), key=lambda item: str(item[0]))}
