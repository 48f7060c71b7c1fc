"""Deployment with BentoML: the ONNX model in the BentoML model store with its lineage, the Bento, the rollout.

A model enters the store as `<registered model>:v<MLflow version>` holding `model.onnx`, with labels and
metadata that name where it comes from (MLflow model and run, lakeFS repository and commit). The running
service is told to switch to it over its authenticated admin API; it builds the new onnxruntime session
beside the old one and swaps them in one step, so no request fails during a rollout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from include.mlops.config import PipelineConfig

MODEL_FILE = "model.onnx"
SHA256_LABEL = "onnx_sha256"


class DeploymentError(RuntimeError):
    """A rollout did not complete; the message says what was put back."""


def model_store_tag(config: PipelineConfig, version: str) -> str:
    return f"{config.model.registered_name}:v{version}"


def save_to_model_store(onnx_bytes: bytes, config: PipelineConfig, version: str, lineage: Mapping[str, str]) -> str:
    """Put the ONNX model into the BentoML model store (BENTOML_HOME) as `<name>:v<version>`; returns the tag.

    Saving the same model again is a no-op; a different model under an existing tag is refused, since a tag
    names one model for good.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    tag = model_store_tag(config, version)
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    try:
        existing = bentoml.models.get(tag)
    except NotFound:
        existing = None
    if existing is not None:
        if existing.info.labels.get(SHA256_LABEL) == digest:
            return tag
        raise DeploymentError(f"{tag} is in the BentoML model store already with a different ONNX model")
    labels = {
        **{k: _label(v) for k, v in lineage.items()},
        SHA256_LABEL: digest,
        "task": config.dataset.task,
        "dataset": config.dataset.name,
    }
    metadata: dict[str, Any] = {
        **lineage,
        "inputs": [{"name": f.name, "type": f.type} for f in config.dataset.features],
        "task": config.dataset.task,
        "target": config.dataset.target,
    }
    with bentoml.models.create(tag, labels=labels, metadata=metadata) as model:
        with open(f"{model.path}/{MODEL_FILE}", "wb") as target:
            target.write(onnx_bytes)
    return tag


def _label(value: object) -> str:
    """BentoML labels are short strings; lineage values (ids, URIs) fit, anything else is made to."""
    return str(value)[:250]
