"""The command line: generate, config, errors, help."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinyattn.cli import main
from tinyattn.config import ClusterConfig


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tinyattn", *args], capture_output=True, text=True, check=False
    )


def test_help_explains_every_command() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("generate", "config", "lint", "demo", "run-firmware", "quantize-report"):
        assert command in out.stdout
    for command in ("generate", "config", "lint", "demo", "run-firmware"):
        sub = run_cli(command, "--help")
        assert sub.returncode == 0 and "usage: tinyattn " + command in sub.stdout


def test_generate_writes_verilog_and_resolved_config(tmp_path: Path) -> None:
    cfg_file = tmp_path / "small.toml"
    cfg_file.write_text("[engine]\nn_pe = 4\nvec_len = 8\nacc_bits = 24\n")
    assert main(["generate", "--config", str(cfg_file), "--out", str(tmp_path / "a")]) == 0
    assert main(["generate", "--config", str(cfg_file), "--out", str(tmp_path / "b")]) == 0
    a = (tmp_path / "a" / "tinyattn_compute_core.v").read_bytes()
    assert b"module tinyattn_compute_core" in a
    # Deterministic: byte-identical for the same inputs.
    assert a == (tmp_path / "b" / "tinyattn_compute_core.v").read_bytes()
    resolved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert ClusterConfig.from_dict(resolved) == ClusterConfig.load(cfg_file)
    assert resolved["memory"]["n_banks"] == 32  # defaults are filled in


def test_generate_cluster_writes_the_core_verilog(tmp_path: Path) -> None:
    cfg_file = tmp_path / "small.toml"
    cfg_file.write_text(
        "[engine]\nn_pe = 4\nvec_len = 16\nacc_bits = 24\ntile_m = 8\nmax_seq = 64\n"
        "[memory]\nn_banks = 8\nbank_words = 256\n[interconnect]\nn_cores = 2\n"
        "[dma]\ndma_bits = 128\n"
        "[core]\nprivate_bytes = 4096\nstack_bytes = 1024\n"
    )
    out = tmp_path / "out"
    assert main(["generate", "--config", str(cfg_file), "--top", "cluster", "--out", str(out)]) == 0
    cluster = (out / "tinyattn_cluster.v").read_text()
    assert "picorv32 #(" in cluster and "module picorv32" not in cluster
    assert "module picorv32 #(" in (out / "picorv32.v").read_text()
    assert "TINYATTN_HOST_EXIT_OFFSET" in (out / "tinyattn_regs.h").read_text()


def test_run_firmware_bad_input_exit_2(tmp_path: Path) -> None:
    out = run_cli("run-firmware", str(tmp_path / "missing.c"))
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        == f"tinyattn run-firmware: error: {tmp_path / 'missing.c'}: no such file"
    )


FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mobilebert-2l"


@pytest.mark.skipif(
    shutil.which("riscv64-unknown-elf-gcc") is None, reason="riscv64-unknown-elf-gcc missing"
)
def test_deploy_writes_firmware_l2_image_and_plan(tmp_path: Path) -> None:
    out = run_cli("deploy", str(FIXTURE), "--seq", "64", "--out", str(tmp_path / "d"))
    assert out.returncode == 0, out.stderr
    assert "predicted" in out.stdout and "records" in out.stdout
    fw = tmp_path / "d" / "firmware"
    assert (fw / "run_model.elf").is_file() and (fw / "tinyattn_runtime.c").is_file()
    image = (tmp_path / "d" / "l2.bin").read_bytes()
    assert image[:4] == b"TASC"
    plan = (tmp_path / "d" / "plan.txt").read_text()
    assert "layer1.output.bottleneck" in plan and "S = 64" in plan


def test_deploy_refusals_are_one_line(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.toml"
    tiny.write_text("[memory]\nn_banks = 16\nbank_words = 16\n")
    for args, needle in (
        (["--seq", "256"], "--seq 256"),
        (["--config", str(tiny)], "bytes"),
    ):
        out = run_cli("deploy", str(FIXTURE), *args, "--out", str(tmp_path / "x"))
        assert out.returncode == 2, out.stdout
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], out.stderr


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cfg_file = tmp_path / "bad.toml"
    cfg_file.write_text("[engine]\nn_pe = 12\n")
    out = run_cli("generate", "--config", str(cfg_file), "--out", str(tmp_path))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "engine.n_pe = 12" in lines[0] and "power of two" in lines[0]


def test_unknown_top_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--top", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown top 'nope'" in capsys.readouterr().err


def test_config_prints_toml_that_loads(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 0
    assert ClusterConfig.from_toml(capsys.readouterr().out) == ClusterConfig()


def test_docs_quote_the_current_default_config_hash() -> None:
    """README's demo output and the docs' "default configuration (`hash`)" stay current."""
    root = Path(__file__).resolve().parents[1]
    want = ClusterConfig().stable_hash()
    readme = (root / "README.md").read_text()
    quoted = re.findall(r"tinyattn (?:demo|run): .*config ([0-9a-f]{12})", readme)
    for doc in sorted((root / "docs").glob("*.md")):
        quoted += re.findall(r"default configuration \(`([0-9a-f]{12})", doc.read_text())
    assert len(quoted) >= 3 and set(quoted) == {want}, (
        f"docs quote {sorted(set(quoted))}, the default configuration hashes to {want}"
    )


def test_cache_info_and_clear(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "compute_core-0123456789ab-ba9876543210" / "runs").mkdir(parents=True)
    (cache / "compute_core-0123456789ab-ba9876543210" / "tinyattn_compute_core.v").write_bytes(
        b"x" * 5000
    )
    (cache / "firmware").mkdir()
    (cache / "run-synthetic-S128.png").write_bytes(b"p" * 100)
    (cache / "keep-me.txt").write_text("not ours")
    env = {**os.environ, "TINYATTN_BUILD_DIR": str(cache)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tinyattn", "cache", *args],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )

    info = cli("info")
    assert info.returncode == 0, info.stderr
    lines = info.stdout.splitlines()
    assert lines[0] == f"location: {cache} (from TINYATTN_BUILD_DIR)"
    assert lines[1] == "size: 5.1 KB in 3 entries"
    assert "5.0 KB  compute_core-0123456789ab-ba9876543210" in info.stdout
    assert "keep-me.txt" in lines[-1]
    cleared = cli("clear")
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.startswith(f"removed 3 entries (5.1 KB) from {cache}")
    assert sorted(p.name for p in cache.iterdir()) == ["keep-me.txt"]
    assert cli("info").stdout.splitlines()[1] == "size: 0 bytes in 0 entries"


def test_generate_makes_missing_parents_and_overwrites(tmp_path: Path) -> None:
    cfg_file = tmp_path / "small.toml"
    cfg_file.write_text("[engine]\nn_pe = 2\nvec_len = 4\nacc_bits = 19\n")
    out = tmp_path / "a" / "b"
    for _ in range(2):
        assert main(["generate", "--config", str(cfg_file), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "registers.md",
        "tinyattn.rdl",
        "tinyattn_compute_core.v",
        "tinyattn_regs.h",
    ]
