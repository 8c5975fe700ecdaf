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
    "AffineParams",
    "AttentionOp",
    "CalibrationSettings",
    "GemmOp",
    "HeadParams",
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

    ``method`` ``"maxabs"`` or ``"percentile"`` (of ``|x|``, at ``percentile``) for activation
    ranges; ``per_channel_epilogue``: per-channel scales for the int8 values inside GEMM
    epilogues, whose calibrated ranges are widened by ``epilogue_headroom`` (capped at the
    tensor range); ``relu_zero_point``: ReLU outputs use the int8 range as 0..255 (see docs);
    ``itamax_gain``: per-head least-squares probability scale (see docs) instead of 1/255;
    ``group``: ITAMax group; ``tokens``: number of calibration tokens.
    """

    method: str = "maxabs"
    percentile: float = 99.99
    per_channel_epilogue: bool = True
    epilogue_headroom: float = 1.5
    relu_zero_point: bool = False
    itamax_gain: bool = True
    group: int = 16
    tokens: int = 0


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
    model: MobileBert, ids: np.ndarray, tt: np.ndarray
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, float64 array)`` for every quantization point, in execution order.

    Arrays are ``(B, S, C)`` (logits ``(B, S, S)``). For a GEMM op ``n``: ``n.dense`` (dense
    output, before residual; only when a residual or norm follows), ``n.sum`` (after the
    residual, before the norm) and ``n`` (the op's output). For attention ``a``: per head
    ``a.head{h}.logits`` (real logits in units of ln 2), ``a.head{h}.value`` (the head's value
    columns) and ``a`` (the context).
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
    for block in _blocks(model):
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


# --------------------------------------------------------------------------------------------
# Calibration statistics
# --------------------------------------------------------------------------------------------


def _logit_add(rowmax_lo: float, rowmax_hi: float) -> int:
    """int8 ``add`` of the QK requantization: centres the row maxima (ln 2 units) in -120..127.

    ITAMax only looks at the 8 steps below a row's maximum, so the maxima must neither
    saturate at 127 nor sink below -120; softmax does not change when a constant is added.
    """
    return int(np.clip(round(3.5 - (rowmax_lo + rowmax_hi) / 2), -128, 127))


def _itamax_gain(logits: np.ndarray, value: np.ndarray, group: int) -> float:
    """Least-squares gain ``g`` of ITAMax probabilities for one head (calibration only).

    ITAMax truncates (``inv = floor(65280 / s)``, ``p = inv >> (m - x)``), so a row of
    probabilities sums to less than 255, the more so the flatter the row. ``g`` minimises
    ``|| g * (p / 255) @ v - softmax(z) @ v ||`` over the calibration rows, with ``p`` the
    golden ITAMax of the rounded float logits; the AV requantization then uses the probability
    scale ``g / 255`` instead of ``1 / 255``.
    """
    rm = logits.max(-1)
    add = _logit_add(float(rm.min()), float(rm.max()))
    x = np.clip(np.rint(logits) + add, -128, 127).astype(np.int64)
    p = golden.itamax(x, group).astype(np.float64) * PROB_SCALE
    e = np.exp2(logits - rm[..., None])
    ref = (e / e.sum(-1, keepdims=True)) @ value
    approx = p @ value
    den = float(np.sum(approx * approx))
    return float(np.sum(approx * ref) / den) if den > 0 else 1.0


class _Stats:
    """Activation ranges: per tensor and per channel (last axis), by max-abs or percentile.

    Also, per attention head, the range of the row maxima of the logits and the ITAMax gain.
    """

    def __init__(self, method: str, percentile: float, group: int) -> None:
        self.method, self.percentile, self.group = method, percentile, group
        self.tensor: dict[str, float] = {}
        self.channel: dict[str, np.ndarray] = {}
        self.positive: dict[str, float] = {}
        self.rowmax: dict[str, tuple[float, float]] = {}
        self.gain: dict[str, float] = {}
        self._logits: dict[str, np.ndarray] = {}

    def _range(self, a: np.ndarray, axis: int | None) -> Any:
        if self.method == "maxabs":
            return np.max(a, axis=axis)
        return np.percentile(a, self.percentile, axis=axis)

    def record(self, name: str, x: np.ndarray) -> None:
        if name.endswith(".logits"):
            head = name.removesuffix(".logits")
            rm = x.max(-1)
            self.rowmax[head] = (float(rm.min()), float(rm.max()))
            self._logits[head] = x
            return
        if name.endswith(".value") and name.removesuffix(".value") in self._logits:
            head = name.removesuffix(".value")
            self.gain[head] = _itamax_gain(self._logits.pop(head), x, self.group)
            return
        a = np.abs(x).reshape(-1, x.shape[-1])
        self.tensor[name] = float(self._range(a.ravel(), None))
        self.channel[name] = np.asarray(self._range(a, 0), dtype=np.float64)
        self.positive[name] = float(self._range(np.maximum(x, 0).ravel(), None))


def _amax_floor(a: Any, ref: float | None = None) -> Any:
    """Ranges of all-zero tensors / channels get a tiny positive floor (scales must be > 0)."""
    a = np.asarray(a, dtype=np.float64)
    base = float(np.max(a)) if ref is None else ref
    floor = 1e-6 * base if base > 0 else 1e-6
    return np.maximum(a, floor)


# --------------------------------------------------------------------------------------------
# Building the integer ops
# --------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, model: MobileBert, stats: _Stats, settings: CalibrationSettings) -> None:
        self.model, self.stats, self.settings = model, stats, settings
        self.scales: dict[str, Any] = {}
        self.zero_points: dict[str, int] = {}
        self.head_params: dict[str, tuple[HeadParams, ...]] = {}

    # ---- activation scales ----------------------------------------------------------------

    def tensor_scale(self, name: str) -> float:
        return float(_amax_floor(self.stats.tensor[name])) / QMAX

    def plan(self, blocks: Sequence[Sequence[_Spec]]) -> None:
        """Choose the per-tensor output scales (attention q/k/v per head, snapped)."""
        st = self.stats
        for block in blocks:
            for spec in block:
                if isinstance(spec, _AttentionSpec):
                    self._plan_attention(spec)
                elif spec.relu:
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
                else:
                    self.scales[spec.name] = self.tensor_scale(spec.name)

    def _plan_attention(self, spec: _AttentionSpec) -> None:
        nh = spec.num_heads
        s_ctx = self.tensor_scale(spec.name)
        self.scales[spec.name] = s_ctx
        s_q = self.scales[spec.query].reshape(nh, -1)[:, 0]
        s_k = self.scales[spec.key].reshape(nh, -1)[:, 0]
        s_v = self.scales[spec.value].reshape(nh, -1)[:, 0]
        d = self.scales[spec.query].size // nh
        # logits [ln2 units] = s_q s_k (q.k) / (sqrt(d) ln 2): snap s_q up so it is exact.
        qk_m, qk_s, qk_r = _snap(s_q * s_k / (math.sqrt(d) * LN2), up=True)
        s_q = qk_r * math.sqrt(d) * LN2 / s_k
        # context = s_p s_v (p.v) / s_ctx with s_p = gain / 255: snap s_v up so it is exact.
        heads = [f"{spec.name}.head{hh}" for hh in range(nh)]
        if self.settings.itamax_gain:
            s_p = np.array([self.stats.gain[h] for h in heads]) * PROB_SCALE
        else:
            s_p = np.full(nh, PROB_SCALE)
        av_m, av_s, av_r = _snap(s_v * s_p / s_ctx, up=True)
        s_v = av_r * s_ctx / s_p
        self.scales[spec.query] = np.repeat(s_q, d)
        self.scales[spec.value] = np.repeat(s_v, d)
        for h, p in zip(heads, s_p, strict=True):
            self.scales[f"{h}.probs"] = float(p)
        adds = [_logit_add(*self.stats.rowmax[h]) for h in heads]
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
        """Epilogue range per channel: calibrated range x headroom, capped at the tensor's."""
        t = float(_amax_floor(self.stats.tensor[name]))
        ch = self.stats.channel[name]
        if not self.settings.per_channel_epilogue:
            return np.full(ch.shape, t)
        return np.minimum(_amax_floor(ch, t) * self.settings.epilogue_headroom, t)

    def gemm(self, spec: _GemmSpec) -> GemmOp:
        s_x = float(self.scales[spec.input])
        zp_x = self.zero_points.get(spec.input, 0)
        N = spec.linear.weight.shape[0]
        s_out = np.broadcast_to(np.asarray(self.scales[spec.name], np.float64), (N,))
        residual = norm = None
        if spec.residual is None and spec.norm is None:
            s_y = s_out.copy()
        elif spec.residual is None:
            s_y = self._channel_range(f"{spec.name}.dense") / QMAX
            self.scales[f"{spec.name}.dense"] = s_y
            assert spec.norm is not None
            norm = self._affine(spec.name, spec.norm, s_y, s_out)
        else:
            if spec.norm is None:
                raise QuantizationError(f"{spec.name}: residual without NoNorm is not supported")
            s_res = float(self.scales[spec.residual])
            if self.zero_points.get(spec.residual, 0):
                raise QuantizationError(f"{spec.name}: residual input must be symmetric")
            residual, s_y, s_z = self._residual(spec.name, s_res)
            norm = self._affine(spec.name, spec.norm, s_z, s_out)
        weight, bias, requant = self._weights(spec, s_x, zp_x, s_y)
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

    def _weights(
        self, spec: _GemmSpec, s_x: float, zp_x: int, s_y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, Requant]:
        """Per-output-channel int8 weights whose scale makes ``s_x s_w / s_y`` exact."""
        W = spec.linear.weight.astype(np.float64).T  # (K, N)
        b = spec.linear.bias.astype(np.float64)
        s_w_min = _amax_floor(np.abs(W).max(0)) / QMAX
        try:
            mult, shift, exact = _snap(s_x * s_w_min / s_y, up=True)
        except MultiplierError as exc:
            raise QuantizationError(f"{spec.name}: requantization {exc}") from exc
        s_w = exact * s_y / s_x
        Wq = np.clip(np.rint(W / s_w), -QMAX, QMAX).astype(np.int8)
        bq = np.rint(b / (s_x * s_w)) - zp_x * Wq.astype(np.int64).sum(0)
        if np.abs(bq).max(initial=0) > BIAS_MAX:
            raise QuantizationError(f"{spec.name}: bias does not fit int32 at scale s_x * s_w")
        self.scales[f"{spec.name}.weight"] = s_w
        return Wq, bq.astype(np.int32), Requant(mult, shift, np.zeros(len(s_y), np.int8))

    def _residual(self, name: str, s_res: float) -> tuple[ResidualParams, np.ndarray, np.ndarray]:
        """Residual add with exact multipliers: returns params, dense scale, sum scale.

        ``s_z`` is snapped (up from its calibrated range) so that ``s_res / s_z`` is exactly
        ``res_mult / 2**shift``; then ``s_y`` is snapped up so that ``s_y / s_z`` is exactly
        ``y_mult / 2**shift``, with the largest shift keeping both multipliers in 1..255.
        """
        s_z_min = self._channel_range(f"{name}.sum") / QMAX
        s_y_min = self._channel_range(f"{name}.dense") / QMAX
        n = s_z_min.size
        y_mult = np.zeros(n, np.int64)
        res_mult = np.zeros(n, np.int64)
        shift = np.zeros(n, np.int64)
        done = np.zeros(n, bool)
        eps = 1e-12
        for s in range(SHIFT_MAX, -1, -1):
            rm = np.floor(s_res / s_z_min * 2.0**s * (1 + eps))  # s_z = s_res 2^s / rm >= s_z_min
            with np.errstate(divide="ignore", invalid="ignore"):
                s_z = s_res * 2.0**s / rm
                ym = np.ceil(s_y_min / s_z * 2.0**s * (1 - eps))
            ok = ~done & (rm >= 1) & (rm <= MULT_MAX) & (ym >= 1) & (ym <= MULT_MAX)
            y_mult[ok], res_mult[ok], shift[ok] = ym[ok], rm[ok], s
            done |= ok
        if not np.all(done):
            raise QuantizationError(
                f"{name}: residual add cannot be expressed with uint8 multipliers "
                f"(scale ratios dense/sum {np.max(s_y_min / s_z_min):.3g}, residual/sum "
                f"{np.max(s_res / s_z_min):.3g})"
            )
        s_z = s_res * np.exp2(shift) / res_mult
        s_y = y_mult * s_z / np.exp2(shift)
        self.scales[f"{name}.sum"] = s_z
        self.scales[f"{name}.dense"] = s_y
        u8 = np.uint8
        return ResidualParams(y_mult.astype(u8), res_mult.astype(u8), shift.astype(u8)), s_y, s_z

    def _affine(self, name: str, norm: Norm, s_in: np.ndarray, s_out: np.ndarray) -> AffineParams:
        """NoNorm ``x * g + b`` from scale ``s_in`` (per channel) to ``s_out``."""
        g = norm.weight.astype(np.float64) * s_in / s_out
        b = norm.bias.astype(np.float64) / s_out
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
        if np.abs(gamma).max() > GAMMA_MAX or np.abs(beta).max() > BETA_MAX:
            raise QuantizationError(f"{name}: NoNorm does not fit int16 gamma / int32 beta")
        return AffineParams(gamma.astype(np.int16), beta.astype(np.int32), shift.astype(np.uint8))


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
        ``"<op>.weight"`` (per output channel), ``"<op>.dense"`` / ``"<op>.sum"`` (epilogue).
        Never read by the integer forward.
    zero_points : tensor name -> int8 zero point for the tensors that have one.
    settings : the :class:`CalibrationSettings` used.
    """

    def __init__(
        self,
        config: MobileBertConfig,
        embeddings: QuantizedEmbeddings,
        layers: Sequence[QuantizedLayer],
        scales: Mapping[str, Any],
        zero_points: Mapping[str, int],
        settings: CalibrationSettings,
    ) -> None:
        self.config = config
        self.embeddings = embeddings
        self.layers = tuple(layers)
        self.scales = dict(scales)
        self.zero_points = dict(zero_points)
        self.settings = settings

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
    ) -> list[tuple[np.ndarray, float]]:
        """Hidden states as ``(int8 array, scale)``, like ``MobileBert.forward``'s list.

        ``(S,)`` or ``(1, S)`` ids give ``(S, hidden)`` arrays, ``(B, S)`` with ``B > 1`` give
        ``(B, S, hidden)`` (sequences run one by one). ``real = scale * int``.
        """
        ids, tt = _check_ids(self.config, input_ids, token_type_ids)
        runs = [self.run(ids[b], tt[b]) for b in range(ids.shape[0])]
        out = []
        for name in self.state_names:
            arr = np.stack([r[name] for r in runs])
            out.append((arr[0] if arr.shape[0] == 1 else arr, float(self.scales[name])))
        return out

    __call__ = forward

    @staticmethod
    def dequantize(states: Sequence[tuple[np.ndarray, float]]) -> list[np.ndarray]:
        """``[(int8, scale), ...] -> [float32 scale * int, ...]``."""
        return [(q.astype(np.float64) * s).astype(np.float32) for q, s in states]

    def forward_float(
        self, input_ids: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """:meth:`forward` then :meth:`dequantize`."""
        return self.dequantize(self.forward(input_ids, token_type_ids))

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
) -> QuantizedMobileBert:
    """Post-training quantization of ``model`` calibrated on ``calibration_ids``.

    Parameters
    ----------
    model : float :class:`MobileBert` (``no_norm``, ``relu``, with embedding transformation).
    calibration_ids : ``(S,)`` or ``(B, S)`` token ids (a few sequences are enough).
    token_type_ids : optional, as for ``MobileBert.forward``.
    method : activation range: ``"maxabs"`` (default, the most accurate on our models) or
        ``"percentile"`` (``percentile`` of ``|x|``; saturates outliers).
    per_channel_epilogue : per-channel scales for the int8 values inside GEMM epilogues (the
        dense output before the residual add and the sum before NoNorm).
    relu_zero_point : ReLU outputs use all 256 int8 codes (zero point -128; the saturation of
        the requantization *is* the ReLU) instead of ``relu_en`` on symmetric int8.
    group : ITAMax group; default ``EngineConfig().n_pe``.

    Raises
    ------
    QuantizationError
        Unsupported config, or a scale that the integer ops cannot express.
    ValueError
        ``calibration_ids`` empty, misshaped, not integers or outside the vocabulary; a bad
        ``method``, ``percentile`` or ``group``.
    """
    cfg = model.config
    _check_supported(cfg)
    if method not in ("maxabs", "percentile"):
        raise ValueError(f"method must be 'maxabs' or 'percentile', got {method!r}")
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
    )

    stats = _Stats(method, percentile, group)
    for name, x in _trace_blocks(model, ids, tt):
        stats.record(name, x)

    emb = model.embeddings
    b = _Builder(model, stats, settings)
    # Word table: one scale (the trigram concatenation is a single GEMM input).
    s_word = float(_amax_floor(np.abs(emb.word).max())) / QMAX
    word = np.clip(np.rint(emb.word / s_word), -QMAX, QMAX).astype(np.int8)
    b.scales["embeddings.input"] = s_word
    # Position + token type, one table at one scale.
    pt = emb.position.astype(np.float64)[None] + emb.token_type.astype(np.float64)[:, None]
    s_pt = float(_amax_floor(np.abs(pt).max())) / QMAX
    b.scales["embeddings.position_type"] = s_pt
    position_type = np.clip(np.rint(pt / s_pt), -QMAX, QMAX).astype(np.int8)

    blocks = _blocks(model)
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
    return QuantizedMobileBert(cfg, embeddings, layers, b.scales, b.zero_points, settings)
