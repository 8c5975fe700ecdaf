"""The job interface as the RTL sees it: Amaranth layouts and enums of :mod:`tinyattn.hw.job`.

:mod:`tinyattn.hw.job` is plain Python, the one description of jobs for the golden model
and the firmware generator; this module builds its hardware views from it, so the two
cannot drift apart (``tests/test_job_interface.py`` checks that they agree).
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

from tinyattn.config import ClusterConfig

from .job import (
    HEAD_RECORD_BYTES,
    HEAD_RECORD_FIELDS,
    PARAM_RECORD_BYTES,
    PARAM_RECORD_FIELDS,
    Op,
    job_fields,
)

__all__ = ["JobOp", "head_record_layout", "job_layout", "param_record_layout"]


class JobOp(enum.Enum, shape=unsigned(2)):
    """The ``op`` field of a job (the HDL twin of :class:`tinyattn.hw.job.Op`).

    0 and 3 are invalid: a job left at reset values is an error, not a no-op.
    """

    GEMM = int(Op.GEMM)
    ATTENTION = int(Op.ATTENTION)


def job_layout(cfg: ClusterConfig) -> data.StructLayout:
    """The job descriptor as the engine's job queue holds it (:func:`~tinyattn.hw.job.job_fields`).

    ``op`` is a plain 2-bit field rather than :class:`JobOp`: a queued job may carry an
    invalid op, which the job checker rejects; the engine compares it with :class:`JobOp`
    members.
    """

    def shape(width: int | dict[str, int]) -> object:
        if isinstance(width, dict):
            return data.StructLayout({name: unsigned(w) for name, w in width.items()})
        return unsigned(width)

    return data.StructLayout({name: shape(width) for name, width in job_fields(cfg).items()})


def _record_layout(
    fields_by_name: dict[str, tuple[int, int, bool]], record_bytes: int
) -> data.StructLayout:
    """A whole record of ``fields_by_name`` (bit offset, width, signed), reserved bits as
    ``_reservedN`` padding fields."""
    fields: dict[str, object] = {}
    at = 0
    for name, (offset, width, is_signed) in sorted(
        fields_by_name.items(), key=lambda item: item[1][0]
    ):
        if offset > at:
            fields[f"_reserved{at}"] = unsigned(offset - at)
        fields[name] = signed(width) if is_signed else unsigned(width)
        at = offset + width
    if at < record_bytes * 8:
        fields[f"_reserved{at}"] = unsigned(record_bytes * 8 - at)
    return data.StructLayout(fields)


def param_record_layout() -> data.StructLayout:
    """The 16-byte per-channel parameter record (:data:`~tinyattn.hw.job.PARAM_RECORD_FIELDS`).

    The layout spans the whole 128-bit record, reserved bits included (as ``_reservedN``
    padding fields), so a beat's bits can be viewed as records directly; the padding
    registers of a record file have no reader and synthesis removes them.
    """
    return _record_layout(PARAM_RECORD_FIELDS, PARAM_RECORD_BYTES)


def head_record_layout() -> data.StructLayout:
    """The 16-byte per-head requantization record (:data:`~tinyattn.hw.job.HEAD_RECORD_FIELDS`).

    As wide as the parameter record: the engine keeps it in a slot of the same record file
    and views that slot's bits through this layout.
    """
    return _record_layout(HEAD_RECORD_FIELDS, HEAD_RECORD_BYTES)
