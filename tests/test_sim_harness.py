"""The simulation harness: simulator selection and waves on both simulators."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sim_cases import plan_cases

from tinyattn.config import ClusterConfig, EngineConfig
from tinyattn.sim import runner
from tinyattn.sim.runner import (
    WAVES_FILE,
    failure_report,
    run_bench,
    selected_simulators,
    verilator_control,
)

SMALL = ClusterConfig(engine=EngineConfig(n_pe=2, vec_len=4, acc_bits=19))


def test_sim_selection() -> None:
    assert selected_simulators("all") == ["icarus", "verilator"]
    assert selected_simulators("Verilator") == ["verilator"]
    assert selected_simulators("icarus,verilator") == ["icarus", "verilator"]
    with pytest.raises(ValueError, match="unknown simulator 'modelsim'"):
        selected_simulators("modelsim")


def test_plan_cases_follow_sim(monkeypatch: pytest.MonkeyPatch) -> None:
    """A launcher's (configuration, simulator) plan, narrowed to what SIM selects; a pair
    left out of the plan (the 8 x 32 engine under Icarus, say) never runs."""
    plan = {("small", "icarus"): 0, ("small", "verilator"): 0, ("large", "verilator"): 0}
    monkeypatch.setenv("SIM", "all")
    cases = plan_cases(plan)
    assert [c.id for c in cases] == ["icarus-small", "verilator-small", "verilator-large"]
    assert [c.values for c in cases] == [
        ("small", "icarus"),
        ("small", "verilator"),
        ("large", "verilator"),
    ]
    monkeypatch.setenv("SIM", "icarus")
    assert [c.id for c in plan_cases(plan)] == ["icarus-small"]


def test_verilator_control_file() -> None:
    text = verilator_control(
        "tinyattn_cluster",
        ["tinyattn_cluster.engine:busy", "tinyattn_cluster.dma:*", "tinyattn_cluster.engine:busy"],
        [Path("/build/x/picorv32.v")],
    )
    lines = text.splitlines()
    assert lines[0] == "`verilator_config"
    assert lines[1] == 'public_flat_rw -module "tinyattn_cluster" -var "*"'
    # Sorted and deduplicated, so the build folder key does not depend on the order.
    assert lines[2:4] == [
        'public_flat_rw -module "tinyattn_cluster.dma" -var "*"',
        'public_flat_rw -module "tinyattn_cluster.engine" -var "busy"',
    ]
    assert 'lint_off -rule BLKSEQ -file "*/picorv32.v"' in lines[4:]
    assert all(line.startswith("lint_off ") for line in lines[4:])
    assert text.endswith("\n")
    assert text == verilator_control(
        "tinyattn_cluster",
        ["tinyattn_cluster.dma:*", "tinyattn_cluster.engine:busy"],
        [Path("/elsewhere/picorv32.v")],
    )
    assert verilator_control("tinyattn_engine").splitlines()[1:] == [
        'public_flat_rw -module "tinyattn_engine" -var "*"'
    ]
    for bad in ["busy", ":busy", "tinyattn_engine:", 'a:"b"']:
        with pytest.raises(ValueError, match="expected '<module>:<signal>'"):
            verilator_control("tinyattn_engine", [bad])


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


def test_verilator_build_settings_are_scoped_and_yield_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The make and ccache settings of a Verilator build last for the build only, and a
    variable the user set wins (``OBJCACHE``, ``OPT_FAST``, ``CCACHE_*``)."""
    monkeypatch.setattr(runner.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    for name in ("MAKEFLAGS", "OBJCACHE", "OPT_FAST", "CCACHE_BASEDIR", "CCACHE_SLOPPINESS"):
        monkeypatch.delenv(name, raising=False)
    checkout = Path(__file__).resolve().parents[1]
    with runner._verilator_make_fixes("verilator", checkout / "build" / "x" / "verilator-1"):
        flags = os.environ["MAKEFLAGS"].split()
        assert "OBJCACHE=ccache" in flags and f"OPT_FAST={runner.VERILATOR_CXX_OPT}" in flags
        # The checkout holds both the build and .venv's Verilator and cocotb.
        assert os.environ["CCACHE_BASEDIR"] == str(checkout)
        assert os.environ["CCACHE_SLOPPINESS"] == runner.CCACHE_SLOPPINESS
    assert not {"MAKEFLAGS", "CCACHE_BASEDIR", "CCACHE_SLOPPINESS"} & set(os.environ)

    monkeypatch.setenv("OPT_FAST", "-O2")
    monkeypatch.setenv("CCACHE_SLOPPINESS", "time_macros")
    with runner._verilator_make_fixes("verilator", tmp_path / "verilator-1"):
        assert not any(f.startswith("OPT_FAST=") for f in os.environ["MAKEFLAGS"].split())
        assert os.environ["CCACHE_SLOPPINESS"] == "time_macros"
    assert os.environ["CCACHE_SLOPPINESS"] == "time_macros"
    with runner._verilator_make_fixes("icarus", tmp_path):
        assert "MAKEFLAGS" not in os.environ
