"""Names that tie the parts together (DESIGN.md). Light on purpose: DAG files import it at parse time."""

from __future__ import annotations

import re

RUN_BRANCH_PREFIX = "run-"
_NOT_IN_A_BRANCH_NAME = re.compile(r"[^A-Za-z0-9_-]+")


def run_branch_name(run_id: str) -> str:
    """The lakeFS branch of an Airflow run: `run-` + the run id with what lakeFS refuses turned into `-`.

    lakeFS branch names match `^\\w[-\\w]*$`; Airflow run ids carry `:` and `+` from their timestamps.
    """
    cleaned = _NOT_IN_A_BRANCH_NAME.sub("-", run_id).strip("-")
    if not cleaned:
        raise ValueError(f"run id {run_id!r} has nothing usable in a branch name")
    return RUN_BRANCH_PREFIX + cleaned
