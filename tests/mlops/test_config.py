"""The pipeline configuration: the demo file loads, and every mistake is named by file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from include.mlops.config import CONFIG_DIR, ConfigError, config_path, load_config


def test_every_shipped_config_loads():
    files = sorted(CONFIG_DIR.glob("*.yaml"))
    assert files
    for path in files:
        assert load_config(str(path)).dataset.features


def test_the_demo_is_the_default_and_mlops_config_chooses(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("MLOPS_CONFIG", raising=False)
    assert config_path() == CONFIG_DIR / "fraud_demo.yaml"
    copy = tmp_path / "mine.yaml"
    copy.write_text((CONFIG_DIR / "fraud_demo.yaml").read_text())
    monkeypatch.setenv("MLOPS_CONFIG", str(copy))
    assert load_config().path == str(copy)
    monkeypatch.setenv("MLOPS_CONFIG", "fraud_demo.yaml")
    assert load_config().path == str(CONFIG_DIR / "fraud_demo.yaml")


def test_the_demo_schema():
    config = load_config("fraud_demo.yaml")
    dataset = config.dataset
    assert dataset.columns[:2] == ["transaction_id", "event_time"] and dataset.columns[-1] == "is_fraud"
    assert {f.type for f in dataset.features} == {"numeric", "categorical", "boolean"}
    assert config.source.kind == "sql" and config.model.registered_name == "fraud_detector"


def _demo() -> dict:
    return yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())


def _edit(path: str, value) -> dict:
    config = _demo()
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return config


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("dataset.name", "my data", r"dataset\.name: .*letters, digits and underscores"),
        ("dataset.task", "clustering", r"dataset\.task: Input should be 'classification' or 'regression'"),
        ("dataset.features.0.type", "text", r"dataset\.features\.0\.type"),
        (
            "dataset.features.1.min",
            3,
            r"dataset\.features\.1: min/max apply to numeric features, and 'merchant_category'",
        ),
        ("dataset.features.0.allowed", ["a"], r"dataset\.features\.0: allowed applies to categorical"),
        ("dataset.features.0.min", 10**6, r"dataset\.features\.0: 'amount': min 1000000.0 is above max"),
        ("dataset.features.0.colour", "red", r"dataset\.features\.0\.colour: Extra inputs are not permitted"),
        ("dataset.target", "amount", r"dataset: columns named more than once .*'amount'"),
        ("dataset.features", [], r"dataset\.features: List should have at least 1 item"),
        ("dataset.id_column", _DELETE, r"dataset\.id_column: Field required"),
        ("source.kind", "ftp", r"source: Input tag 'ftp' found using 'kind' does not match"),
        ("source.query", "SELECT * FROM transactions", r"source\.sql: the query must filter .* :start and :end"),
        ("source.url", "sqlite:///x.db", r"source\.sql: give exactly one of connection_id"),
        ("validation.max_invalid_row_fraction", 1.5, r"validation\.max_invalid_row_fraction: Input should be less"),
        ("validation.empty_batch", "ignore", r"validation\.empty_batch"),
        ("split.test_fraction", 0.8, r"split: valid_fraction \+ test_fraction must leave"),
        ("model", _DELETE, r"model: Field required"),
        ("dataset.target_classes", ["a"], None),
    ],
)
def test_mistakes_name_the_file_and_the_key(tmp_path: Path, path: str, value, message: str | None):
    config = _edit(path, value)
    if message is None:  # a valid change: text classes are fine
        config_file = tmp_path / "ok.yaml"
        config_file.write_text(yaml.safe_dump(config))
        assert load_config(str(config_file)).dataset.target_classes == ["a"]
        return
    config_file = tmp_path / "broken.yaml"
    config_file.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=message) as error:
        load_config(str(config_file))
    assert str(error.value).startswith(str(config_file))


def test_target_classes_only_for_classification(tmp_path: Path):
    config = _edit("dataset.task", "regression")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="target_classes applies to classification only"):
        load_config(str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot be read"), ("dataset: [", "not valid YAML"), ("- a\n- b\n", "must be a mapping")],
)
def test_unreadable_files(tmp_path: Path, content: str | None, message: str):
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))
