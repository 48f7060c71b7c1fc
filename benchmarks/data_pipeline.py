"""Collect + validate + commit of 1,000,000 rows (ml_training's data half, without Airflow around it).

Targets (issue 3): at most 60 s in all and at most 2 GiB peak memory on the 2-core machine. The source is the
simulator's SQLite database; lakeFS is the project's lakeFS-compatible server on loopback. The measured part
runs in a process of its own, so its peak memory is its own (the simulator's set-up is not in it).

    .venv/bin/python -m benchmarks.data_pipeline [--rows N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import peak_rss_bytes, process_peak_rss_bytes, publish

DAY = dt.date(2026, 3, 1)
KEYS = ("AKIABENCHMARK00000000", "benchmark-secret-key-0000000000000000")


def measure(url: str, endpoint: str) -> dict:
    """The measured part: the same library calls the DAG's tasks make."""
    from include.mlops import collection, lakefs_repository
    from include.mlops.config import load_config
    from include.mlops.sources import fetch_sql

    config = load_config("fraud_demo.yaml")
    repo = lakefs_repository.ensure_repository(lakefs_repository.connect(endpoint, *KEYS), "bench", "local://bench")
    branch = "run-bench"
    lakefs_repository.create_branch(repo, branch, "main")
    start = dt.datetime.combine(DAY, dt.time(), dt.UTC)
    end = start + dt.timedelta(days=1)
    as_of = end + dt.timedelta(days=3)

    timings = {}
    began = time.perf_counter()
    frame = fetch_sql(config.source, url, start, end, config.dataset.event_time_column, as_of).rows
    timings["fetch (SQL)"] = time.perf_counter() - began

    began = time.perf_counter()
    rows = len(frame)
    staged = collection.stage_raw(repo, branch, config.dataset, _already_fetched(frame), [(start, end)])
    timings["stage raw on the branch"] = time.perf_counter() - began
    del frame  # validation reads the staged copy back, as the DAG's task does

    began = time.perf_counter()
    outcomes, _ = collection.validate_staged(repo, branch, config, staged, {"benchmark": "data_pipeline"})
    timings["validate + stage typed"] = time.perf_counter() - began

    began = time.perf_counter()
    lakefs_repository.commit(repo, branch, "benchmark", {"rows": rows})
    timings["commit"] = time.perf_counter() - began
    assert outcomes[0].rows_valid == rows, outcomes
    return {"rows": rows, "timings": timings, "peak_rss": peak_rss_bytes()}


def _already_fetched(frame):
    from include.mlops.sources import Fetched

    return lambda start, end: Fetched(frame, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--measure", nargs=2, metavar=("SQL_URL", "LAKEFS_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return

    from devstack import services
    from devstack.processes import free_port
    from include.demo_sources import simulator

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'transactions.db'}"
        print(f"simulating {args.rows:,} transactions ...", flush=True)
        simulator.write_days(url, DAY, 1, args.rows, seed=5)
        lakefs = services.start_lakefs_server(
            folder / "lakefs", free_port(), services.LakeFSCredentials(*KEYS), folder / "logs"
        )
        try:
            began = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "benchmarks.data_pipeline", "--measure", url, lakefs.url],
                capture_output=True,
                text=True,
                check=True,
            )
            total = time.perf_counter() - began
            server_peak = process_peak_rss_bytes(lakefs.pid)
        finally:
            lakefs.stop()
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    rows = measured["rows"]
    # A commit's cost does not grow with the rows in its files: rows per second says nothing there.
    table = [
        {"stage": stage, "seconds": seconds, "rows per second": int(rows / seconds) if stage != "commit" else "-"}
        for stage, seconds in measured["timings"].items()
    ]
    stages = sum(measured["timings"].values())
    table.append({"stage": "collect + validate + commit", "seconds": stages, "rows per second": int(rows / stages)})
    publish(
        "data_pipeline",
        table,
        {
            "rows": rows,
            "measured process wall time incl. start-up (s)": total,
            "peak RSS of the measured process (MiB)": measured["peak_rss"] / 2**20,
            "peak RSS of the lakeFS server (MiB)": server_peak / 2**20,
            "targets": "collect + validate + commit <= 60 s; peak RSS <= 2048 MiB",
        },
    )


if __name__ == "__main__":
    main()
