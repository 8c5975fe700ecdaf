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

The model benchmarks that use the comparison (``tinyattn bench model`` and ``mobilebert``)
are :mod:`tinyattn.sim.benchmarks.model`.

``python -m tinyattn.sim.calibrate --firmware`` prints the firmware measurements.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.sw.schedule import Schedule, execute_schedule
from tinyattn.sw.tiler import KIND_ATTENTION, KIND_FILL, KIND_GATHER, KIND_GEMM

__all__ = [
    "Comparison",
    "ComparisonRow",
    "compare",
    "measure_firmware",
    "op_kind",
    "predict_with_ids",
]

ROOT = Path(__file__).resolve().parents[1]
FW_COSTS = ROOT / "verif" / "firmware" / "fw_costs.c"
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--firmware", action="store_true", help="run verif/firmware/fw_costs.c")
    p.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    args = p.parse_args(argv)
    if args.firmware:
        for name, cycles in measure_firmware(sim=args.sim).items():
            print(f"{name:<20} {cycles:>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
