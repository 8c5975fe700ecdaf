"""The cluster's L1 (TCDM) storage: ``n_banks`` word-interleaved 32-bit SRAM banks.

Each bank is one :class:`amaranth.lib.memory.Memory` of ``bank_words`` 32-bit
words with a single read/write port (the request side is shared: one access per
cycle, a read or a write), byte enables of granularity 8 and a fixed read
latency of one cycle. The interleaving (which byte address lives in which bank
and row) belongs to the interconnect (``hw/interconnect.py``): this module only
sees per-bank row addresses.

Bank port, seen from the requester (``Out(bank_signature(cfg))``):

==========  ====  ==============================================================
signal      dir   meaning
==========  ====  ==============================================================
``en``      out   an access in this cycle
``we``      out   1 = write ``wdata`` under ``be``, 0 = read
``addr``    out   row (word index inside the bank), ``log2(bank_words)`` bits
``be``      out   byte enables of a write (bit i enables ``wdata[8i+7:8i]``)
``wdata``   out   write data
``rdata``   in    the word read by a read access of the previous cycle
==========  ====  ==============================================================

``rdata`` is valid exactly in the cycle after ``en & ~we``; a write does not
update it, and after any other cycle it keeps its last value. A write is
visible to a read issued from the next cycle on. The contents start at zero in
simulation (the ``initial`` block of the netlist); real SRAM starts undefined.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from tinyattn.config import MemoryConfig

__all__ = ["L1Banks", "bank_signature", "row_bits"]


def row_bits(cfg: MemoryConfig) -> int:
    """Width of a bank's row address: ``log2(bank_words)``."""
    return cfg.bank_words.bit_length() - 1


def bank_signature(cfg: MemoryConfig) -> wiring.Signature:
    """One bank's single read/write port, from the requester's side."""
    return wiring.Signature(
        {
            "en": Out(1),
            "we": Out(1),
            "addr": Out(unsigned(row_bits(cfg))),
            "be": Out(4),
            "wdata": Out(32),
            "rdata": In(32),
        }
    )


class L1Banks(wiring.Component):
    """``n_banks`` independent 32-bit banks with one-cycle reads and byte-enable writes.

    Ports
    -----
    banks : ``In(bank_signature(cfg)).array(cfg.n_banks)``
        Bank ``b``'s port; see the module docstring for the timing.
    """

    def __init__(self, cfg: MemoryConfig) -> None:
        self.cfg = cfg
        super().__init__({"banks": In(bank_signature(cfg)).array(cfg.n_banks)})

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        m = Module()
        for b, port in enumerate(self.banks):
            # init=[] fills with zeros: deterministic simulation on both simulators.
            mem = Memory(shape=32, depth=cfg.bank_words, init=[])
            m.submodules[f"bank{b}"] = mem
            # A single-port SRAM: the read and write port share the address and at
            # most one of them is enabled in a cycle, so read-during-write never occurs.
            wr = mem.write_port(granularity=8)
            rd = mem.read_port()
            m.d.comb += [
                wr.addr.eq(port.addr),
                wr.data.eq(port.wdata),
                wr.en.eq(Mux(port.en & port.we, port.be, 0)),
                rd.addr.eq(port.addr),
                # Reads are enabled only for read accesses, so rdata holds otherwise.
                rd.en.eq(port.en & ~port.we),
                port.rdata.eq(rd.data),
            ]
        return m
