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

Command line: ``tinyattn bench interconnect`` (with the cluster benchmark,
:mod:`.cluster`).
"""

from __future__ import annotations

from typing import Any

from tinyattn.config import ClusterConfig

from ..runner import failure_report, run_bench
from .output import BenchmarkReport, Column

__all__ = ["PERF_TESTS", "report_interconnect", "run_interconnect_bench"]

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


def report_interconnect(cfg: ClusterConfig, sim: str, report: BenchmarkReport) -> None:
    """The interconnect half of ``tinyattn bench interconnect``: the three scenarios."""
    report.say(f"interconnect benchmark: config {cfg.stable_hash()}, on {sim}")
    # Waits are in cycles: a mean wait of 0.6 is 0.6 cycles, not 60%.
    report.table(
        "interconnect",
        run_interconnect_bench(cfg, sim=sim),
        [Column("mean_wait"), Column("max_wait")],
    )
