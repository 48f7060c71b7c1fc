"""Class labels as the user writes them, as a model is trained on them, and as text in JSON and the logs.

A classification dataset's labels are all of one kind, as `dataset.target_classes` lists them: integers (0/1,
grades 1-5), text ('yes'/'no', 'Fair' ... 'Ideal') or booleans. A model is trained on integers and text as they
are, and on booleans as 0/1, because ONNX class labels are integers or strings, never booleans. What a model
predicts is turned back into the user's label (`label_of`), so the service answers `true`, `"yes"` or `3` as the
data holds it. Where a label must be text (the keys of an answer's `probabilities`, the inference log's `label`
column, a metric's label value) it is `text_of(label)`: the label as JSON writes it, so `true`, not `True`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from include.mlops.config import ClassLabel, Dataset

Kind = Literal["boolean", "integer", "text"]


def kind_of(dataset: Dataset) -> Kind:
    """The kind of the dataset's labels, from `target_classes` (all of one kind, the config makes sure)."""
    first = dataset.target_classes[0]
    if isinstance(first, bool):
        return "boolean"
    return "integer" if isinstance(first, int) else "text"


def for_training(values: pd.Series, dataset: Dataset) -> np.ndarray:
    """Validated labels as a model is fitted on them: int64 for integers and booleans (0/1), str for text."""
    if kind_of(dataset) == "text":
        return values.astype(str).to_numpy(dtype=object)
    return values.astype("int64").to_numpy()


def label_of(value: Any, dataset: Dataset) -> ClassLabel:
    """What a model predicted (a numpy or Python integer or string) as the user's label."""
    kind = kind_of(dataset)
    if kind == "text":
        return str(value)
    number = int(value)
    if kind == "integer":
        return number
    if number not in (0, 1):
        raise ValueError(f"{value!r} is not a boolean label (0 or 1)")
    return bool(number)


def labels_of(values: Iterable[Any], dataset: Dataset) -> list[ClassLabel]:
    return [label_of(value, dataset) for value in values]


def text_of(label: Any) -> str:
    """A label as text, as JSON writes it (`true`/`false` for booleans), for keys and text columns."""
    if isinstance(label, bool | np.bool_):
        return "true" if label else "false"
    if isinstance(label, np.generic):
        label = label.item()
    return str(label)


def positive_label(dataset: Dataset) -> ClassLabel:
    """The class the binary metrics are about, as the user writes it: `dataset.positive_class`, or by default the
    greater of the two labels in sort order, as scikit-learn takes it (1, true, 'yes' over 'no')."""
    return dataset.positive_class if dataset.positive_class is not None else sorted(dataset.target_classes)[-1]


def positive_class(dataset: Dataset, model_classes: Sequence[Any]) -> Any:
    """`positive_label` in the form the model was trained on, which must be one of `model_classes`."""
    trained = list(model_classes)
    wanted = for_training(pd.Series([positive_label(dataset)]), dataset)[0]
    if wanted not in trained:
        raise ValueError(
            f"the positive class {positive_label(dataset)!r} is not among the classes the model learned "
            f"{labels_of(trained, dataset)}"
        )
    return wanted
