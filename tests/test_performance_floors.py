"""Performance floors in ``make test``: minimum utilization on small shapes, with a margin.

Cycle counts in simulation are deterministic for a given configuration, shape and seed
(the seed draws the grant stalls and the background traffic), so utilization can be
asserted without a timed test. The shapes are small so the floors cost seconds; the
issue's targets (95% plain GEMM, 85% with 10% grant stalls, 85% with background traffic)
are met with the margins below except where a row says otherwise. Measured figures,
margins and the reasons are in docs/verification.md ("Performance floors"); the
measurement code is ``make bench``'s own (``sim/benchmarks/engine.py::run_engine_bench``,
``sim/benchmarks/cluster.py::run_cluster_bench``), called here with small cases.

The seeds are fixed here (not ``TINYATTN_SEED``): a floor holds for the seeds it was
measured at. Each floor is about one point (about 20 cycles in 2048) under the lowest
figure measured over its seeds: room for a deliberate cycle or two, none for a
regression of the kind that matters.
"""

from __future__ import annotations

import pytest

from tinyattn.config import ClusterConfig
from tinyattn.sim.benchmarks.cluster import run_cluster_bench
from tinyattn.sim.benchmarks.engine import run_engine_bench, run_queue_bench
from tinyattn.sim.runner import selected_simulators, simulator_missing
from tinyattn.verif.bench_configs import CLUSTER_CONFIGS, ENGINE_CONFIGS

#: The floors run under Verilator. A cycle count is the netlist's, not the simulator's:
#: test_cycle_counts_agree_across_simulators checks that on one engine, one queue and one
#: cluster case, so the floors need not run again under Icarus (minutes a case there).
pytestmark = [pytest.mark.sim, pytest.mark.simulators("verilator")]

#: test_engine_rtl.py's and test_cluster_rtl.py's configurations (the same builds).
ENGINE_4X16 = ENGINE_CONFIGS["4x16"]
ENGINE_8X32 = ENGINE_CONFIGS["8x32"]
CLUSTER_SMALL = CLUSTER_CONFIGS["small"]

STALL_SEEDS = (1, 2, 3)

#: id -> (config, (m, n, k), grant-stall probability, seeds, floor). Names
#: read M x K x N, as in ``make bench``.
ENGINE_FLOORS = {
    # (a) plain GEMM, ideal memory: 98.04% and 97.66% measured (no seed dependence).
    "4x16 gemm 32x64x64": (ENGINE_4X16, (32, 64, 64), 0.0, (1,), 0.970),
    "8x32 gemm 64x128x64": (ENGINE_8X32, (64, 64, 128), 0.0, (1,), 0.965),
    # (b) 10% of the grants withheld on every lane: 86.16-87.00% (4x16) and
    #     94.16-94.38% (8x32) measured over the seeds.
    "4x16 gemm 32x64x64 10% stalls": (ENGINE_4X16, (32, 64, 64), 0.1, STALL_SEEDS, 0.85),
    "8x32 gemm 64x128x64 10% stalls": (
        ENGINE_8X32,
        (64, 64, 128),
        0.1,
        STALL_SEEDS,
        0.930,
    ),
}


@pytest.mark.parametrize("case", list(ENGINE_FLOORS))
def test_engine_utilization_floor(case: str, sim: str) -> None:
    cfg, (m, n, k), stalls, seeds, floor = ENGINE_FLOORS[case]
    measured = []
    for seed in seeds:
        (record,) = run_engine_bench(
            cfg, sim=sim, stalls=(stalls,), cases=[(case, "gemm", m, n, k, 1)], seed=seed
        )
        measured.append((seed, record["utilization"], record["cycles"], record["ideal_cycles"]))
    print(
        f"{case} ({sim}): " + ", ".join(f"seed {s}: {u:.2%} ({c}/{i})" for s, u, c, i in measured)
    )
    low = [f"seed {s}: {u:.2%} ({c} cycles for {i})" for s, u, c, i in measured if u < floor]
    assert not low, f"{case}: utilization under the floor of {floor:.1%}: {'; '.join(low)}"


#: id -> (config, (m, k, n), seeds, floor); backgrounds 25% and 50% of cycles.
CLUSTER_FLOORS = {
    # The default cluster (6 background cores): 93.43% (25%) and 93.60% (50%) measured.
    "default gemm 128x128x64": (ClusterConfig(), (128, 128, 64), (1,), 0.925),
    # 8 banks only, and the engine's port spans 4 of them: 83.39% (25%) and 81.56% (50%)
    # measured, under the 85% target (82.6-96.6% over seeds 1-3 in a run that also
    # measured 0% background first: the seed draws the background's addresses).
    "small gemm 64x64x32": (CLUSTER_SMALL, (64, 64, 32), (1,), 0.805),
}


@pytest.mark.parametrize("case", list(CLUSTER_FLOORS))
def test_cluster_utilization_floor_with_background(case: str, sim: str) -> None:
    cfg, gemm, seeds, floor = CLUSTER_FLOORS[case]
    measured = []
    for seed in seeds:
        for r in run_cluster_bench(cfg, sim=sim, gemm=gemm, backgrounds=(0.25, 0.5), seed=seed):
            assert r["bg_rate"] > 0.15, r  # the background really loaded L1
            measured.append((seed, r["background"], r["utilization"], r["bg_rate"]))
    print(
        f"{case} ({sim}): "
        + ", ".join(f"seed {s} bg {b:.0%}: {u:.2%} (granted {g:.3f})" for s, b, u, g in measured)
    )
    low = [f"seed {s}, {b:.0%} background: {u:.2%}" for s, b, u, _ in measured if u < floor]
    assert not low, f"{case}: utilization under the floor of {floor:.1%}: {'; '.join(low)}"


#: id -> (config, job shapes (m, n, k) cycling over the queue, jobs, floor). The queue is
#: pushed at once and timed from the first push to the last done: back to back, the jobs
#: after the first pay no fill and no drain (docs/engine.md, "Jobs back to back").
QUEUE_FLOORS = {
    # 99.50% measured (8233 cycles for 8192, both simulators): the first job's fill and the
    # last one's drain, 41 cycles; a single 16-row job of these shapes costs its ideal + 41.
    "4x16 8 queued gemms 16x64x64 / 16x128x32": (
        ENGINE_4X16,
        ((16, 64, 64), (16, 32, 128)),
        8,
        0.985,
    ),
}


@pytest.mark.parametrize("case", list(QUEUE_FLOORS))
def test_engine_queue_utilization_floor(case: str, sim: str) -> None:
    cfg, shapes, jobs, floor = QUEUE_FLOORS[case]
    (record,) = run_queue_bench(cfg, sim=sim, stalls=(0.0,), queues=[(case, jobs, shapes)])
    print(
        f"{case} ({sim}): {record['utilization']:.2%} ({record['cycles']}/{record['ideal_cycles']})"
    )
    assert record["utilization"] >= floor, (
        f"{case}: utilization {record['utilization']:.2%} ({record['cycles']} cycles for "
        f"{record['ideal_cycles']}) under the floor of {floor:.1%}"
    )


def test_cycle_counts_agree_across_simulators() -> None:
    """The floors above run under Verilator only; this is why that is enough. The same
    runs under Icarus give the same cycle counts, record for record: a GEMM with 10% of
    the grants withheld (the seed draws the stalls), a queue of back-to-back jobs, and a
    GEMM beside background traffic on the small cluster."""
    sims = selected_simulators()
    if set(sims) != {"icarus", "verilator"}:
        pytest.skip(f"compares the two simulators: SIM={','.join(sims)} selects one")
    for name in sims:
        if missing := simulator_missing(name):
            pytest.skip(f"SIMULATOR MISSING: {missing}")
    runs = {
        "engine gemm, 10% stalls": lambda sim: run_engine_bench(
            ENGINE_4X16, sim=sim, stalls=(0.1,), cases=[("gemm", "gemm", 16, 64, 32, 1)]
        ),
        "engine queue": lambda sim: run_queue_bench(
            ENGINE_4X16, sim=sim, stalls=(0.0,), queues=[("queue", 3, ((16, 32, 32),))]
        ),
        "cluster gemm, 50% background": lambda sim: run_cluster_bench(
            CLUSTER_SMALL, sim=sim, gemm=(32, 32, 32), backgrounds=(0.5,)
        ),
    }
    for what, run in runs.items():
        icarus, verilator = ([r["cycles"] for r in run(sim)] for sim in ("icarus", "verilator"))
        print(f"{what}: {icarus} cycles under Icarus, {verilator} under Verilator")
        assert icarus == verilator, f"{what}: Icarus {icarus} cycles, Verilator {verilator}"
