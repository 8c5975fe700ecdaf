"""The engine's write fence: when have a finished job's writes landed in L1?

A job is reported ``done`` once its output is in L1, but the port is no longer idle
then: the next job's reads are already on the lanes. So the fence remembers, at the
cycle the writer issues a job's last row (a *mark*), how many requests each lane still
has outstanding, counts their responses down (each lane answers in order), and tells
when every lane has answered all of them. Two marks may be pending (the engine holds
two jobs); they are retired in order.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .wide_port import LANE_QUEUE

__all__ = ["WriteFence"]

#: Requests a lane can have outstanding: queued in the port, and granted awaiting rvalid.
_LANE_OUTSTANDING = 2 * LANE_QUEUE


class WriteFence(wiring.Component):
    """Per-lane counts of the requests issued before each mark that have not completed.

    Ports
    -----
    issued : In(lanes)
        Lane ``i`` took a request (read or write) into its queue this cycle.
    responded : In(lanes)
        Lane ``i`` received a response (``rvalid``) this cycle.
    mark : In(1)
        Place a mark after this cycle's requests (a job's last write was issued).
    landed : Out(1)
        The oldest pending mark's requests have all completed.
    retire : In(1)
        Drop the oldest pending mark (its job was reported); only while ``landed``.
    """

    def __init__(self, lanes: int) -> None:
        self._lanes = lanes
        super().__init__(
            {
                "issued": In(lanes),
                "responded": In(lanes),
                "mark": In(1),
                "landed": Out(1),
                "retire": In(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        lanes = self._lanes
        m = Module()
        count = range(_LANE_OUTSTANDING + 1)
        outstanding = [Signal(count, name=f"outstanding{i}") for i in range(lanes)]
        # Per mark slot: is it pending, and what each lane still owes it.
        pending = Signal(2)
        owed = [[Signal(count, name=f"owed{s}_{i}") for i in range(lanes)] for s in range(2)]
        head = Signal()  # the oldest pending mark's slot
        tail = Signal()  # the next mark's slot

        after = []  # each lane's outstanding count after this cycle
        for i in range(lanes):
            now = Signal(count, name=f"outstanding_next{i}")
            m.d.comb += now.eq(outstanding[i] + self.issued[i] - self.responded[i])
            m.d.sync += outstanding[i].eq(now)
            after.append(now)
        for s in range(2):
            for i in range(lanes):
                with m.If(self.mark & (tail == s)):
                    m.d.sync += owed[s][i].eq(after[i])
                with m.Elif(self.responded[i] & (owed[s][i] != 0)):
                    m.d.sync += owed[s][i].eq(owed[s][i] - 1)
        with m.If(self.mark):
            m.d.sync += tail.eq(~tail)
        with m.If(self.retire):
            m.d.sync += head.eq(~head)

        # pending: set by a mark, cleared by a retire (both may happen in one cycle).
        set_bits = Cat(self.mark & (tail == 0), self.mark & (tail == 1))
        clear_bits = Cat(self.retire & (head == 0), self.retire & (head == 1))
        m.d.sync += pending.eq((pending & ~clear_bits) | set_bits)

        def settled(s: int) -> object:
            return Cat(*[owed[s][i] == 0 for i in range(lanes)]).all()

        with m.If(head):
            m.d.comb += self.landed.eq(pending[1] & settled(1))
        with m.Else():
            m.d.comb += self.landed.eq(pending[0] & settled(0))
        return m
