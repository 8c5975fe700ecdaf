"""The picture of a model run on the RTL (``tinyattn run --png``).

Two panels, from one :class:`~tinyattn.sim.model_run.ModelRun`:

- **Utilization per record**: useful MACs over (measured cycles x peak MACs a cycle),
  beside the utilization the cost model predicted for the same record;
- **Timeline of the first layer**: each record as a bar from its measured start to its
  measured end (``rdcycle`` per record on the control core), with the engine's and the
  DMA's predicted busy cycles inside it (the RTL counts only totals, so the split is the
  calibrated model's, whose totals match the RTL's within a few percent).
"""

from __future__ import annotations

from pathlib import Path

from tinyattn.sim.model_run import ModelRun

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

    start = 0
    rows = []
    for name, cycles, pred in zip(s.names, run.record_cycles, s.predicted, strict=True):
        if name.startswith("layer") and not name.startswith("layer0."):
            break
        rows.append((name, start, cycles, pred))
        start += cycles
    for y, (_name, t0, cycles, pred) in enumerate(rows):
        ax2.barh(y, cycles, left=t0, height=0.8, color="tab:gray", alpha=0.35)
        ax2.barh(y + 0.2, pred.engine, left=t0, height=0.3, color="tab:blue")
        ax2.barh(y - 0.2, pred.dma, left=t0, height=0.3, color="tab:orange")
    ax2.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=6)
    ax2.invert_yaxis()
    ax2.set_xlabel("cycles from the start of the run (measured per record)")
    ax2.set_title(
        "timeline up to the end of layer 0: record (gray, measured), engine (blue) and DMA "
        "(orange) busy cycles (predicted)",
        fontsize=9,
    )
    ax2.grid(True, axis="x", alpha=0.3)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png
