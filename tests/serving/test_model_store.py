"""Saving models into the BentoML model store the way the deploy task does (`deployment.save_to_model_store`)."""

from __future__ import annotations

import uuid

import bentoml
import pytest
from bentoml.exceptions import NotFound

from include.mlops import deployment


@pytest.fixture
def own(config):
    """The demo config under a registered name of this test's own, so that the store holds no version of it."""
    model = config.model.model_copy(update={"registered_name": f"m{uuid.uuid4().hex[:8]}"})
    return config.model_copy(update={"model": model})


def test_a_version_is_saved_under_its_own_tag_when_a_longer_one_starts_with_it(own, stored_models):
    """BentoML's store resolves `name:v1` to `name:v12` when v1 is missing and v12 is the only version starting
    with it: saving v1 must not take v12 for it (and refuse v1 as "a different model under its tag")."""
    v12 = deployment.save_to_model_store(stored_models.onnx["1"], own, "12", {})
    v1 = deployment.save_to_model_store(stored_models.onnx["2"], own, "1", {})
    assert (v12, v1) == (f"{own.name}:v12", f"{own.name}:v1")
    assert str(bentoml.models.get(v1).tag) == v1
    saved = bentoml.models.get(v1).info.labels[deployment.SHA256_LABEL]
    assert saved != bentoml.models.get(v12).info.labels[deployment.SHA256_LABEL]


def test_stored_model_is_the_tag_asked_for_never_a_longer_version_starting_with_it(own):
    v12 = deployment.save_to_model_store(b"any bytes", own, "12", {})
    assert str(deployment.stored_model(v12).tag) == v12
    assert str(deployment.stored_model(f"{own.name}:latest").tag) == v12
    with pytest.raises(
        NotFound, match=rf"^{own.name}:v1 is not in the BentoML model store \(BentoML would have given {v12}\)$"
    ):
        deployment.stored_model(f"{own.name}:v1")
    with pytest.raises(NotFound, match=rf"^{own.name}:v2 is not in the BentoML model store$"):
        deployment.stored_model(f"{own.name}:v2")


def test_the_same_model_again_is_a_no_op_and_another_under_its_tag_is_refused(own, stored_models):
    tag = deployment.save_to_model_store(stored_models.onnx["1"], own, "3", {})
    assert deployment.save_to_model_store(stored_models.onnx["1"], own, "3", {}) == tag
    with pytest.raises(deployment.DeploymentError, match=f"{tag} is in the BentoML model store already"):
        deployment.save_to_model_store(stored_models.onnx["2"], own, "3", {})
