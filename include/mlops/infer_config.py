"""Draft a model's config from a sample of its data, for the user to review and edit.

    python -m include.mlops.infer_config data/churn.csv --target churned --name churn -o include/config/churn.yaml

(`make infer-config ARGS="..."` runs the same.) Data tools call this inferring a schema (pandera's and TFDV's
`infer_schema`); here the schema is a whole config. It reads a sample of CSV or Parquet files, a SQL table or
query, or an HTTP API (include/mlops/samples.py), learns what each column is (include/mlops/schema_inference.py:
a numeric, categorical or boolean feature, the id, the event time, the target, or none of these, with the
reason), chooses a metric and candidates for the task, and writes YAML that `config.load_config` accepts
unedited, each inferred line under a comment saying what the sample showed.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml
from pydantic import ValidationError

from include.mlops.config import PipelineConfig, is_credential_header
from include.mlops.samples import FilesRead, HttpRead, Sample, SampleError, SqlRead, read_files, read_http, read_sql
from include.mlops.schema_inference import (
    Column,
    DraftError,
    FeatureDraft,
    Target,
    as_times,
    describe,
    draft_feature,
    event_time_candidates,
    flow,
    id_candidates,
    infer_target,
    named_like_id,
    number_text,
    profile,
    show,
    time_form_name,
)

# A positive class below this share of the labels is rare: average precision, not ROC AUC, which stays high on
# a rare class even when few of the top-ranked rows are positive.
RARE_POSITIVE_SHARE = 0.2
# Classes are weighed as balanced when the most frequent outnumbers the rarest by this much.
IMBALANCE_RATIO = 1.5
DEFAULT_MAX_ROWS = 100_000
_MODEL_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_WIDTH = 116

# The candidates every drafted config starts with, by task: the one place to change them. Once config.ESTIMATORS
# has LightGBM (another branch adds it, and XGBoost), it should replace RandomForest here: it fits large data many
# times faster.
# Rows a day may quarantine before it is rejected, as the draft sets validation.max_invalid_row_fraction.
QUARANTINED_A_DAY = 3
DEFAULT_CANDIDATES: dict[str, list[dict[str, Any]]] = {
    "classification": [
        {"name": "logistic_regression", "estimator": "LogisticRegression", "params": {"C": 1.0, "max_iter": 5000}},
        {
            "name": "lightgbm",
            "estimator": "LightGBM",
            "params": {"n_estimators": 200, "learning_rate": 0.05, "n_jobs": 1},
        },
    ],
    "regression": [
        {"name": "ridge", "estimator": "Ridge", "params": {"alpha": 1.0}},
        {
            "name": "lightgbm",
            "estimator": "LightGBM",
            "params": {"n_estimators": 200, "learning_rate": 0.05, "n_jobs": 1},
        },
    ],
}


def draft_config(
    sample: Sample,
    target: str,
    name: str,
    id_column: str | None = None,
    event_time_column: str | None = None,
    connection_id: str | None = None,
) -> str:
    """The commented YAML config drafted from `sample`, for the model `name` predicting `target`.

    `id_column` and `event_time_column` replace the inferred choices; `connection_id` names the Airflow connection
    a SQL source is read through (instead of the URL drafted from)."""
    if not _MODEL_NAME.match(name):
        raise DraftError(
            f"--name {name!r} must be lowercase letters, digits and underscores, starting with a letter (it names the "
            "dataset's lakeFS folder and the model's DAGs and route)"
        )
    rows = sample.rows
    if rows.empty:
        raise DraftError(f"{sample.description}: no rows to infer a config from")
    columns = {column: profile(column, rows[column]) for column in rows.columns}
    given = {"--target": target, "--id-column": id_column, "--event-time-column": event_time_column}
    for option, column in given.items():
        if column is not None and column not in columns:
            raise DraftError(
                f"{option} {column!r} is not a column of {sample.description}; its columns: {list(columns)}"
            )
    named = [column for column in given.values() if column is not None]
    if len(set(named)) < len(named):
        raise DraftError(f"--target, --id-column and --event-time-column must name different columns: {named}")
    label = infer_target(columns[target])
    others = [c for c in columns.values() if c.name != target]
    ids = [columns[id_column]] if id_column else id_candidates(others)
    chosen_id = ids[0] if ids else None
    times = event_time_candidates([c for c in others if c is not chosen_id])
    if event_time_column is not None:
        if (given_time := columns[event_time_column]).time_form is None:
            raise DraftError(
                f"--event-time-column {event_time_column!r} holds no times the pipeline reads "
                f"({describe(given_time)}): ISO 8601 text, a timestamp type, or epoch seconds or milliseconds in a "
                "column named like a time"
            )
        times = [columns[event_time_column]]
    chosen_time = times[0] if times else None
    id_name = chosen_id.name if chosen_id else _unused("id", columns)
    time_name = chosen_time.name if chosen_time else _unused("event_time", columns)
    features = [draft_feature(c) for c in others if c is not chosen_id and c is not chosen_time]
    if not any(f.left_out is None for f in features):
        reasons = "; ".join(f"{f.entry['name']}: {f.left_out}" for f in features) or "no other column"
        raise DraftError(f"no column of {sample.description} can be a feature ({reasons})")

    lines = _comment(
        f"Drafted by `python -m include.mlops.infer_config` from {sample.description}. Review every line before "
        "use: the types, ranges, categories and classes below are what those rows showed, not what the data "
        "promises. The sections left out (split, gate, drift, rollout, ...) take their defaults; every key is "
        "described in the configuration reference (`make docs`), generated from include/mlops/config.py.",
        0,
    )
    lines += ["dataset:", f"  name: {name}"]
    lines += _comment(_id_note(chosen_id, ids, id_column is not None), 2) + [f"  id_column: {flow(id_name)}"]
    lines += _comment(_time_note(chosen_time, times), 2) + [f"  event_time_column: {flow(time_name)}"]
    lines += _target_lines(label)
    lines += _features_lines(features, sample)
    lines += _source_lines(sample, name, id_name, time_name, chosen_time, features, label, connection_id)
    lines += _validation_lines(chosen_time)
    lines += _training_lines(chosen_time)
    lines += _model_lines(label, name)
    text = "\n".join(lines) + "\n"
    try:
        PipelineConfig.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        raise DraftError(f"the drafted config does not load, which is a bug of infer_config: {exc}") from exc
    return text


# --- the config's text ---


def _unused(name: str, columns: dict[str, Column]) -> str:
    while name in columns:
        name += "_"
    return name


def _id_note(chosen: Column | None, candidates: list[Column], given: bool) -> str:
    if chosen is None:
        return (
            "NO ID COLUMN: no column is complete and unique in the rows read. The pipeline needs one (a row whose id "
            "was seen before is quarantined, and the split hashes ids): add a unique id to the export under this "
            "name, or name yours here."
        )
    repeats = chosen.rows - chosen.distinct
    if given:
        if repeats or chosen.missing:
            return (
                f"Given with --id-column; {repeats:,} of its {chosen.rows:,} values repeat and {chosen.missing:,} are "
                "missing in the rows read: such rows are quarantined."
            )
        return f"Given with --id-column; unique in all {chosen.rows:,} rows read."
    others = ", ".join(c.name for c in candidates[1:]) or "none"
    named = " and named like an id" if named_like_id(chosen.name) else ""
    return (
        f"Unique in all {chosen.rows:,} rows read{named} (other unique columns: {others}). A row whose id was seen "
        "before is quarantined, and the split hashes ids."
    )


def _time_note(chosen: Column | None, candidates: list[Column]) -> str:
    if chosen is None:
        return (
            "NO EVENT-TIME COLUMN: no column holds times the pipeline reads (ISO 8601 text such as 2026-01-31 or "
            "2026-01-31T12:00:00Z, a timestamp type, or epoch seconds or milliseconds in a column named like a "
            "time). The pipeline needs one: every run collects the rows of its interval by it. Add when each row "
            "happened (UTC) to the export under this name, or name yours here."
        )
    others = "; ".join(f"{c.name} ({time_form_name(c)})" for c in candidates[1:]) or "none"
    seen = describe(chosen)
    return f"{seen[0].upper()}{seen[1:]} (other time columns: {others}). Rows are collected and checked by it, in UTC."


def _target_lines(target: Target) -> list[str]:
    column = target.column
    lines = []
    if target.task == "regression":
        lines += _comment(
            f"{column.distinct:,} distinct numbers from {number_text(column.values.min())} to "
            f"{number_text(column.values.max())}" + ("" if column.whole else " with fractions") + ": a regression.",
            2,
        )
    else:
        kind = {"boolean": "booleans, kept as booleans", "number": "whole numbers, kept as integers"}
        counts = ", ".join(f"{show(label)} {count:,}" for label, count in target.classes.items())
        lines += _comment(
            f"{len(target.classes)} classes: {counts}; {kind.get(column.kind, 'text labels, kept as text')}.", 2
        )
    lines += [f"  target: {flow(column.name)}", f"  task: {target.task}"]
    if column.missing:
        note = (
            f"{column.missing:,} of {column.rows:,} rows read have no label: true keeps such rows (a label that "
            "arrives later) on main and out of training."
        )
    else:
        note = "Every row read has a label; true keeps a row whose label arrives later (false would quarantine it)."
    lines += _comment(note, 2) + ["  target_nullable: true"]
    if target.task == "classification":
        lines.append(f"  target_classes: {flow(list(target.classes))}")
    positive = target.positive_class
    if positive is not None:
        labelled = sum(target.classes.values())
        default = max(target.classes)
        why = (
            "also the default, the greater label in sort order"
            if positive == default
            else f"the default would be {show(default)}, the greater label in sort order"
        )
        lines += _comment(
            f"The rarer class, {show(positive)} ({target.classes[positive]:,} of {labelled:,}, "
            f"{target.classes[positive] / labelled:.1%}): what average precision, F1, precision, recall and ROC AUC "
            f"are about ({why}).",
            2,
        )
        lines.append(f"  positive_class: {flow(positive)}")
    return lines


def _features_lines(features: list[FeatureDraft], sample: Sample) -> list[str]:
    rules = (
        "Ranges: each bound is ten times the largest value seen on its side of zero, rounded up to 1, 2 or 5 times "
        "a power of ten, and 0 where no value of that sign was seen (0 to 48 gives 0 to 500): loose enough that "
        "real new rows are not quarantined, tight enough to catch another unit or garbage; tighten them where you "
        "know better. Categorical features are open sets: any value is accepted, the model keeps the "
        "max_categories most frequent (100 by default) and any other counts as one 'other'; where other values "
        "are errors, list the values in `allowed` (a closed set: a row with another value is quarantined). "
        "nullable: true where the rows read have missing values."
    )
    lines = _comment(rules, 2) + ["  features:"]
    for feature in features:
        if feature.left_out:
            lines += _comment(f"Left out: {feature.left_out} ({feature.seen}).", 4)
            lines.append(f"    # - {flow(feature.entry)}")
        else:
            lines += _comment(feature.seen, 4) + [f"    - {flow(feature.entry)}"]
    left_out = [f.entry["name"] for f in features if f.left_out]
    if left_out and not isinstance(sample.origin, SqlRead):  # a drafted query selects the config's columns only
        lines += _comment(
            "The columns left out above, which the source holds: dropped at validation (a column the config does "
            "not name otherwise rejects the batch, as a change of the source's shape).",
            2,
        )
        lines.append(f"  ignored_columns: {flow(left_out)}")
    return lines


def _source_lines(
    sample: Sample,
    name: str,
    id_name: str,
    time_name: str,
    time: Column | None,
    features: list[FeatureDraft],
    target: Target,
    connection_id: str | None,
) -> list[str]:
    origin = sample.origin
    lines = ["", "source:"]
    if isinstance(origin, FilesRead):
        read = (
            f"{len(origin.files)} of the {origin.files_matching} matching files"
            if origin.files_matching > 1
            else "one file"
        )
        lines += ["  kind: files"]
        lines += _comment(
            f"Drafted from {read}. Every run reads the files under path that match pattern (`*` within a folder, "
            "`**/` across folders) and keeps the rows of its interval by event time; a relative path is relative "
            "to the project's root.",
            2,
        )
        lines += [f"  path: {flow(origin.path)}", f"  format: {origin.format}", f"  pattern: {flow(origin.pattern)}"]
    elif isinstance(origin, SqlRead):
        lines += ["  kind: sql"]
        if connection_id is not None:
            lines += [f"  connection_id: {flow(connection_id)}"]
        elif origin.url.password is not None:
            lines += _comment(
                f"The URL drafted from holds a password, which must not be in this file: make an Airflow connection "
                f"{name}_db for {origin.url.render_as_string(hide_password=True)}.",
                2,
            )
            lines += [f"  connection_id: {name}_db"]
        else:
            lines += [f"  url: {flow(origin.url.render_as_string(hide_password=False))}"]
        if time is not None:
            binding = {
                "timestamp": "UTC datetimes",
                "text": "ISO 8601 text",
                "epoch_seconds": "epoch seconds",
                "epoch_milliseconds": "epoch milliseconds",
            }[time.time_form]
            lines += _comment(f"{time.name} holds {time_form_name(time)}: :start and :end are bound as {binding}.", 2)
            lines += [f"  event_time_type: {time.time_form}"]
        lines += _comment(f"The columns this config names, for the run's interval [:start, :end) of {time_name}.", 2)
        lines += ["  query: |"] + [f"    {line}" for line in _sql(origin, id_name, time_name, features, target)]
    else:
        lines += _http_lines(origin, name)
    return lines


def _sql(origin: SqlRead, id_name: str, time_name: str, features: list[FeatureDraft], target: Target) -> list[str]:
    quote = origin.dialect.identifier_preparer.quote
    names = [id_name, time_name, *(f.entry["name"] for f in features if not f.left_out), target.column.name]
    selected = _wrapped([quote(n) for n in names], "SELECT ", "       ")
    if origin.table is not None:
        schema, _, table = origin.table.rpartition(".")
        source = [
            f"FROM {origin.dialect.identifier_preparer.quote_schema(schema) + '.' if schema else ''}{quote(table)}"
        ]
    else:
        query = origin.query.strip().rstrip(";")
        source = ["FROM ("] + [f"  {line}".rstrip() for line in query.splitlines()] + [") AS drafted_from"]
    time, row_id = quote(time_name), quote(id_name)
    return [*selected, *source, f"WHERE {time} >= :start AND {time} < :end", f"ORDER BY {time}, {row_id}"]


def _http_lines(origin: HttpRead, name: str) -> list[str]:
    # The interval a draft was read with is every run's own: its parameters are added to each request.
    url = httpx.URL(origin.url)
    url = url.copy_with(params=[(k, v) for k, v in url.params.multi_items() if k not in ("start", "end")])
    lines = ["  kind: http", f"  url: {flow(str(url))}", f"  format: {origin.format}"]
    if origin.format == "json":
        how = "found by infer_config, the one list of objects in the body" if origin.records_path_found else "as given"
        lines += _comment(f"Where the records are in the JSON body ({how}).", 2)
        lines += [f"  records_path: {flow(origin.records_path)}"]
    lines += _comment(
        "Each request asks for the run's interval as ?start=...&end=... (ISO 8601): set start_param and end_param "
        "to the API's own names. One answer was read while drafting: set pagination if the API pages.",
        2,
    )
    lines += ["  start_param: start", "  end_param: end"]
    if origin.headers:
        lines += ["  headers:"]
        for header, value in origin.headers.items():
            if not is_credential_header(header):
                lines += [f"    {flow(header)}: {flow(value)}"]
                continue
            variable = re.sub(r"[^A-Z0-9]+", "_", f"{name}_{header}".upper()).strip("_")
            scheme = re.match(r"(Bearer|Basic|Token|ApiKey) ", value, re.IGNORECASE)
            secret = {"env": variable} | ({"prefix": scheme.group(0)} if scheme else {})
            lines += _comment(
                f"A credential: the value given while drafting is not written. The workers read it from the "
                f"environment variable {variable}; or write {{connection: <an Airflow connection id>}} for a "
                "connection's password.",
                4,
            )
            lines += [f"    {flow(header)}: {flow(secret)}"]
    return lines


def _validation_lines(time: Column | None) -> list[str]:
    """A day may quarantine about QUARANTINED_A_DAY rows (the share of its rows, from 1 % to 5 %) before it is
    rejected: the ranges and nullability come from a sample, and one row they did not foresee must not reject a
    day of a hundred."""
    per_day = _rows_a_day(time)
    share = 0.01 if per_day is None else min(0.05, max(0.01, math.ceil(100 * QUARANTINED_A_DAY / per_day) / 100))
    return [
        "",
        "validation:",
        "  empty_batch: fail",
        *_comment(
            "The ranges and nullability above come from a sample: a few rows a day they did not foresee (about "
            f"{QUARANTINED_A_DAY}{'' if per_day is None else f' of the {per_day:,.0f} a day'}) go to quarantine, "
            "with a report, instead of rejecting the day. Lower it once they are right.",
            2,
        ),
        f"  max_invalid_row_fraction: {share}",
    ]


def _rows_a_day(time: Column | None) -> float | None:
    if time is None:
        return None
    times = as_times(time)
    return len(times) / ((times.max().normalize() - times.min().normalize()).days + 1)


def _training_lines(time: Column | None) -> list[str]:
    lines = ["", "training:"]
    if time is not None:
        times = as_times(time)
        days = (times.max().normalize() - times.min().normalize()).days + 1
        lines += _comment(
            f"The rows read span {times.min():%Y-%m-%d} to {times.max():%Y-%m-%d} ({days:,} days, about "
            f"{_rows_a_day(time):,.0f} rows a day); each run trains on the last window_days of them.",
            2,
        )
    return lines + ["  window_days: 30"]


def _model_lines(target: Target, name: str) -> list[str]:
    registered = f"{name}_{'classifier' if target.task == 'classification' else 'regressor'}"
    metric, why = _primary_metric(target)
    lines = ["", "model:", f"  registered_name: {registered}"]
    lines += _comment(why, 2) + [f"  primary_metric: {metric}"]
    if target.task == "classification":
        rarest, commonest = min(target.classes.values()), max(target.classes.values())
        if commonest >= IMBALANCE_RATIO * rarest:
            lines += _comment(
                f"The classes are imbalanced ({commonest:,} rows of the commonest to {rarest:,} of the rarest): "
                "each class weighs the same in total.",
                2,
            )
            lines += ["  class_weight: balanced"]
        else:
            lines += _comment(f"The classes are about even ({commonest:,} to {rarest:,} rows).", 2)
            lines += ["  class_weight: none"]
    lines += ["  random_seed: 42"]
    lines += _comment(
        "A linear model and gradient-boosted trees (LightGBM), both quick to fit and both converted to ONNX "
        "(DEFAULT_CANDIDATES in include/mlops/infer_config.py); the gate keeps the better on the validation split.",
        2,
    )
    lines += ["  candidates:"]
    for candidate in DEFAULT_CANDIDATES[target.task]:
        lines += [f"    - name: {candidate['name']}", f"      estimator: {candidate['estimator']}"]
        lines += [f"      params: {flow(candidate['params'])}"]
    return lines


def _primary_metric(target: Target) -> tuple[str, str]:
    if target.task == "regression":
        return (
            "rmse",
            "RMSE, in the target's own units: large errors weigh more than small ones (mae if they should not).",
        )
    if len(target.classes) > 2:
        return "f1", (
            f"{len(target.classes)} classes: F1 averaged over the classes (macro), so a rare class counts as much as "
            "a frequent one."
        )
    positive = target.positive_class
    share = target.classes[positive] / sum(target.classes.values())
    if share < RARE_POSITIVE_SHARE:
        return "average_precision", (
            f"{show(positive)} is {share:.1%} of the labels, rare: average precision measures how well the few are "
            "ranked first (ROC AUC stays high on a rare class even when the top of the ranking is poor)."
        )
    return "roc_auc", (
        f"{show(positive)} is {share:.1%} of the labels, not rare: ROC AUC, which does not move with the share of "
        f"{show(positive)} rows from day to day."
    )


def _comment(text: str, indent: int) -> list[str]:
    prefix = " " * indent + "# "
    return textwrap.wrap(
        text,
        width=_WIDTH,
        initial_indent=prefix,
        subsequent_indent=prefix,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _wrapped(items: list[str], first: str, then: str) -> list[str]:
    """`items` joined by commas over lines of at most _WIDTH characters, never breaking an item."""
    lines, line = [], first
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if line not in (first, then) and len(line) + 1 + len(piece) > _WIDTH - 4:
            lines.append(line.rstrip())
            line = then
        line += piece if line in (first, then) else " " + piece
    return [*lines, line]


# --- the command ---


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.mlops.infer_config", description=__doc__.splitlines()[0])
    parser.add_argument(
        "source",
        help="a CSV or Parquet file, a folder or a glob of them; a SQLAlchemy URL (with --table or --query); or an "
        "http(s) URL answering JSON records or CSV",
    )
    parser.add_argument("--target", required=True, help="the column to predict")
    parser.add_argument(
        "--name", required=True, help="dataset.name; the model is <name>_classifier or <name>_regressor"
    )
    parser.add_argument(
        "--format",
        choices=["csv", "parquet", "json"],
        help="default: from the files' names or the answer's Content-Type",
    )
    parser.add_argument("--table", help="SQL: the table to read ([schema.]table)")
    parser.add_argument("--query", help="SQL: a query to read, without :start/:end")
    parser.add_argument("--connection-id", help="SQL: the Airflow connection to write instead of the URL")
    parser.add_argument("--records-path", help="HTTP JSON: dotted path to the list of records (default: found)")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help="HTTP: a request header")
    parser.add_argument("--id-column", help="the id column, instead of the inferred one")
    parser.add_argument("--event-time-column", help="the event-time column, instead of the inferred one")
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="rows to read at most")
    # `~` too: inside make's ARGS="..." quotes the shell leaves it as it is.
    parser.add_argument(
        "--output", "-o", type=lambda v: Path(v).expanduser(), help="a new file to write (default: standard output)"
    )
    args = parser.parse_args(argv)
    kind = _kind_of_source(args.source)
    if kind == "s3":
        parser.error("S3 is not read here: draft from a local copy of one file, then set source.path to the prefix")
    options = {
        "files": {"format"},
        "sql": {"table", "query", "connection_id"},
        "http": {"format", "records_path", "header"},
    }
    source_options = set().union(*options.values())
    if wrong := sorted(o for o in source_options - options[kind] if getattr(args, o)):
        parser.error(f"{', '.join('--' + o.replace('_', '-') for o in wrong)}: not for a {kind} source")
    if args.format and args.format not in {"files": ("csv", "parquet"), "http": ("json", "csv")}[kind]:
        parser.error(f"--format {args.format}: not for a {kind} source")
    if kind == "sql" and (args.table is None) == (args.query is None):
        parser.error("a SQL source needs one of --table or --query")
    try:
        if kind == "files":
            sample = read_files(str(Path(args.source).expanduser()), args.max_rows, args.format)
        elif kind == "sql":
            sample = read_sql(args.source, args.max_rows, table=args.table, query=args.query)
        else:
            headers = dict(_header(h, parser) for h in args.header)
            sample = read_http(args.source, args.max_rows, args.format, args.records_path, headers)
        text = draft_config(sample, args.target, args.name, args.id_column, args.event_time_column, args.connection_id)
    except (SampleError, DraftError) as exc:
        print(f"infer_config: {exc}", file=sys.stderr)
        return 1
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        with args.output.open("x") as file:  # a hand-edited config is never replaced by a draft
            file.write(text)
    except OSError as exc:
        print(f"infer_config: {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f'wrote {args.output}: review it, then `make run ARGS="--config {args.output}"`', file=sys.stderr)
    return 0


def _kind_of_source(source: str) -> Literal["files", "s3", "sql", "http"]:
    """By the URL's scheme: any other than these is a database's (sqlite, postgresql+psycopg2, ...)."""
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    return {"": "files", "http": "http", "https": "http", "s3": "s3"}.get(scheme, "sql")


def _header(text: str, parser: argparse.ArgumentParser) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        parser.error(f"--header {text!r} must be 'NAME: VALUE'")
    return name.strip(), value.strip()


if __name__ == "__main__":
    sys.exit(main())
