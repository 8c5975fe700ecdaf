"""The cores' side of the cluster: each core port decoded to L1 or to the peripherals.

Address map (32-bit byte addresses as the cores see them):

==========================  ==============================  ======================
range                       target                          notes
==========================  ==============================  ======================
``L1_BASE`` + [0, L1 size)  the core's own narrow TCDM port  word-interleaved banks
``PERIPH_BASE`` + [0, 4 KiB)  the register block             shared, round-robin
anything else               nothing                         read data 0, ``decode_error``
==========================  ==============================  ======================

Every request is granted and answered exactly one cycle after its grant, as
OBI requires, including one that decodes to nothing: such a request is granted
at once, reads as 0 and pulses ``decode_error`` (firmware sees it as the
register block's bus-error event).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .obi import obi_signature

__all__ = ["L1_BASE", "PERIPH_BASE", "PERIPH_BITS", "CoreBus"]

L1_BASE = 0x1000_0000
PERIPH_BASE = 0x1020_0000
#: Byte-address bits of the peripheral window (4 KiB).
PERIPH_BITS = 12


class CoreBus(wiring.Component):
    """``n_cores`` OBI core ports routed to L1 ports and one shared peripheral port.

    Ports
    -----
    cores : In(OBI, 32-bit addresses).array(n_cores)
    l1 : Out(OBI, L1 byte offsets).array(n_cores)
        Core ``i`` reaches L1 only through ``l1[i]`` (the TCDM's narrow port ``i``).
    periph : Out(OBI, ``PERIPH_BITS``-bit offsets)
        Shared by all cores, round-robin; the target must answer one cycle after ``gnt``.
    decode_error : Out(1)
        A request to an unmapped address was accepted this cycle.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        self.l1_bits = cfg.memory.size_bytes.bit_length() - 1
        n = cfg.interconnect.n_cores
        super().__init__(
            {
                "cores": In(obi_signature(32)).array(n),
                "l1": Out(obi_signature(self.l1_bits)).array(n),
                "periph": Out(obi_signature(PERIPH_BITS)),
                "decode_error": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        n = self.cfg.interconnect.n_cores
        size = self.cfg.memory.size_bytes
        m = Module()

        sel_l1 = [Signal(name=f"sel_l1_{i}") for i in range(n)]
        sel_p = [Signal(name=f"sel_p_{i}") for i in range(n)]
        want_p = [Signal(name=f"want_p_{i}") for i in range(n)]
        for i, core in enumerate(self.cores):
            m.d.comb += [
                sel_l1[i].eq((core.addr >= L1_BASE) & (core.addr < L1_BASE + size)),
                sel_p[i].eq(
                    (core.addr >= PERIPH_BASE) & (core.addr < PERIPH_BASE + (1 << PERIPH_BITS))
                ),
                want_p[i].eq(core.req & sel_p[i]),
            ]
            l1 = self.l1[i]
            m.d.comb += [
                l1.req.eq(core.req & sel_l1[i]),
                l1.addr.eq(core.addr - L1_BASE),
                l1.we.eq(core.we),
                l1.be.eq(core.be),
                l1.wdata.eq(core.wdata),
            ]

        # Round-robin among the cores that want the peripherals: the first one at
        # or after the pointer wins; the pointer moves past a granted winner.
        pointer = Signal(range(n))
        winner = Signal(range(n))
        any_p = Signal()
        for offset in reversed(range(n)):
            for i in range(n):
                with m.If((pointer + offset) % n == i):
                    with m.If(want_p[i]):
                        m.d.comb += [winner.eq(i), any_p.eq(1)]
        p = self.periph
        for i, core in enumerate(self.cores):
            with m.If(winner == i):
                m.d.comb += [
                    p.addr.eq(core.addr - PERIPH_BASE),
                    p.we.eq(core.we),
                    p.be.eq(core.be),
                    p.wdata.eq(core.wdata),
                ]
        m.d.comb += p.req.eq(any_p)
        with m.If(any_p & p.gnt):
            m.d.sync += pointer.eq(Mux(winner == n - 1, 0, winner + 1))

        # Grants, and where each granted request's response will come from: every
        # target answers one cycle after its grant, so one flag per core suffices.
        decode_error = []
        for i, core in enumerate(self.cores):
            unmapped = core.req & ~sel_l1[i] & ~sel_p[i]
            gnt = Mux(sel_l1[i], self.l1[i].gnt, Mux(sel_p[i], any_p & (winner == i) & p.gnt, 1))
            from_p = Signal(name=f"from_p_{i}")
            from_none = Signal(name=f"from_none_{i}")
            m.d.comb += core.gnt.eq(gnt)
            m.d.sync += [
                from_p.eq(core.req & gnt & sel_p[i]),
                from_none.eq(unmapped),
            ]
            m.d.comb += [
                core.rvalid.eq(self.l1[i].rvalid | (from_p & p.rvalid) | from_none),
                core.rdata.eq(Mux(from_p, p.rdata, Mux(from_none, 0, self.l1[i].rdata))),
            ]
            decode_error.append(unmapped)
        any_error = decode_error[0]
        for d in decode_error[1:]:
            any_error = any_error | d
        m.d.comb += self.decode_error.eq(any_error)
        return m
