"""Run compiled firmware on the cluster RTL: :func:`run_firmware`.

One call builds the firmware (or takes a built one), simulates the ``cluster`` top with
the bench :mod:`tinyattn.verif.benches.firmware_bench`, and returns what the run did:
the exit code, the console output, the cycles, the performance counters and the L2
image after the run. The simulator build is cached per configuration; firmware is
loaded through the cluster's ``loader`` port at simulation time, so a changed program
never rebuilds the simulator.

A firmware that stops on a fault (illegal instruction, misaligned access, ebreak/ecall,
an access outside every window, a fetch outside the private memory) or runs past the
cycle limit raises :class:`FirmwareRunError`, whose message names the cause, the core,
the program counter and the instruction there.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyattn.config import ClusterConfig

from .progress import ProgressFile
from .runner import failure_report, run_bench

__all__ = [
    "BENCH",
    "FirmwareRun",
    "FirmwareRunError",
    "L2Timing",
    "describe_trap",
    "elf_words",
    "run_firmware",
]

BENCH = "tinyattn.verif.benches.firmware_bench"
#: The TCDM ports inside the cluster (cores, DMA lanes, engine lanes), which the cluster
#: bench's lane monitor watches (``verif/benches/cluster_bench.py::interconnect_lanes``).
PUBLIC_LANES = ("tinyattn_cluster.tcdm:narrow__*", "tinyattn_cluster.tcdm:wide__*")
#: Signals below the top that the benches read (PicoRV32's program counter, on a fault;
#: the TCDM lanes). One list for every cluster bench, so they share one Verilator build.
PUBLIC = (
    "picorv32:reg_pc",
    "tinyattn_cluster.regs:int_jobs_done",
    "tinyattn_cluster.engine:control__busy_cycles",
    *PUBLIC_LANES,
)
OBJCOPY = "riscv64-unknown-elf-objcopy"
OBJDUMP = "riscv64-unknown-elf-objdump"


class FirmwareRunError(RuntimeError):
    """The firmware stopped on a fault or did not end within the cycle limit."""

    def __init__(self, message: str, run: FirmwareRun) -> None:
        super().__init__(message)
        self.run = run


@dataclass(frozen=True)
class L2Timing:
    """How the L2 model behind the DMA answers.

    ``req_stall``: probability that ``ready`` is low in a cycle (back-pressure);
    ``rsp_gap``: probability that a due response is held back a cycle; ``max_latency``:
    each response comes 1 + uniform(0..max_latency) cycles after its request.
    """

    req_stall: float = 0.0
    rsp_gap: float = 0.0
    max_latency: int = 0


@dataclass(frozen=True)
class Fault:
    core: int
    cause: str  # FaultCause name: TRAP, BUS or FETCH
    addr: int
    pc: int
    description: str


@dataclass(frozen=True)
class FirmwareRun:
    """What one run did. ``cycles`` count from ``fetch_enable`` to the end of the run."""

    exit_code: int | None  # None when the firmware did not write HOST_EXIT
    console: str
    cycles: int
    counters: dict[str, int]
    l2: np.ndarray | None
    faults: tuple[Fault, ...]
    timeout: bool
    run_dir: Path
    sim_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cycles_per_second(self) -> float:
        """Simulated cycles per wall-clock second from ``fetch_enable`` to the end of the
        run (loading, simulator start-up and the build excluded)."""
        seconds = self.extra.get("run_seconds", 0.0)
        return self.cycles / seconds if seconds else 0.0

    @property
    def macs(self) -> int:
        return self.counters.get("engine_macs_lo", 0) | self.counters.get("engine_macs_hi", 0) << 32


def elf_words(elf: Path, private_bytes: int) -> np.ndarray:
    """The private-memory image of ``elf`` as little-endian 32-bit words from address 0."""
    if shutil.which(OBJCOPY) is None:
        raise RuntimeError(
            f"{OBJCOPY} not found: apt-get install gcc-riscv64-unknown-elf "
            "(`make test` installs it where it may)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "image.bin"
        subprocess.run([OBJCOPY, "-O", "binary", str(elf), str(binary)], check=True)
        raw = binary.read_bytes()
    if len(raw) > private_bytes:
        raise ValueError(
            f"{elf}: image of {len(raw)} bytes does not fit the {private_bytes}-byte "
            "private memory (core.private_bytes)"
        )
    raw += b"\0" * (-len(raw) % 4)
    return np.frombuffer(raw, dtype="<u4").copy()


def _instruction(words: np.ndarray, pc: int) -> tuple[int, int]:
    """The instruction at ``pc`` and its length in bytes (2 for a compressed one)."""
    raw = words.astype("<u4").tobytes()
    if pc < 0 or pc + 2 > len(raw):
        return 0, 0
    low = int.from_bytes(raw[pc : pc + 2], "little")
    if low & 3 != 3:
        return low, 2
    return int.from_bytes(raw[pc : pc + 4].ljust(4, b"\0"), "little"), 4


def describe_trap(words: np.ndarray, pc: int) -> str:
    """Which PicoRV32 trap the instruction at ``pc`` raised.

    With every IRQ masked PicoRV32 traps on exactly these: a misaligned load or store,
    ``ebreak``, ``ecall``, and an illegal instruction (anything it does not decode).
    """
    insn, size = _instruction(words, pc)
    if size == 0:
        return "trap outside the loaded image"
    if size == 2:
        op, funct3 = insn & 3, insn >> 13
        if insn == 0x9002:
            return "ebreak"
        if (op, funct3) in ((0, 2), (2, 2)):
            return "misaligned load"
        if (op, funct3) in ((0, 6), (2, 6)):
            return "misaligned store"
        return "illegal instruction"
    opcode = insn & 0x7F
    if opcode == 0x03:
        return "misaligned load"
    if opcode == 0x23:
        return "misaligned store"
    if insn == 0x00100073:
        return "ebreak"
    if insn == 0x00000073:
        return "ecall"
    return "illegal instruction"


def _disassemble(elf: Path | None, pc: int) -> str:
    """The objdump line of the instruction at ``pc``, or "" when unavailable."""
    if elf is None or shutil.which(OBJDUMP) is None:
        return ""
    run = subprocess.run(
        [OBJDUMP, "-d", f"--start-address={pc}", f"--stop-address={pc + 4}", str(elf)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in run.stdout.splitlines():
        if line.strip().startswith(f"{pc:x}:"):
            return " ".join(line.split("\t")[2:]).strip()
    return ""


def _fault(entry: dict[str, Any], words: np.ndarray, elf: Path | None) -> Fault:
    pc, addr = entry["pc"], entry["addr"]
    insn = _disassemble(elf, pc)
    at = f"pc {pc:#010x}" + (f" ({insn})" if insn else "")
    if entry["cause"] == "TRAP":
        text = f"{describe_trap(words, pc)} at {at}"
    elif entry["cause"] == "BUS":
        text = (
            f"bus error: access to unmapped address {addr:#010x} at {at} "
            "(mapped: private memory, L1, registers; see docs/core.md)"
        )
    else:
        text = f"instruction fetch from {addr:#010x}, outside the private memory, at {at}"
    return Fault(entry["core"], entry["cause"], addr, pc, f"core {entry['core']}: {text}")


def _firmware_image(
    cfg: ClusterConfig, program: object, work: Path, cflags: Sequence[str]
) -> tuple[np.ndarray, Path | None]:
    """Words and ELF of ``program``: a built image, an ELF path, or C/assembly sources."""
    if isinstance(program, np.ndarray):
        return program.astype(np.uint32), None
    if isinstance(program, (str, Path)) and Path(program).suffix not in (".c", ".S", ".s"):
        elf = Path(program)
        return elf_words(elf, cfg.core.private_bytes), elf
    if hasattr(program, "elf") and hasattr(program, "words"):
        return np.asarray(program.words, np.uint32), Path(program.elf)  # type: ignore[attr-defined]
    from tinyattn.sw.firmware import build_firmware

    sources = [Path(program)] if isinstance(program, (str, Path)) else list(program)  # type: ignore[call-overload]
    image = build_firmware(cfg, sources, work, cflags=cflags)
    return np.asarray(image.words, np.uint32), Path(image.elf)


def run_firmware(
    cfg: ClusterConfig,
    program: object,
    l2_image: np.ndarray | bytes | None = None,
    simulator: str = "verilator",
    *,
    max_cycles: int = 2_000_000,
    l2: L2Timing = L2Timing(),
    seed: int = 1,
    check: bool = True,
    waves: bool | None = None,
    extra_programs: Sequence[object] = (),
    cflags: Sequence[str] = (),
    rtl_l2: bool = False,
    progress: Callable[[int, int], None] | None = None,
    activity_bin: int | None = None,
) -> FirmwareRun:
    """Run ``program`` on control core 0 of the ``cluster`` RTL and return the outcome.

    Parameters
    ----------
    program
        C or assembly sources (a path or a list of paths, built with the SDK by
        :func:`tinyattn.sw.firmware.build_firmware`), a built image (an object with an
        ``elf`` attribute, as that function returns), or an ELF path.
    l2_image
        Bytes placed at L2 address 0 before the run; the same range is returned in
        ``FirmwareRun.l2`` after it. L2 outside it holds seeded random bytes.
    max_cycles
        The run ends with :class:`FirmwareRunError` (``timeout``) after this many cycles.
    check
        Raise :class:`FirmwareRunError` when a core faulted or the cycle limit passed;
        with ``check=False`` the run is returned as it is.
    extra_programs
        Programs for control cores 1, 2, ...; cores without one are parked.
    cflags
        Extra C flags when building from sources (``-DNAME=1``, ``-I<dir>``).
    rtl_l2
        Serve L2 from the Verilog model of :mod:`tinyattn.sim.l2_top` (Verilator only):
        one cycle of latency, no stalls, zeros outside ``l2_image``; ``l2`` is ignored.
        Python stays out of the run, which makes long DMA-heavy runs several times faster.
    progress
        Called with ``(cycles, engine jobs done)`` every
        :data:`~tinyattn.sim.progress.EVERY_CYCLES` simulated cycles, from a thread.
    activity_bin
        With ``rtl_l2``: every ``activity_bin`` cycles the bench samples the engine's busy
        counter, its done count and the L2 beats; ``FirmwareRun.extra["activity"]`` is
        then an ``(n, 3)`` array of those counters, one row per bin.
    """
    if rtl_l2 and simulator != "verilator":
        raise ValueError("rtl_l2 needs Verilator: the L2 model is a 64 MiB Verilog array")
    with tempfile.TemporaryDirectory(prefix="tinyattn-fw-") as tmp:
        work = Path(tmp)
        images, elfs = [], []
        for i, prog in enumerate([program, *extra_programs]):
            words, elf = _firmware_image(cfg, prog, work / f"core{i}", cflags)
            path = work / f"core{i}.bin"
            words.astype("<u4").tofile(path)
            images.append((words, path))
            elfs.append(elf)
        l2_path = None
        wrapper, plusargs = None, []
        beat = cfg.dma.dma_bits // 8
        if rtl_l2:
            from tinyattn.sim.l2_top import MODULE, l2_hex, l2_top_sources

            wrapper = (MODULE, l2_top_sources(cfg))
            if l2_image is not None:
                hex_path = work / "l2.hex"
                words = l2_hex(l2_image, beat, hex_path)
                plusargs = [
                    f"+L2_IMAGE={hex_path}",
                    f"+L2_DUMP={work / 'l2_after.hex'}",
                    f"+L2_DUMP_WORDS={words}",
                ]
        elif l2_image is not None:
            l2_path = work / "l2.bin"
            np.frombuffer(bytes(l2_image), dtype=np.uint8).tofile(l2_path)
        spec = {
            "images": [str(p) for _, p in images],
            "l2_image": str(l2_path) if l2_path else None,
            "l2_req_stall": l2.req_stall,
            "l2_rsp_gap": l2.rsp_gap,
            "l2_max_latency": l2.max_latency,
            "max_cycles": max_cycles,
            "seed": seed,
            "rtl_l2": rtl_l2,
        }
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec))
        env = {"TINYATTN_FIRMWARE_SPEC": str(spec_path)}
        watch: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if activity_bin:
            if not rtl_l2:
                raise ValueError("activity_bin needs rtl_l2 (the L2 beats are counted there)")
            env["TINYATTN_ACTIVITY"] = f"{work / 'activity.npy'}:{activity_bin}"
        if progress is not None:
            env["TINYATTN_PROGRESS"] = str(work / "progress")
            watch = ProgressFile(work / "progress", progress)
        t0 = time.monotonic()
        with watch:
            result = run_bench(
                "cluster",
                cfg,
                BENCH,
                simulator,
                env=env,
                seed=seed,
                waves=waves,
                public=PUBLIC,
                wrapper=wrapper,
                plusargs=plusargs,
            )
        sim_seconds = time.monotonic() - t0
        out = result.test_dir / "firmware_result.json"
        if not result.ok or not out.exists():
            raise RuntimeError("the firmware bench failed: " + failure_report(result, seed))
        data = json.loads(out.read_text())
        l2_after = result.test_dir / "l2_after.bin"
        if rtl_l2 and l2_image is not None:
            from tinyattn.sim.l2_top import read_l2_hex

            if data.get("l2_error"):
                raise RuntimeError(
                    "the DMA sent L2 a request beyond the model's 64 MiB or with no byte enabled"
                )
            read_l2_hex(work / "l2_after.hex", len(bytes(l2_image)), beat).tofile(l2_after)
        faults = tuple(
            _fault(
                entry,
                # A core without a program was parked: no image to decode.
                images[entry["core"]][0] if entry["core"] < len(images) else np.zeros(0, np.uint32),
                elfs[entry["core"]] if entry["core"] < len(elfs) else None,
            )
            for entry in data["faults"]
        )
        run = FirmwareRun(
            exit_code=data["exit_code"] if data["ended"] else None,
            console=data["console"],
            cycles=data["cycles"],
            counters=data.get("counters", {}),
            l2=np.fromfile(l2_after, dtype=np.uint8) if l2_after.exists() else None,
            faults=faults,
            timeout=data["timeout"],
            run_dir=result.test_dir,
            sim_seconds=sim_seconds,
            extra={
                "loaded_words": data["loaded_words"],
                "l2_active_cycles": data["l2_active_cycles"],
                "run_seconds": data["run_seconds"],
                **(
                    {"activity": np.load(work / "activity.npy")}
                    if activity_bin and (work / "activity.npy").exists()
                    else {}
                ),
            },
        )
    if check and faults:
        raise FirmwareRunError("; ".join(f.description for f in faults), run)
    if check and run.timeout:
        raise FirmwareRunError(
            f"timeout: the firmware did not write HOST_EXIT within {max_cycles} cycles "
            f"(console so far: {run.console[-200:]!r})",
            run,
        )
    return run
