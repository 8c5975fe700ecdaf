"""Lowering: a quantized MobileBERT as an ordered program of gathers and engine jobs.

:func:`lower` turns a :class:`~tinyattn.sw.quantize.QuantizedMobileBert` into a
:class:`Program` for one sequence length:

* named **tensors** (:class:`Tensor`): constant weights (``Wᵀ`` in HF's ``(out, in)``
  layout), GEMM parameter records (:func:`tinyattn.hw.job.pack_params`), attention head
  tables (:func:`tinyattn.hw.job.pack_head_params`), the embedding
  tables, the token-id inputs and every activation;
* ordered **steps**: :class:`Fill` and :class:`Gather` for the embedding lookups (row copies
  that a DMA or a core executes), then one :class:`EngineJob` per engine job, whose operands
  are tensor names with row/column offsets (:class:`Operand`) instead of L1 addresses.

The job mapping is ``docs/mobilebert-mapping.md``: every :class:`GemmOp` is one ``GEMM``
(``X (m, k) · Wᵀ (n, k)``, residual and NoNorm in the epilogue); the value projection is
produced transposed (``Vᵀ``, operands swapped, ``FLAG_PER_ROW``); every attention op is one
``ATTENTION`` job over all its heads (``FLAG_PER_HEAD``), each head's ``qk``/``av``
requantization a record of the op's head table (``<op>.heads``, a constant in L1 like the
GEMM parameter records). :func:`execute` runs a program on
the engine's golden model (:func:`tinyattn.verif.engine_model.run_job`) in one flat byte image;
its hidden states equal ``QuantizedMobileBert.forward`` bit for bit. ``docs/deploy.md``.

Only the public objects of :mod:`tinyattn.sw.intops` and ``QuantizedMobileBert``'s public
API are used; an op the engine cannot run is refused with a one-line :class:`LoweringError`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.hw.job import (
    FLAG_AFFINE,
    FLAG_PER_HEAD,
    FLAG_PER_ROW,
    FLAG_RELU,
    FLAG_RESIDUAL,
    HEAD_RECORD_BYTES,
    PARAM_RECORD_BYTES,
    Job,
    JobError,
    Op,
    pack_head_params,
    pack_params,
)
from tinyattn.sw.intops import AffineParams, AttentionOp, GemmOp, QuantizedFFN, QuantizedLayer
from tinyattn.sw.quantize import QuantizedMobileBert
from tinyattn.verif.golden import ACC_BITS_DEFAULT

__all__ = [
    "EngineJob",
    "ExecutionError",
    "Fill",
    "Gather",
    "LoweringError",
    "MacCount",
    "Operand",
    "Placement",
    "Program",
    "RowCopy",
    "Step",
    "Tensor",
    "execute",
    "flat_layout",
    "input_values",
    "lower",
    "unify_epilogues",
]

DType = Literal["int8", "int32", "param"]
Kind = Literal["weight", "params", "embedding_table", "input", "activation"]

#: Bytes per element: a ``param`` element is one 16-byte parameter record.
ITEMSIZE: dict[str, int] = {"int8": 1, "int32": 4, "param": PARAM_RECORD_BYTES}
#: Alignment of every row (the engine's address and stride granule).
ROW_ALIGN = 4
INT16 = (-(1 << 15), (1 << 15) - 1)
INT32 = (-(1 << 31), (1 << 31) - 1)


def _fits(a: np.ndarray, bounds: tuple[int, int]) -> bool:
    return bool(a.min() >= bounds[0] and a.max() <= bounds[1])


class LoweringError(ValueError):
    """The model (or a sequence length) cannot be mapped onto engine jobs; one line."""


class ExecutionError(RuntimeError):
    """The golden engine rejected a job of a program (a lowering bug, never the user's)."""


# --------------------------------------------------------------------------------------------
# Program
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Tensor:
    """A named 2-D tensor of the program.

    ``rows`` x ``cols`` elements of ``dtype`` (``"param"``: one 16-byte record per row, so
    ``cols == 1``). ``data`` holds the contents of constant tensors (``weight``, ``params``
    as uint8 bytes (rows, 16), ``embedding_table``) and is ``None`` otherwise.
    """

    name: str
    rows: int
    cols: int
    dtype: DType
    kind: Kind
    data: np.ndarray | None = None

    @property
    def row_bytes(self) -> int:
        return self.cols * ITEMSIZE[self.dtype]

    @property
    def pitch(self) -> int:
        """Default row stride in bytes: rows padded to 4 bytes (records stay contiguous)."""
        return -(-self.row_bytes // ROW_ALIGN) * ROW_ALIGN

    @property
    def nbytes(self) -> int:
        return self.rows * self.pitch

    @property
    def constant(self) -> bool:
        return self.data is not None


@dataclass(frozen=True)
class Placement:
    """Where a tensor lives: byte address of row 0 and row stride (pitch) in bytes."""

    addr: int
    pitch: int


@dataclass(frozen=True)
class Operand:
    """A job operand: tensor ``tensor`` from row ``row``, byte column ``col``.

    ``head_rows`` / ``head_cols`` give the head stride of attention operands (in rows of the
    tensor plus bytes): ``hstride = head_rows * pitch + head_cols``.
    """

    tensor: str
    row: int = 0
    col: int = 0
    head_rows: int = 0
    head_cols: int = 0

    def address(self, place: Placement) -> int:
        return place.addr + self.row * place.pitch + self.col

    def hstride(self, place: Placement) -> int:
        return self.head_rows * place.pitch + self.head_cols


@dataclass(frozen=True)
class RowCopy:
    """One row copy of a gather: table row ``src_row`` to destination row ``dst_row``."""

    src_row: int
    dst_row: int


@dataclass(frozen=True)
class Fill:
    """Set ``rows`` x ``cols`` bytes of ``dst`` from (``row``, byte ``col``) to ``value``."""

    name: str
    block: str
    dst: str
    row: int
    col: int
    rows: int
    cols: int
    value: int = 0

    kind = "fill"
    macs = 0


@dataclass(frozen=True)
class Gather:
    """Row copies from a constant table, selected by an input index tensor.

    For ``i < count`` with position ``p = src_pos + i``: table row
    ``index_pitch * index[p] + (p if add_position else 0)`` goes to row ``dst_row + i`` of
    ``dst`` at byte column ``dst_col`` (a whole table row, ``table.row_bytes`` bytes).
    """

    name: str
    block: str
    table: str
    index: str
    dst: str
    dst_row: int
    dst_col: int
    src_pos: int
    count: int
    index_pitch: int = 1
    add_position: bool = False

    kind = "gather"
    macs = 0

    def source_rows(self, index: np.ndarray) -> np.ndarray:
        """Table rows for the values of the index tensor (one per position), int64."""
        pos = self.src_pos + np.arange(self.count, dtype=np.int64)
        rows = self.index_pitch * np.asarray(index, np.int64).reshape(-1)[pos]
        return rows + pos if self.add_position else rows

    def copies(self, index: np.ndarray) -> list[RowCopy]:
        """The row copies for one sequence's index values."""
        src = self.source_rows(index)
        return [RowCopy(int(s), self.dst_row + i) for i, s in enumerate(src)]


@dataclass(frozen=True)
class EngineJob:
    """One engine job: a :class:`Job` template plus its operands by tensor name.

    ``job`` has every field but the addresses filled (strides from the tensors' default
    pitch); :meth:`bind` fills addresses and strides for a given placement. Operands:
    ``a`` X / Q, ``b`` Wᵀ / K, ``c`` Y / O, ``d`` residual / Vᵀ, ``p`` parameter records.
    ``op`` is the source op of the quantized model, ``name`` the job's own name.
    """

    name: str
    block: str
    op: str
    job: Job
    a: Operand
    b: Operand
    c: Operand
    d: Operand | None = None
    p: Operand | None = None

    @property
    def kind(self) -> str:
        return "gemm" if self.job.op == Op.GEMM else "attention"

    @property
    def macs(self) -> int:
        """Useful MACs: ``m n k`` for a GEMM, ``2 m n k`` per head for attention."""
        j = self.job
        return j.m * j.n * j.k if j.op == Op.GEMM else 2 * j.heads * j.m * j.n * j.k

    def operands(self) -> dict[str, Operand]:
        """The used operands by field letter (``"a"`` .. ``"p"``)."""
        ops = {"a": self.a, "b": self.b, "c": self.c, "d": self.d, "p": self.p}
        return {k: v for k, v in ops.items() if v is not None}

    def bind(self, placements: Mapping[str, Placement]) -> Job:
        """The job with L1 addresses, strides and head strides for ``placements``."""
        changes: dict[str, object] = {}
        for key, operand in self.operands().items():
            place = placements[operand.tensor]
            changes[f"{key}_addr"] = operand.address(place)
            if key != "p":
                changes[f"{key}_stride"] = place.pitch
                if self.job.op == Op.ATTENTION:
                    changes[f"{key}_hstride"] = operand.hstride(place)
        return self.job.replace(**changes)


Step = Fill | Gather | EngineJob


@dataclass(frozen=True)
class MacCount:
    """Useful MACs: per step (program order), per block (``embeddings``, ``layer0``, ...)."""

    per_step: tuple[int, ...]
    per_block: dict[str, int]
    total: int


@dataclass(frozen=True, eq=False)
class Program:
    """Tensors and ordered steps of one lowered model at sequence length ``seq_len``.

    ``inputs`` are the index tensors (``input_ids``, ``token_type_ids``), ``outputs`` the
    hidden states (``QuantizedMobileBert.state_names``), in order.
    """

    seq_len: int
    tensors: dict[str, Tensor]
    steps: tuple[Step, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def jobs(self) -> list[EngineJob]:
        return [s for s in self.steps if isinstance(s, EngineJob)]

    @property
    def macs(self) -> MacCount:
        per_block: dict[str, int] = {}
        for s in self.steps:
            per_block[s.block] = per_block.get(s.block, 0) + s.macs
        per_step = tuple(s.macs for s in self.steps)
        return MacCount(per_step, per_block, sum(per_step))

    def describe(self) -> str:
        """A table: step, name, kind, shape (m x n x k, or rows x bytes), MACs; then totals."""
        lines = [f"{'step':>4}  {'name':<36} {'kind':<9} {'shape':>15} {'MACs':>12}"]
        for i, s in enumerate(self.steps):
            if isinstance(s, EngineJob):
                j = s.job
                shape = f"{j.m}x{j.n}x{j.k}"
            elif isinstance(s, Gather):
                shape = f"{s.count}x{self.tensors[s.table].row_bytes} B"
            else:
                shape = f"{s.rows}x{s.cols} B"
            lines.append(f"{i:>4}  {s.name:<36} {s.kind:<9} {shape:>15} {s.macs:>12,}")
        jobs = self.jobs()
        gemms = sum(j.kind == "gemm" for j in jobs)
        lines.append(
            f"{len(self.steps)} steps: {gemms} GEMM + {len(jobs) - gemms} ATTENTION jobs, "
            f"{self.macs.total:,} MACs (S = {self.seq_len})"
        )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Epilogue parameters: per channel in the model, per job in the engine
# --------------------------------------------------------------------------------------------


def _per_channel(a: np.ndarray | int, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(a, np.int64), (n,)).copy()


def _reduce_pow2(values: list[np.ndarray], shift: np.ndarray) -> None:
    """Divide ``values`` and ``shift`` by 2 in place while exact: ``(2a, 2b, s+1) == (a, b, s)``."""
    for _ in range(32):
        even = shift > 0
        for v in values:
            even &= v % 2 == 0
        if not even.any():
            return
        for v in values:
            v[even] //= 2
        shift[even] -= 1


def _residual_fields(name: str, op: GemmOp, n: int) -> tuple[int, int, int]:
    """The one ``(y_mult, res_mult, shift)`` of the job, exact; else a LoweringError."""
    r = op.residual
    assert r is not None
    ym, rm, sh = (_per_channel(v, n) for v in (r.y_mult, r.res_mult, r.shift))
    _reduce_pow2([ym, rm], sh)
    triples = set(zip(ym.tolist(), rm.tolist(), sh.tolist(), strict=True))
    if len(triples) > 1:
        raise LoweringError(
            f"{name}: the residual add's (y_mult, res_mult, shift) differ between output "
            f"channels ({len(triples)} distinct), but a GEMM job has one res_y_mult, res_r_mult "
            "and res_shift: quantize with per_channel_epilogue=False"
        )
    y, res, s = triples.pop()
    if y > 255 or res > 255 or not 0 <= s <= 31:
        raise LoweringError(f"{name}: residual multipliers ({y}, {res}, {s}) out of range")
    return y, res, s


def _affine_fields(name: str, norm: AffineParams, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(gamma, beta, shift)`` with one shift for all channels, exact; else a LoweringError."""
    g, b, a = (_per_channel(v, n) for v in (norm.gamma, norm.beta, norm.shift))
    _reduce_pow2([g, b], a)
    top = int(a.max())
    # Raising a channel's shift is exact: (g 2^d, b 2^d, a + d) == (g, b, a).
    g, b = g << (top - a), b << (top - a)
    if not (_fits(g, INT16) and _fits(b, INT32)):
        raise LoweringError(
            f"{name}: the NoNorm shift differs between output channels ({int(a.min())}..{top}) "
            f"and gamma does not fit int16 at one shift, but a GEMM job has one aff_shift: "
            "round the model with unify_epilogues()"
        )
    return g, b, top


def unify_epilogues(qmodel: QuantizedMobileBert) -> QuantizedMobileBert:
    """A copy of ``qmodel`` whose GEMM affines have one shift per op, as a GEMM job holds it.

    The quantizer picks the affine (NoNorm) shift per output channel; the engine has one
    ``aff_shift`` per job. Where no common shift is exact, the largest shift at which every
    ``gamma`` still fits int16 is used and ``gamma`` / ``beta`` are rounded to it (at most half
    a unit of ``2**-shift``: a relative change below ``2**-14`` of ``gamma``). Scales are kept.
    Residual multipliers that differ per channel are left alone (:func:`lower` refuses them:
    quantize with ``per_channel_epilogue=False``). The result is its own integer reference:
    compare :func:`execute` with *its* ``forward``.
    """

    def fix(op: GemmOp) -> GemmOp:
        if op.norm is None:
            return op
        n = op.weight.shape[1]
        try:
            _affine_fields(op.name, op.norm, n)
            return op
        except LoweringError:
            pass
        g = _per_channel(op.norm.gamma, n).astype(np.float64)
        b = _per_channel(op.norm.beta, n).astype(np.float64)
        a = _per_channel(op.norm.shift, n)
        for top in range(int(a.max()), -1, -1):
            scale = np.exp2(top - a)
            g2, b2 = np.rint(g * scale), np.rint(b * scale)
            if _fits(g2, INT16) and _fits(b2, INT32):
                break
        norm = AffineParams(g2.astype(np.int16), b2.astype(np.int32), np.full(n, top, np.uint8))
        return dataclasses.replace(op, norm=norm)

    def fix_opt(op: GemmOp | None) -> GemmOp | None:
        return None if op is None else fix(op)

    def fix_layer(layer: QuantizedLayer) -> QuantizedLayer:
        return dataclasses.replace(
            layer,
            bottleneck_input=fix_opt(layer.bottleneck_input),
            bottleneck_attention=fix_opt(layer.bottleneck_attention),
            query=fix(layer.query),
            key=fix(layer.key),
            value=fix(layer.value),
            attention_output=fix(layer.attention_output),
            ffn=tuple(QuantizedFFN(fix(f.intermediate), fix(f.output)) for f in layer.ffn),
            intermediate=fix(layer.intermediate),
            output=fix(layer.output),
            output_bottleneck=fix_opt(layer.output_bottleneck),
        )

    emb = dataclasses.replace(
        qmodel.embeddings, transformation=fix(qmodel.embeddings.transformation)
    )
    return QuantizedMobileBert(
        qmodel.config,
        emb,
        [fix_layer(layer) for layer in qmodel.layers],
        qmodel.scales,
        qmodel.zero_points,
        qmodel.settings,
        qmodel.adjustments,
        qmodel.logit_fits,
    )


# --------------------------------------------------------------------------------------------
# Lowering
# --------------------------------------------------------------------------------------------


def _check_requant(name: str, what: str, req: tuple[int, int, int]) -> tuple[int, int, int]:
    mult, shift, add = (int(v) for v in req)
    if not (0 <= mult <= 255 and 0 <= shift <= 31 and -128 <= add <= 127):
        raise LoweringError(
            f"{name}: {what} requantization (mult={mult}, shift={shift}, add={add}) does not fit "
            "the job (uint8 mult, shift 0..31, int8 add)"
        )
    return mult, shift, add


class _Lowerer:
    def __init__(self, qmodel: QuantizedMobileBert, cfg: ClusterConfig, seq_len: int) -> None:
        self.q, self.cfg, self.S = qmodel, cfg, seq_len
        self.tensors: dict[str, Tensor] = {}
        self.steps: list[Step] = []
        # Value projections that attention reads as Vᵀ: tensor name -> attention op name.
        self.transposed: dict[str, str] = {}

    # ---- bookkeeping ------------------------------------------------------------------------

    def add(self, t: Tensor) -> Tensor:
        if t.name in self.tensors:
            raise LoweringError(f"{t.name}: two tensors of this name (op names must be unique)")
        self.tensors[t.name] = t
        return t

    def activation(self, consumer: str, name: str) -> Tensor:
        """An activation produced earlier, in the (S, C) layout."""
        if name in self.transposed:
            raise LoweringError(
                f"{consumer}: reads {name}, which the engine produces transposed (Vᵀ) for "
                f"{self.transposed[name]}; only attention may read a value projection"
            )
        t = self.tensors.get(name)
        if t is None or t.kind != "activation":
            raise LoweringError(f"{consumer}: reads tensor {name!r}, which no earlier step makes")
        return t

    # ---- checks -----------------------------------------------------------------------------

    def check_gemm(self, name: str, m: int, n: int, k: int, what: str) -> None:
        e = self.cfg.engine
        for dim, v in (("m", m), ("n", n), ("k", k)):
            if v > e.max_dim:
                raise LoweringError(
                    f"{name}: GEMM {dim} = {v} ({what}) exceeds the engine's max_dim {e.max_dim}: "
                    "use a config with a larger max_dim"
                )
        for dim, v in (("n", n), ("k", k)):
            if v % 4:
                raise LoweringError(
                    f"{name}: GEMM {dim} = {v} ({what}) is not a multiple of 4 (the engine's "
                    "granule): pad that dimension to a multiple of 4"
                )

    # ---- the model --------------------------------------------------------------------------

    def run(self) -> Program:
        q, cfg, S = self.q, self.cfg, self.S
        seq_len = S
        e = cfg.engine
        mc = q.config
        if mc.normalization_type != "no_norm":
            raise LoweringError(
                f"normalization_type={mc.normalization_type!r}: LayerNorm needs a mean and a "
                "variance per token, which no engine job computes; only NoNorm maps onto the "
                "GEMM's affine epilogue"
            )
        if mc.hidden_act != "relu":
            raise LoweringError(
                f"hidden_act={mc.hidden_act!r}: the GEMM epilogue has ReLU only; use a ReLU model"
            )
        if e.acc_bits != ACC_BITS_DEFAULT:
            raise LoweringError(
                f"engine acc_bits={e.acc_bits}: the integer model accumulates in "
                f"{ACC_BITS_DEFAULT} bits, so wrapped sums could differ; use acc_bits="
                f"{ACC_BITS_DEFAULT}"
            )
        if S < 1:
            raise LoweringError(f"sequence length {S}: must be at least 1")
        if seq_len > e.max_seq:
            raise LoweringError(
                f"sequence length {S} exceeds the engine's max_seq {e.max_seq} (keys of one "
                f"attention job): use seq_len <= {e.max_seq} or a config with a larger max_seq"
            )
        if S % e.n_pe:
            raise LoweringError(
                f"sequence length {S} is not a multiple of n_pe {e.n_pe} (attention keys come "
                f"in whole ITAMax groups): pad the sequence to {-(-S // e.n_pe) * e.n_pe}"
            )
        blocks: list[tuple[str, list[object]]] = [("embeddings", [q.embeddings.transformation])]
        blocks += [(layer.name, list(layer.ops())) for layer in q.layers]
        for _, ops in blocks:
            for op in ops:
                if isinstance(op, AttentionOp):
                    self.transposed[op.value] = op.name
        self.embeddings()
        for block, ops in blocks:
            for op in ops:
                if isinstance(op, GemmOp):
                    self.gemm(op, block)
                elif isinstance(op, AttentionOp):
                    self.attention(op, block)
                else:
                    name = getattr(op, "name", repr(op))
                    raise LoweringError(
                        f"{name}: a {type(op).__name__} has no engine job (the engine runs "
                        "GemmOp and AttentionOp only)"
                    )
        outputs = tuple(q.state_names)
        for name in outputs:
            self.activation("outputs", name)
        return Program(
            S, dict(self.tensors), tuple(self.steps), ("input_ids", "token_type_ids"), outputs
        )

    def embeddings(self) -> None:
        """Gathers for the trigram input and the position + token type rows."""
        emb, S = self.q.embeddings, self.S
        op = emb.transformation
        V, E = emb.word.shape
        T, P, H = emb.position_type.shape
        if S > P:
            raise LoweringError(
                f"sequence length {S} exceeds the model's {P} position embeddings: use "
                f"seq_len <= {P}"
            )
        ids = self.add(Tensor("input_ids", S, 1, "int32", "input"))
        types = self.add(Tensor("token_type_ids", S, 1, "int32", "input"))
        word = self.add(Tensor("embeddings.word_table", V, E, "int8", "embedding_table", emb.word))
        width = 3 * E if emb.trigram else E
        x = self.add(Tensor(op.input, S, width, "int8", "activation"))
        b = "embeddings"
        # Trigram: [e[t+1], e[t], e[t-1]], three shifted gathers side by side, int8 zeros
        # past the ends; else e[t] alone. (label, dst_row, src_pos, count) per gather.
        if emb.trigram:
            shifted = ((".next", 0, 1, S - 1), (".this", 0, 0, S), (".prev", 1, 0, S - 1))
        else:
            shifted = (("", 0, 0, S),)
        for blk, (label, dst_row, src_pos, count) in enumerate(shifted):
            if count:
                self.steps.append(
                    Gather(
                        name=f"{b}.gather.word{label}",
                        block=b,
                        table=word.name,
                        index=ids.name,
                        dst=x.name,
                        dst_row=dst_row,
                        dst_col=blk * E,
                        src_pos=src_pos,
                        count=count,
                    )
                )
        if emb.trigram:
            self.steps.append(Fill(f"{b}.zero.next", b, x.name, S - 1, 0, 1, E))
            self.steps.append(Fill(f"{b}.zero.prev", b, x.name, 0, 2 * E, 1, E))
        if op.residual_input is not None:
            # Row t * P + s of the flattened (types, positions, H) table.
            table = emb.position_type.reshape(T * P, H)
            pt = self.add(
                Tensor("embeddings.position_type_table", T * P, H, "int8", "embedding_table", table)
            )
            dst = self.add(Tensor(op.residual_input, S, H, "int8", "activation"))
            self.steps.append(
                Gather(
                    name=f"{b}.gather.position_type",
                    block=b,
                    table=pt.name,
                    index=types.name,
                    dst=dst.name,
                    dst_row=0,
                    dst_col=0,
                    src_pos=0,
                    count=S,
                    index_pitch=P,
                    add_position=True,
                )
            )

    def gemm(self, op: GemmOp, block: str) -> None:
        S = self.S
        x = self.activation(op.name, op.input)
        K, N = op.weight.shape
        if x.cols != K:
            raise LoweringError(f"{op.name}: input {op.input} has {x.cols} columns, weight {K}")
        flags, fields = 0, {}
        gamma = beta = None
        if op.relu:
            flags |= FLAG_RELU
        if op.residual is not None:
            flags |= FLAG_RESIDUAL
            y, r, s = _residual_fields(op.name, op, N)
            fields.update(res_y_mult=y, res_r_mult=r, res_shift=s)
        if op.norm is not None:
            flags |= FLAG_AFFINE
            gamma, beta, fields["aff_shift"] = _affine_fields(op.name, op.norm, N)
        req = op.requant
        mult, shift, add = (_per_channel(v, N) for v in (req.mult, req.shift, req.add))
        if mult.min() < 0 or mult.max() > 255 or shift.min() < 0 or shift.max() > 31:
            raise LoweringError(f"{op.name}: requantization does not fit uint8 mult / shift 0..31")
        bias = _per_channel(op.bias, N)
        records = pack_params(bias, mult, shift, add, gamma, beta)
        records_u8 = np.frombuffer(records, np.uint8).reshape(N, PARAM_RECORD_BYTES)
        w = self.add(Tensor(f"{op.name}.weight", N, K, "int8", "weight", op.weight.T.copy()))
        p = self.add(Tensor(f"{op.name}.params", N, 1, "param", "params", records_u8.copy()))
        d = None
        if op.name in self.transposed:
            # Vᵀ = W_v · Hᵀ: operands swapped, parameters follow the rows (value features).
            if op.residual_input is not None:
                raise LoweringError(
                    f"{op.name}: a value projection with a residual cannot be produced "
                    "transposed (the residual would have to be transposed too)"
                )
            y = self.add(Tensor(f"{op.name}.T", N, S, "int8", "activation"))
            m, n, k = N, S, K
            a, b = Operand(w.name), Operand(x.name)
            flags |= FLAG_PER_ROW
            self.check_gemm(op.name, m, n, k, "Vᵀ: value features x keys x hidden")
        else:
            y = self.add(Tensor(op.name, S, N, "int8", "activation"))
            m, n, k = S, N, K
            a, b = Operand(x.name), Operand(w.name)
            self.check_gemm(op.name, m, n, k, "tokens x output channels x input channels")
            if op.residual_input is not None:
                r_t = self.activation(op.name, op.residual_input)
                if (r_t.rows, r_t.cols) != (S, N):
                    raise LoweringError(
                        f"{op.name}: residual {r_t.name} is {r_t.rows}x{r_t.cols}, output {S}x{N}"
                    )
                d = Operand(r_t.name)
        tensors = {"a": a, "b": b, "c": Operand(y.name), "d": d}
        strides = {
            f"{key}_stride": self.tensors[o.tensor].pitch
            for key, o in tensors.items()
            if o is not None
        }
        job = Job(op=Op.GEMM, m=m, n=n, k=k, flags=flags, **strides, **fields)
        self.steps.append(
            EngineJob(op.name, block, op.name, job, a, b, Operand(y.name), d, Operand(p.name))
        )

    def attention(self, op: AttentionOp, block: str) -> None:
        S, e = self.S, self.cfg.engine
        seq_len = S
        if op.group != e.n_pe:
            raise LoweringError(
                f"{op.name}: quantized with ITAMax group {op.group}, but the engine's n_pe is "
                f"{e.n_pe}: quantize with group={e.n_pe}"
            )
        q = self.activation(op.name, op.query)
        k = self.activation(op.name, op.key)
        vt = self.tensors.get(f"{op.value}.T")
        if vt is None:
            raise LoweringError(
                f"{op.name}: its value {op.value!r} is not made by an earlier GEMM of the "
                "program, so it cannot be produced transposed (Vᵀ)"
            )
        T = q.cols
        if (q.rows, k.rows, vt.cols, k.cols, vt.rows) != (S, S, S, T, T):
            raise LoweringError(f"{op.name}: query, key and value shapes do not match")
        o = self.add(Tensor(op.name, S, T, "int8", "activation"))
        start = 0
        qk, av = [], []
        d = 0
        for hp in op.heads:
            c0, c1 = hp.columns
            # forward() concatenates the heads in order: their columns must tile [0, T).
            if c0 != start or c1 - c0 < 1 or c1 > T:
                raise LoweringError(
                    f"{hp.name}: columns [{c0}, {c1}) do not follow the previous head (at "
                    f"{start}) inside the {T} columns of {op.query}"
                )
            start = c1
            if d and c1 - c0 != d:
                raise LoweringError(
                    f"{hp.name}: head dimension {c1 - c0} differs from the first head's {d}; "
                    "one attention job runs heads of one dimension: give every head the same"
                )
            d = c1 - c0
            if d > e.vec_len or d % 4 or c0 % 4:
                raise LoweringError(
                    f"{hp.name}: head dimension {d} at column {c0} breaks the attention granule "
                    f"(head dim <= vec_len {e.vec_len}, multiple of 4, 4-byte aligned columns): "
                    "use heads of 4..vec_len columns in multiples of 4"
                )
            if seq_len > e.max_dim:
                raise LoweringError(f"{hp.name}: {S} queries exceed max_dim {e.max_dim}")
            qk.append(_check_requant(hp.name, "qk", hp.qk_requant))
            av.append(_check_requant(hp.name, "av", hp.av_requant))
        if start != T:
            raise LoweringError(f"{op.name}: the heads cover {start} of the {T} context columns")
        heads = len(op.heads)
        if heads > 255:
            raise LoweringError(f"{op.name}: {heads} heads; an attention job runs up to 255")
        table = np.frombuffer(pack_head_params(qk, av), np.uint8).reshape(heads, HEAD_RECORD_BYTES)
        p = self.add(Tensor(f"{op.name}.heads", heads, 1, "param", "params", table.copy()))
        job = Job(
            op=Op.ATTENTION,
            m=S,
            n=S,
            k=d,
            heads=heads,
            flags=FLAG_PER_HEAD,
            a_stride=q.pitch,
            b_stride=k.pitch,
            c_stride=o.pitch,
            d_stride=vt.pitch,
            a_hstride=d,
            b_hstride=d,
            c_hstride=d,
            d_hstride=d * vt.pitch,
        )
        self.steps.append(
            EngineJob(
                op.name,
                block,
                op.name,
                job,
                a=Operand(q.name, head_cols=d),
                b=Operand(k.name, head_cols=d),
                c=Operand(o.name, head_cols=d),
                d=Operand(vt.name, head_rows=d),
                p=Operand(p.name),
            )
        )


def lower(qmodel: QuantizedMobileBert, cfg: ClusterConfig, seq_len: int) -> Program:
    """The :class:`Program` of ``qmodel`` for sequences of ``seq_len`` tokens on ``cfg``.

    Raises
    ------
    LoweringError
        One line naming the op (or the sequence length), what is wrong and how to fix it:
        ``seq_len`` above ``max_seq`` or the model's positions, or not a multiple of ``n_pe``;
        LayerNorm, a non-ReLU activation or an unknown op; a dimension that breaks a GEMM or
        attention granule; epilogue parameters that differ per channel where a job has one.
    """
    return _Lowerer(qmodel, cfg, int(seq_len)).run()


# --------------------------------------------------------------------------------------------
# Reference execution on the engine's golden model
# --------------------------------------------------------------------------------------------


def flat_layout(program: Program) -> tuple[dict[str, Placement], int]:
    """Every tensor one after the other (bump allocator, default pitch); returns the size."""
    placements: dict[str, Placement] = {}
    top = 0
    for t in program.tensors.values():
        placements[t.name] = Placement(top, t.pitch)
        top += t.nbytes
    return placements, top


def _image_config(cfg: ClusterConfig, size: int) -> ClusterConfig:
    """``cfg`` with an L1 of at least ``size`` bytes (more bank words; engine unchanged).

    The flat image holds the whole program, so it may be larger than any cluster's L1
    window: it is the golden model's memory, not hardware. Its memory section is
    therefore copied without :class:`MemoryConfig`'s window check, which guards the
    configurations that become RTL.
    """
    mem = cfg.memory
    words = mem.bank_words
    while mem.n_banks * words * 4 < size:
        words *= 2
    if words > 1 << 20:
        raise ValueError(f"the program needs {size} bytes, more than an L1 image can hold")
    image_mem = copy.copy(mem)
    object.__setattr__(image_mem, "bank_words", words)
    image = copy.copy(cfg)
    object.__setattr__(image, "memory", image_mem)
    return image


def _write(mem: np.ndarray, place: Placement, t: Tensor, values: np.ndarray) -> None:
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(t.rows, t.row_bytes)
    view = mem[place.addr : place.addr + t.nbytes].reshape(t.rows, t.pitch)
    view[:, : t.row_bytes] = raw


def _read(mem: np.ndarray, place: Placement, t: Tensor) -> np.ndarray:
    view = mem[place.addr : place.addr + t.nbytes].reshape(t.rows, t.pitch)
    dtype = {"int8": np.int8, "int32": np.dtype("<i4"), "param": np.uint8}[t.dtype]
    return view[:, : t.row_bytes].copy().view(dtype)


def input_values(
    program: Program, input_ids: np.ndarray | None, token_type_ids: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Each of ``program.inputs`` as ``seq_len`` little-endian int32 values (``None``:
    zeros; a ``(1, S)`` batch of one is accepted). ``ValueError`` for the wrong shape or
    dtype, or a value outside the rows of a table the program gathers with it (the vocab)."""
    S = program.seq_len
    given = {"input_ids": input_ids, "token_type_ids": token_type_ids}
    out = {}
    for name in program.inputs:
        raw = given[name]
        arr = np.zeros(S, np.int64) if raw is None else np.asarray(raw)
        if arr.ndim == 2 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.shape != (S,) or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be {S} integers, got shape {arr.shape} {arr.dtype}")
        limits = [
            program.tensors[st.table].rows // st.index_pitch
            for st in program.steps
            if isinstance(st, Gather) and st.index == name
        ]
        if limits and (arr.min() < 0 or arr.max() >= min(limits)):
            raise ValueError(
                f"{name} values must be in [0, {min(limits)}) (the rows of its embedding "
                f"table), found {arr.min()}..{arr.max()}"
            )
        out[name] = arr.astype("<i4")
    return out


def execute(
    program: Program,
    cfg: ClusterConfig,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Run ``program`` on one sequence with the engine's golden model; the hidden states.

    All tensors go into one flat byte image (:func:`flat_layout`, an L1 as large as needed);
    gathers and fills run in NumPy, every engine job through
    :func:`tinyattn.verif.engine_model.run_job`. Returns the int8 ``(S, hidden)`` arrays of
    ``program.outputs`` (the embedding output, then each layer's output).

    Raises ``ValueError`` for ids of the wrong shape or range and :class:`ExecutionError` if
    the engine rejects a job.
    """
    from tinyattn.verif.engine_model import run_job  # imported late: only execution needs it

    S = program.seq_len
    placements, size = flat_layout(program)
    image_cfg = _image_config(cfg, size)
    mem = np.zeros(image_cfg.memory.size_bytes, np.uint8)
    for name, values in input_values(program, input_ids, token_type_ids).items():
        _write(mem, placements[name], program.tensors[name], values.reshape(S, 1))
    for t in program.tensors.values():
        if t.data is not None:
            _write(mem, placements[t.name], t, t.data)
    for step in program.steps:
        if isinstance(step, Fill):
            t, place = program.tensors[step.dst], placements[step.dst]
            view = mem[place.addr : place.addr + t.nbytes].reshape(t.rows, t.pitch)
            view[step.row : step.row + step.rows, step.col : step.col + step.cols] = step.value
        elif isinstance(step, Gather):
            table, tp = program.tensors[step.table], placements[step.table]
            index = _read(mem, placements[step.index], program.tensors[step.index]).reshape(-1)
            used = index[step.src_pos : step.src_pos + step.count]
            limit = table.rows // step.index_pitch
            if used.size and (used.min() < 0 or used.max() >= limit):
                raise ValueError(f"{step.index} values must be in [0, {limit}) for {step.name}")
            src = mem[tp.addr : tp.addr + table.nbytes].reshape(table.rows, table.pitch)
            dst_t, dp = program.tensors[step.dst], placements[step.dst]
            dst = mem[dp.addr : dp.addr + dst_t.nbytes].reshape(dst_t.rows, dst_t.pitch)
            rows = slice(step.dst_row, step.dst_row + step.count)
            cols = slice(step.dst_col, step.dst_col + table.row_bytes)
            dst[rows, cols] = src[step.source_rows(index), : table.row_bytes]
        else:
            job = step.bind(placements)
            err = run_job(mem, job, image_cfg)
            if err != JobError.NONE:
                raise ExecutionError(f"{step.name}: the engine rejected the job ({err.name})")
    return [_read(mem, placements[n], program.tensors[n]) for n in program.outputs]
