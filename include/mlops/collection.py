"""Collection and validation of a run's batches on its lakeFS branch.

A run collects one partition per day, `raw/<dataset>/date=YYYY-MM-DD/part-0000.parquet`, first as the source
gave it (staged, uncommitted), then validates it. What passes is rewritten with canonical types; what fails
is kept on the run branch under `quarantine/` in a commit of its own, with its report, and never reaches
`main`. A partition whose validated content is what the branch already has is left unchanged, so running the
same interval again changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import lakefs
import pandas as pd

from include.mlops import lakefs_repository
from include.mlops.config import Dataset, PipelineConfig
from include.mlops.sources import Fetched
from include.mlops.validation import ValidationReport, validate_batch

Fetch = Callable[[dt.datetime, dt.datetime], Fetched]
SHA256_KEY = "sha256"


class ValidationFailed(RuntimeError):
    """At least one batch was rejected; it is in quarantine on the run branch, and main is untouched."""


@dataclass(frozen=True)
class StagedPartition:
    day: str
    path: str
    start: str
    end: str
    rows: int
    outside_interval: int = 0  # rows the source gave for the day that were not of it (left out)


@dataclass(frozen=True)
class PartitionOutcome:
    path: str
    day: str
    status: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    changed: bool


def collection_days(
    interval_end: dt.datetime, lag_days: int, history_days: int
) -> list[tuple[dt.datetime, dt.datetime]]:
    """The whole UTC days a run collects: `history_days` of them, ending `lag_days` before its interval ends."""
    if history_days < 1:
        raise ValueError(f"history_days must be at least 1, not {history_days}")
    end = interval_end.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end -= dt.timedelta(days=lag_days)
    return [(end - dt.timedelta(days=n), end - dt.timedelta(days=n - 1)) for n in range(history_days, 0, -1)]


def raw_partition_path(dataset: str, day: dt.date) -> str:
    return f"raw/{dataset}/date={day:%Y-%m-%d}/part-0000.parquet"


def incoming_path(raw_path: str) -> str:
    """Where a partition waits, as collected, until validation: never committed, never on `main`."""
    return "incoming/" + raw_path.removeprefix("raw/")


def quarantine_prefix(dataset: str, day: str) -> str:
    return f"quarantine/{dataset}/date={day}/"


def stage_raw(
    repo: lakefs.Repository,
    branch: str,
    dataset: Dataset,
    fetch: Fetch,
    days: list[tuple[dt.datetime, dt.datetime]],
) -> list[StagedPartition]:
    """Fetch each day from the source and stage it, as given, under `incoming/` on `branch`."""
    staged = []
    for start, end in days:
        fetched = fetch(start, end)
        path = raw_partition_path(dataset.name, start.date())
        lakefs_repository.write_parquet(repo, branch, incoming_path(path), _as_stored(fetched.rows))
        day = f"{start:%Y-%m-%d}"
        rows = len(fetched.rows)
        staged.append(StagedPartition(day, path, start.isoformat(), end.isoformat(), rows, fetched.outside_interval))
    return staged


def validate_staged(
    repo: lakefs.Repository,
    branch: str,
    config: PipelineConfig,
    partitions: list[StagedPartition],
    metadata: Mapping[str, str],
) -> tuple[list[PartitionOutcome], str | None]:
    """Validate the collected partitions; return their outcomes and the quarantine commit's id, if one was made.

    Accepted rows are staged at their raw path with canonical types (a partition equal to what `branch` has
    committed is left alone); rejected rows and the reports are committed under `quarantine/` on `branch`
    (with `metadata`), then staged for removal, so that the next commit, and `main`, hold only validated data.
    If any batch is rejected, `ValidationFailed` names each failure and the quarantine stays on the branch.

    A retried task finds its first try's work: a partition whose `incoming/` copy is gone was validated
    already, and its raw copy validates again unchanged; quarantine the first try staged is committed now.
    """
    dataset = config.dataset
    outcomes = []
    for partition in partitions:
        incoming = incoming_path(partition.path)
        source = incoming if lakefs_repository.object_exists(repo, branch, incoming) else partition.path
        if not lakefs_repository.object_exists(repo, branch, source):  # rejected by an earlier try: its report says so
            outcomes.append(_outcome_from_report(repo, branch, dataset.name, partition))
            continue
        frame = lakefs_repository.read_parquet(repo, branch, source)
        start, end = dt.datetime.fromisoformat(partition.start), dt.datetime.fromisoformat(partition.end)
        result = validate_batch(frame, dataset, config.validation, start, end, partition.path)
        report = result.report
        prefix = quarantine_prefix(dataset.name, partition.day)
        if report.rows_quarantined or report.status == "failed":
            lakefs_repository.write_parquet(repo, branch, prefix + "rows.parquet", result.quarantined)
            report_json = json.dumps(report.to_dict(), indent=2, default=str).encode()
            lakefs_repository.write_bytes(
                repo, branch, prefix + "report.json", report_json, content_type="application/json"
            )
        changed = False
        if report.accepted:
            changed = _write_if_changed(repo, branch, partition.path, result.valid)
        elif source == partition.path:
            lakefs_repository.reset_uncommitted(repo, branch, partition.path)
        outcomes.append(_outcome(partition, report, changed))
    # Last, so that a try killed before this point finds its input again.
    for partition in partitions:
        lakefs_repository.reset_uncommitted(repo, branch, incoming_path(partition.path))

    quarantine_commit = None
    if lakefs_repository.uncommitted(repo, branch, prefix=f"quarantine/{dataset.name}/"):
        rows = sum(o.rows_quarantined for o in outcomes)
        rejected = [o.day for o in outcomes if o.status == "failed"]
        message = f"Quarantine {rows} row(s) of {dataset.name}" + (
            f"; rejected: {', '.join(rejected)}" if rejected else ""
        )
        status = "failed" if rejected else "passed_with_quarantine"
        stamp = {**metadata, "validation_status": status, "quarantined_rows": str(rows)}
        quarantine_commit = lakefs_repository.commit(repo, branch, message, stamp).id

    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        reports = [_report_text(repo, branch, dataset.name, o.day) for o in failed]
        where = f"kept in quarantine on branch {branch!r} of {repo.id!r}"
        where += f" (commit {quarantine_commit})" if quarantine_commit else ""
        raise ValidationFailed(f"{len(failed)} batch(es) rejected, {where}; main is untouched:\n" + "\n".join(reports))
    leftovers = [o.path for o in lakefs_repository.list_objects(repo, branch, f"quarantine/{dataset.name}/")]
    lakefs_repository.delete_objects(repo, branch, leftovers)
    return outcomes, quarantine_commit


def _outcome(partition: StagedPartition, report: ValidationReport, changed: bool) -> PartitionOutcome:
    return PartitionOutcome(
        partition.path,
        partition.day,
        report.status,
        report.rows_in,
        report.rows_valid,
        report.rows_quarantined,
        changed,
    )


def outcomes_as_dicts(outcomes: list[PartitionOutcome]) -> list[dict]:
    return [asdict(o) for o in outcomes]


def _report_text(repo: lakefs.Repository, branch: str, dataset: str, day: str) -> str:
    report = json.loads(lakefs_repository.read_bytes(repo, branch, quarantine_prefix(dataset, day) + "report.json"))
    return ValidationReport.from_dict(report).summary()


def _outcome_from_report(
    repo: lakefs.Repository, branch: str, dataset: str, partition: StagedPartition
) -> PartitionOutcome:
    report = json.loads(
        lakefs_repository.read_bytes(repo, branch, quarantine_prefix(dataset, partition.day) + "report.json")
    )
    return _outcome(partition, ValidationReport.from_dict(report), changed=False)


def _write_if_changed(repo: lakefs.Repository, branch: str, path: str, frame: pd.DataFrame) -> bool:
    data = lakefs_repository.parquet_bytes(frame)
    digest = hashlib.sha256(data).hexdigest()
    if lakefs_repository.object_metadata(repo, f"{branch}@", path).get(SHA256_KEY) == digest:
        lakefs_repository.reset_uncommitted(repo, branch, path)  # what an earlier try staged, if anything
        return False
    metadata = {SHA256_KEY: digest, "rows": str(len(frame))}
    lakefs_repository.write_bytes(repo, branch, path, data, metadata, content_type=lakefs_repository.PARQUET)
    return True


def _as_stored(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns of mixed Python objects (as APIs and CSVs give them) as text, so Parquet can hold them."""
    return frame.apply(lambda column: column.astype("string[pyarrow]") if column.dtype == object else column)
