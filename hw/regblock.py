"""The register block: the peripheral registers of the cluster behind one OBI target port.

Generated from :func:`tinyattn.hw.cluster_registers.register_map`: every field of the map
becomes its storage, source, pulse or sticky flag here according to its access mode and
binding; nothing is placed by hand. The few pieces of logic the map only names (its
:class:`~tinyattn.hw.cluster_registers.Internal` signals: the push handshakes, the done
counters, the MACS latch, the events) are written out below and checked against
:data:`~tinyattn.hw.cluster_registers.INTERNAL`.

Bus contract (``bus``, an OBI target, 32-bit words):

- ``gnt`` is high except for a write to a staging or push register of the engine (DMA)
  while a push to the engine (DMA) is pending: such a write waits until the pending push
  has been taken, so a staged value never changes under an offered job;
- the response comes exactly one cycle after ``gnt``, for reads and writes;
- byte enables apply to every writable field (a ``W1P`` / ``W1C`` bit acts only if its
  byte is enabled); writes to ``RO`` fields are ignored; ``W1P`` fields read 0;
- an access to an address that holds no register reads 0, changes nothing and sets
  ``EVENTS_IRQ_STATUS.BUS_ERROR``;
- ``addr[1:0]`` is ignored (OBI addresses are word aligned).

See ``docs/registers.md`` for the map and for how the cluster top connects the block.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .cluster_registers import INTERNAL, Internal, control_ports_signature, register_map
from .obi import obi_signature
from .registers import CONSTANT, REG_BITS, Access, Binding, InternalSignal, MemoryMap

__all__ = ["RegBlock", "regblock_signature"]


def regblock_signature(cfg: ClusterConfig, addr_bits: int | None = None) -> wiring.Signature:
    """The ports of ``RegBlock(cfg, addr_bits=addr_bits)``, without building the block.

    For code that needs the ports but elaborates nothing (a testbench locating the map's
    bindings in the Verilog ports). ``addr_bits`` defaults to what the map needs; a
    value outside ``register_map(cfg).addr_bits..32`` raises ``ValueError``.
    """
    needed = register_map(cfg).addr_bits
    addr_bits = needed if addr_bits is None else addr_bits
    if not needed <= addr_bits <= 32:
        raise ValueError(f"addr_bits = {addr_bits}: the map needs {needed}..32 bits")
    # engine, dma, host, seq: the ports the map's fields bind to.
    controls = control_ports_signature(cfg).members
    return wiring.Signature({"bus": In(obi_signature(addr_bits)), **controls, "irq": Out(1)})


class RegBlock(wiring.Component):
    """The cluster's peripheral registers (``CLUSTER``, ``ENGINE``, ``DMA``, ``EVENTS``).

    Parameters
    ----------
    cfg : ClusterConfig
    addr_bits : int, optional
        Byte address bits of ``bus``; default: what the map needs
        (``register_map(cfg).addr_bits``, the bits that cover the map). Wider addresses are
        decoded in full: addresses above the map are unmapped.

    Ports
    -----
    bus : In(obi_signature(addr_bits))
        The OBI target port.
    engine : Out(:func:`~tinyattn.hw.engine.engine_control_signature`)
        ``jobs`` (stream of ``job_layout(cfg)``), ``clear`` out; ``done``, ``status``,
        ``busy_cycles``, ``stall_cycles``, ``idle_cycles``, ``macs`` in: connects to
        :class:`~tinyattn.hw.engine.Engine`'s ``control`` with ``wiring.connect``.
    dma : Out(:func:`~tinyattn.hw.dma.dma_control_signature`)
        ``cmd`` (stream of ``descriptor_layout``), ``clear``, ``error_ack`` out;
        ``done``, ``done_error``, ``busy``, ``queue_level``, ``error``, ``error_code``
        in: connects to :class:`~tinyattn.hw.dma.Dma`'s ``control``.
    host : Out(:func:`~tinyattn.hw.cluster_registers.host_signature`)
        The console byte stream and the end-of-run flag and exit code (``HOST`` block).
    seq : Out(:func:`~tinyattn.hw.sequencer.sequencer_control_signature`)
        The ``SEQ`` registers: connects to the sequencer's ``control``.
    irq : Out(1)
        OR of the enabled pending event flags (``IRQ_STATUS & IRQ_ENABLE``), from flops.
    """

    def __init__(self, cfg: ClusterConfig, *, addr_bits: int | None = None) -> None:
        self.cfg = cfg
        self.map: MemoryMap = register_map(cfg)
        self.addr_bits = self.map.addr_bits if addr_bits is None else addr_bits
        super().__init__(regblock_signature(cfg, self.addr_bits))

    def _resolve(self, binding: Binding, internal: dict[InternalSignal, Signal]) -> Value:
        """The signal a binding names (a port member, a field of one, an internal signal)."""
        if isinstance(binding, InternalSignal):
            return internal[binding]
        assert binding is not CONSTANT
        value: object = self
        for name in binding.path:
            value = getattr(value, name)
        if isinstance(value, data.View):
            value = value.as_value()
        assert isinstance(value, Value), binding
        return value if binding.bits is None else value[binding.bits[0] : binding.bits[1]]

    def elaborate(self, platform: object) -> Module:
        m = Module()
        mm = self.map
        bus, eng, dma = self.bus, self.engine, self.dma

        # The map's internal bindings, as named signals; driven further down.
        internal = {spec: Signal(spec.width, name=f"int_{spec.name}") for spec in INTERNAL}
        used = {
            binding
            for reg in mm.registers
            for binding in (
                *(f.hw for f in reg.fields),
                reg.register.read_action,
                reg.register.write_action,
                reg.register.stall_while,
            )
            if isinstance(binding, InternalSignal)
        }
        if used != set(INTERNAL):
            unused = sorted(spec.name for spec in set(INTERNAL) - used)
            raise ValueError(f"internal signals not used by the map: {unused}")

        # ---------------------------------------------------------------- bus decode
        word = bus.addr[2:]
        hit = {}
        for reg in mm.registers:
            hit[reg] = Signal(name=f"hit_{reg.name.lower()}")
            m.d.comb += hit[reg].eq(word == reg.address // 4)
        any_hit = Cat(*hit.values()).any()

        # A write to a staging/push register waits while that unit's push is pending:
        # the staged fields drive the stream payload directly, so they must not change
        # while it is offered.
        stall = Const(0)
        for reg in mm.registers:
            if reg.register.stall_while is not None:
                stall = stall | (hit[reg] & self._resolve(reg.register.stall_while, internal))
        m.d.comb += bus.gnt.eq(~(bus.we & stall))
        accept = Signal()
        m.d.comb += accept.eq(bus.req & bus.gnt)
        wr = accept & bus.we
        rd = accept & ~bus.we
        wmask = Cat(*(bus.be[i].replicate(8) for i in range(4)))
        m.d.comb += internal[Internal.BUS_ERROR].eq(accept & ~any_hit)

        # ---------------------------------------------------------------- fields
        storage: dict[tuple[str, str, str], Signal] = {}
        values: dict[object, Signal] = {}
        for reg in mm.registers:
            name = reg.name.lower()
            written = Signal(name=f"{name}_written")
            m.d.comb += written.eq(wr & hit[reg])
            value = Signal(REG_BITS, name=f"{name}_value")
            values[reg] = value
            for f in reg.fields:
                lo, hi = f.offset, f.offset + f.width
                wd, wm = bus.wdata[lo:hi], wmask[lo:hi]
                fname = f"{name}_{f.name.lower()}"
                if f.access is Access.RW:
                    store = Signal(f.width, init=f.reset, name=fname)
                    with m.If(written):
                        m.d.sync += store.eq((store & ~wm) | (wd & wm))
                    m.d.comb += value[lo:hi].eq(store)
                    if f.hw is not None:
                        m.d.comb += self._resolve(f.hw, internal).eq(store)
                    storage[(reg.block.name, reg.register.name, f.name)] = store
                elif f.access is Access.RO:
                    assert f.hw is not None
                    source = (
                        Const(f.reset, f.width)
                        if f.hw is CONSTANT
                        else self._resolve(f.hw, internal)
                    )
                    m.d.comb += value[lo:hi].eq(source)
                elif f.access is Access.W1P:
                    # One-cycle pulse in the cycle after the write's gnt (with rvalid).
                    assert f.hw is not None
                    pulse = Signal(f.width, name=fname)
                    m.d.sync += pulse.eq(Mux(written, wd & wm, 0))
                    m.d.comb += self._resolve(f.hw, internal).eq(pulse)
                else:  # W1C: sticky; an event in the same cycle as the clear wins.
                    assert f.hw is not None
                    flag = Signal(f.width, init=f.reset, name=fname)
                    cleared = Mux(written, wd & wm, 0)
                    m.d.sync += flag.eq((flag & ~cleared) | self._resolve(f.hw, internal))
                    m.d.comb += value[lo:hi].eq(flag)
                    storage[(reg.block.name, reg.register.name, f.name)] = flag
            if reg.register.read_action is not None:
                m.d.comb += self._resolve(reg.register.read_action, internal).eq(rd & hit[reg])
            if reg.register.write_action is not None:
                m.d.comb += self._resolve(reg.register.write_action, internal).eq(written)
        read_value = Signal(REG_BITS)
        with m.Switch(word):
            for reg in mm.registers:
                if reg.register.readable:
                    with m.Case(reg.address // 4):
                        m.d.comb += read_value.eq(values[reg])

        # Response: one cycle after gnt; rdata is 0 for writes and unmapped reads.
        m.d.sync += [
            bus.rvalid.eq(accept),
            bus.rdata.eq(Mux(rd, read_value, 0)),
        ]

        # ---------------------------------------------------------------- engine
        # JOB_PUSH offers the staged job on `jobs`; with the queue full it stays
        # pending until taken. CLEAR drops a pending push (the engine drops its queue in
        # the same cycle). The engine drops jobs accepted while it drains a clear, so a
        # push made after a CLEAR waits until `status.busy` has fallen: `status.busy` is
        # high from the cycle after `clear` until the drain is over.
        e_pending = Signal()
        e_clear_wait = Signal()
        e_offer = internal[Internal.ENGINE_PUSH_PENDING]
        m.d.comb += [
            e_offer.eq(e_pending | internal[Internal.ENGINE_PUSH]),
            eng.jobs.valid.eq(e_offer & ~eng.clear & ~e_clear_wait),
        ]
        with m.If(eng.clear):
            m.d.sync += e_pending.eq(0)
        with m.Elif(eng.jobs.valid & eng.jobs.ready):
            m.d.sync += e_pending.eq(0)
        with m.Elif(internal[Internal.ENGINE_PUSH]):
            m.d.sync += e_pending.eq(1)
        with m.If(eng.clear):
            m.d.sync += e_clear_wait.eq(1)
        with m.Elif(~eng.status.busy):
            m.d.sync += e_clear_wait.eq(0)

        m.d.sync += internal[Internal.JOBS_DONE].eq(internal[Internal.JOBS_DONE] + eng.done)
        with m.If(internal[Internal.MACS_LATCH]):
            m.d.sync += internal[Internal.MACS_HI].eq(eng.macs[32:64])
        m.d.comb += [
            internal[Internal.ENGINE_DONE].eq(eng.done),
            internal[Internal.ENGINE_ERROR].eq(eng.done & (eng.status.error != 0)),
        ]

        # ---------------------------------------------------------------- DMA
        # The same push rule. The DMA takes descriptors again from the cycle after a
        # clear, so no wait is needed here.
        d_pending = Signal()
        d_offer = internal[Internal.DMA_PUSH_PENDING]
        m.d.comb += [
            d_offer.eq(d_pending | internal[Internal.DMA_PUSH]),
            dma.cmd.valid.eq(d_offer & ~dma.clear),
        ]
        with m.If(dma.clear):
            m.d.sync += d_pending.eq(0)
        with m.Elif(dma.cmd.valid & dma.cmd.ready):
            m.d.sync += d_pending.eq(0)
        with m.Elif(internal[Internal.DMA_PUSH]):
            m.d.sync += d_pending.eq(1)

        m.d.sync += internal[Internal.DMA_DONE_COUNT].eq(
            internal[Internal.DMA_DONE_COUNT] + dma.done
        )
        m.d.comb += [
            internal[Internal.DMA_DONE].eq(dma.done),
            internal[Internal.DMA_ERROR].eq(dma.done & dma.done_error),
        ]

        # ---------------------------------------------------------------- host
        # The console byte is stored at the write's edge; valid follows one cycle later
        # with it. `ended` is sticky so that a host polling it cannot miss the end.
        m.d.sync += self.host.console_valid.eq(internal[Internal.CONSOLE_WRITE])
        with m.If(internal[Internal.EXIT_WRITE]):
            m.d.sync += self.host.ended.eq(1)

        # ---------------------------------------------------------------- irq
        status = mm.register("EVENTS", "IRQ_STATUS")
        enable = mm.register("EVENTS", "IRQ_ENABLE")
        pending = [
            storage[("EVENTS", "IRQ_STATUS", f.name)] & storage[("EVENTS", "IRQ_ENABLE", f.name)]
            for f in status.fields
        ]
        if {f.name for f in status.fields} != {f.name for f in enable.fields}:
            raise ValueError("EVENTS_IRQ_STATUS and EVENTS_IRQ_ENABLE must have the same fields")
        m.d.comb += self.irq.eq(Cat(*pending).any())
        return m
