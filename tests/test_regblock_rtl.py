"""Launch the register block's cocotb bench on each simulator and configuration."""

from __future__ import annotations

import pytest

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.sim.runner import failure_report, run_bench

BENCH = "tinyattn.verif.benches.regblock_bench"

CONFIGS = {
    # Small: narrow fields (16 KiB L1, 3-deep queues, 32-bit DMA); default: the reference.
    "small": ClusterConfig(
        engine=EngineConfig(
            n_pe=4, vec_len=16, acc_bits=24, tile_m=8, max_seq=64, job_queue_depth=3
        ),
        memory=MemoryConfig(n_banks=8, bank_words=512),
        dma=DmaConfig(dma_bits=32, queue_depth=3, l2_addr_bits=20),
    ),
    "default": ClusterConfig(),
}
TESTS = [
    "reset_values",
    "rw_registers",
    "ro_and_unmapped",
    "mirrors_and_macs_latch",
    "pulses",
    "push_pending",
    "events_and_irq",
    "random_traffic",
]


@pytest.mark.sim
@pytest.mark.parametrize("name", list(CONFIGS))
def test_regblock(name: str, sim: str, seed: int) -> None:
    result = run_bench("regblock", CONFIGS[name], BENCH, sim, seed=seed, testcase=TESTS)
    assert result.ok, failure_report(result, seed)
    assert set(result.passed) == set(TESTS), result.passed


@pytest.mark.sim
def test_regblock_no_idle_cycles(sim: str, seed: int) -> None:
    """Back-to-back bus operations (no idle cycles): every hold and pulse at full rate."""
    env = {"TINYATTN_IDLE": "0"}
    tests = ["push_pending", "random_traffic"]
    result = run_bench(
        "regblock", CONFIGS["small"], BENCH, sim, seed=seed + 50, testcase=tests, env=env
    )
    assert result.ok, failure_report(result, seed + 50)
    assert set(result.passed) == set(tests), result.passed
