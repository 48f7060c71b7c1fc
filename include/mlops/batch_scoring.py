"""Batch scoring: a model's champion scores rows kept in lakeFS, chunk by chunk, into Parquet beside them.

A run resolves `champion` once (`resolve_model`) and hands on a `ScoringModel`: the version, its store tag and the
SHA-256 of its ONNX bytes, the same bytes the model service serves. Each chunk task loads the bytes again by
(tag, SHA-256) (`load_model`, refusing any others), so a champion that moves during the run never mixes versions.

The input is Parquet files under one prefix at one lakeFS commit (`plan_chunks`). A chunk is a run of row groups of
one file, at most `chunk_rows` rows, scored by one mapped task that reads those row groups only (lakeFS range reads),
and is described by small JSON values (`Chunk`). Row groups, not the files' bytes, bound a task's memory: Parquet
compresses some columns a hundredfold (4.5 MiB held a million penguin rows), so a file's size says little of the
frame it becomes, while its footer gives each row group's rows without reading the rest.

    predictions/<model>/<key>/part-<index>.parquet              the scored rows of chunk <index>
    predictions/<model>/<key>/quarantine/part-<index>.parquet   its rows that failed the model's schema
    predictions/<model>/<key>/quarantine/part-<index>.json      the report: each check, column and row count

A scored row has the input's id, `prediction` (the label as the data holds it, or the value), for a classifier one
float64 column `probability_<class>` per class it knows (not one JSON column: SQL and pandas filter and average
them without parsing, and Parquet keeps them typed and small), `model_version`, `airflow_run_id` and `scored_at`.

`<key>` names the data interval (`interval_key`), the input's content (`content_key`) or the lakeFS commit and prefix
it was read from (`lakefs_key`), and a part's name comes from its chunk's index: a retried chunk or a re-run
interval overwrites its own files and adds none.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from include.mlops import classes, deployment, lakefs_repository, object_store, packaging, validation
from include.mlops.config import PipelineConfig

if TYPE_CHECKING:
    import lakefs
    from mlflow.tracking import MlflowClient

OnInvalid = Literal["quarantine", "fail"]
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "probability_"
# Rows one task holds: 250,000 rows of 8 columns took ~210 MiB above the interpreter to read, check, score and write
# (a million took ~580 MiB).
CHUNK_ROWS = 250_000
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")
_PART = re.compile(r"^(?:quarantine/)?part-(\d+)\.(?:parquet|json)$")
_SCORED_PART = re.compile(r"^part-\d+\.parquet$")  # a chunk's scored rows or input, not its quarantine


class NoChampion(LookupError):
    """The model has no `champion` yet: there is nothing to score with (the run skips)."""


class ModelUnavailable(RuntimeError):
    """The champion's ONNX bytes are not where they should be (not published, or the store does not answer)."""


class ChecksumMismatch(RuntimeError):
    """Bytes that are not the model the run resolved: their SHA-256 differs from the one it recorded."""


class InvalidInput(ValueError):
    """A chunk has rows that fail the model's schema, and the run was told to fail on them."""


@dataclass(frozen=True)
class ScoringModel:
    """The one version a batch run scores with, and where it comes from. `to_dict` is what the run hands on to its
    chunk tasks (without the bytes, which each loads again by tag and SHA-256: `reload`)."""

    name: str
    version: str
    tag: str  # in the BentoML model store and the object store: `<model>:v<version>`
    sha256: str  # of the ONNX bytes
    mlflow_run_id: str  # the MLflow run that trained it
    lakefs_repository: str  # where its training data is
    lakefs_commit: str  # the commit of its training snapshot
    resolved_at: dt.datetime  # when the run resolved `champion`: every row of the run is `scored_at` this instant
    onnx_bytes: bytes = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, str]:
        values = {k: v for k, v in asdict(self).items() if k != "onnx_bytes"}
        return values | {"resolved_at": self.resolved_at.isoformat()}


@dataclass(frozen=True)
class Chunk:
    """Row groups of one input file: the chunk's place in the input (which names its output part), the commit it is
    read at, the file, its row groups and their rows, and the ids of its rows that an earlier chunk has (as text:
    `validation.ids_as_text`), whose rows here are duplicates. Those travel through XCom: none as a rule, but a
    file sent twice in one input puts each of its ids there (250,000 ids of 13 characters: ~4 MiB of JSON)."""

    index: int
    ref: str
    path: str
    row_groups: list[int]
    rows: int
    seen_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Chunk:
        groups = [int(g) for g in values["row_groups"]]
        seen = [str(i) for i in values["seen_ids"]]
        return cls(int(values["index"]), str(values["ref"]), str(values["path"]), groups, int(values["rows"]), seen)


@dataclass(frozen=True)
class ChunkSummary:
    """What scoring one chunk did: rows in, scored, quarantined, where it wrote, and the failed checks
    (`<check>:<column>` -> rows)."""

    index: int
    input_path: str
    rows_in: int
    rows_scored: int
    rows_quarantined: int
    path: str
    quarantine_path: str | None
    failed_checks: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ChunkSummary:
        return cls(**{name: values[name] for name in cls.__dataclass_fields__})


def resolve_model(client: MlflowClient, store: object_store.ObjectStore | None, config: PipelineConfig) -> ScoringModel:
    """The model's `champion`, asked of the registry once, with its ONNX bytes: from the object store `store` when
    one is configured, else from the BentoML model store, checked against their SHA-256 either way. Raises
    NoChampion without one; ObjectStoreError (its kind kept, naming the endpoint, the model and the version) or
    ModelUnavailable when the bytes cannot be had; ChecksumMismatch when they are not the ones recorded."""
    # MLflow is imported here, not with the module: only this step asks the registry, and each chunk task's process
    # would import it (about a second) for nothing.
    from include.mlops import registry

    name = config.name
    found = registry.version_by_alias(client, name, registry.CHAMPION)
    if found is None:
        raise NoChampion(
            f"{name} has no {registry.CHAMPION} in the MLflow registry yet: there is nothing to score with"
        )
    resolved_at = dt.datetime.now(dt.UTC)
    version = str(found.version)
    tag = deployment.model_store_tag(config, version)
    onnx_bytes, sha256 = _load(store, tag, None)
    tags = dict(found.tags or {})
    return ScoringModel(
        name=name,
        version=version,
        tag=tag,
        sha256=sha256,
        mlflow_run_id=found.run_id or tags.get("mlflow_run_id", ""),
        lakefs_repository=tags.get("lakefs_repository", ""),
        lakefs_commit=tags.get("lakefs_commit", ""),
        resolved_at=resolved_at,
        onnx_bytes=onnx_bytes,
    )


def load_model(store: object_store.ObjectStore | None, tag: str, sha256: str) -> bytes:
    """The ONNX bytes of `tag`, from the object store `store` or else the BentoML model store, as long as their
    SHA-256 is `sha256` (ChecksumMismatch names both otherwise). MLflow is not asked: `champion` may have moved."""
    return _load(store, tag, sha256)[0]


def reload(store: object_store.ObjectStore | None, described: Mapping[str, str]) -> ScoringModel:
    """The ScoringModel `described` (what `ScoringModel.to_dict` gave), its bytes loaded again by tag and SHA-256."""
    values = {name: described[name] for name in ScoringModel.__dataclass_fields__ if name != "onnx_bytes"}
    values["resolved_at"] = dt.datetime.fromisoformat(described["resolved_at"])
    return ScoringModel(**values, onnx_bytes=load_model(store, described["tag"], described["sha256"]))


def _load(store: object_store.ObjectStore | None, tag: str, expected: str | None) -> tuple[bytes, str]:
    """The bytes of `tag` and their SHA-256, checked against what the store recorded for it and `expected`."""
    name, _, version = tag.partition(":")
    what = f"{name} {version} ({tag})"
    if store is not None:
        try:
            onnx_bytes, published = object_store.fetch(store, tag)
        except object_store.ChecksumMismatch as exc:
            raise ChecksumMismatch(f"{what}: {exc}") from exc
        except object_store.ObjectNotFound as exc:
            raise object_store.ObjectNotFound(f"{what} is not published in {store.url}: {exc}") from exc
        except object_store.ObjectStoreError as exc:
            raise type(exc)(f"{what}: {exc}") from exc
        recorded, where = published.sha256, f"s3://{store.bucket}/{published.key}"
    else:
        from bentoml.exceptions import NotFound

        try:
            stored = deployment.stored_model(tag)
        except NotFound as exc:
            raise ModelUnavailable(f"{what}: {exc} (no object store is configured to fetch it from)") from exc
        where = stored.path_of(deployment.MODEL_FILE)
        try:
            onnx_bytes = Path(where).read_bytes()
        except OSError as exc:
            raise ModelUnavailable(f"{what}: {where} cannot be read ({exc.strerror})") from exc
        recorded = stored.info.labels.get(deployment.SHA256_LABEL, "")
        if not recorded:
            raise ModelUnavailable(f"{what}: the BentoML model store has no {deployment.SHA256_LABEL} label for it")
    got = hashlib.sha256(onnx_bytes).hexdigest()
    if got != recorded:
        raise ChecksumMismatch(f"{what}: {where} has sha256 {got}, the store recorded {recorded}")
    if expected is not None and got != expected:
        raise ChecksumMismatch(f"{what}: {where} has sha256 {got}, the run resolved sha256 {expected}")
    return onnx_bytes, got


def interval_key(start: dt.datetime, end: dt.datetime) -> str:
    """The output key of the data interval [start, end): `20261107T000000Z_20261108T000000Z`."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError(f"the interval [{start}, {end}) needs times with a time zone")
    if end <= start:
        raise ValueError(f"the interval [{start.isoformat()}, {end.isoformat()}) is empty")
    return f"{start.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}_{end.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"


def content_key(blocks: Iterable[bytes]) -> str:
    """The output key of an input known by its content (an event-driven run's files, their bytes `blocks` in
    order): `sha256-<hex>`."""
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(block)
    return f"sha256-{digest.hexdigest()}"


def lakefs_key(commit: str, prefix: str) -> str:
    """The output key of the objects under `prefix` at lakeFS commit `commit` (a batch of a lakeFS path):
    `lakefs-<commit>-<first 16 hex digits of the prefix's SHA-256>`."""
    return f"lakefs-{commit}-{hashlib.sha256(prefix.encode()).hexdigest()[:16]}"


def output_prefix(config: PipelineConfig, key: str) -> str:
    """`predictions/<model>/<key>/`; `key` is one path segment (`interval_key`, `content_key`, `lakefs_key`)."""
    if not _KEY.match(key):
        raise ValueError(
            f"output key {key!r}: one path segment of letters, digits, '.', '_', '=' and '-' "
            "(interval_key, content_key, lakefs_key)"
        )
    return f"predictions/{config.name}/{key}/"


def plan_chunks(
    repo: lakefs.Repository, ref: str, prefix: str, id_column: str, chunk_rows: int = CHUNK_ROWS
) -> list[Chunk]:
    """The chunks of the Parquet files under `prefix` at `ref`: in path order, each file's consecutive row groups
    up to `chunk_rows` rows (a larger row group is a chunk of its own), all read at the commit `ref` points to now
    (so that every chunk task reads the same input). An empty list: no input rows. Raises ValueError naming any
    object under `prefix` that is not a `.parquet` file, and VersioningError naming a `.parquet` file that is not
    Parquet.

    Besides the footers, the column `id_column` is read (a file without it is left to the chunk's checks): an id
    a chunk shares with an earlier chunk is in its `seen_ids`, so that its rows there are quarantined as
    duplicates, as a repeated id within one chunk is, and the first row of each id is the one scored."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows}: a chunk holds at least one row")
    commit = lakefs_repository.head_commit(repo, ref)
    objects = lakefs_repository.list_objects(repo, commit, prefix)
    if others := [o.path for o in objects if not o.path.endswith(".parquet")]:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ValueError(f"input {prefix!r} at {ref!r} in {repo.id!r} holds objects that are not Parquet: {shown}")
    chunks: list[Chunk] = []
    for entry in objects:
        groups: list[int] = []
        rows = 0
        for group, group_rows in enumerate(lakefs_repository.parquet_row_groups(repo, commit, entry.path)):
            if groups and rows + group_rows > chunk_rows:
                chunks.append(Chunk(len(chunks), commit, entry.path, groups, rows))
                groups, rows = [], 0
            if group_rows:
                groups.append(group)
                rows += group_rows
        if groups:
            chunks.append(Chunk(len(chunks), commit, entry.path, groups, rows))
    return _with_seen_ids(repo, chunks, id_column)


def _with_seen_ids(repo: lakefs.Repository, chunks: list[Chunk], id_column: str) -> list[Chunk]:
    """`chunks`, each with the ids it shares with an earlier one."""
    ids, owners = [], []
    for chunk in chunks:
        read = lakefs_repository.read_parquet_row_groups(repo, chunk.ref, chunk.path, chunk.row_groups, [id_column])
        if id_column in read.columns:
            ids.append(validation.ids_as_text(read[id_column]))
            owners.append(np.full(len(read), chunk.index))
    if not ids:
        return chunks
    rows = pd.DataFrame({"id": pd.concat(ids, ignore_index=True), "chunk": np.concatenate(owners)}).dropna()
    first = rows.groupby("id", sort=False)["chunk"].transform("min")
    repeated = rows[first < rows["chunk"]].drop_duplicates()
    seen = repeated.groupby("chunk")["id"].agg(sorted).to_dict()
    return [replace(c, seen_ids=[str(i) for i in seen.get(c.index, [])]) for c in chunks]


def part_path(prefix: str, index: int) -> str:
    return f"{prefix}part-{index:05d}.parquet"


def quarantine_paths(prefix: str, index: int) -> tuple[str, str]:
    """The quarantined rows (Parquet) and the report (JSON) of chunk `index`."""
    return f"{prefix}quarantine/part-{index:05d}.parquet", f"{prefix}quarantine/part-{index:05d}.json"


def score_chunk(
    repo: lakefs.Repository,
    branch: str,
    config: PipelineConfig,
    model: ScoringModel,
    chunk: Chunk,
    prefix: str,
    airflow_run_id: str,
    on_invalid: OnInvalid,
) -> ChunkSummary:
    """Score one chunk into `<prefix>part-<index>.parquet` on `branch`, overwriting what an earlier try wrote.

    Each row is checked against the model's schema (`validation.validate_for_scoring`); failing rows go to
    quarantine with a report. With `on_invalid="fail"` any failing row raises InvalidInput naming the chunk and the
    checks (the quarantine is written first, as the evidence), and no part is written. A row scored carries its id,
    the prediction (the label as the data holds it, or the value), one `probability_<class>` column per class of a
    classifier, `model_version`, `airflow_run_id` and `scored_at` (the run's `model.resolved_at`, so that a retry
    writes the same bytes).
    """
    if on_invalid not in ("quarantine", "fail"):
        raise ValueError(f"on_invalid={on_invalid!r}: expected 'quarantine' or 'fail'")
    frame = lakefs_repository.read_parquet_row_groups(repo, chunk.ref, chunk.path, chunk.row_groups)
    groups = ", ".join(map(str, chunk.row_groups))
    what = f"chunk {chunk.index} ({chunk.path} row group(s) {groups} at {chunk.ref[:12]})"
    checked = validation.validate_for_scoring(frame, config.dataset, config.validation, what, chunk.seen_ids)
    report = checked.report
    failed = {f"{f.check}:{f.column}" if f.column else f.check: f.rows for f in report.failures}
    quarantined_path, report_path = quarantine_paths(prefix, chunk.index)
    if report.rows_quarantined:
        lakefs_repository.write_parquet(repo, branch, quarantined_path, checked.quarantined)
        document = {
            **report.to_dict(),
            "input_path": chunk.path,
            "input_row_groups": chunk.row_groups,
            "input_ref": chunk.ref,
            "model_version": model.version,
        }
        lakefs_repository.write_bytes(
            repo, branch, report_path, json.dumps(document, indent=1).encode(), content_type="application/json"
        )
        if on_invalid == "fail":
            raise InvalidInput(f"{report.summary()}\nquarantined in {quarantined_path} on branch {branch!r}")
    else:
        # An earlier run of the same interval may have quarantined rows of this chunk: its files go.
        stale = [p for p in (quarantined_path, report_path) if lakefs_repository.object_exists(repo, branch, p)]
        lakefs_repository.delete_objects(repo, branch, stale)

    scored = predictions(model, config, checked.valid, airflow_run_id)
    path = part_path(prefix, chunk.index)
    metadata = {
        "model_version": model.version,
        "onnx_sha256": model.sha256,
        "input_path": chunk.path,
        "input_row_groups": groups,
        "input_ref": chunk.ref,
        "airflow_run_id": airflow_run_id,
    }
    lakefs_repository.write_parquet(repo, branch, path, scored, metadata)
    return ChunkSummary(
        index=chunk.index,
        input_path=chunk.path,
        rows_in=report.rows_in,
        rows_scored=len(scored),
        rows_quarantined=report.rows_quarantined,
        path=path,
        quarantine_path=quarantined_path if report.rows_quarantined else None,
        failed_checks=failed,
    )


def predictions(model: ScoringModel, config: PipelineConfig, valid: pd.DataFrame, airflow_run_id: str) -> pd.DataFrame:
    """The output rows for validated rows `valid`, predicted as the model service predicts: the same feeds, an
    onnxruntime session on one thread (a row's answer does not depend on its chunk), the same labels and class
    keys (`classes.label_of`, `classes.text_of`)."""
    dataset = config.dataset
    rows = len(valid)
    columns: dict[str, Any] = {dataset.id_column: valid[dataset.id_column].astype("string").to_numpy()}
    outputs = deployment.onnx_outputs(packaging.session(model.onnx_bytes, threads=1), dataset, valid) if rows else None
    if dataset.task == "regression":
        values = outputs[packaging.VALUE_OUTPUT].reshape(-1) if outputs else []
        columns[PREDICTION_COLUMN] = pd.Series(values, dtype="float64").to_numpy()
    else:
        model_classes = packaging.onnx_classes(model.onnx_bytes)
        labels = {c: classes.label_of(c, dataset) for c in model_classes}
        predicted = outputs[packaging.LABEL_OUTPUT].reshape(-1).tolist() if outputs else []
        columns[PREDICTION_COLUMN] = pd.Series(
            [labels[p] for p in predicted], dtype=_LABEL_DTYPES[classes.kind_of(dataset)]
        )
        probabilities = outputs[packaging.PROBABILITIES_OUTPUT] if outputs else None
        for position, label in enumerate(labels.values()):
            values = probabilities[:, position] if probabilities is not None else []
            columns[PROBABILITY_PREFIX + classes.text_of(label)] = pd.Series(values, dtype="float64").to_numpy()
    scored = pd.DataFrame(columns, index=range(rows))
    scored["model_version"] = pd.Series([model.version] * rows, dtype="string")
    scored["airflow_run_id"] = pd.Series([airflow_run_id] * rows, dtype="string")
    scored["scored_at"] = pd.Series([model.resolved_at] * rows, dtype="datetime64[us, UTC]")
    return scored


_LABEL_DTYPES = {"text": "string", "integer": "int64", "boolean": "bool"}


def stale_outputs(repo: lakefs.Repository, branch: str, prefix: str, chunks: int) -> list[str]:
    """Delete what an earlier run of the same key wrote under `prefix` for chunks this run does not have (an input
    of more chunks then); returns the paths deleted."""
    stale = []
    for entry in lakefs_repository.list_objects(repo, branch, prefix):
        match = _PART.match(entry.path.removeprefix(prefix))
        if match is None or int(match.group(1)) >= chunks:
            stale.append(entry.path)
    lakefs_repository.delete_objects(repo, branch, stale)
    return stale


def commit_metadata(
    model: ScoringModel,
    airflow_run_id: str,
    input_ref: str,
    summaries: Sequence[ChunkSummary],
    input_source: str | None = None,
) -> dict[str, str]:
    """The lineage of a batch run's lakeFS commit: the model (name, version, tag, SHA-256, its MLflow run and
    training data commit), the Airflow run, the input commit, where the input was read from when it was a lakeFS
    path (`input_source`: its URI at the commit read), and the rows in, scored and quarantined."""
    read_from = {"input_source": input_source} if input_source else {}
    return {
        "model_name": model.name,
        "model_version": model.version,
        "bentoml_model_tag": model.tag,
        "onnx_sha256": model.sha256,
        "mlflow_run_id": model.mlflow_run_id,
        "training_lakefs_commit": model.lakefs_commit,
        "airflow_run_id": airflow_run_id,
        "input_ref": input_ref,
        **read_from,
        "chunks": str(len(summaries)),
        "rows_in": str(sum(s.rows_in for s in summaries)),
        "rows_scored": str(sum(s.rows_scored for s in summaries)),
        "rows_quarantined": str(sum(s.rows_quarantined for s in summaries)),
    }


def read_scored(
    repo: lakefs.Repository, ref: str, input_prefix: str, prefix: str, id_column: str, at_most: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A batch's scored rows (the parts under `prefix`, not the quarantine) at `ref`, at most `at_most` of them
    drawn at random (`seed`: the same ones for the same batch), and the input rows (under `input_prefix`) with
    their ids. Both are read one part at a time, keeping only the drawn rows and ids, so that a batch of millions
    of rows costs one part and the drawn rows, not all its predictions and features."""

    def paths(under: str) -> list[str]:
        listed = lakefs_repository.list_objects(repo, ref, under)
        return [o.path for o in listed if _SCORED_PART.match(o.path[len(under) :])]

    scored_paths = paths(prefix)
    counts = [sum(lakefs_repository.parquet_row_groups(repo, ref, p)) for p in scored_paths]
    positions = None
    if sum(counts) > at_most:
        # The positions pandas' sample draws from the whole batch (it draws from the length alone), read a part
        # at a time: the batch's predictions are never all in memory at once.
        everyone = pd.RangeIndex(sum(counts)).to_series()
        positions = np.sort(everyone.sample(n=at_most, random_state=seed).to_numpy())
    scored_parts, offset = [], 0
    for path, count in zip(scored_paths, counts, strict=True):
        part = lakefs_repository.read_parquet(repo, ref, path)
        if positions is not None:
            part = part.iloc[positions[(positions >= offset) & (positions < offset + count)] - offset]
        scored_parts.append(part)
        offset += count
    scored = pd.concat(scored_parts, ignore_index=True) if scored_parts else pd.DataFrame()
    if scored.empty:
        return pd.DataFrame(), scored
    drawn = set(scored[id_column].astype("string"))
    inputs = []
    for path in paths(input_prefix):
        part = lakefs_repository.read_parquet(repo, ref, path)
        if id_column in part.columns:
            inputs.append(part[part[id_column].astype("string").isin(drawn)])
    return (pd.concat(inputs, ignore_index=True) if inputs else pd.DataFrame()), scored


def as_traffic(config: PipelineConfig, inputs: pd.DataFrame, scored: pd.DataFrame) -> pd.DataFrame:
    """The scored rows as a drift check reads live traffic (`monitoring.read_live_window`'s frame): each one's
    features from the input, `prediction` as the inference log holds it (the label's text, or the value),
    `probabilities` ({class text: probability}) for a classifier, `record_id` and `model_version`."""
    dataset = config.dataset
    features = [f.name for f in dataset.features]
    columns = [*features, PREDICTION_COLUMN, "probabilities", "record_id", "model_version"]
    if scored.empty:
        return pd.DataFrame(columns=columns)
    # An id repeated across chunks was scored once per chunk: the input's last row of it, as with live rows.
    rows = inputs[features].assign(record_id=inputs[dataset.id_column].astype("string").to_numpy())
    rows = rows.drop_duplicates("record_id", keep="last")
    outputs = scored.assign(record_id=scored[dataset.id_column].astype("string").to_numpy())
    joined = outputs.drop_duplicates("record_id", keep="last").merge(rows, on="record_id", how="inner")
    if dataset.task == "regression":
        joined["probabilities"] = None
    else:
        joined[PREDICTION_COLUMN] = [classes.text_of(label) for label in joined[PREDICTION_COLUMN]]
        named = [c for c in joined.columns if c.startswith(PROBABILITY_PREFIX)]
        texts = [c.removeprefix(PROBABILITY_PREFIX) for c in named]
        joined["probabilities"] = [dict(zip(texts, p, strict=True)) for p in joined[named].to_numpy().tolist()]
    return joined[columns].reset_index(drop=True)


def labels_of(config: PipelineConfig, inputs: pd.DataFrame) -> pd.DataFrame | None:
    """The input's rows with their labels when it has any (a target column not all empty), else None."""
    target = config.dataset.target
    if target not in inputs or inputs[target].isna().all():
        return None
    return inputs[[config.dataset.id_column, target]]
