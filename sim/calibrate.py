"""The tiler's cycle prediction against the cluster RTL: firmware constants and the comparison.

- :func:`compare` lines up a schedule's predicted cycles with the cycles measured per record
  (``tinyattn.sim.model_run``: the runtime's ``rdcycle`` per record) and sums both per op
  kind (the record name without its layer prefix), per record kind and in total.
- :func:`predict_with_ids` times the records with the actual input ids: a gather's transfers
  depend on them (one per run of consecutive table rows), which ``Schedule.predicted`` cannot
  know (it assumes all-zero ids). For GEMM and attention records both are the same.
- :func:`measure_firmware` runs ``verif/firmware/fw_costs.c`` on the cluster: ``ta_cycles()``
  around single calls of the runtime's helpers, the source of the firmware constants of
  :class:`tinyattn.sw.tiler.CostModel`.
- :func:`run_model_bench` is the ``tinyattn bench model`` group: the 2-layer fixture at
  S = 128 on the RTL under Verilator, bit-exact, measured against predicted.

``python -m tinyattn.sim.calibrate --firmware`` prints the firmware measurements.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.sw.schedule import Schedule, execute_schedule
from tinyattn.sw.tiler import KIND_ATTENTION, KIND_FILL, KIND_GATHER, KIND_GEMM

__all__ = [
    "CLOCK_HZ",
    "REFERENCE_INFERENCES_PER_S",
    "Comparison",
    "ComparisonRow",
    "compare",
    "measure_firmware",
    "op_kind",
    "predict_with_ids",
    "run_mobilebert_bench",
    "run_model_bench",
]

ROOT = Path(__file__).resolve().parents[1]
FW_COSTS = ROOT / "verif" / "firmware" / "fw_costs.c"
FIXTURE = ROOT / "tests" / "fixtures" / "mobilebert-2l"
#: The clock at which inferences per second are stated (a 500 MHz-equivalent clock).
CLOCK_HZ = 500e6
RECORD_KINDS = {KIND_GEMM: "gemm", KIND_ATTENTION: "attention", KIND_GATHER: "gather",
                KIND_FILL: "fill"}  # fmt: skip
_LINE = re.compile(r"^(\w+) (\d+) (\d+)$", re.M)


def op_kind(name: str) -> str:
    """A record's op kind: its name without the layer prefix (``attention.query``)."""
    return name.split(".", 1)[1] if name.startswith("layer") else name


@dataclass(frozen=True)
class ComparisonRow:
    kind: str
    records: int
    measured: int
    predicted: int

    @property
    def error(self) -> float:
        """(predicted - measured) / measured."""
        return self.predicted / self.measured - 1 if self.measured else 0.0


@dataclass(frozen=True)
class Comparison:
    """Measured against predicted cycles: per op kind, per record kind and in total."""

    ops: tuple[ComparisonRow, ...]
    records: tuple[ComparisonRow, ...]
    total: ComparisonRow

    @property
    def worst(self) -> ComparisonRow:
        """The op kind with the largest error."""
        return max(self.ops, key=lambda r: abs(r.error))

    def format(self) -> str:
        head = f"{'op kind':<32} {'records':>7} {'measured':>10} {'predicted':>10} {'error':>7}"
        lines = [head]
        for group in (self.ops, self.records):
            lines += [
                f"{r.kind:<32} {r.records:>7} {r.measured:>10,} {r.predicted:>10,} {r.error:>+7.1%}"
                for r in group
            ]
            lines.append("-" * len(head))
        t = self.total
        lines.append(
            f"{t.kind:<32} {t.records:>7} {t.measured:>10,} {t.predicted:>10,} {t.error:>+7.1%}"
        )
        return "\n".join(lines)


def _rows(keys: list[str], measured: list[int], predicted: list[int]) -> tuple[ComparisonRow, ...]:
    sums: dict[str, list[int]] = {}
    for k, m, p in zip(keys, measured, predicted, strict=True):
        s = sums.setdefault(k, [0, 0, 0])
        s[0], s[1], s[2] = s[0] + 1, s[1] + m, s[2] + p
    return tuple(ComparisonRow(k, n, m, p) for k, (n, m, p) in sums.items())


def compare(
    schedule: Schedule,
    measured_per_record: list[int] | tuple[int, ...],
    predicted_per_record: list[int] | tuple[int, ...] | None = None,
) -> Comparison:
    """Measured cycles per record against the prediction, summed per op kind.

    ``predicted_per_record`` defaults to ``Schedule.predicted`` (gathers with all-zero ids);
    :func:`predict_with_ids` gives the prediction for the ids actually run.
    """
    measured = [int(c) for c in measured_per_record]
    if len(measured) != len(schedule.records):
        raise ValueError(f"{len(measured)} measurements for {len(schedule.records)} records")
    if predicted_per_record is None:
        predicted = [p.total for p in schedule.predicted]
    else:
        predicted = [int(c) for c in predicted_per_record]
    ops = _rows([op_kind(n) for n in schedule.names], measured, predicted)
    kinds = [RECORD_KINDS.get(r.kind, str(r.kind)) for r in schedule.records]
    records = _rows(kinds, measured, predicted)
    total = ComparisonRow("total", len(measured), sum(measured), sum(predicted))
    return Comparison(ops, records, total)


def predict_with_ids(
    schedule: Schedule, input_ids: np.ndarray, token_type_ids: np.ndarray | None = None
) -> list[int]:
    """Predicted cycles per record for these ids (the executor times what it ran)."""
    run = execute_schedule(schedule, input_ids, token_type_ids)
    return [c.total for c in run.cycles]


def measure_firmware(cfg: ClusterConfig | None = None, sim: str = "verilator") -> dict[str, int]:
    """``{item: cycles}`` from ``verif/firmware/fw_costs.c`` on the cluster (the minimum of
    its repetitions, less an empty measurement)."""
    from tinyattn.sim.cosim import run_firmware
    from tinyattn.sw.firmware import build_firmware

    cfg = cfg or ClusterConfig()
    with tempfile.TemporaryDirectory(prefix="tinyattn-fwcosts-") as tmp:
        image = build_firmware(cfg, [FW_COSTS], Path(tmp))
        run = run_firmware(cfg, image, None, sim, max_cycles=2_000_000)
    if run.exit_code != 0 or "done" not in run.console:
        raise RuntimeError(f"fw_costs failed: exit {run.exit_code}: {run.console[-400:]}")
    return {name: int(lo) for name, lo, _ in _LINE.findall(run.console)}


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--firmware", action="store_true", help="run verif/firmware/fw_costs.c")
    p.add_argument("--model", action="store_true", help="run the 2-layer fixture and compare")
    p.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    args = p.parse_args(argv)
    if args.firmware:
        for name, cycles in measure_firmware(sim=args.sim).items():
            print(f"{name:<20} {cycles:>6}")
    if args.model:
        _, cmp = run_model_bench(sim=args.sim)
        print(cmp.format())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
