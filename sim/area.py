"""The engine's area in yosys cells: the full synthesis, or a fast estimate of it.

- ``full``: ``yosys synth; stat`` (:class:`tinyattn.sim.benchmarks.engine.Synthesis`, what
  ``tinyattn bench engine`` reports): about an hour for the default engine on this class of
  machine, 169 s of CPU for the 4 x 16 test engine, 523 s for an 8 x 32 one.
- ``coarse``: the coarse half of ``synth`` (``synth -run begin:fine``: hierarchy, ``proc``,
  ``opt``, ``wreduce``, ``alumacc``, ``share``, ``memory -nomap``), then the memories mapped to
  flops and every word-level cell to generic gates (``memory_map; techmap``), without the
  fine-grained optimization and without ABC. ABC and ``opt -full`` merge much of that logic,
  so the gate count is multiplied by :data:`COARSE_SCALE`, the ratio measured on the 4 x 16
  engine. 2.3 to 2.6 times less CPU than ``full``; +9.3% on the 8 x 32 engine (held out).
- ``estimate``: no synthesis at all: a per-part model (:func:`estimate_cells`) whose
  coefficients come from the full synthesis of the default engine, part by part
  (``docs/performance.md``), plus a fixed part calibrated on the 4 x 16 engine; +0.4% on the
  8 x 32 engine (held out, older sources), -2.9% on today's default (1,845,411 cells: the
  whole-tile residual FIFO and the split lanes came after the synthesis it is built from).

``docs/sweep.md`` states the error of both fast modes against the full synthesis, measured.
The synthesis logs are cached beside the engine's netlist in the build folder
(``yosys-engine.log``, ``yosys-engine-coarse.log``), keyed like it by config and source hash,
so a repeated point or a rerun costs nothing, and two workers asking for the same
configuration synthesize it once (a file lock).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

from tinyattn.config import ClusterConfig

from .verilog import file_lock, verilog_for

__all__ = [
    "AREA_MODES",
    "COARSE_SCALE",
    "COARSE_SCRIPT",
    "coarse_cells",
    "engine_area",
    "estimate_cells",
]

AREA_MODES = ("estimate", "coarse", "full")

#: The coarse mode's yosys script after ``read_verilog`` (``{top}``: the module).
COARSE_SCRIPT = "synth -top {top} -run begin:fine; memory_map; techmap; opt_clean; stat"

#: Full-synthesis cells per coarse gate: 200,100 / 366,568, the 4 x 16 test engine
#: (config c9721008d9f2; docs/sweep.md).
COARSE_SCALE = 200_100 / 366_568

#: Per-part cells of the full synthesis of the default engine (docs/performance.md, config
#: 5e89aaa465f1: 1,757,471 cells): the compute core per MAC (717,956 / 1024), ITAMax per
#: unit (11,720 / 16), the buffers per bit (655,000 / 327,680), the rest of the engine top
#: per lane (345,000 / 64) and the port and queues per 32-bit port lane (27,342 / 16).
EST_PER_MAC = 717_956 / 1024
EST_PER_UNIT = 11_720 / 16
EST_PER_BUFFER_BIT = 655_000 / 327_680
EST_PER_LANE = 345_000 / 64
EST_PER_PORT_LANE = 27_342 / 16
#: What does not scale with any of them (controller, job registers): the 4 x 16 engine's
#: full synthesis (200,100 cells) less the parts above (165,462).
EST_FIXED = 34_638


def estimate_cells(cfg: ClusterConfig) -> int:
    """The engine's cells from its parameters alone (no synthesis); see :data:`EST_FIXED`."""
    e = cfg.engine
    return round(
        EST_PER_MAC * e.macs_per_cycle
        + EST_PER_UNIT * e.n_pe
        + EST_PER_BUFFER_BIT * e.buffer_bytes * 8
        + EST_PER_LANE * e.vec_len
        + EST_PER_PORT_LANE * e.port_lanes
        + EST_FIXED
    )


_CELLS = re.compile(r"Number of cells:\s+(\d+)")


def _yosys() -> str:
    yosys = shutil.which("yosys")
    if yosys is None:
        raise RuntimeError("yosys is not installed: `make bench` installs it with apt")
    return yosys


def coarse_cells(cfg: ClusterConfig, top: str = "engine") -> int:
    """Generic gates (and flops) of ``top`` after the coarse synthesis and ``techmap``,
    unscaled. Cached beside the netlist."""
    verilog = verilog_for(top, cfg)
    log = verilog.parent / f"yosys-{top}-coarse.log"
    with file_lock(verilog.parent / f".yosys-{top}-coarse.lock"):
        text = log.read_text(errors="replace") if log.exists() else ""
        if "End of script" not in text:
            tmp = log.with_suffix(".tmp")
            script = f"read_verilog {verilog}; " + COARSE_SCRIPT.format(top=f"tinyattn_{top}")
            proc = subprocess.run(
                [_yosys(), "-q", "-l", str(tmp), "-p", script],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"yosys (coarse area) failed on {top}: {proc.stderr[-500:]}")
            tmp.replace(log)
            text = log.read_text(errors="replace")
    counts = [int(c) for c in _CELLS.findall(text)]
    if not counts:
        raise RuntimeError(f"yosys wrote no cell count for {top}: see {log}")
    return counts[-1]  # the top's total, hierarchy included, is reported last


def engine_area(cfg: ClusterConfig, mode: str) -> dict[str, Any]:
    """``{"cells", "cells_per_mac", "mode"}`` of the engine for ``cfg``; ``mode`` is one of
    :data:`AREA_MODES`."""
    macs = cfg.engine.macs_per_cycle
    if mode == "full":
        from .benchmarks.engine import Synthesis

        # One synthesis per configuration, whichever worker asks first; the others wait and
        # read its log (Synthesis reuses a finished log).
        with file_lock(verilog_for("engine", cfg).parent / ".yosys-engine-full.lock"):
            cells = Synthesis(cfg, "engine").result()["cells"]
    elif mode == "coarse":
        cells = round(coarse_cells(cfg) * COARSE_SCALE)
    elif mode == "estimate":
        cells = estimate_cells(cfg)
    else:
        raise ValueError(f"area mode {mode!r}: use one of {', '.join(AREA_MODES)}")
    return {"cells": cells, "cells_per_mac": round(cells / macs, 1), "mode": mode}
