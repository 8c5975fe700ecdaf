"""The run report's PNG (``tinyattn run --png``), drawn from a schedule without a simulator."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from test_model_rtl import TINY, TINY_CFG

from tinyattn.sim.model_run import ModelRun
from tinyattn.sim.run_report import plot_run
from tinyattn.sw.lowering import unify_epilogues
from tinyattn.sw.mobilebert import MobileBert
from tinyattn.sw.schedule import Schedule, deploy

# The tiny model and cluster of the RTL test, with two layers for two timeline blocks.
MODEL = dataclasses.replace(TINY, num_hidden_layers=2)


def _tiny_schedule() -> Schedule:
    model = MobileBert.synthetic(MODEL, seed=3)
    calib = np.random.default_rng(0).integers(0, MODEL.vocab_size, (4, 32))
    q = unify_epilogues(model.quantize(calib, per_channel_epilogue=False, group=4))
    return deploy(q, TINY_CFG, 32)


def test_png_from_a_run(tmp_path: Path) -> None:
    schedule = _tiny_schedule()
    # The predicted cycles stand in for measured ones: the picture only draws them.
    cycles = tuple(p.total for p in schedule.predicted)
    run = ModelRun(schedule, [], cycles, sum(cycles), 0, 0, 0, None)  # type: ignore[arg-type]
    png = plot_run(run, tmp_path / "run.png", "tiny")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_png_with_measured_activity(tmp_path: Path) -> None:
    """The timeline drawn from sampled counters (busy, jobs done, L2 beats per bin)."""
    schedule = _tiny_schedule()
    cycles = tuple(p.total for p in schedule.predicted)
    step, total = 64, sum(cycles)
    bins = total // step
    rng = np.random.default_rng(1)
    busy = np.cumsum(rng.integers(0, step + 1, bins))
    beats = np.cumsum(rng.integers(0, step + 1, bins))
    jobs = np.linspace(0, schedule.total.jobs, bins).astype(np.int64)
    activity = np.stack([busy, jobs, beats], axis=1)
    run = ModelRun(schedule, [], cycles, total, 0, 0, 0, None, activity, step)  # type: ignore[arg-type]
    png = plot_run(run, tmp_path / "run.png", "tiny, measured")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
