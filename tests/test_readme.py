"""The README's examples work as pasted.

Every Python block runs, in order, in one interpreter (as a reader pastes them into one
session), in a fresh folder that sees the checkout's ``tests/``. Every shell command
(``.venv/bin/tinyattn ...`` in a block, ``tinyattn ...`` in the text) parses with the
real command line; the cheap ones run, in order, as pasted, and what the README says they
write or print is checked. Blocks after ``<!-- readme-test: slow -->`` and the commands
that simulate run only in the slow suite (``make test-slow``).
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tinyattn import cli
from tinyattn.sw import report

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
#: Commands that run in seconds without a simulator; the others only parse here.
CHEAP = {"config", "generate", "deploy", "cache", "quantize-report"}
_BLOCK = re.compile(
    r"^(?:<!-- readme-test: (?P<mark>[a-z]+)[^>]*-->\n)?```(?P<lang>\w*)\n(?P<body>.*?)^```",
    re.M | re.S,
)


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    line: int
    slow: bool


def blocks() -> list[Block]:
    return [
        Block(
            m["lang"],
            m["body"],
            README.count("\n", 0, m.start("body")) + 1,
            m["mark"] == "slow",
        )
        for m in _BLOCK.finditer(README)
    ]


def python_blocks() -> list[Block]:
    return [b for b in blocks() if b.lang == "python"]


def block_commands() -> list[tuple[str, list[str], Block]]:
    """``(command line, the comment lines right after it, block)`` of the shell blocks."""
    found = []
    for b in blocks():
        if b.lang:
            continue
        lines = b.body.splitlines()
        for i, line in enumerate(lines):
            if line.startswith((".venv/bin/tinyattn ", "make ")):
                after = []
                for more in lines[i + 1 :]:
                    if not more.startswith("#"):
                        break
                    after.append(more)
                found.append((line.split("  #")[0].strip(), after, b))
    return found


def text_commands() -> list[str]:
    """``tinyattn ...`` in inline code of the text (not the quoted error lines)."""
    text = " ".join(README.split())
    spans = re.findall(r"`((?:\.venv/bin/)?tinyattn [^`]+)`", text)
    return [s for s in spans if "<" not in s and ": error:" not in s]


def argv_of(command: str) -> list[str]:
    """The arguments after ``tinyattn``; redirections and pipes cut, ``[optional]`` kept."""
    command = command.replace("\\|", "|").split("|")[0].split(">")[0]
    words = shlex.split(command.replace("[", "").replace("]", ""))
    assert words[0] in ("tinyattn", ".venv/bin/tinyattn"), command
    return words[1:]


def parse(argv: list[str]) -> None:
    """The real parser accepts ``argv`` (SystemExit 2 on anything it refuses)."""
    if argv and argv[0] == "quantize-report":
        report._parser().parse_args(argv[1:])
    elif argv in (["--help"], ["--version"]):
        return
    else:
        cli.build_parser().parse_args(argv)


def _check_imports(code: str) -> None:
    """Every name a block imports exists (for the blocks that do not run here)."""
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)


@pytest.fixture
def pasted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A reader's fresh folder that sees the checkout's tests/ (the fixtures)."""
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TINYATTN_BUILD_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_the_readme_has_the_examples_this_file_checks() -> None:
    assert len(python_blocks()) >= 7
    assert {argv_of(c)[0] for c, _, _ in block_commands() if not c.startswith("make")} >= {
        "config", "generate", "lint", "run-firmware", "deploy", "run",
    }  # fmt: skip
    assert [c for c, _, _ in block_commands() if c.startswith("make")] == ["make demo", "make test"]
    assert any(b.slow for b in python_blocks())


def test_python_blocks_run_as_pasted(pasted: Path) -> None:
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for b in python_blocks():
        code = compile(b.body, f"README.md:{b.line}", "exec")
        if b.slow:
            _check_imports(b.body)
            continue
        exec(code, namespace)
    # What the blocks promise.
    assert namespace["err"] == 0 and namespace["y"].shape == (64, 64)  # type: ignore[attr-defined]
    assert (pasted / "my.toml").exists()


@pytest.mark.slow
def test_slow_python_blocks_run(tmp_path: Path) -> None:
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for b in python_blocks():
        if b.slow:
            exec(compile(b.body, f"README.md:{b.line}", "exec"), namespace)
    assert namespace["r"].ok  # type: ignore[attr-defined]


def test_every_command_parses() -> None:
    commands = [c for c, _, _ in block_commands() if not c.startswith("make")]
    for command in commands + text_commands():
        argv = argv_of(command)
        if len(argv) == 1 and argv[0] in cli.build_parser()._subparsers._group_actions[0].choices:  # type: ignore[union-attr]
            continue  # the bare command name, in the text
        parse(argv)


def test_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for command, _, _ in block_commands():
        if command.startswith("make "):
            assert re.search(rf"^{command.split()[1]}:", makefile, re.M), command
    for target in re.findall(r"`make ([a-z-]+)`", README):
        assert re.search(rf"^{target}:", makefile, re.M), target


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    line = command.replace(".venv/bin/tinyattn", f"{shlex.quote(sys.executable)} -m tinyattn")
    return subprocess.run(
        ["bash", "-c", line], cwd=cwd, capture_output=True, text=True, check=False, env=os.environ
    )


def test_cheap_commands_run_as_pasted(pasted: Path) -> None:
    ran = []
    for b in blocks():
        if not b.lang and b.body.startswith("[engine]"):
            (pasted / "my.toml").write_text(b.body)  # "Edit the file": the README's edit
        for command, comments, block in block_commands():
            if block.line != b.line or command.startswith("make"):
                continue
            argv = argv_of(command)
            if argv[0] not in CHEAP:
                continue
            if argv[0] == "deploy" and shutil.which("riscv64-unknown-elf-gcc") is None:
                continue
            out = _shell(command, pasted)
            assert out.returncode == 0, (command, out.stderr)
            ran.append(argv[0])
            said = re.findall(r"out/[\w.]+", " ".join(comments))
            if argv[0] == "generate" and said:  # "# writes out/..., out/..."
                assert sorted(said) == sorted(f"out/{p.name}" for p in (pasted / "out").iterdir())
    assert {"config", "generate"} <= set(ran)


def test_quoted_error_line_is_what_generate_prints(pasted: Path) -> None:
    quoted = re.search(r"^tinyattn generate: error: engine\.n_pe = 12: .*$", README, re.M)
    assert quoted is not None
    (pasted / "bad.toml").write_text("[engine]\nn_pe = 12\n")
    out = _shell(".venv/bin/tinyattn generate --config bad.toml --out out/", pasted)
    assert out.returncode == 2 and out.stderr == quoted[0] + "\n"
    assert not (pasted / "out").exists()


def test_readme_states_the_exit_status() -> None:
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", README, re.M))
    assert set(rows) >= {"0", "1", "2", "141"}
    assert (cli.EXIT_OK, cli.EXIT_FAIL, cli.EXIT_USAGE, cli.EXIT_PIPE) == (0, 1, 2, 141)
    assert "bad input" in rows["2"] and "check failed" in rows["1"]
    assert "TINYATTN_BUILD_DIR" in README and "XDG_CACHE_HOME" in README
    assert "tinyattn cache info" in README and "make clean" in README


@pytest.mark.slow
def test_simulating_commands_run(tmp_path: Path) -> None:
    """The commands that simulate or sweep (lint, run-firmware, run, sweep), as pasted;
    the build cache is the usual one, so that builds are shared with the rest of the suite."""
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    (tmp_path / "docs").symlink_to(ROOT / "docs")  # the sweep's spec
    (tmp_path / "my.toml").write_text("[engine]\nn_pe = 8\nvec_len = 16\n")
    blink = re.search(r"```c\n/\* blink\.c \*/\n(.*?)```", README, re.S)
    assert blink is not None
    (tmp_path / "blink.c").write_text(blink[1])
    for command, _, _ in block_commands():
        if command.startswith("make") or argv_of(command)[0] in CHEAP:
            continue
        out = _shell(command, tmp_path)
        assert out.returncode == 0, (command, out.stdout[-2000:], out.stderr[-2000:])
