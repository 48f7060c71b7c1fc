"""The service's settings: read from the environment in one place, and a bad one stops the start naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from include.mlops.config import ConfigError
from include.serving.app import create_service
from include.serving.settings import Settings


def test_settings_are_read_from_the_environment(tmp_path):
    settings = Settings.from_env(
        {
            "BENTOML_HOME": str(tmp_path / "home"),
            "MLOPS_CONFIG_DIR": str(tmp_path),
            "MLOPS_MODEL_TAG": "fraud_detector:v3, other:v1,",
            "MLOPS_MAX_RECORDS": "50",
            "MLOPS_POINTER_CHECK_SECONDS": "0.5",
        }
    )
    assert settings.config_dir == tmp_path and settings.state_dir == tmp_path / "home" / "serving"
    assert settings.model_tags == ("fraud_detector:v3", "other:v1")
    assert (settings.max_records, settings.pointer_check_seconds, settings.workers) == (50, 0.5, 1)
    assert settings.inference_log_url is None and settings.admin_token is None


def test_a_config_folder_that_does_not_exist_fails_naming_it(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(ConfigError, match=f"MLOPS_CONFIG_DIR: {missing} is not a folder of pipeline configs"):
        Settings.from_env({"MLOPS_CONFIG_DIR": str(missing)})
    with pytest.raises(ConfigError, match="no-such-folder"):
        Settings(config_dir=missing, state_dir=tmp_path)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MLOPS_MAX_RECORDS", "many", "MLOPS_MAX_RECORDS: 'many' is not a whole number"),
        ("MLOPS_SERVING_WORKERS", "1.5", "MLOPS_SERVING_WORKERS: '1.5' is not a whole number"),
        ("MLOPS_DRIFT_METRICS_SECONDS", "soon", "MLOPS_DRIFT_METRICS_SECONDS: 'soon' is not a number"),
        ("MLOPS_POINTER_CHECK_SECONDS", "0", "MLOPS_POINTER_CHECK_SECONDS: must be above 0, got 0.0"),
        ("MLOPS_MAX_RECORDS", "-3", "MLOPS_MAX_RECORDS: must be above 0, got -3"),
    ],
)
def test_a_bad_number_fails_naming_the_setting(tmp_path, name, value, message):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"MLOPS_CONFIG_DIR": str(tmp_path), name: value})
    assert str(raised.value) == message


def test_a_folder_without_a_config_to_serve_fails_at_start_naming_it(tmp_path):
    (tmp_path / "broken.yaml").write_text("model: [not, a, config]\n")
    with pytest.raises(ConfigError, match=f"{tmp_path}: no pipeline config to serve"):
        create_service(Settings(config_dir=tmp_path, state_dir=Path(tmp_path / "state")))
