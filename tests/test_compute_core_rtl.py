"""Launch the compute core's cocotb bench on each simulator and configuration."""

from __future__ import annotations

import pytest
from sim_cases import plan_cases

from tinyattn.config import ClusterConfig, EngineConfig
from tinyattn.sim.runner import failure_report, run_bench

BENCH = "tinyattn.verif.benches.compute_core_bench"

# (n_pe, vec_len, acc_bits, beats): small ones for speed, the default for realism.
CONFIGS = {
    "4x8": (4, 8, 24, 300),
    "8x16": (8, 16, 32, 200),
    "16x64": (16, 64, 32, 80),
}
#: (config, simulator) pairs that run. The default core runs under Icarus here; under
#: Verilator it runs inside the default engine's bench (tests/test_engine_rtl.py), every
#: job at full rate, so a second Verilator build of it (about a minute of CPU cold)
#: would find nothing that one does not.
PLAN = (
    ("4x8", "icarus"),
    ("4x8", "verilator"),
    ("8x16", "icarus"),
    ("8x16", "verilator"),
    ("16x64", "icarus"),
)


@pytest.mark.sim
@pytest.mark.parametrize(("name", "sim"), plan_cases(PLAN), indirect=["sim"])
def test_compute_core(name: str, sim: str, seed: int) -> None:
    n_pe, vec_len, acc_bits, beats = CONFIGS[name]
    cfg = ClusterConfig(engine=EngineConfig(n_pe=n_pe, vec_len=vec_len, acc_bits=acc_bits))
    result = run_bench(
        "compute_core", cfg, BENCH, sim, seed=seed, env={"TINYATTN_BEATS": str(beats)}
    )
    assert result.ok, failure_report(result, seed)
    assert set(result.passed) == {"random_stalls", "full_throughput", "gemm_tile"}, result.passed
