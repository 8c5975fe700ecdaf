"""The picture of a model run on the RTL (``tinyattn run --png``).

Two panels, from one :class:`~tinyattn.sim.model_run.ModelRun`:

- **Utilization per record**: useful MACs over (measured cycles x peak MACs a cycle),
  beside the utilization the cost model predicted for the same record;
- **Timeline of the first layer**, measured when the run sampled its activity
  (``ModelRun.activity``, as ``tinyattn run`` does): the engine's busy share and the
  L2 beats a cycle in each bin of cycles, with a line where each op's last job is done.
  Without samples: each record as a bar of its measured cycles, with the engine's and
  the DMA's predicted busy cycles inside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinyattn.sim.model_run import ModelRun, layer_ends

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_run"]


def plot_run(run: ModelRun, out_png: Path, title: str) -> Path:
    """Write the two-panel PNG of ``run`` to ``out_png``; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s = run.schedule
    peak = s.cfg.engine.macs_per_cycle
    macs = [plan.macs if plan is not None else 0 for plan in s.plans]
    measured = [m / (c * peak) if c else 0.0 for m, c in zip(macs, run.record_cycles, strict=True)]
    predicted = [
        m / (p.total * peak) if p.total else 0.0 for m, p in zip(macs, s.predicted, strict=True)
    ]

    fig = Figure(figsize=(11, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1)
    idx = range(len(s.names))
    ax1.bar([i - 0.2 for i in idx], measured, width=0.4, label="measured (RTL)")
    ax1.bar([i + 0.2 for i in idx], predicted, width=0.4, label="predicted", alpha=0.6)
    ax1.set_ylabel(f"utilization of {peak} MAC/cycle")
    ax1.set_xticks(list(idx), s.names, rotation=90, fontsize=6)
    ax1.set_ylim(0, 1)
    ax1.grid(True, axis="y", alpha=0.3)
    ax1.legend(loc="upper right")
    ax1.set_title(title)

    if run.activity is not None and len(run.activity) > 1:
        _measured_timeline(ax2, run)
    else:
        _predicted_timeline(ax2, run)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png


def _measured_timeline(ax: Axes, run: ModelRun) -> None:
    """Engine busy share and L2 beats per cycle over layer 0, from the sampled counters."""
    s, act, step = run.schedule, run.activity, run.activity_bin
    assert act is not None
    ends = layer_ends(s)
    jobs = act[:, 1]
    lo = int(np.searchsorted(jobs, ends[0]))
    hi = min(int(np.searchsorted(jobs, ends[min(1, len(ends) - 1)])) + 1, len(act) - 1)
    lo = min(lo, hi - 1)
    t = (np.arange(lo, hi) + 1) * step  # sample k holds the counters at (k + 1) * step
    engine = np.diff(act[lo : hi + 1, 0]) / step
    dma = np.diff(act[lo : hi + 1, 2]) / step
    ax.fill_between(t, engine, step="post", alpha=0.6, color="tab:blue", label="engine busy")
    ax.step(t, dma, where="post", color="tab:orange", label="DMA: L2 beats / cycle")
    done = 0
    for name, cycles in zip(s.names, s.predicted, strict=True):
        done += cycles.jobs
        if not name.startswith("layer0.") or not cycles.jobs:
            continue
        at = (int(np.searchsorted(jobs, done)) + 1) * step
        ax.axvline(at, color="gray", lw=0.5)
        ax.text(at, 1.02, name.removeprefix("layer0."), rotation=90, fontsize=5, va="bottom")
    ax.set_ylim(0, 1.0)
    ax.set_xlabel(f"cycles from the start of the run ({step}-cycle bins, measured)")
    ax.set_title(
        "layer 0 on the RTL: engine busy and DMA beats per bin; a line where each op is done",
        fontsize=9,
        pad=48,  # above the op names
    )
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)


def _predicted_timeline(ax: Axes, run: ModelRun) -> None:
    s = run.schedule
    start = 0
    rows = []
    for name, cycles, pred in zip(s.names, run.record_cycles, s.predicted, strict=True):
        if name.startswith("layer") and not name.startswith("layer0."):
            break
        rows.append((name, start, cycles, pred))
        start += cycles
    for y, (_name, t0, cycles, pred) in enumerate(rows):
        ax.barh(y, cycles, left=t0, height=0.8, color="tab:gray", alpha=0.35)
        ax.barh(y + 0.2, pred.engine, left=t0, height=0.3, color="tab:blue")
        ax.barh(y - 0.2, pred.dma, left=t0, height=0.3, color="tab:orange")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("cycles from the start of the run (measured per record)")
    ax.set_title(
        "timeline up to the end of layer 0: record (gray, measured), engine (blue) and DMA "
        "(orange) busy cycles (predicted)",
        fontsize=9,
    )
    ax.grid(True, axis="x", alpha=0.3)
