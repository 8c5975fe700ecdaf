"""Launch the engine's cocotb bench on each simulator and configuration."""

from __future__ import annotations

import pytest
from coverage_summary import check_coverage
from sim_cases import plan_cases

from tinyattn.sim.runner import failure_report, run_bench
from tinyattn.verif.bench_configs import ENGINE_CONFIGS

BENCH = "tinyattn.verif.benches.engine_bench"

# n_pe x vec_len, tile_m, L1: small ones for speed, the default for realism.
CONFIGS = ENGINE_CONFIGS
ALL_TESTS = [
    "gemm_random",
    "gemm_queue",
    "gemm_errors",
    "gemm_soft_clear",
    "job_perf",
    "attention_random",
    "mixed_queue",
    "job_chain",
    "queue_perf",
]
#: (config, simulator) -> (tests, environment). Verilator runs every test on every
#: configuration. Icarus is ~100x slower on the larger engines; it cross-checks the
#: netlist under a four-state event-driven simulator on the small engine (every test) and
#: on the default one (fewer, smaller jobs). The 8 x 32 engine runs under Verilator only:
#: under Icarus it took 3 to 14 minutes and found nothing the other two did not.
PLAN = {
    ("4x16", "icarus"): (ALL_TESTS, {"TINYATTN_JOBS": "12"}),
    ("4x16", "verilator"): (ALL_TESTS, {"TINYATTN_JOBS": "24"}),
    ("8x32", "verilator"): (ALL_TESTS, {"TINYATTN_JOBS": "12"}),
    # The two dataflows at the default geometry; its error codes and soft clears run under
    # Verilator here and under both simulators at 4 x 16.
    ("16x64", "icarus"): (
        ["gemm_random", "attention_random"],
        {"TINYATTN_JOBS": "1", "TINYATTN_SMALL": "1"},
    ),
    # 8 random jobs of each kind and 6 mixed: the coverage model's 16 flag combinations
    # and 8 shapes per kind (verif/coverage.py) need that many jobs.
    ("16x64", "verilator"): (ALL_TESTS, {"TINYATTN_JOBS": "8", "TINYATTN_MIX": "6"}),
}

#: Runs whose coverage is printed but not required: Icarus at the default engine runs a
#: few jobs (tens of cycles a second there); the configuration closes its coverage under
#: Verilator, which ``make test`` (SIM=all) runs too.
PARTIAL_COVERAGE = {("16x64", "icarus")}


@pytest.mark.sim
@pytest.mark.parametrize(("name", "sim"), plan_cases(PLAN), indirect=["sim"])
def test_engine(name: str, sim: str, seed: int, record_property) -> None:
    tests, env = PLAN[(name, sim)]
    result = run_bench("engine", CONFIGS[name], BENCH, sim, seed=seed, testcase=tests, env=env)
    assert result.ok, failure_report(result, seed)
    assert set(result.passed) == set(tests), result.passed
    # Every reachable bin of the configuration's coverage model (verif/coverage.py).
    required = (name, sim) not in PARTIAL_COVERAGE
    check_coverage(
        record_property, result.test_dir, f"engine {name} {sim}", seed, required=required
    )


@pytest.mark.sim
def test_engine_half_grants_withheld(sim: str, seed: int) -> None:
    """Random GEMM and attention with 50% of the grants withheld on every lane."""
    tests = ["gemm_random", "attention_random"]
    env = {"TINYATTN_JOBS": "4", "TINYATTN_WITHHOLD": "0.5"}
    result = run_bench(
        "engine", CONFIGS["4x16"], BENCH, sim, seed=seed + 100, testcase=tests, env=env
    )
    assert result.ok, failure_report(result, seed + 100)
    assert set(result.passed) == set(tests), result.passed


def _job_perf(
    name: str, sim: str, seed: int, kind: str, m: int, n: int, k: int, **extra: int
) -> dict:
    env = {
        "TINYATTN_PERF_KIND": kind,
        "TINYATTN_PERF_M": str(m),
        "TINYATTN_PERF_N": str(n),
        "TINYATTN_PERF_K": str(k),
        "TINYATTN_PERF_HEADS": str(extra.get("heads", 1)),
        "TINYATTN_PERF_FLAGS": str(extra.get("flags", 0)),
        "TINYATTN_WITHHOLD": "0",
    }
    result = run_bench("engine", CONFIGS[name], BENCH, sim, seed=seed, testcase="job_perf", env=env)
    assert result.ok, failure_report(result, seed)
    return result.metrics["job_perf"]


@pytest.mark.sim
# Cycle counts agree across simulators (test_performance_floors.py checks it).
@pytest.mark.simulators("verilator")
def test_utilization_floor(sim: str, seed: int) -> None:
    """Cycle counts are deterministic, so utilization has a floor (ideal memory). Measured
    on the 4 x 16 engine: GEMM 32x32x64 1065 cycles for 1024 ideal (96.2%); attention
    S=32, 16 queries, 2 heads, D=16: 553 for 512 (92.6%). The floors leave a margin of
    about 1 point. On the 8 x 32 engine (16-row units) a residual and affine epilogue
    must cost nothing: the unit's residual rows are fetched while it computes (with 8
    rows of room they cost 8 cycles more).

    Split-lane QK beats (docs/engine.md): attention S=64, 16 queries, 2 heads, D=8 scores
    two keys a unit per beat; its bound is 100% (66.7% with one key a beat), measured 606
    cycles for 512 (84.5%; the 4 x 16 engine's 8-row query tiles leave the key fetch,
    8 beats a block, as long as the block's compute). The floor, 83.5%, is one point
    under that and far above the one-key-a-beat bound."""
    plain = _job_perf("4x16", sim, seed, "gemm", 32, 32, 64)
    attention = _job_perf("4x16", sim, seed, "attention", 16, 32, 16, heads=2)
    split = _job_perf("4x16", sim, seed, "attention", 16, 64, 8, heads=2)
    assert plain["utilization"] >= 0.95, plain
    assert attention["utilization"] >= 0.915, attention
    assert split["utilization"] >= 0.835, split
    plain = _job_perf("8x32", sim, seed, "gemm", 32, 64, 128)
    fused = _job_perf("8x32", sim, seed, "gemm", 32, 64, 128, flags=6)  # residual + affine
    assert fused["cycles"] == plain["cycles"], (fused, plain)
