"""Engine benchmark: the issue's GEMM and attention workloads on the engine alone.

Runs the ``job_perf`` test of ``tinyattn.verif.benches.engine_bench`` once per case of
:data:`ENGINE_CASES` and grant-stall probability, against the ``engine`` top with an
L1 large enough for the operands (:func:`engine_bench_config`). Record fields:
``name``, ``cycles`` (engine busy cycles of the job), ``ideal_cycles`` (MACs / peak),
``utilization``, the bench's counters (``stall_cycles``, ...), ``sim`` and, for
attention, ``bound`` (:func:`attention_bound`). With synthesis on, the records gain
``cells`` and ``cells_per_mac`` of the configuration asked for (:class:`Synthesis`, a
yosys run beside the simulations; ``tinyattn.sim.area`` uses it too).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from tinyattn.config import ClusterConfig

from ..runner import failure_report, run_bench
from ..verilog import verilog_for
from .output import BenchmarkReport, Column

__all__ = [
    "ENGINE_CASES",
    "QUEUE_CASES",
    "Synthesis",
    "attention_bound",
    "cells_per_mac",
    "engine_bench_config",
    "report_engine",
    "run_engine_bench",
    "run_queue_bench",
]

ENGINE_BENCH = "tinyattn.verif.benches.engine_bench"

#: (name, kind, m, n, k, heads): the issue's reference workloads. GEMM names read
#: M x K x N (Y (M, N) = X (M, K) · W (K, N)); attention names give S, heads, head dim.
#: Kind ``attention-per-head``: the heads' qk/av from a table in L1 (``FLAG_PER_HEAD``).
ENGINE_CASES: list[tuple[str, str, int, int, int, int]] = [
    ("gemm 128x512x128", "gemm", 128, 128, 512, 1),
    ("gemm 128x128x512", "gemm", 128, 512, 128, 1),
    ("attention S=128 H=4 D=32", "attention", 128, 128, 32, 4),
    ("attention S=64 H=4 D=32", "attention", 64, 64, 32, 4),
    (
        "attention S=128 H=4 D=32, one job, per-head parameters",
        "attention-per-head",
        128,
        128,
        32,
        4,
    ),
    ("attention S=128 H=4 D=16", "attention", 128, 128, 16, 4),
]

#: (name, jobs, shapes as job (m, n, k)): queues of GEMMs pushed at once. MobileBERT's FFN
#: shapes alternate: 128x512x128 and 128x128x512 (M x K x N), 8192 ideal cycles each at
#: 1024 MAC/cycle.
QUEUE_CASES: list[tuple[str, int, tuple[tuple[int, int, int], ...]]] = [
    ("8 queued GEMMs 128x512x128 / 128x128x512", 8, ((128, 128, 512), (128, 512, 128))),
]

#: L1 bytes the reference workloads need resident at once (X, Wᵀ, Y, parameters, gaps).
ENGINE_BENCH_L1_BYTES = 160 * 1024


def engine_bench_config(cfg: ClusterConfig) -> ClusterConfig:
    """``cfg`` with L1 doubled until the benchmark's operands fit.

    Only the memory changes; the engine (and so the measured datapath) is the
    one of ``cfg``, apart from one more address bit.
    """
    memory = cfg.memory
    while memory.size_bytes < ENGINE_BENCH_L1_BYTES:
        memory = dataclasses.replace(memory, bank_words=memory.bank_words * 2)
    return dataclasses.replace(cfg, memory=memory)


def attention_bound(cfg: ClusterConfig, k: int) -> float:
    """Best attention utilization of this engine for head dimension ``k``.

    QKᵀ contracts over the head dimension: one operand beat uses ``s * k`` of the
    ``vec_len`` lanes, ``s`` the split (``EngineConfig.split_for``: split-lane dot
    products). P·V contracts over the keys and uses them all. With equal MACs in both
    halves the bound is ``2 / (1 + vec_len / (s * k))`` (k <= vec_len).
    """
    return 2 / (1 + cfg.engine.vec_len / (cfg.engine.split_for(k) * k))


def run_engine_bench(
    cfg: ClusterConfig,
    *,
    sim: str = "verilator",
    stalls: Sequence[float] = (0.0, 0.1),
    cases: Sequence[tuple[str, str, int, int, int, int]] = tuple(ENGINE_CASES),
    seed: int = 1,
) -> list[dict[str, Any]]:
    """Run each case once per grant-stall probability; return one record per run."""
    records = []
    for name, kind, m, n, k, heads in cases:
        for withhold in stalls:
            env = {
                "TINYATTN_PERF_KIND": kind.removesuffix("-per-head"),
                "TINYATTN_PERF_PER_HEAD": str(int(kind.endswith("-per-head"))),
                "TINYATTN_PERF_M": str(m),
                "TINYATTN_PERF_N": str(n),
                "TINYATTN_PERF_K": str(k),
                "TINYATTN_PERF_HEADS": str(heads),
                "TINYATTN_WITHHOLD": str(withhold),
            }
            result = run_bench(
                "engine", cfg, ENGINE_BENCH, sim, testcase="job_perf", env=env, seed=seed
            )
            if not result.ok:
                raise RuntimeError(f"benchmark {name!r} failed: {failure_report(result, seed)}")
            metrics = dict(result.metrics["job_perf"])
            record = {
                "name": f"{name}, {int(withhold * 100)}% stalls",
                "cycles": metrics.pop("cycles"),
                "ideal_cycles": metrics.pop("ideal_cycles"),
                "utilization": round(metrics.pop("utilization"), 4),
                **metrics,
                "sim": sim,
            }
            if kind.startswith("attention"):
                record["bound"] = round(attention_bound(cfg, k), 4)
            records.append(record)
    return records


def run_queue_bench(
    cfg: ClusterConfig,
    *,
    sim: str = "verilator",
    stalls: Sequence[float] = (0.0, 0.1),
    queues: Sequence[tuple[str, int, tuple[tuple[int, int, int], ...]]] = tuple(QUEUE_CASES),
    seed: int = 1,
) -> list[dict[str, Any]]:
    """Run each queue of GEMMs once per grant-stall probability: cycles from the first
    push to the last ``done``, against the ideal at peak (the bound: 100%)."""
    records = []
    for name, jobs, shapes in queues:
        for withhold in stalls:
            env = {
                "TINYATTN_QUEUE_JOBS": str(jobs),
                "TINYATTN_QUEUE_SHAPES": ",".join("x".join(map(str, s)) for s in shapes),
                "TINYATTN_WITHHOLD": str(withhold),
            }
            result = run_bench(
                "engine", cfg, ENGINE_BENCH, sim, testcase="queue_perf", env=env, seed=seed
            )
            if not result.ok:
                raise RuntimeError(f"benchmark {name!r} failed: {failure_report(result, seed)}")
            metrics = result.metrics["queue_perf"]
            records.append(
                {
                    "name": f"{name}, {int(withhold * 100)}% stalls",
                    "cycles": metrics["cycles"],
                    "ideal_cycles": metrics["ideal_cycles"],
                    "utilization": round(metrics["utilization"], 4),
                    "done_cycles": metrics["done_cycles"],
                    "bound": 1.0,
                    "sim": sim,
                }
            )
    return records


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


def report_engine(cfg: ClusterConfig, sim: str, report: BenchmarkReport) -> None:
    """The ``engine`` benchmark: :func:`run_engine_bench` at the benchmark's L1, and the
    area of ``cfg``'s engine when ``report.synthesize`` (yosys runs beside the simulations)."""
    e = cfg.engine
    report.say(
        f"engine benchmark: {e.n_pe} x {e.vec_len} = {e.macs_per_cycle} MAC/cycle, "
        f"tile_m {e.tile_m}, config {cfg.stable_hash()}, on {sim}"
    )
    bench_cfg = engine_bench_config(cfg)
    if bench_cfg != cfg:
        report.say(
            f"L1 enlarged to {bench_cfg.memory.size_bytes // 1024} KiB for the "
            "benchmark: the 128x512x128 GEMM's operands (146 KiB) must be L1-resident"
        )
    if report.synthesize:
        # The area of the configuration asked for (the larger L1 is the benchmark's
        # memory, not part of the engine); collected when every benchmark has run.
        try:
            synthesis = Synthesis(cfg, "engine")
        except RuntimeError as exc:
            report.say(f"area: not measured ({exc})")
        else:
            report.when_finished(
                lambda: _report_area(synthesis, cfg, report), cancel=synthesis.cancel
            )
    records = run_engine_bench(bench_cfg, sim=sim)
    records += run_queue_bench(bench_cfg, sim=sim)
    report.table("engine", records, [Column("stall_cycles"), Column("bound", fraction=True)])


def _report_area(synthesis: Synthesis, cfg: ClusterConfig, report: BenchmarkReport) -> None:
    """Wait for the engine's synthesis, print its area and add it to the engine records."""
    report.say(f"waiting for yosys (log: {synthesis.log}) ...")
    try:
        area = synthesis.result()
    except RuntimeError as exc:
        report.say(f"area: not measured ({exc})")
        return
    report.say(
        f"area (yosys synth of the engine, config {cfg.stable_hash()}): "
        f"{area['cells']} cells, {area['cells_per_mac']} cells per MAC"
    )
    for r in report.group("engine"):
        r["cells"], r["cells_per_mac"] = area["cells"], area["cells_per_mac"]
