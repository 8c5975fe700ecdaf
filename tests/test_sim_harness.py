"""The simulation harness: simulator selection and waves on both simulators."""

from __future__ import annotations

import pytest

from tinyattn.config import ClusterConfig, EngineConfig
from tinyattn.sim.runner import WAVES_FILE, failure_report, run_bench, selected_simulators

SMALL = ClusterConfig(engine=EngineConfig(n_pe=2, vec_len=4, acc_bits=19))


def test_sim_selection() -> None:
    assert selected_simulators("all") == ["icarus", "verilator"]
    assert selected_simulators("Verilator") == ["verilator"]
    assert selected_simulators("icarus,verilator") == ["icarus", "verilator"]
    with pytest.raises(ValueError, match="unknown simulator 'modelsim'"):
        selected_simulators("modelsim")


@pytest.mark.sim
def test_waves_are_written(sim: str, seed: int) -> None:
    result = run_bench(
        "compute_core",
        SMALL,
        "tinyattn.verif.benches.compute_core_bench",
        sim,
        testcase="gemm_tile",
        waves=True,
        seed=seed,
        env={"TINYATTN_ROWS": "4"},
    )
    assert result.ok, failure_report(result, seed)
    dump = result.test_dir / WAVES_FILE
    assert dump.exists() and dump.stat().st_size > 100
    assert dump.read_bytes()[:1] != b"$", "expected FST (binary), not VCD"
