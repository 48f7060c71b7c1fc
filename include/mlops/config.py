"""The pipeline configuration: one YAML file per model in a config folder (include/config/ by default).

Every file of the folder is one model: its own DAGs, MLflow model, lakeFS paths, service route, inference log
rows and drift history. A new tabular dataset needs a new file, not code. A file is checked when it
is loaded, and every error names the file and the key. The config is passed to the functions of this library;
none of them reads a config on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from include.mlops.naming import parse_lakefs_uri

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The shipped configs; a deployment may keep its own elsewhere (plugins' `pipelines`, the service's settings).
CONFIG_DIR = PROJECT_ROOT / "include" / "config"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A model's name becomes DAG ids, a URL path segment and a BentoML tag (which BentoML lowercases): kept to
# what all of them take unchanged.
_MODEL_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# The most categories one categorical feature may have (`allowed`, or learned with `max_categories`): each is a
# column of the one-hot encoding the model and its ONNX form carry.
MAX_CATEGORIES = 1000
# A class label as YAML gives it: strict, so that `true` stays a boolean and `1` an integer.
ClassLabel = (
    Annotated[bool, Field(strict=True)] | Annotated[int, Field(strict=True)] | Annotated[str, Field(strict=True)]
)


# How a SQL source's event-time column is stored (SqlSource.event_time_type).
EventTimeType = Literal["timestamp", "text", "epoch_seconds", "epoch_milliseconds"]


class ConfigError(ValueError):
    """The configuration file is missing, unreadable, or a key in it is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Strict):
    """One input column of the model, with the checks every collected batch must pass."""

    name: str
    type: Literal["numeric", "categorical", "boolean"]
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    # Categorical: the categories a row may carry (others are quarantined). Without it the set is open: any
    # value is accepted, the model learns the `max_categories` most frequent of its training data, and the rest
    # count as one "other".
    allowed: list[str] | None = None
    max_categories: int = Field(default=100, ge=1, le=MAX_CATEGORIES)
    description: str = ""

    @model_validator(mode="after")
    def _constraints_fit_the_type(self) -> Feature:
        if self.type != "numeric" and (self.min is not None or self.max is not None):
            raise ValueError(f"min/max apply to numeric features, and {self.name!r} is {self.type}")
        if self.type != "categorical" and self.allowed is not None:
            raise ValueError(f"allowed applies to categorical features, and {self.name!r} is {self.type}")
        if "max_categories" in self.model_fields_set and (self.type != "categorical" or self.allowed is not None):
            raise ValueError(
                f"{self.name!r}: max_categories applies to categorical features without allowed (an open set)"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{self.name!r}: min {self.min} is above max {self.max}")
        if self.allowed is not None and not self.allowed:
            raise ValueError(f"{self.name!r}: allowed is empty")
        if self.allowed is not None and len(self.allowed) > MAX_CATEGORIES:
            raise ValueError(
                f"{self.name!r}: allowed lists {len(self.allowed)} categories, at most {MAX_CATEGORIES} (each is a "
                "column of the model's input): leave allowed out to keep the most frequent (max_categories), or "
                "make it a numeric feature"
            )
        if self.allowed is not None and len(set(self.allowed)) < len(self.allowed):
            twice = sorted({a for a in self.allowed if self.allowed.count(a) > 1})
            raise ValueError(f"{self.name!r}: allowed names {twice} more than once")
        return self


class Dataset(_Strict):
    name: str
    id_column: str
    event_time_column: str
    target: str
    task: Literal["classification", "regression"]
    # Labels that arrive after the transaction leave the target empty until then; such rows are collected and
    # kept on `main`, and left out of training.
    target_nullable: bool = True
    # Classification: the labels a row may carry (others are quarantined), all of one kind: integers, text or
    # booleans, as the data holds them. The model service answers with them.
    target_classes: list[ClassLabel] = Field(default_factory=list)
    # Binary classification: the class that average precision, F1, precision, recall and ROC AUC are about.
    # Default: the greater of the two labels in sort order, as scikit-learn takes it (1, true, 'yes' over 'no').
    positive_class: ClassLabel | None = None
    features: list[Feature] = Field(min_length=1)
    # Columns the source holds that are not for the model (free text, a row number, a second date): dropped at
    # validation. Any other column the config does not name rejects the batch, as a change of the source's shape.
    ignored_columns: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _a_plain_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} must be letters, digits and underscores (it becomes a lakeFS path)")
        return value

    @model_validator(mode="after")
    def _classes_only_for_classification(self) -> Dataset:
        if self.task == "classification" and not self.target_classes:
            raise ValueError(
                "target_classes: list the labels a row may carry, as the data holds them, e.g. [0, 1], [no, yes] "
                "or [false, true] (the model service answers with them; a row with another label is quarantined)"
            )
        if self.task != "classification":
            if self.target_classes:
                raise ValueError("target_classes applies to classification only")
            if self.positive_class is not None:
                raise ValueError("positive_class applies to classification only")
        return self

    @model_validator(mode="after")
    def _classes_of_one_kind(self) -> Dataset:
        classes = self.target_classes
        kinds = sorted({type(c).__name__ for c in classes})
        if len(kinds) > 1:
            raise ValueError(f"target_classes mixes {' and '.join(kinds)} labels {classes}: write them all alike")
        if len(set(classes)) < len(classes):
            raise ValueError(f"target_classes names a class more than once: {classes}")
        if classes and len(classes) < 2:
            raise ValueError(f"target_classes has one class {classes}: a classifier needs two or more")
        positive = self.positive_class
        if positive is not None and classes:
            if not any(type(positive) is type(c) and positive == c for c in classes):
                raise ValueError(f"positive_class {positive!r} is not one of target_classes {classes}")
            if len(classes) != 2:
                raise ValueError(
                    f"positive_class applies to binary classification; target_classes has {len(classes)} classes "
                    "(multi-class metrics are macro averages over every class)"
                )
        return self

    @model_validator(mode="after")
    def _columns_are_distinct(self) -> Dataset:
        names = [self.id_column, self.event_time_column, self.target, *(f.name for f in self.features)]
        names += self.ignored_columns
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"columns named more than once (id, event time, target, features, ignored_columns): {duplicates}"
            )
        return self

    @property
    def columns(self) -> list[str]:
        """Every column a collected batch must have, in this order."""
        return [self.id_column, self.event_time_column, *(f.name for f in self.features), self.target]

    def feature(self, name: str) -> Feature:
        return next(f for f in self.features if f.name == name)


class SqlSource(_Strict):
    """Rows from a SQL query, windowed by the run's interval through the bind parameters :start and :end."""

    kind: Literal["sql"]
    connection_id: str | None = None
    url: str | None = None
    query: str
    # How the query's event-time column is stored, so that :start and :end compare with it as times: a
    # `timestamp` type (bound as UTC datetimes), ISO 8601 `text` (any of 2026-11-14, 2026-11-14 00:00:00,
    # ...T00:00:00.000Z: bound as the shortest text that orders right), or `epoch_seconds` /
    # `epoch_milliseconds` numbers. Default: `text` on SQLite (it has no timestamp type), `timestamp` elsewhere.
    event_time_type: EventTimeType | None = None

    @model_validator(mode="after")
    def _one_database_and_a_windowed_query(self) -> SqlSource:
        if (self.connection_id is None) == (self.url is None):
            raise ValueError("give exactly one of connection_id (an Airflow connection) or url (SQLAlchemy)")
        missing = [p for p in (":start", ":end") if not re.search(re.escape(p) + r"\b", self.query)]
        if missing:
            raise ValueError(f"the query must filter on the run's interval with {' and '.join(missing)}")
        return self


class HttpPagination(_Strict):
    """How to ask for the next page: by page number, by offset, by a cursor in the body, or not at all."""

    style: Literal["none", "page", "offset", "cursor"] = "none"
    page_param: str = "page"
    first_page: int = 1
    offset_param: str = "offset"
    size_param: str = "limit"
    page_size: int = Field(default=1000, gt=0)
    cursor_param: str = "cursor"
    cursor_path: str = "next_cursor"
    max_pages: int = Field(default=10_000, gt=0)


class Secret(_Strict):
    """A value kept out of the config: a field of an Airflow connection, or an environment variable; `prefix`
    goes before it (`"Bearer "`)."""

    connection: str | None = None
    # password, login, host, or extra.<key> (a key of the connection's extra JSON)
    field: str = "password"
    env: str | None = None
    prefix: str = ""

    @model_validator(mode="after")
    def _one_place(self) -> Secret:
        if (self.connection is None) == (self.env is None):
            raise ValueError("give exactly one of connection (an Airflow connection id) or env (a variable name)")
        if self.env is not None and "field" in self.model_fields_set:
            raise ValueError("field applies to a connection, not to env")
        if not re.fullmatch(r"password|login|host|extra\.[^.]+", self.field):
            raise ValueError(f"field {self.field!r} must be password, login, host or extra.<key>")
        return self


# Header names whose value is a credential: written into the config, it would end up in the repository.
_SECRET_HEADER = re.compile(r"authorization|key|token|secret|password|cookie", re.IGNORECASE)


def is_credential_header(name: str) -> bool:
    """Whether an HTTP header of this name carries a credential, whose value must be a `Secret` in a config."""
    return _SECRET_HEADER.search(name) is not None


class HttpSource(_Strict):
    """Rows from an HTTP API answering JSON or CSV, asked for the interval with `start_param`/`end_param`.

    A header's value is text, or a `Secret` (`{connection: my_api}`, `{env: MY_API_TOKEN, prefix: "Bearer "}`);
    a credential-like header (Authorization, *key*, *token*, ...) must be a Secret."""

    kind: Literal["http"]
    url: str
    format: Literal["json", "csv"] = "json"
    records_path: str = ""
    start_param: str = "start"
    end_param: str = "end"
    headers: dict[str, str | Secret] = Field(default_factory=dict)
    connection_id: str | None = None
    pagination: HttpPagination = Field(default_factory=HttpPagination)
    timeout_seconds: float = Field(default=30, gt=0)
    max_retries: int = Field(default=4, ge=0)
    backoff_seconds: float = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _no_credential_in_the_file(self) -> HttpSource:
        for name, value in self.headers.items():
            if isinstance(value, str) and is_credential_header(name):
                raise ValueError(
                    f"headers.{name}: a credential must not be written into the config; use "
                    f"{{connection: <Airflow connection id>}} (its password) or {{env: <VARIABLE>}}"
                )
        return self


class FileSource(_Strict):
    """CSV or Parquet files under a local folder or an S3 prefix; rows outside the interval are left out.

    A relative local `path` is relative to the project's root (the folder holding dags/ and include/), so that
    a config means the same folder to every process that reads it, whatever its working directory.
    """

    kind: Literal["files"]
    path: str
    format: Literal["csv", "parquet"]
    pattern: str = "**/*"
    s3_endpoint_url: str | None = None
    connection_id: str | None = None

    @field_validator("path")
    @classmethod
    def _from_the_project_root(cls, value: str) -> str:
        if value.startswith("s3://") or Path(value).is_absolute():
            return value
        return str(PROJECT_ROOT / value)


Source = Annotated[SqlSource | HttpSource | FileSource, Field(discriminator="kind")]


class Collection(_Strict):
    # Collect the interval that ended `lag_days` before the run's, so that late labels have arrived.
    lag_days: int = Field(default=0, ge=0)


class Validation(_Strict):
    """What a collected batch must pass before it may reach `main`."""

    # An empty batch fails the run, or is recorded and skipped (nothing reaches main).
    empty_batch: Literal["fail", "skip"] = "fail"
    # Rows failing a row-level check (range, category, null, duplicate id, time outside the interval) are moved
    # to quarantine while their share stays at or below this; above it the whole batch fails.
    max_invalid_row_fraction: float = Field(default=0.0, ge=0, le=1)
    # Rows kept in the quarantine report as examples, per failed check.
    sample_rows: int = Field(default=5, ge=0)


class Training(_Strict):
    window_days: int = Field(default=30, gt=0)


class Split(_Strict):
    """Deterministic train/valid/test splits: by event time (latest rows last) or by a hash of the id."""

    method: Literal["time", "hash"] = "hash"
    valid_fraction: float = Field(default=0.15, gt=0, lt=1)
    test_fraction: float = Field(default=0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _leaves_rows_to_train_on(self) -> Split:
        if self.valid_fraction + self.test_fraction >= 0.9:
            raise ValueError("valid_fraction + test_fraction must leave at least 10 % of rows for training")
        return self


# Estimators that convert to ONNX (skl2onnx; LightGBM and XGBoost through onnxmltools' converters), by the name a
# config uses, for each task.
ESTIMATORS = {
    "classification": {
        "LogisticRegression": "sklearn.linear_model.LogisticRegression",
        "RandomForest": "sklearn.ensemble.RandomForestClassifier",
        "ExtraTrees": "sklearn.ensemble.ExtraTreesClassifier",
        "GradientBoosting": "sklearn.ensemble.GradientBoostingClassifier",
        "LightGBM": "lightgbm.LGBMClassifier",
        "XGBoost": "include.mlops.boosting.XGBoostClassifier",
    },
    "regression": {
        "Ridge": "sklearn.linear_model.Ridge",
        "RandomForest": "sklearn.ensemble.RandomForestRegressor",
        "ExtraTrees": "sklearn.ensemble.ExtraTreesRegressor",
        "GradientBoosting": "sklearn.ensemble.GradientBoostingRegressor",
        "LightGBM": "lightgbm.LGBMRegressor",
        "XGBoost": "xgboost.XGBRegressor",
    },
}
REFUSED_ESTIMATORS = {
    "HistGradientBoosting": "the pinned skl2onnx cannot convert HistGradientBoosting models to ONNX "
    "(Expected an int, got a boolean); use GradientBoosting",
}
# Primary metrics, and whether higher is better.
METRICS = {
    "classification": {"average_precision": True, "roc_auc": True, "f1": True, "log_loss": False},
    "regression": {"rmse": False, "mae": False, "r2": True},
}
MAX_GRID = 12


class Candidate(_Strict):
    """One estimator to try, with fixed `params` and/or a small `grid` of values to try each of."""

    name: str
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _a_plain_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} must be letters, digits and underscores")
        return value

    @field_validator("estimator")
    @classmethod
    def _known(cls, value: str) -> str:
        if value in REFUSED_ESTIMATORS:
            raise ValueError(f"{value} is refused: {REFUSED_ESTIMATORS[value]}")
        known = sorted({name for names in ESTIMATORS.values() for name in names})
        if value not in known:
            raise ValueError(f"{value!r} is not one of the estimators that convert to ONNX: {known}")
        return value

    @model_validator(mode="after")
    def _small_grid(self) -> Candidate:
        combinations = 1
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid value list for {key!r} is empty")
            if key in self.params:
                raise ValueError(f"{key!r} is in both params and grid")
            combinations *= len(values)
        if combinations > MAX_GRID:
            raise ValueError(f"the grid has {combinations} combinations; at most {MAX_GRID} are trained")
        return self


class Model(_Strict):
    registered_name: str
    candidates: list[Candidate] = Field(min_length=1)
    primary_metric: str
    # `balanced` weighs each class by the inverse of its frequency (fraud is ~2 % of rows).
    class_weight: Literal["none", "balanced"] = "none"
    random_seed: int = 42
    intended_use: str = Field(
        default="",
        description="What the model is for and what it must not be used for, in a few sentences: the model card of "
        "every version registered from this config says it (`not stated` when empty).",
    )
    owner: str = Field(
        default="",
        description="Who answers for the model (a team, a person, an address): named on every version's model card "
        "(`not stated` when empty).",
    )
    min_slice_rows: int = Field(
        default=30,
        ge=1,
        description="The model card's per-slice metrics (test rows with one value of a categorical feature): a slice "
        "with fewer rows is shown as too few rows, not as a metric that would mean little.",
    )

    @field_validator("registered_name")
    @classmethod
    def _a_model_name(cls, value: str) -> str:
        if not _MODEL_NAME.match(value):
            raise ValueError(
                f"{value!r} must be lowercase letters, digits and underscores, starting with a letter (it names "
                "the model's DAGs, its route on the model service and its BentoML models)"
            )
        return value

    @model_validator(mode="after")
    def _distinct_names(self) -> Model:
        names = [c.name for c in self.candidates]
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"candidate names used more than once: {duplicates}")
        return self


class Gate(_Strict):
    """When a challenger may replace the champion: better on the same test split by `min_improvement` (in the
    primary metric's units, whichever way is better), and no worse than each floor."""

    min_improvement: float = Field(default=0.0, ge=0)
    floors: dict[str, float] = Field(default_factory=dict)
    # `required`: a challenger that passed waits for a person to approve it (Airflow's Required Actions) before
    # it is deployed; no answer within the timeout rejects it.
    approval: Literal["none", "required"] = "none"
    approval_timeout_hours: float = Field(default=24, gt=0)


class Drift(_Strict):
    """When live traffic says the champion should be retrained (drift_monitor)."""

    # A verdict needs this many logged predictions in the window; fewer gives no verdict.
    min_rows: int = Field(default=500, gt=0)
    window_hours: int = Field(default=1, gt=0)
    # Share of features drifted (Evidently's dataset drift share) at which retraining is asked for.
    threshold: float = Field(default=0.3, gt=0, le=1)
    # Drop of the primary metric on labelled live rows against the champion's test score (in its units).
    max_performance_drop: float = Field(default=0.05, gt=0)
    # Drop of the primary metric as estimated without labels (the champion's calibrator on the window's
    # probabilities) against the champion's test score, at which retraining is asked for; empty: the estimate is
    # recorded but asks for nothing. It cannot see concept drift (docs/pipelines.md).
    max_estimated_drop: float | None = Field(default=None, gt=0)
    # After a drift-triggered training run, none again for this long.
    cooldown_hours: float = Field(default=24, ge=0)
    # Rows of the champion's training data kept as the reference, so a check never rescans the snapshot.
    reference_rows: int = Field(default=5000, gt=0)
    # Labels are looked up in the source for events of this many hours before the window's end (labels arrive
    # late); the live score needs this many labelled rows.
    label_lookback_hours: int = Field(default=72, gt=0)
    min_labelled_rows: int = Field(default=200, gt=0)
    # Days a drift-triggered run collects, ending at the collection lag; empty means the whole training window,
    # so that the new model learns from every day since the world changed, not only the nightly run's one day.
    retrain_history_days: int | None = Field(default=None, gt=0)


class RolloutCriteria(_Strict):
    """What a challenger must show on live traffic, beside the champion on the same rows, to be promoted."""

    # Share of rows where both give the same class (classification) or values within `value_tolerance` of each
    # other, relative to the champion's (regression).
    min_agreement: float = Field(default=0.9, ge=0, le=1)
    value_tolerance: float = Field(default=0.1, gt=0)
    # Whether drift between the two models' predictions on the same rows (Evidently's verdict for the prediction
    # column, the test the drift monitor uses) rolls the challenger back; off, it is only reported (a retrained
    # model that is meant to answer differently, after drift).
    rollback_on_prediction_drift: bool = True
    # Share of the challenger's scorings that raised (the client got the champion's answer instead).
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    # The challenger's p99 model time over the champion's on the same traffic.
    max_latency_ratio: float = Field(default=2.0, gt=0)
    # Once `drift.min_labelled_rows` rows have labels: the challenger's live primary metric may fall this far
    # below the champion's on the same rows (in the metric's units, whichever way is better).
    max_live_metric_drop: float = Field(default=0.0, ge=0)


class Rollout(_Strict):
    """How a challenger that passed the gate goes live. `direct`: it replaces the champion at once. `shadow`: it
    scores every request beside the champion, off the request path, and only the champion answers. `canary`: it
    answers `canary_share` of the requests (sticky by the `X-Rollout-Key` header when a client sends one).
    In both, model_rollout__<model> compares the two on the same live rows every `check_every_minutes` and
    promotes the challenger or rolls it back."""

    mode: Literal["direct", "shadow", "canary"] = "direct"
    canary_share: float = Field(default=0.1, gt=0, lt=1)
    # A verdict needs this many rows scored by both models and this long; none by `max_hours` rolls back.
    min_rows: int = Field(default=500, gt=0)
    min_hours: float = Field(default=1.0, ge=0)
    max_hours: float = Field(default=72.0, gt=0)
    check_every_minutes: int = Field(default=60, gt=0, le=1440)
    criteria: RolloutCriteria = Field(default_factory=RolloutCriteria)

    @model_validator(mode="after")
    def _can_end(self) -> Rollout:
        if self.max_hours < self.min_hours:
            raise ValueError(f"max_hours ({self.max_hours}) is below min_hours ({self.min_hours})")
        return self


class Branches(_Strict):
    # Run branches of rejected models are evidence for this long; lakefs_housekeeping deletes them after.
    retention_days: int = Field(default=14, ge=0)


# A SQL table name, optionally with its schema: kept to what every database and reader takes unquoted.
_TABLE = re.compile(r"^(?:[a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*$")


class SqlOutput(_Strict):
    """A SQL table the predictions are copied into after each merge, one row per prediction."""

    kind: Literal["sql"] = Field(description="`sql`: a table of a database an Airflow connection names.")
    connection_id: str = Field(
        description="The Airflow connection of the database (`postgres`, `sqlite`, or any type whose hook gives a "
        "SQLAlchemy URL); the credentials stay in the connection."
    )
    table: str | None = Field(
        default=None,
        description="The table (`name` or `schema.name`), made on the first write if it does not exist; default "
        "`batch_predictions_<model>`. Its columns are the Parquet parts' and `output_key`, the run's interval "
        "or content key, by which a re-run replaces its rows.",
    )

    @field_validator("table")
    @classmethod
    def _a_plain_table_name(cls, value: str | None) -> str | None:
        if value is not None and not _TABLE.match(value):
            raise ValueError(
                f"{value!r}: a table name is lowercase letters, digits and underscores, as `name` or `schema.name`"
            )
        return value


class S3Output(_Strict):
    """An S3 prefix the Parquet parts are copied to after each merge, as lakeFS holds them."""

    kind: Literal["s3"] = Field(description="`s3`: a prefix in an S3-compatible object store.")
    url: str = Field(
        description="`s3://<bucket>/<prefix>/`: the parts go to `<prefix>/<model>/<key>/part-<chunk>.parquet`. "
        "Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, the pod's "
        "role), as for the model store."
    )
    endpoint_url: str | None = Field(
        default=None,
        description="An S3-compatible server (MinIO) to write to; default: the model store's "
        "(`MLOPS_MODEL_STORE_ENDPOINT_URL`), else boto3's choice (`AWS_ENDPOINT_URL`, or AWS).",
    )

    @field_validator("url")
    @classmethod
    def _an_s3_url(cls, value: str) -> str:
        scheme, _, rest = value.partition("://")
        if scheme != "s3" or not rest.partition("/")[0]:
            raise ValueError(f"{value!r}: expected s3://<bucket>/<prefix>/")
        return value


Output = Annotated[SqlOutput | S3Output, Field(discriminator="kind")]


class BatchScoring(_Strict):
    """How `batch_scoring__<model>` scores datasets with the champion (the DAG exists only with this section)."""

    schedule: str | None = Field(
        default=None,
        description="A cron expression (or an Airflow preset such as `@daily`) for scheduled runs; none: runs "
        "only when started by hand.",
    )
    window_hours: int = Field(
        default=24,
        gt=0,
        description="The rows a run scores: those whose event time is in the `window_hours` before the run's "
        "logical date, read from `source` as collection reads it.",
    )
    arrivals: bool = Field(
        default=False,
        description="Also run when a file arrives: a message on the Redis channel `mlops.batch-arrivals.<model>` "
        "naming a Parquet or CSV file (`python -m include.mlops.publish_batch`), through Airflow's connection "
        "`redis_default`. The run scores that file, not a window.",
    )
    source: Source | None = Field(
        default=None,
        description="Where the rows to score come from (any source kind); default: the config's `source`. Its "
        "rows need the id column and the features; a target column is ignored.",
    )
    input: str | None = Field(
        default=None,
        description="Score a lakeFS path instead of a window: `lakefs://<repository>/<ref>/<prefix>`, every "
        "Parquet or CSV object under the prefix at the commit the ref (a branch, tag or commit id) points to when "
        "the run starts; any other object fails the run, naming it. The commit is recorded in the predictions' "
        "lineage, and the output key comes from (commit, prefix): the same commit and prefix scored twice write "
        "one result. A run started by hand may give another in its param `input`; an arrival is scored instead.",
    )
    chunk_rows: int = Field(
        default=250_000,
        gt=0,
        description="Rows per chunk at most: each chunk is scored by a task of its own, whose memory it bounds "
        "(250,000 rows of 8 columns: about 210 MiB).",
    )
    check_rows: int = Field(
        default=50_000,
        gt=0,
        description="The drift check of a batch judges at most this many of its scored rows, drawn at random (the "
        "same ones for the same batch), so that its memory and time stay bounded whatever the batch's size.",
    )
    on_invalid: Literal["quarantine", "fail"] = Field(
        default="quarantine",
        description="Rows that do not fit the model's schema go to quarantine with a report; then the chunk's "
        "other rows are scored (`quarantine`), or the run fails naming the rows' checks (`fail`).",
    )
    outputs: list[Output] = Field(
        default_factory=list,
        description="Where else the predictions go, once merged into lakeFS (which stays the record): SQL tables "
        "(`kind: sql`) and S3 prefixes (`kind: s3`), written by the task `write_outputs`. A re-run of an interval "
        "or file replaces its rows and parts there too.",
    )

    @field_validator("input")
    @classmethod
    def _lakefs_uri(cls, value: str | None) -> str | None:
        if value is not None:
            parse_lakefs_uri(value)
        return value


# What a destination may be told of (docs/pipelines.md says which task tells each).
EVENTS = (
    "retraining_requested",
    "gate_rejected",
    "approval_waiting",
    "promoted",
    "rollout_verdict",
    "rolled_back",
    "run_failed",
)


class _Destination(_Strict):
    events: list[str] = Field(
        min_length=1,
        description="The events this destination is told of, from: " + ", ".join(f"`{e}`" for e in EVENTS) + ".",
    )

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        if unknown := [name for name in value if name not in EVENTS]:
            raise ValueError(f"unknown event {', '.join(map(repr, unknown))}; the events are: {', '.join(EVENTS)}")
        return value


class EmailDestination(_Destination):
    """Mail over SMTP, sent through Airflow's SMTP provider."""

    kind: Literal["email"] = Field(description="`email`: mail through an SMTP server.")
    connection_id: str = Field(
        default="smtp_default",
        description="The Airflow SMTP connection (host, port, login, password, `from_email` in its extra); the "
        "credentials stay in the connection.",
    )
    to: list[str] = Field(min_length=1, description="The recipients' addresses.")


class WebhookDestination(_Destination):
    """An HTTP POST of Slack-compatible JSON (`{"text": ..., "blocks": [...]}`): Slack, Mattermost, Rocket.Chat,
    or any receiver of incoming webhooks."""

    kind: Literal["webhook"] = Field(description="`webhook`: a POST of Slack-compatible JSON.")
    connection_id: str = Field(
        description="The Airflow HTTP connection whose host is the webhook's URL (a Slack URL holds its secret in "
        "the path); a login and password, if set, are sent as basic auth."
    )


Destination = Annotated[EmailDestination | WebhookDestination, Field(discriminator="kind")]


class PipelineConfig(_Strict):
    dataset: Dataset
    source: Source
    collection: Collection = Field(default_factory=Collection)
    validation: Validation = Field(default_factory=Validation)
    training: Training = Field(default_factory=Training)
    split: Split = Field(default_factory=Split)
    model: Model
    gate: Gate = Field(default_factory=Gate)
    drift: Drift = Field(default_factory=Drift)
    rollout: Rollout = Field(default_factory=Rollout)
    branches: Branches = Field(default_factory=Branches)
    batch: BatchScoring | None = None
    notify: list[Destination] = Field(
        default_factory=list,
        description="Who is told what: destinations (`kind: email` or `kind: webhook`), each with the events it is "
        "told of. Each event reaches each destination once per DAG run, also when the task is retried.",
    )
    path: str = ""

    @model_validator(mode="after")
    def _model_fits_the_task(self) -> PipelineConfig:
        task = self.dataset.task
        metrics = METRICS[task]
        if self.model.primary_metric not in metrics:
            raise ValueError(f"model.primary_metric for {task} must be one of {sorted(metrics)}")
        if unknown := sorted(set(self.gate.floors) - set(metrics)):
            raise ValueError(f"gate.floors names metrics that {task} does not have: {unknown}")
        for candidate in self.model.candidates:
            if candidate.estimator not in ESTIMATORS[task]:
                raise ValueError(
                    f"model.candidates {candidate.name!r}: {candidate.estimator} is not a {task} estimator "
                    f"(one of {sorted(ESTIMATORS[task])})"
                )
        if task == "regression" and self.model.class_weight != "none":
            raise ValueError("model.class_weight applies to classification only")
        return self

    @property
    def name(self) -> str:
        """The model's name (`model.registered_name`): what its DAGs, route and store entries are called."""
        return self.model.registered_name


def load_config(path: str | Path) -> PipelineConfig:
    """The config in the file at `path` (a file name alone is looked for in include/config/ too)."""
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = CONFIG_DIR / path
    try:
        # libyaml's loader when PyYAML has it: ten times faster, and every DAG file parse reads every config.
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of sections (dataset, source, ...)")
    try:
        return PipelineConfig.model_validate({**raw, "path": str(path)})
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(_describe(error) for error in exc.errors())) from None


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-after"))
    message = error["msg"].removeprefix("Value error, ")
    return f"{location or '(top level)'}: {message}"


@dataclass(frozen=True)
class ConfigFolder:
    """The configs of one folder: those that load and stand on their own, and an error for each file that does
    not (it does not load, or it would share a model or a dataset with another file)."""

    folder: Path
    configs: tuple[PipelineConfig, ...]
    errors: tuple[ConfigError, ...]

    def by_name(self, name: str) -> PipelineConfig:
        for config in self.configs:
            if config.name == name:
                return config
        known = ", ".join(c.name for c in self.configs) or "none"
        raise ConfigError(f"{self.folder}: no config of model {name!r} (the models are: {known})")


# What two configs must not share: each would write into the other's MLflow model, DAGs and service route, or
# into its lakeFS paths (raw/<dataset>/, quarantine/<dataset>/).
_DISTINCT_KEYS = {
    "model.registered_name": lambda config: config.model.registered_name,
    "dataset.name": lambda config: config.dataset.name,
}


def load_folder(folder: str | Path) -> ConfigFolder:
    """Every `*.yaml` file of `folder`, in name order. Two files that name the same model or dataset are both
    refused, each with an error naming the other: which one was meant is not for this code to guess."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: the config folder does not exist")
    loaded: list[PipelineConfig] = []
    errors: list[ConfigError] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            loaded.append(load_config(path))
        except ConfigError as error:
            errors.append(error)
    clashing: dict[str, list[str]] = {}
    for key, value_of in _DISTINCT_KEYS.items():
        for config in loaded:
            others = [o.path for o in loaded if o is not config and value_of(o) == value_of(config)]
            if others:
                clashing.setdefault(config.path, []).append(
                    f"{key}: {value_of(config)!r} is also the {key} of {', '.join(others)}; every config needs its own"
                )
    errors += [ConfigError(f"{path}: " + "; ".join(problems)) for path, problems in clashing.items()]
    configs = tuple(c for c in loaded if c.path not in clashing)
    return ConfigFolder(folder, configs, tuple(errors))
