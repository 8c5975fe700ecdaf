"""The engine's area in yosys cells: the full synthesis, or a fast estimate of it.

- ``full``: ``yosys synth; stat`` (:class:`tinyattn.sim.benchmarks.engine.Synthesis`, what
  ``tinyattn bench engine`` reports): 20 minutes of CPU for the default engine,
  about 95 s for the 4 x 16 test engine.
- ``coarse``: the coarse half of ``synth`` (``synth -run begin:fine``: hierarchy, ``proc``,
  ``opt``, ``wreduce``, ``alumacc``, ``share``, ``memory -nomap``), then the memories mapped to
  flops and every word-level cell to generic gates (``memory_map; techmap``), without the
  fine-grained optimization and without ABC. ABC and ``opt -full`` merge much of that logic,
  so the gate count is multiplied by :data:`COARSE_SCALE`, the ratio measured on the 4 x 16
  engine (:data:`CALIBRATION_ENGINE`).
- ``estimate``: no synthesis at all: a per-part model (:func:`estimate_cells`) whose
  coefficients come from the full synthesis of the default engine, part by part
  (``docs/performance.md``), with the part that is neither MACs, units, buffers nor port
  split into a cost per lane and a fixed cost by the full synthesis of the 4 x 16 engine.

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

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig

from .verilog import file_lock, verilog_for

__all__ = [
    "AREA_MODES",
    "CALIBRATION_ENGINE",
    "COARSE_SCALE",
    "COARSE_SCRIPT",
    "buffer_bits",
    "coarse_cells",
    "engine_area",
    "estimate_cells",
]

AREA_MODES = ("estimate", "coarse", "full")

#: The coarse mode's yosys script after ``read_verilog`` (``{top}``: the module).
COARSE_SCRIPT = "synth -top {top} -run begin:fine; memory_map; techmap; opt_clean; stat"

#: The 4 x 16 test engine the coarse scale and the estimate are calibrated on (config
#: a37af2ba9ba6; docs/sweep.md): 215,797 cells by the full synthesis, 389,329 coarse gates.
CALIBRATION_ENGINE = ClusterConfig(
    engine=EngineConfig(n_pe=4, vec_len=16, acc_bits=24, max_seq=64, tile_m=8),
    memory=MemoryConfig(n_banks=8, bank_words=512),
    dma=DmaConfig(dma_bits=128),
)
_CALIBRATION_FULL = 215_797

#: Full-synthesis cells per coarse gate, on :data:`CALIBRATION_ENGINE`.
COARSE_SCALE = _CALIBRATION_FULL / 389_329

#: Per-part cells of the full synthesis of the default engine (docs/performance.md, engine
#: v2, 1,845,411 cells): the compute core per MAC (730,558 / 1024), ITAMax per unit
#: (15,253 / 16), the wide port, its lane queues and the job queue per 32-bit port lane
#: (18,350 / 16), and the buffers per bit (about 655,000 cells for 327,680 bits: yosys maps
#: them to flops and read multiplexers).
EST_PER_MAC = 730_558 / 1024
EST_PER_UNIT = 15_253 / 16
EST_PER_PORT_LANE = 18_350 / 16
EST_PER_BUFFER_BIT = 655_000 / 327_680


def buffer_bits(cfg: ClusterConfig) -> int:
    """Bits the engine holds in buffers: :attr:`EngineConfig.buffer_bytes` and the residual
    FIFO (``tile_m + 1`` rows of ``vec_len`` bytes)."""
    e = cfg.engine
    return e.buffer_bytes * 8 + (e.tile_m + 1) * e.vec_len * 8


def _scaling_parts(cfg: ClusterConfig) -> float:
    e = cfg.engine
    return (
        EST_PER_MAC * e.macs_per_cycle
        + EST_PER_UNIT * e.n_pe
        + EST_PER_PORT_LANE * e.port_lanes
        + EST_PER_BUFFER_BIT * buffer_bits(cfg)
    )


#: The rest of the engine (fetchers, issuer, collector, writer with its epilogue, checker,
#: controller): a part per lane and a fixed part, solved from two full syntheses. The
#: default engine's rest is 1,081,324 cells less its buffers (655,000) and residual FIFO
#: (65,789) at 64 lanes; the calibration engine's is its total less the parts above, at 16.
_DEFAULT_REST = 1_081_324 - 655_000 - 65_789
_CALIBRATION_REST = _CALIBRATION_FULL - _scaling_parts(CALIBRATION_ENGINE)
EST_PER_LANE = (_DEFAULT_REST - _CALIBRATION_REST) / (64 - CALIBRATION_ENGINE.engine.vec_len)
EST_FIXED = _DEFAULT_REST - 64 * EST_PER_LANE


def estimate_cells(cfg: ClusterConfig) -> int:
    """The engine's cells from its parameters alone (no synthesis): the scaling parts, a
    part per lane and :data:`EST_FIXED`."""
    return round(_scaling_parts(cfg) + EST_PER_LANE * cfg.engine.vec_len + EST_FIXED)


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
