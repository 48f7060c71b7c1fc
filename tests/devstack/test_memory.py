"""The peak of a process tree's RSS counts its descendants, and memory they held only for a moment."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from devstack.memory import TreeMemory

MB = 2**20
# A parent (the tree's root) and its child, which holds 50 MB for 0.3 s each time it reads a line, then frees
# them (a block that large is its own mapping, given back to the system when freed).
CHILD = textwrap.dedent(
    """
    import sys, time
    print("ready", flush=True)
    for _ in sys.stdin:
        block = b"x" * (50 * 2**20)
        time.sleep(0.3)
        del block
        print("freed", flush=True)
    """
)
PARENT = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {CHILD!r}])"


def test_the_peak_holds_what_a_child_allocated_for_a_moment():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert parent.stdin is not None and parent.stdout is not None
    try:
        assert parent.stdout.readline() == "ready\n"
        memory = TreeMemory(parent.pid)
        rest = memory.rss()
        with memory:
            parent.stdin.write("allocate\n")
            parent.stdin.flush()
            assert parent.stdout.readline() == "freed\n"
        after = memory.rss()
    finally:
        parent.communicate(timeout=30)  # closes stdin: the child's loop ends, and the parent with it
    assert memory.peak - rest >= 40 * MB, (rest, memory.peak)
    assert memory.peak - after >= 40 * MB, (after, memory.peak)
