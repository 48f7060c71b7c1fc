"""The label-free estimate against the score the late labels give, over the demo's changed-world replay.

The demo's model (its LightGBM candidate, the config's parameters) is trained on simulated days of the usual
world, split as the pipeline splits, its calibrator fitted on the valid split as training does. Then each world is
replayed day by day: the model scores the day's transactions, the estimate is made from the probabilities alone
(as a drift check makes it, before any label), and the realised score from the labels that arrive later (all of
them but the 1.5 % that never do). Worlds:

- `usual`: the world the model learnt (no drift): the estimate should hold the realised score within its band;
- `data drift`: `Drift(shift_share=0.6)`: 60 % of the traffic moved to other categories, countries and channels,
  fraud still follows the same rule (P(y | x) unchanged): the estimate should follow the score;
- `data + concept drift`: `DEMO_WORLD_CHANGE`, what `make run ARGS=--demo-drift` plays: the shift above and fraud
  moving to daytime in-store purchases of usual amounts: P(y | x) changes, which the estimate cannot see;
- `concept drift`: `Drift(concept_drift=True)` alone: the features as usual, only who commits fraud changes.

    .venv/bin/python -m benchmarks.performance_estimate [--days 5] [--rows 10000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import numpy as np
import pandas as pd

from benchmarks.report import publish

CONFIG_FILE = "fraud_demo.yaml"
TRAINING_DAYS = 6
FIRST_DAY = dt.date(2026, 2, 1)
SEED = 11


def labelled_days(config, first: dt.date, days: int, rows: int, drift) -> list[tuple[dt.date, pd.DataFrame]]:
    """Simulated days with the labels that arrive, as validation keeps them."""
    from include.demo_sources import simulator
    from include.mlops.validation import validate_batch

    out = []
    for n in range(days):
        day = first + dt.timedelta(days=n)
        generated = simulator.generate_day(day, rows, SEED, drift)
        frame = generated.transactions.merge(generated.labels[["transaction_id", "is_fraud"]], how="left")
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        checked = validate_batch(
            frame[config.dataset.columns], config.dataset, config.validation, start, start + dt.timedelta(days=1), "b"
        )
        out.append((day, checked.valid))
    return out


def main() -> None:
    from include.demo_sources import simulator
    from include.mlops import classes, performance_estimate, training
    from include.mlops.config import load_config
    from include.mlops.datasets import split_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=5, help="days replayed per world")
    parser.add_argument("--rows", type=int, default=10_000, help="transactions per day")
    args = parser.parse_args()

    config = load_config(CONFIG_FILE)
    metric = config.model.primary_metric
    history = labelled_days(config, FIRST_DAY, TRAINING_DAYS, args.rows, simulator.NO_DRIFT)
    labelled = pd.concat([f for _, f in history], ignore_index=True).dropna(subset=[config.dataset.target])
    splits = split_rows(labelled, config.dataset, config.split)
    lightgbm = next(c for c in config.model.candidates if c.estimator == "LightGBM")
    spec = training.CandidateSpec(lightgbm.name, lightgbm.estimator, {**lightgbm.params, "learning_rate": 0.05})
    pipeline = training.fit(training.build_pipeline(config, spec), config, splits["train"])
    calibrator = performance_estimate.of_pipeline(config, pipeline, splits["valid"])
    test_score = training.evaluate(pipeline, config, splits["test"])[metric]

    worlds = {
        "usual": simulator.NO_DRIFT,
        "data drift": simulator.Drift(shift_share=0.6),
        "data + concept drift": simulator.DEMO_WORLD_CHANGE,
        "concept drift": simulator.Drift(concept_drift=True),
    }
    texts = [classes.text_of(c) for c in pipeline.classes_]
    rows, summary = [], {}
    replay_start = FIRST_DAY + dt.timedelta(days=TRAINING_DAYS)
    for world, drift in worlds.items():
        errors, inside = [], 0
        for day, frame in labelled_days(config, replay_start, args.days, args.rows, drift):
            probabilities = training.scores(pipeline, config, frame)
            predicted = pipeline.predict(training.features_of(frame, config.dataset))
            began = time.perf_counter()
            estimate = performance_estimate.estimate(
                config,
                calibrator,
                [dict(zip(texts, p, strict=True)) for p in probabilities.tolist()],
                [classes.text_of(p) for p in predicted],
            )
            seconds = time.perf_counter() - began
            known = frame[config.dataset.target].notna().to_numpy()
            y = training.target_of(frame[known], config.dataset)
            realised = training.metrics_of(config, y, probabilities[known], predicted[known], pipeline.classes_)
            accuracy = float(np.mean(predicted[known] == y))
            error = estimate.score - realised[metric]
            errors.append(error)
            inside += estimate.low <= realised[metric] <= estimate.high
            rows.append(
                {
                    "world": world,
                    "day": day.isoformat(),
                    "rows": len(frame),
                    f"realised {metric}": round(realised[metric], 4),
                    f"estimated {metric}": round(estimate.score, 4),
                    "band": f"{estimate.low:.4f}-{estimate.high:.4f}",
                    "error": round(error, 4),
                    "in band": estimate.low <= realised[metric] <= estimate.high,
                    "realised accuracy": round(accuracy, 4),
                    "estimated accuracy": round(estimate.accuracy, 4),
                    "estimate (s)": round(seconds, 2),
                }
            )
        summary[world] = {
            "mean error": round(float(np.mean(errors)), 4),
            "max |error|": round(float(np.max(np.abs(errors))), 4),
            "days in band": f"{inside}/{len(errors)}",
        }
    publish(
        "performance_estimate",
        rows,
        {
            "model": f"{spec.name} (learning rate 0.05), trained on {TRAINING_DAYS} usual days",
            f"champion test {metric}": round(test_score, 4),
            "per world (estimate - realised)": summary,
        },
    )


if __name__ == "__main__":
    main()
