"""The engine's job checker: is a job well formed, and if not, why; and does it read what
the job before it writes."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .job import (
    ATTENTION_FLAGS,
    FLAG_PER_HEAD,
    FLAG_PER_ROW,
    FLAG_RESIDUAL,
    FLAGS_ALL,
    HEAD_RECORD_BYTES,
    PARAM_RECORD_BYTES,
    JobError,
)
from .job_layout import JobOp, job_layout

__all__ = ["JobChecker", "job_check_signature"]


def job_check_signature(cfg: ClusterConfig) -> wiring.Signature:
    """A job and the checker's verdict on it, seen from the controller that asks.

    ``job`` (out) is the job to check and ``written_first``, ``written_last`` (out) the
    byte range the previous accepted job writes; ``error``, ``output_first``,
    ``output_last`` and ``reads_written`` (in) are the verdict, in the same cycle
    (:class:`JobChecker` has the signature flipped and describes each member).
    """
    return wiring.Signature(
        {
            "job": Out(job_layout(cfg)),
            "error": In(3),
            "output_first": In(32),
            "output_last": In(32),
            "written_first": Out(32),
            "written_last": Out(32),
            "reads_written": In(1),
        }
    )


class JobChecker(wiring.Component):
    """Every check of a job, combinationally, in one cycle.

    The checks and their order are those of :func:`tinyattn.verif.engine_model.check_job`:
    the first failing check gives the code. The same tensor extents tell the engine
    whether a job may overlap the job before it: it may not if it reads a byte in the
    range that job writes.

    Ports
    -----
    job : In(:func:`~tinyattn.hw.job_layout.job_layout`)
    error : Out(3)
        The :class:`~tinyattn.hw.job.JobError` of ``job``; ``NONE`` (0) if it may run.
    output_first, output_last : Out(32)
        The byte range ``job`` writes (its output tensor, every head; strides may leave
        holes in it). Meaningful when ``error`` is ``NONE``.
    written_first, written_last : In(32)
        The byte range another job writes (the previous accepted job's ``output_*``).
    reads_written : Out(1)
        A tensor ``job`` reads (X, weights, parameters, residual; Q, K, V) has a byte
        in ``written_first .. written_last``.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self._cfg = cfg
        super().__init__(job_check_signature(cfg).flip())

    def elaborate(self, platform: object) -> Module:
        cfg = self._cfg
        e = cfg.engine
        job = self.job
        m = Module()
        attention = job.op == JobOp.ATTENTION
        residual_en = (job.flags & FLAG_RESIDUAL) != 0
        per_head = (job.flags & FLAG_PER_HEAD) != 0  # attention: the table at p_addr

        # The last byte of each tensor the job touches, computed side by side: the
        # extents cost one comparator each beyond the address arithmetic.
        def extent(addr, stride, rows, row_bytes, hstride=None):
            last = addr + (rows - 1) * stride + row_bytes - 1
            if hstride is not None:
                last = last + (job.heads - 1) * hstride
            return last

        per_row = (job.flags & FLAG_PER_ROW) != 0  # one record per row of Y
        channels = Mux(per_row, job.m, job.n)
        gemm_last = [
            extent(job.a_addr, job.a_stride, job.m, job.k),
            extent(job.b_addr, job.b_stride, job.n, job.k),
            extent(job.c_addr, job.c_stride, job.m, job.n),
            extent(job.p_addr, PARAM_RECORD_BYTES, channels, PARAM_RECORD_BYTES),
            Mux(residual_en, extent(job.d_addr, job.d_stride, job.m, job.n), 0),
        ]
        attention_last = [
            extent(job.a_addr, job.a_stride, job.m, job.k, job.a_hstride),
            extent(job.b_addr, job.b_stride, job.n, job.k, job.b_hstride),
            extent(job.c_addr, job.c_stride, job.m, job.k, job.c_hstride),
            extent(job.d_addr, job.d_stride, job.k, job.n, job.d_hstride),
            Mux(per_head, extent(job.p_addr, HEAD_RECORD_BYTES, job.heads, HEAD_RECORD_BYTES), 0),
        ]

        # Read-after-write between jobs: tensor by tensor, its range against the written one.
        def reads(first, last):
            return (first <= self.written_last) & (self.written_first <= last)

        gemm_reads = (
            reads(job.a_addr, gemm_last[0])
            | reads(job.b_addr, gemm_last[1])
            | reads(job.p_addr, gemm_last[3])
            | (residual_en & reads(job.d_addr, gemm_last[4]))
        )
        attention_reads = (
            reads(job.a_addr, attention_last[0])
            | reads(job.b_addr, attention_last[1])
            | reads(job.d_addr, attention_last[3])
        )
        m.d.comb += [
            self.output_first.eq(job.c_addr),
            self.output_last.eq(Mux(attention, attention_last[2], gemm_last[2])),
            self.reads_written.eq(Mux(attention, attention_reads, gemm_reads)),
        ]

        out_of_range = Signal()
        m.d.comb += out_of_range.eq(
            Cat(
                *[
                    Mux(attention, a, g) >= cfg.memory.size_bytes
                    for g, a in zip(gemm_last, attention_last, strict=True)
                ]
            ).any()
        )

        # Alignment of exactly the tensors the job touches (as verif/engine_model.py).
        def low(*values):
            return Cat(*[v[:2] for v in values]).any()

        common = low(job.a_addr, job.b_addr, job.c_addr, job.a_stride, job.b_stride, job.c_stride)
        d_used = low(job.d_addr, job.d_stride)
        heads_used = low(job.a_hstride, job.b_hstride, job.c_hstride, job.d_hstride)
        misaligned = Signal()
        m.d.comb += misaligned.eq(
            common
            | Mux(
                attention,
                d_used | ((job.heads > 1) & heads_used) | (per_head & low(job.p_addr)),
                low(job.p_addr) | (residual_en & d_used),
            )
        )
        bad_op = (job.op != JobOp.GEMM) & (job.op != JobOp.ATTENTION)
        attention_flags = sum(ATTENTION_FLAGS.values())
        bad_flags = Mux(
            attention, (job.flags & ~attention_flags) != 0, (job.flags & ~FLAGS_ALL) != 0
        )
        zero = (job.m == 0) | (job.n == 0) | (job.k == 0) | (attention & (job.heads == 0))
        too_big = (
            (job.m > e.max_dim)
            | (job.n > e.max_dim)
            | (job.k > e.max_dim)
            | (attention & ((job.k > e.vec_len) | (job.n > e.max_seq)))
        )
        off_granule = (
            (job.n[:2] != 0)
            | (job.k[:2] != 0)
            | (attention & (job.n[: (e.n_pe - 1).bit_length()] != 0))
        )

        # The first failing check gives the error code (later statements win).
        checks = [
            (bad_op | bad_flags, JobError.UNKNOWN_OP),
            (zero, JobError.ZERO_DIM),
            (too_big, JobError.DIM_LIMIT),
            (off_granule, JobError.GRANULE),
            (misaligned, JobError.MISALIGNED),
            (out_of_range, JobError.OUT_OF_RANGE),
        ]
        for fails, code in reversed(checks):
            with m.If(fails):
                m.d.comb += self.error.eq(code)
        return m
