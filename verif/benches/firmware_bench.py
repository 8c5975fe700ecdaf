"""cocotb bench that runs compiled firmware on the cluster's RISC-V cores.

The launcher is :func:`tinyattn.sim.firmware.run_firmware`; it writes a run
specification (JSON, path in ``TINYATTN_FIRMWARE_SPEC``) and reads back
``firmware_result.json`` and ``l2_after.bin`` from the run folder.

What the bench does:

1. reset, with the cores held in reset (``fetch_enable`` low);
2. writes each core's image into its private memory through the ``loader`` port
   (only the non-zero words: the memory starts out zero); a core without a program
   gets a one-instruction park loop;
3. raises ``fetch_enable`` and sleeps until the firmware writes ``HOST_EXIT``
   (``host__ended``), a core stops on a fault (``fault``), or the cycle limit passes.
   Python is not on the per-cycle path meanwhile: the console wakes it once per byte,
   the L2 server (:class:`L2Server`) only while the DMA has L2 traffic. On the
   ``tinyattn_cluster_l2`` top (spec ``rtl_l2``) the L2 is Verilog
   (:mod:`tinyattn.sim.l2_top`) and Python stays out of the run entirely;
4. reads the performance counters through an external core port (when the
   configuration has one), and writes the results and L2 back.

A trap names its core, cause, program counter (PicoRV32's ``reg_pc``, public under
Verilator) and refused address; the launcher turns that into a message.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.triggers import FallingEdge, First, ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_time

from tinyattn.config import ClusterConfig
from tinyattn.hw.cluster_registers import register_map
from tinyattn.hw.control_core import FaultCause, fault_layout
from tinyattn.hw.core_bus import PERIPH_BASE
from tinyattn.sim.progress import EVERY_CYCLES, write_progress
from tinyattn.verif.benches.common import CLOCK_PERIOD_NS, bench_config, start_clock_and_reset
from tinyattn.verif.bits import unpack
from tinyattn.verif.l2_model import L2Model
from tinyattn.verif.obi import CycleLoop, drive_idle, obi_ports
from tinyattn.verif.paged_memory import PagedMemory

#: ``jal x0, 0``: the program of a core that has none.
PARK_LOOP = 0x0000006F
#: The counters read after a run: (name in the result, register block, register).
COUNTERS = (
    ("engine_jobs_done", "ENGINE", "JOBS_DONE"),
    ("engine_busy_cycles", "ENGINE", "BUSY_CYCLES"),
    ("engine_stall_cycles", "ENGINE", "STALL_CYCLES"),
    ("engine_idle_cycles", "ENGINE", "IDLE_CYCLES"),
    ("engine_macs_lo", "ENGINE", "MACS_LO"),
    ("engine_macs_hi", "ENGINE", "MACS_HI"),
    ("dma_done_count", "DMA", "DONE_COUNT"),
)


class L2Server:
    """The DMA's L2, served by :class:`~tinyattn.verif.l2_model.L2Model`.

    The model runs one cycle at a time only while it has work (a request offered or a
    response owed); otherwise the server drops ``ready`` and sleeps until the DMA raises
    the request ``valid``, so an idle L2 costs no Python time.
    """

    def __init__(self, dut: Any, cfg: ClusterConfig, mem: PagedMemory, spec: dict) -> None:
        self.dut = dut
        self.model = L2Model(dut, cfg, mem, np.random.default_rng(spec["seed"] + 17))
        self.model.req_stall = spec["l2_req_stall"]
        self.model.rsp_gap = spec["l2_rsp_gap"]
        self.model.max_latency = spec["l2_max_latency"]
        self.loop = CycleLoop(dut.clk)
        self.loop.add(self.model)
        self.active_cycles = 0

    async def run(self) -> None:
        d = self.dut
        request_valid = self.model.requests.valid
        while True:
            if self.model.quiet() and not request_valid.value:
                await FallingEdge(d.clk)
                if request_valid.value:
                    # A request came at this cycle's rising edge: serve it in this cycle,
                    # as an L2 that never sleeps would (and as the Verilog L2 does).
                    await self.loop.finish_cycle()
                    self.active_cycles += 1
                    continue
                # Idle: drop ready; valid next rises at a rising edge, and the step
                # below then drives in that same cycle.
                self.model.sleep()
                await RisingEdge(request_valid)
            await self.loop.step()
            self.active_cycles += 1


async def report_progress(dut: Any, path: Path) -> None:
    """Every ``EVERY_CYCLES`` cycles, the cycles so far and the engine's done count (the
    register block's counter, public for this) into ``path``, for the caller's progress bar."""
    cluster = dut.cluster if hasattr(dut, "l2_dump") else dut
    done = cluster.regs.int_jobs_done
    cycles = 0
    while True:
        await Timer(EVERY_CYCLES * CLOCK_PERIOD_NS, unit="ns")
        cycles += EVERY_CYCLES
        write_progress(path, cycles, int(done.value))


async def sample_activity(dut: Any, every: int, samples: list[tuple[int, int, int]]) -> None:
    """Every ``every`` cycles: the engine's busy counter, its done count and the L2 beats
    (the ``tinyattn_cluster_l2`` top's counter), for a measured activity timeline."""
    cluster = dut.cluster
    busy, done, beats = (
        cluster.engine.control__busy_cycles,
        cluster.regs.int_jobs_done,
        dut.l2_beats,
    )
    while True:
        await Timer(every * CLOCK_PERIOD_NS, unit="ns")
        samples.append((int(busy.value), int(done.value), int(beats.value)))


class Console:
    """Collects the bytes the firmware writes to ``HOST_CONSOLE``, waking once per byte."""

    def __init__(self, dut: Any) -> None:
        self.dut = dut
        self.data = bytearray()

    async def run(self) -> None:
        d = self.dut
        while True:
            await RisingEdge(d.host__console_valid)
            await ReadOnly()
            # Back-to-back writes (several cores) keep valid high: one byte per cycle.
            while d.host__console_valid.value:
                self.data.append(int(d.host__console_char.value))
                await RisingEdge(d.clk)
                await ReadOnly()


class RegisterReader:
    """Reads registers through the first external core port, after the run."""

    def __init__(self, dut: Any, cfg: ClusterConfig) -> None:
        self.dut = dut
        self.mm = register_map(cfg)
        external = cfg.interconnect.n_cores - cfg.core.count
        self.port = obi_ports(dut, "cores", external)[0] if external else None

    async def read(self, block: str, name: str) -> int:
        assert self.port is not None
        p = self.port
        await FallingEdge(self.dut.clk)
        p.set("req", 1)
        p.set("addr", PERIPH_BASE + self.mm.register(block, name).address)
        p.set("we", 0)
        p.set("be", 0xF)
        while True:
            await ReadOnly()
            granted = bool(p.handles["gnt"].value)
            await FallingEdge(self.dut.clk)
            if granted:
                p.set("req", 0)
                break
        while True:
            await ReadOnly()
            if p.handles["rvalid"].value:
                return int(p.handles["rdata"].value)
            await FallingEdge(self.dut.clk)


async def load(dut: Any, cfg: ClusterConfig, images: list[np.ndarray]) -> int:
    """Write the images into the private memories; returns the words written."""
    words = cfg.core.private_bytes // 4
    written = 0
    dut.loader__valid.value = 1
    for core in range(cfg.core.count):
        image = images[core] if core < len(images) else np.array([PARK_LOOP], np.uint32)
        if len(image) > words:
            raise AssertionError(f"core {core}: image of {len(image)} words, memory {words}")
        dut.loader__core.value = core
        for addr in np.flatnonzero(image):
            dut.loader__addr.value = int(addr)
            dut.loader__data.value = int(image[addr])
            await RisingEdge(dut.clk)
            written += 1
    dut.loader__valid.value = 0
    return written


def _faults(dut: Any, cfg: ClusterConfig) -> list[dict[str, Any]]:
    """The cores that stopped: index, cause, refused address and program counter."""
    entries = unpack(data.ArrayLayout(fault_layout(), cfg.core.count), int(dut.faults.value))
    out = []
    for core, entry in enumerate(entries):
        cause = FaultCause(entry["cause"])
        if cause is FaultCause.NONE:
            continue
        cluster = dut.cluster if hasattr(dut, "l2_dump") else dut
        cpu = getattr(cluster, f"core_{core}").cpu.picorv32
        out.append(
            {"core": core, "cause": cause.name, "addr": entry["addr"], "pc": int(cpu.reg_pc.value)}
        )
    return out


@cocotb.test()
async def run_firmware(dut: Any) -> None:
    """Load, run until HOST_EXIT / a fault / the cycle limit, and record the outcome."""
    cfg = bench_config()
    spec = json.loads(Path(os.environ["TINYATTN_FIRMWARE_SPEC"]).read_text())
    images = [np.fromfile(path, dtype="<u4") for path in spec["images"]]
    l2_image = np.fromfile(spec["l2_image"], dtype=np.uint8) if spec["l2_image"] else None

    rtl_l2 = bool(spec.get("rtl_l2"))
    drive_idle(obi_ports(dut, "cores", cfg.interconnect.n_cores - cfg.core.count))
    dut.fetch_enable.value = 0
    dut.loader__valid.value = 0
    mem = PagedMemory(spec["seed"])
    if rtl_l2:
        dut.l2_dump.value = 0
        l2 = None
    else:
        l2 = L2Server(dut, cfg, mem, spec)  # its streams idle (ready and valid low) from here
    await start_clock_and_reset(dut)
    loaded = await load(dut, cfg, images)

    if l2_image is not None and not rtl_l2:
        mem.write(0, l2_image)
    console = Console(dut)
    l2_task = None if l2 is None else cocotb.start_soon(l2.run())
    progress = os.environ.get("TINYATTN_PROGRESS")
    progress_task = cocotb.start_soon(report_progress(dut, Path(progress))) if progress else None
    activity = os.environ.get("TINYATTN_ACTIVITY")
    samples: list[tuple[int, int, int]] = []
    activity_task = None
    if activity and rtl_l2:
        activity_path, every = activity.rsplit(":", 1)
        activity_task = cocotb.start_soon(sample_activity(dut, int(every), samples))
    console_task = cocotb.start_soon(console.run())

    await FallingEdge(dut.clk)
    dut.fetch_enable.value = 1
    start = get_sim_time("ns")
    wall = time.monotonic()
    limit = Timer(spec["max_cycles"] * CLOCK_PERIOD_NS, unit="ns")
    ended, faulted = RisingEdge(dut.host__ended), RisingEdge(dut.fault)
    first = await First(ended, faulted, limit)
    await ReadOnly()
    cycles = round((get_sim_time("ns") - start) / CLOCK_PERIOD_NS)
    result: dict[str, Any] = {
        "cycles": cycles,
        "run_seconds": time.monotonic() - wall,
        "loaded_words": loaded,
        "ended": bool(dut.host__ended.value),
        "exit_code": int(dut.host__exit_code.value),
        "faults": _faults(dut, cfg),
        "timeout": first is limit,
    }
    # Let the console and any last L2 response drain, then stop the cores.
    await FallingEdge(dut.clk)
    for _ in range(8):
        await FallingEdge(dut.clk)
    result["console"] = console.data.decode("latin-1")
    result["l2_active_cycles"] = 0 if l2 is None else l2.active_cycles
    reader = RegisterReader(dut, cfg)
    if reader.port is not None:
        result["counters"] = {name: await reader.read(b, r) for name, b, r in COUNTERS}
    console_task.cancel()
    for task in (l2_task, progress_task, activity_task):
        if task is not None:
            task.cancel()
    if activity_task is not None:
        np.save(activity_path, np.asarray(samples, dtype=np.int64).reshape(-1, 3))
    await FallingEdge(dut.clk)
    dut.fetch_enable.value = 0
    if rtl_l2:
        result["l2_error"] = bool(dut.l2_error.value)
        dut.l2_dump.value = 1  # the model writes its image back in this cycle
        await FallingEdge(dut.clk)
        dut.l2_dump.value = 0
        await FallingEdge(dut.clk)
    elif l2_image is not None:
        mem.read(0, len(l2_image)).tofile(Path("l2_after.bin"))
    Path("firmware_result.json").write_text(json.dumps(result, indent=2, sort_keys=True))
