"""The engine's writer: output rows from YBUF, through the epilogue, to L1."""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .engine_buffers import engine_buffers
from .engine_param_fetcher import records_layout
from .engine_port import request_signature, word_mask
from .engine_walker import COUNT_BITS, UnitWalker, job_context_signature, precedes
from .job import FLAG_AFFINE, FLAG_PER_ROW, FLAG_RELU, FLAG_RESIDUAL
from .job_layout import param_record_layout

__all__ = ["Writer"]


def _sat8(v: object) -> object:
    return Mux(v > 127, 127, Mux(v < -128, -128, v))


class Writer(wiring.Component):
    """Writes each output unit's rows to L1, one row a cycle, as soon as they are complete.

    Between YBUF and L1 a GEMM row gets its epilogue (see ``docs/arithmetic.md``): the
    residual add (``FLAG_RESIDUAL``), the per-channel affine (``FLAG_AFFINE``) and, after
    either, the ReLU (without them the core applies it). QK units write nothing.

    Ports
    -----
    ctrl : In(:func:`~tinyattn.hw.engine_walker.job_context_signature`)
    outputs_full, output_rows : In
        The collector's counts: output units complete in YBUF, and complete rows of the
        unit being filled.
    records : In(:func:`~tinyattn.hw.engine_param_fetcher.records_layout`)
        ``gamma`` and ``beta`` of the affine epilogue.
    ybuf : In(YBUF's read port signature, :mod:`~tinyattn.hw.engine_buffers`)
    residual : In(stream of ``vec_len`` bytes)
        The residual rows, in output order (taken only with ``FLAG_RESIDUAL``).
    hold : In(1)
        Writes of the previous job have not all landed: write nothing. Lanes run apart,
        so a row of this job could otherwise reach a byte on one lane before the previous
        job's write of it on another.
    request : Out(:func:`~tinyattn.hw.engine_port.request_signature`)
        One output row a request (a write).
    freed : Out(COUNT_BITS)
        Output units completely written (since the reset): their YBUF slot and
        parameter slot are free.
    finished : Out(1)
        The port took the last output row of the writer's job in this cycle: the job's
        writes are all issued, and the writer moves on to the next job.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self._cfg = cfg
        e = cfg.engine
        super().__init__(
            {
                "ctrl": In(job_context_signature(cfg)),
                "outputs_full": In(COUNT_BITS),
                "output_rows": In(range(e.tile_m + 1)),
                "records": In(records_layout(cfg)),
                "ybuf": In(engine_buffers(cfg)["ybuf"].read_signature()),
                "residual": In(stream.Signature(unsigned(e.vec_len * 8))),
                "hold": In(1),
                "request": Out(request_signature(cfg)),
                "freed": Out(COUNT_BITS),
                "finished": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        cfg = self._cfg
        e = cfg.engine
        vec_len, tile_m = e.vec_len, e.tile_m
        m = Module()
        m.submodules.walker = walker = UnitWalker(cfg)
        wiring.connect(m, wiring.flipped(self.ctrl), walker.ctrl)
        job = walker.job
        per_row = (job.flags & FLAG_PER_ROW) != 0
        residual_en = (job.flags & FLAG_RESIDUAL) != 0
        affine_en = (job.flags & FLAG_AFFINE) != 0
        relu_en = (job.flags & FLAG_RELU) != 0
        post_en = residual_en | affine_en

        row = Signal(range(tile_m))
        loaded = Signal()  # ybuf.data holds row `row`
        last_row = row == walker.rows - 1

        # Row r of the writer's unit is complete in YBUF (written in an earlier cycle).
        def row_full(r: object) -> object:
            return precedes(walker.out_index, self.outputs_full) | (
                (walker.out_index == self.outputs_full) & (r < self.output_rows)
            )

        # While row r is being written, read row r + 1 if it is complete: one row
        # a cycle within a unit, and as fast as the rows complete in its last block.
        read_next = Signal()
        slot = walker.out_index[0]
        record_layout = param_record_layout()
        params = [list(self.records[s]) for s in range(2)]
        row_record = Signal(record_layout)
        m.d.comb += [
            row_record.eq(Array([Array(params[0]), Array(params[1])])[slot][row]),
            self.ybuf.addr.eq(Cat(Mux(read_next, row + 1, row)[: len(row)], slot)),
            self.ybuf.en.eq(~loaded | read_next),
        ]
        with m.If(self.ctrl.go & walker.active & walker.is_qk):
            m.d.comb += walker.step.eq(1)  # QK units write nothing
        have_row = walker.active & walker.outputs & row_full(row)
        with m.If(have_row & ~loaded):
            m.d.sync += loaded.eq(1)
        residual_ok = ~residual_en | self.residual.valid

        # The epilogue, lane by lane.
        y_in = data.ArrayLayout(signed(8), vec_len)(self.ybuf.data)
        res_in = data.ArrayLayout(signed(8), vec_len)(self.residual.payload)
        y_out = Signal(data.ArrayLayout(signed(8), vec_len))
        half_res = (Const(1, unsigned(32)) << job.res_shift) >> 1
        half_aff = (Const(1, unsigned(32)) << job.aff_shift) >> 1
        for c in range(vec_len):
            v1 = Signal(signed(8), name=f"post_res{c}")
            v2 = Signal(signed(8), name=f"post_aff{c}")
            # Named intermediates: each is used three times by the saturation.
            rs = Signal(signed(20), name=f"post_rsum{c}")
            m.d.comb += rs.eq(
                (job.res_y_mult * y_in[c] + job.res_r_mult * res_in[c] + half_res) >> job.res_shift
            )
            m.d.comb += v1.eq(Mux(residual_en, _sat8(rs), y_in[c]))
            channel = Mux(slot, params[1][c].as_value(), params[0][c].as_value())
            record = record_layout(Mux(per_row, row_record.as_value(), channel))
            af = Signal(signed(35), name=f"post_asum{c}")
            m.d.comb += af.eq((record.gamma * v1 + record.beta + half_aff) >> job.aff_shift)
            m.d.comb += v2.eq(Mux(affine_en, _sat8(af), v1))
            m.d.comb += y_out[c].eq(Mux(post_en & relu_en & (v2 < 0), 0, v2))

        request = self.request
        accepted = request.valid & request.ready
        m.d.comb += [
            request.valid.eq(self.ctrl.go & have_row & loaded & residual_ok & ~self.hold),
            request.payload.addr.eq(
                Mux(
                    walker.is_pv,
                    job.c_addr + walker.head * job.c_hstride + (walker.m0 + row) * job.c_stride,
                    job.c_addr + (walker.m0 + row) * job.c_stride + walker.n0,
                )
            ),
            request.payload.we.eq(1),
            request.payload.mask.eq(word_mask(m, (walker.cols + 3) >> 2, e.port_lanes)),
            request.payload.wdata.eq(y_out.as_value()),
            self.residual.ready.eq(accepted & residual_en),
            read_next.eq(accepted & ~last_row & row_full(row + 1)),
        ]
        with m.If(accepted):
            # Still loaded if the next row of the unit was read in this cycle.
            m.d.sync += loaded.eq(read_next)
            with m.If(last_row):
                m.d.sync += [row.eq(0), self.freed.eq(self.freed + 1)]
                m.d.comb += [walker.step.eq(1), self.finished.eq(walker.last)]
            with m.Else():
                m.d.sync += row.eq(row + 1)

        with m.If(self.ctrl.reset):
            m.d.sync += [s.eq(0) for s in (row, loaded, self.freed)]
        return m
