"""The model being served: loaded from the BentoML model store, checked against the config, then run.

A model is only ever served after `load_model` has built its onnxruntime session, checked that its inputs and
outputs are the ones the config's features and task call for, and run a sample record through it. A model that
fails any of this raises `ModelRejected` naming why, and the caller keeps serving what it served before.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from include.mlops import classes
from include.mlops.config import ClassLabel, PipelineConfig
from include.mlops.deployment import MODEL_FILE, stored_model
from include.mlops.packaging import LABEL_OUTPUT, PROBABILITIES_OUTPUT, VALUE_OUTPUT, onnx_categories, onnx_classes
from include.serving import schema
from include.serving.errors import first_line

_STORE_VERSION = re.compile(r"^v(\d+)$")


class ModelNotFound(LookupError):
    """The tag is not in the BentoML model store."""


class ModelRejected(ValueError):
    """The model is in the store but cannot be served: it does not load, does not fit the config, or fails."""


@dataclass(frozen=True)
class ServedModel:
    """One loaded model; immutable, so that a request holding it finishes on it while another is swapped in."""

    tag: str
    name: str
    version: str
    task: str
    labels: Mapping[str, str]
    session: Any = field(repr=False)
    # The probabilities' columns, as the keys of the answer's `probabilities` (classification only).
    class_keys: tuple[str, ...] = ()
    # The user's label of each class the model outputs (booleans were trained as 0/1).
    class_labels: Mapping[int | str, ClassLabel] = field(default_factory=dict)
    # The categories each categorical feature's encoding knows (a value outside them counts as one "other"), as
    # the model records them, or a closed set's `allowed` for a model packaged before it did.
    categories: Mapping[str, frozenset[str]] = field(default_factory=dict)
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def predict(self, feeds: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
        """One prediction per row: `{"label", "probabilities"}` or `{"value"}`."""
        if self.task == "regression":
            (values,) = self.session.run([VALUE_OUTPUT], dict(feeds))
            return [{"value": value} for value in values.reshape(-1).tolist()]
        labels, probabilities = self.session.run([LABEL_OUTPUT, PROBABILITIES_OUTPUT], dict(feeds))
        return [
            {"label": self.class_labels[label], "probabilities": dict(zip(self.class_keys, row, strict=True))}
            for label, row in zip(labels.reshape(-1).tolist(), probabilities.tolist(), strict=True)
        ]


def version_of(tag: str) -> str:
    """The MLflow version a store tag was saved under (`fraud_detector:v3` -> `3`), or the tag's version."""
    version = tag.partition(":")[2]
    match = _STORE_VERSION.match(version)
    return match.group(1) if match else version


def load_model(tag: str, config: PipelineConfig, record: type[BaseModel]) -> ServedModel:
    """The model `tag` from the store (BENTOML_HOME), ready to serve: raises ModelNotFound or ModelRejected."""
    from bentoml.exceptions import BentoMLException, NotFound

    try:
        stored = stored_model(tag)
    except NotFound as exc:
        raise ModelNotFound(str(exc)) from exc
    except (ValueError, BentoMLException) as exc:  # a malformed name (ValueError) or version (BentoMLException)
        raise ModelRejected(f"{tag!r} is not a valid BentoML tag <model>:v<version> ({first_line(exc)})") from exc
    resolved = str(stored.tag)
    try:
        onnx_bytes = Path(stored.path_of(MODEL_FILE)).read_bytes()
    except OSError as exc:
        raise ModelRejected(f"{resolved}: {MODEL_FILE} cannot be read ({exc.strerror})") from exc
    try:
        session = new_session(onnx_bytes)
    except Exception as exc:  # onnxruntime raises its own exception types for a broken model
        raise ModelRejected(f"{resolved}: onnxruntime cannot load {MODEL_FILE}: {first_line(exc)}") from exc
    _check_signature(session, config, resolved)
    class_labels = _class_labels(onnx_bytes, config, resolved) if config.dataset.task == "classification" else {}
    served = ServedModel(
        tag=resolved,
        name=stored.tag.name,
        version=version_of(resolved),
        task=config.dataset.task,
        labels=dict(stored.info.labels),
        session=session,
        class_keys=tuple(classes.text_of(label) for label in class_labels.values()),
        class_labels=class_labels,
        categories=_categories(onnx_bytes, config),
    )
    _check_sample(served, config, record)
    return served


def new_session(onnx_bytes: bytes):
    """An onnxruntime session on one thread.

    One intra-op thread makes each row's prediction independent of the batch it is run in (with more threads,
    tree ensembles sum in a batch-size dependent order and batches of 100+ rows differ in the last bit), so
    adaptive batching never changes an answer; a server scales with workers instead.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def _check_signature(session, config: PipelineConfig, tag: str) -> None:
    features = config.dataset.features
    expected = {f.name: "tensor(string)" if f.type == "categorical" else "tensor(float)" for f in features}
    actual = {i.name: i.type for i in session.get_inputs()}
    if actual != expected:
        missing = sorted(set(expected) - set(actual))
        unknown = sorted(set(actual) - set(expected))
        mistyped = sorted(n for n in set(expected) & set(actual) if expected[n] != actual[n])
        raise ModelRejected(
            f"{tag}: its inputs do not match the config's features "
            f"(missing {missing}, not features {unknown}, wrong type {mistyped})"
        )
    wanted = {VALUE_OUTPUT} if config.dataset.task == "regression" else {LABEL_OUTPUT, PROBABILITIES_OUTPUT}
    outputs = {o.name for o in session.get_outputs()}
    if not wanted <= outputs:
        raise ModelRejected(
            f"{tag}: a {config.dataset.task} model must have outputs {sorted(wanted)}, this one has {sorted(outputs)}"
        )


def _class_labels(onnx_bytes: bytes, config: PipelineConfig, tag: str) -> dict[int | str, ClassLabel]:
    """Each class the model outputs, in the order of its probabilities, with the user's label for it."""
    try:
        model_classes = onnx_classes(onnx_bytes)
        return {c: classes.label_of(c, config.dataset) for c in model_classes}
    except ValueError as exc:  # no class labels, or integers where the config's labels are booleans (2, say)
        raise ModelRejected(f"{tag}: {exc}") from exc


def _categories(onnx_bytes: bytes, config: PipelineConfig) -> dict[str, frozenset[str]]:
    recorded = onnx_categories(onnx_bytes)
    if recorded is not None:
        return {name: frozenset(known) for name, known in recorded.items()}
    return {f.name: frozenset(f.allowed) for f in config.dataset.features if f.allowed is not None}


def _check_sample(served: ServedModel, config: PipelineConfig, record: type[BaseModel]) -> None:
    sample: Sequence[BaseModel] = [schema.sample_record(record, config.dataset)]
    try:
        (prediction,) = served.predict(schema.feeds(sample, config.dataset))
    except Exception as exc:  # whatever onnxruntime or a malformed output raises, the model cannot serve
        raise ModelRejected(f"{served.tag}: a sample record fails: {first_line(exc)}") from exc
    numbers = [prediction["value"]] if "value" in prediction else list(prediction["probabilities"].values())
    if not all(np.isfinite(numbers)):
        raise ModelRejected(f"{served.tag}: a sample record gives a non-finite prediction {prediction}")
