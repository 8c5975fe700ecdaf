"""Bit-exact golden model of tinyattn's integer arithmetic (NumPy, vectorized).

This module *defines* the arithmetic: the RTL and the generated firmware must
match it bit for bit. ``docs/arithmetic.md`` states every formula in prose.

All functions take and return NumPy integer arrays. Inputs are checked for range
(an int8 operand must lie in -128..127, and so on) rather than silently wrapped,
so a wrong test vector fails loudly instead of testing something else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "ACC_BITS_DEFAULT",
    "Affine",
    "Residual",
    "affine",
    "attention_head",
    "dot_array",
    "gemm",
    "itamax",
    "matmul_exact",
    "relu",
    "requantize",
    "residual_add",
    "sat8",
    "wrap",
]

ACC_BITS_DEFAULT = 32

#: ITAMax normalisation constant: 255 * 256, so that a lone maximum gets p = 255.
ITAMAX_NUMERATOR = 65280

ArrayLike = npt.ArrayLike


@dataclass(frozen=True)
class Residual:
    """Residual operand of a GEMM epilogue: ``tensor`` (M, N) int8 and its scales.

    See :func:`residual_add`.
    """

    tensor: ArrayLike
    y_mult: ArrayLike
    res_mult: ArrayLike
    shift: ArrayLike


@dataclass(frozen=True)
class Affine:
    """Per-channel affine of a GEMM epilogue; see :func:`affine`."""

    gamma: ArrayLike
    beta: ArrayLike
    shift: ArrayLike


def _check_range(name: str, a: np.ndarray, lo: int, hi: int) -> None:
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"{name} must lie in {lo}..{hi}, got {a.min()}..{a.max()}")


def _as_int(name: str, a: ArrayLike, lo: int, hi: int) -> np.ndarray:
    arr = np.asarray(a)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    _check_range(name, arr, lo, hi)
    return arr


def matmul_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer ``a @ b`` as int64, through float64 BLAS when that is exact.

    float64 holds every integer below 2**53 exactly, and each partial sum is
    bounded by ``K * max|a| * max|b|``; when that bound is below 2**53 the BLAS
    result is the exact integer result, many times faster than NumPy's integer
    matmul. Otherwise the integer matmul is used.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    k = a.shape[-1]
    bound = k * (int(np.abs(a).max(initial=0)) * int(np.abs(b).max(initial=0)))
    if bound < (1 << 53):
        return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a @ b


def wrap(x: ArrayLike, bits: int) -> np.ndarray:
    """Two's-complement wrap of ``x`` to a signed ``bits``-wide value (int64 result)."""
    x = np.asarray(x, dtype=np.int64)
    half = np.int64(1) << (bits - 1)
    return ((x + half) & ((np.int64(1) << bits) - 1)) - half


def sat8(x: ArrayLike) -> np.ndarray:
    """Saturate to int8: clip to -128..127."""
    return np.clip(np.asarray(x, dtype=np.int64), -128, 127).astype(np.int8)


def requantize(acc: ArrayLike, mult: ArrayLike, shift: ArrayLike, add: ArrayLike = 0) -> np.ndarray:
    """ITA requantization: ``sat8(floor(mult * acc / 2**shift + 1/2) + add)``.

    Round half up on the shifted product, ``add`` after the shift, saturate.

    Parameters
    ----------
    acc : int array, signed, |acc| < 2**47
    mult : uint8, 0..255, broadcast against ``acc`` (scalar or per output channel)
    shift : 0..31, broadcast like ``mult``
    add : int8, broadcast like ``mult``

    Returns
    -------
    int8 array of ``acc``'s broadcast shape.
    """
    acc = _as_int("acc", acc, -(1 << 47), (1 << 47) - 1)
    mult = _as_int("mult", mult, 0, 255)
    shift = _as_int("shift", shift, 0, 31)
    add = _as_int("add", add, -128, 127)
    # floor(p / 2**s + 1/2) == (p + 2**s / 2) >> s, with 2**0 / 2 taken as 0.
    return sat8(_round_shift(mult * acc, shift) + add)


def _round_shift(v: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``floor(v / 2**shift + 1/2)``: round half up, exact in int64."""
    return (v + ((np.int64(1) << shift) >> 1)) >> shift


def residual_add(
    y: ArrayLike, res: ArrayLike, y_mult: ArrayLike, res_mult: ArrayLike, shift: ArrayLike
) -> np.ndarray:
    """Add two int8 tensors of different scales into a third scale.

    ``sat8(floor((y_mult * y + res_mult * res) / 2**shift + 1/2))``

    Parameters
    ----------
    y, res : int8, same shape (``res`` broadcast against ``y``)
    y_mult, res_mult : uint8, scalar or per output channel
    shift : 0..31, scalar or per output channel
    """
    y = _as_int("y", y, -128, 127)
    res = _as_int("res", res, -128, 127)
    y_mult = _as_int("y_mult", y_mult, 0, 255)
    res_mult = _as_int("res_mult", res_mult, 0, 255)
    shift = _as_int("shift", shift, 0, 31)
    return sat8(_round_shift(y_mult * y + res_mult * res, shift))


def affine(y: ArrayLike, gamma: ArrayLike, beta: ArrayLike, shift: ArrayLike) -> np.ndarray:
    """Per-channel affine (MobileBERT's NoNorm ``x * gamma + beta``) in fixed point.

    ``sat8(floor((gamma * y + beta) / 2**shift + 1/2))``

    Parameters
    ----------
    y : int8, channels on the last axis
    gamma : int16 per channel (signed: a NoNorm weight may be negative)
    beta : int32 per channel, in units of ``2**-shift`` output steps
    shift : 0..31, scalar or per channel
    """
    y = _as_int("y", y, -128, 127)
    gamma = _as_int("gamma", gamma, -(1 << 15), (1 << 15) - 1)
    beta = _as_int("beta", beta, -(1 << 31), (1 << 31) - 1)
    shift = _as_int("shift", shift, 0, 31)
    return sat8(_round_shift(gamma * y + beta, shift))


def relu(x: ArrayLike) -> np.ndarray:
    """int8 ReLU: ``max(x, 0)``."""
    x = np.asarray(x)
    return np.maximum(x, 0).astype(x.dtype)


def dot_array(
    x: ArrayLike, w: ArrayLike, acc_in: ArrayLike = 0, acc_bits: int = ACC_BITS_DEFAULT
) -> np.ndarray:
    """The compute core's dot-product array for a stream of operand rows.

    ``out[m, j] = wrap(acc_in[m, j] + sum_l x[m, l] * w[j, l], acc_bits)``

    Parameters
    ----------
    x : (M, L) int8 or uint8 (probabilities) operand rows, broadcast to all units
    w : (J, L) int8, one weight vector per unit
    acc_in : (M, J) or broadcastable, signed ``acc_bits`` value to start from
    acc_bits : accumulator width; the sum wraps modulo ``2**acc_bits``

    Returns
    -------
    (M, J) int64 holding signed ``acc_bits`` values.
    """
    x = _as_int("x", x, -128, 255)
    w = _as_int("w", w, -128, 127)
    lim = 1 << (acc_bits - 1)
    acc_in = _as_int("acc_in", acc_in, -lim, lim - 1)
    # int64 never overflows here: |x*w| < 2**15, at most 2**20 lanes.
    return wrap(acc_in + matmul_exact(x, w.T), acc_bits)


def gemm(
    x: ArrayLike,
    w: ArrayLike,
    bias: ArrayLike = 0,
    *,
    mult: ArrayLike = 1,
    shift: ArrayLike = 0,
    add: ArrayLike = 0,
    residual: Residual | None = None,
    norm: Affine | None = None,
    relu_en: bool = False,
    acc_bits: int = ACC_BITS_DEFAULT,
) -> np.ndarray:
    """``Y = epilogue(X · W + b)``.

    The epilogue, in this order: bias (into the accumulator, which wraps to
    ``acc_bits``), :func:`requantize`, optional :func:`residual_add`, optional
    per-channel :func:`affine` (NoNorm), optional :func:`relu`.

    Parameters
    ----------
    x : (M, K) int8
    w : (K, N) int8
    bias : (N,) or scalar, int32
    mult, shift, add : requantization, scalar or per output channel (N,)
    residual : the second int8 tensor (M, N) and its scales
    norm : per-channel affine after the residual add
    relu_en : apply ReLU to the int8 result

    Returns
    -------
    (M, N) int8
    """
    x = _as_int("x", x, -128, 127)
    w = _as_int("w", w, -128, 127)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"gemm needs X (M, K) and W (K, N); got {x.shape} and {w.shape}")
    bias = _as_int("bias", bias, -(1 << 31), (1 << 31) - 1)
    acc = wrap(matmul_exact(x, w) + wrap(bias, acc_bits), acc_bits)
    y = requantize(acc, mult, shift, add)
    if residual is not None:
        y = residual_add(y, residual.tensor, residual.y_mult, residual.res_mult, residual.shift)
    if norm is not None:
        y = affine(y, norm.gamma, norm.beta, norm.shift)
    return relu(y) if relu_en else y


def itamax(logits: ArrayLike, group: int) -> np.ndarray:
    """ITA's streaming integer softmax over the last axis.

    Each row is consumed in groups of ``group`` logits (the engine's ``n_pe``),
    keeping a running maximum ``m`` (starts at -128) and a running sum ``s``::

        m' = max(m, max(g))
        s' = (s >> (m' - m)) + sum(256 >> (m' - x) for x in g)

    and at the end of the row ``inv = floor(65280 / s)``, ``p = inv >> (m - x)``.
    Shifts by 32 or more give 0. The row length need not be a multiple of
    ``group``; the last group is then shorter.

    Parameters
    ----------
    logits : (..., S) int8; leading axes are heads and rows
    group : logits per streaming step, >= 1

    Returns
    -------
    (..., S) uint8 probabilities, 255 meaning 1.0 (a row sums to about 255).
    """
    x = _as_int("logits", logits, -128, 127)
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    n = x.shape[-1]
    if n == 0:
        raise ValueError("itamax needs at least one logit per row")
    m = np.full(x.shape[:-1], -128, dtype=np.int64)
    s = np.zeros(x.shape[:-1], dtype=np.int64)
    for start in range(0, n, group):
        g = x[..., start : start + group]
        m_new = np.maximum(m, g.max(axis=-1))
        s = _shr(s, m_new - m) + _shr(np.int64(256), m_new[..., None] - g).sum(axis=-1)
        m = m_new
    inv = ITAMAX_NUMERATOR // s  # s >= 256: the final maximum contributes 256 unshifted
    return _shr(inv[..., None], m[..., None] - x).astype(np.uint8)


def _shr(v: ArrayLike, amount: np.ndarray) -> np.ndarray:
    """Logical right shift of non-negative ``v``; a shift of 32 or more yields 0."""
    amount = np.asarray(amount, dtype=np.int64)
    return np.where(amount >= 32, 0, np.right_shift(v, np.minimum(amount, 31)))


def attention_head(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    *,
    qk_requant: tuple[int, int, int],
    av_requant: tuple[int, int, int],
    group: int,
    acc_bits: int = ACC_BITS_DEFAULT,
) -> np.ndarray:
    """One attention head: ``QKᵀ`` → requantize → ITAMax → ``· V`` → requantize.

    Parameters
    ----------
    q : (Sq, D) int8 queries
    k : (Sk, D) int8 keys
    v : (Sk, Dv) int8 values
    qk_requant, av_requant : (mult, shift, add) of the two requantizations
    group : ITAMax group (the engine's ``n_pe``)

    Returns
    -------
    (Sq, Dv) int8 head output.
    """
    q = _as_int("q", q, -128, 127)
    k = _as_int("k", k, -128, 127)
    v = _as_int("v", v, -128, 127)
    if (
        q.ndim != 2
        or k.ndim != 2
        or v.ndim != 2
        or q.shape[1] != k.shape[1]
        or k.shape[0] != v.shape[0]
    ):
        raise ValueError(
            "attention needs Q (Sq, D), K (Sk, D) and V (Sk, Dv); "
            f"got {q.shape}, {k.shape}, {v.shape}"
        )
    logits = requantize(wrap(matmul_exact(q, k.T), acc_bits), *qk_requant)
    probs = itamax(logits, group)
    return requantize(wrap(matmul_exact(probs, v), acc_bits), *av_requant)
