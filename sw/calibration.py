"""Calibration methods: the range an int8 scale should cover, from sample values.

A symmetric int8 quantizer with range ``c`` has step ``c / 127``; values beyond ``c``
saturate. :func:`calibrated_range` picks ``c`` from non-negative samples (``|x|``, or
``max(x, 0)`` for a ReLU output), over a whole tensor or per channel:

* ``"maxabs"`` (min-max for a symmetric quantizer): the largest sample; nothing saturates on
  the calibration data.
* ``"percentile"``: the ``percentile``-th percentile; the top ``100 - percentile`` % saturate.
* ``"mse"``: the ``c`` that minimises the expected squared error of quantizing the samples:
  the squared distance of the samples above ``c`` plus the rounding noise ``(c/127)**2 / 12``
  of those below (uniform-noise model), over candidates ``c`` = the largest sample and the
  ``k``-th largest for ``k`` on a geometric grid up to half the samples.

These choose ranges only: no float reaches the integer path through them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["METHODS", "QMAX", "calibrated_range", "mse_range"]

METHODS = ("maxabs", "percentile", "mse")
QMAX = 127
#: Fractions of the samples that the ``"mse"`` candidates may clip (plus 0: no clipping).
_MSE_FRACTIONS = np.geomspace(1e-6, 0.5, 48)


def mse_range(a: np.ndarray, axis: int | None = None, *, qmax: int = QMAX) -> np.ndarray | float:
    """MSE-optimal clipping range of the non-negative samples ``a`` (see the module docstring).

    ``axis=None``: one range for all of ``a``; ``axis=0``: one per column of a 2-D ``a``.
    """
    x = np.asarray(a, np.float64)
    if axis is None:
        x = x.reshape(-1, 1)
    elif axis != 0 or x.ndim != 2:
        raise ValueError("mse_range takes axis=None or a 2-D array with axis=0")
    n = x.shape[0]
    if n == 0:
        raise ValueError("mse_range needs at least one sample")
    xs = -np.sort(-x, axis=0)  # descending per column
    ks = np.unique(np.concatenate([[0], np.ceil(_MSE_FRACTIONS * n).astype(np.int64)]))
    ks = ks[ks < n]
    s1 = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(xs, 0)])  # sum of the top k
    s2 = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(xs * xs, 0)])
    c = xs[ks]  # (K, C): candidate ranges, the k-th largest sample
    kk = ks[:, None].astype(np.float64)
    tail = s2[ks] - 2.0 * c * s1[ks] + kk * c * c  # sum over the top k of (x - c)**2
    noise = (n - kk) * (c / qmax) ** 2 / 12.0
    best = np.argmin(tail + noise, axis=0)
    out = c[best, np.arange(x.shape[1])]
    return float(out[0]) if axis is None else out


def calibrated_range(
    a: np.ndarray, method: str, *, percentile: float = 99.99, axis: int | None = None
) -> np.ndarray | float:
    """Range of the non-negative samples ``a`` by ``method`` (one of :data:`METHODS`).

    ``axis=None`` gives a float for the whole array, ``axis=0`` one range per column of a
    2-D array (per channel: rows are tokens).
    """
    if method == "maxabs":
        r = np.max(a, axis=axis)
    elif method == "percentile":
        r = np.percentile(a, percentile, axis=axis)
    elif method == "mse":
        return mse_range(a, axis)
    else:
        raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
    return float(r) if axis is None else np.asarray(r, np.float64)
