"""MobileBERT models the tests share: the 2-layer checkpoint fixture, a tiny synthetic
geometry and the synthetic 24-layer model, quantized as the engine runs them.

The pytest fixtures built on these (``model``, ``calib_ids``) are in ``conftest.py``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from tinyattn.sw.lowering import unify_epilogues
from tinyattn.sw.mobilebert import MobileBert, MobileBertConfig
from tinyattn.sw.quantize import QuantizedMobileBert

#: The 2-layer MobileBERT checkpoint (config.json, model.safetensors, reference.npz).
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mobilebert-2l"

_SMALL = MobileBertConfig(
    vocab_size=64,
    hidden_size=32,
    embedding_size=8,
    intra_bottleneck_size=16,
    num_attention_heads=2,
    intermediate_size=24,
    num_feedforward_networks=3,
    num_hidden_layers=2,
    max_position_embeddings=16,
)


def small_config(**overrides: Any) -> MobileBertConfig:
    """A tiny MobileBERT geometry (64 tokens, hidden 32, 2 heads, 3 FFNs, 2 layers, 16
    positions) that runs in milliseconds; ``overrides`` replace its fields."""
    return dataclasses.replace(_SMALL, **overrides)


def calibration_ids(seq_len: int = 128) -> np.ndarray:
    """The fixture's calibration batch: 4 sequences of ids below 512 (seed 100)."""
    return np.random.default_rng(100).integers(0, 512, (4, seq_len))


def quantize_for_engine(
    model: MobileBert, calib: np.ndarray, **options: Any
) -> QuantizedMobileBert:
    """``model`` quantized on ``calib`` with one epilogue parameter per job, as lowering
    wants it (``options`` go to :meth:`MobileBert.quantize`, e.g. ``group``)."""
    return unify_epilogues(model.quantize(calib, per_channel_epilogue=False, **options))


def synthetic_for_engine(layers: int | None = None) -> QuantizedMobileBert:
    """The synthetic mobilebert-uncased (24 layers, seed 0) quantized whole for the
    engine, cut to its first ``layers`` (all when None)."""
    model = MobileBert.synthetic(MobileBertConfig.mobilebert_uncased(), seed=0)
    calib = np.random.default_rng(1).integers(0, model.config.vocab_size, (4, 128))
    q = quantize_for_engine(model, calib)
    if layers is None:
        return q
    cfg = dataclasses.replace(q.config, num_hidden_layers=layers)
    return QuantizedMobileBert(
        cfg, q.embeddings, q.layers[:layers], q.scales, q.zero_points, q.settings
    )
