"""The cluster top: control cores, L1 + interconnect, the engine, the DMA, the registers.

::

    ControlCore[i].bus --> CoreBus --l1[i]--> Tcdm.narrow[i]        (i < core.count)
    cores[j] ----------->          --l1[..]-> Tcdm.narrow[count+j]  (j < n_cores - count)
    CommandSequencer.bus ->        --periph-> RegBlock.bus          (shares core port 0)
    RegBlock.seq <--------------------> CommandSequencer (list, start, bases, status)
    RegBlock.engine <-----------------> Engine.control (jobs, clear, done, status, counters)
    RegBlock.dma <--------------------> Dma.control (cmd, clear, error_ack, done, status)
    RegBlock.irq ---------------------> irq, ControlCore[i].irq
    RegBlock.host --------------------> host (console, end of run)
    Engine.mem[j] --------------------> Tcdm.wide[j]                (j < vec_len / 4)
    Dma.l1[j] ------------------------> Tcdm.narrow[n_cores + j]    (j < dma_bits / 32)
    Dma.l2_req / Dma.l2_rsp <---------> l2_req / l2_rsp             (L2, outside)

- Core ports ``0 .. core.count-1`` carry a RISC-V
  :class:`~tinyattn.hw.control_core.ControlCore` each (PicoRV32 with a private memory);
  the others are the cluster's ``cores`` ports, for other initiators and test traffic.
  All go through :class:`~tinyattn.hw.core_bus.CoreBus`: port ``i`` reaches L1 through
  the TCDM's narrow port ``i``; all share the register block.
- The :class:`~tinyattn.hw.sequencer.CommandSequencer` shares core port 0 with its
  initiator (control core 0, or ``cores[0]``) through an
  :class:`~tinyattn.hw.obi.ObiArbiter`: it reaches L1 and the registers as that core.
- The control cores run while ``fetch_enable`` is high. While it is low they are held
  in reset and ``loader`` writes firmware into their private memories.
- The DMA's L1 lanes are the narrow ports after the cores; its L2 streams are the
  cluster's ``l2_req`` / ``l2_rsp`` ports (L2 lives outside the cluster).
- The engine's wide port is the TCDM's wide side.
- The register block's ``engine`` and ``dma`` ports connect to the engine's and the
  DMA's ``control`` ports with ``wiring.connect`` (one control signature each:
  :func:`~tinyattn.hw.engine.engine_control_signature`,
  :func:`~tinyattn.hw.dma.dma_control_signature`). It decodes the whole 4 KiB
  peripheral window (``addr_bits = PERIPH_BITS``): addresses above its map are
  unmapped registers (read 0, ``BUS_ERROR``). The register block has no input for the
  CoreBus's decode errors; instead the CoreBus passes an access to an unmapped cluster
  address to the register block as a read of ``UNMAPPED_OFFSET``, an unmapped register
  address, so that it raises ``EVENTS_IRQ_STATUS.BUS_ERROR`` like any other unmapped
  access.

See ``docs/cluster.md`` for the address map and how firmware drives the cluster.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .cluster_registers import host_signature, register_map
from .control_core import ControlCore, FaultCause, fault_layout, loader_signature
from .core_bus import (
    L1_BASE,
    PERIPH_BASE,
    PERIPH_BITS,
    UNMAPPED_OFFSET,
    CoreBus,
    check_l1_window,
)
from .dma import Dma, l2_req_layout, l2_rsp_layout
from .engine import Engine
from .obi import ObiArbiter, obi_signature
from .regblock import RegBlock
from .sequencer import CommandSequencer
from .tcdm import Tcdm

__all__ = ["L1_BASE", "PERIPH_BASE", "Cluster"]


class Cluster(wiring.Component):
    """The shared-memory cluster: engine, DMA, L1 (TCDM), registers and core ports.

    Parameters
    ----------
    cfg : ClusterConfig
        The whole configuration; L1 must be at most 2 MiB (the window below
        ``PERIPH_BASE``), and the engine needs ``vec_len >= 16``.

    Ports
    -----
    cores : In(:func:`~tinyattn.hw.obi.obi_signature` ``(32)``).array(n_cores - core.count)
        The core ports without a RISC-V core (OBI targets; absent when every port has
        one). ``cores[j]`` is core port ``core.count + j``. 32-bit byte addresses
        decoded by :class:`~tinyattn.hw.core_bus.CoreBus`: L1 at ``L1_BASE``, the
        registers at ``PERIPH_BASE``. ``rvalid`` comes exactly one cycle after ``gnt``.
    fetch_enable : In(1)
        The control cores run while high; low holds them in reset.
    loader : In(signature of ``valid``, ``core``, ``addr``, ``data``)
        While ``fetch_enable`` is low: write ``data`` at word ``addr`` of core
        ``core``'s private memory in each cycle with ``valid``.
    host : Out(:func:`~tinyattn.hw.cluster_registers.host_signature`)
        The console bytes and the end of run written by the firmware (``HOST`` registers).
    faults : Out(ArrayLayout(:func:`~tinyattn.hw.control_core.fault_layout`, core.count))
        Per control core: why it stopped (``cause``) and the refused address.
    fault : Out(1)
        Some control core stopped on a fault.
    l2_req : Out(stream of :func:`~tinyattn.hw.dma.l2_req_layout`)
        The DMA's L2 requests (``addr``, ``we``, ``be``, ``wdata``).
    l2_rsp : In(stream of :func:`~tinyattn.hw.dma.l2_rsp_layout`)
        The L2 responses: one per request, reads and writes, in order.
    irq : Out(1)
        The register block's interrupt line: OR of ``EVENTS_IRQ_STATUS & IRQ_ENABLE``.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        check_l1_window(cfg)
        mm = register_map(cfg)
        if mm.size > UNMAPPED_OFFSET:
            raise ValueError(
                f"the register map ({mm.size} bytes) reaches UNMAPPED_OFFSET "
                f"{UNMAPPED_OFFSET:#x} of the peripheral window"
            )
        self.cfg = cfg
        self.n_riscv = cfg.core.count
        self.n_external = cfg.interconnect.n_cores - cfg.core.count
        words = cfg.core.private_bytes // 4
        loader = loader_signature((words - 1).bit_length()).members
        members = {
            "fetch_enable": In(1),
            "loader": In(
                wiring.Signature({**loader, "core": Out(max(1, (self.n_riscv - 1).bit_length()))})
            ),
            "host": Out(host_signature()),
            "faults": Out(data.ArrayLayout(fault_layout(), self.n_riscv)),
            "fault": Out(1),
            "l2_req": Out(stream.Signature(l2_req_layout(cfg))),
            "l2_rsp": In(stream.Signature(l2_rsp_layout(cfg))),
            "irq": Out(1),
        }
        if self.n_external:
            members = {"cores": In(obi_signature(32)).array(self.n_external), **members}
        super().__init__(members)

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        n_cores = cfg.interconnect.n_cores
        m = Module()
        m.submodules.core_bus = bus = CoreBus(cfg)
        m.submodules.tcdm = tcdm = Tcdm(cfg)
        m.submodules.engine = engine = Engine(cfg)
        m.submodules.dma = dma = Dma(cfg)
        m.submodules.regs = regs = RegBlock(cfg, addr_bits=PERIPH_BITS)
        m.submodules.sequencer = seq = CommandSequencer(cfg)
        m.submodules.port0 = port0 = ObiArbiter(2)

        # Control cores on the first core ports, the cluster's `cores` on the rest;
        # CoreBus -> TCDM narrow ports 0 .. n_cores-1, and the registers.
        for i in range(self.n_riscv):
            core = ControlCore(cfg)
            m.submodules[f"core_{i}"] = core
            loader = core.loader
            m.d.comb += [
                core.run.eq(self.fetch_enable),
                core.irq.eq(regs.irq),
                loader.valid.eq(self.loader.valid & (self.loader.core == i)),
                loader.addr.eq(self.loader.addr),
                loader.data.eq(self.loader.data),
                self.faults[i].eq(core.fault),
            ]
            wiring.connect(m, core.bus, port0.initiators[0] if i == 0 else bus.cores[i])
        m.d.comb += self.fault.eq(
            Cat(*(self.faults[i].cause != FaultCause.NONE for i in range(self.n_riscv))).any()
        )
        for j in range(self.n_external):
            port = self.n_riscv + j
            target = port0.initiators[0] if port == 0 else bus.cores[port]
            wiring.connect(m, wiring.flipped(self.cores[j]), target)
        wiring.connect(m, seq.bus, port0.initiators[1])
        wiring.connect(m, port0.target, bus.cores[0])
        for i in range(n_cores):
            wiring.connect(m, bus.l1[i], tcdm.narrow[i])
        wiring.connect(m, bus.periph, regs.bus)

        # DMA lanes -> the narrow ports after the cores; its L2 side to the outside.
        for j, lane in enumerate(dma.l1):
            wiring.connect(m, lane, tcdm.narrow[n_cores + j])
        wiring.connect(m, wiring.flipped(self.l2_req), dma.l2_req)
        wiring.connect(m, wiring.flipped(self.l2_rsp), dma.l2_rsp)

        # Engine -> the wide port.
        for lane, port in zip(engine.mem, tcdm.wide, strict=True):
            wiring.connect(m, lane, port)

        # Control: the register block drives the engine's job queue and the DMA's
        # descriptor queue and reads their status; its irq is the cluster's.
        wiring.connect(m, regs.engine, engine.control)
        wiring.connect(m, regs.dma, dma.control)
        wiring.connect(m, regs.seq, seq.control)
        m.d.comb += seq.hw_error.eq(
            (engine.control.done & (engine.control.status.error != 0))
            | (dma.control.done & dma.control.done_error)
        )
        m.d.comb += self.irq.eq(regs.irq)
        wiring.connect(m, regs.host, wiring.flipped(self.host))
        return m
