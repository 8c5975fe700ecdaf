"""The generatable top-level designs, by the name the CLI and the benches use.

Each top names the module that defines it; the module is imported only when
the top is built, and the build cache keys a netlist by that module's source
and the sources it imports (see :func:`tinyattn.sim.verilog.source_digest`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from amaranth.lib import wiring

from tinyattn.config import ClusterConfig

__all__ = ["TOPS", "Top", "build_top", "verilog_module_name"]


@dataclass(frozen=True)
class Top:
    """A generatable design: ``module.cls(cfg)``, or ``module.cls(cfg.engine)`` for engine parts."""

    module: str  # module in tinyattn.hw
    cls: str
    description: str
    takes_engine_config: bool = False

    def build(self, cfg: ClusterConfig) -> wiring.Component:
        component = getattr(importlib.import_module(f"tinyattn.hw.{self.module}"), self.cls)
        return component(cfg.engine if self.takes_engine_config else cfg)


TOPS: dict[str, Top] = {
    "compute_core": Top(
        "compute_core",
        "ComputeCore",
        "the engine's dot-product array with bias and requantization",
        takes_engine_config=True,
    ),
    "engine": Top(
        "engine", "Engine", "the attention engine: job queue, GEMM and attention jobs, wide L1 port"
    ),
    "tcdm": Top(
        "tcdm", "Tcdm", "L1 banks behind the logarithmic interconnect (narrow and wide OBI ports)"
    ),
    "dma": Top("dma", "Dma", "2-D strided L2 <-> L1 DMA with a descriptor queue"),
    "regblock": Top(
        "regblock",
        "RegBlock",
        "peripheral registers (engine, DMA, events) behind an OBI target, from "
        "hw/cluster_registers.py",
    ),
    "cluster": Top(
        "cluster",
        "Cluster",
        "the shared-memory cluster: core ports, L1 + interconnect, engine, DMA, registers",
    ),
}


def build_top(name: str, cfg: ClusterConfig) -> wiring.Component:
    """Instantiate top ``name`` for ``cfg``; an unknown name raises ``KeyError``."""
    if name not in TOPS:
        raise KeyError(f"unknown top {name!r}; known tops: {', '.join(TOPS)}")
    return TOPS[name].build(cfg)


def verilog_module_name(name: str) -> str:
    """The Verilog module name of top ``name``."""
    return f"tinyattn_{name}"
