"""cocotb bench of the cluster top (``hw/cluster.py``), driven the way firmware drives it.

The cluster's RISC-V cores are held in reset (``fetch_enable`` low); the first external
core port (``cores[0]``, core port ``core.count``) runs a small Python "firmware"
(:class:`Firmware`): ``mmio_write`` and
``mmio_read`` over an :class:`~tinyattn.verif.obi.ObiInitiator`, with every register
address and field position taken from :func:`tinyattn.hw.cluster_registers.register_map` and the
address map from :mod:`tinyattn.hw.core_bus` (no hard-coded offsets). The L2 outside the
cluster is :class:`~tinyattn.verif.l2_model.L2Model` (random back-pressure,
latency and response gaps, protocol checks), the DMA bench's model.

The other external core ports generate random background traffic (:class:`Background`) into an
L1 window that no job tensor touches, and now and then read the read-only ``CLUSTER``
registers; a scoreboard checks every response (a reference L1 updated at each grant).
One :class:`~tinyattn.verif.obi.ObiChecker` watches every core port (request stability,
``rvalid`` exactly one cycle after ``gnt``, nothing lost).

Tests
-----
- ``firmware_jobs``: per round, operands are placed in L2; the firmware DMAs a bulk
  image of the job region (random bytes where the tensors go) and then each input
  tensor as a strided 2-D transfer into L1, checking ``DMA_STATUS`` and
  ``DMA_DONE_COUNT``; pushes a GEMM (random epilogue flags), an ATTENTION job and a
  second GEMM through the ``ENGINE_JOB_*`` staging registers and ``JOB_PUSH``, each
  after waiting for room in the queue; waits for them through the irq line
  (``ENGINE_DONE`` enabled) and ``ENGINE_JOBS_DONE``; checks the MAC counter; DMAs the
  outputs and then the whole job region back to L2, and compares both bit for bit with
  :func:`tinyattn.verif.engine_model.run_job` run on the same data.
- ``address_map``: the ``CLUSTER`` constants, the L1 window edges with byte enables,
  and unmapped addresses (below, between and above the windows, and unmapped register
  offsets): they read 0, write nothing, and raise ``BUS_ERROR`` (and ``irq`` when
  enabled); then a rejected DMA descriptor and a rejected engine job raise their
  error flags and codes, and ``ERROR_ACK`` / ``W1C`` clear them.
- ``perf_gemm``: one GEMM, loaded by DMA, run once per background load in
  ``TINYATTN_BACKGROUNDS``; records cycles and utilization (``sim/benchmarks/cluster.py``).

Knobs (environment): ``TINYATTN_ROUNDS``, ``TINYATTN_BACKGROUND`` (probability that a
free background core issues a request in a cycle), ``TINYATTN_SMALL`` (smaller jobs for
slow simulators), ``TINYATTN_PERF_M/K/N``, ``TINYATTN_PERF_FLAGS``,
``TINYATTN_BACKGROUNDS``. Every failure names the seed (``TINYATTN_SEED``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import cocotb
import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.hw.cluster_registers import register_map
from tinyattn.hw.core_bus import L1_BASE, PERIPH_BASE, PERIPH_BITS
from tinyattn.hw.dma import Direction, DmaError
from tinyattn.hw.interconnect import n_narrow, narrow_wait_bound, wide_wait_bound
from tinyattn.hw.job import FLAG_RELU, Job, JobError, Op
from tinyattn.hw.registers import MappedRegister, MemoryMap, PortBinding
from tinyattn.verif.benches.common import (
    bench_config,
    bench_seed,
    env_float,
    env_int,
    start_clock_and_reset,
    write_metrics,
)
from tinyattn.verif.descriptors import Descriptor
from tinyattn.verif.engine_jobs import Allocator, random_gemm
from tinyattn.verif.engine_model import run_job
from tinyattn.verif.job_layouts import (
    Rect,
    bulk_descriptors,
    job_inputs_outputs,
    layout_three_jobs,
    rect_mismatch,
    useful_macs,
)
from tinyattn.verif.l2_model import L2Model
from tinyattn.verif.obi import (
    BE_MASKS,
    CycleLoop,
    ObiChecker,
    ObiInitiator,
    ObiPort,
    ObiTransaction,
    drive_idle,
    obi_ports,
)
from tinyattn.verif.paged_memory import PagedMemory

#: Port path of the job payload that the engine's staging fields are bound below.
JOB_PAYLOAD = ("engine", "jobs", "payload")
#: Cycles an MMIO access may take (a write held while a push is pending included).
MMIO_TIMEOUT = 2_000_000


def _fail(msg: str) -> AssertionError:
    return AssertionError(f"{msg} (TINYATTN_SEED={bench_seed()})")


# ---------------------------------------------------------------------------- agents


class IrqMonitor:
    """Samples ``irq`` every cycle; remembers the cycle of each rising edge."""

    def __init__(self, dut: Any) -> None:
        self.dut = dut
        self.level = 0
        self.rises: list[int] = []

    def drive(self, cycle: int) -> None:
        pass

    def sample(self, cycle: int) -> None:
        level = int(self.dut.irq.value)
        if level and not self.level:
            self.rises.append(cycle)
        self.level = level


#: The reference of the background window for this simulation run (word offset ->
#: value; absent words hold 0, the L1's initial contents), shared by the run's tests.
_BACKGROUND_REF: dict[int, int] = {}


def background_reference() -> dict[int, int]:
    return _BACKGROUND_REF


def interconnect_lanes(dut: Any, cfg: ClusterConfig) -> tuple[list[ObiPort], list[int]]:
    """Every initiator port of the TCDM inside the cluster, with its starvation bound.

    The narrow ports are the cores' (``0 .. n_cores-1``) and then the DMA's lanes; the
    wide lanes are the engine's. The bounds are
    :func:`~tinyattn.hw.interconnect.narrow_wait_bound` and
    :func:`~tinyattn.hw.interconnect.wide_wait_bound` (docs/interconnect.md).
    """
    tcdm = dut.tcdm
    n_cores = cfg.interconnect.n_cores
    ports, bounds = [], []
    for i in range(n_narrow(cfg)):
        who = f"core {i}" if i < n_cores else f"DMA lane {i - n_cores}"
        ports.append(ObiPort(tcdm, f"narrow__{i}", name=f"tcdm.narrow[{i}] ({who})"))
        bounds.append(narrow_wait_bound(cfg))
    for i in range(cfg.engine.port_lanes):
        ports.append(ObiPort(tcdm, f"wide__{i}", name=f"tcdm.wide[{i}] (engine lane {i})"))
        bounds.append(wide_wait_bound(cfg))
    return ports, bounds


class Background:
    """Random traffic on core ports 1.. and its scoreboard.

    Each background core issues, whenever its port is free, a request with probability
    ``rate`` per cycle: an L1 access (read, or write with random byte enables) to a random
    word of ``window`` (L1 byte offsets), or, with probability ``periph``, a read of a
    random ``CLUSTER`` register (a constant). Every grant updates (writes) or consults
    (reads) a reference of the window, :func:`background_reference`: it starts from the
    L1's known initial contents (zero) and carries over from test to test of a run, as
    the L1 does. Nothing is learnt from a read, so a stray write into the window (by a
    job, the DMA or the interconnect), into a word never written included, fails the
    next read there; :meth:`ClusterTB.finish` reads the whole window back.
    """

    def __init__(self, tb: ClusterTB, window: tuple[int, int]) -> None:
        self.tb = tb
        self.lo, self.hi = window
        self.rate = 0.0
        self.periph = 0.0
        self.ref = background_reference()  # word offset -> value (absent: 0)
        self.constants = [
            (PERIPH_BASE + r.address, r.register.reset)
            for r in tb.mm.registers
            if r.block.name == "CLUSTER"
        ]
        self.reads_checked = 0
        self.periph_checked = 0
        self.writes = 0
        self.initiators = []
        for i in range(1, len(tb.ports)):
            init = ObiInitiator(
                tb.ports[i],
                rng=random.Random(tb.seed * 1000 + i),
                idle=1.0,
                source=self._source_for(i),
                collect=False,
                on_grant=self._on_grant,
                on_response=self._on_response,
            )
            self.initiators.append(init)

    def set(self, rate: float, periph: float = 0.0) -> None:
        """Change the request probability per free cycle (0 stops new requests)."""
        self.rate, self.periph = rate, periph
        for init in self.initiators:
            init.idle = 1.0 - rate

    def _source_for(self, i: int) -> Callable[[], ObiTransaction | None]:
        rng = random.Random(self.tb.seed * 7919 + i)

        def source() -> ObiTransaction | None:
            if self.periph and rng.random() < self.periph:
                addr, value = rng.choice(self.constants)
                return ObiTransaction(addr, False, tag=["p", value])
            word = rng.randrange(self.lo // 4, self.hi // 4)
            if rng.random() < 0.5:
                return ObiTransaction(L1_BASE + 4 * word, False, tag=["r", word])
            be = rng.choice((0xF, 0xF, rng.randrange(1, 16)))
            return ObiTransaction(
                L1_BASE + 4 * word, True, rng.getrandbits(32), be, tag=["w", word]
            )

        return source

    def _on_grant(self, txn: ObiTransaction) -> None:
        kind = txn.tag[0]
        if kind == "w":
            word, mask = txn.tag[1], BE_MASKS[txn.be]
            self.ref[word] = (self.ref.get(word, 0) & ~mask) | (txn.wdata & mask)
            self.writes += 1
        elif kind == "r":
            word = txn.tag[1]
            txn.tag = ["r", word, self.ref.get(word, 0)]

    def _on_response(self, txn: ObiTransaction) -> None:
        kind = txn.tag[0]
        if kind == "p":
            if txn.rdata != txn.tag[1]:
                raise _fail(
                    f"core read of register {txn.addr:#x} granted in cycle {txn.grant_cycle} "
                    f"returned {txn.rdata}, want {txn.tag[1]:#x}"
                )
            self.periph_checked += 1
        elif kind == "r":
            _, word, value = txn.tag
            got = txn.rdata
            if got != value:
                raise _fail(
                    f"background read of L1 {4 * word:#x} granted in cycle {txn.grant_cycle} "
                    f"returned {'X' if got is None else f'{got:#010x}'}, want {value:#010x}"
                )
            self.reads_checked += 1

    def read_back(self) -> None:
        """Queue a read of every word of the window, spread over the background cores
        (each checked against the reference as it returns)."""
        for k, word in enumerate(range(self.lo // 4, self.hi // 4)):
            init = self.initiators[k % len(self.initiators)]
            init.submit(ObiTransaction(L1_BASE + 4 * word, False, tag=["r", word]))

    @property
    def busy(self) -> bool:
        return any(init.busy for init in self.initiators)

    def stats(self) -> dict[str, float]:
        granted = sum(i.granted for i in self.initiators)
        waits = sum(i.wait_sum for i in self.initiators)
        return {
            "granted": granted,
            "mean_wait": waits / granted if granted else 0.0,
            "max_wait": max((i.wait_max for i in self.initiators), default=0),
        }

    def reset_stats(self) -> None:
        for init in self.initiators:
            init.reset_stats()


# ---------------------------------------------------------------------------- testbench


class ClusterTB:
    """Clock, reset, the core ports with their checker, the L2 model and the irq monitor."""

    def __init__(self, dut: Any, cfg: ClusterConfig, seed: int, name: str) -> None:
        self.dut = dut
        self.cfg = cfg
        self.seed = seed
        self.name = name  # the test's, for its metrics
        self.rng = np.random.default_rng(seed)
        self.mm = register_map(cfg)
        self.size = cfg.memory.size_bytes
        self.loop = CycleLoop(dut.clk)
        # The external core ports: core port `core.count + j` is `cores[j]`.
        self.ports = obi_ports(dut, "cores", cfg.interconnect.n_cores - cfg.core.count)
        self.cpu = ObiInitiator(self.ports[0], collect=False)
        self.checker = ObiChecker(self.ports, latency=1)
        # Every TCDM port inside the cluster (cores, DMA lanes, engine lanes): the OBI
        # protocol and the starvation bound of docs/interconnect.md, every cycle.
        # A Verilator build must make them public (tinyattn.sim.cosim.PUBLIC_LANES, part
        # of the PUBLIC every cluster bench builds with); without them the bench says so,
        # and the test launcher fails when the metrics lack the lanes.
        try:
            self.lanes, self.bounds = interconnect_lanes(dut, cfg)
        except AttributeError as exc:
            dut._log.warning("TCDM lanes not monitored (%s): see sim/cosim.PUBLIC", exc)
            self.lanes, self.bounds = [], []
        self.lane_checker = ObiChecker(self.lanes, latency=1, max_wait=self.bounds)
        self.l2_mem = PagedMemory(seed)
        self.l2 = L2Model(dut, cfg, self.l2_mem, np.random.default_rng(seed + 17))
        self.irq = IrqMonitor(dut)
        # Background traffic lives in the top of L1; jobs use the rest.
        self.bg_bytes = max(1024, self.size // 16)
        self.bg = Background(self, (self.size - self.bg_bytes, self.size))
        self.loop.add(
            self.cpu, *self.bg.initiators, self.l2, self.irq, self.checker, self.lane_checker
        )

    async def reset(self) -> None:
        drive_idle(self.ports)
        # The RISC-V cores stay in reset: here port 0's "firmware" is Python.
        self.dut.fetch_enable.value = 0
        self.dut.loader__valid.value = 0
        self.dut.loader__core.value = 0
        self.dut.loader__addr.value = 0
        self.dut.loader__data.value = 0
        await start_clock_and_reset(self.dut)

    def l2_stalls(self, req: float, rsp: float, latency: int) -> None:
        self.l2.req_stall, self.l2.rsp_gap, self.l2.max_latency = req, rsp, latency

    async def quiesce(self) -> None:
        """Stop the background traffic and wait for every request to be answered."""
        self.bg.set(0.0)
        await self.loop.run_until(
            lambda: not self.bg.busy and not self.cpu.busy,
            timeout=10_000,
            what=f"background traffic drained (seed {self.seed})",
        )

    async def finish(self) -> None:
        """Drain, read the whole background window back (checked), check every port."""
        await self.quiesce()
        if self.bg.initiators:
            for init in self.bg.initiators:  # no new random requests, no idle cycles
                init.source, init.idle = None, 0.0
            self.bg.read_back()
            await self.loop.run_until(
                lambda: not self.bg.busy,
                timeout=20 * (self.bg.hi - self.bg.lo),
                what=f"background window read back (seed {self.seed})",
            )
        await self.loop.run(3)
        self.checker.finish()
        self.lane_checker.finish()
        if not self.lanes:
            return
        names = [p.name for p in self.lanes]
        nb, wb = narrow_wait_bound(self.cfg), wide_wait_bound(self.cfg)
        longest = dict(zip(names, self.lane_checker.longest_wait, strict=True))
        self.dut._log.info(
            "longest waits for gnt (bounds: narrow %d, wide %d): %s", nb, wb, longest
        )
        write_metrics(
            f"lane_waits_{self.name}",
            {
                "narrow_bound": nb,
                "wide_bound": wb,
                "longest": longest,
                "accepted": dict(zip(names, self.lane_checker.accepted, strict=True)),
            },
        )


# ---------------------------------------------------------------------------- firmware


class Firmware:
    """What a driver on core 0 does, as MMIO over the core port.

    Register addresses are ``PERIPH_BASE`` + the map's offsets; field values are placed
    with the map's field offsets and widths; L1 addresses the engine and the DMA take
    are offsets from ``L1_BASE``.
    """

    def __init__(self, tb: ClusterTB) -> None:
        self.tb = tb
        self.mm: MemoryMap = tb.mm
        self.cpu = tb.cpu
        self.dma_pushed = 0  # descriptors pushed (DMA_DONE_COUNT target)
        self.jobs_pushed = 0  # jobs pushed (ENGINE_JOBS_DONE target)
        self.irq_seen = 0  # OR of the IRQ_STATUS values handled
        self.job_depth = 0
        self.dma_depth = 0
        self.last_push: ObiTransaction | None = None

    # -- the map -------------------------------------------------------------------

    def reg(self, block: str, name: str) -> MappedRegister:
        return self.mm.register(block, name)

    def addr(self, block: str, name: str) -> int:
        return PERIPH_BASE + self.reg(block, name).address

    def pack(self, block: str, name: str, **fields: int) -> int:
        """A register value from field values (unnamed fields 0); checks that each fits."""
        value = 0
        for fname, v in fields.items():
            f = self.mm.field(block, name, fname)
            if not 0 <= v < 1 << f.width:
                raise ValueError(f"{block}_{name}.{fname} = {v} does not fit {f.width} bits")
            value |= v << f.offset
        return value

    def get(self, value: int, block: str, name: str, fname: str) -> int:
        f = self.mm.field(block, name, fname)
        return (value >> f.offset) & ((1 << f.width) - 1)

    def mask(self, block: str, name: str, fname: str) -> int:
        f = self.mm.field(block, name, fname)
        return ((1 << f.width) - 1) << f.offset

    # -- MMIO ----------------------------------------------------------------------

    async def _complete(self, txn: ObiTransaction) -> ObiTransaction:
        await self.tb.loop.run_until(
            lambda: txn.done,
            timeout=MMIO_TIMEOUT,
            what=f"MMIO {'write' if txn.we else 'read'} of {txn.addr:#x} (seed {self.tb.seed})",
        )
        return txn

    async def mmio_write(self, addr: int, value: int, be: int = 0xF) -> ObiTransaction:
        return await self._complete(self.cpu.write(addr, value, be))

    async def mmio_read(self, addr: int) -> int:
        txn = await self._complete(self.cpu.read(addr))
        assert txn.rdata is not None
        return txn.rdata

    async def write(self, block: str, name: str, value: int) -> ObiTransaction:
        return await self.mmio_write(self.addr(block, name), value)

    async def read(self, block: str, name: str) -> int:
        return await self.mmio_read(self.addr(block, name))

    async def read_field(self, block: str, name: str, fname: str) -> int:
        return self.get(await self.read(block, name), block, name, fname)

    # -- start-up --------------------------------------------------------------------

    async def boot(self) -> None:
        """Check that the hardware is the configuration this firmware was built for."""
        consts = {c.name: c.value for c in self.mm.constants}
        got = await self.read("CLUSTER", "CONFIG_HASH")
        if got != consts["CONFIG_HASH"]:
            raise _fail(f"CLUSTER_CONFIG_HASH {got:#x}, want {consts['CONFIG_HASH']:#x}")
        major = await self.read_field("CLUSTER", "VERSION", "MAJOR")
        assert major == consts["REGMAP_VERSION_MAJOR"], major
        self.job_depth = await self.read("CLUSTER", "JOB_QUEUE_DEPTH")
        self.dma_depth = await self.read("CLUSTER", "DMA_QUEUE_DEPTH")
        assert self.job_depth == consts["JOB_QUEUE_DEPTH"]
        assert self.dma_depth == consts["DMA_QUEUE_DEPTH"]
        self.jobs_pushed = await self.read("ENGINE", "JOBS_DONE")
        self.dma_pushed = await self.read("DMA", "DONE_COUNT")

    # -- DMA -------------------------------------------------------------------------

    async def queue_room(self, block: str, level: str, depth: int) -> None:
        """Wait until ``block``'s queue has room: STATUS.<level> + PUSH_PENDING < depth."""
        while True:
            st = await self.read(block, "STATUS")
            queued = self.get(st, block, "STATUS", level)
            if queued + self.get(st, block, "STATUS", "PUSH_PENDING") < depth:
                return

    async def dma_push(self, d: Descriptor) -> None:
        await self.queue_room("DMA", "QUEUE_LEVEL", self.dma_depth)
        for name, fname, value in (
            ("L2_ADDR", "ADDR", d.l2_addr),
            ("L1_ADDR", "ADDR", d.l1_addr),
            ("ROW_BYTES", "BYTES", d.row_bytes),
            ("ROWS", "ROWS", d.rows),
            ("L2_STRIDE", "STRIDE", d.l2_stride),
            ("L1_STRIDE", "STRIDE", d.l1_stride),
            ("DIRECTION", "DIRECTION", d.direction),
        ):
            await self.write("DMA", name, self.pack("DMA", name, **{fname: value}))
        await self.write("DMA", "PUSH", self.pack("DMA", "PUSH", PUSH=1))
        self.dma_pushed += 1

    async def dma_wait(self) -> None:
        """Poll DMA_DONE_COUNT until every pushed descriptor is done; no error."""
        target = self.dma_pushed & 0xFFFFFFFF
        while (await self.read("DMA", "DONE_COUNT") - target) & 0xFFFFFFFF >= 1 << 31:
            pass
        st = await self.read("DMA", "STATUS")
        if self.get(st, "DMA", "STATUS", "ERROR"):
            code = DmaError(self.get(st, "DMA", "STATUS", "ERROR_CODE"))
            raise _fail(f"DMA_STATUS.ERROR set, code {code.name}")
        assert not self.get(st, "DMA", "STATUS", "BUSY"), "DMA busy after its last done"

    # -- engine ----------------------------------------------------------------------

    def job_registers(self, job: Job) -> list[tuple[str, int]]:
        """(register name, value) of every ENGINE staging register for ``job``.

        Found through the map's bindings: each field bound to
        ``engine.jobs.payload.<path>`` takes the job's value at ``<path>``.
        """
        payload = job.payload()
        out = []
        for r in self.mm.registers:
            bound = {
                f.name: path
                for f in r.fields
                if isinstance(f.hw, PortBinding) and (path := f.hw.below(JOB_PAYLOAD))
            }
            if r.block.name != "ENGINE" or not bound:
                continue
            fields = {}
            for name, path in bound.items():
                v: Any = payload
                for part in path:
                    v = v[part]
                fields[name] = int(v)
            out.append((r.register.name, self.pack("ENGINE", r.register.name, **fields)))
        return out

    async def engine_push(self, job: Job) -> None:
        await self.queue_room("ENGINE", "QUEUED", self.job_depth)
        for name, value in self.job_registers(job):
            await self.write("ENGINE", name, value)
        self.last_push = await self.write(
            "ENGINE", "JOB_PUSH", self.pack("ENGINE", "JOB_PUSH", PUSH=1)
        )
        self.jobs_pushed += 1

    async def irq_enable(self, *events: str) -> None:
        await self.write(
            "EVENTS", "IRQ_ENABLE", self.pack("EVENTS", "IRQ_ENABLE", **dict.fromkeys(events, 1))
        )

    async def irq_handle(self) -> int:
        """Read IRQ_STATUS and write the same value back (W1C); returns it."""
        st = await self.read("EVENTS", "IRQ_STATUS")
        await self.write("EVENTS", "IRQ_STATUS", st)
        self.irq_seen |= st
        return st

    async def engine_wait(self) -> int:
        """Sleep on irq (ENGINE_DONE enabled) until every pushed job is done.

        Returns the cycle of the last irq rising edge seen.
        """
        target = self.jobs_pushed & 0xFFFFFFFF
        tb = self.tb
        while (await self.read("ENGINE", "JOBS_DONE") - target) & 0xFFFFFFFF >= 1 << 31:
            await tb.loop.run_until(
                lambda: tb.irq.level == 1,
                timeout=MMIO_TIMEOUT,
                what=f"irq for job {target} (seed {tb.seed})",
            )
            await self.irq_handle()
        return tb.irq.rises[-1] if tb.irq.rises else -1

    async def macs(self) -> int:
        lo = await self.read("ENGINE", "MACS_LO")  # latches bits 63:32 into MACS_HI
        hi = await self.read("ENGINE", "MACS_HI")
        return hi << 32 | lo


# ---------------------------------------------------------------------------- jobs


class L2Layout:
    """Bump allocation of L2 areas (random word offsets inside beats)."""

    def __init__(self, cfg: ClusterConfig, rng: np.random.Generator, base: int) -> None:
        self.rng = rng
        self.top = base
        self.limit = 1 << cfg.dma.l2_addr_bits

    def take(self, nbytes: int) -> int:
        addr = self.top + 4 * int(self.rng.integers(0, 8))
        self.top = addr + nbytes
        if self.top > self.limit:
            raise MemoryError("L2 address space too small for the bench")
        return addr


async def load_rects(
    tb: ClusterTB, fw: Firmware, l2: L2Layout, img: np.ndarray, rects: Sequence[Rect]
) -> None:
    """Place each rectangle packed in L2 and push a 2-D transfer L2 -> L1 for it."""
    for r in rects:
        row_bytes = (r.cols + 3) & ~3
        l2_stride = row_bytes + 4 * int(tb.rng.integers(0, 3))
        base = l2.take(r.rows * l2_stride)
        for i in range(r.rows):
            a1 = r.addr + i * r.stride
            tb.l2_mem.write(base + i * l2_stride, img[a1 : a1 + row_bytes].copy())
        await fw.dma_push(
            Descriptor(Direction.L2_TO_L1, base, r.addr, row_bytes, r.rows, l2_stride, r.stride)
        )


async def store_rects(
    tb: ClusterTB, fw: Firmware, l2: L2Layout, rects: Sequence[Rect]
) -> list[tuple[Rect, int, int]]:
    """Push a 2-D transfer L1 -> L2 per rectangle; returns (rect, L2 base, L2 stride)."""
    out = []
    for r in rects:
        row_bytes = (r.cols + 3) & ~3
        l2_stride = row_bytes + 4 * int(tb.rng.integers(0, 3))
        base = l2.take(r.rows * l2_stride)
        await fw.dma_push(
            Descriptor(Direction.L1_TO_L2, base, r.addr, row_bytes, r.rows, l2_stride, r.stride)
        )
        out.append((r, base, l2_stride))
    return out


def check_rect(tb: ClusterTB, want: np.ndarray, r: Rect, base: int, stride: int, what: str) -> None:
    got = np.stack([tb.l2_mem.read(base + i * stride, r.cols) for i in range(r.rows)])
    problem = rect_mismatch(got, want, r)
    if problem:
        raise _fail(f"{what}: {problem}")


# ---------------------------------------------------------------------------- tests


@cocotb.test()
async def firmware_jobs(dut: Any) -> None:
    """Operands DMA'd in, GEMM + ATTENTION + GEMM via the registers, results DMA'd out."""
    cfg = bench_config()
    seed = bench_seed()
    tb = ClusterTB(dut, cfg, seed, "firmware_jobs")
    fw = Firmware(tb)
    await tb.reset()
    small = bool(env_int("TINYATTN_SMALL", 0))
    tb.bg.set(env_float("TINYATTN_BACKGROUND", 0.3), periph=0.05)
    await fw.boot()
    await fw.irq_enable("ENGINE_DONE")
    job_space = tb.size - tb.bg_bytes
    for rnd in range(env_int("TINYATTN_ROUNDS", 1)):
        rng = tb.rng
        tb.l2_stalls(
            float(rng.choice([0.0, 0.3])), float(rng.choice([0.0, 0.3])), int(rng.integers(0, 9))
        )
        # L1 layout: a random start, the tensors of three jobs, an image of random bytes.
        try:
            lo, hi, img, bulk, jobs = layout_three_jobs(cfg, rng, job_space, small)
        except MemoryError:
            raise _fail("could not lay out three jobs in L1") from None
        want = img.copy()
        for job in jobs:
            assert run_job(want, job, cfg) == JobError.NONE
        desc = ", ".join(
            f"{Op(j.op).name} m={j.m} n={j.n} k={j.k} h={j.heads} flags={j.flags:#x}" for j in jobs
        )
        dut._log.info("round %d: L1 [%#x, %#x): %s", rnd, lo, hi, desc)

        # 1. Operands into L1: the bulk image, then each input tensor (2-D, strided).
        l2 = L2Layout(cfg, rng, 1 << 20)
        bulk_l2 = l2.take(hi - lo)
        tb.l2_mem.write(bulk_l2, bulk[lo:hi].copy())
        await fw.dma_push(bulk_descriptors(lo, hi, bulk_l2, Direction.L2_TO_L1))
        outs = []
        for job in jobs:
            ins, o = job_inputs_outputs(job)
            await load_rects(tb, fw, l2, img, ins)
            outs += o
        await fw.dma_wait()

        # 2. The jobs, back to back, waiting for room in the queue before each push.
        macs0 = await fw.macs()
        for job in jobs:
            await fw.engine_push(job)
        await fw.engine_wait()
        err = await fw.read_field("ENGINE", "STATUS", "ERROR_CODE")
        if err or fw.irq_seen & fw.mask("EVENTS", "IRQ_STATUS", "ENGINE_ERROR"):
            raise _fail(f"round {rnd}: engine error (last code {JobError(err).name}); {desc}")
        macs = await fw.macs() - macs0
        if macs != sum(useful_macs(j) for j in jobs):
            raise _fail(f"round {rnd}: MACS counter +{macs}, want {sum(map(useful_macs, jobs))}")

        # 3. Results out: each output, then the whole job region; compare with the model.
        stored = await store_rects(tb, fw, l2, outs)
        region_l2 = l2.take(hi - lo)
        await fw.dma_push(bulk_descriptors(lo, hi, region_l2, Direction.L1_TO_L2))
        await fw.dma_wait()
        for r, base, stride in stored:
            check_rect(tb, want, r, base, stride, f"round {rnd} ({desc})")
        got = tb.l2_mem.read(region_l2, hi - lo)
        diff = np.flatnonzero(got != want[lo:hi])
        if diff.size:
            a = lo + int(diff[0])
            raise _fail(
                f"round {rnd}: L1 job region differs from the golden model at {diff.size} "
                f"bytes, first at L1 {a:#x} (got {got[diff[0]]}, want {want[a]}); {desc}"
            )
    await tb.finish()
    if tb.bg.rate and tb.bg.initiators:
        assert tb.bg.reads_checked > 0 and tb.bg.writes > 0, "no background traffic checked"
    dut._log.info(
        "background: %d reads and %d register reads checked, %d writes; %s",
        tb.bg.reads_checked,
        tb.bg.periph_checked,
        tb.bg.writes,
        tb.bg.stats(),
    )


@cocotb.test()
async def address_map(dut: Any) -> None:
    """Constants, L1 edges, unmapped addresses (BUS_ERROR, irq), DMA and engine error events."""
    cfg = bench_config()
    seed = bench_seed() + 1
    tb = ClusterTB(dut, cfg, seed, "address_map")
    fw = Firmware(tb)
    await tb.reset()
    tb.bg.set(0.3, periph=0.5)  # contend for the peripheral port
    await fw.boot()
    mm = tb.mm
    size = tb.size

    # Every read-only constant and the reset value of every readable register.
    for r in mm.registers:
        if r.block.name == "CLUSTER":
            got = await fw.read("CLUSTER", r.register.name)
            assert got == r.register.reset, f"{r.name} = {got:#x}, want {r.register.reset:#x}"

    # L1 edges, byte enables, and that core 0 sees what it wrote.
    edges = [0, 4, size - tb.bg_bytes - 4, size // 2]
    for a in edges:
        await fw.mmio_write(L1_BASE + a, 0x11223344)
        await fw.mmio_write(L1_BASE + a, 0xAABBCCDD, be=0b0101)
        got = await fw.mmio_read(L1_BASE + a)
        assert got == 0x11BB33DD, f"L1 {a:#x}: {got:#x}"

    # Unmapped addresses: read 0, write nothing, BUS_ERROR (and irq when enabled).
    job_m = fw.addr("ENGINE", "JOB_M")
    await fw.mmio_write(job_m, 0x55)
    await fw.irq_enable("BUS_ERROR")
    bus_error = fw.mask("EVENTS", "IRQ_STATUS", "BUS_ERROR")
    await fw.irq_handle()
    assert tb.irq.level == 0, "irq high with no event pending"
    window = 1 << PERIPH_BITS
    unmapped = [
        0,
        L1_BASE - 4,
        L1_BASE + size,  # aliases L1 word 0 if the decode ignored the upper bits
        PERIPH_BASE - 4,
        PERIPH_BASE + window,  # aliases register 0
        PERIPH_BASE + mm.size + mm.register("ENGINE", "JOB_M").address,  # above the map
        PERIPH_BASE + window - 4,
        0xFFFF_FFFC,
    ]
    for a in unmapped:
        await fw.mmio_write(a, 0xDEADBEEF)
        got = await fw.mmio_read(a)
        assert got == 0, f"unmapped {a:#x} read {got:#x}"
        await tb.loop.run(2)
        assert tb.irq.level == 1, f"no irq after an access to unmapped {a:#x}"
        st = await fw.irq_handle()
        assert st & bus_error, f"no BUS_ERROR after an access to unmapped {a:#x}"
        await tb.loop.run(2)
        assert tb.irq.level == 0, "irq still high after clearing BUS_ERROR"
    assert await fw.mmio_read(L1_BASE) == 0x11BB33DD, "an unmapped write reached L1"
    assert await fw.mmio_read(job_m) == 0x55, "an unmapped write reached a register"
    # A mapped register access raises nothing.
    await fw.read("CLUSTER", "VERSION")
    assert not (await fw.read("EVENTS", "IRQ_STATUS")) & bus_error

    # A rejected DMA descriptor: done + error, sticky code, ERROR_ACK clears it.
    await fw.irq_enable("DMA_ERROR", "ENGINE_ERROR")
    await fw.irq_handle()
    await fw.dma_push(
        Descriptor(Direction.L2_TO_L1, 0x1000, size - 4, 8, 1, 8, 8)  # beyond L1
    )
    await tb.loop.run_until(lambda: tb.irq.level == 1, timeout=1000, what="DMA error irq")
    assert await fw.read("DMA", "DONE_COUNT") == fw.dma_pushed
    st = await fw.read("DMA", "STATUS")
    assert fw.get(st, "DMA", "STATUS", "ERROR") == 1
    assert fw.get(st, "DMA", "STATUS", "ERROR_CODE") == DmaError.L1_RANGE
    assert await fw.irq_handle() & fw.mask("EVENTS", "IRQ_STATUS", "DMA_ERROR")
    await fw.write("DMA", "CTRL", fw.pack("DMA", "CTRL", ERROR_ACK=1))
    assert await fw.read_field("DMA", "STATUS", "ERROR") == 0

    # A rejected engine job (op 0): done, ENGINE_ERROR, ERROR_CODE = UNKNOWN_OP.
    await fw.engine_push(Job(op=0, m=1, n=4, k=4))
    await tb.loop.run_until(lambda: tb.irq.level == 1, timeout=1000, what="engine error irq")
    assert await fw.read("ENGINE", "JOBS_DONE") == fw.jobs_pushed
    assert await fw.read_field("ENGINE", "STATUS", "ERROR_CODE") == JobError.UNKNOWN_OP
    assert await fw.irq_handle() & fw.mask("EVENTS", "IRQ_STATUS", "ENGINE_ERROR")
    await tb.loop.run(2)
    assert tb.irq.level == 0
    await tb.finish()
    assert tb.bg.periph_checked > 0, "no background register reads"


@cocotb.test()
async def perf_gemm(dut: Any) -> None:
    """One GEMM (TINYATTN_PERF_M x K x N), run once per background load.

    Records, per load: engine busy cycles, the ideal (MACs / peak), utilization =
    MACs / (busy cycles x peak), and job cycles from the JOB_PUSH write's grant to the
    irq (ENGINE_DONE); the result is checked against the golden model each time.
    """
    cfg = bench_config()
    seed = bench_seed() + 2
    e = cfg.engine
    tb = ClusterTB(dut, cfg, seed, "perf_gemm")
    fw = Firmware(tb)
    await tb.reset()
    await fw.boot()
    m = env_int("TINYATTN_PERF_M", 2 * e.tile_m)
    k = env_int("TINYATTN_PERF_K", 4 * e.vec_len)
    n = env_int("TINYATTN_PERF_N", 2 * e.vec_len)
    flags = env_int("TINYATTN_PERF_FLAGS", FLAG_RELU)
    loads = [float(v) for v in os.environ.get("TINYATTN_BACKGROUNDS", "0,0.25,0.5").split(",")]
    img = tb.rng.integers(0, 256, tb.size, dtype=np.uint8)
    alloc = Allocator(tb.size - tb.bg_bytes, tb.rng)
    job = random_gemm(img, cfg, tb.rng, m=m, n=n, k=k, flags=flags, alloc=alloc)
    want = img.copy()
    assert run_job(want, job, cfg) == JobError.NONE
    ins, outs = job_inputs_outputs(job)
    l2 = L2Layout(cfg, tb.rng, 1 << 20)
    await load_rects(tb, fw, l2, img, ins)
    await fw.dma_wait()
    await fw.irq_enable("ENGINE_DONE")
    await fw.irq_handle()
    macs = useful_macs(job)
    peak = e.macs_per_cycle
    records = []
    for load in loads:
        tb.bg.set(load)
        await tb.loop.run(200)  # the traffic reaches its steady state
        busy0 = await fw.read("ENGINE", "BUSY_CYCLES")
        stall0 = await fw.read("ENGINE", "STALL_CYCLES")
        macs0 = await fw.macs()
        tb.bg.reset_stats()
        start = tb.loop.cycle
        rises = len(tb.irq.rises)
        await fw.engine_push(job)
        assert fw.last_push is not None
        pushed = fw.last_push.grant_cycle
        await fw.engine_wait()
        assert len(tb.irq.rises) > rises, "no irq for the job"
        done_irq = tb.irq.rises[rises]
        window = tb.loop.cycle - start  # background statistics cover this window
        bg = tb.bg.stats()
        busy = (await fw.read("ENGINE", "BUSY_CYCLES") - busy0) & 0xFFFFFFFF
        stall = (await fw.read("ENGINE", "STALL_CYCLES") - stall0) & 0xFFFFFFFF
        counted = await fw.macs() - macs0
        assert counted == macs, f"MACS counter +{counted}, want {macs}"
        assert await fw.read_field("ENGINE", "STATUS", "ERROR_CODE") == 0
        await tb.quiesce()
        stored = await store_rects(tb, fw, l2, outs)
        await fw.dma_wait()
        for r, base, stride in stored:
            check_rect(tb, want, r, base, stride, f"perf GEMM, background {load}")
        n_bg = len(tb.bg.initiators)
        records.append(
            {
                "name": f"gemm {m}x{k}x{n} bg{round(load * 100)}%",
                "m": m,
                "k": k,
                "n": n,
                "flags": flags,
                "background": load,
                "cycles": busy,
                "ideal_cycles": macs // peak,
                "utilization": macs / (busy * peak),
                "job_cycles": done_irq - pushed,
                "job_utilization": macs / ((done_irq - pushed) * peak),
                "stall_cycles": stall,
                "bg_cores": n_bg,
                "bg_rate": bg["granted"] / (n_bg * window) if n_bg else 0.0,
                "bg_mean_wait": bg["mean_wait"],
                "bg_max_wait": bg["max_wait"],
            }
        )
        dut._log.info("perf: %s", records[-1])
    write_metrics("perf_gemm", {"records": records})
    await tb.finish()
