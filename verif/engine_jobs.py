"""Random but well-formed engine jobs laid out in an L1 image, for benches and benchmarks.

Each generator writes its operands into the image, returns the :class:`Job`,
and picks requantization parameters that keep most outputs inside int8, so a
bit-exact comparison checks real arithmetic rather than saturation.
"""

from __future__ import annotations

import math

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.hw.job import (
    FLAG_PER_HEAD,
    FLAG_PER_ROW,
    FLAG_RESIDUAL,
    HEAD_RECORD_BYTES,
    PARAM_RECORD_BYTES,
    Job,
    Op,
    pack_head_params,
    pack_params,
)
from tinyattn.verif.engine_model import write_matrix

__all__ = ["Allocator", "attention_dims", "gemm_dims", "random_attention", "random_gemm"]


class Allocator:
    """Bump allocator over L1 with random word gaps; raises ``MemoryError`` when full."""

    def __init__(self, size: int, rng: np.random.Generator, start: int = 0) -> None:
        self.size = size
        self.rng = rng
        self.top = start

    def take(self, nbytes: int) -> int:
        addr = self.top + 4 * int(self.rng.integers(0, 4))
        end = addr + ((nbytes + 3) & ~3)
        if end > self.size:
            raise MemoryError(f"L1 full: need {nbytes} bytes at {addr:#x}, size {self.size:#x}")
        self.top = end
        return addr

    def matrix(self, rows: int, cols: int) -> tuple[int, int]:
        """Room for an int8 (rows, cols) matrix; returns (addr, row stride)."""
        stride = ((cols + 3) & ~3) + 4 * int(self.rng.integers(0, 3))
        return self.take((rows - 1) * stride + cols), stride


def _dim(
    rng: np.random.Generator,
    step: int,
    granule: int,
    top: int,
    ragged: bool | None,
    *,
    one_tile: bool = False,
) -> int:
    """A random multiple of ``granule`` in ``granule..top``: ragged (no multiple of
    ``step``) or aligned as asked when the range has one, else any; None: any. With
    ``one_tile`` an aligned value is the smallest one (the cheapest)."""
    values = np.arange(granule, top + 1, granule)
    if ragged is not None:
        wanted = values[(values % step != 0) == ragged]
        if not ragged and one_tile:
            wanted = wanted[:1]
        values = wanted if wanted.size else values
    return int(rng.choice(values))


def gemm_dims(
    cfg: ClusterConfig,
    rng: np.random.Generator,
    ragged: tuple[bool | None, bool | None, bool | None] = (None, None, None),
    *,
    tiles: int = 2,
) -> tuple[int, int, int]:
    """Random GEMM (m, n, k): up to ``tiles`` tiles and a ragged part more each way.

    ``ragged`` asks for each of m (against ``tile_m``), n and k (against ``vec_len``)
    to be ragged (True) or a whole number of tiles (False); None leaves it random.
    """
    e = cfg.engine
    return (
        _dim(rng, e.tile_m, 1, tiles * e.tile_m + 2, ragged[0]),
        _dim(rng, e.vec_len, 4, tiles * e.vec_len + 4, ragged[1]),
        _dim(rng, e.vec_len, 4, tiles * e.vec_len + 4, ragged[2]),
    )


def attention_dims(
    cfg: ClusterConfig,
    rng: np.random.Generator,
    ragged: tuple[bool | None, bool | None, bool | None] = (None, None, None),
    *,
    tiles: int = 2,
    max_keys: int | None = None,
) -> tuple[int, int, int]:
    """Random attention (queries, keys, head dimension) as :func:`gemm_dims` asks:
    queries up to ``tiles`` query tiles and 2 more, keys multiples of ``n_pe`` up to
    ``max_keys`` (default ``max_seq``; raggedness against ``vec_len``, the P.V chunk),
    head dimension up to ``vec_len``. Aligned queries and keys are one tile (``tile_m``,
    ``vec_len``): larger ones cost many cycles at the default configuration and add
    nothing a ragged multi-tile job does not."""
    e = cfg.engine
    keys = min(max_keys or e.max_seq, e.max_seq)
    return (
        _dim(rng, e.tile_m, 1, tiles * e.tile_m + 2, ragged[0], one_tile=True),
        _dim(rng, e.vec_len, e.n_pe, max(keys, e.n_pe), ragged[1], one_tile=True),
        _dim(rng, e.vec_len, 4, e.vec_len, ragged[2]),
    )


def _shift_for(typical: float, mult: np.ndarray, target: float = 48.0) -> np.ndarray:
    """Shifts that bring ``typical * mult`` to about ``target`` (int8, little saturation)."""
    est = np.maximum(typical * np.maximum(mult, 1) / target, 1.0)
    return np.clip(np.round(np.log2(est)), 0, 31).astype(np.int64)


def random_gemm(
    mem: np.ndarray,
    cfg: ClusterConfig,
    rng: np.random.Generator,
    *,
    m: int,
    n: int,
    k: int,
    flags: int | None = None,
    alloc: Allocator | None = None,
) -> Job:
    """Lay out a random GEMM of (m, n, k) in ``mem`` and return its job."""
    alloc = alloc or Allocator(len(mem), rng)
    if flags is None:
        flags = int(rng.integers(0, 16))
    per_row = bool(flags & FLAG_PER_ROW)
    channels = m if per_row else n
    a_addr, a_stride = alloc.matrix(m, k)
    b_addr, b_stride = alloc.matrix(n, k)
    c_addr, c_stride = alloc.matrix(m, n)
    p_addr = alloc.take(channels * PARAM_RECORD_BYTES)
    write_matrix(mem, a_addr, a_stride, rng.integers(-128, 128, (m, k)))
    write_matrix(mem, b_addr, b_stride, rng.integers(-128, 128, (n, k)))
    mult = rng.integers(1, 256, channels)
    typical = 74 * 74 * math.sqrt(k)
    shift = _shift_for(typical, mult)
    bias = rng.integers(-int(typical), int(typical) + 1, channels)
    add = rng.integers(-8, 9, channels)
    gamma = rng.integers(-(1 << 12), 1 << 12, channels)
    beta = rng.integers(-(1 << 14), 1 << 14, channels)
    params = np.frombuffer(pack_params(bias, mult, shift, add, gamma, beta), dtype=np.uint8)
    mem[p_addr : p_addr + params.size] = params
    job = Job(
        op=Op.GEMM,
        m=m,
        n=n,
        k=k,
        flags=flags,
        a_addr=a_addr,
        a_stride=a_stride,
        b_addr=b_addr,
        b_stride=b_stride,
        c_addr=c_addr,
        c_stride=c_stride,
        p_addr=p_addr,
        aff_shift=12,
    )
    if flags & FLAG_RESIDUAL:
        d_addr, d_stride = alloc.matrix(m, n)
        write_matrix(mem, d_addr, d_stride, rng.integers(-128, 128, (m, n)))
        job = job.replace(
            d_addr=d_addr,
            d_stride=d_stride,
            res_y_mult=int(rng.integers(64, 256)),
            res_r_mult=int(rng.integers(64, 256)),
            res_shift=9,
        )
    return job


def random_attention(
    mem: np.ndarray,
    cfg: ClusterConfig,
    rng: np.random.Generator,
    *,
    m: int,
    n: int,
    k: int,
    heads: int,
    per_head: bool = False,
    alloc: Allocator | None = None,
) -> Job:
    """Lay out a random multi-head attention in ``mem`` and return its job.

    Heads sit side by side in the rows, as MobileBERT's projections produce
    them: Q (m, heads*k), K (n, heads*k), O (m, heads*k), and Vᵀ (heads*k, n).
    With ``per_head`` the job has ``FLAG_PER_HEAD`` and a table of requantizations that
    differ from head to head (and random ``qk``/``av`` in the job, which it must ignore).
    """
    alloc = alloc or Allocator(len(mem), rng)
    width = heads * k
    a_addr, a_stride = alloc.matrix(m, width)
    b_addr, b_stride = alloc.matrix(n, width)
    d_addr, d_stride = alloc.matrix(width, n)
    c_addr, c_stride = alloc.matrix(m, width)
    write_matrix(mem, a_addr, a_stride, rng.integers(-128, 128, (m, width)))
    write_matrix(mem, b_addr, b_stride, rng.integers(-128, 128, (n, width)))
    write_matrix(mem, d_addr, d_stride, rng.integers(-128, 128, (width, n)))
    requants = [_attention_requant(rng, k) for _ in range(heads if per_head else 1)]
    if per_head:
        # Every head's pair differs from head 0's (a head reading another's record fails).
        for h in range(1, heads):
            while requants[h] == requants[0]:
                requants[h] = _attention_requant(rng, k)
    qk, av = _attention_requant(rng, k) if per_head else requants[0]
    p_addr = 0
    if per_head:
        p_addr = alloc.take(heads * HEAD_RECORD_BYTES)
        table = pack_head_params([q for q, _ in requants], [a for _, a in requants])
        mem[p_addr : p_addr + len(table)] = np.frombuffer(table, np.uint8)
    return Job(
        op=Op.ATTENTION,
        m=m,
        n=n,
        k=k,
        heads=heads,
        a_addr=a_addr,
        a_stride=a_stride,
        a_hstride=k,
        b_addr=b_addr,
        b_stride=b_stride,
        b_hstride=k,
        c_addr=c_addr,
        c_stride=c_stride,
        c_hstride=k,
        d_addr=d_addr,
        d_stride=d_stride,
        d_hstride=k * d_stride,
        flags=FLAG_PER_HEAD if per_head else 0,
        p_addr=p_addr,
        qk=qk,
        av=av,
    )


def _attention_requant(
    rng: np.random.Generator, k: int
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Random (qk, av) requantizations for head dimension ``k``: logits in ITAMax units
    (one step halves a probability) spread about +-8, outputs mostly inside int8."""
    qk_mult = int(rng.integers(64, 256))
    qk_shift = int(_shift_for(74 * 74 * math.sqrt(k), np.array([qk_mult]), 8.0)[0])
    av_mult = int(rng.integers(64, 256))
    av_shift = int(_shift_for(255 * 74 / 2, np.array([av_mult]), 48.0)[0])
    return (
        (qk_mult, qk_shift, int(rng.integers(-4, 5))),
        (av_mult, av_shift, int(rng.integers(-4, 5))),
    )
