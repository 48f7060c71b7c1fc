"""A regression config: the service answers values, counts them as predicted_class="value" and logs them."""

from __future__ import annotations

import httpx
import numpy as np
import yaml

from include.mlops import packaging, training
from include.mlops.config import CONFIG_DIR, load_config
from tests.serving.conftest import logged_rows, offline_predictions, records_of, save_model, wait_for


def _regression_config(tmp_path):
    """The demo data with `amount` as the target of a regression."""
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    raw["dataset"].update(task="regression", target="amount", target_classes=[], target_nullable=False)
    # A dataset of its own, so that it can be served beside the demo (a shared name would refuse both).
    raw["dataset"]["name"] = "transaction_amounts"
    raw["dataset"]["features"] = [f for f in raw["dataset"]["features"] if f["name"] != "amount"]
    raw["model"] = {
        "registered_name": "amount_estimator",
        "primary_metric": "rmse",
        "candidates": [{"name": "gb", "estimator": "GradientBoosting", "params": {"n_estimators": 20}}],
    }
    raw["gate"] = {}
    path = tmp_path / "regression.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, load_config(str(path))


def test_a_regression_model_answers_values(start_service, stored_models, splits, tmp_path):
    path, config = _regression_config(tmp_path)
    # The regression model alone: its service keeps the short routes of a one-model deployment.
    spec = training.CandidateSpec("gb", "GradientBoosting", {"n_estimators": 20})
    onnx = packaging.to_onnx(training.fit(training.build_pipeline(config, spec), config, splits["train"]), config)
    save_model(config, "1", onnx)
    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    service = start_service(configs=(path,), MLOPS_MODEL_TAG="amount_estimator:v1", MLOPS_INFERENCE_LOG_URL=log_url)
    frame = splits["test"].iloc[:100]
    records = records_of(frame, config.dataset)

    answer = service.predict(records).json()
    (values,) = offline_predictions(onnx, frame, config.dataset)
    assert [p["value"] for p in answer["predictions"]] == values.reshape(-1).astype(np.float64).tolist()
    (batched,) = httpx.post(f"{service.url}/predict_batched", json={"records": records[:1]}).json()
    assert batched["value"] == answer["predictions"][0]["value"] and "label" not in batched

    labels = (("model", "amount_estimator"), ("model_version", "1"), ("predicted_class", "value"), ("role", "champion"))
    counted = service.metrics()[("mlops_predictions_total", labels)]
    assert counted == 101
    rows = wait_for(lambda: logged_rows(log_url, answer["request_id"]), what="logged rows")
    assert [row["value"] for row in rows] == [p["value"] for p in answer["predictions"]]
    assert {row["label"] for row in rows} == {None} and {row["probabilities"] for row in rows} == {None}
