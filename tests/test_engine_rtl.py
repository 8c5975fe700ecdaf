"""Launch the engine's cocotb bench on each simulator and configuration."""

from __future__ import annotations

import pytest

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.sim.runner import failure_report, run_bench

BENCH = "tinyattn.verif.benches.engine_bench"

CONFIGS = {
    # n_pe x vec_len, tile_m, L1: small ones for speed, the default for realism.
    "4x16": ClusterConfig(
        engine=EngineConfig(n_pe=4, vec_len=16, acc_bits=24, tile_m=8, max_seq=64),
        memory=MemoryConfig(n_banks=8, bank_words=512),
        dma=DmaConfig(dma_bits=128),
    ),
    "8x32": ClusterConfig(
        engine=EngineConfig(n_pe=8, vec_len=32, tile_m=16, max_seq=64),
        memory=MemoryConfig(n_banks=16, bank_words=512),
        dma=DmaConfig(dma_bits=128),
    ),
    "16x64": ClusterConfig(),
}
ALL_TESTS = [
    "gemm_random",
    "gemm_queue",
    "gemm_errors",
    "gemm_soft_clear",
    "job_perf",
    "attention_random",
    "mixed_queue",
]
#: (config, simulator) -> (tests, environment). Icarus is ~100x slower than
#: Verilator on the default configuration: it runs fewer, smaller jobs there.
PLAN = {
    ("4x16", "icarus"): (ALL_TESTS, {"TINYATTN_JOBS": "12"}),
    ("4x16", "verilator"): (ALL_TESTS, {"TINYATTN_JOBS": "24"}),
    ("8x32", "icarus"): (ALL_TESTS, {"TINYATTN_JOBS": "3"}),
    ("8x32", "verilator"): (ALL_TESTS, {"TINYATTN_JOBS": "12"}),
    ("16x64", "icarus"): (
        ["gemm_random", "gemm_errors", "gemm_soft_clear", "attention_random"],
        {"TINYATTN_JOBS": "1", "TINYATTN_SMALL": "1"},
    ),
    ("16x64", "verilator"): (ALL_TESTS, {"TINYATTN_JOBS": "4"}),
}


@pytest.mark.sim
@pytest.mark.parametrize("name", list(CONFIGS))
def test_engine(name: str, sim: str, seed: int) -> None:
    tests, env = PLAN[(name, sim)]
    result = run_bench("engine", CONFIGS[name], BENCH, sim, seed=seed, testcase=tests, env=env)
    assert result.ok, failure_report(result, seed)
    assert set(result.passed) == set(tests), result.passed


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
