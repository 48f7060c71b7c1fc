"""Servers are stopped with every process they forked, and a server that dies at start says why."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from devstack.processes import StartupError, free_port, start_process, wait_until_healthy

# A parent that forks two children which ignore nothing and sleep: what `airflow scheduler` looks like.
FORKING_SERVER = textwrap.dedent(
    """
    import os, sys, time
    for _ in range(2):
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
    print("ready", flush=True)
    time.sleep(600)
    """
)


def _pids_in_group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except ProcessLookupError:
                pass
    return pids


def test_stop_ends_the_whole_process_group(tmp_path: Path):
    process = start_process("forker", [sys.executable, "-c", FORKING_SERVER], tmp_path / "forker.log")
    deadline = time.monotonic() + 10
    while len(_pids_in_group(process.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_pids_in_group(process.pid)) == 3
    process.stop(timeout=5)
    assert _pids_in_group(process.pid) == []


def test_stop_kills_what_ignores_sigterm(tmp_path: Path):
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"
    )
    process = start_process("stubborn", [sys.executable, "-c", stubborn], tmp_path / "stubborn.log")
    deadline = time.monotonic() + 10
    while "up" not in process.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.stop(timeout=1)
    assert not process.is_running()
    assert _pids_in_group(process.pid) == []


def test_a_server_that_dies_at_start_fails_fast_with_its_log(tmp_path: Path):
    crash = "import sys; print('cannot open the data dir: permission denied'); sys.exit(3)"
    process = start_process("crasher", [sys.executable, "-c", crash], tmp_path / "crasher.log")
    started = time.monotonic()
    with pytest.raises(StartupError, match="(?s)exited with code 3.*permission denied"):
        wait_until_healthy(process, f"http://127.0.0.1:{free_port()}/health", timeout=60)
    assert time.monotonic() - started < 30


def test_a_server_that_never_answers_times_out(tmp_path: Path):
    process = start_process("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "s.log")
    try:
        with pytest.raises(StartupError, match="not healthy"):
            wait_until_healthy(process, f"http://127.0.0.1:{free_port()}/health", timeout=1.5)
    finally:
        process.stop()
