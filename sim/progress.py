"""Progress on a terminal for the long steps: the simulator build, then the simulation.

Both use tqdm and print nothing when stderr is not a terminal (CI logs, pipes), so the
output of the commands stays what the README shows.

- :func:`building` shows a spinner with the elapsed time while a block runs (the
  one-time Verilator build takes a minute or more).
- :class:`ProgressFile` carries the simulation's progress from the cocotb bench, which
  runs in the simulator's process, to the caller: the bench rewrites one line,
  ``"<cycles> <engine jobs done>"``, every :data:`EVERY_CYCLES` cycles; a thread of the
  caller reads it and calls back.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["EVERY_CYCLES", "ProgressFile", "building", "on_terminal", "write_progress"]

#: How often (simulated cycles) the bench reports.
EVERY_CYCLES = 1 << 16


def on_terminal() -> bool:
    """Whether progress should be drawn: stderr is a terminal."""
    return sys.stderr.isatty()


@contextmanager
def building(what: str) -> Iterator[None]:
    """A spinner with the elapsed time while the block runs (on a terminal only)."""
    if not on_terminal():
        yield
        return
    from tqdm import tqdm

    stop = threading.Event()
    bar = tqdm(desc=what, bar_format="{desc}: {elapsed}", leave=False, file=sys.stderr)

    def tick() -> None:
        while not stop.wait(0.5):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()


def write_progress(path: Path, cycles: int, jobs: int) -> None:
    """The bench's side: replace the progress line atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{cycles} {jobs}\n")
    os.replace(tmp, path)


class ProgressFile:
    """The caller's side: polls ``path`` in a thread and calls ``callback(cycles, jobs)``
    whenever the line changes. Use as a context manager around the simulation."""

    def __init__(self, path: Path, callback: Callable[[int, int], None]) -> None:
        self.path = path
        self.callback = callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._last = ""

    def _read(self) -> None:
        try:
            text = self.path.read_text()
        except OSError:
            return
        if text != self._last and text.endswith("\n"):
            self._last = text
            cycles, jobs = (int(v) for v in text.split())
            self.callback(cycles, jobs)

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            self._read()

    def __enter__(self) -> ProgressFile:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()
