"""The benchmark tables, from the JSON files `make bench` writes to benchmarks/results/ (git-ignored: each machine
has its own figures). The page shows those of the machine that builds the docs."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import report

INTRO = """# Benchmark results on this machine

The tables `make bench` printed, from the JSON files it kept in `benchmarks/results/` on the machine that built
this site. The files are not in the repository (figures belong to the machine that measured them); the figures
measured for the project, with their targets and what they mean, are in [Benchmarks](benchmarks.md).
"""


def markdown(results: Path) -> str:
    files = sorted(results.glob("*.json"))
    if not files:
        return INTRO + "\nNo results on this machine: run `make bench` to make them.\n"
    sections = []
    for path in files:
        result = json.loads(path.read_text())
        machine = ", ".join(f"{key} {value}" for key, value in result.get("machine", {}).items())
        table = report.markdown(result["rows"], result.get("notes", {})) if result.get("rows") else "No rows.\n"
        sections.append(f"\n## {result.get('benchmark', path.stem)}\n\n`{path.name}`; {machine}\n\n{table}")
    return INTRO + "".join(sections)
