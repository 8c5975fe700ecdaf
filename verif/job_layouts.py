"""Jobs laid out in an L1 image, for benches and firmware scenarios that run them.

The tensors a job reads and writes as rectangles (:class:`Rect`), random job
dimensions for a configuration (:func:`job_dims`), and three random jobs (GEMM,
ATTENTION, GEMM) placed in one L1 image (:func:`layout_three_jobs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.hw.job import Job, Op
from tinyattn.verif.descriptors import Descriptor
from tinyattn.verif.engine_jobs import Allocator, random_attention, random_gemm
from tinyattn.verif.engine_model import job_tensors, read_matrix

__all__ = [
    "Rect",
    "bulk_descriptors",
    "job_dims",
    "job_inputs_outputs",
    "layout_three_jobs",
    "rect_mismatch",
    "useful_macs",
]


@dataclass(frozen=True)
class Rect:
    """An int8 tensor in L1: ``rows`` rows of ``cols`` bytes at ``addr``, ``stride`` apart."""

    name: str
    addr: int
    stride: int
    rows: int
    cols: int


def job_inputs_outputs(job: Job) -> tuple[list[Rect], list[Rect]]:
    """The L1 rectangles a job reads and writes (heads side by side, as laid out)."""
    if job.op == Op.GEMM:
        rects = [Rect(n, a, s, r, c) for n, a, s, _, _, r, c in job_tensors(job)]
        outs = [r for r in rects if r.name == "Y"]
        return [r for r in rects if r.name != "Y"], outs
    w = job.heads * job.k
    assert job.a_hstride == job.b_hstride == job.c_hstride == job.k
    assert job.d_hstride == job.k * job.d_stride
    ins = [
        Rect("Q", job.a_addr, job.a_stride, job.m, w),
        Rect("K", job.b_addr, job.b_stride, job.n, w),
        Rect("Vt", job.d_addr, job.d_stride, w, job.n),
    ]
    return ins, [Rect("O", job.c_addr, job.c_stride, job.m, w)]


def useful_macs(job: Job) -> int:
    if job.op == Op.GEMM:
        return job.m * job.n * job.k
    return 2 * job.heads * job.m * job.n * job.k


def job_dims(cfg: ClusterConfig, rng: np.random.Generator, small: bool) -> dict[str, Any]:
    """Random job dimensions: up to a tile and a ragged rest; ``small`` for slow simulators."""
    e = cfg.engine

    def upto(limit: int, granule: int = 1) -> int:
        return granule * int(rng.integers(1, max(1, limit // granule) + 1))

    if small:
        gemm = (max(4, e.tile_m // 4), e.vec_len // 2 + 4)
        att = (max(4, e.tile_m // 8), 2 * e.n_pe, 16, 2)
    else:
        gemm = (e.tile_m + 3, e.vec_len + 8)
        att = (e.tile_m + 3, e.max_seq, 32, 3)
    return {
        "gemm": lambda: (upto(gemm[0]), upto(gemm[1], 4), upto(gemm[1], 4)),
        "attention": lambda: (
            upto(att[0]),
            upto(att[1], e.n_pe),
            upto(min(e.vec_len, att[2]), 4),
            upto(att[3]),
        ),
    }


def layout_three_jobs(
    cfg: ClusterConfig, rng: np.random.Generator, job_space: int, small: bool, attempts: int = 20
) -> tuple[int, int, np.ndarray, np.ndarray, list[Job]]:
    """Three random jobs (GEMM, ATTENTION, GEMM) laid out in an L1 image below ``job_space``.

    Returns the job region [lo, hi) (64-byte multiple), the image with the operands,
    the same image with random bytes where the operands are (``bulk``), and the jobs.
    Random dimensions may not fit: up to ``attempts`` draws, then ``MemoryError``.
    """
    for _attempt in range(attempts - 1):
        try:
            return _layout_three_jobs(cfg, rng, job_space, small)
        except MemoryError:
            continue
    return _layout_three_jobs(cfg, rng, job_space, small)


def bulk_descriptors(lo: int, hi: int, l2_base: int, direction: int) -> Descriptor:
    """One 2-D transfer of L1 [lo, hi) (8 rows) to or from L2 at ``l2_base``."""
    rows = 8
    row_bytes = (hi - lo) // rows
    assert row_bytes % 4 == 0 and row_bytes * rows == hi - lo
    return Descriptor(direction, l2_base, lo, row_bytes, rows, row_bytes, row_bytes)


def _layout_three_jobs(
    cfg: ClusterConfig, rng: np.random.Generator, job_space: int, small: bool
) -> tuple[int, int, np.ndarray, np.ndarray, list[Job]]:
    size = cfg.memory.size_bytes
    lo = 64 * int(rng.integers(0, max(1, job_space // 64 // 32)))
    alloc = Allocator(job_space, rng, start=lo)
    img = rng.integers(0, 256, size, dtype=np.uint8)
    bulk = img.copy()  # the same bytes, except where the tensors go
    dims = job_dims(cfg, rng, small)
    m, n, k = dims["gemm"]()
    g1 = random_gemm(img, cfg, rng, m=m, n=n, k=k, alloc=alloc)
    m, n, k, heads = dims["attention"]()
    att = random_attention(img, cfg, rng, m=m, n=n, k=k, heads=heads, alloc=alloc)
    m, n, k = dims["gemm"]()
    g2 = random_gemm(img, cfg, rng, m=m, n=n, k=k, alloc=alloc)
    hi = lo + ((alloc.top - lo + 63) & ~63)
    if hi > job_space:
        raise MemoryError("job region")
    return lo, hi, img, bulk, [g1, att, g2]


def rect_mismatch(got: np.ndarray, want_l1: np.ndarray, r: Rect) -> str | None:
    """None when ``got`` (``r.rows`` x ``r.cols`` bytes) equals ``r`` in the L1 image
    ``want_l1``; else a description of how many bytes differ and the first of them."""
    exp = read_matrix(want_l1, r.addr, r.stride, r.rows, r.cols).astype(np.int8).view(np.uint8)
    bad = np.argwhere(got != exp)
    if not bad.size:
        return None
    row, col = (int(v) for v in bad[0])
    return (
        f"{len(bad)} bytes of {r.name} ({r.rows}x{r.cols} at L1 {r.addr:#x}) differ from the "
        f"golden model, first at row {row}, column {col}: got {got[row, col].view(np.int8)}, "
        f"want {exp[row, col].view(np.int8)}"
    )
