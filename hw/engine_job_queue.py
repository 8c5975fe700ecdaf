"""The engine's job queue and its soft clear.

Jobs wait here in queue order until the controller takes them. A soft clear drops them,
and the jobs the engine runs, but it cannot do so at once: requests already queued on the
port lanes must complete (OBI does not allow withdrawing one) and beats in the core's
pipeline must drain. So a clear is a state, *clearing*, from the cycle after the request
until the engine has drained, and it ends with one cycle of *reset*, in which the queue
and everything else the clear drops return to their start state.
"""

from __future__ import annotations

from amaranth.hdl import Module, ResetInserter
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .job_layout import job_layout

__all__ = ["JobQueue"]


class JobQueue(wiring.Component):
    """``engine.job_queue_depth`` jobs, first in first out, and the soft clear.

    Ports
    -----
    jobs : In(stream.Signature(:func:`~tinyattn.hw.job_layout.job_layout`))
        Jobs in. ``ready`` is low while the queue is full or a clear drains: a job
        taken then would be dropped at the reset.
    head : Out(stream.Signature(:func:`~tinyattn.hw.job_layout.job_layout`))
        The oldest job; taken when ``ready``. It stays valid while a clear drains (the
        reset drops it); the taker must not take it then.
    level : Out(range(job_queue_depth + 1))
        Jobs waiting.
    clear : In(1)
        Start a soft clear (a one-cycle request).
    drained : In(1)
        Nothing the engine issued is in flight any more: a clear may complete.
    clearing : Out(1)
        A clear is draining: from the cycle after ``clear`` until ``reset``, included.
    reset : Out(1)
        The clear completes this cycle: the queue is empty in the next one, and every
        other part of the engine must return to its start state with it.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self._cfg = cfg
        depth = cfg.engine.job_queue_depth
        super().__init__(
            {
                "jobs": In(stream.Signature(job_layout(cfg))),
                "head": Out(stream.Signature(job_layout(cfg))),
                "level": Out(range(depth + 1)),
                "clear": In(1),
                "drained": In(1),
                "clearing": Out(1),
                "reset": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        layout = job_layout(self._cfg)
        m = Module()

        queue = SyncFIFO(width=layout.size, depth=self._cfg.engine.job_queue_depth)
        m.submodules.queue = ResetInserter(self.reset)(queue)
        m.d.comb += [
            queue.w_stream.payload.eq(self.jobs.payload),
            queue.w_stream.valid.eq(self.jobs.valid & ~self.clearing),
            self.jobs.ready.eq(queue.w_stream.ready & ~self.clearing),
            self.head.payload.eq(queue.r_stream.payload),
            self.head.valid.eq(queue.r_stream.valid),
            queue.r_stream.ready.eq(self.head.ready),
            self.level.eq(queue.level),
        ]

        # A request in the reset's own cycle keeps the clear on: a second reset follows
        # once the engine is drained (nothing has started in between).
        with m.If(self.clear):
            m.d.sync += self.clearing.eq(1)
        with m.Elif(self.reset):
            m.d.sync += self.clearing.eq(0)
        m.d.comb += self.reset.eq(self.clearing & self.drained)
        return m
