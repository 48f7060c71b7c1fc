"""LightGBM and XGBoost against sklearn's GradientBoosting on the demo's data, at 100k and 1M rows.

For each size, side by side in one run on the same rows (simulated card transactions, validated and split as the
pipeline does): each candidate with the parameters of the demo's former gradient boosting candidate (150 trees,
depth 3, learning rate 0.1) and the demo's class weighting (balanced), fitted through `training.fit`; its test
metrics; its ONNX form's latency on the served session (one thread) for one row and for 1,000 rows; and the
parity check on the whole test split. LightGBM and XGBoost use every core by default and GradientBoosting one,
so each is also fitted on one thread. Speed is reported as ratios to GradientBoosting, never enforced.

    .venv/bin/python -m benchmarks.boosting [--rows 100000 1000000]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from typing import Any

import numpy as np

from benchmarks.report import median_seconds, publish
from benchmarks.training_overhead import demo_splits

DEMO_PARAMS = {"n_estimators": 150, "max_depth": 3, "learning_rate": 0.1}
# (estimator, threads): None leaves the library's default (every core).
CANDIDATES = (
    ("GradientBoosting", None),
    ("LightGBM", None),
    ("LightGBM", 1),
    ("XGBoost", None),
    ("XGBoost", 1),
)


def measure(config, splits, estimator: str, threads: int | None) -> tuple[dict[str, Any], np.ndarray]:
    """One candidate's row of the table, and its scores on the test split."""
    from include.mlops import packaging, training
    from include.serving.models import new_session

    params = dict(DEMO_PARAMS) if threads is None else {**DEMO_PARAMS, "n_jobs": threads}
    spec = training.CandidateSpec(estimator.lower(), estimator, params)
    began = time.perf_counter()
    pipeline = training.fit(training.build_pipeline(config, spec), config, splits["train"])
    fit_seconds = time.perf_counter() - began
    test = training.evaluate(pipeline, config, splits["test"])
    onnx_bytes = packaging.to_onnx(pipeline, config)
    parity = packaging.check_parity(pipeline, onnx_bytes, config, splits["test"])

    session = new_session(onnx_bytes)
    features = training.features_of(splits["test"], config.dataset)
    one_row = [packaging.onnx_feeds(features.iloc[[i]], config.dataset) for i in range(300)]
    batch = packaging.onnx_feeds(features.iloc[:1000], config.dataset)
    row = {
        "estimator": estimator,
        "threads": "default" if threads is None else threads,
        "fit (s)": fit_seconds,
        "test average_precision": f"{test['average_precision']:.4f}",
        "test roc_auc": f"{test['roc_auc']:.4f}",
        "ONNX 1 row (us)": median_seconds(lambda i: session.run(None, one_row[i % 300]), 300) * 1e6,
        "ONNX 1,000 rows (ms)": median_seconds(lambda _: session.run(None, batch), 15) * 1000,
        "label agreement": parity.label_agreement,
        "max probability difference": f"{parity.max_probability_difference:.2g}",
        "parity": f"{'passed' if parity.passed else 'FAILED'} ({parity.tolerance.family} tolerance)",
    }
    return row, training.scores(pipeline, config, splits["test"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()

    from include.mlops.config import load_config

    config = load_config("fraud_demo.yaml")
    table, notes = [], {"load before": _uptime()}
    for rows in args.rows:
        print(f"simulating and splitting {rows:,} rows ...", flush=True)
        splits = demo_splits(config, rows)
        measured, scores = [], {}
        for estimator, threads in CANDIDATES:
            row, predicted = measure(config, splits, estimator, threads)
            print(f"  {estimator} ({row['threads']} threads): fit {row['fit (s)']:.1f} s", flush=True)
            if threads is None:
                scores[estimator] = predicted
            else:
                same = np.array_equal(predicted, scores[estimator])
                notes[f"{estimator} at {rows:,} rows, same test scores on one thread as on the default"] = (
                    "yes" if same else "no"
                )
            measured.append(row)
        gradient_boosting = measured[0]["fit (s)"]
        for row in measured:
            table.append({"rows": rows, **row, "fit vs GradientBoosting": f"{gradient_boosting / row['fit (s)']:.1f}x"})
        notes[f"training / test rows at {rows:,}"] = f"{len(splits['train']):,} / {len(splits['test']):,}"
    notes["params"] = f"{DEMO_PARAMS}, class_weight balanced (the demo's)"
    notes["load after"] = _uptime()
    publish("boosting", table, notes)


def _uptime() -> str:
    """The machine's load: the cores are shared, and fit times move with it."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
