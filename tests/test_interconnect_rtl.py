"""Launch the TCDM (interconnect + L1) cocotb bench on each simulator and configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from coverage_summary import check_coverage

from tinyattn.config import (
    ClusterConfig,
    DmaConfig,
    EngineConfig,
    InterconnectConfig,
    MemoryConfig,
)
from tinyattn.hw.interconnect import n_narrow
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


#: Random traffic of the slow variant, per configuration: at least this many port-cycles
#: (cycles x ports) and this many requests actually issued (granted).
SLOW_PORT_CYCLES = 1_000_000
SLOW_REQUESTS = 250_000

# name -> (config, random-traffic cycles of the fast variant).
CONFIGS = {
    # 2 banks, 1 core + 1 DMA lane, one wide lane, max_stall 1: every corner at its minimum.
    "b2-c1-d32-v4-s1": (_cfg(2, 16, 1, 1, 32, 4), 6000),
    # 4 banks, 2 cores + 1 DMA lane, 2 wide lanes.
    "b4-c2-d32-v8-s2": (_cfg(4, 32, 2, 2, 32, 8), 6000),
    # 16 banks, 4 cores + 2 DMA lanes, 8 wide lanes.
    "b16-c4-d64-v32-s4": (_cfg(16, 64, 4, 4, 64, 32), 2500),
    # The reference configuration: 32 banks, 8 cores + 16 DMA lanes, 16 wide lanes.
    "default": (ClusterConfig(), 1500),
}


def _ports(cfg: ClusterConfig) -> int:
    return n_narrow(cfg) + cfg.engine.port_lanes


def slow_cycles(cfg: ClusterConfig) -> int:
    """Random-traffic cycles of the slow variant: SLOW_PORT_CYCLES over the ports, +2%."""
    return -(-SLOW_PORT_CYCLES * 102 // 100 // _ports(cfg))


def _run(
    name: str, sim: str, seed: int, cycles: int, tests: list[str], **env: str
) -> tuple[dict, Path]:
    """Run ``tests`` of the bench; their metrics and the run folder."""
    cfg = CONFIGS[name][0]
    result = run_bench(
        "tcdm",
        cfg,
        BENCH,
        sim,
        seed=seed,
        testcase=tests,
        env={"TINYATTN_CYCLES": str(cycles), **env},
    )
    assert result.ok, failure_report(result, seed)
    assert set(result.passed) == set(tests), result.passed
    assert result.metrics["random_traffic"]["ports"] == _ports(cfg)
    return result.metrics, result.test_dir


@pytest.mark.sim
@pytest.mark.parametrize("name", list(CONFIGS))
def test_interconnect(name: str, sim: str, seed: int, record_property) -> None:
    cfg = CONFIGS[name][0]
    metrics, test_dir = _run(name, sim, seed, CONFIGS[name][1], TESTS)
    # Every reachable bin of the configuration's coverage model (verif/coverage.py):
    # collisions at a bank, wide against narrow and who won, waits up to the bound.
    check_coverage(record_property, test_dir, f"interconnect {name} {sim}", seed)
    # The bounds the bench enforced every cycle, against the formulas of
    # docs/interconnect.md written out here (N narrow ports, W wide lanes, S max_stall).
    n, w, s = n_narrow(cfg), cfg.engine.port_lanes, cfg.interconnect.max_stall
    assert n == cfg.interconnect.n_cores + cfg.dma.dma_bits // 32
    hammer = metrics["hammer"]
    assert hammer["narrow_bound"] == n * (s + 1) - 1, hammer["narrow_bound_formula"]
    assert hammer["wide_bound"] == w + (w - 1) // s, hammer["wide_bound_formula"]
    # ... and reached: the longest waits measured while every port hammered one bank.
    assert hammer["phases"]["all"]["narrow_max_wait"] == n * (s + 1) - 1, hammer["phases"]
    assert hammer["phases"]["all"]["wide_max_wait"] == w + (w - 1) // s, hammer["phases"]


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_interconnect_long(name: str, sim: str, seed: int) -> None:
    """Random traffic alone, at least SLOW_PORT_CYCLES port-cycles and SLOW_REQUESTS
    requests per configuration and simulator, then every word of the L1 read back
    (hammer and conflict_free run in the fast variant)."""
    cfg = CONFIGS[name][0]
    metrics, _ = _run(
        name, sim, seed, slow_cycles(cfg), ["random_traffic"], TINYATTN_READBACK_ALL="1"
    )
    traffic = metrics["random_traffic"]
    assert traffic["words_read_back"] == traffic["words_in_l1"], traffic
    assert traffic["port_cycles"] >= SLOW_PORT_CYCLES, traffic["port_cycles"]
    assert traffic["requests"] >= SLOW_REQUESTS, traffic["requests"]
    print(
        f"{name} {sim}: {traffic['cycles']} cycles x {traffic['ports']} ports = "
        f"{traffic['port_cycles']} port-cycles, {traffic['requests']} requests, "
        f"{traffic['reads_checked']} checked reads, {traffic['words_read_back']} words read back"
    )
