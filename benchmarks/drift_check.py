"""The hourly drift check against window size: 10k, 100k and 1M logged predictions of the demo's columns.

For each size, side by side in one run, each in a fresh process (so that peak memory is its own):
- **check**: what drift_monitor's check does with a window: read it from the inference log (SQLite, rows as the
  model service writes them, each one checked against the config) and run Evidently's DataDriftPreset on the
  features and the predictions against the bounded reference (`drift.reference_rows`, 5,000 rows);
- **plain**: the same DataDriftPreset run (`monitoring.measure_drift`) on the window already in memory against
  the unsampled training data (as many rows as the window): what a check without a reference sample would do,
  without even the cost of reading the log.
Targets (issue 6): the check takes <= 30 s and <= 2 GiB at 1M rows on this machine.

    .venv/bin/python -m benchmarks.drift_check [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.report import process_peak_rss_bytes, publish

DAY_ROWS = 100_000
WINDOW_START = dt.datetime(2026, 3, 20, tzinfo=dt.UTC)
CONFIG_FILE = "fraud_demo.yaml"  # the demo's model: the simulator makes its columns


def traffic(rows: int, first_day: dt.date, seed: int) -> pd.DataFrame:
    """`rows` simulated transactions with a prediction (a fixed rule: the benchmark measures the check, not a
    model)."""
    from include.demo_sources import simulator

    frames, day = [], first_day
    while sum(len(f) for f in frames) < rows:
        frames.append(simulator.generate_day(day, min(DAY_ROWS, rows), seed).transactions)
        day += dt.timedelta(days=1)
    frame = pd.concat(frames, ignore_index=True).head(rows)
    return frame.assign(prediction=(frame["amount"] > 1500).astype(int).astype(str))


def fill_log(path: Path, window: pd.DataFrame, config) -> None:
    """The window as the model service logs it: one row per prediction, inputs as JSON, spread over the hour."""
    import sqlalchemy as sa

    from include.mlops import deployment, monitoring, operations_store

    engine = sa.create_engine(f"sqlite:///{path}")
    records = deployment.records_of(window, config.dataset, with_id=True)
    step = dt.timedelta(hours=1) / len(records)
    operations_store.upgrade(engine)
    with engine.begin() as connection:
        for chunk in range(0, len(records), 50_000):
            rows = []
            for i, record in enumerate(records[chunk : chunk + 50_000], start=chunk):
                label = window["prediction"].iat[i]
                rows.append(
                    {
                        "request_id": f"{i:032x}",
                        "record_index": 0,
                        "record_id": record.pop(config.dataset.id_column),
                        "model_name": config.name,
                        "model_version": "1",
                        "predicted_at": WINDOW_START + i * step,
                        "inputs": record,
                        "label": label,
                        "probabilities": {"0": 0.9, "1": 0.1} if label == "0" else {"0": 0.2, "1": 0.8},
                        "value": None,
                    }
                )
            connection.execute(monitoring.inference_log.insert(), rows)


def measure_one(mode: str, rows: int, workdir: Path) -> dict:
    """Runs in its own process: one check (or one plain run) of `rows` rows."""
    import sqlalchemy as sa

    from include.mlops import monitoring
    from include.mlops.config import load_config

    config = load_config(CONFIG_FILE)
    import evidently  # noqa: F401  (its import, ~5 s, is not part of a check's work)

    timings = {}
    started = time.perf_counter()
    if mode == "check":
        reference = pd.read_parquet(workdir / "reference.parquet")
        engine = sa.create_engine(f"sqlite:///{workdir / f'log-{rows}.db'}")
        end = WINDOW_START + dt.timedelta(hours=1)
        window = monitoring.read_live_window(engine, config.name, WINDOW_START, end, config.dataset)
        assert len(window.frame) == rows and window.malformed == 0
        current = window.frame
    else:
        reference = pd.read_parquet(workdir / f"training-{rows}.parquet")
        current = pd.read_parquet(workdir / f"window-{rows}.parquet")
    timings["read (s)"] = time.perf_counter() - started
    report = monitoring.measure_drift(reference, current, config.dataset)
    timings["drift (s)"] = time.perf_counter() - started - timings["read (s)"]
    timings["total (s)"] = time.perf_counter() - started
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent that holds all the test data.
    peak = process_peak_rss_bytes(os.getpid())
    return {**timings, "reference rows": len(reference), "drift share": report.drift_share, "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--one", nargs=3, metavar=("MODE", "ROWS", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        mode, rows, workdir = args.one
        print(json.dumps(measure_one(mode, int(rows), Path(workdir))))
        return

    from include.mlops import monitoring
    from include.mlops.config import load_config

    config = load_config(CONFIG_FILE)
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        biggest = max(args.sizes)
        training = traffic(biggest, dt.date(2026, 1, 1), seed=5)
        monitoring.sample_reference(training, config).to_parquet(workdir / "reference.parquet")
        live = traffic(biggest, dt.date(2026, 3, 20), seed=6)
        for rows in args.sizes:
            started = time.perf_counter()
            fill_log(workdir / f"log-{rows}.db", live.head(rows), config)
            print(f"logged {rows:,} predictions in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            training.head(rows).to_parquet(workdir / f"training-{rows}.parquet")
            live.head(rows).to_parquet(workdir / f"window-{rows}.parquet")
            figures = {}
            for mode in ("check", "plain"):
                command = [sys.executable, "-m", "benchmarks.drift_check", "--one", mode, str(rows), tmp]
                result = subprocess.run(command, capture_output=True, text=True, check=True)
                figures[mode] = json.loads(result.stdout.strip().splitlines()[-1])
            check, plain = figures["check"], figures["plain"]
            table.append(
                {
                    "window rows": rows,
                    "check: read (s)": check["read (s)"],
                    "check: drift (s)": check["drift (s)"],
                    "check: total (s)": check["total (s)"],
                    "check: peak (MiB)": check["peak"] / 2**20,
                    "plain preset, unsampled (s)": plain["drift (s)"],
                    "plain: peak (MiB)": plain["peak"] / 2**20,
                    "check drift / plain (time)": check["drift (s)"] / plain["drift (s)"],
                    "check total / plain (time)": check["total (s)"] / plain["drift (s)"],
                    "drift share (check, plain)": f"{check['drift share']:.2f}, {plain['drift share']:.2f}",
                }
            )
    publish(
        "drift_check",
        table,
        {
            "reference rows (check)": config.drift.reference_rows,
            "columns": f"{len(config.dataset.features)} features + the prediction",
            "target": "check <= 30 s and <= 2 GiB at 1M rows",
            "peak": "each process's peak RSS, Python and the libraries included",
        },
    )


if __name__ == "__main__":
    main()
