"""Firmware scenarios: the data a C test program works on, and the check of its result.

A scenario is computed in Python with a seed: an L2 image (the operands as the firmware
finds them), a C header of ``static const`` tables the program walks with the HAL
(:mod:`tinyattn.sw.c_tables`), and what L2 must hold after the run according to the
golden model. The programs themselves are hand-written C in ``verif/firmware/`` (:data:`PROGRAMS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.hw.dma import ALIGN_BYTES, Direction
from tinyattn.hw.job import Job, JobError, Op
from tinyattn.sw.c_tables import c_dma, c_job, c_table
from tinyattn.sw.command_list import CommandList
from tinyattn.verif.descriptors import Descriptor
from tinyattn.verif.engine_model import run_job
from tinyattn.verif.job_layouts import (
    Rect,
    bulk_descriptors,
    job_inputs_outputs,
    layout_three_jobs,
    rect_mismatch,
    useful_macs,
)

__all__ = [
    "PROGRAMS",
    "ClusterJobsScenario",
    "SequencerScenario",
    "cluster_jobs_scenario",
    "sequencer_scenario",
]

#: The folder of the scenario programs (``cluster_jobs.c``, ``errors.c``, ``faults.c``).
PROGRAMS = Path(__file__).resolve().parent / "firmware"


@dataclass(frozen=True)
class ClusterJobsScenario:
    """GEMM, ATTENTION and GEMM on operands DMA'd from L2; results DMA'd back.

    L2 layout: the job region's bulk image (random bytes where the tensors go) at 0,
    then each input tensor packed with a random row stride, then one area per output
    tensor, then the whole job region after the run.
    """

    header: str
    l2_image: np.ndarray
    jobs: tuple[Job, ...]
    outputs: tuple[tuple[Rect, int, int], ...]  # (tensor, L2 base, L2 stride)
    region: tuple[int, int, int]  # L1 [lo, hi) and its L2 base after the run
    want_l1: np.ndarray
    loads: tuple[Descriptor, ...] = ()
    stores: tuple[Descriptor, ...] = ()

    @property
    def macs(self) -> int:
        return sum(useful_macs(j) for j in self.jobs)

    def describe(self) -> str:
        return ", ".join(
            f"{Op(j.op).name} m={j.m} n={j.n} k={j.k} h={j.heads} flags={j.flags:#x}"
            for j in self.jobs
        )

    def check(self, l2_after: np.ndarray) -> None:
        """Raise ``AssertionError`` naming the first byte that differs from the golden model."""
        for r, base, stride in self.outputs:
            got = np.stack(
                [l2_after[base + i * stride : base + i * stride + r.cols] for i in range(r.rows)]
            )
            problem = rect_mismatch(got, self.want_l1, r)
            if problem:
                raise AssertionError(f"{problem} ({self.describe()})")
        lo, hi, base = self.region
        got = l2_after[base : base + hi - lo]
        diff = np.flatnonzero(got != self.want_l1[lo:hi])
        if diff.size:
            a = lo + int(diff[0])
            raise AssertionError(
                f"the L1 job region differs from the golden model at {diff.size} bytes, first "
                f"at L1 {a:#x} (got {got[diff[0]]}, want {self.want_l1[a]}); {self.describe()}"
            )


def _row_bytes(cols: int) -> int:
    return (cols + ALIGN_BYTES - 1) // ALIGN_BYTES * ALIGN_BYTES


def cluster_jobs_scenario(
    cfg: ClusterConfig, seed: int, *, small: bool = True, reserve_top: int = 0
) -> ClusterJobsScenario:
    """Three random jobs laid out in L1, their operands in an L2 image, and the C tables.

    The header defines ``scn_loads`` (L2 -> L1: the bulk image, then each input),
    ``scn_jobs`` and ``scn_stores`` (L1 -> L2: each output, then the whole region), with
    ``SCN_*_COUNT`` and ``SCN_MACS`` (the jobs' useful MACs). The top ``reserve_top``
    bytes of L1 stay out of the jobs' region.
    """
    rng = np.random.default_rng(seed)
    job_space = cfg.memory.size_bytes - reserve_top
    try:
        lo, hi, img, bulk, jobs = layout_three_jobs(cfg, rng, job_space, small, attempts=50)
    except MemoryError:
        raise ValueError(f"no room for three jobs in the {job_space}-byte L1") from None
    want = img.copy()
    for job in jobs:
        code = run_job(want, job, cfg)
        assert code == JobError.NONE, code

    l2 = bytearray()

    def take(nbytes: int) -> int:
        l2.extend(b"\0" * (-len(l2) % 16 + 4 * int(rng.integers(0, 4))))
        base = len(l2)
        l2.extend(b"\0" * nbytes)
        return base

    loads = [bulk_descriptors(lo, hi, take(hi - lo), Direction.L2_TO_L1)]
    l2[loads[0].l2_addr : loads[0].l2_addr + hi - lo] = bulk[lo:hi].tobytes()
    outs: list[Rect] = []
    for job in jobs:
        ins, o = job_inputs_outputs(job)
        outs += o
        for r in ins:
            row = _row_bytes(r.cols)
            stride = row + 4 * int(rng.integers(0, 3))
            base = take(r.rows * stride)
            for i in range(r.rows):
                a = r.addr + i * r.stride
                l2[base + i * stride : base + i * stride + row] = img[a : a + row].tobytes()
            loads.append(
                Descriptor(Direction.L2_TO_L1, base, r.addr, row, r.rows, stride, r.stride)
            )
    stores, outputs = [], []
    for r in outs:
        row = _row_bytes(r.cols)
        stride = row + 4 * int(rng.integers(0, 3))
        base = take(r.rows * stride)
        stores.append(Descriptor(Direction.L1_TO_L2, base, r.addr, row, r.rows, stride, r.stride))
        outputs.append((r, base, stride))
    region_base = take(hi - lo)
    stores.append(bulk_descriptors(lo, hi, region_base, Direction.L1_TO_L2))
    l2.extend(b"\0" * (-len(l2) % 16))

    macs = sum(useful_macs(j) for j in jobs)
    header = (
        f"/* Generated by tinyattn.verif.firmware_scenarios (seed {seed}). */\n"
        '#ifndef SCENARIO_H\n#define SCENARIO_H\n\n#include "tinyattn_hal.h"\n\n'
        f"#define SCN_MACS {macs}ull\n\n"
        + c_table("ta_dma_t", "scn_loads", [c_dma(t) for t in loads])
        + "\n"
        + c_table("ta_job_t", "scn_jobs", [c_job(j) for j in jobs])
        + "\n"
        + c_table("ta_dma_t", "scn_stores", [c_dma(t) for t in stores])
        + "\n#endif /* SCENARIO_H */\n"
    )
    return ClusterJobsScenario(
        header=header,
        l2_image=np.frombuffer(bytes(l2), dtype=np.uint8).copy(),
        jobs=tuple(jobs),
        outputs=tuple(outputs),
        region=(lo, hi, region_base),
        want_l1=want,
        loads=tuple(loads),
        stores=tuple(stores),
    )


#: L1 bytes at the top that the sequencer scenario keeps for its command lists.
SEQ_LIST_BYTES = 2048


@dataclass(frozen=True)
class SequencerScenario:
    """The cluster scenario as command lists: one that does everything, one that fails.

    ``good`` loads the operands, runs the three jobs and stores the results, as
    ``cluster_jobs.c`` does with the HAL. ``bad`` pushes a DMA descriptor that reaches
    beyond L1 and then waits for it: the sequencer must stop with ``HW_ERROR``.
    """

    jobs: ClusterJobsScenario
    header: str
    l2_image: np.ndarray
    good: CommandList
    bad: CommandList


def sequencer_scenario(cfg: ClusterConfig, seed: int, *, small: bool = True) -> SequencerScenario:
    """The lists go at the end of the L2 image; ``SEQ_*`` defines say where and how long."""
    scn = cluster_jobs_scenario(cfg, seed, small=small, reserve_top=SEQ_LIST_BYTES)
    good = CommandList(cfg)
    for t in scn.loads:
        good.transfer(t)
    good.wait_dma(len(scn.loads))
    for job in scn.jobs:
        good.job(job)
    good.wait_jobs(len(scn.jobs))
    for t in scn.stores:
        good.transfer(t)
    good.wait_dma(len(scn.loads) + len(scn.stores)).end()
    size = cfg.memory.size_bytes
    beyond = Descriptor(Direction.L2_TO_L1, 0, size - 64, 128, 1, 128, 128)
    bad = CommandList(cfg).transfer(beyond).wait_dma(1).write("HOST_EXIT", 99).end()
    if 4 * (len(good) + len(bad)) > SEQ_LIST_BYTES:
        raise ValueError(f"the lists take {4 * (len(good) + len(bad))} bytes of L1")

    l2 = bytearray(scn.l2_image.tobytes())
    l2.extend(b"\0" * (-len(l2) % 16))
    good_l2 = len(l2)
    l2 += good.to_bytes() + bad.to_bytes()
    l2.extend(b"\0" * (-len(l2) % 16))
    list_l1 = size - SEQ_LIST_BYTES
    defines = {
        "SEQ_LISTS_L2": good_l2,
        "SEQ_LISTS_BYTES": 4 * (len(good) + len(bad)),
        "SEQ_GOOD_L1": list_l1,
        "SEQ_BAD_L1": list_l1 + 4 * len(good),
        "SEQ_GOOD_JOBS": len(scn.jobs),
        "SEQ_GOOD_TRANSFERS": len(scn.loads) + len(scn.stores),
    }
    header = (
        f"/* Generated by tinyattn.verif.firmware_scenarios (seed {seed}). */\n"
        "#ifndef SEQ_SCENARIO_H\n#define SEQ_SCENARIO_H\n\n"
        + "".join(f"#define {k} {v:#x}u\n" for k, v in defines.items())
        + f"#define SEQ_MACS {scn.macs}ull\n\n#endif /* SEQ_SCENARIO_H */\n"
    )
    return SequencerScenario(
        scn, header, np.frombuffer(bytes(l2), dtype=np.uint8).copy(), good, bad
    )
