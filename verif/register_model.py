"""The register block as the register map says it behaves: the bench's reference model.

- :class:`PortMap`: where a port binding of the map (``engine.status.busy``,
  ``dma.cmd.payload.rows``, ...: a :class:`~tinyattn.hw.registers.PortBinding`) sits in
  the block's flattened Verilog ports (port name, lsb, width), from the block's
  signature;
- :class:`RegModel`: the block one clock edge at a time, field by field according to
  the access mode and binding (``RW`` storage with byte enables, ``RO`` bound inputs,
  ``W1P`` pulses in the cycle after the write's grant, ``W1C`` sticky flags, set wins)
  plus the internal logic the map names (push pending/hold, done counters, MACS latch,
  events, bus errors).

Values in and out are dicts of Verilog port name -> int (the bench samples them).
Nothing here touches a simulator; :mod:`tinyattn.verif.benches.regblock_bench` runs it
as its scoreboard's reference.
"""

from __future__ import annotations

from amaranth.hdl import Shape
from amaranth.lib import data, wiring

from tinyattn.hw.cluster_registers import Internal
from tinyattn.hw.registers import (
    CONSTANT,
    Access,
    Binding,
    Field,
    InternalSignal,
    MappedRegister,
    MemoryMap,
    PortBinding,
    Ports,
)
from tinyattn.verif.obi import BE_MASKS, ObiTransaction

__all__ = ["PortMap", "RegModel", "mask_bits"]


def mask_bits(width: int) -> int:
    """``width`` one bits."""
    return (1 << width) - 1


class PortMap:
    """Where a binding of the map sits in the Verilog ports: (port name, lsb, width).

    ``bindings`` makes the bindings of the block's ports (``bindings.engine.clear``).
    """

    def __init__(self, signature: wiring.Signature) -> None:
        self.bindings = Ports(signature)
        self.members = {path: m for path, m in signature.members.flatten() if m.is_port}
        self.inputs = {
            "__".join(path): Shape.cast(m.shape).width
            for path, m in self.members.items()
            if m.flow == wiring.In and path[0] != "bus"
        }

    def locate(self, binding: PortBinding) -> tuple[str, int, int]:
        parts = binding.path
        for cut in range(len(parts), 0, -1):
            member = self.members.get(parts[:cut])
            if member is None:
                continue
            shape, lsb = member.shape, 0
            for name in parts[cut:]:
                f = data.Layout.cast(shape)[name]
                shape, lsb = f.shape, lsb + f.offset
            width = Shape.cast(shape).width
            if binding.bits is not None:
                lsb, width = lsb + binding.bits[0], binding.width
            return "__".join(parts[:cut]), lsb, width
        raise KeyError(str(binding))

    def read(self, values: dict[str, int], binding: PortBinding) -> int:
        name, lsb, width = self.locate(binding)
        return values[name] >> lsb & mask_bits(width)


class RegModel:
    """The register block as the map says it behaves, one clock edge at a time.

    :meth:`read` and :meth:`outputs` give the values during a cycle (before its edge);
    :meth:`step` applies the edge at the end of the cycle.
    """

    def __init__(self, mm: MemoryMap, ports: PortMap, addr_bits: int) -> None:
        self.mm = mm
        self.ports = ports
        self.addr_bits = addr_bits
        self.by_word = {reg.address // 4: reg for reg in mm.registers}
        self.store: dict[tuple[str, str], int] = {}
        for reg, f in mm.fields():
            if f.access in (Access.RW, Access.W1C):
                self.store[(reg.name, f.name)] = f.reset
        self.pulse: dict[Binding, int] = {}  # W1P binding -> value in this cycle
        self.e_pending = self.d_pending = self.e_clear_wait = 0
        self.jobs_done = self.dma_done_count = self.macs_hi = 0
        self.bus_error = 0
        self.status = mm.register("EVENTS", "IRQ_STATUS")
        self.enable = mm.register("EVENTS", "IRQ_ENABLE")

    def register_at(self, addr: int) -> MappedRegister | None:
        return self.by_word.get((addr & mask_bits(self.addr_bits)) >> 2)

    # -- values during the cycle ------------------------------------------------------

    def internal(self, signal: InternalSignal, inp: dict[str, int]) -> int:
        p = self.ports
        done, dma_done = inp["engine__done"], inp["dma__done"]
        values = {
            Internal.ENGINE_PUSH_PENDING: self.e_pending | self.pulse.get(Internal.ENGINE_PUSH, 0),
            Internal.DMA_PUSH_PENDING: self.d_pending | self.pulse.get(Internal.DMA_PUSH, 0),
            Internal.JOBS_DONE: self.jobs_done,
            Internal.DMA_DONE_COUNT: self.dma_done_count,
            Internal.MACS_HI: self.macs_hi,
            Internal.ENGINE_DONE: done,
            Internal.ENGINE_ERROR: done & int(p.read(inp, p.bindings.engine.status.error) != 0),
            Internal.DMA_DONE: dma_done,
            Internal.DMA_ERROR: dma_done & inp["dma__done_error"],
            Internal.BUS_ERROR: self.bus_error,
        }
        return values[signal]

    def source(self, f: Field, inp: dict[str, int]) -> int:
        if f.hw is CONSTANT:
            return f.reset
        if isinstance(f.hw, InternalSignal):
            return self.internal(f.hw, inp)
        assert isinstance(f.hw, PortBinding), f
        return self.ports.read(inp, f.hw)

    def read(self, reg: MappedRegister, inp: dict[str, int]) -> int:
        value = 0
        for f in reg.fields:
            if f.access in (Access.RW, Access.W1C):
                v = self.store[(reg.name, f.name)]
            elif f.access is Access.RO:
                v = self.source(f, inp)
            else:
                v = 0
            value |= v << f.offset
        return value

    def held(self, reg: MappedRegister, inp: dict[str, int]) -> bool:
        """A write to ``reg`` is held this cycle (no ``gnt``)."""
        signal = reg.register.stall_while
        return signal is not None and bool(self.internal(signal, inp))

    def valid(self, inp: dict[str, int]) -> tuple[int, int]:
        """(engine jobs.valid, dma cmd.valid) in this cycle."""
        ports = self.ports.bindings
        e = (
            (self.e_pending | self.pulse.get(Internal.ENGINE_PUSH, 0))
            & ~self.pulse.get(ports.engine.clear, 0)
            & ~self.e_clear_wait
            & 1
        )
        d = (
            (self.d_pending | self.pulse.get(Internal.DMA_PUSH, 0))
            & ~self.pulse.get(ports.dma.clear, 0)
            & 1
        )
        return e, d

    def outputs(self, inp: dict[str, int]) -> dict[str, int]:
        """Every output of the block except the bus response: port name -> value."""
        out: dict[str, int] = {}
        for reg, f in self.mm.fields():
            if not isinstance(f.hw, PortBinding):
                continue
            if f.access is Access.RW:
                name, lsb, _ = self.ports.locate(f.hw)
                out[name] = out.get(name, 0) | self.store[(reg.name, f.name)] << lsb
            elif f.access is Access.W1P:
                name, lsb, _ = self.ports.locate(f.hw)
                out[name] = out.get(name, 0) | self.pulse.get(f.hw, 0) << lsb
        out["engine__jobs__valid"], out["dma__cmd__valid"] = self.valid(inp)
        out["irq"] = int(
            any(
                self.store[(self.status.name, f.name)] & self.store[(self.enable.name, f.name)]
                for f in self.status.fields
            )
        )
        return out

    # -- the clock edge ---------------------------------------------------------------

    def step(self, inp: dict[str, int], txn: ObiTransaction | None) -> None:
        """Apply the edge at the end of this cycle; ``txn`` was granted in it (if any)."""
        p = self.ports
        e_valid, d_valid = self.valid(inp)
        e_clear = self.pulse.get(p.bindings.engine.clear, 0)
        d_clear = self.pulse.get(p.bindings.dma.clear, 0)
        e_push = self.pulse.get(Internal.ENGINE_PUSH, 0)
        d_push = self.pulse.get(Internal.DMA_PUSH, 0)
        if e_clear or (e_valid and inp["engine__jobs__ready"]):
            self.e_pending = 0
        elif e_push:
            self.e_pending = 1
        if e_clear:
            self.e_clear_wait = 1
        elif not p.read(inp, p.bindings.engine.status.busy):
            self.e_clear_wait = 0
        if d_clear or (d_valid and inp["dma__cmd__ready"]):
            self.d_pending = 0
        elif d_push:
            self.d_pending = 1

        reg = self.register_at(txn.addr) if txn is not None else None
        cleared: dict[str, int] = {}
        pulses: dict[Binding, int] = {}
        if txn is not None and reg is not None and txn.we:
            wmask = BE_MASKS[txn.be]
            for f in reg.fields:
                wd = txn.wdata >> f.offset & mask_bits(f.width)
                wm = wmask >> f.offset & mask_bits(f.width)
                key = (reg.name, f.name)
                if f.access is Access.RW:
                    self.store[key] = (self.store[key] & ~wm) | (wd & wm)
                elif f.access is Access.W1P:
                    assert f.hw is not None
                    pulses[f.hw] = wd & wm
                elif f.access is Access.W1C:
                    cleared[f.name] = wd & wm
        if txn is not None and reg is not None and not txn.we and reg.register.read_action:
            self.macs_hi = p.read(inp, p.bindings.engine.macs) >> 32
        for f in self.status.fields:
            key = (self.status.name, f.name)
            event = self.source(f, inp)
            self.store[key] = (self.store[key] & ~cleared.get(f.name, 0)) | event
        self.jobs_done = (self.jobs_done + inp["engine__done"]) & mask_bits(32)
        self.dma_done_count = (self.dma_done_count + inp["dma__done"]) & mask_bits(32)
        self.pulse = pulses
