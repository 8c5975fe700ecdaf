"""Area: a ``yosys synth; stat`` run of one top and its cells per MAC.

Used by the engine benchmark (its area column, run beside the simulations) and by
``tinyattn.sim.area`` (the full-synthesis model of the sweep).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

from tinyattn.config import ClusterConfig

from ..verilog import verilog_for

__all__ = ["Synthesis", "cells_per_mac"]


class Synthesis:
    """A ``yosys synth; stat`` run of one top, started in the background.

    The run's log lands beside the top's Verilog (``yosys-<top>.log``) and is reused
    while the sources are unchanged, so only the first call pays for synthesis (tens
    of minutes for the default engine). Raises ``RuntimeError`` naming the missing
    tool when yosys is not installed.
    """

    def __init__(self, cfg: ClusterConfig, top: str) -> None:
        yosys = shutil.which("yosys")
        if yosys is None:
            raise RuntimeError("yosys is not installed: `make bench` installs it with apt")
        self.cfg, self.top = cfg, top
        verilog = verilog_for(top, cfg)
        self.log = verilog.parent / f"yosys-{top}.log"
        self._stderr = verilog.parent / f"yosys-{top}.stderr"
        self._proc: subprocess.Popen | None = None
        if not self._finished_log():
            script = f"read_verilog {verilog}; synth -top tinyattn_{top}; stat"
            with self._stderr.open("w") as err:
                self._proc = subprocess.Popen(
                    [yosys, "-q", "-l", str(self.log), "-p", script],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )

    def _finished_log(self) -> bool:
        return self.log.exists() and "Number of cells" in self.log.read_text(errors="replace")

    def result(self) -> dict[str, Any]:
        """Wait for the run; returns ``top``, ``cells``, ``macs_per_cycle``, ``cells_per_mac``."""
        if self._proc is not None and self._proc.wait() != 0:
            tail = self._stderr.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"yosys failed on {self.top} (log {self.log}): {tail}")
        counts = [int(c) for c in re.findall(r"Number of cells:\s+(\d+)", self.log.read_text())]
        if not counts:
            raise RuntimeError(f"yosys wrote no cell count for {self.top}: see {self.log}")
        cells = counts[-1]  # the top module's total, reported last
        macs = self.cfg.engine.macs_per_cycle
        return {
            "top": self.top,
            "cells": cells,
            "macs_per_cycle": macs,
            "cells_per_mac": round(cells / macs, 1),
        }

    def cancel(self) -> None:
        """Stop a run still going (its partial log is not reused)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def cells_per_mac(cfg: ClusterConfig, top: str) -> dict[str, Any]:
    """Synthesize ``top`` with Debian's yosys and count cells per MAC (see :class:`Synthesis`)."""
    return Synthesis(cfg, top).result()
