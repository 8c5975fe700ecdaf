"""A RISC-V control core: PicoRV32, its private memory, and a bridge onto the cluster's OBI.

::

    PicoRV32.bus (native) --+--> PrivateMemory.bus       [PRIVATE_BASE, + private_bytes)
                            +--> ObiBridge --> bus (OBI)  the L1 and register windows
                            +--> fault                    anything else: the core stops

- **Private memory.** Code, data and stack live in a ``lib.memory.Memory`` of
  ``cfg.core.private_bytes``, so instruction fetches never load the shared L1. It
  answers in the cycle of the request, without wait states: reads use PicoRV32's
  look-ahead address, given a cycle before the request.
- **Cluster accesses.** An access to the L1 window or the register window
  (:mod:`~tinyattn.hw.core_bus`) goes out on ``bus``, one at a time; OBI rules hold
  because PicoRV32 keeps a request stable until it is answered.
- **Faults.** An access to any other address, or an instruction fetch from outside the
  private memory, is not performed: the core stops there (its request is never
  answered) and ``fault`` names the cause and the address. A PicoRV32 trap (illegal
  instruction, misaligned access, ``ebreak``/``ecall``) stops it too. ``fault`` stays
  set until ``run`` falls.
- **Loading.** While ``run`` is low the CPU is held in reset and ``loader`` writes words
  into the private memory; a simulation loads a firmware image this way without
  rebuilding anything.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, enum, memory, wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .core_bus import L1_BASE, PERIPH_BASE, PERIPH_BITS, PRIVATE_BASE
from .obi import obi_signature
from .picorv32 import PicoRV32, lookahead_signature, native_bus_signature

__all__ = [
    "ControlCore",
    "FaultCause",
    "ObiBridge",
    "PrivateMemory",
    "fault_layout",
    "loader_signature",
]


class FaultCause(enum.IntEnum, shape=2):
    """Why a control core stopped."""

    NONE = 0  #: running (or held in reset)
    TRAP = 1  #: PicoRV32 trap: illegal instruction, misaligned access, ebreak or ecall
    BUS = 2  #: a load or store to an address outside private memory, L1 and registers
    FETCH = 3  #: an instruction fetch from outside the private memory


def fault_layout() -> data.StructLayout:
    """``cause`` (:class:`FaultCause`) and ``addr``, the address of the refused access."""
    return data.StructLayout({"cause": FaultCause, "addr": 32})


def loader_signature(word_bits: int) -> wiring.Signature:
    """A write-only port into a private memory, from the host's side: one word a cycle."""
    return wiring.Signature({"valid": Out(1), "addr": Out(word_bits), "data": Out(32)})


class PrivateMemory(wiring.Component):
    """``words`` 32-bit words behind PicoRV32's native interface, plus a loader.

    Ports
    -----
    bus : In(:func:`~tinyattn.hw.picorv32.native_bus_signature`)
        ``addr`` is a byte address; the bits above the memory are ignored (the caller
        decodes). ``ready`` is high in every cycle with ``valid`` and ``select``: a
        write is done in that cycle, a read returns the word whose address
        ``lookahead`` gave in the cycle before.
    lookahead : In(:func:`~tinyattn.hw.picorv32.lookahead_signature`)
        The synchronous read port takes ``lookahead.addr`` in each cycle with
        ``lookahead.read`` and holds its data otherwise.
    loader : In(:func:`loader_signature`)
        Writes ``data`` at word ``addr`` in each cycle with ``valid``, while ``select``
        is low; a write from the bus is ignored then.
    select : In(1)
        The bus owns the memory (the core runs).
    """

    def __init__(self, words: int) -> None:
        self.words = words
        self.word_bits = (words - 1).bit_length()
        super().__init__(
            {
                "bus": In(native_bus_signature()),
                "lookahead": In(lookahead_signature()),
                "loader": In(loader_signature(self.word_bits)),
                "select": In(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=32, depth=self.words, init=[])
        read = mem.read_port()
        write = mem.write_port(granularity=8)
        bus, loader = self.bus, self.loader
        word = bus.addr[2 : 2 + self.word_bits]

        # PicoRV32 drops `valid` (or moves to the next word) in the cycle after `ready`,
        # so a request is answered, and its write done, exactly once.
        m.d.comb += [
            read.addr.eq(self.lookahead.addr[2 : 2 + self.word_bits]),
            read.en.eq(self.lookahead.read),
            bus.ready.eq(bus.valid & self.select),
            bus.rdata.eq(read.data),
        ]
        with m.If(self.select):
            m.d.comb += [
                write.addr.eq(word),
                write.data.eq(bus.wdata),
                write.en.eq(Mux(bus.valid, bus.wstrb, 0)),
            ]
        with m.Else():
            m.d.comb += [
                write.addr.eq(loader.addr),
                write.data.eq(loader.data),
                write.en.eq(loader.valid.replicate(4)),
            ]
        return m


class ObiBridge(wiring.Component):
    """PicoRV32's native interface onto an OBI initiator port, one access at a time.

    ``req`` rises with ``valid`` (and ``select``) and stays, with the address and data
    PicoRV32 holds, until ``gnt``; ``ready`` is the response's ``rvalid``. Reads fetch
    the whole word (``be`` = 0xF); writes pass PicoRV32's byte strobes.
    """

    def __init__(self) -> None:
        super().__init__(
            {"native": In(native_bus_signature()), "select": In(1), "obi": Out(obi_signature(32))}
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        native, obi = self.native, self.obi
        pending = Signal()  # granted, response not yet back
        write = native.wstrb.any()
        m.d.comb += [
            obi.req.eq(native.valid & self.select & ~pending),
            obi.addr.eq(native.addr & ~3),
            obi.we.eq(write),
            obi.be.eq(Mux(write, native.wstrb, 0xF)),
            obi.wdata.eq(native.wdata),
            native.ready.eq(obi.rvalid),
            native.rdata.eq(obi.rdata),
        ]
        with m.If(obi.req & obi.gnt):
            m.d.sync += pending.eq(1)
        with m.Elif(obi.rvalid):
            m.d.sync += pending.eq(0)
        return m


class ControlCore(wiring.Component):
    """One PicoRV32 with its private memory, its OBI port into the cluster and a fault state.

    Ports
    -----
    bus : Out(:func:`~tinyattn.hw.obi.obi_signature` ``(32)``)
        Core addresses of the L1 and register windows, as :class:`CoreBus` decodes them.
    run : In(1)
        The core runs while high; low holds it in reset and lets ``loader`` write.
    loader : In(:func:`loader_signature`)
        Writes into the private memory while ``run`` is low.
    irq : In(1)
        The cluster's interrupt line (see :mod:`~tinyattn.hw.picorv32`).
    fault : Out(:func:`fault_layout`)
        Why the core stopped, and the address it stopped at (for ``BUS`` and ``FETCH``).
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        self.private_bytes = cfg.core.private_bytes
        words = self.private_bytes // 4
        super().__init__(
            {
                "bus": Out(obi_signature(32)),
                "run": In(1),
                "loader": In(loader_signature((words - 1).bit_length())),
                "irq": In(1),
                "fault": Out(fault_layout()),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.cpu = cpu = PicoRV32(
            reset_addr=PRIVATE_BASE, stack_addr=PRIVATE_BASE + self.private_bytes
        )
        m.submodules.private = private = PrivateMemory(self.private_bytes // 4)
        m.submodules.bridge = bridge = ObiBridge()

        # Decode. Every window is aligned to its power-of-two size.
        addr = cpu.bus.addr
        l1_bits = (self.cfg.memory.size_bytes - 1).bit_length()
        priv_bits = (self.private_bytes - 1).bit_length()
        in_private = addr[priv_bits:] == PRIVATE_BASE >> priv_bits
        in_cluster = (addr[l1_bits:] == L1_BASE >> l1_bits) | (
            addr[PERIPH_BITS:] == PERIPH_BASE >> PERIPH_BITS
        )
        stopped = Signal()
        m.d.comb += stopped.eq(self.fault.cause != FaultCause.NONE)

        m.d.comb += [
            cpu.run.eq(self.run),
            cpu.irq.eq(self.irq),
            # The private memory and the bridge share the request lines; each answers
            # only what it is selected for, and a stopped core gets no answer.
            private.bus.valid.eq(cpu.bus.valid & ~stopped),
            private.bus.addr.eq(addr),
            private.bus.wdata.eq(cpu.bus.wdata),
            private.bus.wstrb.eq(cpu.bus.wstrb),
            private.lookahead.read.eq(cpu.lookahead.read),
            private.lookahead.addr.eq(cpu.lookahead.addr),
            private.select.eq(self.run & in_private),
            bridge.native.valid.eq(cpu.bus.valid & ~stopped),
            bridge.native.addr.eq(addr),
            bridge.native.wdata.eq(cpu.bus.wdata),
            bridge.native.wstrb.eq(cpu.bus.wstrb),
            bridge.select.eq(self.run & in_cluster & ~cpu.bus.instr),
            cpu.bus.ready.eq(private.bus.ready | bridge.native.ready),
            cpu.bus.rdata.eq(Mux(private.bus.ready, private.bus.rdata, bridge.native.rdata)),
        ]
        wiring.connect(m, wiring.flipped(self.loader), private.loader)
        wiring.connect(m, bridge.obi, wiring.flipped(self.bus))

        cause = Mux(
            cpu.trap,
            FaultCause.TRAP,
            Mux(cpu.bus.instr, FaultCause.FETCH, FaultCause.BUS),
        )
        refused = cpu.bus.valid & ~in_private & (cpu.bus.instr | ~in_cluster)
        with m.If(~self.run):
            m.d.sync += self.fault.cause.eq(FaultCause.NONE)
        with m.Elif(~stopped & (cpu.trap | refused)):
            m.d.sync += [self.fault.cause.eq(cause), self.fault.addr.eq(addr)]
        return m
