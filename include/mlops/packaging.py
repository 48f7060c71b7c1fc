"""The ONNX form of a trained pipeline, and the parity gate that proves it predicts like the sklearn model.

The whole pipeline, preprocessing included, converts with skl2onnx: one typed input per feature column
(float32 `[N, 1]` for numbers and booleans, strings for categories), `zipmap` off so probabilities come back
as one tensor, and a pinned opset. `onnx_feeds` turns rows into those inputs the same way for the parity check
and for the served model, so that what is checked is what is served.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from include.mlops import classes, training
from include.mlops.config import Dataset, PipelineConfig

# The opsets the pinned onnx/onnxruntime/skl2onnx agree on; a new model must not depend on what they add later.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
VALUE_OUTPUT = "variable"
# The model's metadata property holding each categorical feature's known categories (JSON).
CATEGORIES_PROPERTY = "mlops.categories"

_LISTED_DIFFERENCES = 1000
# skl2onnx's and onnxmltools' classifiers keep their classes in one of these attributes (TreeEnsembleClassifier,
# LinearClassifier, SVMClassifier).
_CLASS_ATTRIBUTES = ("classlabels_int64s", "classlabels_ints", "classlabels_strings")


@dataclass(frozen=True)
class ParityTolerance:
    """How closely the ONNX form must follow the model of one family (issue 5): labels equal on at least
    `min_label_agreement` of the rows, probabilities within `max_probability_difference`, regression values
    within `max_relative_error`."""

    family: str
    min_label_agreement: float
    max_probability_difference: float
    max_relative_error: float


# scikit-learn's estimators work on float32 features, as ONNX does: their ONNX forms differ by ~1e-7, from summing
# in another order.
SKLEARN_TOLERANCE = ParityTolerance("scikit-learn", 0.999, 1e-4, 1e-5)
# Boosting libraries, by `training.boosting_library` (docs/pipelines.md, "package_onnx", has the measurements). LightGBM
# splits float64 features at float64 thresholds, which ONNX holds as float32: a row within float32 rounding of a
# threshold takes the other branch of that one split, and its probability moves by that leaf's step (up to
# 2.7e-3 measured; thresholds 1 % off move it by 0.19). XGBoost works in float32 as scikit-learn does, and its
# probabilities agree as closely. Both sum their float32 leaves in another order than onnxruntime, which relative
# to a regression value near zero exceeds 1e-5 (up to 1.75e-3 measured).
BOOSTING_TOLERANCES = {
    "lightgbm": ParityTolerance("LightGBM", 0.999, 1e-2, 1e-2),
    "xgboost": ParityTolerance("XGBoost", 0.999, 1e-4, 1e-2),
}


def tolerance_for(estimator) -> ParityTolerance:
    """The tolerance of the family `estimator` belongs to."""
    return BOOSTING_TOLERANCES.get(training.boosting_library(estimator), SKLEARN_TOLERANCE)


class ParityFailed(RuntimeError):
    """The ONNX model does not predict like the sklearn model on the test split."""

    def __init__(self, report: ParityReport):
        self.report = report
        super().__init__(report.summary())


@dataclass(frozen=True)
class ParityReport:
    rows: int
    task: str
    label_agreement: float | None
    max_probability_difference: float | None
    max_relative_error: float | None
    tolerance: ParityTolerance
    differing_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        limit = self.tolerance
        if self.task == "regression":
            return self.max_relative_error is not None and self.max_relative_error <= limit.max_relative_error
        return (
            self.label_agreement is not None
            and self.label_agreement >= limit.min_label_agreement
            and self.max_probability_difference is not None
            and self.max_probability_difference <= limit.max_probability_difference
        )

    def summary(self) -> str:
        verdict = "parity passed" if self.passed else "parity FAILED"
        limit = self.tolerance
        if self.task == "regression":
            figures = f"max relative error {self.max_relative_error:.3g} (limit {limit.max_relative_error:g})"
        else:
            figures = (
                f"labels equal on {self.label_agreement:.4%} of rows (at least {limit.min_label_agreement:.1%}), "
                f"max |probability difference| {self.max_probability_difference:.3g} "
                f"(limit {limit.max_probability_difference:g})"
            )
        listed = f"; {len(self.differing_rows)} differing row(s) listed in the report" if self.differing_rows else ""
        return f"{verdict} on {self.rows} test rows against {limit.family}'s tolerance: {figures}{listed}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def as_tags(self) -> dict[str, str]:
        tags = {
            "onnx_parity": "passed" if self.passed else "failed",
            "onnx_parity_rows": str(self.rows),
            "onnx_parity_tolerance": self.tolerance.family,
        }
        if self.label_agreement is not None:
            tags["onnx_label_agreement"] = f"{self.label_agreement:.6f}"
            tags["onnx_max_probability_difference"] = f"{self.max_probability_difference:.3g}"
        if self.max_relative_error is not None:
            tags["onnx_max_relative_error"] = f"{self.max_relative_error:.3g}"
        return tags


def input_types(dataset: Dataset) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    return [
        (f.name, StringTensorType([None, 1]) if f.type == "categorical" else FloatTensorType([None, 1]))
        for f in dataset.features
    ]


def to_onnx(pipeline, config: PipelineConfig) -> bytes:
    """The fitted pipeline as a serialized ONNX model with named outputs (label/probabilities, or variable)."""
    import onnx
    from skl2onnx import convert_sklearn

    from include.mlops import boosting

    boosting.register_onnx_converters()
    estimator = pipeline.named_steps["model"]
    options = {id(estimator): {"zipmap": False}} if config.dataset.task == "classification" else None
    model = convert_sklearn(
        pipeline,
        name=config.model.registered_name,
        initial_types=input_types(config.dataset),
        options=options,
        target_opset=TARGET_OPSET,
    )
    _name_outputs(model, config.dataset.task)
    model.doc_string = f"{config.model.registered_name}: {config.dataset.task} on {config.dataset.name}"
    onnx.helper.set_model_props(model, {CATEGORIES_PROPERTY: json.dumps(_categories(pipeline, config.dataset))})
    return model.SerializeToString()


def onnx_categories(onnx_bytes: bytes) -> dict[str, list[str]] | None:
    """The categories each categorical feature's one-hot encoding knows, as `to_onnx` recorded them (None for a
    model packaged before it did): a value outside them counts as one "other"."""
    import onnx

    properties = {p.key: p.value for p in onnx.load_model_from_string(onnx_bytes).metadata_props}
    return json.loads(properties[CATEGORIES_PROPERTY]) if CATEGORIES_PROPERTY in properties else None


def _categories(pipeline, dataset: Dataset) -> dict[str, list[str]]:
    categorical = [f.name for f in dataset.features if f.type == "categorical"]
    if not categorical:
        return {}
    one_hot = pipeline.named_steps["features"].named_transformers_["categorical"].named_steps["one_hot"]
    return {name: [str(c) for c in known] for name, known in zip(categorical, one_hot.categories_, strict=True)}


def onnx_feeds(features: pd.DataFrame, dataset: Dataset) -> dict[str, np.ndarray]:
    """Rows prepared by `training.features_of` as the ONNX model's inputs, one `[N, 1]` array per column."""
    feeds = {}
    for feature in dataset.features:
        column = features[feature.name]
        if feature.type == "categorical":
            feeds[feature.name] = column.to_numpy(dtype=object).reshape(-1, 1)
        else:
            feeds[feature.name] = column.to_numpy(dtype=np.float32).reshape(-1, 1)
    return feeds


def session(onnx_bytes: bytes, threads: int | None = None):
    """An onnxruntime session; `threads` fixes its intra- and inter-op threads (default: onnxruntime's choice).
    With one thread a row's prediction does not depend on the batch it is run in, as in the model service."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
    return onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def check_parity(pipeline, onnx_bytes: bytes, config: PipelineConfig, frame: pd.DataFrame) -> ParityReport:
    """Compare the sklearn pipeline and its ONNX form on every row of `frame` (the whole test split)."""
    dataset = config.dataset
    tolerance = tolerance_for(pipeline.named_steps["model"])
    features = training.features_of(frame, dataset)
    runtime = session(onnx_bytes)
    names = [output.name for output in runtime.get_outputs()]
    outputs = dict(zip(names, runtime.run(None, onnx_feeds(features, dataset)), strict=True))
    ids = frame[dataset.id_column].astype(str).to_numpy()
    if dataset.task == "regression":
        expected = pipeline.predict(features)
        actual = outputs[VALUE_OUTPUT].reshape(-1).astype(np.float64)
        relative = np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-12)
        worst = np.argsort(-relative)[:_LISTED_DIFFERENCES]
        listed = [
            {
                "id": ids[i],
                "sklearn": float(expected[i]),
                "onnx": float(actual[i]),
                "relative_error": float(relative[i]),
            }
            for i in worst
            if relative[i] > tolerance.max_relative_error
        ]
        return ParityReport(len(frame), "regression", None, None, float(relative.max(initial=0.0)), tolerance, listed)

    expected_labels = pipeline.predict(features)
    expected_probabilities = pipeline.predict_proba(features)
    labels = outputs[LABEL_OUTPUT].reshape(-1)
    probabilities = outputs[PROBABILITIES_OUTPUT]
    differences = np.abs(probabilities - expected_probabilities).max(axis=1)
    disagree = np.flatnonzero(labels != expected_labels)
    listed = [
        {
            "id": ids[i],
            "sklearn_label": classes.label_of(expected_labels[i], dataset),
            "onnx_label": classes.label_of(labels[i], dataset),
            "sklearn_probabilities": expected_probabilities[i].round(8).tolist(),
            "onnx_probabilities": probabilities[i].round(8).tolist(),
        }
        for i in disagree[:_LISTED_DIFFERENCES]
    ]
    return ParityReport(
        rows=len(frame),
        task="classification",
        label_agreement=float(1 - len(disagree) / max(len(frame), 1)),
        max_probability_difference=float(differences.max(initial=0.0)),
        max_relative_error=None,
        tolerance=tolerance,
        differing_rows=listed,
    )


def onnx_classes(onnx_bytes: bytes) -> list[int | str]:
    """The classes of an ONNX classifier, in the order of its probabilities' columns, as it was trained on them
    (`classes.label_of` gives the user's labels)."""
    import onnx

    for node in onnx.load_model_from_string(onnx_bytes).graph.node:
        for attribute in node.attribute:
            if attribute.name in _CLASS_ATTRIBUTES:
                return list(attribute.ints) or [value.decode() for value in attribute.strings]
    raise ValueError("the classifier's class labels are not in the ONNX graph")


def _name_outputs(model, task: str) -> None:
    """skl2onnx names outputs after the estimator (output_label, output_probability); give them our names."""
    names = [LABEL_OUTPUT, PROBABILITIES_OUTPUT] if task == "classification" else [VALUE_OUTPUT]
    renames = {}
    for output, name in zip(model.graph.output, names, strict=False):
        renames[output.name] = name
        output.name = name
    for node in model.graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
