"""C firmware on the cluster's RISC-V core, simulated on the RTL (``tinyattn.sim.cosim``).

Each test builds a program from ``sw/firmware`` (the SDK) or ``verif/firmware`` with the
rv32 gcc, loads it into control core 0's private memory and runs the ``cluster`` top
under Icarus and Verilator at a small configuration; the cluster scenario also runs at
the default configuration under Verilator. Results are checked against the golden model
bit for bit, and every fault path must end the run with a message naming its cause and
program counter.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sim_cases import plan_cases

from tinyattn.config import (
    ClusterConfig,
    CoreConfig,
    DmaConfig,
    EngineConfig,
    InterconnectConfig,
    MemoryConfig,
)
from tinyattn.sim.cosim import FirmwareRun, FirmwareRunError, L2Timing, describe_trap, run_firmware
from tinyattn.sim.verilog import verilog_for
from tinyattn.verif.firmware_scenarios import (
    SEQ_LIST_BYTES,
    cluster_jobs_scenario,
    sequencer_scenario,
)

ROOT = Path(__file__).resolve().parents[1]
SDK = ROOT / "sw" / "firmware"
PROGRAMS = ROOT / "verif" / "firmware"

#: A small cluster: one control core and one external port, 8 KiB of private memory.
SMALL = ClusterConfig(
    engine=EngineConfig(n_pe=4, vec_len=16, acc_bits=24, tile_m=8, max_seq=64),
    memory=MemoryConfig(n_banks=8, bank_words=512),
    interconnect=InterconnectConfig(n_cores=2),
    dma=DmaConfig(dma_bits=64),
    core=CoreConfig(private_bytes=8192, stack_bytes=1024),
)

#: The job scenarios' configurations, and the simulators each runs under: the default
#: cluster is too slow under Icarus for a whole scenario (Verilator runs it).
SCENARIO_CONFIGS = {"small": SMALL, "default": ClusterConfig()}
SCENARIO_PLAN = (("small", "icarus"), ("small", "verilator"), ("default", "verilator"))

needs_gcc = pytest.mark.skipif(
    shutil.which("riscv64-unknown-elf-gcc") is None,
    reason="riscv64-unknown-elf-gcc missing (make test installs gcc-riscv64-unknown-elf)",
)
pytestmark = [pytest.mark.sim, needs_gcc]


def _run_with_header(
    cfg: ClusterConfig,
    sim: str,
    program: str,
    header: tuple[str, str],
    l2_image: np.ndarray,
    folder: Path,
    timing: L2Timing,
    seed: int,
) -> FirmwareRun:
    """Run ``verif/firmware/<program>`` on ``cfg`` with its scenario header ``(name, text)``
    written into ``folder``, which goes on the include path."""
    name, text = header
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    return run_firmware(
        cfg, [PROGRAMS / program], l2_image, sim, cflags=[f"-I{folder}"], l2=timing, seed=seed
    )


def test_hello_console_and_exit_code(sim: str) -> None:
    run = run_firmware(SMALL, [SDK / "hello.c"], None, sim, cflags=["-DHELLO_EXIT_CODE=7"])
    assert run.exit_code == 7, run.console
    assert run.console.startswith(f"hello from tinyattn {SMALL.stable_hash()[:8]}")
    assert "0 of 13 configuration registers differ" in run.console
    assert run.counters["engine_jobs_done"] == 0 and run.cycles > 100


@pytest.mark.parametrize(("name", "sim"), plan_cases(SCENARIO_PLAN), indirect=["sim"])
def test_cluster_jobs_bit_exact(sim: str, name: str, seed: int, tmp_path: Path) -> None:
    """DMA in, GEMM + ATTENTION + GEMM queued, irq wait, DMA out: L2 equals the golden model."""
    cfg = SCENARIO_CONFIGS[name]
    for rnd in range(2 if cfg == SMALL else 1):
        s = seed * 10 + rnd
        scn = cluster_jobs_scenario(cfg, s, small=cfg == SMALL)
        timing = L2Timing(req_stall=0.3, rsp_gap=0.3, max_latency=8) if rnd % 2 else L2Timing()
        run = _run_with_header(
            cfg, sim, "cluster_jobs.c", ("scenario.h", scn.header), scn.l2_image,
            tmp_path / f"round{rnd}", timing, s,
        )  # fmt: skip
        assert run.exit_code == 0, f"seed {s}: {run.console}"
        assert run.l2 is not None
        scn.check(run.l2)
        assert run.counters["engine_jobs_done"] == 3
        assert run.macs == scn.macs
        assert f"jobs 3, macs {scn.macs}" in run.console


@pytest.mark.parametrize(("name", "sim"), plan_cases(SCENARIO_PLAN), indirect=["sim"])
def test_sequencer_runs_the_scenario(sim: str, name: str, seed: int, tmp_path: Path) -> None:
    """The command sequencer loads, runs three jobs and stores: L2 equals the golden model.

    A second list pushes a descriptor beyond L1; the sequencer stops with HW_ERROR
    before its HOST_EXIT write.
    """
    cfg = SCENARIO_CONFIGS[name]
    scn = sequencer_scenario(cfg, seed, small=cfg == SMALL)
    timing = L2Timing(req_stall=0.3, rsp_gap=0.3, max_latency=8)
    run = _run_with_header(
        cfg, sim, "seq_jobs.c", ("seq_scenario.h", scn.header), scn.l2_image, tmp_path, timing,
        seed,
    )  # fmt: skip
    assert run.exit_code == 0, f"seed {seed}: {run.console}"
    assert run.l2 is not None
    scn.jobs.check(run.l2)
    assert f"macs {scn.jobs.macs}" in run.console
    bad_l1 = cfg.memory.size_bytes - SEQ_LIST_BYTES + 4 * len(scn.good)
    stop = int(run.console.split("bad list: error 4 at ")[1].split()[0], 16)
    assert bad_l1 <= stop < bad_l1 + 4 * len(scn.bad), run.console
    assert run.counters["engine_jobs_done"] == 3


def test_two_cores_share_l1(sim: str, tmp_path: Path) -> None:
    """Each control core runs its own program (the loader's core index), both reach L1."""
    from tinyattn.sw.firmware import build_firmware

    cfg = ClusterConfig(
        engine=SMALL.engine,
        memory=SMALL.memory,
        interconnect=InterconnectConfig(n_cores=2),
        dma=SMALL.dma,
        core=CoreConfig(count=2, private_bytes=4096, stack_bytes=1024),
    )
    src = [PROGRAMS / "two_cores.c"]
    writer = build_firmware(cfg, src, tmp_path / "core1", cflags=["-DCORE=1"])
    run = run_firmware(cfg, src, None, sim, cflags=["-DCORE=0"], extra_programs=[writer])
    assert run.exit_code == 0 and run.console == "core 1 wrote c0de0001\n"
    assert run.counters == {}  # no external port to read them through


def test_error_paths_reported_by_firmware(sim: str) -> None:
    run = run_firmware(SMALL, [PROGRAMS / "errors.c"], None, sim)
    assert "bad job: rejected 1, code 2" in run.console  # ZERO_DIM
    assert "bad transfer: code 3" in run.console  # L1_RANGE
    assert "good job after them: code 0" in run.console
    assert run.exit_code == 0, run.console


FAULTS = {
    1: ("TRAP", "misaligned load"),
    2: ("BUS", "bus error: access to unmapped address 0x20000000"),
    3: ("FETCH", "instruction fetch from 0x10000000, outside the private memory"),
    4: ("TRAP", "illegal instruction"),
    6: ("TRAP", "ebreak"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_faults_name_cause_and_pc(sim: str, fault: int) -> None:
    cause, text = FAULTS[fault]
    with pytest.raises(FirmwareRunError) as info:
        run_firmware(SMALL, [PROGRAMS / "faults.c"], None, sim, cflags=[f"-DFAULT={fault}"])
    run = info.value.run
    assert [f.cause for f in run.faults] == [cause]
    message = str(info.value)
    assert message.startswith(f"core 0: {text}"), message
    assert f"pc {run.faults[0].pc:#010x}" in message
    assert run.console == f"about to fault ({fault})\n"
    assert run.exit_code is None and not run.timeout


def test_cycle_limit_ends_the_run(sim: str) -> None:
    with pytest.raises(FirmwareRunError, match="timeout: the firmware did not write HOST_EXIT"):
        run_firmware(SMALL, [PROGRAMS / "faults.c"], None, sim, cflags=["-DFAULT=5"],
                     max_cycles=20_000)  # fmt: skip


def test_new_firmware_does_not_rebuild_the_simulator() -> None:
    """Two different programs run on one simulator build (loaded at run time)."""
    run_firmware(SMALL, [SDK / "hello.c"], None, "verilator")
    builds = sorted(verilog_for("cluster", SMALL).parent.glob("verilator-*"))
    # Every build product (the runner rewrites its build.log even when nothing is built).
    stamps = {p: p.stat().st_mtime_ns for b in builds for p in b.rglob("*") if p.suffix != ".log"}
    run = run_firmware(SMALL, [SDK / "hello.c"], None, "verilator", cflags=["-DHELLO_EXIT_CODE=3"])
    assert run.exit_code == 3
    after = {p: p.stat().st_mtime_ns for b in builds for p in b.rglob("*") if p.suffix != ".log"}
    assert stamps and after == stamps


def _words(*halfwords: int) -> np.ndarray:
    raw = b"".join(h.to_bytes(2, "little") for h in halfwords)
    return np.frombuffer(raw.ljust(8, b"\0"), dtype="<u4")


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        ((0x2083, 0x0000), "misaligned load"),  # lw x1, 0(x0)
        ((0x2023, 0x0010), "misaligned store"),  # sw x1, 0(x0)
        ((0x4108,), "misaligned load"),  # c.lw a0, 0(a0)
        ((0xC108,), "misaligned store"),  # c.sw a0, 0(a0)
        ((0x0073, 0x0010), "ebreak"),
        ((0x9002,), "ebreak"),  # c.ebreak
        ((0x0073, 0x0000), "ecall"),
        ((0xFFFF, 0xFFFF), "illegal instruction"),
        ((0x0000,), "illegal instruction"),
    ],
)
def test_describe_trap(code: tuple[int, ...], cause: str) -> None:
    assert describe_trap(_words(*code), 0) == cause
