"""An open categorical of many levels against the demo's closed sets: what more kept categories cost.

The demo's data (simulated card transactions, validated and split as the pipeline does) with one more feature,
a merchant id drawn from 10,000 merchants (Zipf-skewed, as merchants are), as an open set keeping 10, 100 and
1,000 of its most frequent values (`max_categories`; 1,000 is the most the config allows), side by side with the
demo as it is. For each: the fit of the demo's LightGBM candidate, the share of rows the kept merchants cover,
the ONNX model's size, its latency on the served session (one thread) for one row and for 1,000 rows, the memory
the loaded session adds, and the parity check on the whole test split.

    .venv/bin/python -m benchmarks.categories [--rows 100000]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import psutil

from benchmarks.report import median_seconds, publish
from benchmarks.training_overhead import demo_splits

MERCHANTS = 10_000
KEPT = (10, 100, 1000)
PARAMS = {"n_estimators": 150, "learning_rate": 0.1, "max_depth": 3, "n_jobs": 1}


def with_merchants(config, splits, kept: int):
    """The config with an open `merchant` feature keeping `kept` values, and the splits with merchant ids."""
    from include.mlops.config import Feature

    rng = np.random.default_rng(3)
    ids = {name: rng.zipf(1.2, len(frame)) % MERCHANTS for name, frame in splits.items()}
    splits = {name: frame.assign(merchant=[f"m{n:05d}" for n in ids[name]]) for name, frame in splits.items()}
    merchant = Feature(name="merchant", type="categorical", max_categories=kept)
    dataset = config.dataset.model_copy(update={"features": [*config.dataset.features, merchant]})
    return config.model_copy(update={"dataset": dataset}), splits


def measure(config, splits, label: str) -> dict[str, Any]:
    from include.mlops import packaging, training
    from include.serving.models import new_session

    spec = training.CandidateSpec("lightgbm", "LightGBM", PARAMS)
    began = time.perf_counter()
    pipeline = training.fit(training.build_pipeline(config, spec), config, splits["train"])
    fit_seconds = time.perf_counter() - began
    test = training.evaluate(pipeline, config, splits["test"])
    onnx_bytes = packaging.to_onnx(pipeline, config)
    parity = packaging.check_parity(pipeline, onnx_bytes, config, splits["test"])
    kept = (packaging.onnx_categories(onnx_bytes) or {}).get("merchant")
    covered = splits["test"]["merchant"].isin(kept).mean() if kept else None

    process = psutil.Process()
    before = process.memory_info().rss
    session = new_session(onnx_bytes)
    features = training.features_of(splits["test"], config.dataset)
    one_row = [packaging.onnx_feeds(features.iloc[[i]], config.dataset) for i in range(300)]
    batch = packaging.onnx_feeds(features.iloc[:1000], config.dataset)
    one = median_seconds(lambda i: session.run(None, one_row[i % 300]), 300)
    thousand = median_seconds(lambda _: session.run(None, batch), 15)
    added = process.memory_info().rss - before
    return {
        "model": label,
        "fit (s)": fit_seconds,
        "test rows whose merchant is kept": "-" if covered is None else f"{covered:.1%}",
        "test average_precision": f"{test['average_precision']:.4f}",
        "ONNX size (KB)": len(onnx_bytes) / 1024,
        "ONNX 1 row (us)": one * 1e6,
        "ONNX 1,000 rows (ms)": thousand * 1000,
        "session RSS added (MB)": added / 2**20,
        "parity": f"{'passed' if parity.passed else 'FAILED'} (max difference {parity.max_probability_difference:.2g})",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()

    from include.mlops.config import load_config

    config = load_config("fraud_demo.yaml")
    print(f"simulating and splitting {args.rows:,} rows ...", flush=True)
    splits = demo_splits(config, args.rows)
    table = [measure(config, splits, "the demo (closed sets only)")]
    for kept in KEPT:
        widened, merchant_splits = with_merchants(config, splits, kept)
        table.append(measure(widened, merchant_splits, f"+ merchant, {kept:,} kept of {MERCHANTS:,}"))
        print(f"  {kept} kept: {table[-1]['ONNX 1 row (us)']:.0f} us a row", flush=True)
    base = table[0]
    for row in table:
        row["1 row vs the demo"] = f"{row['ONNX 1 row (us)'] / base['ONNX 1 row (us)']:.2f}x"
    notes = {
        "rows (train / test)": f"{len(splits['train']):,} / {len(splits['test']):,}",
        "candidate": f"LightGBM {PARAMS}, class_weight balanced (the demo's)",
    }
    publish("categories", table, notes)


if __name__ == "__main__":
    main()
