"""The prediction endpoints' request and answer, generated from the pipeline config's features.

A record has one field per feature of `dataset.features`: numeric features take a finite number (NaN and
infinities are refused), boolean features `true`/`false`, categorical features a string (a category the model
never saw is accepted: its one-hot encoding counts it as one "other"). A nullable feature must still be sent, and
may be `null`. Types are strict: `"3"` is not a number and `1` is not a boolean. Unknown fields are refused, except the
dataset's id column, which a client may send so that the prediction can later be joined with its label.

`feeds` turns validated records into the ONNX model's inputs exactly as `packaging.onnx_feeds` does for rows
prepared by `training.features_of`: numbers as float32 `[N, 1]` with null as NaN (the model imputes it),
categories as strings with null as `MISSING_CATEGORY`. What the parity gate checked is what is served.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from include.mlops.classes import text_of
from include.mlops.config import Dataset, Feature
from include.mlops.training import MISSING_CATEGORY

Numeric = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Boolean = Annotated[bool, Field(strict=True)]
Category = Annotated[str, Field(strict=True)]
_TYPES: dict[str, Any] = {"numeric": Numeric, "boolean": Boolean, "categorical": Category}

# A key shown without quotes in a problem's location (`records[0].amount`).
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Problems listed in one answer: enough to fix a request, and a bad 1,000-record request stays small.
MAX_LISTED_PROBLEMS = 20


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def record_model(dataset: Dataset, name: str = "Record") -> type[StrictModel]:
    """One record: every feature (required, typed by the config) and the optional id column. `name` is its
    schema's name in the OpenAPI document (one per model)."""
    fields: dict[str, Any] = {}
    for feature in dataset.features:
        annotation = _TYPES[feature.type]
        fields[feature.name] = (annotation | None if feature.nullable else annotation, Field(description=_doc(feature)))
    fields[dataset.id_column] = (
        Annotated[str, Field(strict=True)] | None,
        Field(default=None, description="optional; logged with the prediction so that a later label can be joined"),
    )
    return create_model(name, __base__=StrictModel, **fields)


def request_model(record: type[BaseModel], max_records: int, base: type[BaseModel], name: str) -> type[BaseModel]:
    """`{"records": [record, ...]}` with 1 to `max_records` records, on `base` (BentoML's IODescriptor)."""
    records = Annotated[list[record], Field(min_length=1, max_length=max_records)]  # type: ignore[valid-type]
    return create_model(name, __base__=base, records=(records, Field(description="the records to predict")))


class ValuePrediction(BaseModel):
    value: float = Field(description="the predicted value")


class Served(BaseModel):
    model_name: str = Field(description="the model store name of the model that answered")
    model_version: str = Field(description="its version (the MLflow registered model version)")
    request_id: str = Field(description="this request's id, as written to the inference log")
    role: Literal["champion", "challenger"] = Field(
        description="which model answered: the champion, or during a canary rollout the challenger"
    )


def class_prediction(dataset: Dataset, suffix: str = "") -> type[BaseModel]:
    """A classifier's answer for one record: `label`, one of the dataset's classes as the data holds them, and
    `probabilities` keyed by each class as text (`classes.text_of`)."""
    label = Literal[tuple(dataset.target_classes)]  # type: ignore[valid-type]
    keys = ", ".join(text_of(c) for c in dataset.target_classes)
    return create_model(
        f"ClassPrediction{suffix}",
        label=(label, Field(description="the predicted class")),
        probabilities=(dict[str, float], Field(description=f"each class's probability, by class ({keys})")),
    )


def response_models(dataset: Dataset, suffix: str = "") -> tuple[type[BaseModel], type[BaseModel]]:
    """The answer of /predict (one prediction per record, in order) and of one /predict_batched record, named
    `PredictResponse<suffix>` and `BatchedPrediction<suffix>` in the OpenAPI document."""
    prediction = class_prediction(dataset, suffix) if dataset.task == "classification" else ValuePrediction
    answer = create_model(f"PredictResponse{suffix}", __base__=Served, predictions=(list[prediction], ...))
    batched = create_model(f"BatchedPrediction{suffix}", __base__=(Served, prediction))
    return answer, batched


def feeds(records: Sequence[BaseModel], dataset: Dataset) -> dict[str, np.ndarray]:
    """The ONNX model's inputs for validated records, one `[N, 1]` array per feature."""
    inputs = {}
    for feature in dataset.features:
        values = [getattr(record, feature.name) for record in records]
        if feature.type == "categorical":
            column = np.array([MISSING_CATEGORY if v is None else v for v in values], dtype=object)
        else:
            # Through float64 as features_of goes, so that the float32 rounding is the same.
            column = np.array([np.nan if v is None else v for v in values], dtype=np.float64).astype(np.float32)
        inputs[feature.name] = column.reshape(-1, 1)
    return inputs


def sample_record(record: type[BaseModel], dataset: Dataset) -> BaseModel:
    """A plausible record (mid-range numbers, the first allowed category) to prove a model runs."""
    values: dict[str, Any] = {}
    for feature in dataset.features:
        if feature.type == "numeric":
            low = feature.min if feature.min is not None else 0.0
            high = feature.max if feature.max is not None else low
            values[feature.name] = (low + high) / 2
        elif feature.type == "boolean":
            values[feature.name] = False
        else:
            values[feature.name] = feature.allowed[0] if feature.allowed else MISSING_CATEGORY
    return record.model_validate(values)


def problems(error: ValidationError) -> list[str]:
    """Each problem as `records[3].amount: value is not a finite number`, at most MAX_LISTED_PROBLEMS."""
    described = [f"{_where(e['loc'])}: {_what(e)}" for e in error.errors(include_url=False)]
    if len(described) > MAX_LISTED_PROBLEMS:
        hidden = len(described) - MAX_LISTED_PROBLEMS
        described = [*described[:MAX_LISTED_PROBLEMS], f"... and {hidden} more problem(s)"]
    return described


def _where(location: tuple[int | str, ...]) -> str:
    """`records[3].amount`; a key that is empty or not a plain name is quoted: `records[0]["my field"]`, `body[""]`
    (fuzzing found `: unknown field` for an empty key, which named nothing)."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{json.dumps(str(part), ensure_ascii=False)}]" if text else f"body[{json.dumps(str(part))}]"
    return text or "body"


def _what(error: dict[str, Any]) -> str:
    kind, given, context = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "model_type" and not error["loc"]:
        return f'expected an object {{"records": [...]}}, got {_json_type(given)}'
    if kind in ("float_type", "bool_type", "string_type") and given is None:
        return "null is not allowed (the feature is not nullable)"
    messages = {
        "finite_number": "value is not a finite number",
        "float_type": f"expected a number, got {_json_type(given)}",
        "bool_type": f"expected true or false, got {_json_type(given)}",
        "string_type": f"expected a string, got {_json_type(given)}",
        "missing": "field is missing",
        "extra_forbidden": "unknown field",
        "model_type": f"expected an object of features, got {_json_type(given)}",
        "model_attributes_type": f"expected an object, got {_json_type(given)}",
        "list_type": f"expected a list of records, got {_json_type(given)}",
        "too_short": "at least one record is required",
        "too_long": f"at most {context.get('max_length')} record(s) per request, got {context.get('actual_length')}",
        "json_invalid": f"not valid JSON ({context.get('error', 'parse error')})",
    }
    return messages.get(kind, error["msg"])


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _doc(feature: Feature) -> str:
    parts = [feature.description] if feature.description else []
    if feature.min is not None or feature.max is not None:
        parts.append(f"usually {feature.min} to {feature.max}")
    if feature.allowed:
        parts.append("known categories: " + ", ".join(feature.allowed) + " (others are accepted and ignored)")
    elif feature.type == "categorical":
        parts.append(
            f"any text: the model knows up to {feature.max_categories} of the most frequent values of its training "
            "data, and any other counts as one 'other'"
        )
    if feature.nullable:
        parts.append("may be null")
    return "; ".join(parts)
