"""The engine's residual fetcher: each GEMM tile's residual rows, for the writer's add."""

from __future__ import annotations

from amaranth.hdl import Module, ResetInserter, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .engine_port import ReadTag, request_signature, response_signature, word_mask
from .engine_walker import UnitWalker, job_context_signature
from .job import FLAG_RESIDUAL
from .job_layout import JobOp

__all__ = ["ResidualFetcher"]


class ResidualFetcher(wiring.Component):
    """Fetches the residual rows of a GEMM with ``FLAG_RESIDUAL``, one tile at a time.

    A tile's rows are fetched while it computes (once every earlier tile is complete in
    YBUF), and up to a whole tile of them is held: the writer then streams one output
    row a cycle, as without a residual (a few rows of room made each residual row cost
    a read and a write at the end).

    Ports
    -----
    ctrl : In(:func:`~tinyattn.hw.engine_walker.job_context_signature`)
    flush : In(1)
        Drop the rows held (soft clear, once the port is idle).
    outputs_full : In(20)
        Output units complete in YBUF (the collector's count): tile ``t`` is fetched
        once ``t <= outputs_full``.
    request : Out(:func:`~tinyattn.hw.engine_port.request_signature`)
        One residual row a request, tagged :attr:`ReadTag.RESIDUAL`.
    response : In(:func:`~tinyattn.hw.engine_port.response_signature`)
    rows : Out(stream of ``vec_len`` bytes)
        The residual rows, in output order, to the writer.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self._cfg = cfg
        super().__init__(
            {
                "ctrl": In(job_context_signature(cfg)),
                "flush": In(1),
                "outputs_full": In(20),
                "request": Out(request_signature(cfg)),
                "response": In(response_signature(cfg)),
                "rows": Out(stream.Signature(unsigned(cfg.engine.vec_len * 8))),
            }
        )

    def elaborate(self, platform: object) -> Module:
        e = self._cfg.engine
        tile_m, lanes = e.tile_m, e.port_lanes
        job = self.ctrl.job
        m = Module()
        m.submodules.walker = walker = UnitWalker(self._cfg)
        wiring.connect(m, wiring.flipped(self.ctrl), walker.ctrl)

        rows = SyncFIFOBuffered(width=e.vec_len * 8, depth=tile_m + 1)
        m.submodules.rows = ResetInserter(self.flush)(rows)
        row = Signal(range(tile_m))
        pending = Signal(range(tile_m + 2))  # rows requested and not yet taken by the writer

        request = self.request
        accepted = request.valid & request.ready
        m.d.comb += [
            request.valid.eq(
                self.ctrl.go
                & ((job.flags & FLAG_RESIDUAL) != 0)
                & (job.op != JobOp.ATTENTION)
                & ~walker.done
                & (walker.index <= self.outputs_full)
                & (pending < tile_m)
            ),
            request.payload.addr.eq(job.d_addr + (walker.m0 + row) * job.d_stride + walker.n0),
            request.payload.we.eq(0),
            request.payload.mask.eq(word_mask(m, (walker.cols + 3) >> 2, lanes)),
            request.payload.tag.eq(ReadTag.RESIDUAL),
        ]
        with m.If(accepted):
            with m.If(row == walker.rows - 1):
                m.d.sync += row.eq(0)
                m.d.comb += walker.step.eq(1)
            with m.Else():
                m.d.sync += row.eq(row + 1)

        taken = self.rows.valid & self.rows.ready
        m.d.comb += [
            rows.w_stream.payload.eq(self.response.payload),
            rows.w_stream.valid.eq(self.response.valid),
        ]
        wiring.connect(m, rows.r_stream, wiring.flipped(self.rows))
        with m.If(accepted & ~taken):
            m.d.sync += pending.eq(pending + 1)
        with m.Elif(taken & ~accepted):
            m.d.sync += pending.eq(pending - 1)
        # The flush drops the rows held, and with them their claim on the room: else
        # a clear with a tile's rows held left the next residual job no room at all
        # (it waited for rows it could never fetch). Flushed only when the port is
        # idle, so no row is still on its way.
        with m.If(self.flush):
            m.d.sync += pending.eq(0)

        with m.If(~self.ctrl.active):
            m.d.sync += row.eq(0)
        return m
