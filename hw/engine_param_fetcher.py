"""The engine's parameter fetcher: each GEMM tile's per-channel records, or each attention
head's requantization record, into a register file."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .engine_port import ReadTag, request_signature, response_signature, word_mask
from .engine_walker import COUNT_BITS, UnitWalker, job_context_signature, precedes
from .job import FLAG_PER_HEAD, FLAG_PER_ROW, HEAD_RECORD_BYTES, PARAM_RECORD_BYTES
from .job_layout import JobOp, param_record_layout
from .wide_port import MAX_READS

__all__ = ["ParamFetcher", "records_layout"]


def records_layout(cfg: ClusterConfig) -> data.ArrayLayout:
    """The record file: two slots of ``max(tile_m, vec_len)`` parameter records.

    A GEMM tile has ``vec_len`` channels, or ``tile_m`` rows with ``FLAG_PER_ROW``;
    tile ``t``'s records are in slot ``t % 2``, record ``i`` for its channel (row) ``i``.
    An attention job with ``FLAG_PER_HEAD`` has one record per output (PV) unit ``t``,
    its head's (:func:`~tinyattn.hw.job_layout.head_record_layout`), as record 0 of
    slot ``t % 2``; the unit's QK unit reads it too.
    """
    e = cfg.engine
    entries = max(e.tile_m, e.vec_len)
    return data.ArrayLayout(data.ArrayLayout(param_record_layout(), entries), 2)


class ParamFetcher(wiring.Component):
    """Loads each GEMM tile's parameter records, up to two tiles ahead of the writer.

    Attention jobs without ``FLAG_PER_HEAD`` take their requantization from the job
    itself: this part steps over their units, one a cycle once its earlier reads have
    arrived, counting their output units as loaded (they need no records), so ``loaded``
    keeps counting output units over the whole sequence of jobs. With ``FLAG_PER_HEAD``
    it loads, at each QK unit, the head's record for the PV unit that follows (the two
    share the output unit's slot), while the issuer is still on earlier units, and steps
    over the PV unit.

    Ports
    -----
    ctrl : In(:func:`~tinyattn.hw.engine_walker.job_context_signature`)
    freed : In(COUNT_BITS)
        Output units the writer has finished (their slot is free). Tile ``t`` (output
        units counted since the reset) is fetched once ``t < freed + 2``.
    issuer_unit : In(COUNT_BITS)
        The output unit the issuer is on: a tile's records are urgent while the issuer
        waits for them, and may wait for X rows when they are for a later tile.
    loaded : Out(COUNT_BITS)
        Output units whose records are all in the record file (attention units: none).
    records : Out(:func:`records_layout`)
        The record file, read by the issuer (bias, requantization) and the writer
        (affine). A record changes only while its slot is not in use.
    request : Out(:func:`~tinyattn.hw.engine_port.request_signature`)
        Records of the issuer's tile, ``records_per_beat`` (``vec_len / 16``) a beat,
        tagged :attr:`ReadTag.PARAMS`.
    request_ahead : Out(:func:`~tinyattn.hw.engine_port.request_signature`)
        The same requests while they are for a later tile (the arbiter ranks this
        stream below X).
    response : In(:func:`~tinyattn.hw.engine_port.response_signature`)
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self._cfg = cfg
        super().__init__(
            {
                "ctrl": In(job_context_signature(cfg)),
                "freed": In(COUNT_BITS),
                "issuer_unit": In(COUNT_BITS),
                "loaded": Out(COUNT_BITS),
                "records": Out(records_layout(cfg)),
                "request": Out(request_signature(cfg)),
                "request_ahead": Out(request_signature(cfg)),
                "response": In(response_signature(cfg)),
            }
        )

    def elaborate(self, platform: object) -> Module:
        cfg = self._cfg
        e = cfg.engine
        lanes = e.port_lanes
        records_per_beat = lanes // 4
        entries = max(e.tile_m, e.vec_len)
        record_bits = PARAM_RECORD_BYTES * 8
        m = Module()
        m.submodules.walker = walker = UnitWalker(cfg)
        wiring.connect(m, wiring.flipped(self.ctrl), walker.ctrl)
        job = walker.job
        attention = job.op == JobOp.ATTENTION
        tile = walker.out_index  # this GEMM tile's output unit: its slot is its low bit
        per_row = (job.flags & FLAG_PER_ROW) != 0
        per_head = attention & ((job.flags & FLAG_PER_HEAD) != 0)

        # What each outstanding read is for, in issue order.
        dest_layout = data.StructLayout({"slot": 1, "first": range(entries), "last": 1})
        m.submodules.dest = dest = SyncFIFOBuffered(width=dest_layout.size, depth=MAX_READS + 1)

        first = Signal(range(entries + records_per_beat))  # the next beat's first record
        # Attention: the one record of the unit's head (both records are 16 bytes).
        assert HEAD_RECORD_BYTES == PARAM_RECORD_BYTES
        count = Mux(attention, 1, Mux(per_row, walker.rows, walker.cols))
        base = Mux(attention, walker.head, Mux(per_row, walker.m0, walker.n0))
        left = Signal(range(entries + 1))
        m.d.comb += left.eq(count - first)
        words = Mux(left >= records_per_beat, lanes, left * 4)
        last_beat = first + records_per_beat >= count

        valid = (
            self.ctrl.go
            & (~attention | (per_head & ~walker.is_pv))
            & walker.active
            & precedes(tile, self.freed + 2)
            & dest.w_stream.ready
        )
        ahead = tile != self.issuer_unit
        accepted = Signal()
        dest_in = Signal(dest_layout)
        for request, is_ahead in ((self.request, ~ahead), (self.request_ahead, ahead)):
            m.d.comb += [
                request.valid.eq(valid & is_ahead),
                request.payload.addr.eq(job.p_addr + (base + first) * PARAM_RECORD_BYTES),
                request.payload.we.eq(0),
                request.payload.mask.eq(word_mask(m, words, lanes)),
                request.payload.tag.eq(ReadTag.PARAMS),
            ]
        m.d.comb += [
            accepted.eq(
                (self.request.valid & self.request.ready)
                | (self.request_ahead.valid & self.request_ahead.ready)
            ),
            dest_in.slot.eq(tile[0]),
            dest_in.first.eq(first),
            dest_in.last.eq(last_beat),
            dest.w_stream.payload.eq(dest_in),
            dest.w_stream.valid.eq(accepted),
        ]
        with m.If(accepted):
            with m.If(last_beat):
                m.d.sync += first.eq(0)
                m.d.comb += walker.step.eq(1)
            with m.Else():
                m.d.sync += first.eq(first + records_per_beat)

        # Read data: record j of the beat lands at first + j (first is a multiple of
        # records_per_beat, so each register has a few fixed sources).
        response = self.response
        dest_out = dest_layout(dest.r_stream.payload)
        m.d.comb += dest.r_stream.ready.eq(response.valid)
        with m.If(response.valid):
            for j in range(records_per_beat):
                record = response.payload[j * record_bits : (j + 1) * record_bits]
                for slot in range(2):
                    for i in range(0, entries, records_per_beat):
                        with m.If((dest_out.slot == slot) & (dest_out.first == i)):
                            m.d.sync += self.records[slot][i + j].eq(record)
            with m.If(dest_out.last):
                m.d.sync += self.loaded.eq(self.loaded + 1)

        # An attention job's units: step over them once every earlier read has arrived
        # (``loaded`` counts in order), its PV units counted as loaded.
        with m.If(self.ctrl.go & walker.active & attention & ~per_head & (dest.level == 0)):
            m.d.comb += walker.step.eq(1)
            m.d.sync += self.loaded.eq(self.loaded + walker.outputs)
        # FLAG_PER_HEAD: a PV unit's record came with its QK unit (and counts as loaded
        # when it arrives): step over it.
        with m.If(self.ctrl.go & walker.active & per_head & walker.is_pv):
            m.d.comb += walker.step.eq(1)

        with m.If(self.ctrl.reset):
            m.d.sync += [first.eq(0), self.loaded.eq(0)]
        return m
