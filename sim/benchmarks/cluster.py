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

Command line: ``tinyattn bench interconnect`` (after the interconnect benchmark,
:mod:`.interconnect`); :func:`run_cluster_bench` takes other shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tinyattn.config import ClusterConfig
from tinyattn.hw.job import FLAG_RELU, PARAM_RECORD_BYTES

from ..cosim import PUBLIC
from ..runner import failure_report, run_bench
from .output import BenchmarkReport, Column

__all__ = ["DEFAULT_GEMM", "gemm_l1_bytes", "report_cluster", "run_cluster_bench"]

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


def report_cluster(cfg: ClusterConfig, sim: str, report: BenchmarkReport) -> None:
    """The cluster half of ``tinyattn bench interconnect``: :data:`DEFAULT_GEMM` under
    :data:`DEFAULT_BACKGROUNDS`."""
    report.say("engine GEMM in the cluster, with background traffic from the other cores")
    report.table("cluster", run_cluster_bench(cfg, sim=sim), [Column("background", fraction=True)])
