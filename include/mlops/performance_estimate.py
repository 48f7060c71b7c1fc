"""The champion's score estimated before the labels arrive: confidence-based performance estimation (CBPE).

A classifier's probabilities, once calibrated, say how often it is right: a row predicted `a` with calibrated
probability 0.8 for `a` is right four times in five. Summed over a window, the calibrated probabilities give the
expected confusion matrix, hence the expected accuracy and any metric of the labels (Kivimaki et al., JAIR 2025,
arXiv 2407.08649; the method of NannyML's CBPE).

The calibrator is fitted at training on the challenger's validation split (its probabilities and labels): one
isotonic regression per class, that class against the rest, and each row's calibrated probabilities renormalised
to sum to one. Isotonic rather than Platt scaling because tree ensembles, most of the candidates here, are not
miscalibrated in a sigmoid shape, and isotonic regression fits any monotone distortion. Each block of the fit
(the validation rows it pooled into one value) is kept with its counts, as plain JSON, and says (positives + 1) /
(rows + 2) rather than its raw share: a block of 40 rows all of the class does not prove certainty, and a raw
isotonic fit on a validation split without a single error made every estimate a certain 1.0 (measured on
penguins). Its cost is that it wants rows: a class with fewer than `MIN_CLASS_ROWS` validation rows gets no
calibrator (a `NoCalibrator` saying so, not an error), and the model then no estimate.

The estimate draws, `SAMPLES` times, first each block's probability from its Beta posterior (how uncertain the
validation rows leave it), then the window's labels from the calibrated probabilities, and scores the model's
predictions against each draw with the project's own metrics (`training.metrics_of`): the mean is the estimate,
the 2.5th and 97.5th percentiles its band. One way for every metric, ROC AUC and average precision included. The
band holds the labels' chance and the calibration's; not the change of the world since the validation split.

Where it cannot work: the calibration learnt P(y | x) on the validation split. Data drift (P(x) moves) is what
the estimate follows: rows move to where the model is less sure, and the estimate falls. Concept drift (P(y | x)
changes: the same inputs now mean another label) leaves the probabilities as they were, and the estimate with
them: only the labels show it (the live score). Regression gets no estimate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd

from include.mlops import classes, training
from include.mlops.config import PipelineConfig

if TYPE_CHECKING:  # MLflow is imported where a calibrator is loaded: the monitoring module is imported without it
    from mlflow.tracking import MlflowClient

# A class needs this many validation rows (and as many of the other classes) for its curve: isotonic regression
# on fewer follows noise.
MIN_CLASS_ROWS = 10
SAMPLES = 200
# Rows a window is estimated on at most (a random sample of a larger one): each label draw is scored with
# scikit-learn's metrics: measured 1.2 s for a window of 600 or 2,000 rows, 4.8 s at this size.
MAX_ROWS = 20_000
BAND = (2.5, 97.5)  # percentiles of the sampled scores
ARTIFACT = "calibrator.json"  # in the candidate's MLflow run; the version's tag `calibrator` names it
TAG = "calibrator"


@dataclass(frozen=True)
class Curve:
    """One class's isotonic curve: breakpoints `x` of the model's probability, each in a block of the isotonic
    fit (`block`, an index into `rows` and `positives`: the validation rows the block pooled, and how many were of
    the class)."""

    x: tuple[float, ...]
    block: tuple[int, ...]
    rows: tuple[int, ...]
    positives: tuple[int, ...]

    def block_means(self) -> np.ndarray:
        """Each block's probability of the class, smoothed by one row of each kind (Laplace): a block of 40 rows all
        of the class says 41/42, not certainty, which 40 rows cannot show."""
        return (np.array(self.positives) + 1) / (np.array(self.rows) + 2)

    def block_draw(self, generator: np.random.Generator) -> np.ndarray:
        """Each block's probability as the validation rows leave it uncertain: a draw from its Beta posterior."""
        positives, rows = np.array(self.positives), np.array(self.rows)
        return generator.beta(positives + 1, rows - positives + 1)


@dataclass(frozen=True)
class Calibrator:
    """Per class (as text, in the model's probability column order), its isotonic curve."""

    classes: tuple[str, ...]
    curves: tuple[Curve, ...]
    rows: int

    def calibrate(self, probabilities: np.ndarray, blocks: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Calibrated probabilities of rows of the model's probabilities (a column per class of `classes`), with
        each curve's block probabilities `blocks` (by default their smoothed means)."""
        blocks = blocks or [c.block_means() for c in self.curves]
        columns = [
            np.interp(probabilities[:, i], c.x, b[list(c.block)])
            for i, (c, b) in enumerate(zip(self.curves, blocks, strict=True))
        ]
        calibrated = np.column_stack(columns)
        total = calibrated.sum(axis=1, keepdims=True)
        return calibrated / total  # smoothed blocks are never 0: no row sums to 0

    def draw(self, generator: np.random.Generator) -> list[np.ndarray]:
        return [c.block_draw(generator) for c in self.curves]

    def to_dict(self) -> dict[str, Any]:
        curves = [
            {
                "class": name,
                "x": list(c.x),
                "block": list(c.block),
                "rows": list(c.rows),
                "positives": list(c.positives),
            }
            for name, c in zip(self.classes, self.curves, strict=True)
        ]
        return {
            "method": "isotonic one-vs-rest, Laplace-smoothed blocks, renormalised",
            "rows": self.rows,
            "curves": curves,
        }


@dataclass(frozen=True)
class NoCalibrator:
    """Why a version has no calibrator (and so no estimate)."""

    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason}


def from_dict(values: dict[str, Any]) -> Calibrator | NoCalibrator:
    """A calibrator (or its absence) as `to_dict` wrote it."""
    if "curves" not in values:
        return NoCalibrator(str(values.get("reason", "the calibrator file names no curves")))
    curves = tuple(
        Curve(tuple(map(float, c["x"])), tuple(c["block"]), tuple(c["rows"]), tuple(c["positives"]))
        for c in values["curves"]
    )
    return Calibrator(tuple(str(c["class"]) for c in values["curves"]), curves, int(values["rows"]))


def fit_calibrator(
    config: PipelineConfig, y: np.ndarray, probabilities: np.ndarray, model_classes: Sequence[Any]
) -> Calibrator | NoCalibrator:
    """The calibrator of a classifier from its `probabilities` (a column per class of `model_classes`) on the
    validation rows and their labels `y` (as `training.target_of` gives them)."""
    if config.dataset.task != "classification":
        return NoCalibrator("a regression model: no estimate without labels")
    y = np.asarray(y)
    curves, short = [], []
    for i, label in enumerate(model_classes):
        members = int((y == label).sum())
        if min(members, len(y) - members) < MIN_CLASS_ROWS:
            short.append(f"{classes.text_of(label)} ({members} of {len(y)})")
            continue
        curves.append(_curve(probabilities[:, i], y == label))
    if short:
        return NoCalibrator(
            f"too few validation rows to calibrate class(es) {', '.join(short)}: each class, and the rest, needs "
            f"{MIN_CLASS_ROWS}"
        )
    return Calibrator(tuple(classes.text_of(c) for c in model_classes), tuple(curves), len(y))


def _curve(scores: np.ndarray, is_class: np.ndarray) -> Curve:
    """The isotonic fit of `is_class` on the model's `scores`, its blocks counted."""
    from sklearn.isotonic import IsotonicRegression

    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, is_class.astype("float64"))
    # A block is the rows the fit pooled into one value: those the fitted curve gives the same value.
    values, of_row = np.unique(isotonic.predict(scores), return_inverse=True)
    rows, positives = np.bincount(of_row), np.bincount(of_row, weights=is_class).round().astype(int)
    block = np.abs(isotonic.y_thresholds_[:, None] - values[None, :]).argmin(axis=1)
    return Curve(
        tuple(isotonic.X_thresholds_.tolist()), tuple(block.tolist()), tuple(rows.tolist()), tuple(positives.tolist())
    )


@dataclass(frozen=True)
class Estimate:
    """The primary metric (and accuracy) estimated on `rows` unlabelled rows: `score` within [`low`, `high`]; no
    score, and why (`note`), when there is none."""

    rows: int
    score: float | None
    low: float | None
    high: float | None
    accuracy: float | None
    note: str = ""

    def figures(self, metric: str) -> dict[str, float]:
        """As the monitoring run's metrics."""
        if self.score is None:
            return {}
        names = (f"estimated_{metric}", f"estimated_{metric}_low", f"estimated_{metric}_high", "estimated_accuracy")
        return dict(zip(names, (self.score, self.low, self.high, self.accuracy), strict=True))


def no_estimate(rows: int, note: str) -> Estimate:
    return Estimate(rows, None, None, None, None, note)


def estimate(
    config: PipelineConfig,
    calibrator: Calibrator,
    probabilities: Iterable[Any],
    predictions: Iterable[Any],
    samples: int = SAMPLES,
) -> Estimate:
    """The primary metric and accuracy of a classifier's `predictions` (labels as text, as the inference log keeps
    them) on rows whose labels are not known, from its `probabilities` ({class text: probability}, as dicts or
    JSON text) calibrated by `calibrator`."""
    metric = config.model.primary_metric
    rows = [orjson.loads(p) if isinstance(p, str | bytes) else p for p in probabilities]
    predicted_text = [classes.text_of(p) for p in predictions]
    if not rows:
        return no_estimate(0, "no rows to estimate on")
    texts = list(calibrator.classes)
    model_classes = _trained(config, texts)
    if model_classes is None:
        return no_estimate(len(rows), f"the calibrator's classes {texts} are not the config's target_classes")
    matrix = np.array([[p.get(text, 0.0) for text in texts] for p in rows], dtype="float64")
    calibrated = calibrator.calibrate(matrix)
    position = {text: i for i, text in enumerate(texts)}
    # A prediction of a class the calibrator does not know (none should be) counts as the model's likeliest.
    predicted = np.array([position.get(t, -1) for t in predicted_text])
    predicted = np.where(predicted >= 0, predicted, matrix.argmax(axis=1))
    accuracy = float(calibrated[np.arange(len(rows)), predicted].mean())

    generator = np.random.default_rng(config.model.random_seed)
    labels = model_classes[predicted]
    scores = []
    for _ in range(samples):
        # The calibration itself drawn first (its blocks' probabilities as uncertain as their rows leave them),
        # then the labels from it: the band holds both.
        cumulative = calibrator.calibrate(matrix, calibrator.draw(generator)).cumsum(axis=1)
        drawn = (generator.random((len(rows), 1)) > cumulative).sum(axis=1).clip(max=len(texts) - 1)
        y = model_classes[drawn]
        if len(np.unique(y)) > 1:  # the metrics of one class are undefined, as for real labels
            scores.append(
                training.metrics_of(config, y, matrix, labels, model_classes, names=[metric]).get(metric, np.nan)
            )
    measured = np.array([s for s in scores if not np.isnan(s)])
    if len(measured) < samples / 2:
        return Estimate(len(rows), None, None, None, accuracy, f"{metric} is undefined on most label draws")
    low, high = np.percentile(measured, BAND)
    return Estimate(len(rows), float(measured.mean()), float(low), float(high), accuracy)


def _trained(config: PipelineConfig, texts: list[str]) -> np.ndarray | None:
    """The class texts in the form the model was trained on (the config's labels), or None when one is unknown."""
    by_text = {classes.text_of(c): c for c in config.dataset.target_classes}
    if any(t not in by_text for t in texts):
        return None
    return classes.for_training(pd.Series([by_text[t] for t in texts], dtype=object), config.dataset)


def version_tag(config: PipelineConfig, run_id: str) -> dict[str, str]:
    """The tag naming a classifier's calibrator on its model version: the artifact of the run it was trained in."""
    return {TAG: f"runs:/{run_id}/{ARTIFACT}"} if config.dataset.task == "classification" else {}


def load(client: MlflowClient, tags: Mapping[str, str]) -> Calibrator | NoCalibrator:
    """The calibrator a model version's tags name, or why there is none."""
    import tempfile

    from mlflow.exceptions import MlflowException

    uri = tags.get(TAG)
    if not uri:
        return NoCalibrator("the version has no calibrator (tag calibrator): it was registered before estimates")
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = client.download_artifacts(run_id, path, folder)
        except MlflowException as missing:
            return NoCalibrator(f"the calibrator {uri} cannot be read: {missing.message}")
        with open(local, "rb") as file:
            return from_dict(orjson.loads(file.read()))


def of_pipeline(config: PipelineConfig, pipeline, frame: pd.DataFrame) -> Calibrator | NoCalibrator:
    """The calibrator of a fitted sklearn pipeline from `frame` (the validation split, labelled)."""
    if config.dataset.task != "classification":
        return NoCalibrator("a regression model: no estimate without labels")
    probabilities = training.scores(pipeline, config, frame)
    return fit_calibrator(config, training.target_of(frame, config.dataset), probabilities, pipeline.classes_)
