"""One page per DAG file: its module docstring, the `doc_md` the DAG shows in the Airflow UI (read with `ast`, so that
building the docs needs no Airflow), then the DAG's details, written in `docs/pipeline-details/<file stem>.md`. The
task list is written once for the UI; the details say what the UI's panel has no room for."""

from __future__ import annotations

import ast
from pathlib import Path


def pages(dags: Path, details: Path) -> dict[str, str]:
    """`<file stem>.md` -> the page, for each DAG file whose DAG shows its docstring (`doc_md=`). A DAG without its
    details file, or details of a DAG file that is not there, is a ValueError naming it."""
    found = {}
    for path in sorted(dags.glob("*.py")):
        source = path.read_text()
        if "doc_md=" not in source:
            continue
        doc = ast.get_docstring(ast.parse(source))
        if not doc:
            raise ValueError(f"{path}: the DAG's doc_md is its module docstring, and the file has none")
        # The docstring opens with the DAG's name as a level-3 heading (its size in the Airflow UI's panel).
        title, _, body = doc.partition("\n")
        detail = details / f"{path.stem}.md"
        if not detail.is_file():
            raise ValueError(f"{path}: its details page {detail} is missing")
        found[f"{path.stem}.md"] = (
            f"# {title.lstrip('#').strip()}\n\n{body.strip()}\n\n"
            f"*Above: the DAG's description in the Airflow UI (its `doc_md`), the docstring of `dags/{path.name}`.*\n\n"
            f"## In detail\n\n{detail.read_text().strip()}\n"
        )
    orphans = sorted(p.name for p in details.glob("*.md") if p.name not in found)
    if orphans:
        raise ValueError(f"{details}: details of no DAG file with a doc_md: {', '.join(orphans)}")
    return found
