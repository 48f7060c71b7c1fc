"""LightGBM and XGBoost as candidates: XGBoost's classifier made to take any class labels, and the onnxmltools
converters that let skl2onnx convert a pipeline ending in either.

LightGBM takes text labels as sklearn's classifiers do. XGBoost's `XGBClassifier` takes only the labels
0..n-1 (text or 3/5/9 fail with "Invalid classes inferred from unique values of y"), so `XGBoostClassifier`
encodes them before fitting and decodes its predictions.
"""

from __future__ import annotations

import functools

import numpy as np
from xgboost import XGBClassifier


class XGBoostClassifier(XGBClassifier):
    """`XGBClassifier` with any class labels (integers or text): `classes_` and `predict` give the labels that
    were fitted, in sorted order, which is the column order of `predict_proba`."""

    @property
    def classes_(self) -> np.ndarray:
        # XGBClassifier.fit checks the encoded labels against classes_ (0..n-1): the fitted labels may only
        # stand in once the fit is over. onnxmltools writes these labels into the ONNX model.
        labels = self.__dict__.get("class_labels_")
        return super().classes_ if labels is None else labels

    def fit(self, X, y, **kwargs) -> XGBoostClassifier:
        self.__dict__.pop("class_labels_", None)
        labels, codes = np.unique(np.asarray(y), return_inverse=True)
        super().fit(X, codes, **kwargs)
        self.class_labels_ = labels
        return self

    def predict(self, X, **kwargs) -> np.ndarray:
        return self.classes_[super().predict(X, **kwargs)]


@functools.cache
def register_onnx_converters() -> None:
    """Teach skl2onnx the LightGBM and XGBoost estimators, with onnxmltools' converters (once per process)."""
    from lightgbm import LGBMClassifier, LGBMRegressor
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from xgboost import XGBRegressor

    # Options skl2onnx is asked for must be declared, or it refuses them: zipmap (which packaging.to_onnx turns
    # off) and nocl (which skl2onnx's classifier shape calculator reads).
    classifier_options = {"zipmap": [True, False], "nocl": [True, False]}
    update_registered_converter(
        LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        convert_lightgbm,
        options=classifier_options,
    )
    update_registered_converter(
        LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes, convert_lightgbm
    )
    update_registered_converter(
        XGBoostClassifier,
        "XGBoostXGBClassifier",
        calculate_linear_classifier_output_shapes,
        convert_xgboost,
        options=classifier_options,
    )
    update_registered_converter(
        XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes, convert_xgboost
    )
