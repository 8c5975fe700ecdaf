"""Post-training int8 quantization of MobileBERT onto tinyattn's golden integer operations.

:func:`quantize_mobilebert` (also ``MobileBert.quantize``) calibrates a float
:class:`~tinyattn.sw.mobilebert.MobileBert` on sample token ids and returns a
:class:`QuantizedMobileBert` whose encoder runs **only** the bit-exact operations of
:mod:`tinyattn.verif.golden` (``gemm`` with its requantize / residual / affine / ReLU epilogue
and ``attention_head`` with ITAMax). ``docs/quantization.md`` explains the choices and gives
measured accuracy.

Integer model
-------------
The op classes are defined in :mod:`tinyattn.sw.intops` and re-exported here.
The model is a list of named operations (:meth:`QuantizedMobileBert.ops`), each reading and
writing named int8 tensors; an operation's output tensor carries the operation's name:

* :class:`GemmOp` ``"layer0.ffn1.output"``: ``gemm(x, W, b)`` + requantize, optionally
  ``+ residual`` (a second named tensor) and a per-channel affine (``NoNorm``), or ReLU.
* :class:`AttentionOp` ``"layer0.attention"``: one ``attention_head`` per head
  (:class:`HeadParams` ``"layer0.attention.head2"``) on column slices of the query, key and
  value tensors; the heads' outputs side by side are the context tensor (layout only).

The operations hold integers only (int8 weights, int32 biases, uint8 multipliers, uint8 shifts,
int8 adds, int16/int32 affine parameters). Every real scale lives in
:attr:`QuantizedMobileBert.scales` (tensor name -> float scale, ``real = scale * int``) and is
used only to build the operations and in :meth:`QuantizedMobileBert.dequantize`.

Scale choice, in one sentence: activations are symmetric int8 with one scale per tensor
(per head for query/key/value), weights are int8 per output channel, the int8 values *inside*
a GEMM epilogue (dense output, residual sum) have one scale per channel, and every scale that is
free is snapped so that each uint8 multiplier represents its ratio **exactly**.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyattn.config import EngineConfig
from tinyattn.sw.calibration import METHODS, calibrated_range

# The integer ops live in their own module (shared with the lowering); re-exported here.
from tinyattn.sw.intops import (
    AffineParams,
    AttentionOp,
    GemmOp,
    HeadParams,
    QuantizedEmbeddings,
    QuantizedFFN,
    QuantizedLayer,
    Requant,
    ResidualParams,
)
from tinyattn.sw.mobilebert import Linear, MobileBert, MobileBertConfig, Norm, check_input_ids
from tinyattn.verif import golden

__all__ = [
    "METHODS",
    "Adjustment",
    "AffineParams",
    "AttentionOp",
    "CalibrationSettings",
    "GemmOp",
    "HeadParams",
    "LogitFit",
    "MultiplierError",
    "QuantizationError",
    "QuantizedEmbeddings",
    "QuantizedFFN",
    "QuantizedLayer",
    "QuantizedMobileBert",
    "Requant",
    "ResidualParams",
    "float_trace",
    "quantize_mobilebert",
    "quantize_multiplier",
]

LN2 = math.log(2.0)
#: Largest int8 magnitude used for symmetric quantization (-127..127, -128 never produced by
#: weights; activations may saturate to -128).
QMAX = 127
#: Nominal scale of ITAMax probabilities: ``p = 255`` means 1.0.
PROB_SCALE = 1.0 / 255.0
MULT_MAX = 255
SHIFT_MAX = 31
GAMMA_MAX = (1 << 15) - 1
#: Bound on the affine's ``|beta|``: keeps ``gamma * y + beta`` inside a signed 32-bit word.
BETA_MAX = (1 << 30) - 1
BIAS_MAX = (1 << 31) - 1
#: Bound on ``|bias|`` in accumulator units (half the int32 range: room for the products).
BIAS_LIMIT = float(1 << 30)
#: Representable multiplier ratios: at most 255 (mult 255, shift 0); from 2**-24 down the
#: 8-bit mult loses bits, so smaller ratios are raised there by coarsening a free scale.
RATIO_MAX = float(MULT_MAX)
RATIO_MIN = 2.0**-24


class QuantizationError(ValueError):
    """The model or calibration data cannot be mapped onto the integer operations."""


class MultiplierError(QuantizationError):
    """A positive real ratio has no ``(mult uint8, shift 0..31)`` representation."""


# --------------------------------------------------------------------------------------------
# (mult, shift) multipliers
# --------------------------------------------------------------------------------------------


def quantize_multiplier(ratio: float, *, rel_tol: float = 2.0**-5) -> tuple[int, int]:
    """Most precise ``(mult, shift)`` with ``mult / 2**shift ~= ratio``.

    ``mult`` is 1..255 (uint8) and ``shift`` 0..31, as in :func:`golden.requantize`. Among all
    pairs the one with the smallest ``|mult / 2**shift - ratio|`` is returned (ties: the larger
    ``shift``); for ``2**-24 <= ratio < 255.5`` its relative error is at most ``1/256`` and 0 when
    ``ratio`` is exactly representable (``0.75 -> (192, 8)``, ``3.0 -> (192, 6)``).

    Raises
    ------
    MultiplierError
        ``ratio`` is not a finite positive number, is ``>= 255.5`` (needs ``mult > 255``), or is
        so small that even ``shift = 31`` leaves a relative error above ``rel_tol``
        (default ``2**-5``, i.e. ``ratio`` below about ``2**-27``).
    """
    r = float(ratio)
    if not math.isfinite(r) or r <= 0.0:
        raise MultiplierError(f"multiplier ratio must be a finite positive number, got {ratio!r}")
    if r >= MULT_MAX + 0.5:
        raise MultiplierError(
            f"multiplier ratio {r:.6g} is too large: mult / 2**shift is at most 255 "
            "(uint8 mult, shift >= 0)"
        )
    best: tuple[float, int, int] | None = None
    for shift in range(SHIFT_MAX, -1, -1):
        mult = min(MULT_MAX, max(1, round(r * 2.0**shift)))
        err = abs(mult / 2.0**shift - r)
        if best is None or err < best[0]:
            best = (err, mult, shift)
    assert best is not None
    err, mult, shift = best
    if err > rel_tol * r:
        raise MultiplierError(
            f"multiplier ratio {r:.6g} is too small: the best pair (mult={mult}, shift={shift}) "
            f"has relative error {err / r:.3g} > {rel_tol:.3g}"
        )
    return mult, shift


def _snap(
    ratio: np.ndarray, *, up: bool, rel_tol: float = 2.0**-5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per element: the exactly representable ``mult / 2**shift`` next to ``ratio``.

    ``up=True`` gives the smallest representable value ``>= ratio``, ``up=False`` the largest
    ``<= ratio`` (both with the largest possible shift, so at most ``1/128`` relative away).
    Returns ``(mult uint8, shift uint8, exact float64)``. Raises :class:`MultiplierError`.
    """
    r = np.atleast_1d(np.asarray(ratio, dtype=np.float64))
    if not np.all(np.isfinite(r)) or np.any(r <= 0):
        raise MultiplierError(f"multiplier ratios must be finite and positive, got {r}")
    mult = np.zeros(r.shape, np.int64)
    shift = np.zeros(r.shape, np.int64)
    done = np.zeros(r.shape, bool)
    for s in range(SHIFT_MAX, -1, -1):
        scaled = r * 2.0**s
        # Tolerate float noise on ratios that are exact on the grid.
        m = np.ceil(scaled * (1 - 1e-12)) if up else np.floor(scaled * (1 + 1e-12))
        ok = ~done & (m >= 1) & (m <= MULT_MAX)
        mult[ok] = m[ok]
        shift[ok] = s
        done |= ok
    if not np.all(done):
        bad = r[~done]
        raise MultiplierError(
            f"multiplier ratio(s) {bad[:4]} cannot be written as mult / 2**shift with mult in "
            "1..255 and shift in 0..31"
        )
    exact = mult / np.exp2(shift)
    rel = np.abs(exact - r) / r
    if np.any(rel > rel_tol):
        i = int(np.argmax(rel))
        raise MultiplierError(
            f"multiplier ratio {r[i]:.6g} is too small: the nearest pair (mult={mult[i]}, "
            f"shift={shift[i]}) is {rel[i]:.3g} away (> {rel_tol:.3g})"
        )
    return mult.astype(np.uint8), shift.astype(np.uint8), exact


@dataclass(frozen=True)
class CalibrationSettings:
    """How the quantizer was calibrated (recorded on the quantized model).

    ``method``: activation ranges by :func:`tinyattn.sw.calibration.calibrated_range`
    (``"maxabs"``, ``"percentile"`` of ``|x|`` at ``percentile``, or ``"mse"``);
    ``per_channel_epilogue``: one residual-add triple per output channel (golden model only;
    an engine job holds one per op) instead of one per op; per-channel ranges are widened by
    ``epilogue_headroom`` (capped at the tensor range); ``relu_zero_point``: ReLU outputs use
    the int8 range as 0..255 (see docs); ``itamax_gain``: per-head least-squares probability
    scale (see docs) instead of 1/255; ``group``: ITAMax group; ``tokens``: number of
    calibration tokens; ``channel_scales``: per-channel scales for the NoNorm outputs (the
    residual stream and the bottlenecks), folded into the weights of the GEMMs that read them.
    """

    method: str = "maxabs"
    percentile: float = 99.99
    per_channel_epilogue: bool = True
    epilogue_headroom: float = 1.5
    relu_zero_point: bool = False
    itamax_gain: bool = True
    group: int = 16
    tokens: int = 0
    channel_scales: bool = True


# --------------------------------------------------------------------------------------------
# Topology: one description drives the float trace, the calibration and the integer build
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _GemmSpec:
    name: str
    input: str
    linear: Linear
    residual: str | None = None
    norm: Norm | None = None
    relu: bool = False
    heads: int = 0  # > 0: output consumed by attention, one scale per head


@dataclass(frozen=True)
class _AttentionSpec:
    name: str
    query: str
    key: str
    value: str
    num_heads: int


_Spec = _GemmSpec | _AttentionSpec


def _embedding_specs(model: MobileBert) -> list[_Spec]:
    emb = model.embeddings
    return [
        _GemmSpec(
            "embeddings",
            "embeddings.input",
            emb.transformation,
            residual="embeddings.position_type",
            norm=emb.norm,
        )
    ]


def _layer_specs(model: MobileBert, i: int, h: str) -> list[_Spec]:
    """Specs of layer ``i`` whose input tensor is named ``h`` (mirrors ``layer_forward``)."""
    cfg, L, p = model.config, model.layers[i], f"layer{i}"
    specs: list[_Spec] = []
    nh = cfg.num_attention_heads
    if cfg.use_bottleneck:
        assert L.bottleneck_input is not None
        b_in = L.bottleneck_input
        specs.append(_GemmSpec(f"{p}.bottleneck.input", h, b_in.dense, norm=b_in.norm))
        layer_input = f"{p}.bottleneck.input"
        if cfg.use_bottleneck_attention:
            qk = v = layer_input
        elif cfg.key_query_shared_bottleneck:
            assert L.bottleneck_attention is not None
            b_att = L.bottleneck_attention
            specs.append(_GemmSpec(f"{p}.bottleneck.attention", h, b_att.dense, norm=b_att.norm))
            qk, v = f"{p}.bottleneck.attention", h
        else:
            qk = v = h
    else:
        qk = v = layer_input = h
    a = f"{p}.attention"
    specs += [
        _GemmSpec(f"{a}.query", qk, L.query, heads=nh),
        _GemmSpec(f"{a}.key", qk, L.key, heads=nh),
        _GemmSpec(f"{a}.value", v, L.value, heads=nh),
        _AttentionSpec(a, f"{a}.query", f"{a}.key", f"{a}.value", nh),
        _GemmSpec(
            f"{a}.output",
            a,
            L.attention_output.dense,
            residual=layer_input,
            norm=L.attention_output.norm,
        ),
    ]
    x = f"{a}.output"
    for j, f in enumerate(L.ffn):
        specs.append(_GemmSpec(f"{p}.ffn{j}.intermediate", x, f.intermediate, relu=True))
        specs.append(
            _GemmSpec(
                f"{p}.ffn{j}.output",
                f"{p}.ffn{j}.intermediate",
                f.output.dense,
                residual=x,
                norm=f.output.norm,
            )
        )
        x = f"{p}.ffn{j}.output"
    specs.append(_GemmSpec(f"{p}.intermediate", x, L.intermediate, relu=True))
    specs.append(
        _GemmSpec(
            f"{p}.output", f"{p}.intermediate", L.output.dense, residual=x, norm=L.output.norm
        )
    )
    if cfg.use_bottleneck:
        assert L.output_bottleneck is not None
        ob = L.output_bottleneck
        specs.append(
            _GemmSpec(f"{p}.output.bottleneck", f"{p}.output", ob.dense, residual=h, norm=ob.norm)
        )
    return specs


def _blocks(model: MobileBert) -> list[list[_Spec]]:
    """Embedding block then one block per layer; each block's last spec is its hidden state."""
    blocks = [_embedding_specs(model)]
    h = "embeddings"
    for i in range(model.config.num_hidden_layers):
        specs = _layer_specs(model, i, h)
        blocks.append(specs)
        h = specs[-1].name
    return blocks


def _check_supported(cfg: MobileBertConfig) -> None:
    if cfg.normalization_type != "no_norm":
        raise QuantizationError(
            f"normalization_type={cfg.normalization_type!r} is not supported: only 'no_norm' "
            "maps onto the engine's per-channel affine"
        )
    if cfg.hidden_act != "relu":
        raise QuantizationError(
            f"hidden_act={cfg.hidden_act!r} is not supported: the engine has ReLU only"
        )
    if not (cfg.trigram_input or cfg.embedding_size != cfg.hidden_size):
        raise QuantizationError(
            "a model without embedding_transformation (no trigram input and embedding_size "
            "== hidden_size) is not supported"
        )


def _check_ids(
    cfg: MobileBertConfig, input_ids: Any, token_type_ids: Any = None, name: str = "input_ids"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate ids like ``MobileBert.forward``; returns ``(B, S)`` int64 ids and token types.

    ``ValueError`` naming ``name`` for an empty, misshaped, non-integer or out-of-vocab array.
    """
    ids, tt = check_input_ids(cfg, input_ids, token_type_ids, name)
    if tt is None:
        tt = np.zeros(ids.shape, np.int64)
    return ids.astype(np.int64), tt.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Float trace (float64) at every quantization point
# --------------------------------------------------------------------------------------------


def _trace_blocks(
    model: MobileBert, ids: np.ndarray, tt: np.ndarray, blocks: int | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, float64 array)`` for every quantization point, in execution order.

    Arrays are ``(B, S, C)`` (logits ``(B, S, S)``). For a GEMM op ``n``: ``n.dense`` (dense
    output, before residual; only when a residual or norm follows), ``n.sum`` (after the
    residual, before the norm) and ``n`` (the op's output). For attention ``a``: per head
    ``a.head{h}.logits`` (real logits in units of ln 2), ``a.head{h}.value`` (the head's value
    columns) and ``a`` (the context). ``blocks`` stops after that many blocks (1: the
    embeddings only).
    """
    cfg, emb = model.config, model.embeddings
    f64 = np.float64
    x = emb.word[ids].astype(f64)
    if cfg.trigram_input:
        pad = np.zeros((x.shape[0], 1, x.shape[2]))
        x = np.concatenate(
            [np.concatenate([x[:, 1:], pad], 1), x, np.concatenate([pad, x[:, :-1]], 1)], -1
        )
    S = ids.shape[1]
    t: dict[str, np.ndarray] = {
        "embeddings.input": x,
        "embeddings.position_type": emb.position[:S].astype(f64)[None] + emb.token_type[tt],
    }
    yield from t.items()
    for block in _blocks(model)[:blocks]:
        for spec in block:
            if isinstance(spec, _AttentionSpec):
                q, k, v = t[spec.query], t[spec.key], t[spec.value]
                d = q.shape[-1] // spec.num_heads
                ctx = np.empty_like(v)
                for hh in range(spec.num_heads):
                    sl = slice(hh * d, (hh + 1) * d)
                    z = q[..., sl] @ k[..., sl].transpose(0, 2, 1) / math.sqrt(d)
                    yield f"{spec.name}.head{hh}.logits", z / LN2
                    yield f"{spec.name}.head{hh}.value", v[..., sl]
                    e = np.exp(z - z.max(-1, keepdims=True))
                    ctx[..., sl] = (e / e.sum(-1, keepdims=True)) @ v[..., sl]
                t[spec.name] = ctx
                yield spec.name, ctx
                continue
            lin = spec.linear
            y = t[spec.input] @ lin.weight.astype(f64).T + lin.bias.astype(f64)
            if spec.relu:
                y = np.maximum(y, 0.0)
            elif spec.residual is not None or spec.norm is not None:
                yield f"{spec.name}.dense", y
                if spec.residual is not None:
                    y = y + t[spec.residual]
                    yield f"{spec.name}.sum", y
                if spec.norm is not None:
                    y = y * spec.norm.weight.astype(f64) + spec.norm.bias.astype(f64)
            t[spec.name] = y
            yield spec.name, y
        # Keep only the hidden state (the next block's input).
        last = block[-1].name
        t = {last: t[last]}


def float_trace(
    model: MobileBert, input_ids: np.ndarray, token_type_ids: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Float64 values at every quantization point (names as the integer model's tensors).

    ``input_ids`` ``(S,)`` or ``(B, S)``; arrays come back ``(B, S, C)`` (see
    :func:`_trace_blocks` for the names). Holds every tensor: meant for small models and tests.
    """
    ids, tt = _check_ids(model.config, input_ids, token_type_ids)
    return dict(_trace_blocks(model, ids, tt))


def _check_finite(model: MobileBert) -> None:
    """One :class:`QuantizationError` line for the first NaN / inf parameter, named by op."""
    emb = model.embeddings
    arrays: list[tuple[str, str, np.ndarray]] = [
        ("embeddings", "word table", emb.word),
        ("embeddings", "position table", emb.position),
        ("embeddings", "token type table", emb.token_type),
    ]
    for block in _blocks(model):
        for spec in block:
            if isinstance(spec, _AttentionSpec):
                continue
            arrays += [
                (spec.name, "dense weight", spec.linear.weight),
                (spec.name, "dense bias", spec.linear.bias),
            ]
            if spec.norm is not None:
                arrays += [
                    (spec.name, "NoNorm weight", spec.norm.weight),
                    (spec.name, "NoNorm bias", spec.norm.bias),
                ]
    for op, what, a in arrays:
        bad = ~np.isfinite(a)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise QuantizationError(
                f"{op}: {what} holds {a[where]} at {list(where)}: no scale can hold it; fix the "
                "checkpoint (every weight must be a finite number)"
            )


def _vocabulary_ranges(model: MobileBert, seq_len: int) -> dict[str, np.ndarray]:
    """Per-channel max ``|x|`` of the embedding block's tensors over every word of the vocabulary.

    The tables are known in full, so the embedding ranges need not depend on which words the
    calibration ids happen to contain: a rare word with an extreme embedding would saturate
    otherwise. The words run as sequences of ``seq_len`` consecutive ids (token type 0).
    """
    V = model.config.vocab_size
    ids = np.resize(np.arange(V), (-(-V // seq_len), seq_len))
    out: dict[str, np.ndarray] = {}
    chunk = max(1, 8192 // seq_len)
    for start in range(0, ids.shape[0], chunk):
        part = ids[start : start + chunk]
        for name, x in _trace_blocks(model, part, np.zeros_like(part), blocks=1):
            m = np.abs(x).reshape(-1, x.shape[-1]).max(0)
            out[name] = m if name not in out else np.maximum(out[name], m)
    return out


# --------------------------------------------------------------------------------------------
# Calibration statistics
# --------------------------------------------------------------------------------------------


def _logit_add(rowmax_lo: float, rowmax_hi: float) -> int:
    """int8 ``add`` of the QK requantization: centres the row maxima (ln 2 units) in -120..127.

    ITAMax only looks at the 8 steps below a row's maximum, so the maxima must neither
    saturate at 127 nor sink below -120; softmax does not change when a constant is added.
    """
    return int(np.clip(round(3.5 - (rowmax_lo + rowmax_hi) / 2), -128, 127))


#: int8 logits hold every row maximum in -120..127 (ITAMax looks 8 steps below it) when the
#: row maxima span at most this many steps of ln 2.
LOGIT_WINDOW = 247
#: Logit scales and offsets tried when the row maxima span more (very peaky heads).
_LOGIT_SCALES = (1.0, 0.75, 0.5, 0.35, 0.25)
_LOGIT_OFFSETS = (-48, -24, 0, 24, 48)


@dataclass(frozen=True)
class LogitFit:
    """How one head's logits map onto int8 (calibration result, recorded on the model).

    ``scale``: factor on the logits in units of ln 2 (1 unless the row maxima span more than
    :data:`LOGIT_WINDOW` steps); ``add``: the QK requantization's offset; ``gain``: ITAMax gain
    (see docs); ``error``: relative RMS error of the head's context on the calibration rows;
    ``top_clipped`` / ``bottom_lost``: share of rows whose maximum saturates at 127 / sinks
    below -120 (ITAMax cannot rank their keys).
    """

    scale: float
    add: int
    gain: float
    error: float
    top_clipped: float
    bottom_lost: float


def _fit_logits(
    logits: np.ndarray, value: np.ndarray, group: int, *, gain: bool = True
) -> LogitFit:
    """Choose the logit scale, offset and ITAMax gain of one head (calibration only).

    ITAMax truncates (``inv = floor(65280 / s)``, ``p = inv >> (m - x)``), so a row of
    probabilities sums to less than 255, the more so the flatter the row. The gain ``g``
    minimises ``|| g * (p / 255) @ v - softmax(z) @ v ||`` over the calibration rows, with ``p``
    the golden ITAMax of the rounded float logits; the AV requantization then uses the
    probability scale ``g / 255`` instead of ``1 / 255``. The offset centres the row maxima
    (:func:`_logit_add`). When they span more than :data:`LOGIT_WINDOW` steps, int8 cannot
    hold every row: the scales and offsets of ``_LOGIT_SCALES`` x ``_LOGIT_OFFSETS`` are tried
    and the one with the smallest context error wins (a scale below 1 flattens the rows that
    are not one-hot; an offset off centre lets the top or the bottom rows saturate).
    """
    rm = logits.max(-1)
    e = np.exp2(logits - rm[..., None])
    ref = (e / e.sum(-1, keepdims=True)) @ value
    ref_norm = float(np.linalg.norm(ref)) or 1.0
    lo, hi = float(rm.min()), float(rm.max())

    def trial(c: float, add: int) -> LogitFit:
        x = np.clip(np.rint(logits * c) + add, -128, 127).astype(np.int64)
        p = golden.itamax(x, group).astype(np.float64) * PROB_SCALE
        approx = p @ value
        den = float(np.sum(approx * approx))
        g = float(np.sum(approx * ref) / den) if gain and den > 0 else 1.0
        err = float(np.linalg.norm(g * approx - ref)) / ref_norm
        top = rm * c + add
        return LogitFit(c, add, g, err, float(np.mean(top > 127.5)), float(np.mean(top < -120)))

    best = trial(1.0, _logit_add(lo, hi))
    if hi - lo > LOGIT_WINDOW:
        for c in _LOGIT_SCALES:
            centre = _logit_add(c * lo, c * hi)
            for off in _LOGIT_OFFSETS:
                t = trial(c, int(np.clip(centre + off, -128, 127)))
                if t.error < best.error:
                    best = t
    return best


class _Stats:
    """Activation ranges, per tensor and per channel (last axis), by the calibration method.

    Also, per attention head, the :class:`LogitFit` (logit scale and offset, ITAMax gain).
    """

    def __init__(self, method: str, percentile: float, group: int, gain: bool = True) -> None:
        self.method, self.percentile, self.group, self.gain = method, percentile, group, gain
        self.tensor: dict[str, float] = {}
        self.channel: dict[str, np.ndarray] = {}
        self.positive: dict[str, float] = {}
        self.positive_channel: dict[str, np.ndarray] = {}
        self.logit_fit: dict[str, LogitFit] = {}
        # Per head, the float values and contexts of the calibration rows (gain refit).
        self.head_value: dict[str, np.ndarray] = {}
        self.head_context: dict[str, np.ndarray] = {}
        self._logits: dict[str, np.ndarray] = {}

    def _range(self, a: np.ndarray, axis: int | None) -> Any:
        return calibrated_range(a, self.method, percentile=self.percentile, axis=axis)

    def record(self, name: str, x: np.ndarray) -> None:
        if not np.all(np.isfinite(x)):
            bad = x[~np.isfinite(x)].ravel()[0]
            raise QuantizationError(
                f"{_op_of(name)}: the float model gives {bad} at {name} on the calibration ids "
                "(float64): no scale can hold it; fix the checkpoint (a weight at or before "
                "this op is far too large)"
            )
        if name.endswith(".logits"):
            self._logits[name.removesuffix(".logits")] = x
            return
        if name.endswith(".value") and name.removesuffix(".value") in self._logits:
            head = name.removesuffix(".value")
            logits = self._logits.pop(head)
            self.logit_fit[head] = _fit_logits(logits, x, self.group, gain=self.gain)
            e = np.exp2(logits - logits.max(-1, keepdims=True))
            self.head_value[head] = x
            self.head_context[head] = (e / e.sum(-1, keepdims=True)) @ x
            return
        a = np.abs(x).reshape(-1, x.shape[-1])
        self.tensor[name] = float(self._range(a.ravel(), None))
        self.channel[name] = np.asarray(self._range(a, 0), dtype=np.float64)
        pos = np.maximum(x, 0).reshape(-1, x.shape[-1])
        self.positive[name] = float(self._range(pos.ravel(), None))
        self.positive_channel[name] = np.asarray(self._range(pos, 0), dtype=np.float64)

    def cover(self, ranges: Mapping[str, np.ndarray]) -> None:
        """Widen recorded ranges to cover ``ranges`` (per channel max ``|x|``) in full."""
        for name, r in ranges.items():
            if name in self.channel:
                self.channel[name] = np.maximum(self.channel[name], r)
                self.tensor[name] = max(self.tensor[name], float(r.max()))


def _op_of(tensor: str) -> str:
    """The op that produces (or, for lookups, reads) a named tensor, for error messages."""
    for suffix in (".dense", ".sum", ".weight", ".acc"):
        if tensor.endswith(suffix):
            return tensor.removesuffix(suffix)
    if tensor.startswith("embeddings."):
        return "embeddings"
    if ".head" in tensor:
        return tensor.split(".head")[0]
    return tensor


def _amax_floor(a: Any, ref: float | None = None) -> Any:
    """Ranges of all-zero tensors / channels get a tiny positive floor (scales must be > 0)."""
    a = np.asarray(a, dtype=np.float64)
    base = float(np.max(a)) if ref is None else ref
    floor = 1e-6 * base if base > 0 else 1e-6
    return np.maximum(a, floor)


@dataclass(frozen=True)
class Adjustment:
    """A scale the quantizer moved (or a value it let saturate) to stay representable.

    ``op`` the op, ``what`` the parameter (``"requant"``, ``"residual"``, ``"affine"``,
    ``"bias"``, ``"qk"``, ``"av"``), ``channels`` how many channels (or heads) it touched and
    ``detail`` what was done, in one line.
    """

    op: str
    what: str
    channels: int
    detail: str


# --------------------------------------------------------------------------------------------
# Building the integer ops
# --------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, model: MobileBert, stats: _Stats, settings: CalibrationSettings) -> None:
        self.model, self.stats, self.settings = model, stats, settings
        self.scales: dict[str, Any] = {}
        self.zero_points: dict[str, int] = {}
        self.head_params: dict[str, tuple[HeadParams, ...]] = {}
        self.adjustments: list[Adjustment] = []
        # Per-channel lower bounds on ranges, carried along the residual chains (see plan).
        self.floor: dict[str, np.ndarray] = {}

    def adjust(self, op: str, what: str, mask: Any, detail: str) -> None:
        n = int(np.count_nonzero(mask))
        if n:
            self.adjustments.append(Adjustment(op, what, n, detail))

    # ---- activation scales ----------------------------------------------------------------

    def tensor_scale(self, name: str) -> float:
        return float(_amax_floor(self.stats.tensor[name])) / QMAX

    def vec(self, name: str, n: int) -> np.ndarray:
        """The scale of tensor ``name`` per channel, ``(n,)`` float64."""
        return np.broadcast_to(np.asarray(self.scales[name], np.float64), (n,)).copy()

    def plan_residual_profiles(self, blocks: Sequence[Sequence[_Spec]]) -> None:
        """One residual triple per op: shape each residual's per-channel scale for its add.

        With one ``(y_mult, res_mult, shift)`` per op, the sum and the dense output of each
        channel have the residual's scale times two factors ``K_z``, ``K_y`` shared by all
        channels. A channel whose sum (or dense output) is large against its residual would
        force a large factor on every channel; instead the residual's scale in that channel is
        raised. ``K_z``, ``K_y`` minimise the squared steps of the three tensors, each relative
        to the tensor's own squared ranges (a proxy of its cosine error):
        ``sum_c S[c]**2 * (1 / sum R_r**2 + K_z**2 / sum R_z**2 + K_y**2 / sum R_y**2)`` with
        ``S = max(R_r, R_z / K_z, R_y / K_y)``, over quantiles of the per-channel ratios, with
        ``K_y <= 255`` (``y_mult / res_mult``). Runs before :meth:`plan` (and before the
        embedding tables).
        """
        if self.settings.per_channel_epilogue or not self.settings.channel_scales:
            return
        for block in blocks:
            for spec in block:
                if isinstance(spec, _AttentionSpec) or spec.residual is None:
                    continue
                r_r = self._channel_range(spec.residual)
                r_z = self._channel_range(f"{spec.name}.sum")
                r_y = self._channel_range(f"{spec.name}.dense")
                qs = (0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 1.0)
                e_r, e_z, e_y = (float(np.sum(r * r)) for r in (r_r, r_z, r_y))
                best: tuple[float, np.ndarray] | None = None
                # K_y <= 255 (y_mult / res_mult): where the dense output is more than 255
                # times the residual, the residual's step is raised (it is then negligible).
                k_ys = np.minimum(np.quantile(r_y / r_r, qs), RATIO_MAX * (1 - 1e-9))
                for k_z in np.unique(np.quantile(r_z / r_r, qs)):
                    for k_y in np.unique(k_ys):
                        need = np.maximum(r_z / k_z, r_y / k_y)
                        cost = float(np.sum(np.maximum(r_r, need) ** 2)) * (
                            1 / e_r + k_z**2 / e_z + k_y**2 / e_y
                        )
                        if best is None or cost < best[0]:
                            best = (cost, need)
                assert best is not None
                raised = best[1] / r_r
                self.adjust(
                    spec.name,
                    "residual",
                    raised > 2,
                    f"one residual triple: {spec.residual}'s scale raised up to "
                    f"{float(raised.max()):.3g}x (dense or sum up to "
                    f"{float(np.max(np.maximum(r_y, r_z) / r_r)):.3g}x the residual there)",
                )
                self._raise_floor(spec.residual, best[1])

    def _raise_floor(self, name: str, r: np.ndarray) -> None:
        self.floor[name] = np.maximum(self.floor[name], r) if name in self.floor else r

    def plan(self, blocks: Sequence[Sequence[_Spec]]) -> None:
        """Choose the output scales: per channel for the NoNorm outputs (``channel_scales``),
        per head for query/key/value (snapped with the attention), per tensor otherwise."""
        st = self.stats
        for block in blocks:
            for spec in block:
                if isinstance(spec, _AttentionSpec):
                    self._plan_attention(spec)
                elif spec.relu:
                    # One scale: a per-channel one folded into the next GEMM's weights
                    # measured worse (the weights take the channels' unevenness).
                    pos = float(_amax_floor(st.positive[spec.name]))
                    if self.settings.relu_zero_point:
                        self.scales[spec.name] = pos / 255.0
                        self.zero_points[spec.name] = -128
                    else:
                        self.scales[spec.name] = pos / QMAX
                elif spec.heads:
                    # One scale per head; replaced by _plan_attention.
                    ch = _amax_floor(st.channel[spec.name])
                    self.scales[spec.name] = np.repeat(
                        ch.reshape(spec.heads, -1).max(1) / QMAX, ch.size // spec.heads
                    )
                elif spec.norm is not None and self.settings.channel_scales:
                    # Read only by GEMM inputs (folded into their weights) and residual adds.
                    self._carry_ranges(spec)
                    # Fully per channel: a SmoothQuant-like split (range**a * max**(1-a))
                    # measured worse for a = 0.5 and 0.75 on the stress models.
                    self.scales[spec.name] = self._channel_range(spec.name) / QMAX
                else:
                    self.scales[spec.name] = self.tensor_scale(spec.name)

    def _carry_ranges(self, spec: _GemmSpec) -> None:
        """A residual's range is a floor for the sum's, and ``|g|`` times it for the NoNorm output.

        An extreme value that calibration saw only upstream (the embeddings cover the whole
        vocabulary, the layers only the calibration ids) then keeps a scale that holds it all
        the way down the residual stream instead of saturating at the next add. The NoNorm bias
        is left out: ``|g| R + |b|`` summed a worst case of every layer's bias and widened the
        24-layer synthetic model's ranges (final cosine 0.99916 instead of 0.99949).
        """
        assert spec.norm is not None
        if spec.residual is None:
            return
        s = f"{spec.name}.sum"
        self._raise_floor(s, self._channel_range(spec.residual))
        w = np.abs(spec.norm.weight.astype(np.float64))
        self._raise_floor(spec.name, w * self.floor[s])

    def _plan_attention(self, spec: _AttentionSpec) -> None:
        nh = spec.num_heads
        s_ctx = self.tensor_scale(spec.name)
        d = self.scales[spec.query].size // nh
        # One scale per head for q and k. Balancing each channel between them (s_q[c] s_k[c]
        # constant within a head) measured slightly worse on the fixture and the stress models.
        s_qc = np.asarray(self.scales[spec.query], np.float64)
        s_kc = np.asarray(self.scales[spec.key], np.float64)
        s_qk = (s_qc * s_kc).reshape(nh, d)[:, 0]  # per head
        heads = [f"{spec.name}.head{hh}" for hh in range(nh)]
        fits = [self.stats.logit_fit[h] for h in heads]
        c = np.array([f.scale for f in fits])
        self.adjust(
            spec.name,
            "qk",
            c < 1,
            "logits scaled by " + "/".join(f"{f.scale:g}" for f in fits) + " (row maxima span "
            f"more than {LOGIT_WINDOW} steps); rows clipped at the top "
            + "/".join(f"{f.top_clipped:.1%}" for f in fits),
        )
        # logits [ln2 units] = c s_q s_k (q.k) / (sqrt(d) ln 2): snap s_q up so it is exact.
        ratio = c * s_qk / (math.sqrt(d) * LN2)
        high = ratio > RATIO_MAX
        # A ratio above 255 means one unit of q.k moves a logit by more than 255 steps: the
        # float softmax is one-hot there. 255 keeps the order of the logits (saturating them).
        self.adjust(
            spec.name,
            "qk",
            high,
            f"logit multiplier {float(ratio.max()):.4g} > 255: logits scaled by "
            f"{RATIO_MAX / float(ratio.max()):.3g} (one-hot rows stay one-hot)",
        )
        ratio = np.clip(ratio, RATIO_MIN, RATIO_MAX)
        qk_m, qk_s, qk_r = self._snap(spec.name, "qk requantization", ratio, up=True)
        s_qc = s_qc * np.repeat(np.where(high, 1.0, qk_r / ratio), d)
        # context[c] = s_p s_v[c] (p.v)[c] / s_ctx[c] with s_p = gain / 255, one av multiplier
        # per head: s_ctx[c] / s_v[c] is constant within a head.
        s_p = np.array([f.gain for f in fits]) * PROB_SCALE
        if self.settings.channel_scales:
            # Per-channel value scales; the context inherits them (times one factor per head,
            # the smallest that covers every channel's range), read by a GEMM that folds them.
            s_vc = self._channel_range(spec.value) / QMAX
            r_ctx = self._channel_range(spec.name) / QMAX
            kappa = (r_ctx / s_vc).reshape(nh, d).max(1)
        else:
            s_vc = np.asarray(self.scales[spec.value], np.float64)
            kappa = s_ctx / s_vc.reshape(nh, d)[:, 0]
        # The context step must not be finer than 1/255 of a value step (av mult <= 255).
        low = kappa < s_p / RATIO_MAX
        self.adjust(
            spec.name,
            "av",
            low,
            "context scale raised so the av multiplier fits 255",
        )
        kappa = np.maximum(kappa, s_p / RATIO_MAX)
        if not self.settings.channel_scales:
            kappa = np.full(nh, kappa.max())  # one context scale for all heads
        s_ctxc = s_vc * np.repeat(kappa, d)
        av_ratio = np.maximum(s_p / kappa, RATIO_MIN)
        av_m, av_s, av_r = self._snap(spec.name, "av requantization", av_ratio, up=True)
        # Snap s_v up (the context scale stays): s_v = ratio s_ctx / s_p.
        s_vc = s_ctxc * np.repeat(av_r / s_p, d)
        self.scales[spec.name] = s_ctxc if self.settings.channel_scales else float(s_ctxc[0])
        self.scales[spec.query] = s_qc
        self.scales[spec.key] = s_kc
        self.scales[spec.value] = s_vc
        for h, p in zip(heads, s_p, strict=True):
            self.scales[f"{h}.probs"] = float(p)
        adds = [f.add for f in fits]
        self.head_params[spec.name] = tuple(
            HeadParams(
                f"{spec.name}.head{hh}",
                (hh * d, (hh + 1) * d),
                (int(qk_m[hh]), int(qk_s[hh]), adds[hh]),
                (int(av_m[hh]), int(av_s[hh]), 0),
            )
            for hh in range(nh)
        )

    # ---- ops ------------------------------------------------------------------------------

    def attention(self, spec: _AttentionSpec) -> AttentionOp:
        return AttentionOp(
            spec.name,
            spec.query,
            spec.key,
            spec.value,
            self.head_params[spec.name],
            self.settings.group,
        )

    def _channel_range(self, name: str) -> np.ndarray:
        """Range per channel: calibrated range x headroom, capped at the tensor's range."""
        t = float(_amax_floor(self.stats.tensor[name]))
        ch = self.stats.channel[name]
        r = np.minimum(_amax_floor(ch, t) * self.settings.epilogue_headroom, t)
        return np.maximum(r, self.floor[name]) if name in self.floor else r

    def _snap(
        self, op: str, what: str, ratio: np.ndarray, *, up: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        try:
            return _snap(ratio, up=up)
        except MultiplierError as exc:
            raise QuantizationError(f"{op}: {what}: {exc}") from exc

    def gemm(self, spec: _GemmSpec) -> GemmOp:
        N, K = spec.linear.weight.shape
        s_x = self.vec(spec.input, K)
        zp_x = self.zero_points.get(spec.input, 0)
        W, b = self._float_weights(spec)
        # Accumulator step if the weights use their full int8 range; the bias must fit too.
        s_acc_min = _amax_floor(np.abs(W * s_x[:, None]).max(0)) / QMAX
        big_bias = np.abs(b) / BIAS_LIMIT > s_acc_min
        self.adjust(spec.name, "bias", big_bias, "weights coarsened so the bias fits int32")
        s_acc_min = np.maximum(s_acc_min, np.abs(b) / BIAS_LIMIT)
        # The requant multiplier s_acc / s_y is at most 255: the dense step is not finer than
        # s_acc / 255 (a finer step would only resolve less than one accumulator unit).
        s_y_floor = s_acc_min / RATIO_MAX
        s_out = self.vec(spec.name, N)
        residual = norm = None
        if spec.residual is None and spec.norm is None:
            low = s_out < s_y_floor
            self.adjust(spec.name, "requant", low, "output scale raised to s_acc / 255")
            if low.any():
                s_out = np.maximum(s_out, s_y_floor)
                self.scales[spec.name] = s_out
            s_y = s_out.copy()
        elif spec.residual is None:
            assert spec.norm is not None
            s_y = np.maximum(self._channel_range(f"{spec.name}.dense") / QMAX, s_y_floor)
            self.scales[f"{spec.name}.dense"] = s_y
            norm, s_out = self._affine(spec.name, spec.norm, s_y, s_out)
        else:
            if spec.norm is None:
                raise QuantizationError(f"{spec.name}: residual without NoNorm is not supported")
            if self.zero_points.get(spec.residual, 0):
                raise QuantizationError(f"{spec.name}: residual input must be symmetric")
            s_res = self.vec(spec.residual, N)
            residual, s_y, s_z = self._residual(spec.name, s_res, s_y_floor)
            norm, s_out = self._affine(spec.name, spec.norm, s_z, s_out)
        weight, bias, requant = self._weights(spec, W, b, s_x, zp_x, s_acc_min, s_y)
        if spec.relu and self.zero_points.get(spec.name, 0):
            # Saturation at -128 (real 0) is the ReLU; no relu_en.
            requant = dataclasses.replace(
                requant, add=np.full(N, self.zero_points[spec.name], np.int8)
            )
            relu = False
        else:
            relu = spec.relu
        return GemmOp(
            spec.name,
            spec.input,
            weight,
            bias,
            requant,
            relu,
            spec.residual,
            residual,
            norm,
        )

    def _float_weights(self, spec: _GemmSpec) -> tuple[np.ndarray, np.ndarray]:
        # Finite: checked by _check_finite before calibration.
        return spec.linear.weight.astype(np.float64).T, spec.linear.bias.astype(np.float64)

    def _weights(
        self,
        spec: _GemmSpec,
        W: np.ndarray,
        b: np.ndarray,
        s_x: np.ndarray,
        zp_x: int,
        s_acc_min: np.ndarray,
        s_y: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, Requant]:
        """int8 weights ``W * s_x[k] / s_acc[j]`` (the input's per-channel scale folded in), with
        the accumulator step ``s_acc`` snapped up so that ``s_acc / s_y`` is exact."""
        ratio = s_acc_min / s_y
        # Below 2**-24 the multiplier loses bits: coarsen the weights instead (the GEMM's
        # contribution is then below 2**-24 output steps per accumulator unit anyway).
        ratio = np.clip(ratio, RATIO_MIN, RATIO_MAX)
        mult, shift, exact = self._snap(spec.name, "requantization", ratio, up=True)
        s_acc = exact * s_y
        Wq = np.clip(np.rint(W * (s_x[:, None] / s_acc)), -QMAX, QMAX).astype(np.int8)
        bq = np.rint(b / s_acc) - zp_x * Wq.astype(np.int64).sum(0)
        self.scales[f"{spec.name}.acc"] = s_acc
        return Wq, bq.astype(np.int32), Requant(mult, shift, np.zeros(len(s_y), np.int8))

    def _residual(
        self, name: str, s_res: np.ndarray, s_y_floor: np.ndarray
    ) -> tuple[ResidualParams, np.ndarray, np.ndarray]:
        """Residual add with exact multipliers: returns params, dense scale, sum scale.

        ``per_channel_epilogue``: per channel, ``s_z`` is snapped up from its calibrated range so
        that ``s_res / s_z`` is exactly ``res_mult / 2**shift``, then ``s_y`` so that ``s_y / s_z``
        is ``y_mult / 2**shift``. Otherwise one ``(y_mult, res_mult, shift)`` for the op (as an
        engine job holds it): ``s_z`` and ``s_y`` are the residual's per-channel scale times
        one factor each, the smallest that covers every channel's calibrated range.
        """
        s_z_min = self._channel_range(f"{name}.sum") / QMAX
        s_y_min = np.maximum(self._channel_range(f"{name}.dense") / QMAX, s_y_floor)
        if self.settings.per_channel_epilogue:
            base, z_min, y_min = s_res, s_z_min, s_y_min
        else:
            base = np.ones(1)
            z_min = np.array([np.max(s_z_min / s_res)])
            y_min = np.array([np.max(s_y_min / s_res)])
        # y_mult / res_mult <= 255. A dense step above 255 residual steps means the whole
        # residual is below half a dense step: per channel, such a channel drops the residual
        # (res_mult 0); with one triple per op, the dense step is clipped (its range saturates;
        # plan_residual_profiles makes this rare).
        drop = y_min > RATIO_MAX * base
        if self.settings.per_channel_epilogue:
            self.adjust(
                name, "residual", drop, "residual dropped (below half a step of the dense output)"
            )
        else:
            self.adjust(name, "residual", drop, "dense scale clipped to 255 residual steps")
            y_min = np.minimum(y_min, RATIO_MAX * base)
            drop = np.zeros(drop.shape, bool)
        # res_mult <= 255 and y_mult <= 255 at shift 0 bound the sum step from below.
        z_floor = np.maximum(base, y_min) / RATIO_MAX
        self.adjust(
            name,
            "residual",
            z_min < z_floor,
            "sum scale raised so that the residual multipliers fit 255",
        )
        z_min = np.maximum(z_min, z_floor)
        n = z_min.size
        y_mult = np.zeros(n, np.int64)
        res_mult = np.zeros(n, np.int64)
        shift = np.zeros(n, np.int64)
        done = drop.copy()
        z_drop = np.maximum(z_min, y_min / RATIO_MAX)
        if drop.any():
            ratio = np.clip(y_min / z_drop, RATIO_MIN, RATIO_MAX)
            ym, sh, _ = self._snap(name, "residual add", ratio[drop], up=True)
            y_mult[drop], shift[drop] = ym, sh
        eps = 1e-12
        for s in range(SHIFT_MAX, -1, -1):
            rm = np.floor(base / z_min * 2.0**s * (1 + eps))  # s_z = base 2^s / rm >= z_min
            with np.errstate(divide="ignore", invalid="ignore"):
                s_z = base * 2.0**s / rm
                ym = np.ceil(y_min / s_z * 2.0**s * (1 - eps))
            ok = ~done & (rm >= 1) & (rm <= MULT_MAX) & (ym >= 1) & (ym <= MULT_MAX)
            y_mult[ok], res_mult[ok], shift[ok] = ym[ok], rm[ok], s
            done |= ok
        if not np.all(done):
            i = int(np.argmin(done))
            raise QuantizationError(
                f"{name}: residual add: the sum's range is {float(z_min[i] / base[i]):.3g} "
                "times the residual's step (above 2**31): the residual cannot be added at this "
                "precision; rescale the model's residual branch"
            )
        with np.errstate(divide="ignore"):
            z_rel = np.where(drop, z_drop, base * np.exp2(shift) / res_mult)
        y_rel = y_mult * z_rel / np.exp2(shift)
        if self.settings.per_channel_epilogue:
            s_z, s_y = z_rel, y_rel
        else:
            s_z, s_y = z_rel * s_res, y_rel * s_res
            y_mult, res_mult, shift = (np.repeat(a, s_res.size) for a in (y_mult, res_mult, shift))
        self.scales[f"{name}.sum"] = s_z
        self.scales[f"{name}.dense"] = s_y
        u8 = np.uint8
        return ResidualParams(y_mult.astype(u8), res_mult.astype(u8), shift.astype(u8)), s_y, s_z

    def _affine(
        self, name: str, norm: Norm, s_in: np.ndarray, s_out: np.ndarray
    ) -> tuple[AffineParams, np.ndarray]:
        """NoNorm ``x * g + b`` from scale ``s_in`` (per channel) to ``s_out``.

        Returns the params and ``s_out``, raised in the channels whose ``gamma`` would not fit
        int16 even at shift 0 (never on sane models; recorded as an adjustment). A ``beta``
        beyond 2**30 output units is clipped there: that channel saturates whatever ``x`` is.
        """
        w = norm.weight.astype(np.float64)
        bias = norm.bias.astype(np.float64)
        g_floor = np.abs(w) * s_in / GAMMA_MAX
        low = s_out < g_floor
        self.adjust(name, "affine", low, "output scale raised so that gamma fits int16")
        if low.any():
            s_out = np.maximum(s_out, g_floor)
            self.scales[name] = s_out
        g = w * s_in / s_out
        b = bias / s_out
        clipped = np.abs(b) > BETA_MAX
        self.adjust(name, "affine", clipped, "beta clipped to 2**30 (the channel saturates)")
        b = np.clip(b, -BETA_MAX, BETA_MAX)
        shift = np.zeros(g.size, np.int64)
        done = np.zeros(g.size, bool)
        for s in range(SHIFT_MAX, -1, -1):
            ok = (
                ~done
                & (np.abs(np.rint(g * 2.0**s)) <= GAMMA_MAX)
                & (np.abs(np.rint(b * 2.0**s)) <= BETA_MAX)
            )
            shift[ok] = s
            done |= ok
        gamma = np.rint(g * np.exp2(shift))
        beta = np.rint(b * np.exp2(shift))
        params = AffineParams(gamma.astype(np.int16), beta.astype(np.int32), shift.astype(np.uint8))
        return params, s_out


# --------------------------------------------------------------------------------------------
# Quantized model
# --------------------------------------------------------------------------------------------


class QuantizedMobileBert:
    """Integer MobileBERT: embeddings lookups + engine ops, all bit-exact golden arithmetic.

    Attributes
    ----------
    config : the float model's :class:`MobileBertConfig`.
    embeddings : :class:`QuantizedEmbeddings`.
    layers : tuple of :class:`QuantizedLayer`.
    scales : tensor name -> real scale (float, or per-channel float64 array): ``real = scale *
        int`` (ReLU outputs: ``real = scale * (int + 128)``, see :attr:`zero_points`). Also
        ``"<op>.acc"`` (accumulator step per output channel: the real dense output is
        ``acc * scale``, the input's scale folded in), ``"<op>.dense"`` / ``"<op>.sum"``
        (epilogue). Never read by the integer forward.
    zero_points : tensor name -> int8 zero point for the tensors that have one.
    settings : the :class:`CalibrationSettings` used.
    adjustments : the :class:`Adjustment` s the quantizer made to stay representable.
    logit_fits : head name -> :class:`LogitFit` (calibration of each head's logits).
    """

    def __init__(
        self,
        config: MobileBertConfig,
        embeddings: QuantizedEmbeddings,
        layers: Sequence[QuantizedLayer],
        scales: Mapping[str, Any],
        zero_points: Mapping[str, int],
        settings: CalibrationSettings,
        adjustments: Sequence[Adjustment] = (),
        logit_fits: Mapping[str, LogitFit] | None = None,
    ) -> None:
        self.config = config
        self.embeddings = embeddings
        self.layers = tuple(layers)
        self.scales = dict(scales)
        self.zero_points = dict(zero_points)
        self.settings = settings
        self.adjustments = tuple(adjustments)
        self.logit_fits = dict(logit_fits or {})

    @property
    def state_names(self) -> list[str]:
        """Tensor names of the hidden states: ``"embeddings"`` then each layer's output."""
        return ["embeddings"] + [layer.output_name for layer in self.layers]

    def ops(self) -> list[GemmOp | AttentionOp]:
        """Every engine op in execution order (embedding GEMM first)."""
        out: list[GemmOp | AttentionOp] = [self.embeddings.transformation]
        for layer in self.layers:
            out += layer.ops()
        return out

    def op(self, name: str) -> GemmOp | AttentionOp:
        """The op named ``name`` (``KeyError`` if none)."""
        for o in self.ops():
            if o.name == name:
                return o
        raise KeyError(name)

    def run(
        self,
        input_ids: np.ndarray,
        token_type_ids: np.ndarray | None = None,
        keep: str = "states",
    ) -> dict[str, np.ndarray]:
        """Integer forward of one sequence; returns named int8 tensors.

        ``input_ids`` ``(S,)`` (or ``(1, S)``). ``keep="states"`` returns the hidden states
        only, ``keep="all"`` every tensor (the lookups, each op's output).
        """
        ids, tt = _check_ids(self.config, input_ids, token_type_ids)
        if ids.shape[0] != 1:
            raise ValueError(f"run() takes one sequence, got batch {ids.shape[0]}")
        t = self.embeddings.lookup(ids[0], tt[0])
        states = set(self.state_names)
        for op in self.ops():
            t[op.name] = op.run(t)
        if keep == "all":
            return t
        return {k: v for k, v in t.items() if k in states}

    def forward(
        self, input_ids: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, float | np.ndarray]]:
        """Hidden states as ``(int8 array, scale)``, like ``MobileBert.forward``'s list.

        ``(S,)`` or ``(1, S)`` ids give ``(S, hidden)`` arrays, ``(B, S)`` with ``B > 1`` give
        ``(B, S, hidden)`` (sequences run one by one). ``real = scale * int``; ``scale`` is a
        float, or a ``(hidden,)`` float64 array with per-channel scales (``channel_scales``).
        """
        ids, tt = _check_ids(self.config, input_ids, token_type_ids)
        runs = [self.run(ids[b], tt[b]) for b in range(ids.shape[0])]
        out: list[tuple[np.ndarray, float | np.ndarray]] = []
        for name in self.state_names:
            arr = np.stack([r[name] for r in runs])
            s = self.scales[name]
            scale = float(s) if np.ndim(s) == 0 else np.asarray(s, np.float64)
            out.append((arr[0] if arr.shape[0] == 1 else arr, scale))
        return out

    __call__ = forward

    @staticmethod
    def dequantize(states: Sequence[tuple[np.ndarray, float | np.ndarray]]) -> list[np.ndarray]:
        """``[(int8, scale), ...] -> [float32 scale * int, ...]`` (scale per channel or one)."""
        return [(q.astype(np.float64) * s).astype(np.float32) for q, s in states]

    def forward_float(
        self, input_ids: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """:meth:`forward` then :meth:`dequantize`."""
        return self.dequantize(self.forward(input_ids, token_type_ids))

    def saturation(
        self, input_ids: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> dict[str, dict[str, float]]:
        """Share of values that saturate, per op and stage, over the sequences of ``input_ids``.

        Each stage is recomputed before its int8 clip (reporting only; the outputs it clips
        to are the golden ones). GEMM stages: ``"requant"``, ``"residual"``, ``"affine"``
        (a ReLU op counts only the top: clipping below zero is the ReLU) and ``"any"``, the
        share of output values clipped at one stage or more. Attention: ``"logits"`` (logits
        above 127, plus those clipped at -128 in a row whose maximum is within 8 steps of -128:
        the only clips that change ITAMax's output), ``"context"`` and ``"any"`` (the larger).
        """
        ids, tt = _check_ids(self.config, input_ids, token_type_ids)
        counts: dict[str, dict[str, list[int]]] = {}
        for b in range(ids.shape[0]):
            t = self.run(ids[b], tt[b], keep="all")
            for op in self.ops():
                c = counts.setdefault(op.name, {})
                stages = _op_saturation(op, t)
                for stage, (n_sat, n) in stages.items():
                    acc = c.setdefault(stage, [0, 0])
                    acc[0] += n_sat
                    acc[1] += n
        return {
            name: {stage: n_sat / n if n else 0.0 for stage, (n_sat, n) in st.items()}
            for name, st in counts.items()
        }

    def integer_arrays(self) -> Iterator[tuple[str, Any]]:
        """Every parameter of every op as ``(path, value)`` (for checks and export)."""

        def walk(prefix: str, obj: Any) -> Iterator[tuple[str, Any]]:
            if dataclasses.is_dataclass(obj):
                for f in dataclasses.fields(obj):
                    yield from walk(f"{prefix}.{f.name}", getattr(obj, f.name))
            elif isinstance(obj, tuple) and obj and not isinstance(obj[0], int | str):
                for i, o in enumerate(obj):
                    yield from walk(f"{prefix}[{i}]", o)
            else:
                yield prefix, obj

        yield from walk("embeddings", self.embeddings)
        for layer in self.layers:
            yield from walk(layer.name, layer)


def _integer_gains(
    qmodel: QuantizedMobileBert, stats: _Stats, ids: np.ndarray, tt: np.ndarray
) -> dict[str, float]:
    """Per head: the least-squares ITAMax gain on the integer model's own logits.

    ``g`` minimises ``|| g * (p / 255) @ v - softmax(z) @ v ||`` over the calibration rows,
    with ``p`` ITAMax of the logits the integer model computes (its q, k and qk
    requantization) and ``v``, ``softmax(z) @ v`` the float values and context.
    """
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for b in range(ids.shape[0]):
        t = qmodel.run(ids[b], tt[b], keep="all")
        for layer in qmodel.layers:
            op = layer.attention
            for h in op.heads:
                a, c = h.columns
                acc = golden.matmul_exact(t[op.query][:, a:c], t[op.key][:, a:c].T)
                logits = golden.requantize(golden.wrap(acc, golden.ACC_BITS_DEFAULT), *h.qk_requant)
                p = golden.itamax(logits, op.group).astype(np.float64) * PROB_SCALE
                approx = p @ stats.head_value[h.name][b]
                ref = stats.head_context[h.name][b]
                num[h.name] = num.get(h.name, 0.0) + float(np.sum(approx * ref))
                den[h.name] = den.get(h.name, 0.0) + float(np.sum(approx * approx))
    return {h: num[h] / den[h] if den[h] > 0 else 1.0 for h in num}


def _raw_shift(v: np.ndarray, shift: Any) -> np.ndarray:
    """``floor(v / 2**shift + 1/2)`` in int64, as the golden model rounds (before its clip)."""
    shift = np.asarray(shift, np.int64)
    return (v + ((np.int64(1) << shift) >> 1)) >> shift


def _clipped(raw: np.ndarray, *, low: bool = True) -> np.ndarray:
    return (raw > 127) | (raw < -128) if low else raw > 127


def _op_saturation(
    op: GemmOp | AttentionOp, t: Mapping[str, np.ndarray]
) -> dict[str, tuple[int, int]]:
    """``stage -> (saturated values, values)`` of one op on the named tensors ``t``."""
    out: dict[str, tuple[int, int]] = {}
    if isinstance(op, AttentionOp):
        logit_sat = ctx_sat = n_logits = 0
        q, k, v = t[op.query], t[op.key], t[op.value]
        for h in op.heads:
            a, b = h.columns
            m, s, add = h.qk_requant
            raw = _raw_shift(m * golden.matmul_exact(q[:, a:b], k[:, a:b].T), s) + add
            top = np.minimum(raw.max(-1, keepdims=True), 127)
            harmful = (raw > 127) | ((raw < -128) & (top < -120))
            logit_sat += int(harmful.sum())
            n_logits += raw.size
            probs = golden.itamax(np.clip(raw, -128, 127), op.group)
            m, s, add = h.av_requant
            ctx = _raw_shift(m * golden.matmul_exact(probs, v[:, a:b]), s) + add
            ctx_sat += int(_clipped(ctx).sum())
        n_ctx = t[op.name].size
        out["logits"] = (logit_sat, n_logits)
        out["context"] = (ctx_sat, n_ctx)
        worst = max(out.values(), key=lambda c: c[0] / c[1])
        out["any"] = worst
        return out
    acc = golden.wrap(golden.matmul_exact(t[op.input], op.weight) + golden.wrap(op.bias, 32), 32)
    q = op.requant
    raw = _raw_shift(q.mult.astype(np.int64) * acc, q.shift) + q.add
    # Below zero a ReLU (or the zero point's -128) is what the op computes anyway.
    relu_like = op.relu or bool(np.all(q.add == -128))
    sat = _clipped(raw, low=not relu_like)
    out["requant"] = (int(sat.sum()), raw.size)
    y = np.clip(raw, -128, 127)
    if op.residual is not None:
        r = op.residual
        assert op.residual_input is not None
        z_raw = _raw_shift(
            r.y_mult.astype(np.int64) * y + r.res_mult.astype(np.int64) * t[op.residual_input],
            r.shift,
        )
        s = _clipped(z_raw)
        out["residual"] = (int(s.sum()), raw.size)
        sat |= s
        y = np.clip(z_raw, -128, 127)
    if op.norm is not None:
        n = op.norm
        o_raw = _raw_shift(n.gamma.astype(np.int64) * y + n.beta.astype(np.int64), n.shift)
        s = _clipped(o_raw)
        out["affine"] = (int(s.sum()), raw.size)
        sat |= s
    out["any"] = (int(sat.sum()), raw.size)
    return out


def quantize_mobilebert(
    model: MobileBert,
    calibration_ids: np.ndarray,
    *,
    token_type_ids: np.ndarray | None = None,
    method: str = "maxabs",
    percentile: float = 99.99,
    per_channel_epilogue: bool = True,
    epilogue_headroom: float = 1.5,
    relu_zero_point: bool = False,
    itamax_gain: bool = True,
    group: int | None = None,
    channel_scales: bool = True,
) -> QuantizedMobileBert:
    """Post-training quantization of ``model`` calibrated on ``calibration_ids``.

    Parameters
    ----------
    model : float :class:`MobileBert` (``no_norm``, ``relu``, with embedding transformation).
    calibration_ids : ``(S,)`` or ``(B, S)`` token ids (a few sequences are enough).
    token_type_ids : optional, as for ``MobileBert.forward``.
    method : activation range, one of :data:`METHODS` (``tinyattn.sw.calibration``):
        ``"maxabs"`` (default), ``"percentile"`` (``percentile`` of ``|x|``) or ``"mse"``.
    per_channel_epilogue : one residual-add triple ``(y_mult, res_mult, shift)`` per output
        channel (golden model only) instead of one per op (what an engine job holds).
    channel_scales : per-channel scales for the NoNorm outputs and the embedding tables,
        folded into the weights of the GEMMs that read them.
    relu_zero_point : ReLU outputs use all 256 int8 codes (zero point -128; the saturation of
        the requantization *is* the ReLU) instead of ``relu_en`` on symmetric int8.
    group : ITAMax group; default ``EngineConfig().n_pe``.

    Raises
    ------
    QuantizationError
        Unsupported config, or a model the integer ops cannot represent (non-finite weights
        or float activations); one line naming the op, the value and what to change. Ranges
        the engine can clip never raise: the scales move instead (see ``adjustments``).
    ValueError
        ``calibration_ids`` empty, misshaped, not integers or outside the vocabulary; a bad
        ``method``, ``percentile`` or ``group``.
    """
    cfg = model.config
    _check_supported(cfg)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    group = EngineConfig().n_pe if group is None else int(group)
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    ids, tt = _check_ids(cfg, calibration_ids, token_type_ids, "calibration_ids")
    settings = CalibrationSettings(
        method,
        float(percentile),
        per_channel_epilogue,
        float(epilogue_headroom),
        relu_zero_point,
        itamax_gain,
        group,
        int(ids.size),
        channel_scales,
    )

    _check_finite(model)
    stats = _Stats(method, percentile, group, itamax_gain)
    # A float model that overflows gets one QuantizationError from record(), not warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        for name, x in _trace_blocks(model, ids, tt):
            stats.record(name, x)
    stats.cover(_vocabulary_ranges(model, ids.shape[1]))

    qmodel = _build(model, stats, settings)
    if itamax_gain:
        # The gains were fitted on the rounded float logits; the integer logits differ by a
        # step here and there, which moves ITAMax's row sums (0.5 for a flat row of 128 equal
        # logits, up to 1 when one of them is a step higher). Refit each head's gain on the
        # integer model's own logits, then build again.
        gains = _integer_gains(qmodel, stats, ids, tt)
        for head, g in gains.items():
            stats.logit_fit[head] = dataclasses.replace(stats.logit_fit[head], gain=g)
        qmodel = _build(model, stats, settings)
    return qmodel


def _build(model: MobileBert, stats: _Stats, settings: CalibrationSettings) -> QuantizedMobileBert:
    """The integer model from calibration statistics (deterministic)."""
    cfg = model.config
    emb = model.embeddings
    b = _Builder(model, stats, settings)
    # Word table: one scale per column (folded into the embedding GEMM: the trigram input
    # repeats the columns three times), or one for the table.
    pt = emb.position.astype(np.float64)[None] + emb.token_type.astype(np.float64)[:, None]
    blocks = _blocks(model)
    b.plan_residual_profiles(blocks)
    if settings.channel_scales:
        s_word = _amax_floor(np.abs(emb.word).max(0)) / QMAX
        r_pt = np.abs(pt).reshape(-1, pt.shape[-1]).max(0)
        s_pt = _amax_floor(np.maximum(r_pt, b.floor.get("embeddings.position_type", 0))) / QMAX
        s_in: Any = np.tile(s_word, 3) if cfg.trigram_input else s_word
    else:
        s_word = float(_amax_floor(np.abs(emb.word).max())) / QMAX
        s_pt = float(_amax_floor(np.abs(pt).max())) / QMAX
        s_in = s_word
    word = np.clip(np.rint(emb.word / s_word), -QMAX, QMAX).astype(np.int8)
    b.scales["embeddings.input"] = s_in
    # Position + token type: one int8 table.
    b.scales["embeddings.position_type"] = s_pt
    position_type = np.clip(np.rint(pt / s_pt), -QMAX, QMAX).astype(np.int8)

    b.plan(blocks)
    built: dict[str, Any] = {}
    for block in blocks:
        for spec in block:
            if isinstance(spec, _AttentionSpec):
                built[spec.name] = b.attention(spec)
            else:
                built[spec.name] = b.gemm(spec)
    embeddings = QuantizedEmbeddings(word, position_type, built["embeddings"], cfg.trigram_input)
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"layer{i}"
        n_ffn = len(model.layers[i].ffn)
        layers.append(
            QuantizedLayer(
                name=p,
                input=blocks[i][-1].name,
                bottleneck_input=built.get(f"{p}.bottleneck.input"),
                bottleneck_attention=built.get(f"{p}.bottleneck.attention"),
                query=built[f"{p}.attention.query"],
                key=built[f"{p}.attention.key"],
                value=built[f"{p}.attention.value"],
                attention=built[f"{p}.attention"],
                attention_output=built[f"{p}.attention.output"],
                ffn=tuple(
                    QuantizedFFN(built[f"{p}.ffn{j}.intermediate"], built[f"{p}.ffn{j}.output"])
                    for j in range(n_ffn)
                ),
                intermediate=built[f"{p}.intermediate"],
                output=built[f"{p}.output"],
                output_bottleneck=built.get(f"{p}.output.bottleneck"),
            )
        )
    return QuantizedMobileBert(
        cfg, embeddings, layers, b.scales, b.zero_points, settings, b.adjustments, stats.logit_fit
    )
