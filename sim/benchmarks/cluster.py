"""Cluster benchmark: engine GEMM utilization while the other cores load L1.

Runs the ``perf_gemm`` test of ``tinyattn.verif.benches.cluster_bench`` against the
``cluster`` top. Core 0 runs the bench's firmware: it DMAs the operands of one GEMM
(``Y = ReLU(requant(X . W^T + b))``, X (m, k), W^T (n, k)) from the L2 model into L1,
then, once per background load, pushes the job through the registers and sleeps on the
irq. Meanwhile every other core issues random L1 reads and writes (to a window no
tensor touches) with probability ``background`` in each cycle its port is free. Every
result is checked bit for bit against the golden model, every core port by the
protocol checker and the background traffic by its scoreboard.

Record fields:

``name``, ``background``
    ``gemm MxKxN bgP%`` and the load ``P`` (request probability per free cycle).
``cycles``, ``ideal_cycles``, ``utilization``
    engine busy cycles of the job (``ENGINE_BUSY_CYCLES``), ``m*n*k / (n_pe*vec_len)``,
    and useful MACs / (busy cycles x peak MACs per cycle).
``job_cycles``, ``job_utilization``
    cycles from the grant of the ``JOB_PUSH`` write to the rising edge of ``irq``
    (ENGINE_DONE), and the utilization over them; the push reaches the engine's queue
    one cycle after the grant and ``irq`` rises one cycle after the done event.
``stall_cycles``
    ``ENGINE_STALL_CYCLES``: busy cycles in which the array had work but issued no beat.
``bg_rate``, ``bg_mean_wait``, ``bg_max_wait``
    the background requests actually granted per core and cycle over the job, and
    their waits for ``gnt`` in cycles.

Command line: ``python -m tinyattn.sim.bench_cluster [--config FILE] [--sim S]
[--mkn M K N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinyattn.config import ClusterConfig
from tinyattn.hw.job import FLAG_RELU, PARAM_RECORD_BYTES

from ..cosim import PUBLIC
from ..runner import failure_report, run_bench
from .engine import format_table

__all__ = ["DEFAULT_GEMM", "format_records", "gemm_l1_bytes", "main", "run_cluster_bench"]

BENCH = "tinyattn.verif.benches.cluster_bench"
#: (m, k, n): X (128, 256) . W (256, 128), 82 KiB of operands and result, which fits
#: the default 128 KiB L1 beside the bench's background window (L1 / 16).
DEFAULT_GEMM = (128, 256, 128)
#: The background loads of the issue: none, 25% and 50% of cycles per core.
DEFAULT_BACKGROUNDS = (0.0, 0.25, 0.5)


def gemm_l1_bytes(m: int, k: int, n: int) -> int:
    """Upper bound of the L1 bytes the bench's GEMM takes (X, W^T, Y, parameters, gaps)."""
    pad = 8 + 12  # the bench's allocator: up to 3 words of gap per tensor, 2 per row
    return (m * (k + pad) + n * (k + pad) + m * (n + pad) + n * PARAM_RECORD_BYTES) + 64


def run_cluster_bench(
    cfg: ClusterConfig,
    *,
    sim: str = "verilator",
    gemm: tuple[int, int, int] = DEFAULT_GEMM,
    backgrounds: Sequence[float] = DEFAULT_BACKGROUNDS,
    flags: int = FLAG_RELU,
    seed: int = 1,
) -> list[dict[str, Any]]:
    """Run the GEMM ``gemm = (m, k, n)`` once per background load; one record each.

    Raises ``ValueError`` when the GEMM does not fit the configuration's L1 and
    ``RuntimeError`` (with the seed and the log tail) when a check in the bench fails.
    """
    m, k, n = gemm
    size = cfg.memory.size_bytes
    room = size - max(1024, size // 16)  # the bench keeps L1 / 16 for the background
    if gemm_l1_bytes(m, k, n) > room:
        raise ValueError(
            f"GEMM {m}x{k}x{n} needs up to {gemm_l1_bytes(m, k, n)} bytes of L1, "
            f"{room} are available at this configuration"
        )
    if cfg.interconnect.n_cores < 2 and any(backgrounds):
        raise ValueError("background traffic needs at least two cores")
    env = {
        "TINYATTN_PERF_M": str(m),
        "TINYATTN_PERF_K": str(k),
        "TINYATTN_PERF_N": str(n),
        "TINYATTN_PERF_FLAGS": str(flags),
        "TINYATTN_BACKGROUNDS": ",".join(str(b) for b in backgrounds),
    }
    # The firmware co-simulation's public PC probe: the two share one Verilator build.
    result = run_bench(
        "cluster", cfg, BENCH, sim, seed=seed, testcase="perf_gemm", env=env, public=PUBLIC
    )
    if not result.ok:
        raise RuntimeError(failure_report(result, seed))
    records = []
    for r in result.metrics["perf_gemm"]["records"]:
        r = dict(r)
        for key in ("utilization", "job_utilization", "bg_rate", "bg_mean_wait"):
            r[key] = round(r[key], 4)
        r["sim"] = sim
        records.append(r)
    return records


def format_records(cfg: ClusterConfig, records: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of ``records`` under a line naming the configuration."""
    e = cfg.engine
    head = (
        f"cluster {cfg.stable_hash()}: engine {e.n_pe}x{e.vec_len} ({e.macs_per_cycle} MAC/cycle), "
        f"{cfg.memory.size_bytes // 1024} KiB L1 in {cfg.memory.n_banks} banks, "
        f"{cfg.interconnect.n_cores} cores (max_stall {cfg.interconnect.max_stall}), "
        f"{cfg.dma.dma_bits}-bit DMA"
    )
    table = format_table(records, ["background", "job_cycles", "job_utilization", "bg_rate"])
    return head + "\n" + table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tinyattn.sim.bench_cluster", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", metavar="FILE", help="cluster configuration (TOML)")
    parser.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    parser.add_argument("--mkn", type=int, nargs=3, default=DEFAULT_GEMM, metavar=("M", "K", "N"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="FILE", help="also write the records as JSON")
    args = parser.parse_args(argv)
    cfg = ClusterConfig.load(args.config) if args.config else ClusterConfig()
    records = run_cluster_bench(cfg, sim=args.sim, gemm=tuple(args.mkn), seed=args.seed)
    print(format_records(cfg, records))
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
