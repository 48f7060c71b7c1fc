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

    name: str = Field(description="The column's name, as the source gives it.")
    type: Literal["numeric", "categorical", "boolean"] = Field(description="What the column holds.")
    nullable: bool = Field(
        default=False,
        description="Whether the column may be empty: a missing number is imputed with the training median and a "
        "missing category is a category of its own, inside the ONNX model. Not nullable: a row without a value is "
        "quarantined.",
    )
    min: float | None = Field(
        default=None, description="Numeric: the lowest value a row may carry (others are quarantined)."
    )
    max: float | None = Field(
        default=None, description="Numeric: the highest value a row may carry (others are quarantined)."
    )
    allowed: list[str] | None = Field(
        default=None,
        description="Categorical: the categories a row may carry, a closed set (others are quarantined); at most "
        f"{MAX_CATEGORIES}. Without it the set is open: any value is accepted, the model learns the "
        '`max_categories` most frequent of its training data, and the rest count as one "other".',
    )
    max_categories: int = Field(
        default=100,
        ge=1,
        le=MAX_CATEGORIES,
        description="Categorical without `allowed` (an open set): the model keeps this many of the most frequent "
        'values of its training rows; any other value, rare or never seen, counts as one "other", is served, and is '
        "counted in `mlops_unseen_categories_total`.",
    )
    description: str = Field(
        default="", description="What the column means; shown in the model service's request schema."
    )

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
    """The data: its columns, the one to predict, and the checks every collected batch must pass."""

    name: str = Field(
        description="The dataset's name: letters, digits and `_` (it is a lakeFS path, `raw/<name>/...`); one "
        "config per dataset."
    )
    id_column: str = Field(description="A unique id per row: duplicates are quarantined, and the hash split uses it.")
    event_time_column: str = Field(
        description="When the row happened; collection windows and checks use it. Stored as ISO 8601 text "
        "(`2026-11-14`, `2026-11-14 00:00:00`, `2026-11-14T00:00:00.123Z`, `...+01:00`), epoch seconds or "
        "milliseconds (numbers or digit text; below 10^11 seconds, else milliseconds), or native timestamps; a time "
        "without a zone is UTC. One form per column: values of another form (`14/11/2026`, epoch numbers among "
        "text) are quarantined (include/mlops/event_times.py)."
    )
    target: str = Field(description="The column to predict.")
    task: Literal["classification", "regression"] = Field(description="What the model predicts: a class or a number.")
    target_nullable: bool = Field(
        default=True,
        description="Labels arrive late: a row without one is collected and kept on `main`, and left out of "
        "training until its label arrives.",
    )
    target_classes: list[ClassLabel] = Field(
        default_factory=list,
        description="Classification (required): the labels a row may carry, as the data holds them, all of one "
        "kind: integers `[0, 1]`, text `[bad, good]` or booleans `[false, true]` (a row with another label is "
        'quarantined). The model service answers with them: `"label": "bad"`, `"probabilities": {"bad": 0.8, '
        '"good": 0.2}` (booleans as `true`/`false`; probabilities are keyed by the label as text).',
    )
    positive_class: ClassLabel | None = Field(
        default=None,
        description="Two classes: the one average precision, F1, precision, recall and ROC AUC are about, e.g. "
        "`bad` for credit risk. Default: the greater label in sort order, as scikit-learn takes it (`1`, `true`, "
        "`yes` over `no`): name it when that is not the class you act on. With more classes these metrics are "
        "macro averages (ROC AUC and average precision: each class against the rest).",
    )
    features: list[Feature] = Field(min_length=1, description="The model's inputs, one entry per column.")
    ignored_columns: list[str] = Field(
        default_factory=list,
        description="Columns the source holds that are not for the model (free text, a row number, a second date): "
        "dropped at validation. Any other column the config does not name rejects the batch, as a change of the "
        "source's shape.",
    )

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

    kind: Literal["sql"] = Field(description="`sql`: a query of a database.")
    connection_id: str | None = Field(
        default=None, description="The Airflow connection of the database; give it or `url`, not both."
    )
    url: str | None = Field(default=None, description="The database's SQLAlchemy URL; give it or `connection_id`.")
    query: str = Field(
        description="The query, filtering on the collected day with the bind parameters `:start` and `:end` "
        "(required); it may use `:as_of` (the end of the run's own interval, e.g. for labels known by then). Rows it "
        "returns outside the day are left out and counted in the collect task's log."
    )
    event_time_type: EventTimeType | None = Field(
        default=None,
        description="How the query's event-time column is stored, so that `:start` and `:end` compare with it as "
        "times: a `timestamp` type (bound as UTC datetimes), ISO 8601 `text` (any of `2026-11-14`, "
        "`2026-11-14 00:00:00`, `...T00:00:00.000Z`: bound as the shortest text that orders right), or "
        "`epoch_seconds` / `epoch_milliseconds` numbers. Default: `text` on SQLite (it has no timestamp type), "
        "`timestamp` elsewhere. Text cannot compare a non-UTC offset (`...T00:30:00+01:00`) near midnight: store "
        "UTC, or filter on `datetime(event_time)` (SQLite) or a `timestamptz` cast with `timestamp` (Postgres).",
    )

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

    style: Literal["none", "page", "offset", "cursor"] = Field(
        default="none",
        description="`page`: a page number; `offset`: a row offset; `cursor`: the cursor the previous page's body "
        "gave; `none`: one request.",
    )
    page_param: str = Field(default="page", description="`page`: the query parameter of the page number.")
    first_page: int = Field(default=1, description="`page`: the number of the first page.")
    offset_param: str = Field(default="offset", description="`offset`: the query parameter of the row offset.")
    size_param: str = Field(default="limit", description="The query parameter of the page size (all but `none`).")
    page_size: int = Field(default=1000, gt=0, description="Rows asked for per page (all but `none`).")
    cursor_param: str = Field(default="cursor", description="`cursor`: the query parameter the cursor is sent in.")
    cursor_path: str = Field(
        default="next_cursor",
        description="`cursor`: the dotted path of the next cursor in the JSON body; none, or empty, ends.",
    )
    max_pages: int = Field(
        default=10_000,
        gt=0,
        description="Pages asked for at most per collected interval; more pages fail the collection, naming it.",
    )


class Secret(_Strict):
    """A value kept out of the config: a field of an Airflow connection, or an environment variable; `prefix`
    goes before it (`"Bearer "`)."""

    connection: str | None = Field(
        default=None, description="The Airflow connection the value is read from at run time; give it or `env`."
    )
    field: str = Field(
        default="password",
        description="With `connection`: the field that holds the value: `password`, `login`, `host`, or "
        "`extra.<key>` (a key of the connection's extra JSON).",
    )
    env: str | None = Field(
        default=None,
        description="The environment variable the value is read from at run time; give it or `connection`.",
    )
    prefix: str = Field(default="", description='Text put before the value, e.g. `"Bearer "`.')

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

    kind: Literal["http"] = Field(description="`http`: an HTTP API.")
    url: str = Field(description="The endpoint the records are asked of (GET).")
    format: Literal["json", "csv"] = Field(default="json", description="What the API answers.")
    records_path: str = Field(
        default="", description="JSON: the dotted path to the list of records in the body; empty: the body is the list."
    )
    start_param: str = Field(default="start", description="The query parameter of the interval's start (ISO 8601).")
    end_param: str = Field(default="end", description="The query parameter of the interval's end (ISO 8601).")
    headers: dict[str, str | Secret] = Field(
        default_factory=dict,
        description="Headers sent with every request: text, or a secret looked up at run time. A credential-like "
        "header (`Authorization`, `X-Api-Key`, ...: a name with key, token, secret, password or cookie) written as "
        "text is refused.",
    )
    connection_id: str | None = Field(
        default=None, description="An Airflow connection whose login and password are sent as basic auth."
    )
    pagination: HttpPagination = Field(default_factory=HttpPagination, description="How to ask for the next page.")
    timeout_seconds: float = Field(default=30, gt=0, description="The time one request may take.")
    max_retries: int = Field(
        default=4,
        ge=0,
        description="Retries of a request answered 429 or 5xx, or not answered (`Retry-After` is honoured); "
        "other 4xx answers are not retried.",
    )
    backoff_seconds: float = Field(
        default=1, ge=0, description="The wait before the first retry, doubled for each further one."
    )

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

    kind: Literal["files"] = Field(description="`files`: CSV or Parquet files.")
    path: str = Field(
        description="A folder, relative to the project's root when not absolute, or `s3://<bucket>/<prefix>`."
    )
    format: Literal["csv", "parquet"] = Field(description="The files' format.")
    pattern: str = Field(default="**/*", description="Which files of `path` to read: a glob (`**/` crosses folders).")
    s3_endpoint_url: str | None = Field(
        default=None, description="An S3-compatible server (MinIO) for an `s3://` path."
    )
    connection_id: str | None = Field(
        default=None, description="An Airflow AWS connection with the credentials of an `s3://` path."
    )

    @field_validator("path")
    @classmethod
    def _from_the_project_root(cls, value: str) -> str:
        if value.startswith("s3://") or Path(value).is_absolute():
            return value
        return str(PROJECT_ROOT / value)


Source = Annotated[SqlSource | HttpSource | FileSource, Field(discriminator="kind")]


class Collection(_Strict):
    """Which days a training run collects."""

    lag_days: int = Field(
        default=0,
        ge=0,
        description="Collect the days that ended this many days before the run's interval, so that late labels "
        "have arrived (the demo uses 2).",
    )


class Validation(_Strict):
    """What a collected batch must pass before it may reach `main`."""

    empty_batch: Literal["fail", "skip"] = Field(
        default="fail",
        description="An empty day fails the run (`fail`), or is recorded and skipped (`skip`: nothing reaches main).",
    )
    max_invalid_row_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Rows failing a row-level check (range, category, null, duplicate id, time outside the "
        "interval) are moved to quarantine while their share stays at or below this; above it the whole day is "
        "rejected.",
    )
    sample_rows: int = Field(
        default=5, ge=0, description="Rows kept in the quarantine report as examples, per failed check."
    )


class Training(_Strict):
    """The data a model is trained on."""

    window_days: int = Field(default=30, gt=0, description="Days of data the training snapshot reads.")


class Split(_Strict):
    """Deterministic train/valid/test splits: by event time (latest rows last) or by a hash of the id."""

    method: Literal["time", "hash"] = Field(
        default="hash", description="`hash`: by a hash of the id column; `time`: the latest rows for test."
    )
    valid_fraction: float = Field(
        default=0.15, gt=0, lt=1, description="The share of the labelled rows for validation (choosing a candidate)."
    )
    test_fraction: float = Field(
        default=0.15,
        gt=0,
        lt=1,
        description="The share of the labelled rows for test (the gate's comparison with the champion); with "
        "`valid_fraction`, at most 0.9.",
    )

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

    name: str = Field(description="The candidate's name: letters, digits and underscores; unique in the config.")
    estimator: str = Field(
        description="Classification: `LogisticRegression`, `RandomForest`, `ExtraTrees`, `GradientBoosting`, "
        "`LightGBM`, `XGBoost`; regression: `Ridge`, `RandomForest`, `ExtraTrees`, `GradientBoosting`, `LightGBM`, "
        "`XGBoost`. All convert to ONNX; `HistGradientBoosting` is refused because the pinned skl2onnx cannot "
        "convert it. LightGBM runs quiet and in its deterministic mode (the same trees whatever `n_jobs`)."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="The estimator's scikit-learn API parameters, as its `get_params()` names them (`n_estimators`, "
        "`learning_rate`, `num_leaves`, ...); a name it does not have is refused. `random_state` comes from "
        "`model.random_seed`.",
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description=f"Lists of values to try: every combination, at most {MAX_GRID}, is a candidate of its own.",
    )

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
    registered_name: str = Field(
        description="The model's name: lowercase letters, digits and `_`, starting with a letter. It names the "
        "MLflow registered model, the DAGs (`ml_training__<name>`, ...), the route `/models/<name>/...`, the BentoML "
        "models `<name>:v<version>`, the run branches `run-<name>-...` and the snapshot folder under `datasets/`; one "
        "config per model."
    )
    candidates: list[Candidate] = Field(
        min_length=1, description="The estimators to train; the best on the validation split is the challenger."
    )
    primary_metric: str = Field(
        description="What the gate compares: classification `average_precision`, `roc_auc`, `f1`, `log_loss`; "
        "regression `rmse`, `mae`, `r2`."
    )
    class_weight: Literal["none", "balanced"] = Field(
        default="none",
        description="Classification: `balanced` weighs each class by the inverse of its frequency (fraud is ~2 % of "
        "rows): the estimator's own `class_weight` where it has one, as LightGBM does; balanced sample weights for "
        "GradientBoosting and XGBoost.",
    )
    random_seed: int = Field(default=42, description="The estimators' `random_state`.")
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
        description="The model card's per-slice metrics (test rows with one value of a categorical or boolean "
        "feature): a slice with fewer rows is shown as too few rows, not as a metric that would mean little.",
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

    min_improvement: float = Field(
        default=0.0,
        ge=0,
        description="How much better (in the primary metric, whichever way is better) a challenger must be than "
        "the champion.",
    )
    floors: dict[str, float] = Field(
        default_factory=dict,
        description="Absolute limits on test metrics, e.g. `{roc_auc: 0.75}` (for `log_loss`, `rmse`, `mae`: "
        "ceilings).",
    )
    approval: Literal["none", "required"] = Field(
        default="none",
        description="`required`: a challenger that passed waits for a person's Approve (Airflow's Required Actions) "
        "before it is deployed; `none`: the gate decides alone.",
    )
    approval_timeout_hours: float = Field(
        default=24,
        gt=0,
        description="With `approval: required`, how long a challenger waits for an answer before it is rejected.",
    )


class Drift(_Strict):
    """When live traffic says the champion should be retrained: read by `drift_monitor`, by `batch_scoring`'s drift
    check of each batch (all but `window_hours`), and by `store_reference` in `ml_training`."""

    min_rows: int = Field(
        default=500,
        gt=0,
        description="Logged predictions (or scored rows of a batch) a drift check needs; fewer gives no verdict.",
    )
    window_hours: int = Field(default=1, gt=0, description="The window of live traffic each check looks at.")
    threshold: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="The share of drifted features (Evidently's dataset drift share) at which retraining is asked for.",
    )
    max_performance_drop: float = Field(
        default=0.05,
        gt=0,
        description="The drop of the primary metric on labelled live rows, against the champion's test score (in "
        "the metric's units), at which retraining is asked for.",
    )
    max_estimated_drop: float | None = Field(
        default=None,
        gt=0,
        description="The drop of the primary metric as estimated without labels (the champion's calibrator on the "
        "window's probabilities; classification only), against the champion's test score, at which retraining is "
        "asked for; empty: the estimate is recorded and plotted but asks for nothing. It cannot see concept drift: "
        "see the estimated score in the drift_monitor pipeline.",
    )
    cooldown_hours: float = Field(
        default=24,
        ge=0,
        description="No drift-triggered training this long after the last check, of live traffic or of a batch, "
        "that asked for one.",
    )
    reference_rows: int = Field(
        default=5000,
        gt=0,
        description="Rows of the champion's training data kept as the drift reference, so that a check never "
        "rescans the snapshot.",
    )
    label_lookback_hours: int = Field(
        default=72,
        gt=0,
        description="Labels for the live score are looked up in the source for events this many hours before the "
        "window's end (labels arrive late; for a batch without labels of its own, before the batch's end).",
    )
    min_labelled_rows: int = Field(
        default=200,
        gt=0,
        description="Labelled live rows the live score needs; fewer gives no performance verdict.",
    )
    retrain_history_days: int | None = Field(
        default=None,
        gt=0,
        description="Days a drift-triggered `ml_training` run collects (its `history_days`), ending at the "
        "collection lag; empty: `training.window_days`, so that the new model learns from every day since the world "
        "changed, not only the nightly run's one day.",
    )


class RolloutCriteria(_Strict):
    """What a challenger must show on live traffic, beside the champion on the same rows, to be promoted."""

    min_agreement: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="The share of rows where both give the same class (classification) or values within "
        "`value_tolerance` of each other, relative to the champion's (regression).",
    )
    value_tolerance: float = Field(
        default=0.1, gt=0, description="Regression: how far apart, relative to the champion's value, still agrees."
    )
    rollback_on_prediction_drift: bool = Field(
        default=True,
        description="Whether drift between the two models' predictions on the same rows (Evidently's verdict for "
        "the prediction column, the test the drift monitor uses) rolls the challenger back; off, it is only "
        "reported (a retrained model that is meant to answer differently, after drift).",
    )
    max_error_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="The share of the challenger's scorings that may raise (the client got the champion's answer "
        "instead); above it the challenger is rolled back without waiting for the minimum.",
    )
    max_latency_ratio: float = Field(
        default=2.0,
        gt=0,
        description="The challenger's p99 model time over the champion's on the same traffic, at most.",
    )
    max_live_metric_drop: float = Field(
        default=0.0,
        ge=0,
        description="Once `drift.min_labelled_rows` rows have labels: how far the challenger's live primary metric "
        "may fall below the champion's on the same rows (in the metric's units, whichever way is better).",
    )


class Rollout(_Strict):
    """How a challenger that passed the gate goes live. `direct`: it replaces the champion at once. `shadow`: it
    scores every request beside the champion, off the request path, and only the champion answers. `canary`: it
    answers `canary_share` of the requests (sticky by the `X-Rollout-Key` header when a client sends one).
    In both, `model_rollout__<model>` compares the two on the same live rows every `check_every_minutes` and
    promotes the challenger or rolls it back."""

    mode: Literal["direct", "shadow", "canary"] = Field(
        default="direct", description="How a challenger that passed the gate goes live (above)."
    )
    canary_share: float = Field(default=0.1, gt=0, lt=1, description="`canary`: the share of requests it answers.")
    min_rows: int = Field(default=500, gt=0, description="Records scored by both models that a verdict needs.")
    min_hours: float = Field(default=1.0, ge=0, description="The time since the rollout started that a verdict needs.")
    max_hours: float = Field(
        default=72.0, gt=0, description="No verdict by then rolls the challenger back; at least `min_hours`."
    )
    check_every_minutes: int = Field(
        default=60, gt=0, le=1440, description="How often `model_rollout__<model>` checks."
    )
    criteria: RolloutCriteria = Field(
        default_factory=RolloutCriteria, description="What the challenger must show to be promoted."
    )

    @model_validator(mode="after")
    def _can_end(self) -> Rollout:
        if self.max_hours < self.min_hours:
            raise ValueError(f"max_hours ({self.max_hours}) is below min_hours ({self.min_hours})")
        return self


class Branches(_Strict):
    """The lakeFS branches of training runs."""

    retention_days: int = Field(
        default=14,
        ge=0,
        description="How long `lakefs_housekeeping` keeps `run-<model>-*` branches: a rejected model's branch is "
        "evidence for this long. It keeps the records of notifications sent by the model's DAG runs as long "
        "(Airflow Variables `mlops_notified.*`), and longer while a run is still queued or running.",
    )


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
        description="A cron expression, in UTC (or an Airflow preset such as `@daily`), for scheduled runs; none: "
        "runs only when started by hand.",
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
        "`redis_default` (`make run` sets it from `MLOPS_REDIS_URL`, default `redis://127.0.0.1:6379/0`). The run "
        "scores that file, not a window.",
    )
    source: Source | None = Field(
        default=None,
        description="Where the rows to score come from (any source kind); default: the config's `source`. Its "
        "rows need the id column and the features; a target column is not scored, and where it has labels it "
        "gives the batch's live score.",
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
        "(250,000 rows of 8 columns: about 210 MiB), and collect_input holds one chunk of the input at a time.",
    )
    check_rows: int = Field(
        default=50_000,
        gt=0,
        description="The drift check of a batch judges at most this many of its scored rows, drawn at random (the "
        "same ones for the same batch), so that its memory and time stay bounded whatever the batch's size.",
    )
    timeout_hours: float = Field(
        default=6,
        gt=0,
        description="A run still going after this many hours is failed (Airflow's `dagrun_timeout`) and recorded "
        "as failed: one run goes at a time, so a run that hangs would hold back every later one.",
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
        description="The Airflow SMTP connection (host, port, login, password; `from_email`, `disable_tls`, "
        "`disable_ssl`, `timeout` in its extra); the credentials stay in the connection.",
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
    """One model's config file: its sections."""

    dataset: Dataset = Field(description="The data's columns and checks.")
    source: Source = Field(description="Where training runs collect the rows from: one of three kinds.")
    collection: Collection = Field(default_factory=Collection, description="Which days a run collects.")
    validation: Validation = Field(default_factory=Validation, description="What a collected day must pass.")
    training: Training = Field(default_factory=Training, description="The training window.")
    split: Split = Field(default_factory=Split, description="The train/valid/test split.")
    model: Model = Field(description="The model: its name, candidates, metric and model card.")
    gate: Gate = Field(default_factory=Gate, description="When a challenger may replace the champion.")
    drift: Drift = Field(default_factory=Drift, description="When live traffic asks for retraining.")
    rollout: Rollout = Field(default_factory=Rollout, description="How a challenger goes live.")
    branches: Branches = Field(default_factory=Branches, description="The run branches' retention.")
    batch: BatchScoring | None = Field(
        default=None,
        description="Optional: with it, `batch_scoring__<model>` scores windows of rows, or arrived files, with the "
        "champion.",
    )
    notify: list[Destination] = Field(
        default_factory=list,
        description="Who is told what: destinations (`kind: email` or `kind: webhook`), each with the events it is "
        "told of. Each event reaches each destination once per DAG run, also when the task is retried.",
    )
    path: str = Field(
        default="", description="Set when the file is loaded, to the file's path: not written in the file."
    )

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
