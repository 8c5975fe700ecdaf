"""The engine's collector: takes the core's results to ACC, LOGITS and the softmax, or YBUF."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .compute_core import PIPELINE_DEPTH, result_layout
from .engine_buffers import acc_blocks, engine_buffers, logit_words
from .engine_issuer import beat_layout
from .engine_walker import COUNT_BITS, job_context_signature

__all__ = ["Collector"]


class Collector(wiring.Component):
    """Routes each result of the core by the descriptor its beat was issued with.

    Partial sums (not the last chunk) go to ACC; logits (QK units) to LOGITS and the
    softmax's running max and sum; output bytes (the last chunk of an output unit) to
    YBUF. It counts what its consumers wait for.

    Ports
    -----
    ctrl : In(:func:`~tinyattn.hw.engine_walker.job_context_signature`)
    beats : In(stream of :func:`~tinyattn.hw.engine_issuer.beat_layout`)
        The descriptor of each beat entering the core, queued until its result leaves
        (the queue holds every beat the core can; ``ready`` is never low in use).
    results : In(stream of :func:`~tinyattn.hw.compute_core.result_layout`)
        From the core; always ``ready``.
    acc, logits, ybuf : In(write port signatures of :mod:`~tinyattn.hw.engine_buffers`)
    softmax_valid, softmax_row, softmax_first, softmax_last, softmax_groups, softmax_logits : Out
        ``softmax_groups`` consecutive groups of ``n_pe`` logits of a row (a QK beat)
        into the softmax (the row's first and last beat).
    outputs_full : Out(COUNT_BITS)
        Output units completely in YBUF (since the reset, over every job).
    output_rows : Out(range(tile_m + 1))
        Complete rows of unit ``outputs_full`` (the one being filled): a row is complete
        with its last block of the last chunk, and rows complete in order, so the
        writer may start on a unit's first rows before its last.
    qk_done : Out(COUNT_BITS)
        QK units whose logits (and the softmax's sums) are complete.
    retired : Out(1)
        A result left the core in this cycle.
    pending : Out(1)
        Beats are in the core.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self._cfg = cfg
        e = cfg.engine
        buffers = engine_buffers(cfg)
        super().__init__(
            {
                "ctrl": In(job_context_signature(cfg)),
                "beats": In(stream.Signature(beat_layout(cfg))),
                "results": In(stream.Signature(result_layout(e))),
                "acc": In(buffers["acc"].write_signature()),
                "logits": In(buffers["logits"].write_signature()),
                "ybuf": In(buffers["ybuf"].write_signature()),
                "softmax_valid": Out(1),
                "softmax_row": Out(range(e.tile_m)),
                "softmax_first": Out(1),
                "softmax_last": Out(1),
                "softmax_groups": Out(range(1, e.max_split + 1)),
                "softmax_logits": Out(data.ArrayLayout(signed(8), e.max_split * e.n_pe)),
                "outputs_full": Out(COUNT_BITS),
                "output_rows": Out(range(e.tile_m + 1)),
                "qk_done": Out(COUNT_BITS),
                "retired": Out(1),
                "pending": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        cfg = self._cfg
        n_acc_blocks = acc_blocks(cfg)
        groups_per_word = n_acc_blocks  # logit groups of n_pe in one LOGITS word
        n_logit_words = logit_words(cfg)
        m = Module()

        layout = beat_layout(cfg)
        queue = SyncFIFOBuffered(width=layout.size, depth=PIPELINE_DEPTH + 4)
        m.submodules.queue = queue
        m.d.comb += [
            queue.w_stream.payload.eq(self.beats.payload),
            queue.w_stream.valid.eq(self.beats.valid),
            self.beats.ready.eq(queue.w_stream.ready),
        ]
        beat = layout(queue.r_stream.payload)
        result = self.results
        valid = result.valid
        y_bits = result.payload.y.as_value()
        n_pe_bytes = cfg.engine.n_pe * 8
        # A QK beat's first group (of n_pe keys) in the row; its s groups share one
        # LOGITS word (s <= groups_per_word, both powers of two).
        first_group = beat.nb << beat.split
        group_sel = first_group[: (groups_per_word - 1).bit_length()] if groups_per_word > 1 else 0
        word_sel = first_group >> (groups_per_word.bit_length() - 1)
        # The logits repeated with the beat's period of s groups: group g of the word
        # then holds the beat's group g mod s, and the enables pick the beat's own.
        logits_word = Cat(*([y_bits[:n_pe_bytes]] * groups_per_word))
        for t in range(1, cfg.engine.max_split.bit_length()):
            period = y_bits[: n_pe_bytes << t]
            logits_word = Mux(
                beat.split == t, Cat(*([period] * (groups_per_word >> t))), logits_word
            )
        group_en = (Const(1, cfg.engine.max_split + 1) << beat.groups) - 1
        m.d.comb += [
            result.ready.eq(1),
            queue.r_stream.ready.eq(valid),
            self.retired.eq(valid),
            self.pending.eq(queue.r_stream.valid),
            self.acc.addr.eq(
                beat.row * n_acc_blocks + beat.nb[: (n_acc_blocks - 1).bit_length() or 1]
            ),
            self.acc.data.eq(result.payload.acc.as_value()),
            self.acc.en.eq(valid & ~beat.final & ~beat.qk),
            self.ybuf.addr.eq(Cat(beat.row, beat.slot)),
            self.ybuf.data.eq(Cat(*([y_bits[:n_pe_bytes]] * n_acc_blocks))),
            self.ybuf.en.eq(Mux(valid & beat.final, Const(1, n_acc_blocks) << beat.nb, 0)),
            self.logits.addr.eq(beat.row * n_logit_words + word_sel),
            self.logits.data.eq(logits_word),
            self.logits.en.eq(Mux(valid & beat.qk, group_en << group_sel, 0)),
            self.softmax_valid.eq(valid & beat.qk),
            self.softmax_row.eq(beat.row),
            self.softmax_first.eq(beat.block_first),
            self.softmax_last.eq(beat.block_last),
            self.softmax_groups.eq(beat.groups),
            self.softmax_logits.eq(result.payload.y),
        ]
        with m.If(valid & beat.final & beat.tile_last):
            m.d.sync += self.outputs_full.eq(self.outputs_full + 1)
        with m.If(valid & beat.final & beat.block_last):
            m.d.sync += self.output_rows.eq(Mux(beat.tile_last, 0, self.output_rows + 1))
        with m.If(valid & beat.qk & beat.tile_last):
            m.d.sync += self.qk_done.eq(self.qk_done + 1)

        with m.If(self.ctrl.reset):
            m.d.sync += [s.eq(0) for s in (self.outputs_full, self.output_rows, self.qk_done)]
        return m
