"""Where a part of the engine is in the queue of jobs: the jobs' sequence of units.

Every part of the engine (fetchers, issuer, writer) walks the same sequence of units at
its own pace; :class:`UnitWalker` is one part's position in it. The sequence runs on
from one job into the next: a part that has finished its share of a job takes the next
accepted one at once, while the parts behind it still work on the previous job. The
parts that share a buffer meet through monotonic counters of units or chunks, never
through each other's walker, so each walker is private to its part; the counters run
on across jobs (buffer slots alternate over the whole sequence), and are compared
modulo their width (:func:`precedes`).

Also :func:`job_context_signature`, the signature every part receives the jobs by.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .job_layout import JobOp, job_layout

__all__ = [
    "COUNT_BITS",
    "JOB_SEQ_BITS",
    "UnitWalker",
    "ceil_div_pow2",
    "job_context_signature",
    "precedes",
]

#: Width of the hand-over counters (blocks, chunks, units); they wrap, see :func:`precedes`.
COUNT_BITS = 20
#: Width of the job sequence numbers (two jobs in the slots, so mod 4 tells them apart).
JOB_SEQ_BITS = 2


def precedes(a: object, b: object, bits: int = COUNT_BITS) -> object:
    """``a < b`` for counters that wrap at ``2**bits`` and are less than ``2**(bits-1)`` apart.

    The hand-over counters run on over every job since the last reset, so they wrap;
    producer and consumer are never more than a few units apart.
    """
    return (a - b)[bits - 1]


def ceil_div_pow2(value: object, divisor: int) -> object:
    """``ceil(value / divisor)`` for a power-of-two ``divisor``."""
    shift = divisor.bit_length() - 1
    return (value + divisor - 1) >> shift


def job_context_signature(cfg: ClusterConfig) -> wiring.Signature:
    """The accepted jobs as the engine hands them to its parts (engine side: all ``Out``).

    ``jobs``
        Two job slots (:func:`~tinyattn.hw.job_layout.job_layout`): job ``s`` of the
        sequence (counted from the last reset) is in slot ``s % 2`` from its acceptance
        until every part has finished it and its writes have landed.
    ``accepted``
        Jobs accepted so far, mod ``2**JOB_SEQ_BITS``. A part on job ``s`` may work on
        it while ``s != accepted``.
    ``go``
        No soft clear is draining: parts may issue new work. During a clear, work
        already issued completes but nothing new starts.
    ``reset``
        The soft clear completes: every part returns to its start state (job sequence,
        counters and positions 0), in the same cycle as the engine's job slots.
    """
    return wiring.Signature(
        {
            "jobs": Out(data.ArrayLayout(job_layout(cfg), 2)),
            "accepted": Out(JOB_SEQ_BITS),
            "go": Out(1),
            "reset": Out(1),
        }
    )


class UnitWalker(wiring.Component):
    """One part's position in the sequence of units of the accepted jobs.

    GEMM: tiles of ``tile_m`` rows x ``vec_len`` channels, ``m0`` outer and ``n0``
    inner. ATTENTION: heads, then query tiles, then the QK and PV units of each. The
    step over a job's last unit moves the walker to the first unit of the next job
    (``seq + 1``), which the part may start on as soon as it is accepted.

    Ports
    -----
    ctrl : In(:func:`job_context_signature`)
        The walker starts from the first unit of job 0 on ``ctrl.reset``.
    step : In(1)
        Move to the next unit at the next clock edge (only while ``active``).
    job : Out(:func:`~tinyattn.hw.job_layout.job_layout`)
        The part's job: ``ctrl.jobs[seq % 2]``, valid while ``active``.
    seq : Out(JOB_SEQ_BITS)
        The part's job in the sequence, mod ``2**JOB_SEQ_BITS``.
    active : Out(1)
        The part's job has been accepted (``seq != ctrl.accepted``), and so has units left.
    last : Out(1)
        The unit is the job's last: a ``step`` now finishes the part's share of the job.
    m0, n0, head : Out
        The unit's first row, first output channel (GEMM) and head (ATTENTION).
    is_qk, is_pv : Out(1)
        An attention unit's phase: QK (logits) or PV (output rows).
    outputs : Out(1)
        The unit writes output rows (GEMM tiles, PV units).
    index : Out(COUNT_BITS)
        Units stepped over since the reset (over every job, wrapping).
    out_index : Out(COUNT_BITS)
        Output-writing units stepped over since the reset; its low bit is the unit's
        YBUF and parameter slot.
    rows : Out
        Rows of the unit (``tile_m`` but at the job's bottom edge).
    cols : Out
        Output columns of the unit: channels (GEMM), keys (QK) or head dimension (PV).
    chunks : Out(16)
        ``vec_len`` chunks of the unit's reduction axis.
    last_words : Out
        32-bit words of the last chunk.
    split : Out
        ``log2 s`` of the unit's split-lane beats: a QK unit of head dimension
        ``k <= vec_len / s`` scores ``s`` keys a unit per beat (:meth:`EngineConfig.split_for
        <tinyattn.config.EngineConfig.split_for>`); 0 for other units.
    blocks : Out
        Blocks of output columns: ``n_pe << split`` each (keys of a QK beat), else ``n_pe``.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self._cfg = cfg
        e = cfg.engine
        dims = job_layout(cfg).members["m"]
        self._cols_range = range(max(e.vec_len, e.max_seq) + 1)
        # Exactly the shape of the expression, so ``blocks - 1`` wraps as it would.
        blocks_shape = ceil_div_pow2(Signal(self._cols_range), e.n_pe).shape()
        super().__init__(
            {
                "ctrl": In(job_context_signature(cfg)),
                "step": In(1),
                "job": Out(job_layout(cfg)),
                "seq": Out(JOB_SEQ_BITS),
                "active": Out(1),
                "last": Out(1),
                "m0": Out(dims),
                "n0": Out(dims),
                "head": Out(8),
                "is_qk": Out(1),
                "is_pv": Out(1),
                "outputs": Out(1),
                "index": Out(COUNT_BITS),
                "out_index": Out(COUNT_BITS),
                "rows": Out(range(e.tile_m + 1)),
                "cols": Out(self._cols_range),
                "chunks": Out(16),
                "last_words": Out(range(e.port_lanes + 1)),
                "split": Out(range(e.max_split.bit_length())),
                "blocks": Out(blocks_shape),
            }
        )

    def elaborate(self, platform: object) -> Module:
        e = self._cfg.engine
        job = self.job
        m = Module()
        slots = self.ctrl.jobs
        m.d.comb += [
            job.eq(Mux(self.seq[0], slots[1].as_value(), slots[0].as_value())),
            self.active.eq(self.seq != self.ctrl.accepted),
        ]

        attention = job.op == JobOp.ATTENTION
        phase = Signal()  # attention: 0 = QK, 1 = PV

        def chunks_and_last(dim: object) -> tuple[Signal, Signal]:
            chunks = Signal(16)
            last = Signal(range(e.port_lanes + 1))
            m.d.comb += [
                chunks.eq(ceil_div_pow2(dim, e.vec_len)),
                last.eq((((dim - 1) & (e.vec_len - 1)) >> 2) + 1),
            ]
            return chunks, last

        k_chunks, k_last_words = chunks_and_last(job.k)
        n_chunks, n_last_words = chunks_and_last(job.n)

        left_m = job.m - self.m0
        left_n = job.n - self.n0
        gemm_cols = Mux(left_n > e.vec_len, e.vec_len, left_n)
        m.d.comb += [
            self.rows.eq(Mux(left_m > e.tile_m, e.tile_m, left_m)),
            self.is_qk.eq(attention & ~phase),
            self.is_pv.eq(attention & phase),
            self.outputs.eq(~self.is_qk),
            self.cols.eq(Mux(self.is_qk, job.n, Mux(self.is_pv, job.k, gemm_cols))),
            self.chunks.eq(Mux(self.is_qk, 1, Mux(self.is_pv, n_chunks, k_chunks))),
            self.last_words.eq(
                Mux(self.is_qk, job.k >> 2, Mux(self.is_pv, n_last_words, k_last_words))
            ),
        ]
        # The largest split whose segments hold the head dimension (QK units only).
        split = Const(0, self.split.shape())
        for t in range(1, e.max_split.bit_length()):
            split = Mux(job.k <= e.vec_len >> t, t, split)
        m.d.comb += self.split.eq(Mux(self.is_qk, split, 0))
        blocks = ceil_div_pow2(self.cols, e.n_pe)
        for t in range(1, e.max_split.bit_length()):
            blocks = Mux(self.split == t, ceil_div_pow2(self.cols, e.n_pe << t), blocks)
        m.d.comb += self.blocks.eq(blocks)

        last_n = self.n0 + e.vec_len >= job.n
        last_m = self.m0 + e.tile_m >= job.m
        last_head = self.head == job.heads - 1
        m.d.comb += self.last.eq(Mux(attention, phase & last_m & last_head, last_n & last_m))
        with m.If(self.step):
            m.d.sync += [
                self.index.eq(self.index + 1),
                self.out_index.eq(self.out_index + self.outputs),
            ]
            with m.If(attention):
                m.d.sync += [
                    phase.eq(~phase),
                    self.m0.eq(Mux(phase, Mux(last_m, 0, self.m0 + e.tile_m), self.m0)),
                    self.head.eq(Mux(phase & last_m, self.head + 1, self.head)),
                ]
            with m.Else():
                m.d.sync += [
                    self.n0.eq(Mux(last_n, 0, self.n0 + e.vec_len)),
                    self.m0.eq(Mux(last_n, self.m0 + e.tile_m, self.m0)),
                ]
            # On to the next job, from its first unit (later statements win).
            with m.If(self.last):
                m.d.sync += [self.seq.eq(self.seq + 1)]
                m.d.sync += [s.eq(0) for s in (self.m0, self.n0, self.head, phase)]
        with m.If(self.ctrl.reset):
            m.d.sync += [
                s.eq(0)
                for s in (self.m0, self.n0, self.head, phase, self.index, self.out_index, self.seq)
            ]
        return m
