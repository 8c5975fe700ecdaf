"""Interconnect benchmark: sustained throughput and waits of the TCDM under synthetic traffic.

Runs the ``perf_*`` tests of ``tinyattn.verif.benches.interconnect_bench``
against the ``tcdm`` top (interconnect + L1 banks), with every port checked by
the protocol checker and the reference-memory scoreboard, and returns one
record per scenario:

``uniform``
    every narrow port and wide lane issues ``cycles`` back-to-back requests to
    uniformly random words. Ideal: ``max(cycles, ceil(ports * cycles / n_banks))``
    (one request per port per cycle, one per bank per cycle).
``hammer``
    every port issues ``cycles // ports`` back-to-back requests to one bank.
    Ideal: one request per cycle (the bank is busy every cycle).
``wide_stream_bg25``
    the wide port streams ``cycles`` vectors of adjacent words in lockstep (a
    vector starts when all lanes of the previous one were granted) while every
    narrow port is busy 25% of cycles at random addresses. Ideal: one vector a
    cycle. This is the interconnect's share of the engine's memory stalls; the
    engine-level benchmark (engine utilization under background traffic) needs
    the engine and is not part of this module.

Record fields: ``name``, ``cycles`` (measured, to the last grant),
``ideal_cycles``, ``utilization`` (= ideal / measured), ``mean_wait`` and
``max_wait`` (cycles from ``req`` to ``gnt`` over the ports the scenario
measures), and ``per_port`` (``granted``, ``mean_wait``, ``max_wait`` per port).

Command line: ``python -m tinyattn.sim.bench_interconnect [--config FILE] [--sim S]
[--cycles N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinyattn.config import ClusterConfig
from tinyattn.hw.interconnect import n_narrow, narrow_wait_bound, wide_wait_bound

from ..runner import failure_report, run_bench

__all__ = ["PERF_TESTS", "format_records", "main", "run_interconnect_bench"]

BENCH = "tinyattn.verif.benches.interconnect_bench"
#: The bench's cocotb tests, in the order of the returned records.
PERF_TESTS = ("perf_uniform", "perf_single_bank", "perf_wide_stream")


def run_interconnect_bench(
    cfg: ClusterConfig, *, sim: str = "verilator", cycles: int = 2000, seed: int = 1
) -> list[dict[str, Any]]:
    """Run the three scenarios on ``sim`` and return their records (see the module docstring).

    ``cycles`` sets the ideal length of each scenario. Raises ``RuntimeError``
    with the failure report (seed, log tail) when a check in the bench fails.
    """
    result = run_bench(
        "tcdm",
        cfg,
        BENCH,
        sim,
        seed=seed,
        testcase=list(PERF_TESTS),
        env={"TINYATTN_CYCLES": str(cycles)},
    )
    if not result.ok or set(result.passed) != set(PERF_TESTS):
        raise RuntimeError(failure_report(result, seed))
    return [result.metrics[name] for name in PERF_TESTS]


def format_records(cfg: ClusterConfig, records: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of ``records`` with the configuration and the wait bounds."""
    lines = [
        f"tcdm {cfg.memory.n_banks} banks, {n_narrow(cfg)} narrow ports "
        f"({cfg.interconnect.n_cores} cores + {cfg.dma.dma_bits // 32} DMA lanes), "
        f"{cfg.engine.port_lanes} wide lanes, max_stall {cfg.interconnect.max_stall}; "
        f"wait bounds: narrow {narrow_wait_bound(cfg)}, wide {wide_wait_bound(cfg)} cycles",
        f"{'scenario':<18}{'cycles':>8}{'ideal':>8}{'util':>8}{'mean wait':>11}{'max wait':>10}",
    ]
    for r in records:
        lines.append(
            f"{r['name']:<18}{r['cycles']:>8}{r['ideal_cycles']:>8}{r['utilization']:>8.1%}"
            f"{r['mean_wait']:>11.2f}{r['max_wait']:>10}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tinyattn.sim.bench_interconnect", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", metavar="FILE", help="cluster configuration (TOML)")
    parser.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    parser.add_argument("--cycles", type=int, default=2000, help="ideal length of each scenario")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="FILE", help="also write the records as JSON")
    args = parser.parse_args(argv)
    cfg = ClusterConfig.load(args.config) if args.config else ClusterConfig()
    records = run_interconnect_bench(cfg, sim=args.sim, cycles=args.cycles, seed=args.seed)
    print(format_records(cfg, records))
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
