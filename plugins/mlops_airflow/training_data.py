"""The tasks of `ml_training`'s data half: collect, validate and snapshot, each a call into include/mlops.

They are TaskFlow tasks with the "lakeFS" button (`@lakefs_task`); they pass references (paths, commit ids,
counts) through XCom, never data.
"""

from __future__ import annotations

from dataclasses import asdict

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from include.mlops.naming import run_branch_name
from mlops_airflow import pipelines
from mlops_airflow.decorators import lakefs_task, show_lakefs_commit
from mlops_airflow.lakefs_hook import LakeFSHook
from mlops_airflow.run_context import airflow_run_metadata, run_interval_end


@lakefs_task
def collect(config_file: str, params: dict, **context: Context) -> list[dict]:
    """Fetch the run's days from the source and stage them on the run branch, as collected."""
    from include.mlops import collection, lakefs_repository
    from mlops_airflow.sources import fetcher

    config = pipelines.load(config_file)
    as_of = run_interval_end(context)
    days = collection.collection_days(as_of, config.collection.lag_days, params["history_days"])
    repo = LakeFSHook().get_repository()
    branch = run_branch_name(config.name, context["run_id"])
    staged = collection.stage_raw(repo, branch, config.dataset, fetcher(config, as_of), days)
    for partition in staged:
        left_out = partition.outside_interval
        note = f"; {left_out} row(s) the source gave outside the day left out" if left_out else ""
        print(f"collected {partition.rows} row(s) of {config.dataset.name} for {partition.day}{note}")
    show_lakefs_commit(repo.id, lakefs_repository.head_commit(repo, branch))
    return [asdict(p) for p in staged]


@lakefs_task(retries=2)
def validate(config_file: str, staged: list[dict], **context: Context) -> dict:
    """Check the staged batches; quarantine what fails. A rejected batch fails the run without retries."""
    from include.mlops import collection

    config = pipelines.load(config_file)
    repo = LakeFSHook().get_repository()
    branch = run_branch_name(config.name, context["run_id"])
    partitions = [collection.StagedPartition(**p) for p in staged]
    try:
        outcomes, quarantine_commit = collection.validate_staged(
            repo, branch, config, partitions, airflow_run_metadata(context)
        )
    except collection.ValidationFailed as failure:
        from include.mlops import lakefs_repository

        show_lakefs_commit(repo.id, lakefs_repository.head_commit(repo, branch))
        # The data will not get better by trying again.
        raise AirflowFailException(str(failure)) from None
    if quarantine_commit:
        show_lakefs_commit(repo.id, quarantine_commit)
    for outcome in outcomes:
        print(
            f"{outcome.path}: {outcome.status}, {outcome.rows_valid} valid, {outcome.rows_quarantined} quarantined"
            + ("" if outcome.changed else " (unchanged)")
        )
    return {
        "partitions": collection.outcomes_as_dicts(outcomes),
        "rows_valid": sum(o.rows_valid for o in outcomes),
        "rows_quarantined": sum(o.rows_quarantined for o in outcomes),
        "quarantine_commit": quarantine_commit,
        "window_end": max(p.end for p in partitions)[:10],
    }


@lakefs_task
def build_training_snapshot(config_file: str, validated: dict, merged_commit: str, **context: Context) -> dict:
    """Read the training window at the merged commit of `main`; stage train/valid/test splits on the run branch."""
    import datetime as dt

    from include.mlops import datasets
    from include.mlops.naming import run_key

    config = pipelines.load(config_file)
    repo = LakeFSHook().get_repository()
    branch = run_branch_name(config.name, context["run_id"])
    window_end = dt.date.fromisoformat(validated["window_end"])
    manifest = datasets.build_snapshot(repo, merged_commit, branch, config, run_key(context["run_id"]), window_end)
    show_lakefs_commit(repo.id, merged_commit)
    print(f"snapshot of {manifest.rows} rows (by class: {manifest.class_counts}) from commit {merged_commit}")
    return {**manifest.to_dict(), "manifest_path": datasets.manifest_path(manifest.model, manifest.run)}
