"""Synthetic MobileBERT checkpoints with the statistics that make trained models hard to quantize.

:func:`stress_model` builds a float :class:`~tinyattn.sw.mobilebert.MobileBert` with the real
geometry (``google/mobilebert-uncased``: hidden 512, bottleneck 128, 4 heads, 4 FFNs, vocab
30522; only the layer count is a parameter) and random weights shaped like a trained model's:

* **Residual-stream outliers**: ``residual_channels`` of the 512 hidden channels are
  ``residual_gain`` times larger than the rest, in every hidden state (the same channels, as in
  trained BERTs). The embedding NoNorm scales their weight and bias by the gain; every
  ``output.bottleneck`` scales its dense rows and NoNorm bias for them (its NoNorm weight stays
  near 1, so the residual carries the outlier without compounding it layer after layer).
* **Bottleneck outliers**: ``bottleneck_channels`` of the 128 channels of the bottleneck chain
  (``bottleneck.input`` -> ``attention.output`` -> FFN outputs -> ``output``) and of the shared
  query/key input (``bottleneck.attention``), the same way, at ``bottleneck_gain``.
* The GEMMs that **read** an outlier channel have that input row divided by the gain
  (``absorb=True``): a trained model keeps its downstream activations O(1), so the other
  channels carry the signal and a per-tensor int8 scale that spends its range on the outliers
  loses it.
* **Peaky and flat attention**: per head, the query and key weights are scaled by
  ``sqrt(temperature)`` (:data:`ATTENTION_MODES`); ``"mixed"`` has one head of each kind.
* **Heavy-tailed weights**: dense weights and embedding tables Student-t with ``tail_df``
  degrees of freedom (4: infinite kurtosis; 3 for the extreme ``"heavy"`` preset) instead of
  normal, same standard deviation.
* **Uneven NoNorm**: NoNorm weights ``exp(N(0, norm_spread))`` and biases ``N(0, 0.05)``.
* **A stationary residual stream** (``stationary=True``): each ``output.bottleneck`` NoNorm is
  rescaled so that the hidden state's typical channel keeps its RMS after the embeddings
  (random weights would grow it by a factor per layer, 1e4 after 24 layers).

``STRESS_MODELS`` names the presets the tests and ``docs/quantization.md`` use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tinyattn.sw.mobilebert import (
    MobileBert,
    MobileBertConfig,
    embeddings_forward,
    expected_tensor_shapes,
    layer_forward,
)

__all__ = [
    "ATTENTION_MODES",
    "STRESS_MODELS",
    "OutlierChannels",
    "StressSpec",
    "outlier_channels",
    "stress_model",
]

#: Per-head factor on the logits (query and key weights each scaled by its square root).
#: 1.0 is the base init (std 0.05 weights), whose logits are O(0.01): uniform attention.
#: 1500 gives logits of std ~6 steps of ln 2 (median top probability 0.5-0.9); 15000 of
#: std ~60, whose row maxima span more than the 256 int8 logit steps (one-hot rows).
ATTENTION_MODES: dict[str, tuple[float, ...]] = {
    "flat": (1.0, 1.0, 1.0, 1.0),
    "peaky": (1500.0, 1500.0, 1500.0, 1500.0),
    "very_peaky": (15000.0, 15000.0, 15000.0, 15000.0),
    "mixed": (15000.0, 1500.0, 40.0, 1.0),
}


@dataclass(frozen=True)
class StressSpec:
    """Knobs of :func:`stress_model` (see the module docstring); gains are >= 1."""

    residual_gain: float = 40.0
    residual_channels: int = 4
    bottleneck_gain: float = 20.0
    bottleneck_channels: int = 2
    attention: str | tuple[float, ...] = "mixed"
    heavy_tails: bool = True
    tail_df: float = 4.0
    absorb: bool = True
    std: float = 0.05
    norm_spread: float = 0.1
    stationary: bool = True


#: Presets. All but the first two have residual outliers x40 (4 of 512 channels) and
#: bottleneck outliers x20 (2 of 128), and vary the attention and the weight tails.
STRESS_MODELS: dict[str, StressSpec] = {
    "residual": StressSpec(bottleneck_gain=1.0, heavy_tails=False),
    "bottleneck": StressSpec(residual_gain=1.0, heavy_tails=False),
    "outliers": StressSpec(),
    "peaky": StressSpec(attention="very_peaky"),
    "flat": StressSpec(attention="flat"),
    "heavy": StressSpec(tail_df=3.0),
}


@dataclass(frozen=True)
class OutlierChannels:
    """Which channels a stress model amplifies: ``residual`` of the hidden size, ``bottleneck``
    of the bottleneck chain and ``attention`` of the shared query/key input (sorted)."""

    residual: tuple[int, ...]
    bottleneck: tuple[int, ...]
    attention: tuple[int, ...]


def outlier_channels(config: MobileBertConfig, spec: StressSpec, seed: int) -> OutlierChannels:
    """The outlier channels :func:`stress_model` picks for ``seed`` (empty when the gain is 1)."""
    rng = np.random.default_rng([seed, 7])
    H, T = config.hidden_size, config.true_hidden_size

    def pick(n: int, k: int, gain: float) -> tuple[int, ...]:
        if gain == 1.0 or k == 0:
            return ()
        return tuple(sorted(int(c) for c in rng.choice(n, k, replace=False)))

    return OutlierChannels(
        pick(H, spec.residual_channels, spec.residual_gain),
        pick(T, spec.bottleneck_channels, spec.bottleneck_gain),
        pick(T, spec.bottleneck_channels, spec.bottleneck_gain),
    )


def _head_factors(spec: StressSpec, heads: int) -> np.ndarray:
    f = ATTENTION_MODES[spec.attention] if isinstance(spec.attention, str) else spec.attention
    f = np.asarray(f, np.float64)
    if f.ndim != 1 or f.size < 1 or np.any(f <= 0):
        raise ValueError(f"attention factors must be positive, got {spec.attention!r}")
    return np.resize(f, heads)


def stress_model(
    config: MobileBertConfig | None = None,
    *,
    layers: int | None = None,
    seed: int = 0,
    spec: StressSpec | str = "outliers",
    **overrides: float | int | bool | str | Sequence[float],
) -> MobileBert:
    """A float MobileBERT with trained-model statistics (see the module docstring).

    Parameters
    ----------
    config : geometry; default ``MobileBertConfig.mobilebert_uncased()``.
    layers : override ``num_hidden_layers`` (the tests use 2).
    seed : weights and the outlier channels derive from it.
    spec : a :class:`StressSpec` or the name of a preset in :data:`STRESS_MODELS`;
        ``overrides`` replace its fields (e.g. ``residual_gain=10``).
    """
    import dataclasses

    cfg = MobileBertConfig.mobilebert_uncased() if config is None else config
    if layers is not None:
        cfg = dataclasses.replace(cfg, num_hidden_layers=layers)
    if isinstance(spec, str):
        if spec not in STRESS_MODELS:
            raise ValueError(f"unknown stress model {spec!r}; presets: {sorted(STRESS_MODELS)}")
        spec = STRESS_MODELS[spec]
    spec = dataclasses.replace(spec, **overrides)  # type: ignore[arg-type]
    if spec.residual_gain < 1 or spec.bottleneck_gain < 1:
        raise ValueError("outlier gains must be >= 1")
    if not cfg.use_bottleneck or not cfg.key_query_shared_bottleneck:
        raise ValueError("stress models need the mobilebert-uncased wiring (shared bottleneck)")
    ch = outlier_channels(cfg, spec, seed)
    rng = np.random.default_rng(seed)
    t: dict[str, np.ndarray] = {}
    for name, shape in expected_tensor_shapes(cfg).items():
        if ".LayerNorm." in name and name.endswith(".weight"):
            arr = np.exp(spec.norm_spread * rng.standard_normal(shape))
        elif ".LayerNorm." in name:
            arr = 0.05 * rng.standard_normal(shape)
        elif spec.heavy_tails:
            # Student-t with df degrees of freedom has variance df / (df - 2).
            df = spec.tail_df
            arr = spec.std / math.sqrt(df / (df - 2.0)) * rng.standard_t(df, shape)
        else:
            arr = spec.std * rng.standard_normal(shape)
        t[name] = arr.astype(np.float64)

    R, B, A = list(ch.residual), list(ch.bottleneck), list(ch.attention)
    gr, gb = spec.residual_gain, spec.bottleneck_gain
    d = cfg.head_size
    heads = _head_factors(spec, cfg.num_attention_heads)

    def amplify_start(norm: str, rows: list[int], gain: float) -> None:
        # A chain starts: the NoNorm output of these channels is `gain` times larger.
        t[f"{norm}.weight"][rows] *= gain
        t[f"{norm}.bias"][rows] *= gain

    def amplify_carry(prefix: str, rows: list[int], gain: float) -> None:
        # Inside a residual chain: the residual already carries the outlier (NoNorm weight
        # ~1 keeps it); the dense rows and the NoNorm bias add outlier-sized new signal.
        t[f"{prefix}.dense.weight"][rows] *= gain
        t[f"{prefix}.dense.bias"][rows] *= gain
        t[f"{prefix}.LayerNorm.bias"][rows] *= gain

    def absorb(linear: str, cols: list[int], gain: float) -> None:
        if spec.absorb and cols:
            t[f"{linear}.weight"][:, cols] /= gain

    amplify_start("embeddings.LayerNorm", R, gr)
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}"
        for lin in ("bottleneck.input.dense", "bottleneck.attention.dense"):
            absorb(f"{p}.{lin}", R, gr)
        absorb(f"{p}.attention.self.value", R, gr)
        amplify_start(f"{p}.bottleneck.input.LayerNorm", B, gb)
        amplify_start(f"{p}.bottleneck.attention.LayerNorm", A, gb)
        absorb(f"{p}.attention.self.query", A, gb)
        absorb(f"{p}.attention.self.key", A, gb)
        amplify_carry(f"{p}.attention.output", B, gb)
        for j in range(cfg.num_feedforward_networks - 1):
            absorb(f"{p}.ffn.{j}.intermediate.dense", B, gb)
            amplify_carry(f"{p}.ffn.{j}.output", B, gb)
        absorb(f"{p}.intermediate.dense", B, gb)
        amplify_carry(f"{p}.output", B, gb)
        absorb(f"{p}.output.bottleneck.dense", B, gb)
        amplify_carry(f"{p}.output.bottleneck", R, gr)
        for h, f in enumerate(heads):
            rows = slice(h * d, (h + 1) * d)
            for qk in ("query", "key"):
                w = t[f"{p}.attention.self.{qk}.weight"]
                w[rows] *= math.sqrt(f)
                t[f"{p}.attention.self.{qk}.bias"][rows] *= math.sqrt(f)
    tensors = {k: v.astype(np.float32) for k, v in t.items()}
    model = MobileBert.from_tensors(cfg, tensors)
    if not spec.stationary:
        return model
    # A trained model keeps its residual stream at one scale from layer to layer; random
    # weights make it grow by a factor per layer (1e4 after 24 layers). Rescale each
    # output.bottleneck NoNorm so that the typical (non-outlier) channel keeps the RMS it has
    # after the embeddings, measured on probe ids (NoNorm is linear in its weight and bias).
    probe = np.random.default_rng([seed, 9]).integers(0, cfg.vocab_size, (2, 128))
    probe = probe[:, : cfg.max_position_embeddings]
    normal = np.setdiff1d(np.arange(cfg.hidden_size), R)
    h = embeddings_forward(model.embeddings, cfg, probe, None, np.float64)
    target = float(np.sqrt(np.mean(h[..., normal] ** 2)))
    for i, layer in enumerate(model.layers):
        h = layer_forward(layer, cfg, h)
        r = float(np.sqrt(np.mean(h[..., normal] ** 2))) / target
        h = h / r
        for part in ("weight", "bias"):
            name = f"encoder.layer.{i}.output.bottleneck.LayerNorm.{part}"
            tensors[name] = (t[name] / r).astype(np.float32)
    return MobileBert.from_tensors(cfg, tensors)
