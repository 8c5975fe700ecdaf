"""A deployed model on the cluster RTL: the C runtime walks the schedule, bit-exact.

:func:`run_schedule` builds ``verif/firmware/run_model.c`` with the runtime
(``sw/firmware/tinyattn_runtime.c``) for the schedule's configuration, writes the input ids
into the schedule's L2 image where its header says, runs it on control core 0 of the
``cluster`` RTL (:func:`tinyattn.sim.cosim.run_firmware`) and reads the hidden states back
from the L2 image after the run, from the placements the memory plan gave them (as
:func:`tinyattn.sw.schedule.execute_schedule` does). The firmware prints the cycles of each
prologue record (``rdcycle``, record fetch included) and of the command stream; the
stream's STAMPs, copied to L2, give each engine op's cycles. They line up with
``Schedule.predicted``.

:func:`run_model` deploys a quantized model first and compares every hidden state with
``QuantizedMobileBert.forward`` bit for bit.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.sim.cosim import FirmwareRun, L2Timing, run_firmware
from tinyattn.sim.progress import on_terminal
from tinyattn.sw.firmware import FirmwareImage, build_firmware
from tinyattn.sw.quantize import QuantizedMobileBert
from tinyattn.sw.schedule import Schedule, deploy

__all__ = [
    "ModelMismatchError",
    "ModelRun",
    "build_runtime",
    "layer_ends",
    "layers_bar",
    "run_model",
    "run_schedule",
]

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_SOURCES = (ROOT / "sw" / "firmware" / "tinyattn_runtime.c",)
MAIN = ROOT / "verif" / "firmware" / "run_model.c"
_RECORD_LINE = re.compile(r"^r(\d+) (\d+)$", re.M)
_STREAM_LINE = re.compile(r"^stream (\d+)$", re.M)
_SUMMARY = re.compile(r"^model: (\d+) records, (\d+) jobs, (\d+) transfers, (\d+) cycles$", re.M)


class ModelMismatchError(AssertionError):
    """A hidden state read back from the RTL differs from the integer model."""


@dataclass(frozen=True)
class ModelRun:
    """One inference on the RTL.

    ``states`` are the hidden states read back from L2; ``record_cycles[i]`` the cycles the
    firmware measured for record ``i`` (fetch included, console output excluded);
    ``cycles`` their sum, the schedule's time on the RTL; ``run`` the firmware run itself
    (``run.cycles`` also counts start-up and the console).
    """

    schedule: Schedule
    states: list[np.ndarray]
    record_cycles: tuple[int, ...]
    cycles: int
    jobs: int
    transfers: int
    code_bytes: int
    run: FirmwareRun
    #: Measured activity (``activity_bin`` of :func:`run_schedule`): per bin of cycles,
    #: the engine's busy counter, its done count and the L2 beats, from the run's start.
    activity: np.ndarray | None = None
    activity_bin: int = 0

    @property
    def predicted(self) -> int:
        return self.schedule.total.total

    @property
    def utilization(self) -> float:
        """Useful MACs / (measured cycles x peak MACs per cycle)."""
        return self.schedule.utilization(self.cycles)

    def by_kind(self) -> dict[str, tuple[int, int]]:
        """``{kind: (measured, predicted)}`` summed over records of each kind (the record
        names without their layer prefix, e.g. ``attention.query``)."""
        out: dict[str, tuple[int, int]] = {}
        for name, got, pred in zip(
            self.schedule.names, self.record_cycles, self.schedule.predicted, strict=True
        ):
            kind = name.split(".", 1)[1] if name.startswith("layer") else name
            m, p = out.get(kind, (0, 0))
            out[kind] = (m + got, p + pred.total)
        return out


def build_runtime(cfg: ClusterConfig, out: Path, *, quiet: bool = False) -> FirmwareImage:
    """``run_model.c`` with the runtime, built with the SDK for ``cfg``."""
    flags = ["-DRUN_MODEL_QUIET"] if quiet else []
    return build_firmware(cfg, [*RUNTIME_SOURCES, MAIN], out, cflags=flags)


def run_schedule(
    schedule: Schedule,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray | None = None,
    simulator: str = "verilator",
    *,
    max_cycles: int | None = None,
    l2: L2Timing | None = None,
    seed: int = 1,
    progress: Callable[[int, int], None] | None = None,
    activity_bin: int | None = None,
) -> ModelRun:
    """Run ``schedule`` on one sequence on the RTL; the hidden states and the cycles.

    Raises :class:`tinyattn.sim.cosim.FirmwareRunError` on a fault or the cycle limit
    (default: 3x the prediction plus 200,000) and ``RuntimeError`` when the runtime reports
    a failure (the console names the record).
    """
    cfg = schedule.cfg
    image = schedule.image_with_inputs(input_ids, token_type_ids)
    count = schedule.prologue
    limit = max_cycles or 3 * schedule.total.total + 200_000
    with tempfile.TemporaryDirectory(prefix="tinyattn-model-") as tmp:
        fw = build_runtime(cfg, Path(tmp))
        # Under Verilator, with the default L2 timing, the L2 is Verilog: Python stays
        # out of the run (several times faster on DMA-heavy schedules).
        rtl_l2 = simulator == "verilator" and l2 is None
        run = run_firmware(
            cfg, fw, image, simulator, max_cycles=limit, l2=l2 or L2Timing(), seed=seed,
            rtl_l2=rtl_l2, progress=progress, activity_bin=activity_bin if rtl_l2 else None,
        )  # fmt: skip
    if run.exit_code != 0:
        raise RuntimeError(f"the runtime failed (exit code {run.exit_code}): {run.console[-400:]}")
    summary = _SUMMARY.search(run.console)
    stream = _STREAM_LINE.search(run.console)
    per_record = [int(c) for _, c in _RECORD_LINE.findall(run.console)]
    if summary is None or stream is None or len(per_record) != count or int(summary[1]) != count:
        raise RuntimeError(f"unexpected console from the runtime: {run.console[-400:]}")
    assert run.l2 is not None
    per_record += _op_cycles(schedule, run.l2, int(stream[1]))
    program = schedule.program
    states = []
    for name in program.outputs:
        t, p = program.tensors[name], schedule.l2.placements[name]
        view = run.l2[p.addr : p.addr + t.nbytes].reshape(t.rows, t.pitch)
        states.append(view[:, : t.row_bytes].copy().view(np.int8))
    return ModelRun(
        schedule, states, tuple(per_record), sum(per_record), int(summary[2]), int(summary[3]),
        fw.sizes.text + fw.sizes.data + fw.sizes.bss, run,
        run.extra.get("activity"), activity_bin or 0,
    )  # fmt: skip


def layer_ends(schedule: Schedule) -> list[int]:
    """The engine jobs done when each block of the model (the embeddings, each layer) is."""
    ends: dict[str, int] = {}
    done = 0
    for name, cycles in zip(schedule.names, schedule.predicted, strict=True):
        done += cycles.jobs
        ends[name.split(".")[0]] = done
    return list(ends.values())


@contextmanager
def layers_bar(schedule: Schedule) -> Iterator[Callable[[int, int], None] | None]:
    """A tqdm bar of the blocks done during the simulation, on a terminal; else ``None``.
    Yields the callback for :func:`run_schedule`'s ``progress``."""
    if not on_terminal():
        yield None
        return
    from tqdm import tqdm

    ends = layer_ends(schedule)
    bars: list[tqdm] = []  # made at the first report: the build is not simulation time

    def update(cycles: int, jobs: int) -> None:
        if not bars:
            bars.append(tqdm(total=len(ends), desc="simulating", unit="block", leave=False))
        bars[0].n = sum(1 for e in ends if e <= jobs)
        bars[0].set_postfix_str(f"{cycles:,} cycles", refresh=True)

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def _op_cycles(schedule: Schedule, l2: np.ndarray, stream_cycles: int) -> list[int]:
    """Each engine op's cycles from the stream's STAMPs in L2; the first op also gets the
    stream's start (its first chunk's load and the sequencer's start)."""
    lay = schedule.stream.layout
    n = schedule.stream.ops
    stamps = l2[lay.stamps_l2 : lay.stamps_l2 + 4 * (n + 1)].view("<u4").astype(np.int64)
    ops = np.diff(stamps).tolist()
    if any(c < 0 for c in ops) or stamps[-1] > stream_cycles:
        raise RuntimeError(f"the stream's stamps are not in order: {stamps.tolist()[:8]} ...")
    if ops:
        ops[0] += stream_cycles - int(stamps[-1] - stamps[0])
    return [int(c) for c in ops]


def run_model(
    qmodel: QuantizedMobileBert,
    cfg: ClusterConfig,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray | None = None,
    simulator: str = "verilator",
    **kwargs: object,
) -> ModelRun:
    """Deploy ``qmodel`` for ``len(input_ids)`` tokens, run it on the RTL and check every
    hidden state against ``qmodel.forward`` bit for bit (:class:`ModelMismatchError` otherwise).
    ``kwargs`` go to :func:`run_schedule`."""
    ids = np.asarray(input_ids).reshape(-1)
    schedule = deploy(qmodel, cfg, len(ids))
    with layers_bar(schedule) as progress:
        out = run_schedule(schedule, ids, token_type_ids, simulator, progress=progress, **kwargs)  # type: ignore[arg-type]
    want = qmodel.forward(ids, token_type_ids)
    for name, got, (w, _) in zip(qmodel.state_names, out.states, want, strict=True):
        bad = int(np.count_nonzero(got != w))
        if got.shape != w.shape or bad:
            raise ModelMismatchError(f"{name}: {bad} of {w.size} values differ from forward")
    return out
