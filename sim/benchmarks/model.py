"""Model benchmarks: MobileBERT on the cluster RTL, bit-exact, measured against the tiler.

- :func:`run_model_bench` (``tinyattn bench model``): the 2-layer fixture at S = 128.
- :func:`run_mobilebert_bench` (``tinyattn bench mobilebert``): the synthetic 24-layer
  ``mobilebert-uncased`` at S = 128.

Both compare the cycles measured per record (the runtime's ``rdcycle``) with the tiler's
prediction for the ids run (:mod:`tinyattn.sim.calibrate`), one record per op kind and
one for the total, with the utilization of the engine's peak and inferences per second
at :data:`CLOCK_HZ`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tinyattn.config import ClusterConfig

from ..calibrate import Comparison, compare, predict_with_ids
from .output import BenchmarkReport

__all__ = [
    "CLOCK_HZ",
    "REFERENCE_INFERENCES_PER_S",
    "report_mobilebert",
    "report_model",
    "run_mobilebert_bench",
    "run_model_bench",
]

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "mobilebert-2l"
#: The clock at which inferences per second are stated (a 500 MHz-equivalent clock).
CLOCK_HZ = 500e6


def _fixture_ids(seed: int, vocab: int, types: int) -> tuple[np.ndarray, np.ndarray]:
    # As tests/test_model_rtl.py draws them.
    rng = np.random.default_rng([seed, 128, 11])
    return rng.integers(0, vocab, 128), rng.integers(0, types, 128)


def run_model_bench(
    cfg: ClusterConfig | None = None, *, sim: str = "verilator", seed: int = 1
) -> tuple[list[dict[str, Any]], Comparison]:
    """The 2-layer fixture at S = 128 on the RTL (bit-exact), measured against predicted.

    One record per op kind and one for the total; the total carries the end-to-end
    utilization of the engine's peak and inferences per second at :data:`CLOCK_HZ`.
    """
    from tinyattn.sim.model_run import run_model
    from tinyattn.sw.lowering import unify_epilogues
    from tinyattn.sw.mobilebert import MobileBert

    cfg = cfg or ClusterConfig()
    model = MobileBert.from_pretrained(FIXTURE)
    calib = np.random.default_rng(100).integers(0, 512, (4, 128))
    q = unify_epilogues(model.quantize(calib, per_channel_epilogue=False))
    ids, types = _fixture_ids(seed, q.config.vocab_size, q.config.type_vocab_size)
    t0 = time.monotonic()
    out = run_model(q, cfg, ids, types, sim)  # raises ModelMismatchError unless bit-exact
    wall = time.monotonic() - t0
    sched = out.schedule
    cmp = compare(sched, out.record_cycles, predict_with_ids(sched, ids, types))
    records: list[dict[str, Any]] = [
        {
            "name": f"model {r.kind}",
            "records": r.records,
            "cycles": r.measured,
            "predicted": r.predicted,
            "error": round(r.error, 4),
        }
        for r in cmp.ops
    ]
    macs = sched.program.macs.total
    ideal = macs / cfg.engine.macs_per_cycle
    records.append(
        {
            "name": "model mobilebert-2l S=128",
            "records": cmp.total.records,
            "cycles": out.cycles,
            "predicted": cmp.total.predicted,
            "predicted_static": sched.total.total,
            "error": round(cmp.total.error, 4),
            "ideal_cycles": round(ideal),
            "utilization": ideal / out.cycles,
            "inferences_per_s": CLOCK_HZ / out.cycles,
            "engine_busy_cycles": out.run.counters.get("engine_busy_cycles"),
            "wall_s": round(wall, 1),
        }
    )
    return records, cmp


#: The reference system's published figure (Wiese et al., 8-bit MobileBERT end to end).
REFERENCE_INFERENCES_PER_S = 32.5


def run_mobilebert_bench(
    cfg: ClusterConfig | None = None,
    *,
    sim: str = "verilator",
    layers: int = 24,
    seq_len: int = 128,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], Comparison]:
    """The synthetic ``mobilebert-uncased`` (``layers`` layers) at ``seq_len`` on the RTL.

    Deployed as ``tinyattn run synthetic`` does, run with the Verilog L2, and checked bit
    for bit against ``QuantizedMobileBert.forward`` (every hidden state). The records are
    one per op kind (summed over the layers) and the total, with the utilization of the
    engine's peak, inferences/s at :data:`CLOCK_HZ` and the reference system's figure.
    """
    from tinyattn.sim.model_run import run_model
    from tinyattn.sw.deploy_flow import prepare

    cfg = cfg or ClusterConfig()
    prepared = prepare("synthetic", layers=layers, seq_len=seq_len, seed=seed)
    t0 = time.monotonic()
    out = run_model(prepared.qmodel, cfg, prepared.input_ids, prepared.token_type_ids, sim)
    wall = time.monotonic() - t0
    sched = out.schedule
    predicted = predict_with_ids(sched, prepared.input_ids, prepared.token_type_ids)
    cmp = compare(sched, out.record_cycles, predicted)
    records: list[dict[str, Any]] = [
        {
            "name": f"mobilebert {r.kind}",
            "records": r.records,
            "cycles": r.measured,
            "predicted": r.predicted,
            "error": round(r.error, 4),
        }
        for r in cmp.ops
    ]
    ideal = sched.program.macs.total / cfg.engine.macs_per_cycle
    records.append(
        {
            "name": f"mobilebert {layers} layers S={seq_len}",
            "records": cmp.total.records,
            "cycles": out.cycles,
            "predicted": cmp.total.predicted,
            "error": round(cmp.total.error, 4),
            "ideal_cycles": round(ideal),
            "utilization": ideal / out.cycles,
            "inferences_per_s": CLOCK_HZ / out.cycles,
            "reference_inferences_per_s": REFERENCE_INFERENCES_PER_S,
            "engine_busy_cycles": out.run.counters.get("engine_busy_cycles"),
            "sim_cycles_per_s": round(out.run.cycles_per_second),
            "wall_s": round(wall, 1),
        }
    )
    return records, cmp


def _report_end_to_end(
    report: BenchmarkReport,
    cfg: ClusterConfig,
    name: str,
    records: list[dict[str, Any]],
    comparison: Comparison,
    *,
    rate_decimals: int,
    notes: str,
    after: str = "",
) -> None:
    """Add a model run's ``records`` under ``name``, say its per-kind comparison and the
    end-to-end line of its last (total) record: cycles, ideal cycles, utilization and
    inferences/s (``rate_decimals`` decimals), ``notes`` in parentheses, then ``after``."""
    report.add(name, records)
    report.say(comparison.format())
    t = records[-1]
    report.say(
        f"end to end: {t['cycles']:,} cycles, {t['ideal_cycles']:,} ideal, utilization "
        f"{t['utilization']:.1%} of {cfg.engine.macs_per_cycle} MAC/cycle; "
        f"{t['inferences_per_s']:,.{rate_decimals}f} inferences/s at {CLOCK_HZ / 1e6:.0f} MHz "
        f"({notes}){after}"
    )


def report_model(cfg: ClusterConfig, sim: str, report: BenchmarkReport) -> None:
    """The ``model`` benchmark: :func:`run_model_bench`, its comparison and the end-to-end line."""
    report.say(
        f"model: the 2-layer MobileBERT fixture at S=128, config {cfg.stable_hash()}, "
        f"on {sim}: measured (rdcycle per record) against the tiler's prediction"
    )
    records, comparison = run_model_bench(cfg, sim=sim)
    t = records[-1]
    _report_end_to_end(
        report, cfg, "model", records, comparison, rate_decimals=0,
        notes=f"static prediction {t['predicted_static']:,} cycles",
    )  # fmt: skip


def report_mobilebert(cfg: ClusterConfig, sim: str, report: BenchmarkReport) -> None:
    """The ``mobilebert`` benchmark: :func:`run_mobilebert_bench` at 24 layers, S = 128."""
    report.say(
        f"mobilebert: the synthetic 24-layer mobilebert-uncased at S=128, config "
        f"{cfg.stable_hash()}, on {sim}: bit-exact, measured per op kind against "
        "the tiler's prediction"
    )
    records, comparison = run_mobilebert_bench(cfg, sim=sim)
    t = records[-1]
    _report_end_to_end(
        report, cfg, "mobilebert", records, comparison, rate_decimals=1,
        notes=f"reference system: {t['reference_inferences_per_s']} inferences/s",
        after=f"; simulated in {t['wall_s']:.0f} s",
    )  # fmt: skip
