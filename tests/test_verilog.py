"""Verilog generation: determinism, the build cache key, and a clean Verilator lint."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tinyattn import cache
from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.hw.tops import TOPS, verilog_module_name
from tinyattn.sim import verilog
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
    verdict = verilator_lint(verilog_sources(top, cfg), verilog_module_name(top))
    assert verdict.clean, verdict.stderr[-3000:]


def test_lint_verdict_follows_the_file_content(tmp_path: Path) -> None:
    """The kept lint verdict is reused only for the same content: an edit lints again."""
    clean = "module t(input wire clk, input wire d, output reg q);\n"
    clean += "  always @(posedge clk) q <= d;\nendmodule\n"
    netlist = tmp_path / "t.v"
    netlist.write_text(clean)
    first = verilator_lint([netlist], "t")
    assert first.clean and not first.kept, first.stderr
    assert len(list(tmp_path.glob(".lint-*.json"))) == 1
    netlist.write_text(clean.replace("q <= d", "q = d"))  # blocking in a clocked block
    edited = verilator_lint([netlist], "t")
    assert "BLKSEQ" in edited.stderr and not edited.clean and not edited.kept, edited.stderr
    netlist.write_text(clean)
    again = verilator_lint([netlist], "t")
    assert again == dataclasses.replace(first, kept=True)
    assert len(list(tmp_path.glob(".lint-*.json"))) == 2


def test_waivers_are_few_and_explained() -> None:
    assert len(VERILATOR_WAIVERS) <= 6
    assert all(len(reason) > 40 for reason in VERILATOR_WAIVERS.values())


# ---- the build cache's location ----------------------------------------------------------


def test_build_root_in_the_checkout_whatever_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TINYATTN_BUILD_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    checkout = Path(__file__).resolve().parents[1]
    assert cache.source_checkout() == checkout
    assert cache.build_location() == (checkout / "build", "the source checkout's build folder")


def test_build_root_override_and_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINYATTN_BUILD_DIR", str(tmp_path / "b"))
    assert cache.build_root() == tmp_path / "b"
    monkeypatch.setenv("TINYATTN_BUILD_DIR", "rel")
    monkeypatch.chdir(tmp_path)
    assert cache.build_root() == tmp_path / "rel"
    # Installed (not a checkout): the XDG cache folder.
    monkeypatch.delenv("TINYATTN_BUILD_DIR")
    monkeypatch.setattr(cache, "_PKG_ROOT", tmp_path / "site-packages" / "tinyattn")
    assert cache.source_checkout() is None
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.build_location() == (tmp_path / "xdg" / "tinyattn", "XDG_CACHE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.build_root() == tmp_path / "home" / ".cache" / "tinyattn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.build_root() == tmp_path / "home" / ".cache" / "tinyattn"


def test_cache_entries_tell_ours_from_the_rest(tmp_path: Path) -> None:
    for name in ("cluster-0123456789ab-ba9876543210", "firmware", "mine"):
        (tmp_path / name).mkdir()
    for name in ("run-mobilebert-2l-S128.png", "bench.json", "CACHEDIR.TAG", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "tcdm-0123456789ab-ba9876543210").write_text("a file, not a build folder")
    ours, others = cache.cache_entries(tmp_path)
    assert [p.name for p in ours] == [
        "CACHEDIR.TAG",
        "bench.json",
        "cluster-0123456789ab-ba9876543210",
        "firmware",
        "run-mobilebert-2l-S128.png",
    ]
    assert [p.name for p in others] == ["mine", "notes.txt", "tcdm-0123456789ab-ba9876543210"]
    assert cache.cache_entries(tmp_path / "missing") == ([], [])


def test_a_new_netlist_shows_progress_and_tags_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINYATTN_BUILD_DIR", str(tmp_path))
    shown: list[str] = []
    real = verilog.building

    def recording(what: str):  # type: ignore[no-untyped-def]
        shown.append(what)
        return real(what)

    monkeypatch.setattr(verilog, "building", recording)
    cfg = ClusterConfig(engine=EngineConfig(n_pe=2, vec_len=4, acc_bits=19))
    verilog_for("compute_core", cfg)
    verilog_for("compute_core", cfg)  # cached: no second spinner
    assert shown == [f"generating compute_core ({cfg.stable_hash()})"]
    assert (tmp_path / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172")
