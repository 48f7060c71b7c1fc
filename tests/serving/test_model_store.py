"""Saving models into the BentoML model store the way the deploy task does (`deployment.save_to_model_store`)."""

from __future__ import annotations

import uuid
from pathlib import Path

import bentoml
import pytest
from bentoml.exceptions import BentoMLException, NotFound

from include.mlops import deployment, release


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


def _as_a_killed_write_leaves_it(store: Path, name: str, version: str) -> None:
    """What a process killed inside a BentoML save leaves (seen in the fault matrix: a deploy_model killed during
    its Bento build): a version folder without its model.yaml or bento.yaml, and the name's `latest` emptied."""
    (store / name / version).mkdir(parents=True)
    (store / name / version / "half-copied").write_bytes(b"\0" * 64)
    (store / name / "latest").write_text("")


def test_a_save_killed_half_way_does_not_stop_the_next_save(own, stored_models):
    v1 = deployment.save_to_model_store(stored_models.onnx["1"], own, "1", {})
    _as_a_killed_write_leaves_it(stored_models.home / "models", own.name, "v2")
    with pytest.raises(BentoMLException, match="does not contain"):  # what BentoML does with it on its own
        bentoml.models.get(f"{own.name}:latest")

    v2 = deployment.save_to_model_store(stored_models.onnx["2"], own, "2", {})
    assert (
        bentoml.models.get(v2).info.labels[deployment.SHA256_LABEL]
        != bentoml.models.get(v1).info.labels[deployment.SHA256_LABEL]
    )
    assert sorted(str(m.tag) for m in bentoml.models.list(own.name)) == [v1, v2]
    assert str(bentoml.models.get(f"{own.name}:latest").tag) in (v1, v2)


def test_a_bento_build_killed_half_way_does_not_stop_the_next_build(own, stored_models):
    tag = deployment.save_to_model_store(stored_models.onnx["1"], own, "1", {})
    bentos = stored_models.home / "bentos"
    built = deployment.build_bento(tag, release.BENTOFILE, release.PROJECT_ROOT, {})
    name = built.partition(":")[0]
    _as_a_killed_write_leaves_it(bentos, name, "killed0000000000")
    with pytest.raises(BentoMLException, match="does not contain"):
        bentoml.bentos.get(name)

    again = deployment.build_bento(tag, release.BENTOFILE, release.PROJECT_ROOT, {})
    assert again != built and str(bentoml.bentos.get(again).tag) == again
    assert not (bentos / name / "killed0000000000").exists()
    assert str(bentoml.bentos.get(name).tag) == again  # `latest` names a whole Bento again
