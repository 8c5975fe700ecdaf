"""The integer operations of the quantized MobileBERT, shared by the quantizer and the lowering.

:mod:`tinyattn.sw.quantize` builds these objects; :mod:`tinyattn.sw.lowering` turns them into
engine jobs. They hold integers only (NumPy integer arrays and Python ints, no scale) and run
with the bit-exact golden operations of :mod:`tinyattn.verif.golden`:

* :class:`GemmOp`: one engine ``GEMM`` (``golden.gemm``) with :class:`Requant`, an optional
  :class:`ResidualParams` residual add and :class:`AffineParams` (``NoNorm``), or ReLU;
* :class:`AttentionOp`: one ``golden.attention_head`` per :class:`HeadParams`;
* :class:`QuantizedFFN`, :class:`QuantizedLayer`, :class:`QuantizedEmbeddings`: how the ops
  of one encoder layer and of the embeddings hang together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tinyattn.verif import golden

__all__ = [
    "AffineParams",
    "AttentionOp",
    "GemmOp",
    "HeadParams",
    "QuantizedEmbeddings",
    "QuantizedFFN",
    "QuantizedLayer",
    "Requant",
    "ResidualParams",
]


@dataclass(frozen=True, eq=False)
class Requant:
    """Requantization ``sat8(floor(mult * acc / 2**shift + 1/2) + add)`` per output channel.

    ``mult`` (N,) uint8, ``shift`` (N,) uint8 in 0..31, ``add`` (N,) int8.
    """

    mult: np.ndarray
    shift: np.ndarray
    add: np.ndarray


@dataclass(frozen=True, eq=False)
class ResidualParams:
    """Residual add of a GEMM epilogue (:func:`golden.residual_add`), per output channel.

    ``z = sat8(floor((y_mult * y + res_mult * res) / 2**shift + 1/2))``; all (N,) uint8.
    """

    y_mult: np.ndarray
    res_mult: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True, eq=False)
class AffineParams:
    """``NoNorm`` as :func:`golden.affine`: ``sat8(floor((gamma*z + beta) / 2**shift + 1/2))``.

    ``gamma`` (N,) int16, ``beta`` (N,) int32 (|beta| < 2**30), ``shift`` (N,) uint8.
    """

    gamma: np.ndarray
    beta: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True, eq=False)
class GemmOp:
    """One engine GEMM job: ``out = epilogue(tensors[input] @ weight + bias)``.

    Attributes
    ----------
    name : stable op name, also the name of the output tensor (e.g. ``"layer0.ffn1.output"``).
    input : name of the (M, K) int8 input tensor.
    weight : (K, N) int8 (the transposed HF weight).
    bias : (N,) int32, at the accumulator scale (input zero point folded in).
    requant : :class:`Requant` of the accumulator.
    relu : apply ReLU to the int8 result (``golden.gemm(relu_en=True)``).
    residual_input : name of the (M, N) int8 residual tensor, or ``None``.
    residual : :class:`ResidualParams` (present iff ``residual_input`` is).
    norm : :class:`AffineParams` (``NoNorm``) or ``None``.
    """

    name: str
    input: str
    weight: np.ndarray
    bias: np.ndarray
    requant: Requant
    relu: bool = False
    residual_input: str | None = None
    residual: ResidualParams | None = None
    norm: AffineParams | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the tensors this op reads."""
        return (self.input,) if self.residual_input is None else (self.input, self.residual_input)

    def __call__(self, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        """Run the op with :func:`golden.gemm`: ``(M, K)`` int8 -> ``(M, N)`` int8."""
        res = None
        if self.residual is not None:
            if residual is None:
                raise ValueError(f"{self.name} needs its residual tensor {self.residual_input!r}")
            r = self.residual
            res = golden.Residual(residual, r.y_mult, r.res_mult, r.shift)
        norm = None
        if self.norm is not None:
            norm = golden.Affine(self.norm.gamma, self.norm.beta, self.norm.shift)
        q = self.requant
        return golden.gemm(
            x,
            self.weight,
            self.bias,
            mult=q.mult,
            shift=q.shift,
            add=q.add,
            residual=res,
            norm=norm,
            relu_en=self.relu,
        )

    def run(self, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run on named tensors (reads :attr:`inputs`)."""
        res = tensors[self.residual_input] if self.residual_input is not None else None
        return self(tensors[self.input], res)


@dataclass(frozen=True, eq=False)
class HeadParams:
    """One ``attention_head`` job: columns ``[start, stop)`` of query, key, value and output.

    ``qk_requant`` maps ``q . k`` to logits in units of ln 2 (ITAMax: one step = a factor 2);
    ``av_requant`` maps ``probs (uint8, 255 = 1.0) . v`` to the context scale. Both are
    ``(mult, shift, add)`` Python ints.
    """

    name: str
    columns: tuple[int, int]
    qk_requant: tuple[int, int, int]
    av_requant: tuple[int, int, int]


@dataclass(frozen=True, eq=False)
class AttentionOp:
    """Multi-head attention: one :func:`golden.attention_head` per :class:`HeadParams`.

    Reads tensors ``query``, ``key``, ``value`` (S, T) int8; writes the (S, T) int8 context
    named :attr:`name`, head ``h`` in its ``columns`` (concatenation is layout only).
    ``group`` is the ITAMax group (the engine's ``n_pe``).
    """

    name: str
    query: str
    key: str
    value: str
    heads: tuple[HeadParams, ...]
    group: int

    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the tensors this op reads."""
        return (self.query, self.key, self.value)

    def head(self, h: int, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Run head ``h`` on full (S, T) query/key/value tensors; returns (S, T/heads) int8."""
        p = self.heads[h]
        a, b = p.columns
        return golden.attention_head(
            q[:, a:b],
            k[:, a:b],
            v[:, a:b],
            qk_requant=p.qk_requant,
            av_requant=p.av_requant,
            group=self.group,
        )

    def __call__(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        """All heads, concatenated: (S, T) int8."""
        return np.concatenate([self.head(h, q, k, v) for h in range(len(self.heads))], axis=1)

    def run(self, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run on named tensors."""
        return self(tensors[self.query], tensors[self.key], tensors[self.value])


@dataclass(frozen=True, eq=False)
class QuantizedFFN:
    """A stacked FFN: ``intermediate`` (GEMM + ReLU), ``output`` (GEMM + residual + NoNorm)."""

    intermediate: GemmOp
    output: GemmOp


@dataclass(frozen=True, eq=False)
class QuantizedLayer:
    """The integer ops of one encoder layer (``None`` where the config has no such block).

    ``input`` is the name of the layer's input tensor (the previous hidden state) and
    :attr:`output_name` the name of its output hidden state.
    """

    name: str
    input: str
    bottleneck_input: GemmOp | None
    bottleneck_attention: GemmOp | None
    query: GemmOp
    key: GemmOp
    value: GemmOp
    attention: AttentionOp
    attention_output: GemmOp
    ffn: tuple[QuantizedFFN, ...]
    intermediate: GemmOp
    output: GemmOp
    output_bottleneck: GemmOp | None

    def ops(self) -> list[GemmOp | AttentionOp]:
        """The ops in execution order (each op's inputs are produced before it)."""
        out: list[GemmOp | AttentionOp] = [
            op for op in (self.bottleneck_input, self.bottleneck_attention) if op is not None
        ]
        out += [self.query, self.key, self.value, self.attention, self.attention_output]
        for f in self.ffn:
            out += [f.intermediate, f.output]
        out += [self.intermediate, self.output]
        if self.output_bottleneck is not None:
            out.append(self.output_bottleneck)
        return out

    @property
    def output_name(self) -> str:
        """Name of the layer's output hidden state."""
        return self.ops()[-1].name


@dataclass(frozen=True, eq=False)
class QuantizedEmbeddings:
    """Embeddings: table lookups outside the engine, then one engine GEMM.

    Attributes
    ----------
    word : (V, E) int8 word table. The lookup (and, with ``trigram``, the concatenation
        ``[e[t+1], e[t], e[t-1]]`` with int8 zeros at the ends) builds tensor
        ``"embeddings.input"`` (S, 3E).
    position_type : (type_vocab, max_position, H) int8: ``position[s] + token_type[t]``
        quantized at one scale; row ``[t, s]`` forms tensor ``"embeddings.position_type"``.
    transformation : :class:`GemmOp` ``"embeddings"``: ``embedding_transformation`` + residual
        ``"embeddings.position_type"`` + ``NoNorm``; its output is hidden state 0.
    trigram : ``config.trigram_input``.
    """

    word: np.ndarray
    position_type: np.ndarray
    transformation: GemmOp
    trigram: bool

    def lookup(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> dict[str, np.ndarray]:
        """Integer lookups for one (S,) sequence: the two int8 input tensors of the GEMM."""
        x = self.word[input_ids]
        if self.trigram:
            pad = np.zeros((1, x.shape[1]), np.int8)
            x = np.concatenate(
                [np.concatenate([x[1:], pad]), x, np.concatenate([pad, x[:-1]])], axis=1
            )
        pos = np.arange(len(input_ids))
        return {
            "embeddings.input": x,
            "embeddings.position_type": self.position_type[token_type_ids, pos],
        }
