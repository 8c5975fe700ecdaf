"""The cores' side of the cluster: each core port decoded to L1 or to the peripherals.

Address map (32-bit byte addresses as the cores see them):

=============================  ================================  =========================
range                          target                            notes
=============================  ================================  =========================
``L1_BASE`` + [0, L1 size)     the core's own narrow TCDM port    word-interleaved banks
``PERIPH_BASE`` + [0, 4 KiB)   the peripheral port                shared, round-robin
anything else                  the peripheral port, redirected    reads 0, ``decode_error``
=============================  ================================  =========================

``L1_BASE`` and ``PERIPH_BASE`` are 2 MiB apart, so L1 may be at most 2 MiB; a larger
configuration is rejected with a :class:`~tinyattn.config.ConfigError`.

An access to an unmapped address is not answered here: it is passed to the peripheral
port as a *read* of ``UNMAPPED_OFFSET`` (the last word of the peripheral window), which
the peripheral target must leave unmapped. The register block answers such a read with
0 and sets its sticky ``EVENTS_IRQ_STATUS.BUS_ERROR`` flag, so firmware sees a decode
error exactly as it sees an access to an unmapped register (and can take an interrupt
on it). A write to an unmapped address therefore never writes anything, anywhere.
``decode_error`` pulses in the cycle such an access is granted.

Peripheral arbitration: round-robin, one access per cycle; the pointer moves past the
selected core in every cycle with a request, granted or not, so a write the register
block holds (``gnt`` low while a push is pending) does not block the other cores.

Timing: every target answers exactly one cycle after its grant (the TCDM and the
register block both do), so each core's responses come back in order with no queue:
a flag per core remembers whether the response of the cycle comes from the
peripheral port. ``gnt`` is combinational (from the L1 port or from the peripheral
arbiter and the register block's ``gnt``); a core must not derive ``req`` from it.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig, ConfigError

from .interconnect import _round_robin
from .obi import obi_signature

__all__ = [
    "L1_BASE",
    "L1_WINDOW",
    "PERIPH_BASE",
    "PERIPH_BITS",
    "PRIVATE_BASE",
    "UNMAPPED_OFFSET",
    "CoreBus",
    "check_l1_window",
]

#: Core address of each RISC-V core's private memory (its reset vector).
PRIVATE_BASE = 0x0000_0000
L1_BASE = 0x1000_0000
PERIPH_BASE = 0x1020_0000
#: Byte-address bits of the peripheral window (4 KiB).
PERIPH_BITS = 12
#: Peripheral-window offset an unmapped access is redirected to (must hold no register).
UNMAPPED_OFFSET = (1 << PERIPH_BITS) - 4
#: Largest L1 that fits below the peripheral window.
L1_WINDOW = PERIPH_BASE - L1_BASE


def check_l1_window(cfg: ClusterConfig) -> None:
    """Raise :class:`~tinyattn.config.ConfigError` if L1 does not fit below ``PERIPH_BASE``."""
    size = cfg.memory.size_bytes
    if size > L1_WINDOW:
        raise ConfigError(
            "memory.bank_words",
            cfg.memory.bank_words,
            f"L1 of {size} bytes does not fit the {L1_WINDOW} byte window between "
            f"L1_BASE {L1_BASE:#x} and PERIPH_BASE {PERIPH_BASE:#x}",
        )


class CoreBus(wiring.Component):
    """``n_cores`` OBI core ports routed to L1 ports and one shared peripheral port.

    Ports
    -----
    cores : In(OBI, 32-bit addresses).array(n_cores)
    l1 : Out(OBI, L1 byte offsets).array(n_cores)
        Core ``i`` reaches L1 only through ``l1[i]`` (the TCDM's narrow port ``i``).
    periph : Out(OBI, ``PERIPH_BITS``-bit offsets)
        Shared by all cores, round-robin; the target must answer one cycle after
        ``gnt`` and must treat ``UNMAPPED_OFFSET`` as an unmapped address.
    decode_error : Out(1)
        A request to an unmapped address was granted this cycle.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        check_l1_window(cfg)
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

        # Decode. Both windows are aligned to their (power-of-two) size, so a compare
        # of the upper address bits suffices.
        sel_l1 = [Signal(name=f"sel_l1_{i}") for i in range(n)]
        sel_p = [Signal(name=f"sel_p_{i}") for i in range(n)]
        want_p = Signal(n)  # the request goes to the peripheral port (mapped or not)
        for i, core in enumerate(self.cores):
            m.d.comb += [
                sel_l1[i].eq(core.addr[self.l1_bits :] == L1_BASE >> self.l1_bits),
                sel_p[i].eq(core.addr[PERIPH_BITS:] == PERIPH_BASE >> PERIPH_BITS),
                want_p[i].eq(core.req & ~sel_l1[i]),
            ]
            l1 = self.l1[i]
            m.d.comb += [
                l1.req.eq(core.req & sel_l1[i]),
                l1.addr.eq(core.addr[: self.l1_bits]),
                l1.we.eq(core.we),
                l1.be.eq(core.be),
                l1.wdata.eq(core.wdata),
            ]
        assert L1_BASE % size == 0 and PERIPH_BASE % (1 << PERIPH_BITS) == 0

        # Round-robin among the cores that want the peripheral port: the first one
        # after the last selected core. The pointer moves past the selected core even
        # when the register block withholds its gnt (a write waiting on a pending push),
        # so that such a write does not block the other cores' accesses: it is offered
        # again when its turn comes back, at most n_cores cycles later.
        p = self.periph
        grant = _round_robin(m, "periph", want_p, want_p.any())
        addr = Const(0, PERIPH_BITS)
        we = be = wdata = Const(0)
        for i, core in enumerate(self.cores):
            # Unmapped: a read of UNMAPPED_OFFSET (no side effect, reads 0, bus error).
            a = Mux(sel_p[i], core.addr[:PERIPH_BITS], UNMAPPED_OFFSET)
            addr = addr | Mux(grant[i], a, 0)
            we = we | (grant[i] & sel_p[i] & core.we)
            be = be | Mux(grant[i], core.be, 0)
            wdata = wdata | Mux(grant[i], core.wdata, 0)
        m.d.comb += [
            p.req.eq(want_p.any()),
            p.addr.eq(addr),
            p.we.eq(we),
            p.be.eq(be),
            p.wdata.eq(wdata),
        ]

        # Grants, and where each granted request's response will come from: every
        # target answers one cycle after its grant, so one flag per core suffices.
        errors = []
        for i, core in enumerate(self.cores):
            gnt = Signal(name=f"gnt_{i}")
            from_p = Signal(name=f"from_p_{i}")
            m.d.comb += [
                gnt.eq(Mux(sel_l1[i], self.l1[i].gnt, grant[i] & p.gnt)),
                core.gnt.eq(gnt),
            ]
            m.d.sync += from_p.eq(core.req & gnt & ~sel_l1[i])
            m.d.comb += [
                core.rvalid.eq(self.l1[i].rvalid | (from_p & p.rvalid)),
                core.rdata.eq(Mux(from_p, p.rdata, self.l1[i].rdata)),
            ]
            errors.append(core.req & gnt & ~sel_l1[i] & ~sel_p[i])
        m.d.comb += self.decode_error.eq(Cat(*errors).any())
        return m
