"""Verilog generation: determinism, the build cache key, and a clean Verilator lint."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.hw.tops import TOPS, verilog_module_name
from tinyattn.sim.tools import VERILATOR_WAIVERS, verilator_lint
from tinyattn.sim.verilog import generate_verilog, verilog_for, verilog_sources

# Small enough to be quick, valid for every top (the engine needs vec_len >= 16).
SMALL = ClusterConfig(
    engine=EngineConfig(n_pe=4, vec_len=16, acc_bits=24, tile_m=8, max_seq=64),
    memory=MemoryConfig(n_banks=8, bank_words=256),
    dma=DmaConfig(dma_bits=128),
)


def test_generation_is_deterministic() -> None:
    assert generate_verilog("compute_core", SMALL) == generate_verilog("compute_core", SMALL)


def test_build_folder_is_keyed_by_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYATTN_BUILD_DIR", str(tmp_path))
    a = verilog_for("compute_core", SMALL)
    b = verilog_for(
        "compute_core", ClusterConfig(engine=EngineConfig(n_pe=2, vec_len=8, acc_bits=24))
    )
    assert a.parent != b.parent
    assert a.parent.name.startswith(f"compute_core-{SMALL.stable_hash()}-")
    mtime = a.stat().st_mtime_ns
    assert verilog_for("compute_core", SMALL) == a and a.stat().st_mtime_ns == mtime  # reused


@pytest.mark.parametrize("top", list(TOPS))
@pytest.mark.parametrize("cfg", [SMALL, ClusterConfig()], ids=["4x16", "default"])
def test_verilator_lint_clean(top: str, cfg: ClusterConfig) -> None:
    run = verilator_lint(verilog_sources(top, cfg), verilog_module_name(top))
    assert run.returncode == 0 and "%Warning" not in run.stderr, run.stderr[-3000:]


def test_waivers_are_few_and_explained() -> None:
    assert len(VERILATOR_WAIVERS) <= 6
    assert all(len(reason) > 40 for reason in VERILATOR_WAIVERS.values())
