"""The model card of a registered version: what it is for and who owns it, what it learned from, how well it does
on the test split overall and per slice, which features it leans on, whether its ONNX form predicts alike, and why
the gate let it through. Markdown with a small YAML front matter, the Hugging Face model card format, stored with
the version's MLflow run as `model_card.md` (`register_challenger` writes it; the version's tag `model_card_uri`
points at it).

skops (pinned through MLflow) writes such cards for scikit-learn models offline, and its `Card` assembles the
sections here. It takes the fitted pipeline as it is (no model file), but it writes no front matter any more
(skops 0.10 dropped its Hugging Face Hub part, metadata included), its permutation-importance section plots with
matplotlib into a PNG file, and its metrics table needs its own template: the front matter and the tables are
written here, in the same Markdown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import yaml
from mlflow.tracking import MlflowClient

from include.mlops import classes, training
from include.mlops.config import PipelineConfig
from include.mlops.registry import GateDecision

CARD_PATH = "model_card.md"
CARD_TAG = "model_card_uri"
# Permutation importance scores the model (features x repeats) times: on a sample of the test split, so that the
# card costs about the same whatever the split's size.
IMPORTANCE_ROWS = 1000
IMPORTANCE_REPEATS = 3
# Values of one categorical feature listed (the most frequent first); an open set may hold a hundred.
LISTED_SLICES = 20
NOT_STATED = "not stated"
TOO_FEW_ROWS = "too few rows"
MISSING = "(missing)"
_SLICE_METRICS = {"classification": ("f1", "precision", "recall", "roc_auc"), "regression": ("rmse", "mae", "r2")}


@dataclass(frozen=True)
class TrainingData:
    """The training snapshot a version learned from, as its manifest (`datasets.SnapshotManifest`) describes it."""

    repository: str
    commit: str
    source_commit: str
    window_start: str
    window_end: str
    rows: dict[str, int]
    class_counts: dict[str, dict[str, int]]  # classification: per split, rows per class (label as text)
    split_method: str

    @classmethod
    def from_manifest(cls, repository: str, commit: str, manifest: Mapping[str, Any]) -> TrainingData:
        return cls(
            repository=repository,
            commit=commit,
            source_commit=manifest["source_commit"],
            window_start=manifest["window_start"],
            window_end=manifest["window_end"],
            rows=dict(manifest["rows"]),
            class_counts={split: dict(counts) for split, counts in manifest.get("class_counts", {}).items()},
            split_method=manifest["split_method"],
        )


@dataclass(frozen=True)
class Predictions:
    """What the model gave on the test split, computed once for every section: true values `y` (as
    `training.target_of` gives them), class probabilities or predicted values, and predicted classes."""

    y: np.ndarray
    scores: np.ndarray
    labels: np.ndarray | None = None
    classes: np.ndarray | None = None


@dataclass(frozen=True)
class Slice:
    """The test rows with one value of a categorical or boolean feature; no metrics when they are fewer than
    `model.min_slice_rows`."""

    feature: str
    value: str
    rows: int
    metrics: dict[str, float] | None


@dataclass(frozen=True)
class Importance:
    """How much the primary metric drops when one feature's values are shuffled (mean and spread over repeats)."""

    feature: str
    mean: float
    std: float


def predictions(pipeline, config: PipelineConfig, test: pd.DataFrame) -> Predictions:
    features = training.features_of(test, config.dataset)
    y = training.target_of(test, config.dataset)
    if config.dataset.task == "regression":
        return Predictions(y, pipeline.predict(features))
    return Predictions(y, pipeline.predict_proba(features), pipeline.predict(features), np.asarray(pipeline.classes_))


def slices(config: PipelineConfig, test: pd.DataFrame, predicted: Predictions) -> list[Slice]:
    """Per categorical or boolean feature, per value (missing values as one), the test rows with it and their
    metrics, the most frequent values first."""
    features = training.features_of(test, config.dataset)
    measured = _shown_metrics(config)
    found = []
    for feature in config.dataset.features:
        if feature.type == "numeric":
            continue
        column = _slice_values(feature.type, features[feature.name])
        counts = pd.Series(column).value_counts()
        for value, rows in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            enough = rows >= config.model.min_slice_rows
            metrics = _metrics_of(config, predicted, column == value, measured) if enough else None
            found.append(Slice(feature.name, value, int(rows), metrics))
    return found


def _slice_values(kind: str, column: pd.Series) -> np.ndarray:
    """A feature's model input (as `training.features_of` gives it) as the slice value of each row: a category as
    it is, a boolean as JSON writes it (`true`, `false`), and a missing value as MISSING."""
    if kind == "boolean":
        text = column.map({1.0: classes.text_of(True), 0.0: classes.text_of(False)})
        return text.fillna(MISSING).to_numpy(dtype=object)
    return column.where(column != training.MISSING_CATEGORY, MISSING).to_numpy(dtype=object)


def confusion(config: PipelineConfig, predicted: Predictions) -> tuple[list[str], list[list[int]]]:
    """The classes (the user's labels, as text) and the confusion matrix: a row per true class, a column per
    predicted one."""
    from sklearn.metrics import confusion_matrix

    names = [classes.text_of(classes.label_of(c, config.dataset)) for c in predicted.classes]
    return names, confusion_matrix(predicted.y, predicted.labels, labels=predicted.classes).tolist()


def residuals(predicted: Predictions) -> dict[str, float]:
    """Regression: true minus predicted value on the test split, summarised."""
    residual = predicted.y - np.asarray(predicted.scores, dtype=np.float64)
    quantiles = np.quantile(residual, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "mean (bias)": float(residual.mean()),
        "standard deviation": float(residual.std()),
        "mean absolute": float(np.abs(residual).mean()),
        "5th percentile": float(quantiles[0]),
        "25th percentile": float(quantiles[1]),
        "median": float(quantiles[2]),
        "75th percentile": float(quantiles[3]),
        "95th percentile": float(quantiles[4]),
        "largest absolute": float(np.abs(residual).max()),
    }


def importances(pipeline, config: PipelineConfig, test: pd.DataFrame, rows: int = IMPORTANCE_ROWS) -> list[Importance]:
    """Permutation importance of each feature on (a sample of `rows` of) the test split, in the primary metric,
    largest first. Positive: shuffling the feature makes the model worse by that much."""
    from sklearn.inspection import permutation_importance

    sample = test if len(test) <= rows else test.sample(n=rows, random_state=config.model.random_seed)
    features = training.features_of(sample, config.dataset)
    metric = config.model.primary_metric
    sign = 1.0 if training.higher_is_better(config, metric) else -1.0

    def score(estimator, X: pd.DataFrame, y: np.ndarray) -> float:
        if config.dataset.task == "regression":
            return sign * training.metrics_of(config, y, estimator.predict(X), names={metric}).get(metric, math.nan)
        probabilities = estimator.predict_proba(X)
        # Every candidate family predicts the class of the highest probability: taken from the probabilities, each
        # of the (features x repeats) scorings runs the model once instead of twice.
        labels = estimator.classes_[probabilities.argmax(axis=1)]
        measured = training.metrics_of(config, y, probabilities, labels, estimator.classes_, names={metric})
        return sign * measured.get(metric, math.nan)

    result = permutation_importance(
        pipeline,
        features,
        training.target_of(sample, config.dataset),
        scoring=score,
        n_repeats=IMPORTANCE_REPEATS,
        random_state=config.model.random_seed,
    )
    found = [
        Importance(name, float(mean), float(std))
        for name, mean, std in zip(features.columns, result.importances_mean, result.importances_std, strict=True)
    ]
    return sorted(found, key=lambda i: -i.mean if math.isfinite(i.mean) else math.inf)


def render(
    config: PipelineConfig,
    pipeline,
    test: pd.DataFrame,
    data: TrainingData,
    decision: GateDecision,
    parity: Mapping[str, str],
) -> str:
    """The card of version `decision.version` of `config`'s model: `pipeline` (the fitted challenger) judged on
    `test` (the split the gate used), trained on `data`, with its test metrics (`decision.challenger_test`), its
    ONNX parity figures (`parity`, as `ParityReport.as_tags` gives them) and the gate's decision."""
    from skops.card import Card

    from include.mlops.model_overview import predicts

    dataset, model = config.dataset, config.model
    predicted = predictions(pipeline, config, test)
    card = Card(pipeline, template=None, model_diagram=False)
    title = f"Model card: {config.name} v{decision.version}"
    estimator = pipeline.named_steps["model"]
    card.add(
        **{
            title: "\n".join(
                [
                    f"A {dataset.task} model of the dataset `{dataset.name}`; it predicts {predicts(config)}.",
                    "",
                    f"- candidate: `{decision.challenger}`, `{type(estimator).__name__}` after the project's "
                    "preprocessing (missing values imputed, categories one-hot encoded, numbers scaled for linear "
                    "models), served as ONNX",
                    f"- MLflow run: `{decision.challenger_run_id}`",
                    f"- config: `{config.path}`",
                ]
            ),
            f"{title}/Intended uses & limitations": "\n".join(
                [
                    f"- intended use: {_one_paragraph(model.intended_use)}",
                    f"- owner: {_one_paragraph(model.owner)}",
                    "",
                    "Every figure below was measured on the test split of the training snapshot: rows like the ones "
                    "it learned from. Live traffic that drifts from them is judged by the drift monitor, not here.",
                ]
            ),
            f"{title}/Training data": _training_data(config, data),
            f"{title}/Evaluation results": _evaluation(config, decision, len(test)),
            f"{title}/Evaluation results/Per slice": _slices(config, slices(config, test, predicted)),
        }
    )
    if dataset.task == "classification":
        names, matrix = confusion(config, predicted)
        rows = [[f"**{name}**", *counts] for name, counts in zip(names, matrix, strict=True)]
        text = "A row per true class, a column per predicted class; test rows.\n\n"
        card.add(**{f"{title}/Evaluation results/Confusion matrix": text + _table(["true \\ predicted", *names], rows)})
    else:
        rows = [[name, _number(value)] for name, value in residuals(predicted).items()]
        text = f"True minus predicted `{dataset.target}` on the {len(test)} test rows.\n\n"
        card.add(**{f"{title}/Evaluation results/Residuals": text + _table(["residual", "value"], rows)})
    card.add(
        **{
            f"{title}/Permutation importance": _importances(config, importances(pipeline, config, test), len(test)),
            f"{title}/ONNX parity": _parity(parity),
            f"{title}/Gate decision": _gate(decision),
        }
    )
    return front_matter(config, decision) + card.render().lstrip("\n") + "\n"


def front_matter(config: PipelineConfig, decision: GateDecision) -> str:
    """The Hugging Face card metadata: library, tags, and the test metrics in model-index form."""
    task = f"tabular-{config.dataset.task}"
    metrics = [
        {"type": name, "value": round(value, 6), "name": f"test {name}"}
        for name, value in sorted(decision.challenger_test.items())
        if math.isfinite(value)
    ]
    metadata = {
        "library_name": "sklearn",
        "tags": ["sklearn", task, "onnx"],
        "model-index": [
            {
                "name": config.name,
                "results": [
                    {
                        "task": {"type": task},
                        "dataset": {"name": config.dataset.name, "type": "tabular", "split": "test"},
                        "metrics": metrics,
                    }
                ],
            }
        ],
    }
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False) + "---\n\n"


def split_front_matter(card: str) -> tuple[dict[str, Any], str]:
    """A card's metadata and its Markdown body."""
    if card.startswith("---\n"):
        head, separator, body = card[4:].partition("\n---\n")
        if separator:
            return yaml.safe_load(head) or {}, body.lstrip("\n")
    return {}, card


def _metrics_of(
    config: PipelineConfig, predicted: Predictions, rows: np.ndarray, names: Sequence[str]
) -> dict[str, float]:
    if config.dataset.task == "regression":
        return training.metrics_of(config, predicted.y[rows], predicted.scores[rows], names=names)
    return training.metrics_of(
        config, predicted.y[rows], predicted.scores[rows], predicted.labels[rows], predicted.classes, names=names
    )


def _shown_metrics(config: PipelineConfig) -> list[str]:
    primary = config.model.primary_metric
    return [primary, *(m for m in _SLICE_METRICS[config.dataset.task] if m != primary)]


def _training_data(config: PipelineConfig, data: TrainingData) -> str:
    lines = [
        f"- lakeFS: repository `{data.repository}`, commit `{data.commit}` (the training snapshot), read from "
        f"`main` at `{data.source_commit}`",
        f"- window: {data.window_start} to {data.window_end} (exclusive), `training.window_days` "
        f"{config.training.window_days}",
        f"- rows: {', '.join(f'{split} {n}' for split, n in data.rows.items())} (split by {data.split_method})",
    ]
    if config.dataset.task == "classification" and data.class_counts:
        labels = sorted({label for counts in data.class_counts.values() for label in counts})
        splits = list(data.class_counts)
        rows = [[f"`{label}`", *(data.class_counts[s].get(label, 0) for s in splits)] for label in labels]
        totals = {label: sum(data.class_counts[s].get(label, 0) for s in splits) for label in labels}
        everything = sum(totals.values()) or 1
        rows = [[*row, f"{100 * totals[label] / everything:.1f} %"] for row, label in zip(rows, labels, strict=True)]
        lines += ["", "Class balance (rows per class):", "", _table(["class", *splits, "share"], rows)]
    return "\n".join(lines)


def _evaluation(config: PipelineConfig, decision: GateDecision, rows: int) -> str:
    primary = config.model.primary_metric
    table = [
        [f"**{name}** (primary)" if name == primary else name, _number(value)]
        for name, value in sorted(decision.challenger_test.items())
    ]
    return f"On the {rows} rows of the test split.\n\n" + _table(["metric", "value"], table)


def _slices(config: PipelineConfig, found: Sequence[Slice]) -> str:
    if not found:
        return "No categorical or boolean feature: no slices."
    shown = _shown_metrics(config)
    parts = [
        "Test rows per value of each categorical or boolean feature. A value with fewer than "
        f"{config.model.min_slice_rows} rows (`model.min_slice_rows`) shows {TOO_FEW_ROWS}: a metric on so few rows "
        "would mean little."
    ]
    for feature in dict.fromkeys(s.feature for s in found):
        of_feature = [s for s in found if s.feature == feature]
        rows = []
        for s in of_feature[:LISTED_SLICES]:
            if s.metrics is None:
                rows.append([_cell(s.value), s.rows, TOO_FEW_ROWS, *([""] * (len(shown) - 1))])
            else:
                rows.append([_cell(s.value), s.rows, *(_number(s.metrics.get(m)) for m in shown)])
        parts += ["", f"**{feature}**", "", _table(["value", "rows", *shown], rows)]
        if left := of_feature[LISTED_SLICES:]:
            parts.append(f"\n{len(left)} more values ({sum(s.rows for s in left)} rows) not listed.")
    return "\n".join(parts)


def _importances(config: PipelineConfig, found: Sequence[Importance], test_rows: int) -> str:
    sampled = min(test_rows, IMPORTANCE_ROWS)
    text = (
        f"How much the test {config.model.primary_metric} gets worse when one feature's values are shuffled "
        f"({IMPORTANCE_REPEATS} shuffles on {sampled} test rows; sklearn's permutation_importance). Near zero: the "
        "model does not rely on the feature; a negative value is noise."
    )
    rows = [[f"`{i.feature}`", _number(i.mean), _number(i.std)] for i in found]
    return text + "\n\n" + _table(["feature", "importance", "spread (std)"], rows)


def _parity(parity: Mapping[str, str]) -> str:
    if not parity:
        return NOT_STATED
    verdict = parity.get("onnx_parity", NOT_STATED)
    lines = [
        f"- verdict: **{verdict}**, on {parity.get('onnx_parity_rows', '?')} test rows against "
        f"{parity.get('onnx_parity_tolerance', '?')}'s tolerance"
    ]
    figures = {
        "onnx_label_agreement": "labels equal on this share of rows",
        "onnx_max_probability_difference": "largest probability difference",
        "onnx_max_relative_error": "largest relative error",
    }
    lines += [f"- {text}: {parity[tag]}" for tag, text in figures.items() if tag in parity]
    return "\n".join(lines)


def _gate(decision: GateDecision) -> str:
    lines = [f"**{'promote' if decision.promote else 'reject'}**: {decision.reason}.", "", decision.summary()]
    if decision.champion_test:
        names = sorted(set(decision.challenger_test) | set(decision.champion_test))
        champion = f"champion v{decision.champion_version}"
        rows = [
            [name, _number(decision.challenger_test.get(name)), _number(decision.champion_test.get(name))]
            for name in names
        ]
        lines += ["", "Both on this run's test split:", "", _table(["metric", "this version", champion], rows)]
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _one_paragraph(text: str) -> str:
    """A config text as one list item's paragraph (YAML's block text keeps its line breaks)."""
    return " ".join(text.split()) or NOT_STATED


def _cell(text: str) -> str:
    """A value as a table cell: a `|` in it would end the cell."""
    return text.replace("|", "\\|")


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"


def store(client: MlflowClient, model: str, version: str, run_id: str, card: str) -> str:
    """Log `card` to the version's run as `model_card.md` and name it on version `version` of `model` (tag
    `model_card_uri`); returns its `runs:/` URI. A retry writes the same artifact again."""
    client.log_text(run_id, card, CARD_PATH)
    uri = f"runs:/{run_id}/{CARD_PATH}"
    client.set_model_version_tag(model, version, CARD_TAG, uri)
    return uri


def load(client: MlflowClient, uri: str) -> str:
    """The card stored at `uri` (a version's `model_card_uri` tag)."""
    import tempfile
    from pathlib import Path

    if not uri.startswith("runs:/"):
        raise ValueError(f"{uri!r} is not a runs:/<run id>/<path> URI")
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    with tempfile.TemporaryDirectory() as folder:
        return Path(client.download_artifacts(run_id, path, folder)).read_text(encoding="utf-8")
