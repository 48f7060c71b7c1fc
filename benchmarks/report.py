"""Benchmark results: one JSON file per benchmark under benchmarks/results/, and a markdown table on stdout."""

from __future__ import annotations

import json
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def process_peak_rss_bytes(pid: int) -> int:
    """Another process's peak resident memory, from /proc (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def median_seconds(call: Callable[[int], Any], repeat: int) -> float:
    """The median time of `repeat` calls of `call(i)`, after up to 20 calls that warm caches and lazy
    initialisation."""
    for i in range(min(repeat, 20)):
        call(i)
    times = []
    for i in range(repeat):
        began = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def publish(name: str, rows: list[dict[str, Any]], notes: dict[str, Any]) -> Path:
    """Write `rows` (one dict per table row) and `notes` as JSON, and print them as a markdown table."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    machine = {"cpus": _cpus(), "python": platform.python_version(), "machine": platform.machine()}
    path.write_text(json.dumps({"benchmark": name, "machine": machine, "notes": notes, "rows": rows}, indent=2))
    print(f"\n### {name}\n\n{markdown(rows, notes)}\n(results in {path})")
    return path


def markdown(rows: list[dict[str, Any]], notes: dict[str, Any]) -> str:
    """`rows` as a markdown table, then each note as a paragraph (the docs' benchmark page shows them so too)."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    lines += [f"\n{key}: {_cell(value)}" for key, value in notes.items()]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
