"""The logarithmic interconnect between the cluster's initiators and the L1 banks.

Initiator ports (all OBI, :func:`tinyattn.hw.obi.obi_signature`, 32-bit words):

- ``narrow[0 .. n_cores-1]``: the cores;
- ``narrow[n_cores .. n_narrow-1]``: the DMA's ``dma_bits/32`` L1 lanes;
- ``wide[0 .. port_lanes-1]``: the engine's wide port. Its lanes normally
  address adjacent words (lane ``i`` at ``base + 4*i``), but every lane is an
  independent OBI port, routed and granted by its own address.

Addresses are L1 byte offsets of :func:`addr_bits` bits, word-interleaved::

    bank = (addr >> 2) % n_banks        row = (addr >> 2) // n_banks

``addr[1:0]`` is ignored (OBI addresses are word aligned).

Arbitration, per bank and independently for every bank, in one cycle:

1. the narrow requesters of the bank are arbitrated round-robin among
   themselves, and so are the wide lanes;
2. the wide side wins the bank over the narrow side, except when the bank's
   stall counter has reached ``max_stall``: the narrow side wins then;
3. the stall counter counts the consecutive cycles in which a narrow request
   was present at the bank and the wide side took it; it returns to 0 in any
   other cycle (the narrow side won, or no narrow request was present).

Grants are combinational (``gnt`` depends on ``req`` and ``addr`` of the same
cycle; an initiator must not derive ``req`` from ``gnt``). Every accepted
request, read or write, gets ``rvalid`` exactly one cycle after its grant, and
``rdata`` with it for reads. Since one bank serves one request per cycle and a
port has at most one request per cycle, responses can be neither lost,
duplicated nor reordered.

Worst-case wait (cycles from the first cycle of ``req`` to the cycle of ``gnt``,
0 when granted at once), with ``N = n_narrow``, ``W = port_lanes``,
``S = max_stall``; see :func:`narrow_wait_bound`, :func:`wide_wait_bound` and
``docs/interconnect.md`` for the derivation:

- a narrow port: ``N * (S + 1) - 1``
- a wide lane:   ``W + (W - 1) // S``
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .l1 import bank_signature
from .obi import obi_signature

__all__ = [
    "Interconnect",
    "addr_bits",
    "bank_of",
    "n_narrow",
    "narrow_wait_bound",
    "row_of",
    "wide_wait_bound",
]


def addr_bits(cfg: ClusterConfig) -> int:
    """Width of an L1 byte address: ``log2(memory.size_bytes)``."""
    return cfg.memory.size_bytes.bit_length() - 1


def n_narrow(cfg: ClusterConfig) -> int:
    """Narrow initiator ports: ``n_cores`` cores, then ``dma_bits // 32`` DMA lanes."""
    return cfg.interconnect.n_cores + cfg.dma.dma_bits // 32


def bank_of(cfg: ClusterConfig, addr: int) -> int:
    """Bank of L1 byte address ``addr`` (reference model of the RTL's decoding)."""
    return (addr >> 2) % cfg.memory.n_banks


def row_of(cfg: ClusterConfig, addr: int) -> int:
    """Row inside its bank of L1 byte address ``addr``."""
    return (addr >> 2) // cfg.memory.n_banks


def narrow_wait_bound(cfg: ClusterConfig) -> int:
    """Longest wait of a narrow port at a bank, in cycles: ``N * (S + 1) - 1``.

    The narrow side wins a contended bank at least once every ``S + 1`` cycles
    (the first time within ``S + 1``), and round-robin serves a waiting port
    after at most ``N - 1`` other narrow grants, so its grant is the ``N``-th.
    """
    s = cfg.interconnect.max_stall
    return n_narrow(cfg) * (s + 1) - 1


def wide_wait_bound(cfg: ClusterConfig) -> int:
    """Longest wait of a wide lane at a bank, in cycles: ``W + (W - 1) // S``.

    Round-robin among the lanes makes a lane's grant the ``W``-th wide grant at
    most; the narrow side takes the bank at most once before the first of them
    and once per ``S`` wide grants after that.
    """
    w = cfg.engine.port_lanes
    return w + (w - 1) // cfg.interconnect.max_stall


def _round_robin(m: Module, name: str, req: Value, advance: Value) -> Signal:
    """One-hot grant among the bits of ``req``, first in line the one after the last winner.

    ``prio`` marks the requesters after the last winner; the lowest of them that
    requests wins, else the lowest requester overall. The pointer moves only
    when ``advance`` says the grant was used (this side won the bank).
    """
    n = len(req)
    prio = Signal(n, name=f"{name}_prio")
    upper = Signal(n, name=f"{name}_upper")
    pick = Signal(n, name=f"{name}_pick")
    grant = Signal(n, name=f"{name}_grant")
    m.d.comb += [
        upper.eq(req & prio),
        pick.eq(Mux(upper.any(), upper, req)),
        # The lowest set bit, x & -x in two's complement (a carry chain, like a
        # priority encoder).
        grant.eq(pick & (~pick + 1)),
    ]
    with m.If(advance):
        # Everything above the winner: ~(g | (g - 1)) for a one-hot g.
        m.d.sync += prio.eq(~(grant | (grant - 1)))
    return grant


class Interconnect(wiring.Component):
    """Per-bank round-robin crossbar with wide-over-narrow priority and a stall bound.

    Ports
    -----
    narrow : ``In(obi_signature(addr_bits)).array(n_narrow)``
        The cores first, then the DMA lanes.
    wide : ``In(obi_signature(addr_bits)).array(port_lanes)``
        The engine's wide port, one OBI port per 32-bit lane.
    banks : ``Out(bank_signature(cfg.memory)).array(n_banks)``
        To :class:`tinyattn.hw.l1.L1Banks`.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        obi = obi_signature(addr_bits(cfg))
        super().__init__(
            {
                "narrow": In(obi).array(n_narrow(cfg)),
                "wide": In(obi).array(cfg.engine.port_lanes),
                "banks": Out(bank_signature(cfg.memory)).array(cfg.memory.n_banks),
            }
        )

    @property
    def n_cores(self) -> int:
        """Core ports: ``narrow[0 .. n_cores-1]``."""
        return self.cfg.interconnect.n_cores

    @property
    def n_dma_lanes(self) -> int:
        """DMA lanes: ``narrow[n_cores .. n_narrow-1]``."""
        return self.cfg.dma.dma_bits // 32

    @property
    def n_narrow(self) -> int:
        """All narrow ports: ``n_cores + n_dma_lanes``."""
        return n_narrow(self.cfg)

    @property
    def n_wide(self) -> int:
        """Lanes of the wide port: ``engine.port_lanes``."""
        return self.cfg.engine.port_lanes

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        m = Module()
        n_banks = cfg.memory.n_banks
        bank_bits = n_banks.bit_length() - 1
        max_stall = cfg.interconnect.max_stall
        narrow, wide = list(self.narrow), list(self.wide)
        ports = narrow + wide

        names = [f"narrow{i}" for i in range(len(narrow))]
        names += [f"wide{i}" for i in range(len(wide))]

        # Bank and row of every port's address: the word index's low bits pick
        # the bank, so consecutive words sit in consecutive banks. Each port's
        # request is decoded once into a one-hot bank vector; bank b's requesters
        # are then bit b of every port's vector.
        bank_sel = [p.addr[2 : 2 + bank_bits] for p in ports]
        rows = [p.addr[2 + bank_bits :] for p in ports]
        decoded = []
        fields = []  # per port, the fields a bank takes: Cat(we, be, wdata, row)
        for p, sel, row, name in zip(ports, bank_sel, rows, names, strict=True):
            onehot = Signal(n_banks, name=f"{name}_bank_req")
            packed = Signal(1 + 4 + 32 + len(row), name=f"{name}_fields")
            m.d.comb += [
                onehot.eq(Mux(p.req, Const(1, n_banks) << sel, 0)),
                packed.eq(Cat(p.we, p.be, p.wdata, row)),
            ]
            decoded.append(onehot)
            fields.append(packed)
        index_bits = max(1, (len(ports) - 1).bit_length())
        # Padded to a power of two, so that the multiplexer's case is complete.
        padding = [Const(0, len(fields[0]))] * ((1 << index_bits) - len(ports))
        fields_by_port = Array([*fields, *padding])

        gnt_bits: list[list[Value]] = [[] for _ in ports]
        for b, bank in enumerate(self.banks):
            n_req = Signal(len(narrow), name=f"bank{b}_narrow_req")
            w_req = Signal(len(wide), name=f"bank{b}_wide_req")
            m.d.comb += [
                n_req.eq(Cat(d[b] for d in decoded[: len(narrow)])),
                w_req.eq(Cat(d[b] for d in decoded[len(narrow) :])),
            ]

            # Wide over narrow, unless the narrow side has lost max_stall cycles in a row.
            stall = Signal(range(max_stall + 1), name=f"bank{b}_stall")
            n_win = Signal(name=f"bank{b}_narrow_wins")
            w_win = Signal(name=f"bank{b}_wide_wins")
            m.d.comb += [
                n_win.eq(n_req.any() & (~w_req.any() | (stall == max_stall))),
                w_win.eq(w_req.any() & ~n_win),
            ]
            m.d.sync += stall.eq(Mux(n_req.any() & w_win, stall + 1, 0))

            n_grant = _round_robin(m, f"bank{b}_narrow", n_req, n_win)
            w_grant = _round_robin(m, f"bank{b}_wide", w_req, w_win)
            n_sel = Signal(len(narrow), name=f"bank{b}_narrow_gnt")
            w_sel = Signal(len(wide), name=f"bank{b}_wide_gnt")
            m.d.comb += [n_sel.eq(Mux(n_win, n_grant, 0)), w_sel.eq(Mux(w_win, w_grant, 0))]
            sel = Cat(n_sel, w_sel)
            for i in range(len(ports)):
                gnt_bits[i].append(sel[i])

            # The bank takes the fields of the one selected port: encode the one-hot
            # `sel` (bit k of the index is the OR of the sel bits whose position has
            # bit k set), then one multiplexer of the packed fields.
            index = Signal(index_bits, name=f"bank{b}_winner")
            for k in range(index_bits):
                mask = sum(1 << i for i in range(len(ports)) if i >> k & 1)
                m.d.comb += index[k].eq((sel & mask).any())
            chosen = Signal(len(fields[0]), name=f"bank{b}_fields")
            m.d.comb += [
                chosen.eq(fields_by_port[index]),
                bank.en.eq(n_win | w_win),
                bank.we.eq(chosen[0]),
                bank.be.eq(chosen[1:5]),
                bank.wdata.eq(chosen[5:37]),
                bank.addr.eq(chosen[37:]),
            ]

        # Responses: one cycle after the grant, from the bank the request went to.
        # A port has one request in flight at most per cycle, so a flag and the
        # bank index per port route every response without a queue.
        bank_rdata = Array(bank.rdata for bank in self.banks)
        for p, bits, sel, name in zip(ports, gnt_bits, bank_sel, names, strict=True):
            resp = Signal(name=f"{name}_resp")
            resp_bank = Signal(bank_bits, name=f"{name}_resp_bank")
            m.d.comb += p.gnt.eq(Cat(*bits).any())
            m.d.sync += resp.eq(p.req & p.gnt)
            with m.If(p.req & p.gnt):
                m.d.sync += resp_bank.eq(sel)
            m.d.comb += [p.rvalid.eq(resp), p.rdata.eq(bank_rdata[resp_bank])]
        return m
