"""OBI (Open Bus Interface) request/response signature used by every memory port.

One OBI port carries 32-bit words. Seen from the initiator (``Out(obi_signature())``):

============  ====  ===========================================================
signal        dir   meaning
============  ====  ===========================================================
``req``       out   a request is offered; ``addr``/``we``/``be``/``wdata`` are valid
``addr``      out   byte address, word aligned (``addr[1:0] == 0``)
``we``        out   1 = write, 0 = read
``be``        out   byte enables of a write (bit i enables ``wdata[8i+7:8i]``)
``wdata``     out   write data
``gnt``       in    the request is accepted in this cycle (``req & gnt``)
``rvalid``    in    the response to the oldest outstanding accepted request
``rdata``     in    read data, valid with ``rvalid`` of a read
============  ====  ===========================================================

Protocol contract (checked by the benches' protocol checkers):

- Once ``req`` is high it stays high, with ``addr``, ``we``, ``be`` and ``wdata``
  stable, until ``gnt``.
- Every accepted request, read or write, gets exactly one ``rvalid``, in order.
  There is no response back-pressure.
- Inside the cluster (L1) the response comes exactly one cycle after the grant.
"""

from __future__ import annotations

from amaranth.hdl import unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["obi_signature"]


def obi_signature(addr_bits: int = 32) -> wiring.Signature:
    """The signature of one 32-bit OBI port, from the initiator's side."""
    return wiring.Signature(
        {
            "req": Out(1),
            "addr": Out(unsigned(addr_bits)),
            "we": Out(1),
            "be": Out(4),
            "wdata": Out(32),
            "gnt": In(1),
            "rvalid": In(1),
            "rdata": In(32),
        }
    )
