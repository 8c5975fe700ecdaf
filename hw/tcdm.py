"""The TCDM: the interconnect joined to the L1 banks, as the cluster top instantiates it.

Only the initiator side is exposed; the names are those of
:class:`tinyattn.hw.interconnect.Interconnect` (``narrow__<i>__req``,
``wide__<i>__addr``, ... in the Verilog), and so is every timing rule: combinational
``gnt``, ``rvalid`` (and ``rdata`` of a read) exactly one cycle after ``gnt``.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from tinyattn.config import ClusterConfig

from .interconnect import Interconnect, addr_bits, n_narrow
from .l1 import L1Banks
from .obi import obi_signature

__all__ = ["Tcdm"]


class Tcdm(wiring.Component):
    """Interconnect + L1 banks.

    Ports
    -----
    narrow : ``In(obi_signature(addr_bits)).array(n_narrow)``
        The cores (``0 .. n_cores-1``), then the DMA lanes.
    wide : ``In(obi_signature(addr_bits)).array(engine.port_lanes)``
        The engine's wide port.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        obi = obi_signature(addr_bits(cfg))
        super().__init__(
            {
                "narrow": In(obi).array(n_narrow(cfg)),
                "wide": In(obi).array(cfg.engine.port_lanes),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.interconnect = ic = Interconnect(self.cfg)
        m.submodules.l1 = l1 = L1Banks(self.cfg.memory)
        for outer, inner in zip(self.narrow, ic.narrow, strict=True):
            wiring.connect(m, wiring.flipped(outer), inner)
        for outer, inner in zip(self.wide, ic.wide, strict=True):
            wiring.connect(m, wiring.flipped(outer), inner)
        for ic_bank, l1_bank in zip(ic.banks, l1.banks, strict=True):
            wiring.connect(m, ic_bank, l1_bank)
        return m
