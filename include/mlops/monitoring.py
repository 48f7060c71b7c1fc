"""Drift of live traffic against the champion's training data, and whether it calls for retraining.

The live traffic is the inference log, a table of the operations store (include/mlops/operations_store.py)
that the model service writes (include/serving/inference_log.py) and this module reads: `read_live_window`
returns one window's predictions as rows of features and the prediction; a row that does not fit the config (a
JSON that is not a record, a missing feature, a value of the wrong type) is counted and left out, so that one
bad row never fails a check.

`measure_drift` compares a window of live features (and predictions) with the reference sample using
Evidently's DataDriftPreset: per column, the method Evidently picks for its type and size (a p-value test below
1,000 reference rows, a distance above), its score and verdict, and the report as HTML.

The retraining decision is a pure function of the check's figures and of what the scheduler knows (the last
drift-triggered training run, whether `ml_training` is running or queued), so that every reason it can give is
tested without traffic: too few rows, no drift, cool-down, training already active, and the two reasons to
retrain (data drift, performance drop).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa

from include.mlops import classes, performance_estimate, training
from include.mlops.config import Dataset, Feature, PipelineConfig
from include.mlops.operations_store import drift_history, inference_log
from include.mlops.validation import read_target

PREDICTION_COLUMN = "prediction"
# Reasons kept per window for the task log: enough to see what is wrong, not one per bad row.
MAX_LISTED_PROBLEMS = 5
# Logged rows read and checked at a time: bounds the memory a million-row window takes on its way in.
CHUNK_ROWS = 100_000


def _in_window(model_name: str, start: dt.datetime, end: dt.datetime) -> tuple:
    """The answers clients got from `model_name` in [start, end) (not a rollout's shadow scorings)."""
    log = inference_log.c
    return log.model_name == model_name, log.predicted_at >= start, log.predicted_at < end, log.served.is_(True)


def count_logged(engine: sa.Engine, model_name: str, start: dt.datetime, end: dt.datetime) -> int:
    """How many predictions of `model_name` were logged in [start, end) (malformed ones included); 0 before the
    first."""
    query = sa.select(sa.func.count()).where(*_in_window(model_name, start, end))
    with engine.connect() as connection:
        return connection.execute(query).scalar_one()


@dataclass(frozen=True)
class LiveWindow:
    """One model's predictions logged in [start, end): features, `prediction` (the label, or the value of a regression),
    `probabilities` (classification: {class: probability}, as a dict or its JSON text), `record_id`,
    `model_version`."""

    frame: pd.DataFrame
    malformed: int
    problems: tuple[str, ...]


def read_live_window(
    engine: sa.Engine, model_name: str, start: dt.datetime, end: dt.datetime, dataset: Dataset
) -> LiveWindow:
    """The window's logged predictions of `model_name`; malformed rows are counted (with the first reasons) and
    left out."""
    # `inputs` and `probabilities` come as the database keeps them (text on SQLite; psycopg2 parses JSONB) and
    # are parsed here with orjson: SQLAlchemy's JSON type parses with the standard library, ten times slower.
    names = ("id", "record_id", "model_version", "inputs", "label", "probabilities", "value")
    raw = {"inputs", "probabilities"}
    columns = (sa.type_coerce(inference_log.c[n], sa.Text) if n in raw else inference_log.c[n] for n in names)
    query = sa.select(*columns).where(*_in_window(model_name, start, end))
    kept, rescued, problems, malformed = [], [], [], 0
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=CHUNK_ROWS).execute(query.order_by(inference_log.c.id))
        for chunk in result.partitions():
            clean, suspects = _plain_rows(pd.DataFrame(chunk, columns=list(names)), dataset)
            kept.append(clean)
            for row in suspects.itertuples(index=False):
                try:
                    rescued.append({**_live_row(row, dataset), "id": row.id})
                except ValueError as problem:
                    malformed += 1
                    if len(problems) < MAX_LISTED_PROBLEMS:
                        problems.append(f"inference_log id {row.id}: {problem}")
    columns = [*(f.name for f in dataset.features), PREDICTION_COLUMN, "probabilities", "record_id", "model_version"]
    frames = [f for f in (*kept, pd.DataFrame(rescued, columns=[*columns, "id"])) if not f.empty]
    frame = pd.concat(frames) if frames else pd.DataFrame(columns=[*columns, "id"])
    frame = frame.sort_values("id", kind="stable")[columns].reset_index(drop=True)
    return LiveWindow(frame, malformed, tuple(problems))


def _plain_rows(table: pd.DataFrame, dataset: Dataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of `table` that are certainly well-formed, checked column by column (a million rows in seconds),
    as the window's frame; and the others, which `_live_row` keeps or rejects one by one, saying why: the same
    result as checking every row by itself."""
    features = [f.name for f in dataset.features]
    needed = set(features)
    table["inputs"] = [_parsed(inputs) for inputs in table["inputs"]]
    plain = table["inputs"].map(lambda inputs: isinstance(inputs, dict) and needed <= inputs.keys()).astype(bool)
    if dataset.task == "regression":
        plain &= table["value"].notna()
    else:
        plain &= table["label"].notna() & pd.Series([isinstance(_parsed(p), dict) for p in table["probabilities"]])
    candidates = plain[plain].index
    values = pd.DataFrame(table["inputs"][candidates].tolist(), columns=features, index=candidates)
    valid = pd.Series(True, index=candidates)
    for feature in dataset.features:
        ok = _plainly_valid(values[feature.name], feature)
        if feature.nullable:  # a null (the frame shows it as NaN, as it would a NaN number) is valid here
            ok |= pd.Series([i[feature.name] is None for i in table["inputs"][candidates]], index=candidates)
        valid &= ok
    plain[candidates] = valid
    rows = valid[valid].index
    prediction = table["value" if dataset.task == "regression" else "label"][rows]
    passed_on = {column: table[column][rows] for column in ("probabilities", "record_id", "model_version", "id")}
    return values.loc[rows].assign(**{PREDICTION_COLUMN: prediction}, **passed_on), table[~plain]


def _parsed(value: Any) -> Any:
    """JSON text parsed (text that is not JSON is left as it is, for `_live_row` to report); anything else as is."""
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def _plainly_valid(values: pd.Series, feature: Feature) -> pd.Series:
    """True where a value is certainly valid for `feature` (a null, a NaN or an odd type is left to `_live_row`)."""
    if feature.type == "numeric":
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            return pd.Series(np.isfinite(values.to_numpy(dtype="float64")), index=values.index)
        kinds = values.map(type)
        numbers = kinds.eq(int) | kinds.eq(float)
        as_float = pd.to_numeric(values.where(numbers), errors="coerce").to_numpy(dtype="float64")
        return numbers & np.isfinite(as_float)
    return values.map(type).eq(bool if feature.type == "boolean" else str)


def _live_row(row: Any, dataset: Dataset) -> dict[str, Any]:
    # Text here is what orjson refused: the standard library also reads NaN and Infinity, which its json.dumps
    # writes, so that the problem is named by feature (or the text is reported as not JSON).
    inputs = json.loads(row.inputs) if isinstance(row.inputs, str) else row.inputs
    if not isinstance(inputs, dict):
        raise ValueError(f"inputs is {type(inputs).__name__}, not a record")
    record = {}
    for feature in dataset.features:
        if feature.name not in inputs:
            raise ValueError(f"{feature.name} is missing")
        value = inputs[feature.name]
        if value is None:
            if not feature.nullable:
                raise ValueError(f"{feature.name} is null")
        elif feature.type == "numeric":
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{feature.name} is {value!r}, not a finite number")
        elif feature.type == "boolean" and not isinstance(value, bool):
            raise ValueError(f"{feature.name} is {value!r}, not true or false")
        elif feature.type == "categorical" and not isinstance(value, str):
            raise ValueError(f"{feature.name} is {value!r}, not a string")
        record[feature.name] = value
    prediction = row.value if dataset.task == "regression" else row.label
    if prediction is None:
        raise ValueError("it has no prediction")
    probabilities = _parsed(row.probabilities)
    if dataset.task == "classification" and not isinstance(probabilities, dict):
        raise ValueError("it has no class probabilities")
    return {
        **record,
        PREDICTION_COLUMN: prediction,
        "probabilities": probabilities,
        "record_id": row.record_id,
        "model_version": row.model_version,
    }


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    threshold: float
    score: float
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    """Evidently's verdicts on the features (and on the predictions, kept apart from the features' share)."""

    features: tuple[ColumnDrift, ...]
    prediction: ColumnDrift | None
    html: str

    @property
    def drift_share(self) -> float:
        return sum(c.drifted for c in self.features) / len(self.features)

    @property
    def drifted_columns(self) -> tuple[str, ...]:
        return tuple(c.column for c in self.features if c.drifted)


def measure_drift(reference: pd.DataFrame, current: pd.DataFrame, dataset: Dataset) -> DriftReport:
    """Drift of `current` against `reference`, per feature of `dataset` and for the column `prediction` when
    both frames have it."""
    # Evidently takes ~5 s to import: only the drift check pays for it.
    from evidently import DataDefinition, Report
    from evidently import Dataset as EvidentlyDataset
    from evidently.presets import DataDriftPreset

    numeric = [f.name for f in dataset.features if f.type == "numeric"]
    categorical = [f.name for f in dataset.features if f.type != "numeric"]
    if PREDICTION_COLUMN in reference and PREDICTION_COLUMN in current:
        categorical.append(PREDICTION_COLUMN)
    columns = numeric + categorical
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    # Text columns as pandas categoricals: Evidently's counting then takes half the time (6 s instead of 12 s
    # on a million rows), with the same scores.
    as_categories = {c: "category" for c in categorical if not pd.api.types.is_bool_dtype(current[c])}
    snapshot = Report([DataDriftPreset(columns=columns)]).run(
        current_data=EvidentlyDataset.from_pandas(current[columns].astype(as_categories), data_definition=definition),
        reference_data=EvidentlyDataset.from_pandas(
            reference[columns].astype(as_categories), data_definition=definition
        ),
    )
    verdicts = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith(":ValueDrift"):
            score, threshold, method = float(metric["value"]), float(config["threshold"]), config["method"]
            # p-value tests drift below their threshold, distances at or above it.
            drifted = score < threshold if "p_value" in method else score >= threshold
            verdicts[config["column"]] = ColumnDrift(config["column"], method, threshold, score, drifted)
    return DriftReport(
        features=tuple(verdicts[f.name] for f in dataset.features),
        prediction=verdicts.get(PREDICTION_COLUMN),
        html=snapshot.get_html_str(as_iframe=False),
    )


@dataclass(frozen=True)
class DriftCheck:
    """What one check measured on the window's live traffic."""

    rows: int
    drift_share: float | None  # share of features Evidently finds drifted; None without a verdict
    drifted_columns: tuple[str, ...] = ()
    # The primary metric on the window's labelled rows, and the champion's test score to compare with.
    live_score: float | None = None
    champion_score: float | None = None
    # The primary metric estimated without labels (performance_estimate.py), when the version has a calibrator.
    estimated_score: float | None = None


@dataclass(frozen=True)
class RetrainingDecision:
    retrain: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def performance_drop(config: PipelineConfig, check: DriftCheck, estimated: bool = False) -> float | None:
    """How much worse the live score (or the `estimated` one) is than the champion's, in the primary metric's
    units (positive: worse)."""
    score = check.estimated_score if estimated else check.live_score
    if score is None or check.champion_score is None:
        return None
    difference = check.champion_score - score
    return difference if training.higher_is_better(config, config.model.primary_metric) else -difference


def decide(
    config: PipelineConfig,
    check: DriftCheck,
    now: dt.datetime,
    last_drift_run: dt.datetime | None,
    training_active: bool,
) -> RetrainingDecision:
    """Retrain when the drift share reaches `drift.threshold`, the primary metric dropped by
    `drift.max_performance_drop`, or (when set) its label-free estimate by `drift.max_estimated_drop`, on at least
    `drift.min_rows` rows, outside the cool-down after the last drift-triggered run, and while no `ml_training` run
    is running or queued."""
    drift = config.drift
    metric = config.model.primary_metric
    if check.rows < drift.min_rows:
        return RetrainingDecision(False, f"too few rows: {check.rows} in the window, {drift.min_rows} needed")

    causes = []
    if check.drift_share is not None and check.drift_share >= drift.threshold:
        columns = ", ".join(check.drifted_columns) or "none named"
        share = f"{check.drift_share:.0%} of features drifted (threshold {drift.threshold:.0%})"
        causes.append(f"data drift: {share}: {columns}")
    drop = performance_drop(config, check)
    if drop is not None and drop >= drift.max_performance_drop:
        causes.append(
            f"performance drop: {metric} {check.live_score:.4f} live vs {check.champion_score:.4f} for the champion "
            f"({drop:.4f} worse, limit {drift.max_performance_drop})"
        )
    bound, estimated_drop = drift.max_estimated_drop, performance_drop(config, check, estimated=True)
    if bound is not None and estimated_drop is not None and estimated_drop >= bound:
        causes.append(
            f"estimated performance drop: {metric} {check.estimated_score:.4f} estimated without labels vs "
            f"{check.champion_score:.4f} for the champion ({estimated_drop:.4f} worse, limit {bound})"
        )
    if not causes:
        share = "no verdict" if check.drift_share is None else f"{check.drift_share:.0%} of features drifted"
        live = "" if drop is None else f", {metric} {drop:+.4f} against the champion"
        return RetrainingDecision(False, f"no drift: {share}{live}")

    why = "; ".join(causes)
    if last_drift_run is not None:
        resumes = last_drift_run + dt.timedelta(hours=drift.cooldown_hours)
        if now < resumes:
            return RetrainingDecision(False, f"cool-down until {resumes:%Y-%m-%d %H:%M} UTC; would retrain for {why}")
    if training_active:
        return RetrainingDecision(False, f"training already active; would retrain for {why}")
    return RetrainingDecision(True, why)


def sample_reference(frame: pd.DataFrame, config: PipelineConfig) -> pd.DataFrame:
    """At most `drift.reference_rows` rows of a training split, the same ones for the same split."""
    rows = training.ordered(frame, config.dataset)
    if len(rows) <= config.drift.reference_rows:
        return rows
    sample = rows.sample(n=config.drift.reference_rows, random_state=config.model.random_seed)
    return sample.sort_index().reset_index(drop=True)


def with_predictions(frame: pd.DataFrame, predictions: list[dict[str, Any]], dataset: Dataset) -> pd.DataFrame:
    """`frame` with the column `prediction` as the inference log holds it: the label as text, or the value."""
    if dataset.task == "regression":
        values = [float(p["value"]) for p in predictions]
    else:
        values = [classes.text_of(p["label"]) for p in predictions]
    return frame.assign(**{PREDICTION_COLUMN: values})


@dataclass(frozen=True)
class LivePerformance:
    """The primary metric on the live rows whose labels have arrived; no score (and why) when too few have."""

    labelled_rows: int
    score: float | None
    note: str


def live_performance(config: PipelineConfig, live: pd.DataFrame, source: pd.DataFrame) -> LivePerformance:
    """Join live predictions (`read_live_window`'s frame) with the source's rows by id, and score the model's
    predictions on those with a label, as training scores the test split."""
    dataset, metric = config.dataset, config.model.primary_metric
    needed = config.drift.min_labelled_rows
    if dataset.id_column not in source or dataset.target not in source:
        # A files source with no file in the lookback gives a frame without columns.
        return LivePerformance(0, None, f"the source's rows have no {dataset.id_column} and {dataset.target}")
    # The source's labels as validation reads them (a CSV's 1.0 is the class 1, 'yes' the boolean true).
    labels = source[[dataset.id_column]].assign(**{dataset.target: read_target(source[dataset.target], dataset)})
    labels = labels.dropna(subset=[dataset.target])
    labels = labels.assign(record_id=labels[dataset.id_column].astype(str)).drop_duplicates("record_id", keep="last")
    joined = live.dropna(subset=["record_id"]).merge(labels[["record_id", dataset.target]], on="record_id")
    if len(joined) < needed:
        return LivePerformance(len(joined), None, f"{len(joined)} live rows have labels, {needed} needed")
    y = training.target_of(joined, dataset)
    if dataset.task == "regression":
        predicted = joined[PREDICTION_COLUMN].astype("float64").to_numpy()
        return LivePerformance(len(joined), training.metrics_of(config, y, predicted)[metric], "")
    if len(np.unique(y)) < 2:
        return LivePerformance(len(joined), None, f"the {len(joined)} labelled live rows are all of one class")
    # The logged probabilities are keyed by each class's text: the classes the model knew are those keys. A row
    # labelled with a class it did not know cannot be scored against them (and one such row would fail them all).
    probabilities = [_parsed(p) for p in joined["probabilities"]]
    known = set().union(*(p.keys() for p in probabilities))
    learned = [c for c in dataset.target_classes if classes.text_of(c) in known]
    texts = [classes.text_of(c) for c in learned]
    trained = classes.for_training(pd.Series(learned), dataset)
    scorable = np.isin(y, trained) & joined[PREDICTION_COLUMN].isin(texts).to_numpy()
    matrix = np.array([[p.get(text, 0.0) for text in texts] for p in probabilities], dtype="float64")
    by_text = dict(zip(texts, trained, strict=True))
    predicted = np.array([by_text.get(label, trained[0]) for label in joined[PREDICTION_COLUMN]], dtype=trained.dtype)
    score = training.metrics_of(config, y[scorable], matrix[scorable], predicted[scorable], trained).get(metric)
    return LivePerformance(int(scorable.sum()), score, "")


def champion_score(config: PipelineConfig, tags: dict[str, str]) -> float | None:
    """The version's test score in the primary metric, as the gate measured it when it was promoted (its tags);
    None when the gate measured another metric."""
    tested = tags.get("gate_metric") == config.model.primary_metric and tags.get("gate_challenger_score")
    return float(tags["gate_challenger_score"]) if tested else None


@dataclass(frozen=True)
class Assessment:
    """One drift check's measurements: Evidently's report (None with fewer than `drift.min_rows` rows: no
    verdict), the live score, the champion's test score to hold it against, and the label-free estimate."""

    rows: int
    malformed_rows: int
    report: DriftReport | None
    performance: LivePerformance
    champion_score: float | None
    estimate: performance_estimate.Estimate

    def figures(self, config: PipelineConfig) -> dict[str, float]:
        measured = check_figures(config, self.rows, self.malformed_rows, self.report, self.performance)
        return measured | self.estimate.figures(config.model.primary_metric)

    def to_check(self, model_version: str) -> dict[str, Any]:
        """What decide_retraining needs of the check, as JSON values (XCom)."""
        report = self.report
        return {
            "model_version": model_version,
            "rows": self.rows,
            "malformed_rows": self.malformed_rows,
            "drift_share": None if report is None else report.drift_share,
            "drifted_columns": [] if report is None else list(report.drifted_columns),
            "prediction_drift_score": None if report is None or report.prediction is None else report.prediction.score,
            "labelled_rows": self.performance.labelled_rows,
            "live_score": self.performance.score,
            "champion_score": self.champion_score,
            "estimated_score": self.estimate.score,
            "estimated_score_low": self.estimate.low,
            "estimated_score_high": self.estimate.high,
            "estimated_accuracy": self.estimate.accuracy,
        }


def assess(
    config: PipelineConfig,
    version_tags: dict[str, str],
    reference: pd.DataFrame,
    current: pd.DataFrame,
    malformed_rows: int,
    labels: pd.DataFrame,
    calibrator: performance_estimate.Calibrator | performance_estimate.NoCalibrator,
) -> Assessment:
    """Drift of `current` (features, `prediction`, `probabilities` and `record_id`, as `read_live_window` gives
    them) against the version's `reference`, with a verdict from `drift.min_rows` rows on; the live score on
    its rows whose labels are in `labels` (rows with the id and target columns); and the primary metric estimated
    on all its rows by the version's `calibrator`."""
    report = measure_drift(reference, current, config.dataset) if len(current) >= config.drift.min_rows else None
    performance = live_performance(config, current, labels)
    estimate = estimated_performance(config, current, calibrator)
    return Assessment(len(current), malformed_rows, report, performance, champion_score(config, version_tags), estimate)


def estimated_performance(
    config: PipelineConfig,
    current: pd.DataFrame,
    calibrator: performance_estimate.Calibrator | performance_estimate.NoCalibrator,
) -> performance_estimate.Estimate:
    """The primary metric and accuracy of the window's predictions estimated from their probabilities (at most
    `performance_estimate.MAX_ROWS` of its rows, drawn at random: the band is then that sample's, a little wider);
    none, and why, for a regression, a version without a calibrator or an empty window."""
    if config.dataset.task == "regression":
        return performance_estimate.no_estimate(len(current), "a regression model: no estimate without labels")
    if isinstance(calibrator, performance_estimate.NoCalibrator):
        return performance_estimate.no_estimate(len(current), calibrator.reason)
    rows = current
    if len(rows) > performance_estimate.MAX_ROWS:
        rows = rows.sample(n=performance_estimate.MAX_ROWS, random_state=config.model.random_seed)
    return performance_estimate.estimate(config, calibrator, rows["probabilities"], rows[PREDICTION_COLUMN])


def check_figures(
    config: PipelineConfig, rows: int, malformed: int, report: DriftReport | None, performance: LivePerformance
) -> dict[str, float]:
    """One check's figures, named as the monitoring run's metrics: the rows it judged and the malformed ones left
    out; with a verdict, the drift share, the number of drifted features, each feature's score and the
    prediction's; the labelled rows, and the live score when there is one."""
    figures: dict[str, float] = {"rows": rows, "malformed_rows": malformed, "labelled_rows": performance.labelled_rows}
    if report is not None:
        figures |= {"drift_share": report.drift_share, "drifted_columns": len(report.drifted_columns)}
        figures |= {f"drift_score.{c.column}": c.score for c in report.features}
        if report.prediction is not None:
            figures["prediction_drift_score"] = report.prediction.score
    if performance.score is not None:
        figures[f"live_{config.model.primary_metric}"] = performance.score
    return figures


ONLINE, BATCH = "online", "batch"  # the sources of a drift check (drift_history.source)


def record_check(engine: sa.Engine, row: dict[str, Any]) -> None:
    """Write one check's row of the drift history (`source` defaults to online); a retried check replaces the row
    of its first try. The rows of the two sources are apart: a batch run and a drift_monitor run may share a run
    id (both `scheduled__<same time>`)."""
    row = {"source": ONLINE, **row}
    with engine.begin() as connection:
        connection.execute(
            sa.delete(drift_history).where(
                drift_history.c.airflow_run_id == row["airflow_run_id"],
                drift_history.c.model_name == row["model_name"],
                drift_history.c.source == row["source"],
            )
        )
        connection.execute(drift_history.insert(), [row])


def last_retraining(
    engine: sa.Engine, model_name: str, other_than_run: str | None = None, source: str = ONLINE
) -> dt.datetime | None:
    """The window end of the last check, online or batch, that asked to retrain `model_name`; not counting the
    check of Airflow run `other_than_run` of `source` (a retried check finds its own first try's row, which must
    not cool it down)."""
    own = sa.and_(drift_history.c.airflow_run_id == (other_than_run or ""), drift_history.c.source == source)
    query = sa.select(sa.func.max(drift_history.c.window_end)).where(
        drift_history.c.model_name == model_name, drift_history.c.retrain.is_(True), sa.not_(own)
    )
    with engine.connect() as connection:
        last = connection.execute(query).scalar_one()
    return None if last is None else as_utc(last)


def as_utc(moment: dt.datetime | str) -> dt.datetime:
    """A time read back from the database as an aware UTC datetime: SQLite gives naive datetimes (or, from an
    aggregate such as max(), the stored text)."""
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def history(engine: sa.Engine, model_name: str, last: int | None = None) -> list[dict[str, Any]]:
    """The drift history of `model_name` (only its `last` checks, when given), oldest check first."""
    checks = sa.select(drift_history).where(drift_history.c.model_name == model_name)
    if last is not None:
        # The newest `last` through the (model_name, window_end) index, put back in order below.
        checks = sa.select(checks.order_by(drift_history.c.window_end.desc()).limit(last).subquery())
    rows = checks.subquery()
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(sa.select(rows).order_by(rows.c.window_end))]
