"""The engine's weight fetcher: weight blocks from L1 into the compute core's two banks."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .compute_core import weight_layout
from .engine_port import ReadTag, request_signature, response_signature, word_mask
from .engine_walker import COUNT_BITS, UnitWalker, job_context_signature, precedes
from .wide_port import MAX_READS

__all__ = ["WeightFetcher"]


class WeightFetcher(wiring.Component):
    """Loads block after block of weight vectors into the core's banks, two blocks ahead.

    A *block* is the weight vectors of ``n_pe`` output columns for one ``vec_len``
    chunk of the reduction axis: rows of Wᵀ (GEMM), key rows (QK) or rows of Vᵀ (PV).
    Block ``b`` goes to bank ``b % 2``; blocks are counted over every job since the
    reset, so the next job's first blocks load while the current job's last ones compute.
    A QK block with split ``s`` holds ``s * n_pe`` key rows: key ``i`` of the block into
    segment ``i // n_pe`` of unit ``i % n_pe``, one key row (``k`` bytes) a request.

    Ports
    -----
    ctrl : In(:func:`~tinyattn.hw.engine_walker.job_context_signature`)
    used : In(COUNT_BITS)
        Blocks the issuer has finished with. Block ``b`` is fetched once
        ``b < used + 2`` (its bank is free).
    loaded : Out(COUNT_BITS)
        Blocks completely written into their bank.
    request : Out(:func:`~tinyattn.hw.engine_port.request_signature`)
        One weight vector (one beat) a request, tagged :attr:`ReadTag.WEIGHTS`.
    response : In(:func:`~tinyattn.hw.engine_port.response_signature`)
        The read data of the requests, in order.
    weights : Out(stream of :func:`~tinyattn.hw.compute_core.weight_layout`)
        To the core's ``weights`` (whose ``ready`` is always 1).
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self._cfg = cfg
        super().__init__(
            {
                "ctrl": In(job_context_signature(cfg)),
                "used": In(COUNT_BITS),
                "loaded": Out(COUNT_BITS),
                "request": Out(request_signature(cfg)),
                "response": In(response_signature(cfg)),
                "weights": Out(stream.Signature(weight_layout(cfg.engine))),
            }
        )

    def elaborate(self, platform: object) -> Module:
        e = self._cfg.engine
        n_pe, lanes, vec_len = e.n_pe, e.port_lanes, e.vec_len
        m = Module()
        m.submodules.walker = walker = UnitWalker(self._cfg)
        wiring.connect(m, wiring.flipped(self.ctrl), walker.ctrl)
        job = walker.job

        # What each outstanding read is for, in issue order.
        dest_layout = data.StructLayout(
            {
                "unit": range(n_pe),
                "segment": range(e.max_split),
                "split": range(e.max_split.bit_length()),
                "bank": 1,
                "last": 1,
            }
        )
        m.submodules.dest = dest = SyncFIFOBuffered(width=dest_layout.size, depth=MAX_READS + 1)

        chunk = Signal(16)  # chunk of the reduction axis within the unit
        block_in_chunk = Signal(range(max(vec_len, e.max_seq) // n_pe))
        # Weight vector within the block: core unit ``vector % n_pe``, segment ``vector // n_pe``.
        vector = Signal(range(e.max_split * n_pe))
        block = Signal(COUNT_BITS)  # blocks requested since the reset

        block_cols = Signal(range(e.max_split * n_pe + 1))
        m.d.comb += block_cols.eq(n_pe << walker.split)
        first_col = block_in_chunk * block_cols
        vectors = Mux(walker.cols - first_col > block_cols, block_cols, walker.cols - first_col)
        words = Mux(chunk == walker.chunks - 1, walker.last_words, lanes)
        last_unit = vector == vectors - 1
        row = first_col + vector
        unit_bits = (n_pe - 1).bit_length()
        addr = Mux(
            walker.is_qk,
            job.b_addr + walker.head * job.b_hstride + row * job.b_stride,
            Mux(
                walker.is_pv,
                job.d_addr + walker.head * job.d_hstride + row * job.d_stride + chunk * vec_len,
                job.b_addr + (walker.n0 + row) * job.b_stride + chunk * vec_len,
            ),
        )
        request = self.request
        accepted = request.valid & request.ready
        dest_in = Signal(dest_layout)
        m.d.comb += [
            request.valid.eq(
                self.ctrl.go & walker.active & precedes(block, self.used + 2) & dest.w_stream.ready
            ),
            request.payload.addr.eq(addr),
            request.payload.we.eq(0),
            request.payload.mask.eq(word_mask(m, words, lanes)),
            request.payload.tag.eq(ReadTag.WEIGHTS),
            dest_in.unit.eq(vector[:unit_bits] if unit_bits else 0),
            dest_in.segment.eq(vector >> unit_bits),
            dest_in.split.eq(walker.split),
            dest_in.bank.eq(block[0]),
            dest_in.last.eq(last_unit),
            dest.w_stream.payload.eq(dest_in),
            dest.w_stream.valid.eq(accepted),
        ]
        # Walk unit by unit, block by block, chunk by chunk, then to the next unit.
        with m.If(accepted):
            with m.If(last_unit):
                m.d.sync += [vector.eq(0), block.eq(block + 1)]
                with m.If(block_in_chunk == walker.blocks - 1):
                    m.d.sync += block_in_chunk.eq(0)
                    with m.If(chunk == walker.chunks - 1):
                        m.d.sync += chunk.eq(0)
                        m.d.comb += walker.step.eq(1)
                    with m.Else():
                        m.d.sync += chunk.eq(chunk + 1)
                with m.Else():
                    m.d.sync += block_in_chunk.eq(block_in_chunk + 1)
            with m.Else():
                m.d.sync += vector.eq(vector + 1)

        # Read data: straight into the core's bank.
        response = self.response
        dest_out = dest_layout(dest.r_stream.payload)
        m.d.comb += [
            self.weights.valid.eq(response.valid),
            self.weights.payload.w.eq(response.payload),
            self.weights.payload.unit.eq(dest_out.unit),
            self.weights.payload.bank.eq(dest_out.bank),
            self.weights.payload.segment.eq(dest_out.segment),
            self.weights.payload.split.eq(dest_out.split),
            dest.r_stream.ready.eq(response.valid),
        ]
        with m.If(response.valid & dest_out.last):
            m.d.sync += self.loaded.eq(self.loaded + 1)

        with m.If(self.ctrl.reset):
            m.d.sync += [s.eq(0) for s in (chunk, block_in_chunk, vector, block, self.loaded)]
        return m
