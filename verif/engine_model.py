"""Golden model of the attention engine's jobs over an L1 image.

:func:`check_job` is the engine's job validation (same checks, same order, same
codes as the RTL) and :func:`run_job` its effect on L1. Both kinds of job are
defined in :mod:`tinyattn.hw.job`; the arithmetic is :mod:`tinyattn.verif.golden`.

A job field that its register cannot hold (a negative address, a stride wider than
24 bits, ...) is not a job the engine could reject: firmware cannot even write it.
:func:`check_job_fields` raises ``ValueError`` for it (naming the field, the value
and the range), and so do :func:`check_job` and :func:`run_job`. An L1 image of the
wrong size or dtype, and a matrix access outside the image, are ``ValueError`` too.
"""

from __future__ import annotations

import functools

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.hw.job import (
    ATTENTION_FLAGS,
    FLAG_AFFINE,
    FLAG_PER_HEAD,
    FLAG_PER_ROW,
    FLAG_RELU,
    FLAG_RESIDUAL,
    FLAGS_ALL,
    HEAD_RECORD_BYTES,
    PARAM_RECORD_BYTES,
    Job,
    JobError,
    Op,
    job_fields,
    unpack_head_params,
    unpack_params,
)
from tinyattn.verif import golden

__all__ = [
    "check_job",
    "check_job_fields",
    "job_extents",
    "job_tensors",
    "read_matrix",
    "run_job",
    "write_matrix",
]

_REQUANT_PARTS = ("mult", "shift", "add")


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
    tensors = [
        ("Q", job.a_addr, job.a_stride, job.a_hstride, job.heads, job.m, job.k),
        ("K", job.b_addr, job.b_stride, job.b_hstride, job.heads, job.n, job.k),
        ("Vt", job.d_addr, job.d_stride, job.d_hstride, job.heads, job.k, job.n),
        ("O", job.c_addr, job.c_stride, job.c_hstride, job.heads, job.m, job.k),
    ]
    if job.flags & FLAG_PER_HEAD:  # one requantization record per head
        tensors.append(("heads", job.p_addr, HEAD_RECORD_BYTES, 0, 1, job.heads, HEAD_RECORD_BYTES))
    return tensors


def job_extents(job: Job) -> dict[str, tuple[int, int]]:
    """The L1 byte range ``[lo, hi)`` each tensor of :func:`job_tensors` spans, by name."""
    return {
        name: (addr, addr + (heads - 1) * hstride + (rows - 1) * stride + row_bytes)
        for name, addr, stride, hstride, heads, rows, row_bytes in job_tensors(job)
    }


@functools.lru_cache(maxsize=16)
def _field_ranges(cfg: ClusterConfig) -> dict[str, tuple[int, int, str]]:
    """``field -> (lo, hi, what)`` for every scalar of a :class:`Job` (``"qk.add"`` ...)."""
    out: dict[str, tuple[int, int, str]] = {}
    for name, width in job_fields(cfg).items():
        parts = width if isinstance(width, dict) else {"": width}
        for sub, bits in parts.items():
            key = f"{name}.{sub}" if sub else name
            if sub == "add":  # the signed int8 offset, stored as its bit pattern
                out[key] = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1, f"signed {bits}-bit")
            else:
                out[key] = (0, (1 << bits) - 1, f"{bits}-bit")
    return out


def check_job_fields(job: Job, cfg: ClusterConfig) -> None:
    """``ValueError`` unless every field of ``job`` is an integer its register can hold.

    The ranges are the bit widths of :func:`tinyattn.hw.job.job_fields` for ``cfg``
    (``qk``/``av`` ``add`` is a signed int8). The message names the field, the value
    and the allowed range.
    """
    for key, (lo, hi, what) in _field_ranges(cfg).items():
        name, _, sub = key.partition(".")
        value = getattr(job, name)
        if sub:
            if not isinstance(value, tuple | list) or len(value) != len(_REQUANT_PARTS):
                raise ValueError(f"Job.{name} = {value!r}: must be a (mult, shift, add) triple")
            value = value[_REQUANT_PARTS.index(sub)]
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"Job.{key} = {value!r} is not an integer: use {lo}..{hi}")
        if not lo <= value <= hi:
            raise ValueError(
                f"Job.{key} = {value} does not fit its {what} register field: use {lo}..{hi}"
            )


def check_job(job: Job, cfg: ClusterConfig) -> JobError:
    """The engine's validation of ``job``; the first failing check gives the code.

    A field its register cannot hold is not a code but a ``ValueError``
    (:func:`check_job_fields`).
    """
    check_job_fields(job, cfg)
    e = cfg.engine
    attention = job.op == Op.ATTENTION
    allowed = sum(ATTENTION_FLAGS.values()) if attention else FLAGS_ALL
    if job.op not in (Op.GEMM, Op.ATTENTION) or job.flags & ~allowed:
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


def _check_image(mem: object, size: int | None, what: str) -> None:
    """``ValueError`` unless ``mem`` is a 1-D uint8 array (of ``size`` bytes if given)."""
    ok = isinstance(mem, np.ndarray) and mem.ndim == 1 and mem.dtype == np.uint8
    if ok and (size is None or mem.size == size):  # type: ignore[union-attr]
        return
    want = "a 1-D uint8 array" + ("" if size is None else f" of {size} bytes (the L1 size)")
    got = (
        f"shape {mem.shape} dtype {mem.dtype}"
        if isinstance(mem, np.ndarray)
        else type(mem).__name__
    )
    raise ValueError(f"{what}: the L1 image must be {want}, got {got}")


def _matrix_index(
    what: str, mem: np.ndarray, addr: int, stride: int, rows: int, cols: int
) -> np.ndarray:
    """Byte indices of a (rows, cols) matrix; ``ValueError`` if any is outside ``mem``."""
    _check_image(mem, None, what)
    for name, v in (("addr", addr), ("stride", stride), ("rows", rows), ("cols", cols)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
            raise ValueError(f"{what}: {name} = {v!r}, must be an integer >= 0 (bytes)")
    if rows and cols:
        last = addr + (rows - 1) * stride + cols - 1
        if last >= mem.size:
            raise ValueError(
                f"{what}: {rows}x{cols} bytes at {addr} with stride {stride} reach byte {last}, "
                f"beyond the {mem.size}-byte image"
            )
    return addr + np.arange(rows)[:, None] * stride + np.arange(cols)[None, :]


def read_matrix(mem: np.ndarray, addr: int, stride: int, rows: int, cols: int) -> np.ndarray:
    """``rows`` x ``cols`` int8 at ``addr`` with row stride ``stride`` (bytes), as int64.

    ``mem`` is a 1-D uint8 image; ``ValueError`` for a negative argument or bytes beyond it.
    """
    idx = _matrix_index("read_matrix", mem, addr, stride, rows, cols)
    return mem[idx].view(np.int8).astype(np.int64)


def write_matrix(mem: np.ndarray, addr: int, stride: int, values: np.ndarray) -> None:
    """Store int8 ``values`` (rows, cols) at ``addr`` with row stride ``stride``.

    ``values`` must be a 2-D integer array in -128..127 (no silent wrap-around);
    ``ValueError`` otherwise, or for a negative argument or bytes beyond ``mem``.
    """
    arr = np.asarray(values)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"write_matrix: values must be a 2-D integer array, got shape {arr.shape} "
            f"dtype {arr.dtype}"
        )
    rows, cols = arr.shape
    idx = _matrix_index("write_matrix", mem, addr, stride, rows, cols)
    if arr.size and (arr.min() < -128 or arr.max() > 127):
        raise ValueError(
            f"write_matrix: values span {arr.min()}..{arr.max()}, outside int8 -128..127"
        )
    mem[idx] = arr.astype(np.int8).view(np.uint8)


def _read_params(mem: np.ndarray, addr: int, count: int) -> dict[str, np.ndarray]:
    return unpack_params(mem[addr : addr + count * PARAM_RECORD_BYTES], count)


def run_job(mem: np.ndarray, job: Job, cfg: ClusterConfig) -> JobError:
    """Apply ``job`` to the L1 image ``mem`` (uint8, modified in place).

    A rejected job changes nothing and returns its error code. ``ValueError`` (nothing
    changed) if ``mem`` is not a uint8 image of ``cfg.memory.size_bytes`` or a field of
    ``job`` does not fit its register (:func:`check_job_fields`).
    """
    _check_image(mem, cfg.memory.size_bytes, "run_job")
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
    if job.flags & FLAG_PER_HEAD:
        requants = unpack_head_params(
            mem[job.p_addr : job.p_addr + job.heads * HEAD_RECORD_BYTES], job.heads
        )
    else:
        qk = (job.qk[0], job.qk[1], job.qk[2])
        av = (job.av[0], job.av[1], job.av[2])
        requants = [(qk, av)] * job.heads
    outputs = []
    for h, (qk, av) in enumerate(requants):
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
