"""What MLflow logging and lineage add to training: the default candidates on 200,000 rows.

For each candidate of the demo config, side by side in one run: the bare work (fit, then metrics on valid and
test) and the same work through `tracking.train_candidate` against a real `mlflow server` (parameters,
metrics, the model with signature and input example, three dataset inputs with their lakeFS sources, tags).
Target (issue 4): logging and lineage add at most 10 % to the bare fit time.

    .venv/bin/python -m benchmarks.training_overhead [--rows N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.report import publish

DAYS = 10


def demo_splits(config, rows: int) -> dict[str, pd.DataFrame]:
    from include.demo_sources import simulator
    from include.mlops.datasets import split_rows
    from include.mlops.validation import validate_batch

    frames = []
    for offset in range(DAYS):
        day = dt.date(2026, 1, 1) + dt.timedelta(days=offset)
        generated = simulator.generate_day(day, rows // DAYS, seed=9)
        merged = generated.transactions.merge(generated.labels[["transaction_id", "is_fraud"]], how="left")
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        end = start + dt.timedelta(days=1)
        result = validate_batch(merged[config.dataset.columns], config.dataset, config.validation, start, end, "b")
        frames.append(result.valid)
    labelled = pd.concat(frames, ignore_index=True).dropna(subset=[config.dataset.target])
    return split_rows(labelled, config.dataset, config.split)


def _row(candidate: str, fit: float, bare: float, tracked: float) -> dict:
    return {
        "candidate": candidate,
        "fit (s)": fit,
        "bare fit + metrics (s)": bare,
        "tracked (s)": tracked,
        "added by MLflow and lineage (s)": tracked - bare,
        "added (% of fit)": 100 * (tracked - bare) / fit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()

    import mlflow
    from mlflow.tracking import MlflowClient

    from devstack import services
    from devstack.processes import free_port
    from include.mlops import tracking, training
    from include.mlops.config import load_config

    config = load_config("fraud_demo.yaml")
    print(f"simulating and splitting {args.rows:,} rows ...", flush=True)
    splits = demo_splits(config, args.rows)
    uris = {name: f"lakefs://mlops/bench/datasets/{name}.parquet" for name in splits}
    tags = {"airflow_dag_id": "benchmark", "airflow_run_id": "benchmark"}

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        server = services.start_mlflow(Path(tmp) / "mlflow", free_port(), Path(tmp) / "logs")
        try:
            mlflow.set_tracking_uri(server.url)
            client = MlflowClient(server.url)
            experiment = tracking.experiment_id(client, "benchmark")
            parent = tracking.parent_run(client, experiment, "benchmark", tags)
            table = []
            for spec in training.expand_candidates(config):
                began = time.perf_counter()
                pipeline = training.fit(training.build_pipeline(config, spec), config, splits["train"])
                fit_seconds = time.perf_counter() - began
                training.evaluate(pipeline, config, splits["valid"])
                training.evaluate(pipeline, config, splits["test"])
                bare = time.perf_counter() - began

                began = time.perf_counter()
                tracking.train_candidate(client, config, spec, splits, uris, parent, tags)
                tracked = time.perf_counter() - began
                table.append(_row(spec.name, fit_seconds, bare, tracked))
                print(f"  {spec.name}: bare {bare:.1f} s, tracked {tracked:.1f} s", flush=True)
        finally:
            server.stop()
    table.append(
        _row(
            "all default candidates",
            sum(r["fit (s)"] for r in table),
            sum(r["bare fit + metrics (s)"] for r in table),
            sum(r["tracked (s)"] for r in table),
        )
    )
    publish(
        "training_overhead",
        table,
        {
            "rows": args.rows,
            "training rows": len(splits["train"]),
            "target": "MLflow logging and lineage add <= 10 % to the bare fit time",
        },
    )


if __name__ == "__main__":
    main()
