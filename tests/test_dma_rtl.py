"""Launch the DMA's cocotb bench on each simulator and configuration."""

from __future__ import annotations

import pytest

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.sim.runner import failure_report, run_bench

BENCH = "tinyattn.verif.benches.dma_bench"
TESTS = {"random_transfers", "queue_back_to_back", "errors_and_clear", "throughput"}

# The engine does not matter to the DMA; a small one lets the L1 be small.
_SMALL_ENGINE = EngineConfig(n_pe=4, vec_len=8, acc_bits=24)

# name: (config, random transfers). Small ones for speed, the default for realism.
CONFIGS = {
    # one lane, 4 KiB L1, 64 KiB L2 address space
    "32b-4KiB": (
        ClusterConfig(
            engine=_SMALL_ENGINE,
            memory=MemoryConfig(n_banks=4, bank_words=256),
            dma=DmaConfig(dma_bits=32, queue_depth=2, l2_addr_bits=16),
        ),
        40,
    ),
    # two lanes, 16 KiB L1, 1 MiB L2, a deeper queue
    "64b-16KiB": (
        ClusterConfig(
            engine=_SMALL_ENGINE,
            memory=MemoryConfig(n_banks=8, bank_words=512),
            dma=DmaConfig(dma_bits=64, queue_depth=3, l2_addr_bits=20),
        ),
        40,
    ),
    # the default: four lanes, 128 KiB L1, 32-bit L2
    "128b-default": (ClusterConfig(), 30),
}


@pytest.mark.sim
@pytest.mark.parametrize("name", list(CONFIGS))
def test_dma(name: str, sim: str, seed: int) -> None:
    cfg, transfers = CONFIGS[name]
    result = run_bench(
        "dma", cfg, BENCH, sim, seed=seed, env={"TINYATTN_TRANSFERS": str(transfers)}
    )
    assert result.ok, failure_report(result, seed)
    assert set(result.passed) == TESTS, result.passed
    for case, m in result.metrics["throughput"].items():
        if isinstance(m, dict):
            assert m["cycles"] >= m["ideal"], (case, m)
