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

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ObiArbiter", "obi_signature"]


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


class ObiArbiter(wiring.Component):
    """Several OBI initiators share one OBI target port, round-robin.

    The target must answer exactly one cycle after each grant (every cluster target
    does), so the response goes back to the initiator granted in the cycle before.
    An offered request keeps the port until it is granted, so an initiator's request
    stays stable at the target as OBI requires, also when the target withholds
    ``gnt`` (the register block does for a write behind a pending push).

    Ports
    -----
    initiators : In(obi_signature(addr_bits)).array(n)
    target : Out(obi_signature(addr_bits))
    """

    def __init__(self, n: int, addr_bits: int = 32) -> None:
        if n < 1:
            raise ValueError(f"an OBI arbiter needs at least one initiator, not {n}")
        self.n = n
        super().__init__(
            {
                "initiators": In(obi_signature(addr_bits)).array(n),
                "target": Out(obi_signature(addr_bits)),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        n, target = self.n, self.target
        req = Cat(*(i.req for i in self.initiators))
        held = Signal(n)  # the one-hot initiator offered last cycle and not granted
        last = Signal(n, init=1)  # the one-hot initiator granted last
        grant = Signal(n)
        # Round-robin: the first requester after the last winner, else the first one.
        rotated = [Cat(*(req[(start + k) % n] for k in range(n))) for start in range(n)]
        with m.If(held.any()):
            m.d.comb += grant.eq(held)
        with m.Else():
            for start in range(n):
                # After winner `start - 1`, look from `start` on.
                with m.If(last[(start - 1) % n]):
                    pick = rotated[start]
                    first = pick & (~pick + 1)
                    m.d.comb += grant.eq(Cat(*(first[(i - start) % n] for i in range(n))))
        for i, ini in enumerate(self.initiators):
            with m.If(grant[i]):
                m.d.comb += [
                    target.req.eq(ini.req),
                    target.addr.eq(ini.addr),
                    target.we.eq(ini.we),
                    target.be.eq(ini.be),
                    target.wdata.eq(ini.wdata),
                ]
            m.d.comb += ini.gnt.eq(grant[i] & target.gnt)
        accepted = target.req & target.gnt
        m.d.sync += held.eq(Cat(*(grant[i] & req[i] & ~target.gnt for i in range(n))))
        owner = Signal(n)  # granted last cycle: this cycle's response is theirs
        m.d.sync += owner.eq(Cat(*(grant[i] & accepted for i in range(n))))
        with m.If(accepted):
            m.d.sync += last.eq(grant)
        for i, ini in enumerate(self.initiators):
            m.d.comb += [
                ini.rvalid.eq(owner[i] & target.rvalid),
                ini.rdata.eq(target.rdata),
            ]
        return m
