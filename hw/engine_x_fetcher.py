"""The engine's X fetcher: chunks of X (GEMM) or Q (QK) rows from L1 into XBUF."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .engine_buffers import engine_buffers
from .engine_port import ReadTag, request_signature, response_signature, word_mask
from .engine_walker import COUNT_BITS, UnitWalker, job_context_signature, precedes
from .wide_port import MAX_READS

__all__ = ["XFetcher"]


class XFetcher(wiring.Component):
    """Loads each ``vec_len`` chunk of the unit's operand rows into XBUF, two chunks ahead.

    GEMM tiles read X rows, chunk by chunk of the reduction axis; a QK unit reads its
    query rows (one chunk: the head dimension). PV units take their operands from the
    logits, so this part skips them. Chunk ``c`` (counted over every job since the reset) lands
    in slot ``c % 2`` of XBUF, row ``r`` at address ``Cat(r, slot)``.

    Ports
    -----
    ctrl : In(:func:`~tinyattn.hw.engine_walker.job_context_signature`)
    used : In(COUNT_BITS)
        Chunks the issuer has finished with. Chunk ``c`` is fetched once ``c < used + 2``.
    loaded : Out(COUNT_BITS)
        Chunks completely in XBUF.
    rows : Out(range(tile_m + 1))
        Rows of chunk ``loaded`` (the one being filled) already in XBUF: the issuer may
        start on a chunk's first rows before its last ones arrive.
    request : Out(:func:`~tinyattn.hw.engine_port.request_signature`)
        One row chunk a request, tagged :attr:`ReadTag.X`.
    response : In(:func:`~tinyattn.hw.engine_port.response_signature`)
    xbuf : In(XBUF's ``WritePort.Signature``)
        See :mod:`~tinyattn.hw.engine_buffers`.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self._cfg = cfg
        e = cfg.engine
        self._xbuf = engine_buffers(cfg)["xbuf"]
        super().__init__(
            {
                "ctrl": In(job_context_signature(cfg)),
                "used": In(COUNT_BITS),
                "loaded": Out(COUNT_BITS),
                "rows": Out(range(e.tile_m + 1)),
                "request": Out(request_signature(cfg)),
                "response": In(response_signature(cfg)),
                "xbuf": In(self._xbuf.write_signature()),
            }
        )

    def elaborate(self, platform: object) -> Module:
        e = self._cfg.engine
        lanes, vec_len, tile_m = e.port_lanes, e.vec_len, e.tile_m
        m = Module()
        m.submodules.walker = walker = UnitWalker(self._cfg)
        wiring.connect(m, wiring.flipped(self.ctrl), walker.ctrl)
        job = walker.job

        # What each outstanding read is for, in issue order.
        dest_layout = data.StructLayout({"row": range(self._xbuf.depth), "last": 1})
        m.submodules.dest = dest = SyncFIFOBuffered(width=dest_layout.size, depth=MAX_READS + 1)

        chunk_in_unit = Signal(16)
        row = Signal(range(tile_m))
        chunk = Signal(COUNT_BITS)  # chunks requested since the reset (GEMM and QK units)
        words = Mux(chunk_in_unit == walker.chunks - 1, walker.last_words, lanes)
        last_row = row == walker.rows - 1
        addr = Mux(
            walker.is_qk,
            job.a_addr + walker.head * job.a_hstride + (walker.m0 + row) * job.a_stride,
            job.a_addr + (walker.m0 + row) * job.a_stride + chunk_in_unit * vec_len,
        )
        request = self.request
        accepted = request.valid & request.ready
        dest_in = Signal(dest_layout)
        m.d.comb += [
            request.valid.eq(
                self.ctrl.go
                & walker.active
                & ~walker.is_pv
                & precedes(chunk, self.used + 2)
                & dest.w_stream.ready
            ),
            request.payload.addr.eq(addr),
            request.payload.we.eq(0),
            request.payload.mask.eq(word_mask(m, words, lanes)),
            request.payload.tag.eq(ReadTag.X),
            dest_in.row.eq(Cat(row, chunk[0])),
            dest_in.last.eq(last_row),
            dest.w_stream.payload.eq(dest_in),
            dest.w_stream.valid.eq(accepted),
        ]
        with m.If(self.ctrl.go & walker.active & walker.is_pv):
            m.d.comb += walker.step.eq(1)  # PV units take their operands from LOGITS
        with m.If(accepted):
            with m.If(last_row):
                m.d.sync += [row.eq(0), chunk.eq(chunk + 1)]
                with m.If(chunk_in_unit == walker.chunks - 1):
                    m.d.sync += chunk_in_unit.eq(0)
                    m.d.comb += walker.step.eq(1)
                with m.Else():
                    m.d.sync += chunk_in_unit.eq(chunk_in_unit + 1)
            with m.Else():
                m.d.sync += row.eq(row + 1)

        # Read data: into XBUF, at the row the request was made for.
        response = self.response
        dest_out = dest_layout(dest.r_stream.payload)
        m.d.comb += [
            self.xbuf.addr.eq(dest_out.row),
            self.xbuf.data.eq(response.payload),
            self.xbuf.en.eq(response.valid),
            dest.r_stream.ready.eq(response.valid),
        ]
        with m.If(response.valid):
            m.d.sync += self.rows.eq(Mux(dest_out.last, 0, self.rows + 1))
        with m.If(response.valid & dest_out.last):
            m.d.sync += self.loaded.eq(self.loaded + 1)

        with m.If(self.ctrl.reset):
            m.d.sync += [s.eq(0) for s in (chunk_in_unit, row, chunk, self.rows, self.loaded)]
        return m
