"""The pipeline configuration: the shipped files load, every mistake is named by file and key, and a folder of
configs keeps the ones that load and stand on their own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from include.mlops.config import CONFIG_DIR, PROJECT_ROOT, ConfigError, load_config, load_folder


def test_every_shipped_config_loads():
    files = sorted(CONFIG_DIR.glob("*.yaml"))
    assert files
    for path in files:
        assert load_config(str(path)).dataset.features


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
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
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
        ("model.registered_name", "Fraud-Detector", r"model\.registered_name: 'Fraud-Detector' must be lowercase"),
        ("model.registered_name", "1st_model", r"model\.registered_name: .*starting with a letter"),
        ("gate.approval", "yes", r"gate\.approval: Input should be 'none' or 'required'"),
        ("gate.approval_timeout_hours", 0, r"gate\.approval_timeout_hours: Input should be greater than 0"),
        ("rollout.mode", "blue_green", r"rollout\.mode: Input should be 'direct', 'shadow' or 'canary'"),
        ("rollout.canary_share", 0, r"rollout\.canary_share: Input should be greater than 0"),
        ("rollout.canary_share", 1, r"rollout\.canary_share: Input should be less than 1"),
        ("rollout.canary_share", 1.5, r"rollout\.canary_share: Input should be less than 1"),
        ("rollout.min_hours", 100, r"rollout: max_hours \(72.0\) is below min_hours \(100.0\)"),
        ("rollout.criteria.min_agreement", 1.2, r"rollout\.criteria\.min_agreement: Input should be less than"),
        ("rollout.criteria.max_error_rat", 0.1, r"rollout\.criteria\.max_error_rat: Extra inputs are not permitted"),
        ("dataset.target_classes", ["a"], r"dataset: target_classes has one class \['a'\]"),
        ("dataset.target_classes", [], r"dataset: target_classes: list the labels a row may carry"),
        ("dataset.target_classes", [0, "yes"], r"dataset: target_classes mixes int and str labels"),
        ("dataset.target_classes", [True, 1], r"dataset: target_classes mixes bool and int labels"),
        ("dataset.target_classes", ["no", "no"], r"dataset: target_classes names a class more than once"),
        ("dataset.positive_class", 2, r"dataset: positive_class 2 is not one of target_classes \[0, 1\]"),
        # `true` is not the class 1: a boolean label is not an integer one.
        ("dataset.positive_class", True, r"dataset: positive_class True is not one of target_classes"),
        ("dataset.positive_class", [1], r"dataset\.positive_class"),
        ("dataset.features.1.max_categories", 5000, r"dataset\.features\.1\.max_categories: .*less than or equal"),
        ("dataset.features.0.max_categories", 10, r"features\.0: 'amount': max_categories applies to categorical"),
        ("dataset.features.1.max_categories", 10, r"'merchant_category': max_categories applies to .* without allowed"),
        (
            "dataset.features.1.allowed",
            [f"c{i}" for i in range(1001)],
            r"'merchant_category': allowed lists 1001 categories, at most 1000",
        ),
        ("dataset.features.1.allowed", ["a", "b", "a"], r"'merchant_category': allowed names \['a'\] more than once"),
        ("source.event_time_type", "local", r"source\.sql\.event_time_type: Input should be 'timestamp'"),
    ],
)
def test_mistakes_name_the_file_and_the_key(tmp_path: Path, path: str, value, message: str):
    config = _edit(path, value)
    config_file = tmp_path / "broken.yaml"
    config_file.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=message) as error:
        load_config(str(config_file))
    assert str(error.value).startswith(str(config_file))


@pytest.mark.parametrize(
    ("classes", "positive"),
    [(["bad", "good"], "bad"), ([False, True], False), ([0, 1], None), (["Fair", "Good", "Ideal"], None)],
)
def test_class_labels_of_every_kind_load_as_written(tmp_path: Path, classes: list, positive):
    config = _edit("dataset.target_classes", classes)
    config["dataset"]["positive_class"] = positive
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    dataset = load_config(str(path)).dataset
    assert dataset.target_classes == classes and [type(c) for c in dataset.target_classes] == [type(c) for c in classes]
    assert dataset.positive_class == positive and type(dataset.positive_class) is type(positive)


def _http_source(headers: dict) -> dict:
    config = _demo()
    config["source"] = {"kind": "http", "url": "https://api.example.test/rows", "headers": headers}
    return config


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-Api-Key": "abc123"}, r"source\.http: headers\.X-Api-Key: a credential must not be written"),
        ({"Authorization": "Bearer abc"}, r"headers\.Authorization: a credential must not be written"),
        ({"X-Api-Key": {"connection": "a", "env": "B"}}, r"headers\.X-Api-Key.*exactly one of connection"),
        ({"X-Api-Key": {}}, r"headers\.X-Api-Key.*exactly one of connection"),
        ({"X-Api-Key": {"connection": "a", "field": "schema"}}, r"field 'schema' must be password, login, host"),
        ({"X-Api-Key": {"env": "A", "field": "login"}}, r"field applies to a connection, not to env"),
    ],
)
def test_a_credential_in_an_http_header_must_come_from_a_connection_or_the_environment(
    tmp_path: Path, headers: dict, message: str
):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_http_source(headers)))
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))


def test_http_headers_from_a_connection_and_the_environment_load(tmp_path: Path):
    headers = {
        "Accept": "application/json",
        "X-Api-Key": {"connection": "holdout_api"},
        "Authorization": {"env": "HOLDOUT_TOKEN", "prefix": "Bearer "},
        "X-Tenant-Token": {"connection": "holdout_api", "field": "extra.tenant"},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_http_source(headers)))
    loaded = load_config(str(path)).source.headers
    assert loaded["Accept"] == "application/json"
    assert loaded["X-Api-Key"].connection == "holdout_api" and loaded["X-Api-Key"].field == "password"
    assert loaded["Authorization"].env == "HOLDOUT_TOKEN" and loaded["Authorization"].prefix == "Bearer "
    assert loaded["X-Tenant-Token"].field == "extra.tenant"


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


def _write(folder: Path, name: str, config: dict) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


def _second_model() -> dict:
    config = _demo()
    config["model"]["registered_name"] = "second_model"
    config["dataset"]["name"] = "second_dataset"
    return config


def test_a_folder_gives_one_config_per_file_in_name_order(tmp_path: Path):
    _write(tmp_path, "b.yaml", _second_model())
    _write(tmp_path, "a.yaml", _demo())
    (tmp_path / "notes.txt").write_text("not a config")
    folder = load_folder(tmp_path)
    assert [c.name for c in folder.configs] == ["fraud_detector", "second_model"]
    assert folder.errors == ()
    assert folder.by_name("second_model").path == str(tmp_path / "b.yaml")
    with pytest.raises(
        ConfigError, match=r"no config of model 'nope' \(the models are: fraud_detector, second_model\)"
    ):
        folder.by_name("nope")


def test_a_broken_file_is_left_out_and_named_and_the_others_load(tmp_path: Path):
    _write(tmp_path, "good.yaml", _demo())
    (tmp_path / "broken.yaml").write_text("dataset: [")
    _write(tmp_path, "wrong_key.yaml", {**_second_model(), "gate": {"min_improvement": -1}})
    folder = load_folder(tmp_path)
    assert [c.name for c in folder.configs] == ["fraud_detector"]
    messages = sorted(str(e) for e in folder.errors)
    assert messages[0].startswith(f"{tmp_path / 'broken.yaml'}: not valid YAML")
    assert messages[1].startswith(f"{tmp_path / 'wrong_key.yaml'}: gate.min_improvement: Input should be greater")


@pytest.mark.parametrize(
    ("key", "value"), [("model.registered_name", "fraud_detector"), ("dataset.name", "transactions")]
)
def test_two_files_that_would_collide_are_both_refused_naming_each_other(tmp_path: Path, key: str, value: str):
    other = _second_model()
    section, field = key.split(".")
    other[section][field] = value
    first, second = _write(tmp_path, "first.yaml", _demo()), _write(tmp_path, "second.yaml", other)
    third = _demo()
    third["model"]["registered_name"], third["dataset"]["name"] = "third_model", "third_dataset"
    _write(tmp_path, "third.yaml", third)
    folder = load_folder(tmp_path)
    assert [c.name for c in folder.configs] == ["third_model"]
    errors = {str(e).split(": ")[0]: str(e) for e in folder.errors}
    assert set(errors) == {str(first), str(second)}
    assert f"{key}: {value!r} is also the {key} of {second}" in errors[str(first)]
    assert f"{key}: {value!r} is also the {key} of {first}" in errors[str(second)]


def test_a_missing_or_empty_folder(tmp_path: Path):
    with pytest.raises(ConfigError, match="the config folder does not exist"):
        load_folder(tmp_path / "nowhere")
    assert load_folder(tmp_path).configs == ()


def test_a_relative_file_source_path_is_the_project_roots(tmp_path: Path):
    config = _demo()
    config["source"] = {"kind": "files", "path": "data/drops", "format": "csv"}
    assert load_config(_write(tmp_path, "files.yaml", config)).source.path == str(PROJECT_ROOT / "data" / "drops")
    config["source"]["path"] = "s3://bucket/drops"
    assert load_config(_write(tmp_path, "s3.yaml", config)).source.path == "s3://bucket/drops"


def test_a_batch_section_that_is_not_valid_is_refused_naming_the_key(tmp_path):
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    for batch, named in [
        ({"on_invalid": "skip"}, "batch.on_invalid: Input should be 'quarantine' or 'fail'"),
        ({"chunk_rows": 0}, "batch.chunk_rows: Input should be greater than 0"),
        ({"source": {"kind": "ftp", "path": "x"}}, "batch.source"),
        ({"input": "s3://bucket/drops/"}, "batch.input: 's3://bucket/drops/' is not a lakefs:// URI"),
        ({"input": "lakefs://mlops"}, "batch.input: 'lakefs://mlops' needs a repository and a ref"),
    ]:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({**raw, "batch": batch}))
        with pytest.raises(ConfigError, match=re.escape(named)):
            load_config(path)


def test_a_batch_input_is_a_lakefs_path(tmp_path):
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**raw, "batch": {"input": "lakefs://partners/v3/scores/2026-12/"}}))
    assert load_config(path).batch.input == "lakefs://partners/v3/scores/2026-12/"


def test_without_a_batch_section_there_is_no_batch_scoring():
    raw = yaml.safe_load((CONFIG_DIR / "breast_cancer.yaml").read_text())
    assert "batch" not in raw and load_config("breast_cancer.yaml").batch is None
    assert load_config("fraud_demo.yaml").batch.schedule == "0 3 * * *"


def test_a_notify_section_loads_and_its_mistakes_are_named(tmp_path):
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    notify = [
        {"kind": "email", "connection_id": "smtp_ops", "to": ["ops@example.org"], "events": ["run_failed"]},
        {"kind": "webhook", "connection_id": "chat", "events": ["promoted", "gate_rejected"]},
    ]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**raw, "notify": notify}))
    email, webhook = load_config(path).notify
    assert (email.kind, email.to, email.events) == ("email", ["ops@example.org"], ["run_failed"])
    assert (webhook.connection_id, webhook.events) == ("chat", ["promoted", "gate_rejected"])
    assert load_config("fraud_demo.yaml").notify == []
    for destination, named in [
        (
            {**notify[1], "events": ["promoted", "drift_detected"]},
            "notify.0.webhook.events: unknown event 'drift_detected'",
        ),
        ({**notify[1], "events": []}, "notify.0.webhook.events: List should have at least 1 item"),
        ({**notify[0], "to": []}, "notify.0.email.to: List should have at least 1 item"),
        ({"kind": "pager", "events": ["promoted"]}, "notify.0: Input tag 'pager' found using 'kind' does not match"),
        ({"kind": "webhook", "events": ["promoted"]}, "notify.0.webhook.connection_id: Field required"),
    ]:
        path.write_text(yaml.safe_dump({**raw, "notify": [destination]}))
        with pytest.raises(ConfigError, match=re.escape(named)):
            load_config(path)
