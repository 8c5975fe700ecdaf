"""The cluster DMA: 2-D strided copies between L2 and the L1 (TCDM).

A transfer copies ``rows`` rows of ``row_bytes`` bytes. Row ``i`` starts at
``l2_addr + i * l2_stride`` in L2 and at ``l1_addr + i * l1_stride`` in L1; the
direction says which side is read. Descriptors (:data:`descriptor_layout`) are
queued on the ``control.cmd`` stream and run one after the other, in order.

Data path, per transfer (the same hardware serves both directions)::

    reader walker --> source requests (L2 request stream | L1 lanes)
                          |
    source beats  <-- (L2 response stream | L1 lane responses, re-assembled)
         |
    realigner + writer walker --> destination requests (L1 lanes | L2 request stream)

- A *beat* is ``dma_bits`` wide and aligned to ``dma_bits / 8`` bytes on both sides.
  L1 lane ``i`` always carries word ``i`` of a beat, i.e. the words whose address
  satisfies ``(addr // 4) % lanes == i``: a given L1 word is always accessed by the
  same lane, so accesses to one word stay in order.
- The reader walks the source rows beat by beat. The writer walks the destination
  rows and turns the source beats into destination beats with a word rotator over
  two consecutive source beats, so source and destination may sit at different word
  offsets within a beat. Partial first/last beats carry byte enables (L2) or simply
  leave the lane idle (L1).
- Both walkers move from one row to the next without a bubble.

Alignment rule: ``l1_addr``, ``l2_addr``, ``row_bytes``, ``l1_stride`` and
``l2_stride`` are multiples of 4 bytes (:data:`ALIGN_BYTES`). Everything else (row
starts and ends anywhere inside a beat, strides smaller than a row, zero strides) is
allowed; overlapping destination rows are written in row order, later rows win.

See ``docs/dma.md`` for the L2 protocol, the error codes and the clear semantics. The
alignment, directions and error codes are in :mod:`tinyattn.hw.dma_codes` (no Amaranth),
re-exported here.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from tinyattn.config import ClusterConfig

from .dma_codes import ALIGN_BYTES, Direction, DmaError
from .obi import obi_signature

__all__ = [
    "ALIGN_BYTES",
    "Direction",
    "Dma",
    "DmaError",
    "descriptor_layout",
    "dma_control_signature",
    "l2_req_layout",
    "l2_rsp_layout",
]

#: One transfer. Byte addresses and byte strides; fixed widths, independent of the config,
#: so the register map has one layout. Ranges are checked against the config at run time.
descriptor_layout = data.StructLayout(
    {
        "direction": unsigned(1),  # Direction
        "l2_addr": unsigned(32),  # first byte of row 0 in L2
        "l1_addr": unsigned(32),  # first byte of row 0 in L1 (offset from the L1 base)
        "row_bytes": unsigned(32),  # bytes per row
        "rows": unsigned(16),  # number of rows
        "l2_stride": unsigned(32),  # bytes from one row start to the next in L2
        "l1_stride": unsigned(32),  # bytes from one row start to the next in L1
    }
)


def dma_control_signature(cfg: ClusterConfig) -> wiring.Signature:
    """The DMA's control ports, seen from the controller (the register block).

    ``cmd`` (out): stream of :data:`descriptor_layout`; ``clear``, ``error_ack`` (out);
    ``done``, ``done_error``, ``busy`` (in, 1 bit), ``queue_level`` (in,
    ``range(queue_depth + 1)``), ``error`` (in, 1 bit), ``error_code`` (in, 3 bits,
    :class:`DmaError`). :class:`Dma` has it as ``control : In(...)``; see its ports.
    """
    return wiring.Signature(
        {
            "cmd": Out(stream.Signature(descriptor_layout)),
            "clear": Out(1),
            "error_ack": Out(1),
            "done": In(1),
            "done_error": In(1),
            "busy": In(1),
            "queue_level": In(range(cfg.dma.queue_depth + 1)),
            "error": In(1),
            "error_code": In(3),
        }
    )


def l2_req_layout(cfg: ClusterConfig) -> data.StructLayout:
    """One L2 request: a ``dma_bits`` beat at a beat-aligned byte address.

    ``be`` (one bit per byte) marks the bytes written (``we = 1``) or the bytes the DMA
    will use (``we = 0``; a memory may ignore it and return the whole beat).
    """
    bits = cfg.dma.dma_bits
    return data.StructLayout(
        {
            "addr": unsigned(cfg.dma.l2_addr_bits),
            "we": unsigned(1),
            "be": unsigned(bits // 8),
            "wdata": unsigned(bits),
        }
    )


def l2_rsp_layout(cfg: ClusterConfig) -> data.StructLayout:
    """One L2 response, for reads and writes alike (``rdata`` is ignored for writes)."""
    return data.StructLayout({"rdata": unsigned(cfg.dma.dma_bits)})


class Dma(wiring.Component):
    """2-D strided L2 <-> L1 DMA with a descriptor queue.

    Parameters
    ----------
    cfg : ClusterConfig
        Uses ``dma.dma_bits``, ``dma.queue_depth``, ``dma.l2_addr_bits`` and the L1
        size (``memory.size_bytes``).
    l2_outstanding : int
        L2 requests the DMA may have in flight (issued, response not yet taken). Full
        throughput needs ``l2_outstanding >= 3 + L2 latency in cycles``.
    lane_depth : int
        Requests queued per L1 lane; lets lanes drift apart when grants are withheld.
    lane_credits : int
        L1 requests in flight per lane (also the depth of each lane's read-response
        buffer). 4 sustains one beat per cycle.

    Ports
    -----
    control : In(:func:`dma_control_signature`)
        The controller's side, flipped; the members:

        - ``cmd``: the descriptor queue's input, accepted while the queue has room and
          ``clear`` is low. ``queue_depth`` descriptors wait while a further one runs.
        - ``clear``: soft clear, see ``docs/dma.md``: drops the queue and the running
          transfer, clears the error status, completes the bus requests already offered
          and discards the responses, then returns to idle (``busy`` low).
        - ``error_ack``: clears ``error`` and ``error_code`` without touching the queue.
        - ``done``: one-cycle pulse when a transfer has completed (all its writes
          acknowledged) or a bad descriptor was skipped; one per accepted descriptor, in
          order, except those dropped by ``clear``.
        - ``done_error``: with ``done``: the descriptor was rejected (nothing was
          accessed).
        - ``busy``: a transfer is running, waits in the queue, or a clear is draining.
        - ``queue_level``: descriptors waiting in the queue (the running one not counted).
        - ``error``: sticky: a descriptor was rejected since the last ``clear`` /
          ``error_ack``.
        - ``error_code``: :class:`DmaError` of the first rejected descriptor since then.
    l1 : Out(:func:`~tinyattn.hw.obi.obi_signature` ``(log2(L1 bytes))``).array(dma_bits // 32)
        OBI initiators. Word requests only (``be`` is always ``0b1111``); lane ``i``
        only ever addresses words with ``(addr // 4) % lanes == i``.
    l2_req : Out(stream of :func:`l2_req_layout`)
        Payload and ``valid`` are stable until ``ready``.
    l2_rsp : In(stream of :func:`l2_rsp_layout`)
        Exactly one response per accepted request, reads and writes, in request order.
    """

    def __init__(
        self,
        cfg: ClusterConfig,
        *,
        l2_outstanding: int = 16,
        lane_depth: int = 2,
        lane_credits: int = 4,
    ) -> None:
        if l2_outstanding < 1 or lane_depth < 1 or lane_credits < 1:
            raise ValueError("l2_outstanding, lane_depth and lane_credits must be >= 1")
        self.cfg = cfg
        self.l2_outstanding = l2_outstanding
        self.lane_depth = lane_depth
        self.lane_credits = lane_credits
        self.n_lanes = cfg.dma.dma_bits // 32
        self.beat_bytes = cfg.dma.dma_bits // 8
        self.l1_addr_bits = exact_log2(cfg.memory.size_bytes)
        self.l2_addr_bits = cfg.dma.l2_addr_bits
        super().__init__(
            {
                "control": In(dma_control_signature(cfg)),
                "l1": Out(obi_signature(self.l1_addr_bits)).array(self.n_lanes),
                "l2_req": Out(stream.Signature(l2_req_layout(cfg))),
                "l2_rsp": In(stream.Signature(l2_rsp_layout(cfg))),
            }
        )

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        m = Module()
        N = self.n_lanes
        B = self.beat_bytes
        LOGB = exact_log2(B)
        A1 = self.l1_addr_bits
        A2 = self.l2_addr_bits
        W = cfg.dma.dma_bits
        # Internal address width: both memories fit with one spare bit, so a row end
        # (one past the last byte) of a validated transfer never wraps.
        AW = max(A1, A2) + 1

        def woff(addr: object) -> object:
            """Word offset of a byte address inside its beat."""
            return addr[2:LOGB] if N > 1 else Const(0, 1)

        def word_mask(lo: object, hi: object) -> object:
            """N bits: word j is enabled when lo <= j <= hi."""
            if N == 1:
                return Const(1, 1)
            bits = []
            for j in range(N):
                # lo <= N-1 and 0 <= hi always hold; leave those out (lint: CMPCONST).
                above = Const(1, 1) if j == N - 1 else (lo <= j)
                below = Const(1, 1) if j == 0 else (j <= hi)
                bits.append(above & below)
            return Cat(*bits)

        def beat_base(addr: object) -> object:
            return Cat(Const(0, LOGB), addr[LOGB:])

        # -- descriptor queue ---------------------------------------------------------
        # Clear empties it through a synchronous reset of the FIFO's pointers (which
        # wins over a write in the same cycle).
        q = SyncFIFO(width=descriptor_layout.size, depth=cfg.dma.queue_depth)
        m.submodules.queue = ResetInserter(self.control.clear)(q)
        m.d.comb += [
            q.w_stream.payload.eq(self.control.cmd.payload),
            q.w_stream.valid.eq(self.control.cmd.valid & ~self.control.clear),
            self.control.cmd.ready.eq(q.w_stream.ready & ~self.control.clear),
            self.control.queue_level.eq(q.level),
        ]

        desc = Signal(descriptor_layout)
        to_l2 = desc.direction == Direction.L1_TO_L2  # else L2 -> L1
        start = Signal()  # one-cycle pulse: the walkers load row 0

        # Source/destination view of the running descriptor (constant while it runs).
        src0, dst0, src_stride, dst_stride, row_len = (
            Signal(AW, name=n) for n in ("src0", "dst0", "src_stride", "dst_stride", "row_len")
        )
        m.d.comb += [
            src0.eq(Mux(to_l2, desc.l1_addr, desc.l2_addr)),
            dst0.eq(Mux(to_l2, desc.l2_addr, desc.l1_addr)),
            src_stride.eq(Mux(to_l2, desc.l1_stride, desc.l2_stride)),
            dst_stride.eq(Mux(to_l2, desc.l2_stride, desc.l1_stride)),
            row_len.eq(desc.row_bytes),
        ]

        # -- bus-side buffers -----------------------------------------------------------
        # L2 requests go through a 2-entry FIFO: its head is what l2_req shows, so the
        # payload is stable until accepted, also across a clear.
        req_layout = l2_req_layout(cfg)
        m.submodules.l2_fifo = l2_fifo = SyncFIFO(width=req_layout.size, depth=2)
        l2_head = req_layout(l2_fifo.r_stream.payload)
        l2_push = Signal(req_layout)
        m.d.comb += [
            l2_fifo.w_stream.payload.eq(l2_push),
            self.l2_req.valid.eq(l2_fifo.r_stream.valid),
            self.l2_req.payload.eq(l2_head),
            l2_fifo.r_stream.ready.eq(self.l2_req.ready),
        ]
        l2_out = Signal(range(self.l2_outstanding + 1))  # pushed, response not yet taken
        l2_room = (l2_out < self.l2_outstanding) & l2_fifo.w_stream.ready
        l2_rsp_take = self.l2_rsp.valid & self.l2_rsp.ready
        m.d.sync += l2_out.eq(l2_out + l2_fifo.w_stream.valid - l2_rsp_take)

        # Per L1 lane: a request FIFO (its head drives the OBI port, so req and the
        # request stay stable until gnt), a read-response FIFO, and a credit counter of
        # requests in flight (queued, granted or response not yet consumed). The credit
        # is taken when the request is queued, so a response always finds room: OBI
        # has no response back-pressure.
        lane_entry = data.StructLayout(
            {"addr_hi": unsigned(A1 - LOGB), "we": unsigned(1), "wdata": unsigned(32)}
        )
        lane_req, lane_rsp, lane_push, lane_inflight, lane_room = [], [], [], [], []
        for j in range(N):
            rq = SyncFIFO(width=lane_entry.size, depth=self.lane_depth)
            rs = SyncFIFO(width=32, depth=self.lane_credits)
            m.submodules[f"lane{j}_req"] = rq
            m.submodules[f"lane{j}_rsp"] = rs
            port = self.l1[j]
            head = lane_entry(rq.r_stream.payload)
            push = Signal(lane_entry, name=f"lane{j}_push")
            inflight = Signal(range(self.lane_credits + 1), name=f"lane{j}_inflight")
            m.d.comb += [
                rq.w_stream.payload.eq(push),
                port.req.eq(rq.r_stream.valid),
                port.addr.eq(Cat(Const(4 * j, LOGB), head.addr_hi)),
                port.we.eq(head.we),
                port.be.eq(0b1111),
                port.wdata.eq(head.wdata),
                rq.r_stream.ready.eq(port.gnt),
                # Only reads return data worth keeping; write responses just retire.
                rs.w_stream.payload.eq(port.rdata),
                rs.w_stream.valid.eq(port.rvalid & to_l2),
            ]
            retire = Mux(to_l2, rs.r_stream.ready & rs.r_stream.valid, port.rvalid)
            m.d.sync += inflight.eq(inflight + rq.w_stream.valid - retire)
            lane_req.append(rq)
            lane_rsp.append(rs)
            lane_push.append(push)
            lane_inflight.append(inflight)
            lane_room.append(rq.w_stream.ready & (inflight < self.lane_credits))

        # Which lanes each L1 read beat used, so the re-assembly knows what to wait for.
        m.submodules.mask_fifo = mask_fifo = SyncFIFO(width=N, depth=self.lane_credits)

        def lanes_ready(mask: object) -> object:
            return Cat(*[~mask[j] | lane_room[j] for j in range(N)]).all()

        bus_idle = Signal()
        m.d.comb += bus_idle.eq(
            (l2_out == 0)
            & ~l2_fifo.r_stream.valid
            & ~mask_fifo.r_stream.valid
            & Cat(*[(lane_inflight[j] == 0) & ~lane_req[j].r_stream.valid for j in range(N)]).all()
        )

        # -- reader walker: one source beat request per cycle -------------------------
        rd_active = Signal()
        rd_rows = Signal(16)
        rd_row = Signal(AW)  # start of the current source row
        rd_cur = Signal(AW)  # beat-aligned address of the next source beat
        rd_end = Signal(AW)  # one past the last byte of the row
        rd_first = Signal()
        rd_end_m1 = Signal(AW)
        rd_last = Signal()
        rd_mask = Signal(N)
        m.d.comb += [
            rd_end_m1.eq(rd_end - 1),
            rd_last.eq(rd_cur + B >= rd_end),
            rd_mask.eq(
                word_mask(Mux(rd_first, woff(rd_row), 0), Mux(rd_last, woff(rd_end_m1), N - 1))
            ),
        ]
        rd_ready = Mux(to_l2, lanes_ready(rd_mask) & mask_fifo.w_stream.ready, l2_room)
        rd_take = Signal()
        m.d.comb += rd_take.eq(rd_active & rd_ready & ~self.control.clear)

        rd_next = Signal(AW)
        m.d.comb += rd_next.eq(Mux(start, src0, rd_row + src_stride))
        with m.If(rd_take):
            m.d.sync += [rd_cur.eq(rd_cur + B), rd_first.eq(0)]
            with m.If(rd_last):
                m.d.sync += rd_rows.eq(rd_rows - 1)
                with m.If(rd_rows == 1):
                    m.d.sync += rd_active.eq(0)
        with m.If(start | (rd_take & rd_last)):
            m.d.sync += [
                rd_row.eq(rd_next),
                rd_cur.eq(beat_base(rd_next)),
                rd_end.eq(rd_next + row_len),
                rd_first.eq(1),
            ]
        with m.If(start):
            m.d.sync += [rd_active.eq(1), rd_rows.eq(desc.rows)]

        # -- source beats: L2 read responses, or the L1 lanes re-assembled --------------
        src_valid = Signal()
        src_data = Signal(W)
        src_ready = Signal()  # the writer takes the beat when src_valid & src_ready
        mask_head = mask_fifo.r_stream.payload
        l1_beat_valid = (
            mask_fifo.r_stream.valid
            & Cat(*[~mask_head[j] | lane_rsp[j].r_stream.valid for j in range(N)]).all()
        )
        m.d.comb += [
            src_valid.eq(Mux(to_l2, l1_beat_valid, self.l2_rsp.valid)),
            src_data.eq(
                Mux(
                    to_l2, Cat(*[rs.r_stream.payload for rs in lane_rsp]), self.l2_rsp.payload.rdata
                )
            ),
        ]

        # -- writer walker and realigner --------------------------------------------------
        # Per row: s_off / d_off are the word offsets of the source / destination row
        # start inside a beat. Destination beat k takes words r .. r+N-1 of the 2N-word
        # window {prev, cur} of two consecutive source beats. If s_off > d_off, beat k
        # needs source beats k and k+1 ("lead": the first source beat is only loaded);
        # otherwise source beats k-1 and k. After the last source beat, one more
        # destination beat may remain ("flush"); its words from beyond the row are
        # disabled anyway. A row ends with its last destination beat.
        LOGN = max(1, exact_log2(N))
        wr_active = Signal()
        wr_rows = Signal(16)
        s_row = Signal(AW)
        d_row = Signal(AW)
        prev = Signal(W)
        r_idx = Signal(LOGN)  # window start r = r_idx + 1 (words), 1..N
        lead = Signal()
        first_src = Signal()
        src_rem = Signal(AW)  # source beats of this row not yet taken
        d_cur = Signal(AW)
        d_end = Signal(AW)
        d_first = Signal()

        # Row parameters of the next row (or of row 0 on start), loaded without a bubble.
        ld_s = Signal(AW)
        ld_d = Signal(AW)
        m.d.comb += [
            ld_s.eq(Mux(start, src0, s_row + src_stride)),
            ld_d.eq(Mux(start, dst0, d_row + dst_stride)),
        ]
        ld_soff = woff(ld_s)
        ld_doff = woff(ld_d)
        ld_lead = ld_soff > ld_doff

        have_src = src_rem != 0
        lead_only = have_src & lead & first_src  # take a source beat without emitting
        d_end_m1 = Signal(AW)
        d_last = Signal()
        d_mask = Signal(N)
        m.d.comb += [
            d_end_m1.eq(d_end - 1),
            d_last.eq(d_cur + B >= d_end),
            d_mask.eq(word_mask(Mux(d_first, woff(d_row), 0), Mux(d_last, woff(d_end_m1), N - 1))),
        ]
        dst_ready = Mux(to_l2, l2_room, lanes_ready(d_mask))
        emit_valid = wr_active & Mux(have_src, src_valid & ~lead_only, 1)
        emit = Signal()
        take = Signal()
        # A row's flush beat uses no source beat, and a lead row's first cycle emits
        # nothing: when one follows the other, both happen in the same cycle ("merge"),
        # so rows with constant offsets and s_off > d_off cost no extra cycle.
        merge = Signal()
        m.d.comb += [
            merge.eq(~have_src & d_last & (wr_rows != 1) & ld_lead),
            emit.eq(emit_valid & dst_ready & ~self.control.clear),
            src_ready.eq(
                wr_active
                & (have_src & (lead_only | dst_ready) | merge & dst_ready)
                & ~self.control.clear
            ),
            take.eq(src_valid & src_ready),
        ]
        cur = Mux(have_src, src_data, 0)
        window = Cat(prev, cur)
        d_data = Signal(W)
        if N == 1:
            m.d.comb += d_data.eq(cur)
        else:
            words = [window.word_select(i, 32) for i in range(2 * N)]
            for j in range(N):
                choices = Cat(*[words[j + 1 + k] for k in range(N)])
                m.d.comb += d_data.word_select(j, 32).eq(choices.word_select(r_idx, 32))
        row_end = emit & d_last

        with m.If(take):
            m.d.sync += [prev.eq(src_data), src_rem.eq(src_rem - 1), first_src.eq(0)]
        with m.If(emit):
            m.d.sync += [d_cur.eq(d_cur + B), d_first.eq(0)]
        with m.If(row_end):
            m.d.sync += wr_rows.eq(wr_rows - 1)
            with m.If(wr_rows == 1):
                m.d.sync += wr_active.eq(0)
        with m.If(start | (row_end & (wr_rows != 1))):
            m.d.sync += [
                s_row.eq(ld_s),
                d_row.eq(ld_d),
                # A merged cycle already took the next row's first (lead) beat.
                src_rem.eq(((ld_s[:LOGB] + row_len + (B - 1)) >> LOGB) - (merge & take)),
                lead.eq(ld_lead),
                r_idx.eq(ld_soff - ld_doff - 1),
                first_src.eq(~(merge & take)),
                d_cur.eq(beat_base(ld_d)),
                d_end.eq(ld_d + row_len),
                d_first.eq(1),
            ]
        with m.If(start):
            m.d.sync += [wr_active.eq(1), wr_rows.eq(desc.rows)]

        # -- dispatch: reader and writer share the L2 FIFO and the lanes by direction ----
        with m.If(to_l2):
            # Source L1 (read the lanes in rd_mask), destination L2 (write).
            m.d.comb += [
                l2_fifo.w_stream.valid.eq(emit),
                l2_push.addr.eq(d_cur),
                l2_push.we.eq(1),
                l2_push.be.eq(Cat(*[d_mask[j].replicate(4) for j in range(N)])),
                l2_push.wdata.eq(d_data),
                mask_fifo.w_stream.payload.eq(rd_mask),
                mask_fifo.w_stream.valid.eq(rd_take),
            ]
            for j in range(N):
                m.d.comb += [
                    lane_push[j].addr_hi.eq(rd_cur[LOGB:]),
                    lane_push[j].we.eq(0),
                    lane_req[j].w_stream.valid.eq(rd_take & rd_mask[j]),
                ]
        with m.Else():
            # Source L2 (read), destination L1 (write the lanes in d_mask).
            m.d.comb += [
                l2_fifo.w_stream.valid.eq(rd_take),
                l2_push.addr.eq(rd_cur),
                l2_push.we.eq(0),
                l2_push.be.eq(Cat(*[rd_mask[j].replicate(4) for j in range(N)])),
            ]
            for j in range(N):
                m.d.comb += [
                    lane_push[j].addr_hi.eq(d_cur[LOGB:]),
                    lane_push[j].we.eq(1),
                    lane_push[j].wdata.eq(d_data.word_select(j, 32)),
                    lane_req[j].w_stream.valid.eq(emit & d_mask[j]),
                ]

        draining = Signal()  # after clear: completing requests, dropping responses
        running = Signal()  # transfer in progress
        # Response sinks: the writer (L2 read data), write acknowledgements, or a drain.
        m.d.comb += [
            self.l2_rsp.ready.eq(draining | (running & Mux(to_l2, 1, src_ready))),
            mask_fifo.r_stream.ready.eq(draining | (to_l2 & take)),
        ]
        for j in range(N):
            m.d.comb += lane_rsp[j].r_stream.ready.eq(draining | (to_l2 & take & mask_head[j]))

        # -- control: pop, check, run, complete ------------------------------------------
        rows_m1 = Signal(16)
        l1_end = Signal(51)
        l2_end = Signal(51)
        m.d.comb += rows_m1.eq(desc.rows - 1)
        m.d.sync += [self.control.done.eq(0), self.control.done_error.eq(0)]
        m.d.comb += start.eq(0)

        zero = (desc.rows == 0) | (desc.row_bytes == 0)
        misaligned = (
            desc.l1_addr | desc.l2_addr | desc.row_bytes | desc.l1_stride | desc.l2_stride
        )[:2] != 0
        l1_bad = l1_end > cfg.memory.size_bytes
        l2_bad = l2_end > (1 << A2)
        code = Signal(3)
        with m.If(zero):
            m.d.comb += code.eq(DmaError.ZERO_SIZE)
        with m.Elif(misaligned):
            m.d.comb += code.eq(DmaError.MISALIGNED)
        with m.Elif(l1_bad):
            m.d.comb += code.eq(DmaError.L1_RANGE)
        with m.Elif(l2_bad):
            m.d.comb += code.eq(DmaError.L2_RANGE)

        with m.If(self.control.error_ack):
            m.d.sync += [self.control.error.eq(0), self.control.error_code.eq(0)]

        def clear_to_drain() -> None:
            # Clear wins over every transition of the state (later statements win).
            with m.If(self.control.clear):
                m.next = "DRAIN"

        with m.FSM(name="ctrl") as fsm:
            with m.State("IDLE"):  # waiting for a descriptor
                m.d.comb += q.r_stream.ready.eq(1)
                with m.If(q.r_stream.valid):
                    m.d.sync += desc.eq(q.r_stream.payload)
                    m.next = "CHECK"
                clear_to_drain()
            with m.State("CHECK"):
                # End (one past the last byte) of the rectangle on each side; registered
                # so the two multipliers get a cycle of their own.
                m.d.sync += [
                    l1_end.eq(desc.l1_addr + rows_m1 * desc.l1_stride + desc.row_bytes),
                    l2_end.eq(desc.l2_addr + rows_m1 * desc.l2_stride + desc.row_bytes),
                ]
                m.next = "DECIDE"
                clear_to_drain()
            with m.State("DECIDE"):  # reject it (error + done) or start the walkers
                with m.If(code != DmaError.NONE):
                    m.d.sync += [self.control.done.eq(1), self.control.done_error.eq(1)]
                    m.next = "IDLE"
                    # The first error since the last ack/clear is kept; a new one wins
                    # over an ack in the same cycle.
                    with m.If(~self.control.error | self.control.error_ack):
                        m.d.sync += [self.control.error.eq(1), self.control.error_code.eq(code)]
                with m.Else():
                    m.d.comb += start.eq(1)
                    m.next = "RUN"
                clear_to_drain()
            with m.State("RUN"):  # leaves when every response came back
                m.d.comb += running.eq(1)
                with m.If(~rd_active & ~wr_active & bus_idle):
                    m.d.sync += self.control.done.eq(1)
                    m.next = "IDLE"
                clear_to_drain()
            with m.State("DRAIN"):  # after clear: completing requests already offered
                m.d.comb += draining.eq(1)
                with m.If(bus_idle):
                    m.next = "IDLE"
                clear_to_drain()

        # Clear wins over everything above, including a completion in the same cycle.
        with m.If(self.control.clear):
            m.d.sync += [
                rd_active.eq(0),
                wr_active.eq(0),
                self.control.done.eq(0),
                self.control.done_error.eq(0),
                self.control.error.eq(0),
                self.control.error_code.eq(0),
            ]
            m.d.comb += start.eq(0)

        m.d.comb += self.control.busy.eq(~fsm.ongoing("IDLE") | q.r_stream.valid)
        return m
