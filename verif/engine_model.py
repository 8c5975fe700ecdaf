"""Golden model of the attention engine's jobs over an L1 image.

:func:`check_job` is the engine's job validation (same checks, same order, same
codes as the RTL) and :func:`run_job` its effect on L1. Both kinds of job are
defined in :mod:`tinyattn.hw.job`; the arithmetic is :mod:`tinyattn.verif.golden`.
"""

from __future__ import annotations

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.hw.job import (
    FLAG_AFFINE,
    FLAG_PER_ROW,
    FLAG_RELU,
    FLAG_RESIDUAL,
    FLAGS_ALL,
    PARAM_RECORD_BYTES,
    Job,
    JobError,
    Op,
)
from tinyattn.verif import golden

__all__ = ["check_job", "job_extents", "job_tensors", "read_matrix", "run_job", "write_matrix"]


def _s8(v: int) -> int:
    return v - 256 if v & 0x80 else v


def job_tensors(job: Job) -> list[tuple[str, int, int, int, int, int, int]]:
    """Every tensor a job touches: (name, addr, stride, hstride, heads, rows, row_bytes)."""
    if job.op == Op.GEMM:
        channels = job.m if job.flags & FLAG_PER_ROW else job.n
        tensors = [
            ("X", job.a_addr, job.a_stride, 0, 1, job.m, job.k),
            ("W", job.b_addr, job.b_stride, 0, 1, job.n, job.k),
            ("Y", job.c_addr, job.c_stride, 0, 1, job.m, job.n),
            ("params", job.p_addr, PARAM_RECORD_BYTES, 0, 1, channels, PARAM_RECORD_BYTES),
        ]
        if job.flags & FLAG_RESIDUAL:
            tensors.append(("R", job.d_addr, job.d_stride, 0, 1, job.m, job.n))
        return tensors
    return [
        ("Q", job.a_addr, job.a_stride, job.a_hstride, job.heads, job.m, job.k),
        ("K", job.b_addr, job.b_stride, job.b_hstride, job.heads, job.n, job.k),
        ("Vt", job.d_addr, job.d_stride, job.d_hstride, job.heads, job.k, job.n),
        ("O", job.c_addr, job.c_stride, job.c_hstride, job.heads, job.m, job.k),
    ]


def job_extents(job: Job) -> dict[str, tuple[int, int]]:
    """The L1 byte range ``[lo, hi)`` each tensor of :func:`job_tensors` spans, by name."""
    return {
        name: (addr, addr + (heads - 1) * hstride + (rows - 1) * stride + row_bytes)
        for name, addr, stride, hstride, heads, rows, row_bytes in job_tensors(job)
    }


def check_job(job: Job, cfg: ClusterConfig) -> JobError:
    """The engine's validation of ``job``; the first failing check gives the code."""
    e = cfg.engine
    attention = job.op == Op.ATTENTION
    if job.op not in (Op.GEMM, Op.ATTENTION) or job.flags & ~(0 if attention else FLAGS_ALL):
        return JobError.UNKNOWN_OP
    if job.m == 0 or job.n == 0 or job.k == 0 or (attention and job.heads == 0):
        return JobError.ZERO_DIM
    if max(job.m, job.n, job.k) > e.max_dim:
        return JobError.DIM_LIMIT
    if attention and (job.k > e.vec_len or job.n > e.max_seq):
        return JobError.DIM_LIMIT
    if job.n % 4 or job.k % 4 or (attention and job.n % e.n_pe):
        return JobError.GRANULE
    tensors = job_tensors(job)
    for _, addr, stride, hstride, heads, _, _ in tensors:
        if addr % 4 or stride % 4 or (heads > 1 and hstride % 4):
            return JobError.MISALIGNED
    size = cfg.memory.size_bytes
    for _, addr, stride, hstride, heads, rows, row_bytes in tensors:
        last = addr + (heads - 1) * hstride + (rows - 1) * stride + row_bytes - 1
        if last >= size:
            return JobError.OUT_OF_RANGE
    return JobError.NONE


def read_matrix(mem: np.ndarray, addr: int, stride: int, rows: int, cols: int) -> np.ndarray:
    """``rows`` x ``cols`` int8 at ``addr`` with row stride ``stride`` (bytes), as int64."""
    idx = addr + np.arange(rows)[:, None] * stride + np.arange(cols)[None, :]
    return mem[idx].view(np.int8).astype(np.int64)


def write_matrix(mem: np.ndarray, addr: int, stride: int, values: np.ndarray) -> None:
    """Store int8 ``values`` (rows, cols) at ``addr`` with row stride ``stride``."""
    rows, cols = values.shape
    idx = addr + np.arange(rows)[:, None] * stride + np.arange(cols)[None, :]
    mem[idx] = np.asarray(values, dtype=np.int64).astype(np.int8).view(np.uint8)


def _read_params(mem: np.ndarray, addr: int, count: int) -> dict[str, np.ndarray]:
    words = mem[addr : addr + count * PARAM_RECORD_BYTES].view("<u4").reshape(count, 4)
    words = words.astype(np.int64)
    w1 = words[:, 1]
    return {
        "bias": np.where(words[:, 0] >= 1 << 31, words[:, 0] - (1 << 32), words[:, 0]),
        "mult": w1 & 0xFF,
        "shift": (w1 >> 8) & 0x1F,
        "add": np.array([_s8(int(v)) for v in (w1 >> 16) & 0xFF], dtype=np.int64),
        "gamma": np.where(
            words[:, 2] & 0x8000, (words[:, 2] & 0xFFFF) - (1 << 16), words[:, 2] & 0xFFFF
        ),
        "beta": np.where(words[:, 3] >= 1 << 31, words[:, 3] - (1 << 32), words[:, 3]),
    }


def run_job(mem: np.ndarray, job: Job, cfg: ClusterConfig) -> JobError:
    """Apply ``job`` to the L1 image ``mem`` (uint8, modified in place).

    A rejected job changes nothing and returns its error code.
    """
    err = check_job(job, cfg)
    if err != JobError.NONE:
        return err
    e = cfg.engine
    if job.op == Op.GEMM:
        x = read_matrix(mem, job.a_addr, job.a_stride, job.m, job.k)
        wt = read_matrix(mem, job.b_addr, job.b_stride, job.n, job.k)
        per_row = bool(job.flags & FLAG_PER_ROW)
        p = _read_params(mem, job.p_addr, job.m if per_row else job.n)
        if per_row:  # parameters follow the rows: broadcast along the columns
            p = {key: v[:, None] for key, v in p.items()}
        residual = None
        if job.flags & FLAG_RESIDUAL:
            r = read_matrix(mem, job.d_addr, job.d_stride, job.m, job.n)
            residual = golden.Residual(r, job.res_y_mult, job.res_r_mult, job.res_shift)
        norm = (
            golden.Affine(p["gamma"], p["beta"], job.aff_shift) if job.flags & FLAG_AFFINE else None
        )
        y = golden.gemm(
            x,
            wt.T,
            p["bias"],
            mult=p["mult"],
            shift=p["shift"],
            add=p["add"],
            residual=residual,
            norm=norm,
            relu_en=bool(job.flags & FLAG_RELU),
            acc_bits=e.acc_bits,
        )
        write_matrix(mem, job.c_addr, job.c_stride, y)
        return JobError.NONE
    qk = (job.qk[0], job.qk[1], job.qk[2])
    av = (job.av[0], job.av[1], job.av[2])
    outputs = []
    for h in range(job.heads):
        q = read_matrix(mem, job.a_addr + h * job.a_hstride, job.a_stride, job.m, job.k)
        k = read_matrix(mem, job.b_addr + h * job.b_hstride, job.b_stride, job.n, job.k)
        vt = read_matrix(mem, job.d_addr + h * job.d_hstride, job.d_stride, job.k, job.n)
        outputs.append(
            golden.attention_head(
                q, k, vt.T, qk_requant=qk, av_requant=av, group=e.n_pe, acc_bits=e.acc_bits
            )
        )
    # All heads read before any writes: an output overlapping an input gives the same answer.
    for h, o in enumerate(outputs):
        write_matrix(mem, job.c_addr + h * job.c_hstride, job.c_stride, o)
    return JobError.NONE
