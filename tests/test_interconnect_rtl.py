"""Launch the TCDM (interconnect + L1) cocotb bench on each simulator and configuration."""

from __future__ import annotations

import pytest

from tinyattn.config import (
    ClusterConfig,
    DmaConfig,
    EngineConfig,
    InterconnectConfig,
    MemoryConfig,
)
from tinyattn.hw.interconnect import n_narrow, narrow_wait_bound, wide_wait_bound
from tinyattn.sim.runner import failure_report, run_bench

BENCH = "tinyattn.verif.benches.interconnect_bench"
TESTS = ["random_traffic", "hammer", "conflict_free"]


def _cfg(banks: int, words: int, cores: int, stall: int, dma: int, vec_len: int) -> ClusterConfig:
    return ClusterConfig(
        engine=EngineConfig(n_pe=4, vec_len=vec_len, acc_bits=max(17 + vec_len.bit_length(), 24)),
        memory=MemoryConfig(n_banks=banks, bank_words=words),
        interconnect=InterconnectConfig(n_cores=cores, max_stall=stall),
        dma=DmaConfig(dma_bits=dma),
    )


# name -> (config, random-traffic cycles of the fast variant, of the slow variant).
# Slow cycles x ports: 240k + 300k + 350k + 560k port-cycles per simulator.
CONFIGS = {
    # 2 banks, 1 core + 1 DMA lane, one wide lane, max_stall 1: every corner at its minimum.
    "b2-c1-d32-v4-s1": (_cfg(2, 16, 1, 1, 32, 4), 6000, 80_000),
    # 4 banks, 2 cores + 1 DMA lane, 2 wide lanes.
    "b4-c2-d32-v8-s2": (_cfg(4, 32, 2, 2, 32, 8), 6000, 60_000),
    # 16 banks, 4 cores + 2 DMA lanes, 8 wide lanes.
    "b16-c4-d64-v32-s4": (_cfg(16, 64, 4, 4, 64, 32), 2500, 25_000),
    # The reference configuration: 32 banks, 8 cores + 4 DMA lanes, 16 wide lanes.
    "default": (ClusterConfig(), 1500, 20_000),
}


def _run(name: str, sim: str, seed: int, cycles: int) -> None:
    cfg = CONFIGS[name][0]
    result = run_bench(
        "tcdm", cfg, BENCH, sim, seed=seed, testcase=TESTS, env={"TINYATTN_CYCLES": str(cycles)}
    )
    assert result.ok, failure_report(result, seed)
    assert set(result.passed) == set(TESTS), result.passed
    hammer = result.metrics["hammer"]
    # Belt and braces: the bench asserts these too.
    assert hammer["narrow_bound"] == narrow_wait_bound(cfg)
    assert hammer["wide_bound"] == wide_wait_bound(cfg)
    assert hammer["phases"]["all"]["narrow_max_wait"] == narrow_wait_bound(cfg)
    assert hammer["phases"]["all"]["wide_max_wait"] == wide_wait_bound(cfg)
    assert result.metrics["random_traffic"]["ports"] == n_narrow(cfg) + cfg.engine.port_lanes


@pytest.mark.sim
@pytest.mark.parametrize("name", list(CONFIGS))
def test_interconnect(name: str, sim: str, seed: int) -> None:
    _run(name, sim, seed, CONFIGS[name][1])


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_interconnect_long(name: str, sim: str, seed: int) -> None:
    _run(name, sim, seed, CONFIGS[name][2])
