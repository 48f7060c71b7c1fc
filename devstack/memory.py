"""The resident memory of a server's process tree, and its peak while something runs.

A server's workers are forked children (BentoML's arbiter and its workers), so the whole tree is counted.
"""

from __future__ import annotations

import threading

import psutil


class TreeMemory:
    """The RSS of a process and all its descendants; as a context manager, `peak` is its highest while the
    block runs, sampled every `interval` seconds in a thread (and at the block's start and end, so that a
    block shorter than `interval` has a peak too)."""

    def __init__(self, pid: int, interval: float = 0.005):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def rss(self) -> int:
        total = 0
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass  # exited between the listing and the reading
        return total

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> TreeMemory:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())
