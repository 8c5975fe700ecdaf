"""Bad input on the command line: one stderr line, exit status 2, nothing written.

Each case runs ``python -m tinyattn`` in a fresh folder that holds the input files of
:data:`FILES`; it must exit with 2, print exactly one line on stderr containing the
case's fragment, print nothing on stdout (nothing ran), and leave the folder as it was
(no output folder or file appears).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tinyattn
from tinyattn.cli import EXIT_PIPE

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "mobilebert-2l"
#: Somewhere no file can be made, for root too (sysfs refuses new entries).
UNWRITABLE = "/sys/tinyattn-test"

#: Input files every case finds in its working folder.
FILES: dict[str, str | bytes] = {
    "v8.toml": "[engine]\nn_pe = 4\nvec_len = 8\nacc_bits = 24\n",
    "npe.toml": "[engine]\nn_pe = 32\nvec_len = 16\nmax_seq = 64\n",
    "huge_l1.toml": "[memory]\nbank_words = 1048576\n",
    "l1_4mib.toml": "[memory]\nn_banks = 32\nbank_words = 32768\n",
    "huge_private.toml": "[core]\ncount = 4\nprivate_bytes = 1048576\n",
    "huge_engine.toml": "[engine]\ntile_m = 1024\nmax_seq = 4096\n",
    "empty.toml": "",
    "comments.toml": "# just a comment\n",
    "syntax.toml": "[engine\nn_pe = 4\n",
    "binary.toml": b"\xff\xfe\x00junk",
    "unknown.toml": "[engine]\nn_pes = 4\n",
    "a_file": "not a folder\n",
    "prog.c": "int main(void) { return 0; }\n",
    "nomodel/readme.txt": "a folder without config.json\n",
}

CASES: list[tuple[str, list[str], str]] = [
    # -- 3: rules that hold for some tops only, checked before anything is elaborated
    ("vec8-cluster", ["generate", "--config", "v8.toml", "--top", "cluster", "--out", "out"],
     "engine.vec_len = 8: the engine, cluster and cluster_l2 tops need at least 16 lanes"),
    ("vec8-engine", ["generate", "--config", "v8.toml", "--top", "engine", "--out", "out"],
     "--top compute_core"),
    ("npe-engine", ["generate", "--config", "npe.toml", "--top", "engine", "--out", "out"],
     "engine.n_pe = 32: the engine, cluster and cluster_l2 tops need n_pe <= vec_len"),
    ("vec8-lint", ["lint", "--config", "v8.toml"], "engine.vec_len = 8"),
    ("vec8-bench", ["bench", "engine", "--config", "v8.toml", "--json", "out/b.json"],
     "engine.vec_len = 8"),
    ("vec8-run-firmware", ["run-firmware", "prog.c", "--config", "v8.toml"], "engine.vec_len"),
    ("vec8-deploy", ["deploy", "synthetic", "--config", "v8.toml", "--out", "out"],
     "engine.vec_len"),
    ("vec8-run", ["run", "synthetic", "--config", "v8.toml", "--png", "out/r.png"],
     "engine.vec_len"),
    ("unknown-top", ["generate", "--top", "nope", "--out", "out"], "unknown top 'nope'"),
    ("unknown-top-lint", ["lint", "--top", "nope"], "unknown top 'nope'"),
    ("unknown-field", ["config", "--config", "unknown.toml"], "engine.n_pes"),
    # -- 4: sizes bounded by the address map and by a sane netlist
    ("huge-l1", ["generate", "--config", "huge_l1.toml", "--top", "tcdm", "--out", "out"],
     "memory.bank_words = 1048576: L1 = n_banks x bank_words x 4 = 128 MiB, more than its "
     "2 MiB window"),
    ("l1-4mib", ["config", "--config", "l1_4mib.toml"], "2 MiB window"),
    ("huge-private", ["generate", "--config", "huge_private.toml", "--out", "out"],
     "core.private_bytes = 1048576: count x private_bytes = 4 MiB"),
    ("huge-engine", ["generate", "--config", "huge_engine.toml", "--top", "engine", "--out",
                     "out"], "engine.tile_m = 1024: the engine's buffers"),
    # -- 5: the file system
    ("out-is-file", ["generate", "--out", "a_file"], "--out a_file: is a file"),
    ("out-under-file", ["generate", "--out", "a_file/sub"], "a_file is a file"),
    ("out-unwritable", ["generate", "--out", f"{UNWRITABLE}/out"], "cannot write there"),
    ("config-out-folder", ["config", "--out", "nomodel"], "--out nomodel: is a folder"),
    ("config-out-unwritable", ["config", "--out", f"{UNWRITABLE}.toml"], "cannot write there"),
    ("config-out-under-file", ["config", "--out", "a_file/c.toml"], "a_file is a file"),
    ("bench-json-folder", ["bench", "engine", "--json", "nomodel"], "--json nomodel: is a folder"),
    ("bench-json-unwritable", ["bench", "all", "--json", f"{UNWRITABLE}/b.json"],
     "--json /sys/tinyattn-test/b.json: cannot write there"),
    ("run-png-unwritable", ["run", "synthetic", "--png", f"{UNWRITABLE}.png"], "--png"),
    ("run-png-folder", ["run", "synthetic", "--png", "nomodel"], "is a folder"),
    ("deploy-out-file", ["deploy", "synthetic", "--out", "a_file"], "--out a_file: is a file"),
    ("deploy-out-unwritable", ["deploy", "synthetic", "--out", UNWRITABLE], "cannot write"),
    ("fw-missing", ["run-firmware", "missing.c"], "missing.c: no such file"),
    ("fw-folder", ["run-firmware", "nomodel"], "nomodel: is a folder"),
    ("fw-l2-missing", ["run-firmware", "prog.c", "--l2", "nope.bin"], "--l2 nope.bin: no such"),
    ("fw-l2-folder", ["run-firmware", "prog.c", "--l2", "nomodel"], "--l2 nomodel: is a folder"),
    ("fw-l2-out-unwritable", ["run-firmware", "prog.c", "--l2-out", f"{UNWRITABLE}.bin"],
     "--l2-out"),
    ("qr-out-folder", ["quantize-report", "synthetic", "--out", "nomodel"], "is a folder"),
    ("qr-out-unwritable", ["quantize-report", "synthetic", "--out", f"{UNWRITABLE}.png"],
     "cannot write there"),
    ("config-missing", ["config", "--config", "nope.toml"], "nope.toml: cannot be read"),
    ("config-folder", ["config", "--config", "nomodel"], "nomodel: cannot be read"),
    # -- 6: numbers, checked before anything runs
    ("demo-rows-0", ["demo", "--rows", "0"], "argument --rows: 0 is out of range"),
    ("demo-rows-neg", ["demo", "--rows", "-3"], "argument --rows"),
    ("demo-rows-text", ["demo", "--rows", "many"], "'many' is not a whole number"),
    ("demo-rows-max-dim", ["demo", "--rows", "5000"], "--rows 5000: more than engine.max_dim"),
    ("demo-seed-neg", ["demo", "--seed", "-1"], "argument --seed: -1 is out of range"),
    ("demo-seed-big", ["demo", "--seed", str(2**32)], "argument --seed"),
    ("fw-latency-neg", ["run-firmware", "prog.c", "--l2-latency", "-1"], "--l2-latency"),
    ("fw-latency-big", ["run-firmware", "prog.c", "--l2-latency", "100000"], "--l2-latency"),
    ("fw-stall-one", ["run-firmware", "prog.c", "--l2-stall", "1"], "use 0 <= p < 1"),
    ("fw-stall-nan", ["run-firmware", "prog.c", "--l2-stall", "nan"], "--l2-stall"),
    ("fw-stall-neg", ["run-firmware", "prog.c", "--l2-stall", "-0.1"], "--l2-stall"),
    ("fw-max-cycles-0", ["run-firmware", "prog.c", "--max-cycles", "0"], "--max-cycles"),
    ("fw-seed-neg", ["run-firmware", "prog.c", "--seed", "-5"], "argument --seed"),
    ("deploy-seq-0", ["deploy", "synthetic", "--seq", "0", "--out", "out"], "argument --seq"),
    ("deploy-seq-big", ["deploy", "synthetic", "--seq", "1000", "--out", "out"],
     "--seq 1000: the model has 512 positions"),
    ("deploy-fixture-seq", ["deploy", str(FIXTURE), "--seq", "256", "--out", "out"],
     "--seq 256: the model has 128 positions"),
    ("deploy-layers-0", ["deploy", "synthetic", "--layers", "0", "--out", "out"],
     "argument --layers"),
    ("deploy-layers-big", ["deploy", "synthetic", "--layers", "100", "--out", "out"],
     "--layers 100: MobileBERT has 24 layers; use 1..24"),
    ("deploy-fixture-layers", ["deploy", str(FIXTURE), "--layers", "3", "--out", "out"],
     "has 2 layers"),
    ("deploy-seed-neg", ["deploy", "synthetic", "--seed", "-1", "--out", "out"],
     "argument --seed"),
    ("run-layers-neg", ["run", "synthetic", "--layers", "-1", "--png", "out/r.png"],
     "argument --layers"),
    ("run-seq-text", ["run", "synthetic", "--seq", "1.5", "--png", "out/r.png"], "argument --seq"),
    ("qr-seq-0", ["quantize-report", "synthetic", "--seq-len", "0", "--out", "out/q.png"],
     "argument --seq-len"),
    ("qr-layers-0", ["quantize-report", "synthetic", "--layers", "0", "--out", "out/q.png"],
     "argument --layers"),
    ("qr-seed-neg", ["quantize-report", "synthetic", "--seed", "-1", "--out", "out/q.png"],
     "argument --seed"),
    # -- model input: a checkpoint that is not one
    ("deploy-no-folder", ["deploy", "no_such_model", "--out", "out"],
     "no_such_model: no such checkpoint folder"),
    ("deploy-no-config", ["deploy", "nomodel", "--out", "out"], "config.json"),
    # -- 7: configuration files
    ("config-empty", ["generate", "--config", "empty.toml", "--out", "out"],
     "empty.toml: has no settings"),
    ("config-comments", ["config", "--config", "comments.toml"], "comments.toml: has no settings"),
    ("config-syntax", ["generate", "--config", "syntax.toml", "--out", "out"],
     "syntax.toml: is not valid TOML"),
    ("config-binary", ["config", "--config", "binary.toml"], "binary.toml: is not a TOML file"),
    # -- usage
    ("no-command", [], "tinyattn: error: the following arguments are required: COMMAND"),
    ("unknown-command", ["frobnicate"], "invalid choice: 'frobnicate'"),
    ("unknown-option", ["config", "--frob"], "unrecognized arguments: --frob"),
    ("missing-out", ["generate"], "the following arguments are required: --out"),
    ("bad-sim", ["demo", "--sim", "modelsim"], "argument --sim: invalid choice"),
    ("cache-action", ["cache", "wipe"], "argument action: invalid choice"),
]  # fmt: skip


COMMANDS = {
    "generate", "config", "lint", "demo", "bench", "run-firmware", "deploy", "run",
    "quantize-report", "cache",
}  # fmt: skip


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tinyattn", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name, content in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return tmp_path


@pytest.mark.parametrize(("args", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    workdir: Path, args: list[str], fragment: str
) -> None:
    before = _tree(workdir)
    sysfs_before = set(os.listdir("/sys"))
    out = run_cli(*args, cwd=workdir)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    prog = f"tinyattn {args[0]}" if args and args[0] in COMMANDS else "tinyattn"
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert fragment in lines[0], lines[0]
    assert out.stdout == "", "nothing may run before the input is checked"
    assert _tree(workdir) == before, "nothing may be written"
    assert set(os.listdir("/sys")) == sysfs_before


def test_every_class_and_command_is_covered() -> None:
    """The table exercises each command that takes input (so that none can slip)."""
    assert {c[1][0] for c in CASES if c[1]} >= COMMANDS


@pytest.mark.parametrize(
    "args",
    [["config"], ["cache", "info"], ["quantize-report", str(FIXTURE), "--out", "{tmp}/q.png"]],
    ids=["config", "cache", "quantize-report"],
)
def test_closed_stdout_pipe_is_quiet(tmp_path: Path, args: list[str]) -> None:
    """``tinyattn config | head -0``: no traceback, status 141 (128 + SIGPIPE)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinyattn", *(a.format(tmp=tmp_path) for a in args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # long before the interpreter is up and writes
    err = proc.stderr.read()
    assert proc.wait() == EXIT_PIPE == 141
    assert err == b""


def test_closed_pipe_in_a_shell_pipeline() -> None:
    out = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {sys.executable} -m tinyattn config | head -1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.stdout == "[engine]\n"
    assert "Traceback" not in out.stderr and "Error" not in out.stderr
    assert out.returncode in (0, EXIT_PIPE)  # 0 when everything fit in the pipe first


def test_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout == f"tinyattn {tinyattn.__version__}\n"
    assert tinyattn.__version__ == importlib.metadata.version("tinyattn")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{tinyattn.__version__}"' in pyproject


def test_help_states_the_exit_status() -> None:
    for args in (["--help"], ["generate", "--help"], ["run-firmware", "--help"]):
        out = run_cli(*args)
        assert out.returncode == 0
        text = " ".join(out.stdout.split())
        assert "exit status: 0 ok; 1 a check failed" in text, args
        assert "2 bad input or usage" in text, args


def test_output_parents_are_created(tmp_path: Path) -> None:
    """The decision for a missing parent folder: made, like ``mkdir -p``."""
    out = run_cli("config", "--out", str(tmp_path / "a" / "b" / "c.toml"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a" / "b" / "c.toml").read_text().startswith("[engine]")


def test_missing_firmware_compiler_is_found_first(tmp_path: Path) -> None:
    """deploy needs the rv32 gcc: without it, one line before anything is loaded or made."""
    out = subprocess.run(
        [sys.executable, "-m", "tinyattn", "deploy", "synthetic", "--out", "d"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PATH": str(tmp_path / "no-tools")},
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and "riscv64-unknown-elf-gcc is not on PATH" in lines[0], out.stderr
    assert out.stdout == "" and not (tmp_path / "d").exists()
