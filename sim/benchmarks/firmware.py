"""Firmware benchmark: C firmware on the control core driving the cluster, under Verilator.

Runs ``verif/firmware/cluster_jobs.c`` (DMA in, GEMM + ATTENTION + GEMM queued behind
each other ``repeat`` times, irq waits, DMA out) on the ``cluster`` top and checks L2
against the golden model bit for bit. Record fields:

``name``
    ``firmware cluster_jobs xR``.
``cycles``, ``ideal_cycles``, ``utilization``
    cycles from ``fetch_enable`` to ``HOST_EXIT``; the jobs' useful MACs over the peak
    (``n_pe * vec_len`` a cycle); their ratio. The jobs are small random ones, so this
    is a measure of the whole flow, not of the engine.
``submit_cycles``
    firmware cycles from deciding to submit the first job to its ``JOB_PUSH`` write
    (``rdcycle`` around ``ta_job_submit``, which writes every staging register the job
    uses).
``cycles_per_second``
    simulated cycles per wall-clock second from ``fetch_enable`` to the end (loading,
    simulator start and build excluded).
``code_bytes``
    text + data + bss of the firmware image.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from tinyattn.config import ClusterConfig

from ..cosim import run_firmware
from .output import BenchmarkReport, Column

__all__ = ["report_firmware", "run_firmware_bench"]


def run_firmware_bench(
    cfg: ClusterConfig, *, sim: str = "verilator", repeat: int = 40, seed: int = 1
) -> list[dict[str, Any]]:
    """Run the cluster scenario firmware ``repeat`` times over; one record."""
    from tinyattn.sw.firmware import build_firmware
    from tinyattn.verif.firmware_scenarios import PROGRAMS, cluster_jobs_scenario

    scn = cluster_jobs_scenario(cfg, seed, small=False)
    with tempfile.TemporaryDirectory(prefix="tinyattn-fwbench-") as tmp:
        work = Path(tmp)
        (work / "scenario.h").write_text(scn.header)
        image = build_firmware(
            cfg,
            [PROGRAMS / "cluster_jobs.c"],
            work / "out",
            cflags=[f"-I{work}", f"-DSCN_REPEAT={repeat}"],
        )
        run = run_firmware(cfg, image, scn.l2_image, sim, seed=seed, max_cycles=20_000_000)
    if run.exit_code != 0 or run.l2 is None:
        raise RuntimeError(f"the firmware benchmark failed: exit {run.exit_code}: {run.console}")
    scn.check(run.l2)
    found = re.search(r"submit (\d+) cycles", run.console)
    macs = scn.macs * repeat
    ideal = macs / cfg.engine.macs_per_cycle
    sizes = image.sizes
    return [
        {
            "name": f"firmware cluster_jobs x{repeat}",
            "cycles": run.cycles,
            "ideal_cycles": round(ideal),
            "utilization": ideal / run.cycles,
            "submit_cycles": int(found.group(1)) if found else None,
            "cycles_per_second": round(run.cycles_per_second),
            "code_bytes": sizes.text + sizes.data + sizes.bss,
        }
    ]


def report_firmware(cfg: ClusterConfig, sim: str, report: BenchmarkReport) -> None:
    """The ``firmware`` benchmark: :func:`run_firmware_bench` at its default repeat count."""
    report.say(f"firmware on the control core: config {cfg.stable_hash()}, on {sim}")
    report.table(
        "firmware",
        run_firmware_bench(cfg, sim=sim),
        [Column("submit_cycles"), Column("cycles_per_second"), Column("code_bytes")],
    )
