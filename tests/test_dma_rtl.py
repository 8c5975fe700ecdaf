"""Launch the DMA's cocotb bench on each simulator and configuration."""

from __future__ import annotations

import pytest
from coverage_summary import check_coverage

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
    # the default: 128 KiB L1, 32-bit L2 (today a 512-bit DMA: 16 lanes)
    "128b-default": (ClusterConfig(), 30),
}


#: Performance floors of the unstalled ``throughput`` cases: efficiency = ideal beats /
#: cycles from acceptance to done, at least this, per class of case. Cycle counts are
#: deterministic. Each floor is the worst measured case of its class with a margin of
#: two cycles per transfer (measured 2026-11-30 on both simulators, cycles / ideal):
#:
#: - ``1d`` (1-D both ways, 2-D aligned rows): 32b 521-522 / 512; 64b 1033-1034 / 1024;
#:   default (512b) 265-266 / 256;
#: - ``2d`` (word offsets, constant or changing per row): 32b 265-266 / 256; 64b
#:   649-650 / 640; default 170-172 / 160;
#: - ``latency`` (1-D, L2 latency 8): 32b 529 / 512; 64b 1041 / 1024; default 273 / 256.
#:
#: ``b2b`` is the ceiling of ``queue_back_to_back``'s overhead per small transfer beyond
#: its beats: measured 8.5 (32b), 9.4 (64b), 10.0 (default); one cycle of margin.
PERF_FLOORS = {
    "32b-4KiB": {"1d": 0.977, "2d": 0.955, "latency": 0.964, "b2b": 9.5},
    "64b-16KiB": {"1d": 0.988, "2d": 0.981, "latency": 0.981, "b2b": 10.4},
    "128b-default": {"1d": 0.955, "2d": 0.919, "latency": 0.930, "b2b": 11.0},
}


def _case_class(case: str) -> str:
    if "latency" in case:
        return "latency"
    return "2d" if "offsets" in case else "1d"


@pytest.mark.sim
@pytest.mark.parametrize("name", list(CONFIGS))
def test_dma(name: str, sim: str, seed: int, record_property) -> None:
    cfg, transfers = CONFIGS[name]
    result = run_bench(
        "dma", cfg, BENCH, sim, seed=seed, env={"TINYATTN_TRANSFERS": str(transfers)}
    )
    assert result.ok, failure_report(result, seed)
    assert set(result.passed) == TESTS, result.passed
    # Every reachable bin of the configuration's coverage model (verif/coverage.py).
    check_coverage(record_property, result.test_dir, f"dma {name} {sim}", seed)
    floors = PERF_FLOORS[name]
    cases = {k: m for k, m in result.metrics["throughput"].items() if isinstance(m, dict)}
    assert len(cases) == 7, cases
    for case, m in cases.items():
        efficiency = m["ideal"] / m["cycles"]
        floor = floors[_case_class(case)]
        assert efficiency >= floor, (
            f"{name} {case}: {m['cycles']} cycles for {m['ideal']} beats, efficiency "
            f"{efficiency:.4f} < floor {floor}"
        )
    b2b = result.metrics["queue_back_to_back"]["overhead_per_transfer"]
    assert b2b <= floors["b2b"], f"{name}: {b2b} cycles per back-to-back transfer > {floors['b2b']}"
