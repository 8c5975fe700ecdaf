"""Engine jobs and DMA descriptors as C99 initializers of the SDK's ``ta_job_t`` / ``ta_dma_t``.

A schedule computed in Python (a test scenario, a deployment plan) reaches firmware as
``static const`` tables in a generated header; the firmware walks them with the HAL.
Field names are those of :class:`~tinyattn.hw.job.Job` and of the DMA descriptor, so a
table entry reads like the job it describes. Output is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tinyattn.hw.dma_codes import Direction
from tinyattn.hw.job import Job, Op

__all__ = ["Transfer", "c_dma", "c_job", "c_table"]

_JOB_FIELDS = (
    "m",
    "n",
    "k",
    "a_addr",
    "a_stride",
    "a_hstride",
    "b_addr",
    "b_stride",
    "b_hstride",
    "c_addr",
    "c_stride",
    "c_hstride",
    "d_addr",
    "d_stride",
    "d_hstride",
    "p_addr",
)


class Transfer(Protocol):
    """A 2-D copy as the DMA's descriptor has it (e.g. the DMA bench's ``Descriptor``)."""

    direction: int
    l2_addr: int
    l1_addr: int
    row_bytes: int
    rows: int
    l2_stride: int
    l1_stride: int


def c_job(job: Job) -> str:
    """``job`` as a designated initializer of ``ta_job_t`` (fields left out are zero)."""
    parts = [f".op = TINYATTN_OP_{Op(job.op).name}"]
    if job.flags:
        parts.append(f".flags = {job.flags:#x}")
    if job.op == Op.ATTENTION:
        parts.append(f".heads = {job.heads}")
    parts += [f".{name} = {getattr(job, name)}" for name in _JOB_FIELDS if getattr(job, name)]
    if job.op == Op.ATTENTION:
        for name in ("qk", "av"):
            mult, shift, add = getattr(job, name)
            parts.append(f".{name} = {{{mult}, {shift}, {add}}}")
    for name in ("res_y_mult", "res_r_mult", "res_shift", "aff_shift"):
        if getattr(job, name):
            parts.append(f".{name} = {getattr(job, name)}")
    return "{" + ", ".join(parts) + "}"


def c_dma(t: Transfer) -> str:
    """``t`` as an initializer of ``ta_dma_t``."""
    return (
        f"{{.l2_addr = {t.l2_addr:#x}, .l1_addr = {t.l1_addr:#x}, .row_bytes = {t.row_bytes}, "
        f".rows = {t.rows}, .l2_stride = {t.l2_stride}, .l1_stride = {t.l1_stride}, "
        f".direction = TINYATTN_DMA_DIRECTION_{Direction(t.direction).name}}}"
    )


def c_table(ctype: str, name: str, entries: Sequence[str]) -> str:
    """``static const <ctype> <name>[] = {...};`` plus ``<NAME>_COUNT``, one entry a line."""
    body = "".join(f"    {e},\n" for e in entries)
    return (
        f"#define {name.upper()}_COUNT {len(entries)}u\n"
        f"static const {ctype} {name}[{max(1, len(entries))}] = {{\n{body}}};\n"
    )
