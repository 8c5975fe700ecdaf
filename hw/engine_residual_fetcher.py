"""The engine's residual fetcher: each GEMM tile's residual rows, for the writer's add."""

from __future__ import annotations

from amaranth.hdl import Module, ResetInserter, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .engine_port import ReadTag, request_signature, response_signature, word_mask
from .engine_walker import COUNT_BITS, UnitWalker, job_context_signature, precedes
from .job import FLAG_RESIDUAL
from .job_layout import JobOp

__all__ = ["ResidualFetcher"]


class ResidualFetcher(wiring.Component):
    """Fetches the residual rows of a GEMM with ``FLAG_RESIDUAL``, one tile at a time.

    A tile's rows are fetched while it computes (once every earlier tile is complete in
    YBUF), and up to a whole tile of them is held: the writer then streams one output
    row a cycle, as without a residual (a few rows of room made each residual row cost
    a read and a write at the end). The units of jobs without a residual are stepped
    over, one a cycle.

    Ports
    -----
    ctrl : In(:func:`~tinyattn.hw.engine_walker.job_context_signature`)
        ``ctrl.reset`` (soft clear, once the port is idle) drops the rows held.
    outputs_full : In(COUNT_BITS)
        Output units complete in YBUF (the collector's count): tile ``t`` (output units
        counted since the reset) is fetched once ``t <= outputs_full``.
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
                "outputs_full": In(COUNT_BITS),
                "request": Out(request_signature(cfg)),
                "response": In(response_signature(cfg)),
                "rows": Out(stream.Signature(unsigned(cfg.engine.vec_len * 8))),
            }
        )

    def elaborate(self, platform: object) -> Module:
        e = self._cfg.engine
        tile_m, lanes = e.tile_m, e.port_lanes
        m = Module()
        m.submodules.walker = walker = UnitWalker(self._cfg)
        wiring.connect(m, wiring.flipped(self.ctrl), walker.ctrl)
        job = walker.job
        residual_en = ((job.flags & FLAG_RESIDUAL) != 0) & (job.op != JobOp.ATTENTION)

        rows = SyncFIFOBuffered(width=e.vec_len * 8, depth=tile_m + 1)
        m.submodules.rows = ResetInserter(self.ctrl.reset)(rows)
        row = Signal(range(tile_m))
        pending = Signal(range(tile_m + 2))  # rows requested and not yet taken by the writer

        request = self.request
        accepted = request.valid & request.ready
        m.d.comb += [
            request.valid.eq(
                self.ctrl.go
                & residual_en
                & walker.active
                & ~precedes(self.outputs_full, walker.out_index)
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
        with m.If(self.ctrl.go & walker.active & ~residual_en):
            m.d.comb += walker.step.eq(1)  # no residual rows in this job

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
        # The reset drops the rows held, and with them their claim on the room: else
        # a clear with a tile's rows held left the next residual job no room at all
        # (it waited for rows it could never fetch). Reset only when the port is
        # idle, so no row is still on its way.
        with m.If(self.ctrl.reset):
            m.d.sync += [pending.eq(0), row.eq(0)]
        return m
