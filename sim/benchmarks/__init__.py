"""Benchmarks: performance measurements (cycles against the ideal), one module per benchmark.

"Benchmark" here always means a performance measurement; a "bench" is a cocotb testbench
(``tinyattn.verif.benches``), which a benchmark runs to measure. Timing lives here, never
in tests (tests assert deterministic utilization floors by calling these runners).

:data:`BENCHMARKS` maps each name of ``tinyattn bench <name>`` to its runners, functions
``(cfg, sim, report) -> None`` that run their simulations and print and record the
results through a :class:`~.output.BenchmarkReport` (the one table and JSON writer):

=================  ===============================================================
``engine``         :mod:`.engine`: GEMM and attention on the engine alone, plus area
``interconnect``   :mod:`.interconnect`: TCDM throughput and waits; then
                   :mod:`.cluster`: the engine's GEMM under background core traffic
``firmware``       :mod:`.firmware`: C firmware on the control core, queued jobs
``model``          :mod:`.model`: the 2-layer MobileBERT fixture (not in ``all``)
``mobilebert``     :mod:`.model`: the synthetic 24-layer MobileBERT
=================  ===============================================================

This module imports no simulation code: a runner's module loads when the runner is
looked up (:meth:`Benchmark.runners`), so the command line can list the names cheaply.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tinyattn.config import ClusterConfig

    from .output import BenchmarkReport

__all__ = ["BENCHMARKS", "Benchmark", "Runner", "selected"]

#: A benchmark's runner: runs on ``sim`` and reports into the report.
Runner = Callable[["ClusterConfig", str, "BenchmarkReport"], None]


@dataclass(frozen=True)
class Benchmark:
    """One ``tinyattn bench`` name: its runners (``"module.function"`` in this package,
    run in order) and whether ``all`` includes it."""

    name: str
    runner_paths: tuple[str, ...]
    in_all: bool = True

    def runners(self) -> list[Runner]:
        """The runner functions, their modules imported."""
        found = []
        for path in self.runner_paths:
            module, function = path.rsplit(".", 1)
            found.append(getattr(importlib.import_module(f"{__name__}.{module}"), function))
        return found


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("engine", ("engine.report_engine",)),
        Benchmark("interconnect", ("interconnect.report_interconnect", "cluster.report_cluster")),
        Benchmark("firmware", ("firmware.report_firmware",)),
        Benchmark("model", ("model.report_model",), in_all=False),
        Benchmark("mobilebert", ("model.report_mobilebert",)),
    )
}


def selected(name: str) -> list[Benchmark]:
    """The benchmarks ``tinyattn bench name`` runs: the one named, or for ``all`` every
    one with ``in_all``. Raises ``KeyError`` naming the choices for an unknown name."""
    if name == "all":
        return [b for b in BENCHMARKS.values() if b.in_all]
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}: choose from {', '.join(BENCHMARKS)}, all")
    return [BENCHMARKS[name]]
