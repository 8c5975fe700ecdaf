"""The engine's issuer: one operand beat a cycle into the compute core."""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .compute_core import PIPELINE_DEPTH, operand_layout
from .engine_buffers import acc_blocks, engine_buffers, logit_words
from .engine_param_fetcher import records_layout
from .engine_walker import COUNT_BITS, UnitWalker, job_context_signature, precedes
from .itamax import probabilities
from .job import FLAG_AFFINE, FLAG_PER_HEAD, FLAG_PER_ROW, FLAG_RELU, FLAG_RESIDUAL
from .job_layout import JobOp, head_record_layout, job_layout, param_record_layout

__all__ = ["Issuer", "beat_layout"]


def beat_layout(cfg: ClusterConfig) -> data.StructLayout:
    """What the collector needs to know of a beat in the core: where its result goes.

    ``row`` and ``nb`` (block of ``n_pe`` columns) within the unit; ``slot``, the
    unit's YBUF slot; ``final``, the result is output bytes (last chunk of an output
    unit); ``qk``, the result is logits; ``block_first``/``block_last``, the row's
    first/last block; ``tile_last``, the unit's last beat. A QK beat with ``split =
    log2 s`` covers ``s`` groups of ``n_pe`` keys (block ``nb`` of ``s * n_pe`` keys),
    ``groups`` of them real (fewer in a ragged last block).
    """
    e = cfg.engine
    return data.StructLayout(
        {
            "row": range(e.tile_m),
            "nb": range(max(e.vec_len, e.max_seq) // e.n_pe),
            "slot": 1,
            "final": 1,
            "qk": 1,
            "block_first": 1,
            "block_last": 1,
            "tile_last": 1,
            "split": range(e.max_split.bit_length()),
            "groups": range(1, e.max_split + 1),
        }
    )


class Issuer(wiring.Component):
    """Streams operand beats into the core as soon as their operands are ready.

    For every unit: for chunk, for block, for row, one beat: X row chunk (XBUF) or
    probabilities (from LOGITS and the softmax's running max and ``1/sum``, PV units),
    with the block's bank, and ``acc_in`` = bias (first chunk of a GEMM), 0 (first
    chunk of attention) or the partial sum from ACC. Two stages: A picks the beat and
    addresses the buffers, B (one cycle later) presents it to the core. Stage B takes
    what it needs of the job from stage A's registers: A may already be on the next job.

    Ports
    -----
    ctrl : In(:func:`~tinyattn.hw.engine_walker.job_context_signature`)
    weights_loaded, x_loaded, x_rows, params_loaded, outputs_freed, qk_done : In
        The producers' counters (weight blocks; X chunks and rows of the chunk being
        filled; output units with records; output units written; QK units whose logits and
        softmax sums are complete). Each beat waits for what it reads.
    weights_used, x_used : Out(COUNT_BITS)
        Weight blocks and X chunks the issuer has finished with (since the reset).
    unit : Out(COUNT_BITS)
        The output unit the issuer is on (:attr:`UnitWalker.out_index`).
    records : In(:func:`~tinyattn.hw.engine_param_fetcher.records_layout`)
    xbuf, acc, logits : In(read port signatures of :mod:`~tinyattn.hw.engine_buffers`)
    softmax_row : Out
        The row whose running max and ``1/sum`` the softmax presents on
        ``softmax_max`` and ``softmax_inv`` in the same cycle (PV operands).
    operands : Out(stream of :func:`~tinyattn.hw.compute_core.operand_layout`)
        To the core. ``valid`` ignores ``ready``: the core takes a beat every cycle
        while its results are taken every cycle, as the collector does.
    beats : Out(stream of :func:`beat_layout`)
        The descriptor of the beat in ``operands``, for the collector (no ``ready``
        either: the collector's queue has room for every beat the core can hold).
    retired : In(1)
        A result left the core (a beat is no longer in flight).
    stalled : Out(1)
        The issuer's job (an accepted one) has beats left, and none was issued this cycle.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self._cfg = cfg
        buffers = engine_buffers(cfg)
        e = cfg.engine
        super().__init__(
            {
                "ctrl": In(job_context_signature(cfg)),
                "weights_loaded": In(COUNT_BITS),
                "x_loaded": In(COUNT_BITS),
                "x_rows": In(range(e.tile_m + 1)),
                "params_loaded": In(COUNT_BITS),
                "outputs_freed": In(COUNT_BITS),
                "qk_done": In(COUNT_BITS),
                "weights_used": Out(COUNT_BITS),
                "x_used": Out(COUNT_BITS),
                "unit": Out(COUNT_BITS),
                "records": In(records_layout(cfg)),
                "xbuf": In(buffers["xbuf"].read_signature()),
                "acc": In(buffers["acc"].read_signature()),
                "logits": In(buffers["logits"].read_signature()),
                "softmax_row": Out(range(e.tile_m)),
                "softmax_max": In(signed(8)),
                "softmax_inv": In(8),
                "operands": Out(stream.Signature(operand_layout(e))),
                "beats": Out(stream.Signature(beat_layout(cfg))),
                "retired": In(1),
                "stalled": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        cfg = self._cfg
        e = cfg.engine
        n_pe, vec_len, tile_m = e.n_pe, e.vec_len, e.tile_m
        blocks_max = max(vec_len, e.max_seq) // n_pe  # QK: all keys
        n_acc_blocks = acc_blocks(cfg)
        n_logit_words = logit_words(cfg)
        m = Module()
        m.submodules.walker = walker = UnitWalker(cfg)
        wiring.connect(m, wiring.flipped(self.ctrl), walker.ctrl)
        job = walker.job
        attention = job.op == JobOp.ATTENTION
        per_head = attention & ((job.flags & FLAG_PER_HEAD) != 0)

        # ------------------------------------------------ stage A: pick the beat
        chunk_in_unit = Signal(16)
        block_in_chunk = Signal(range(blocks_max))
        row = Signal(range(tile_m))
        block = Signal(COUNT_BITS)  # weight blocks finished since the reset
        chunk = Signal(COUNT_BITS)  # X chunks finished since the reset
        qk_units = Signal(COUNT_BITS)  # QK units fully issued
        last_chunk = chunk_in_unit == walker.chunks - 1
        final = last_chunk & walker.outputs  # results go to YBUF
        inflight = Signal(range(tile_m * blocks_max + PIPELINE_DEPTH + 8))
        # A beat reading ACC must come after the result it reads was written:
        # the same (row, block) comes around every rows * blocks beats.
        depth_ok = inflight < walker.rows * walker.blocks
        operands_ready = Mux(
            walker.is_pv,
            self.qk_done == qk_units,  # the unit's logits and inv are complete
            precedes(chunk, self.x_loaded) | ((chunk == self.x_loaded) & (row < self.x_rows)),
        )
        ready_block = (
            precedes(block, self.weights_loaded)
            & operands_ready
            & ((attention & ~per_head) | precedes(walker.out_index, self.params_loaded))
            & (~final | precedes(walker.out_index, self.outputs_freed + 2))
        )
        issue = Signal()
        m.d.comb += [
            self.unit.eq(walker.out_index),
            issue.eq(self.ctrl.go & walker.active & ready_block & depth_ok),
            self.stalled.eq(walker.active & ~issue),
            self.xbuf.addr.eq(Cat(row, chunk[0])),
            self.acc.addr.eq(
                row * n_acc_blocks + block_in_chunk[: (n_acc_blocks - 1).bit_length() or 1]
            ),
            self.logits.addr.eq(
                row * n_logit_words + chunk_in_unit[: (n_logit_words - 1).bit_length() or 1]
            ),
        ]

        # A QK beat's groups of n_pe keys: s of them but in a ragged last block.
        split_groups = Signal(range(e.max_split + 1))
        groups_left = Signal(range(blocks_max * n_pe + 1))
        m.d.comb += [
            split_groups.eq(1 << walker.split),
            groups_left.eq(
                (walker.cols >> (n_pe.bit_length() - 1)) - (block_in_chunk << walker.split)
            ),
        ]

        # ------------------------------------------------ stage B: the beat to the core
        stage_b = Signal(
            data.StructLayout(
                {
                    "valid": 1,
                    "first": 1,  # first chunk: acc_in is the bias or 0
                    "bank": 1,
                    "pv": 1,
                    # Of the beat's job: A may be on the next job while B presents this beat.
                    "attention": 1,
                    "per_row": 1,
                    "per_head": 1,  # requantization from the unit's head record
                    "relu": 1,  # the core applies the ReLU
                    "requant": job_layout(cfg).members["qk"],  # QK or PV requantization
                    "beat": beat_layout(cfg),
                }
            )
        )
        b = stage_b.beat
        m.d.sync += [
            stage_b.valid.eq(issue),
            stage_b.first.eq(chunk_in_unit == 0),
            stage_b.bank.eq(block[0]),
            stage_b.pv.eq(walker.is_pv),
            stage_b.attention.eq(attention),
            stage_b.per_row.eq((job.flags & FLAG_PER_ROW) != 0),
            stage_b.per_head.eq(per_head),
            # With a residual or an affine epilogue the writer applies the ReLU last.
            stage_b.relu.eq(
                ((job.flags & FLAG_RELU) != 0)
                & ((job.flags & (FLAG_RESIDUAL | FLAG_AFFINE)) == 0)
                & ~attention
            ),
            stage_b.requant.eq(Mux(walker.is_qk, job.qk.as_value(), job.av.as_value())),
            b.row.eq(row),
            b.nb.eq(block_in_chunk),
            b.slot.eq(walker.out_index[0]),
            b.final.eq(final),
            b.qk.eq(walker.is_qk),
            b.block_first.eq(block_in_chunk == 0),
            b.block_last.eq(block_in_chunk == walker.blocks - 1),
            b.tile_last.eq(
                last_chunk & (block_in_chunk == walker.blocks - 1) & (row == walker.rows - 1)
            ),
            b.split.eq(walker.split),
            b.groups.eq(Mux(groups_left > split_groups, split_groups, groups_left)),
        ]
        # Row by row, block by block, chunk by chunk, then to the next unit.
        with m.If(issue):
            with m.If(row == walker.rows - 1):
                m.d.sync += [
                    row.eq(0),
                    block.eq(block + 1),
                    self.weights_used.eq(self.weights_used + 1),
                ]
                with m.If(block_in_chunk == walker.blocks - 1):
                    m.d.sync += block_in_chunk.eq(0)
                    with m.If(~walker.is_pv):
                        m.d.sync += [chunk.eq(chunk + 1), self.x_used.eq(self.x_used + 1)]
                    with m.If(last_chunk):
                        m.d.sync += chunk_in_unit.eq(0)
                        with m.If(walker.is_qk):
                            m.d.sync += qk_units.eq(qk_units + 1)
                        m.d.comb += walker.step.eq(1)
                    with m.Else():
                        m.d.sync += chunk_in_unit.eq(chunk_in_unit + 1)
                with m.Else():
                    m.d.sync += block_in_chunk.eq(block_in_chunk + 1)
            with m.Else():
                m.d.sync += row.eq(row + 1)

        # Beats between issue (stage A, which reads ACC) and their result (which writes it).
        with m.If(issue & ~self.retired):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(self.retired & ~issue):
            m.d.sync += inflight.eq(inflight - 1)

        # The beat's bias and requantization: per output channel, or (FLAG_PER_ROW) one
        # record for the whole row; attention takes them from the job, or (FLAG_PER_HEAD)
        # from its unit's head record, record 0 of the unit's slot.
        per_row = stage_b.per_row
        record_layout = param_record_layout()
        params = [list(self.records[slot]) for slot in range(2)]
        op = self.operands.payload
        acc_words = data.ArrayLayout(signed(e.acc_bits), n_pe)(self.acc.data)
        row_record = Signal(record_layout)
        m.d.comb += row_record.eq(Array([Array(params[0]), Array(params[1])])[b.slot][b.row])
        head_record = head_record_layout()(
            Mux(b.slot, params[1][0].as_value(), params[0][0].as_value())
        )
        head_qk = Cat(head_record.qk_mult, head_record.qk_shift, head_record.qk_add)
        head_av = Cat(head_record.av_mult, head_record.av_shift, head_record.av_add)
        job_rq = Signal(job_layout(cfg).members["qk"])
        m.d.comb += job_rq.eq(
            Mux(stage_b.per_head, Mux(stage_b.pv, head_av, head_qk), stage_b.requant.as_value())
        )
        for u in range(n_pe):
            chan = Array(
                [
                    Mux(
                        b.slot,
                        params[1][nb * n_pe + u].as_value(),
                        params[0][nb * n_pe + u].as_value(),
                    )
                    for nb in range(n_acc_blocks)
                ]
            )[b.nb[: (n_acc_blocks - 1).bit_length() or 1]]
            record = record_layout(Mux(per_row, row_record.as_value(), chan))
            m.d.comb += [
                op.acc_in[u].eq(
                    Mux(stage_b.first, Mux(stage_b.attention, 0, record.bias), acc_words[u])
                ),
                op.requant[u].mult.eq(Mux(stage_b.attention, job_rq.mult, record.mult)),
                op.requant[u].shift.eq(Mux(stage_b.attention, job_rq.shift, record.shift)),
                op.requant[u].add.eq(Mux(stage_b.attention, job_rq.add, record.add)),
            ]
        # PV operands: probabilities from the logits read back, lane by lane.
        logits = data.ArrayLayout(signed(8), vec_len)(self.logits.data)
        probs = probabilities(self.softmax_max, self.softmax_inv, list(logits))
        m.d.comb += [
            self.softmax_row.eq(b.row),
            op.x.eq(Mux(stage_b.pv, Cat(*probs), self.xbuf.data)),
            op.x_signed.eq(~stage_b.pv),
            op.bank.eq(stage_b.bank),
            op.split.eq(b.split),
            op.relu.eq(stage_b.relu),
            self.operands.valid.eq(stage_b.valid),
            self.beats.payload.eq(b),
            self.beats.valid.eq(stage_b.valid),
        ]

        with m.If(self.ctrl.reset):
            m.d.sync += [
                s.eq(0)
                for s in (
                    chunk_in_unit,
                    block_in_chunk,
                    row,
                    block,
                    chunk,
                    qk_units,
                    self.weights_used,
                    self.x_used,
                )
            ]
        return m
