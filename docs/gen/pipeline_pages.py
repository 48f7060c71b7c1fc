"""One page per DAG file, from its module docstring: the `doc_md` the DAG shows in the Airflow UI. Read with `ast`,
so that building the docs needs no Airflow."""

from __future__ import annotations

import ast
from pathlib import Path


def pages(dags: Path) -> dict[str, str]:
    """`<file stem>.md` -> the page, for each DAG file whose DAG shows its docstring (`doc_md=`)."""
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
        found[f"{path.stem}.md"] = (
            f"# {title.lstrip('#').strip()}\n\n{body.strip()}\n\n---\n\nThe DAG's description in the Airflow UI "
            f"(its `doc_md`), from the docstring of `dags/{path.name}`.\n"
        )
    return found
