"""The run report's PNG (``tinyattn run --png``), drawn from a schedule without a simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.sim.model_run import ModelRun
from tinyattn.sim.run_report import plot_run
from tinyattn.sw.lowering import unify_epilogues
from tinyattn.sw.mobilebert import MobileBert, MobileBertConfig
from tinyattn.sw.schedule import deploy

CFG = ClusterConfig(
    engine=EngineConfig(n_pe=4, vec_len=16, tile_m=8, max_seq=64, max_dim=512),
    memory=MemoryConfig(n_banks=8, bank_words=64),
    dma=DmaConfig(dma_bits=64),
)
MODEL = MobileBertConfig(
    vocab_size=64,
    hidden_size=32,
    embedding_size=8,
    intra_bottleneck_size=16,
    num_attention_heads=2,
    intermediate_size=24,
    num_feedforward_networks=1,
    num_hidden_layers=2,
    max_position_embeddings=32,
)


def test_png_from_a_run(tmp_path: Path) -> None:
    model = MobileBert.synthetic(MODEL, seed=3)
    calib = np.random.default_rng(0).integers(0, MODEL.vocab_size, (4, 32))
    q = unify_epilogues(model.quantize(calib, per_channel_epilogue=False, group=4))
    schedule = deploy(q, CFG, 32)
    # The predicted cycles stand in for measured ones: the picture only draws them.
    cycles = tuple(p.total for p in schedule.predicted)
    run = ModelRun(schedule, [], cycles, sum(cycles), 0, 0, 0, None)  # type: ignore[arg-type]
    png = plot_run(run, tmp_path / "run.png", "tiny")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
