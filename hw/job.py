"""Engine job descriptors: one definition for the RTL, the golden model and the driver.

A job is what firmware writes into the engine's job registers. Both kinds
operate on int8 tensors in L1, addressed by byte address and row stride.

``GEMM`` — ``Y = epilogue(X · Wᵀ + b)``::

    X  (m, k)  at a_addr, row stride a_stride
    Wᵀ (n, k)  at b_addr, row stride b_stride   (weights output-major, as HF Linear stores them)
    Y  (m, n)  at c_addr, row stride c_stride
    R  (m, n)  at d_addr, row stride d_stride   (residual, when FLAG_RESIDUAL)
    params     at p_addr: one 16-byte record per output channel (per row with FLAG_PER_ROW)

``ATTENTION`` — for each head h < heads, with ``q = m`` queries, ``n`` keys, head dim ``k``::

    Q  (m, k)  at a_addr + h * a_hstride, row stride a_stride
    K  (n, k)  at b_addr + h * b_hstride, row stride b_stride
    Vᵀ (k, n)  at d_addr + h * d_hstride, row stride d_stride   (values transposed)
    O  (m, k)  at c_addr + h * c_hstride, row stride c_stride
    O = requantize(ITAMax(requantize(Q · Kᵀ, qk)) · V, av)

    qk, av: the job's own ``qk``/``av``, or with FLAG_PER_HEAD head h's record of the
    table at p_addr (one 16-byte record per head, :data:`HEAD_RECORD_FIELDS`)

The per-channel parameter record (little endian, 16 bytes)::

    word 0  bias   int32
    word 1  mult   uint8 [7:0], shift [12:8], add int8 [23:16]
    word 2  gamma  int16 [15:0]        (FLAG_AFFINE)
    word 3  beta   int32               (FLAG_AFFINE)

:data:`PARAM_RECORD_FIELDS` is the one description of that record: :func:`pack_params`
and :func:`unpack_params` use it here, and the RTL's ``data.StructLayout`` of the record
(:func:`tinyattn.hw.job_layout.param_record_layout`) is built from it.

The per-head requantization record of an ATTENTION job with FLAG_PER_HEAD (little
endian, 16 bytes; :data:`HEAD_RECORD_FIELDS`, packed by :func:`pack_head_params`)::

    word 0  qk: mult uint8 [7:0], shift [12:8], add int8 [23:16]
    word 1  av: mult uint8 [7:0], shift [12:8], add int8 [23:16]
    words 2, 3 reserved (0)

Each word has the bit layout of the parameter record's requantization word, and both
lie on bits the parameter record uses: the engine keeps it in the same record file.

This module is plain Python (no Amaranth), so the golden job model and the firmware
generator import it without the HDL; the Amaranth views of a job (its queue layout,
the ``lib.enum`` of ops) are in :mod:`tinyattn.hw.job_layout`.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

import numpy as np

from tinyattn.config import ClusterConfig

__all__ = [
    "ATTENTION_FLAGS",
    "FLAGS_ALL",
    "FLAG_AFFINE",
    "FLAG_PER_HEAD",
    "FLAG_PER_ROW",
    "FLAG_RELU",
    "FLAG_RESIDUAL",
    "HEAD_RECORD_BYTES",
    "HEAD_RECORD_FIELDS",
    "PARAM_RECORD_BYTES",
    "PARAM_RECORD_FIELDS",
    "Job",
    "JobError",
    "Op",
    "job_fields",
    "pack_head_params",
    "pack_params",
    "unpack_head_params",
    "unpack_params",
]

PARAM_RECORD_BYTES = 16

#: The per-channel parameter record: ``name -> (bit offset, width, signed)`` in the
#: little-endian 128-bit record. Bits outside these fields are reserved (written 0).
PARAM_RECORD_FIELDS: dict[str, tuple[int, int, bool]] = {
    "bias": (0, 32, True),
    "mult": (32, 8, False),
    "shift": (40, 5, False),
    "add": (48, 8, True),
    "gamma": (64, 16, True),
    "beta": (96, 32, True),
}

HEAD_RECORD_BYTES = 16

#: The per-head requantization record of an ATTENTION job with :data:`FLAG_PER_HEAD`,
#: as :data:`PARAM_RECORD_FIELDS`. Word 1 has the parameter record's requantization
#: fields' offsets, word 0 the same fields 32 bits lower (inside its bias): no bit the
#: parameter record leaves reserved is used.
HEAD_RECORD_FIELDS: dict[str, tuple[int, int, bool]] = {
    "qk_mult": (0, 8, False),
    "qk_shift": (8, 5, False),
    "qk_add": (16, 8, True),
    "av_mult": (32, 8, False),
    "av_shift": (40, 5, False),
    "av_add": (48, 8, True),
}

# GEMM epilogue flags.
FLAG_RELU = 1 << 0
FLAG_RESIDUAL = 1 << 1
FLAG_AFFINE = 1 << 2
FLAG_PER_ROW = 1 << 3
FLAGS_ALL = FLAG_RELU | FLAG_RESIDUAL | FLAG_AFFINE | FLAG_PER_ROW

#: ATTENTION: ``qk``/``av`` of head h from record h of the table at ``p_addr``. It reuses
#: FLAG_PER_ROW's bit ("parameters follow the heads"): each op reads the flags its own way.
FLAG_PER_HEAD = 1 << 3
#: The flags an ATTENTION job may have, by name (the GEMM ones are :data:`FLAGS_ALL`).
ATTENTION_FLAGS: dict[str, int] = {"PER_HEAD": FLAG_PER_HEAD}


class Op(enum.IntEnum):
    """Job kinds. 0 and 3 are invalid (a job left at reset values is an error, not a no-op)."""

    GEMM = 1
    ATTENTION = 2


class JobError(enum.IntEnum):
    """Error codes of a rejected job, in the order the checks are made."""

    NONE = 0
    UNKNOWN_OP = 1  #: op is not GEMM or ATTENTION, or a flag it does not have is set
    ZERO_DIM = 2  #: m, n, k or heads is zero
    DIM_LIMIT = 3  #: a dimension exceeds max_dim, or attention k > vec_len / n > max_seq
    GRANULE = 4  #: n or k not a multiple of 4, or attention n not a multiple of n_pe
    MISALIGNED = 5  #: an address or stride is not a multiple of 4
    OUT_OF_RANGE = 6  #: a tensor reaches beyond L1


def job_fields(cfg: ClusterConfig) -> dict[str, int | dict[str, int]]:
    """Bit widths of the job descriptor as the engine's job queue holds it, in field order.

    Every field is unsigned; ``qk`` and ``av`` are ``{"mult", "shift", "add"}`` groups
    (``add`` holds a signed int8's bit pattern). The RTL's layout
    (:func:`tinyattn.hw.job_layout.job_layout`) and the field checks of the golden
    model are built from this.
    """
    e = cfg.engine
    addr = cfg.memory.size_bytes.bit_length()  # one bit more: catches overflow
    stride = 24
    dim = max(16, e.max_dim.bit_length())
    requant = {"mult": 8, "shift": 5, "add": 8}
    return {
        "op": 2,
        "flags": 4,
        "m": dim,
        "n": dim,
        "k": dim,
        "heads": 8,
        "a_addr": addr,
        "b_addr": addr,
        "c_addr": addr,
        "d_addr": addr,
        "p_addr": addr,
        "a_stride": stride,
        "b_stride": stride,
        "c_stride": stride,
        "d_stride": stride,
        "a_hstride": stride,
        "b_hstride": stride,
        "c_hstride": stride,
        "d_hstride": stride,
        "qk": dict(requant),  # attention: Q·Kᵀ requantization
        "av": dict(requant),  # attention: P·V requantization
        "res_y_mult": 8,  # GEMM residual add
        "res_r_mult": 8,
        "res_shift": 5,
        "aff_shift": 5,  # GEMM per-channel affine
    }


@dataclass(frozen=True)
class Job:
    """A job as firmware would program it. Unused fields stay 0.

    ``qk`` and ``av`` are ``(mult, shift, add)`` with ``add`` as a signed int8; an
    ATTENTION job with :data:`FLAG_PER_HEAD` ignores them (its table at ``p_addr`` has them).
    """

    op: int
    m: int
    n: int
    k: int
    heads: int = 1
    flags: int = 0
    a_addr: int = 0
    b_addr: int = 0
    c_addr: int = 0
    d_addr: int = 0
    p_addr: int = 0
    a_stride: int = 0
    b_stride: int = 0
    c_stride: int = 0
    d_stride: int = 0
    a_hstride: int = 0
    b_hstride: int = 0
    c_hstride: int = 0
    d_hstride: int = 0
    qk: tuple[int, int, int] = (0, 0, 0)
    av: tuple[int, int, int] = (0, 0, 0)
    res_y_mult: int = 0
    res_r_mult: int = 0
    res_shift: int = 0
    aff_shift: int = 0

    def payload(self) -> dict[str, object]:
        """Field values for :func:`job_layout` (signed ``add`` as its 8-bit pattern)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in ("qk", "av"):
            mult, shift, add = d[key]  # type: ignore[misc]
            d[key] = {"mult": mult, "shift": shift, "add": add & 0xFF}
        return d

    def replace(self, **changes: object) -> Job:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def pack_params(
    bias: np.ndarray,
    mult: np.ndarray,
    shift: np.ndarray,
    add: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
) -> bytes:
    """Per-channel parameter records (:data:`PARAM_RECORD_FIELDS`), little endian.

    Values are taken modulo their field width (two's complement for signed fields).
    """
    n = len(bias)
    values = {
        "bias": bias,
        "mult": mult,
        "shift": shift,
        "add": add,
        "gamma": np.zeros(n, np.int64) if gamma is None else gamma,
        "beta": np.zeros(n, np.int64) if beta is None else beta,
    }
    return _pack_records(PARAM_RECORD_FIELDS, PARAM_RECORD_BYTES, values)


def _pack_records(
    fields: dict[str, tuple[int, int, bool]], record_bytes: int, values: dict[str, np.ndarray]
) -> bytes:
    """``len(values[...])`` records of ``fields``; values modulo their field width."""
    n = len(next(iter(values.values())))
    words = np.zeros((n, record_bytes // 4), dtype=np.uint64)
    for name, (offset, width, _) in fields.items():
        field = np.asarray(values[name], np.int64).astype(np.uint64) & np.uint64((1 << width) - 1)
        words[:, offset // 32] |= field << np.uint64(offset % 32)
    return words.astype("<u4").tobytes()


def _unpack_records(
    fields: dict[str, tuple[int, int, bool]],
    record_bytes: int,
    records: bytes | np.ndarray,
    count: int,
) -> dict[str, np.ndarray]:
    raw = np.frombuffer(bytes(records[: count * record_bytes]), dtype="<u4")
    words = raw.reshape(count, record_bytes // 4).astype(np.int64)
    out = {}
    for name, (offset, width, signed) in fields.items():
        field = (words[:, offset // 32] >> (offset % 32)) & ((1 << width) - 1)
        if signed:
            field = np.where(field >> (width - 1), field - (1 << width), field)
        out[name] = field
    return out


def unpack_params(records: bytes | np.ndarray, count: int) -> dict[str, np.ndarray]:
    """The fields of ``count`` parameter records (int64 arrays; signed fields sign-extended)."""
    return _unpack_records(PARAM_RECORD_FIELDS, PARAM_RECORD_BYTES, records, count)


def pack_head_params(qk: list[tuple[int, int, int]], av: list[tuple[int, int, int]]) -> bytes:
    """The per-head requantization table of an ATTENTION job with :data:`FLAG_PER_HEAD`.

    ``qk[h]`` and ``av[h]`` are head h's ``(mult, shift, add)``; one
    :data:`HEAD_RECORD_FIELDS` record per head. ``ValueError`` if the lists differ in
    length or are empty.
    """
    if len(qk) != len(av) or not qk:
        raise ValueError(
            f"pack_head_params: {len(qk)} qk and {len(av)} av requantizations; give one "
            "(mult, shift, add) of each per head, at least one head"
        )
    values = {
        f"{which}_{part}": np.array([rq[i] for rq in table], np.int64)
        for which, table in (("qk", qk), ("av", av))
        for i, part in enumerate(("mult", "shift", "add"))
    }
    return _pack_records(HEAD_RECORD_FIELDS, HEAD_RECORD_BYTES, values)


def unpack_head_params(
    records: bytes | np.ndarray, heads: int
) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """``(qk, av)`` of each of ``heads`` records of a per-head table (add sign-extended)."""
    f = _unpack_records(HEAD_RECORD_FIELDS, HEAD_RECORD_BYTES, records, heads)
    return [
        tuple(  # type: ignore[misc]
            (int(f[f"{w}_mult"][h]), int(f[f"{w}_shift"][h]), int(f[f"{w}_add"][h]))
            for w in ("qk", "av")
        )
        for h in range(heads)
    ]
