"""Tiler: L1 tiles, loop order and buffering of every engine op, chosen by a cycle model.

An **op** is one GEMM job of the lowered program, or the ``ATTENTION`` job(s) of one
attention op: one job over all heads with a per-head requantization table
(``FLAG_PER_HEAD``, what :mod:`tinyattn.sw.lowering` emits), or one job per head (run as a
head loop). The runtime executes an op as a loop nest::

    for h in heads:                     # attention, one job per head (else heads = 1)
        for outer in tiles of M (or N):  # the loop order
            for inner in tiles of N (or M):
                one engine job on L1 tiles

GEMM tiles are ``tm`` rows of M and ``tn`` columns of N; K is never split (the engine cannot
accumulate across jobs). Attention tiles are ``tm`` queries of one head (of every head, with
``FLAG_PER_HEAD``: the heads' columns side by side), with the whole K and Vᵀ of the head(s)
and the head table in L1. Each operand is in one of three buffering modes:

- ``ONCE``: its tile never changes, loaded once (one slot), e.g. Wᵀ when ``tn = n``;
- ``DOUBLE``: two slots; the load for the next job goes to the slot the job before last used,
  so the DMA of the next tile overlaps the engine's current job;
- ``CACHED``: the inner-loop operand (and its parameters) loaded during the first outer
  iteration into one slot per tile and kept, so later outer iterations reload nothing.

The **runtime loop** (:func:`op_actions`) is what the C runtime does for one op record; the
executor (:mod:`tinyattn.sw.schedule`) runs the same actions on the golden engine and the cost
model (:func:`simulate`) times them with three agents (core, DMA, engine), their queues and
their overlap. :func:`plan_op` searches all tile sizes, loop orders and cache choices
exhaustively and keeps the fastest plan that fits L1 (:func:`tinyattn.sw.memplan.plan_l1`).
The cost constants are in :class:`CostModel`, with where each was measured.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from tinyattn.config import ClusterConfig
from tinyattn.hw.dma_codes import Direction
from tinyattn.hw.job import (
    FLAG_PER_HEAD,
    FLAG_PER_ROW,
    FLAG_RESIDUAL,
    PARAM_RECORD_BYTES,
    Job,
    JobError,
    Op,
)
from tinyattn.sw.lowering import EngineJob, Operand, Placement
from tinyattn.sw.memplan import L2_ALIGN, L1Arena, PlanError, l1_footprint, plan_l1
from tinyattn.verif.engine_model import check_job

__all__ = [
    "CACHED",
    "DOUBLE",
    "KIND_ATTENTION",
    "KIND_FILL",
    "KIND_GATHER",
    "KIND_GEMM",
    "MARK",
    "ONCE",
    "OPERAND_KEYS",
    "RELOAD",
    "Action",
    "CostModel",
    "OpCycles",
    "OpPlan",
    "OpRecord",
    "OperandRecord",
    "deps",
    "dma_cycles",
    "engine_cycles",
    "op_actions",
    "plan_op",
    "simulate",
    "split_heads",
]

KIND_GEMM, KIND_ATTENTION, KIND_GATHER, KIND_FILL = 1, 2, 3, 4
UNUSED, ONCE, DOUBLE, CACHED = 0, 1, 2, 3
MODE_NAMES = {UNUSED: "-", ONCE: "once", DOUBLE: "double", CACHED: "cached"}
#: Operand slots of a record: X/Q, Wᵀ/K, Y/O, residual/Vᵀ, parameter records.
OPERAND_KEYS = ("a", "b", "c", "d", "p")
ORDER_MN, ORDER_NM = 0, 1

# Action kinds of the runtime loop (tuples, for speed: the search simulates thousands).
LOAD, STORE, JOB, WAIT_DMA, WAIT_JOB, CORE, RELOAD, MARK = range(8)
#: ``(LOAD|STORE, l2_addr, l1_addr, row_bytes, rows, l2_stride, l1_stride)``; ``RELOAD`` is
#: a load the core pushes with ``ta_dma_resubmit`` (only addresses and rows written);
#: ``(MARK,)`` costs nothing and records the issuer's time (``simulate(marks=...)``),
#: ``(JOB, Job)``, ``(WAIT_DMA, n)`` (the first ``n`` transfers of the stream are done),
#: ``(WAIT_JOB, n)`` (the first ``n`` jobs are done), ``(CORE, cycles)``.
Action = tuple


def _up(n: int, a: int) -> int:
    return -(-n // a) * a


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# --------------------------------------------------------------------------------------------
# Cost model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostModel:
    """Every constant of the cycle model, in cycles, with where it comes from.

    All are measured on the RTL: the engine and the DMA by their benches
    (``docs/performance.md``, ``docs/dma.md``), the firmware by ``verif/firmware/fw_costs.c``
    around single calls of the runtime's helpers, and checked against the per-record cycles of
    the 2-layer fixture on the cluster (:mod:`tinyattn.sim.calibrate`, ``docs/deploy.md``).
    """

    # Engine, docs/performance.md (default engine, Verilator). The array runs one beat a cycle:
    # a GEMM unit of r rows x c channels costs r * ceil(c / n_pe) * ceil(k / vec_len) cycles,
    # an attention unit pair (QK then PV) likewise; each unit is at least its port beats.
    #: GEMM job: 8257 measured - 8192 ideal = 65 for both 128-row shapes (the job checks, the
    #: first weight block, parameters and X row, and a short tail: the writer starts each
    #: row as it completes).
    gemm_job: int = 65
    #: ATTENTION job: S=128 H=4: 6225 - 6144 = 81 with 8 unit pairs; S=64 H=4: 1601 - 1536 =
    #: 65 with 4 pairs; so 49 per job plus :attr:`att_pair` per (head, query tile). With
    #: split-lane QK beats (split s) the job's first two key blocks are s times longer and
    #: rank above the first query rows: 2 (s - 1) n_pe more (D=32: S=128 4209 cycles
    #: measured = 8 x (512 + 4) + 49 + 32; S=64 1121 = 4 x (256 + 4) + 49 + 32).
    att_job: int = 49
    #: The array drains once between the QK and the PV unit of a query tile (see above).
    att_pair: int = 4
    #: A job queued while the one before it runs, and reading nothing it writes, starts
    #: while that one drains (docs/engine.md, "Jobs back to back"): it ends up to this much
    #: sooner than alone, at most its own fixed cost (:attr:`gemm_job`, :attr:`att_job`).
    #: 8 queued MobileBERT FFN GEMMs: 65,601 cycles = 8 x 8257 - 7 x 65 (each job after
    #: the first adds exactly its 8192 ideal cycles). Attention: assumed the same.
    job_overlap: int = 65
    # DMA, docs/dma.md ("Throughput (measured)"), L2 latency 1 cycle, no stalls.
    #: Fixed cost of an L2 -> L1 transfer: 9 cycles + the L2 latency (1).
    dma_load: int = 10
    #: Fixed cost of an L1 -> L2 transfer: 10 cycles + the L2 latency (1).
    dma_store: int = 11
    #: Per row beyond its beats: rows move without a bubble at constant word offsets.
    dma_row: int = 0
    #: Per row whose word offsets change from row to row (a stride that is not a multiple of
    #: the beat): the realigner loses about one cycle (682 vs 640 cycles at 128 bits).
    dma_row_realign: int = 1
    #: Cycles per beat of a transfer beside the engine, for the static estimates (the search's
    #: lower bounds, the placement's scores); :func:`simulate` uses :meth:`dma_beat_beside`.
    dma_beat: float = 1.3
    #: Cycles per beat while the engine is idle (docs/dma.md: a beat a cycle).
    dma_beat_idle: float = 1.0
    #: Beside a job that uses its L1 port in a share ``u`` of its cycles, the DMA gets the
    #: banks it needs in ``1 - dma_conflict * u`` of the cycles: the engine's wide port wins
    #: the banks it uses, and the DMA's narrow lanes wait. Fitted on the fixture's per-op
    #: cycles (see docs/deploy.md).
    dma_conflict: float = 0.8
    # Firmware on the control core: what sw/firmware/tinyattn_runtime.c does per record, per
    # job and per transfer, measured on the cluster RTL (ClusterConfig(), Verilator) by
    # verif/firmware/fw_costs.c, which includes the runtime and prints ta_cycles() around
    # single calls of its helpers on an idle cluster (`python -m tinyattn.sim.calibrate
    # --firmware`; less the 4 cycles of an empty measurement). Two constants are fitted on
    # the per-record rdcycle of the 2-layer fixture at S = 128 (tinyattn.sim.model_run), as
    # noted. Each record of one shape measures the same cycles there.
    #: A transfer's submission, dma() then ta_dma_submit: the descriptor on the stack, the
    #: queue-room test, 7 register writes and DMA_PUSH: `dma_submit` 406. The record
    #: fetches, the gathers and the fills pay it.
    dma_submit: int = 406
    #: ta_dma_resubmit in a gather: the L2 and L1 addresses, the rows and DMA_PUSH, with the
    #: run detection around it. Fitted with gather_row on the fixture's two gathers.
    dma_resubmit: int = 190
    #: dma_wait / job_wait on a ticket already due (one done-counter read, a compare):
    #: `dma_wait_done` 44, `job_wait_done` 45. A wait that sleeps adds the same after the event.
    wait: int = 45
    #: Per record, besides its fetch (a transfer and a wait, separate actions): the copy of the
    #: record's 136 bytes before the head fields from L1 word by word, ta_errors_read (132,
    #: `errors_read`), and the dispatch and loop of ta_run_schedule with its two rdcycle reads.
    #: Fitted: 1,607 when the copy took all 176 bytes (`copy_record_176` 1,175); a fill record
    #: then measured 3,127 and now 2,641, so 486 less.
    op: int = 1120
    #: Per gathered position: its id's L1 read and bounds check, its table row (a multiply,
    #: single-cycle with ENABLE_FAST_MUL) and the run test, in one pass over the ids. Fitted
    #: with dma_resubmit on the fixture's two gathers (word table, 128 runs: 35,292; position
    #: and type table: 12,512 measured; 38,435 and 15,214 when the ids were checked in a pass
    #: of their own).
    gather_row: int = 49
    #: Per 4 bytes of a fill row that the core writes into L1 (a volatile store and the loop):
    #: `run_fill_128` 1,187 for 32 words, less its transfer's submission, duration and wait.
    fill_word: int = 22
    # The command sequencer (hw/sequencer.py) in place of the core for the engine ops: two
    # cycles per bus access (grant, then the response), so a command header costs 2 and each
    # WRITE word 4 (read it, write it).
    #: The staging WRITE of a job's 21 registers: 2 + 21 * 4.
    seq_job_stage: int = 86
    #: The JOB_PUSH WRITE: 2 + 4.
    seq_job_push: int = 6
    #: A transfer: the WRITE of the 7 descriptor registers and the DMA_PUSH WRITE.
    seq_dma_submit: int = 36
    #: A WAIT already due: header and operand (4), one poll (2).
    seq_wait: int = 6
    #: The STAMP before each op: header, operand, the write.
    seq_op: int = 6

    def dma_beat_beside(self, port_load: float) -> float:
        """Cycles per DMA beat beside a job with this share of port cycles."""
        return self.dma_beat_idle / (1 - self.dma_conflict * min(port_load, 1.0))

    def sequencer(self) -> CostModel:
        """This model with the sequencer as the issuer of transfers and waits: how
        :func:`simulate` times the engine ops' command stream (``docs/sequencer.md``)."""
        return dataclasses.replace(self, dma_submit=self.seq_dma_submit, wait=self.seq_wait)


@dataclass(frozen=True)
class OpCycles:
    """Predicted cycles of one op: the total, the busy cycles of each agent, and counts."""

    total: int
    engine: int
    dma: int
    firmware: int
    jobs: int
    transfers: int

    @property
    def bound(self) -> str:
        """The agent whose busy time is closest to the total."""
        busy = {"engine": self.engine, "dma": self.dma, "firmware": self.firmware}
        return max(busy, key=lambda k: busy[k])

    def __add__(self, other: OpCycles) -> OpCycles:
        return OpCycles(
            self.total + other.total,
            self.engine + other.engine,
            self.dma + other.dma,
            self.firmware + other.firmware,
            self.jobs + other.jobs,
            self.transfers + other.transfers,
        )


ZERO_CYCLES = OpCycles(0, 0, 0, 0, 0, 0)


def _gemm_units(m: int, n: int, tile_m: int, vec_len: int) -> Iterator[tuple[int, int, int]]:
    """``(rows, cols, count)`` of the engine's GEMM units (full ones, then the ragged ones)."""
    fm, rm = divmod(m, tile_m)
    fn, rn = divmod(n, vec_len)
    for rows, nr in ((tile_m, fm), (rm, 1 if rm else 0)):
        for cols, nc in ((vec_len, fn), (rn, 1 if rn else 0)):
            if nr and nc:
                yield rows, cols, nr * nc


def _engine_work(job: Job, cfg: ClusterConfig, cost: CostModel) -> tuple[int, int]:
    """(cycles from queueing to ``done``, beats on the engine's L1 port) of one job."""
    e = cfg.engine
    if job.op == Op.GEMM:
        kb = _cdiv(job.k, e.vec_len)
        out_beats = 2 if job.flags & FLAG_RESIDUAL else 1
        total = port = 0
        for rows, cols, count in _gemm_units(job.m, job.n, e.tile_m, e.vec_len):
            compute = rows * _cdiv(cols, e.n_pe) * kb
            beats = cols * kb + rows * kb + rows * out_beats + _cdiv(cols * 16, e.vec_len)
            total += count * max(compute, beats)
            port += count * beats
        return total + cost.gemm_job, port
    total = port = 0
    # Split-lane QK beats: split_for(k) keys a unit per beat (docs/engine.md).
    split = e.split_for(job.k)
    for r0 in range(0, job.m, e.tile_m):
        rows = min(e.tile_m, job.m - r0)
        qk_beats, pv_beats = job.n + rows, job.k + rows
        qk = rows * _cdiv(job.n, e.n_pe * split) * _cdiv(job.k, e.vec_len)
        pv = rows * _cdiv(job.k, e.n_pe) * _cdiv(job.n, e.vec_len)
        # The fetchers run a unit ahead, so the pair is bound by its compute or its beats.
        total += max(qk + pv, qk_beats + pv_beats) + cost.att_pair
        port += qk_beats + pv_beats
    # The first two QK blocks (split * n_pe key rows each) rank above the first query rows.
    first_blocks = 2 * (split - 1) * e.n_pe
    return job.heads * total + cost.att_job + first_blocks, job.heads * port


def engine_cycles(job: Job, cfg: ClusterConfig, cost: CostModel) -> int:
    """Cycles of one job from queueing to ``done`` (``docs/performance.md`` fitted)."""
    return _engine_work(job, cfg, cost)[0]


def _job_ranges(job: Job) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """The byte ranges (first, last) a job reads, and the one it writes (heads included)."""

    def span(addr: int, stride: int, rows: int, row_bytes: int, hstride: int = 0) -> tuple:
        heads = job.heads if job.op == Op.ATTENTION else 1
        return addr, addr + (rows - 1) * stride + row_bytes - 1 + (heads - 1) * hstride

    if job.op == Op.ATTENTION:
        reads = [
            span(job.a_addr, job.a_stride, job.m, job.k, job.a_hstride),
            span(job.b_addr, job.b_stride, job.n, job.k, job.b_hstride),
            span(job.d_addr, job.d_stride, job.k, job.n, job.d_hstride),
        ]
        return reads, span(job.c_addr, job.c_stride, job.m, job.k, job.c_hstride)
    channels = job.m if job.flags & FLAG_PER_ROW else job.n
    reads = [
        span(job.a_addr, job.a_stride, job.m, job.k),
        span(job.b_addr, job.b_stride, job.n, job.k),
        span(job.p_addr, PARAM_RECORD_BYTES, channels, PARAM_RECORD_BYTES),
    ]
    if job.flags & FLAG_RESIDUAL:
        reads.append(span(job.d_addr, job.d_stride, job.m, job.n))
    return reads, span(job.c_addr, job.c_stride, job.m, job.n)


def reads_output_of(job: Job, previous: Job) -> bool:
    """``job`` reads a byte in the range ``previous`` writes: the engine starts it only
    after ``previous`` is done (the rule of ``docs/engine.md``, "Jobs back to back")."""
    first, last = _job_ranges(previous)[1]
    return any(a <= last and first <= b for a, b in _job_ranges(job)[0])


def engine_port_load(job: Job, cfg: ClusterConfig, cost: CostModel) -> float:
    """The share of a job's cycles in which the engine uses its L1 port."""
    cycles, beats = _engine_work(job, cfg, cost)
    return beats / cycles


def dma_cycles(
    direction: int,
    l2_addr: int,
    l1_addr: int,
    row_bytes: int,
    rows: int,
    l2_stride: int,
    l1_stride: int,
    cfg: ClusterConfig,
    cost: CostModel,
    per_beat: float | None = None,
) -> int:
    """Cycles of one transfer from acceptance to ``done`` (``docs/dma.md``), at
    ``per_beat`` cycles a beat (default: ``cost.dma_beat``)."""
    per_beat = cost.dma_beat if per_beat is None else per_beat
    beat = cfg.dma.dma_bits // 8
    fixed = cost.dma_load if direction == Direction.L2_TO_L1 else cost.dma_store
    if l2_stride % beat == 0 and l1_stride % beat == 0:
        per_row = max(
            _cdiv(l2_addr % beat + row_bytes, beat), _cdiv(l1_addr % beat + row_bytes, beat)
        )
        return fixed + int(rows * (per_row * per_beat + cost.dma_row))
    beats = 0
    for r in range(rows):
        a2, a1 = (l2_addr + r * l2_stride) % beat, (l1_addr + r * l1_stride) % beat
        beats += max(_cdiv(a2 + row_bytes, beat), _cdiv(a1 + row_bytes, beat))
    return fixed + int(beats * per_beat) + rows * (cost.dma_row + cost.dma_row_realign)


def simulate(
    actions: Sequence[Action],
    cfg: ClusterConfig,
    cost: CostModel,
    marks: list[int] | None = None,
) -> OpCycles:
    """Time ``actions`` with the core, the DMA and the engine running concurrently.

    ``marks``, when given, receives the issuer's time at every ``MARK`` action.

    The core executes the actions in order. A submission waits for room in its queue
    (``dma.queue_depth`` / ``engine.job_queue_depth`` waiting besides the running one) and
    then costs its firmware cycles; the DMA and the engine each run their queue in order.
    A job pushed while the one before it runs, and not reading its output, overlaps its
    drain by up to :attr:`CostModel.job_overlap` cycles.
    """
    dq, jq = cfg.dma.queue_depth, cfg.engine.job_queue_depth
    core = fw = 0
    d_start: list[int] = []
    d_end: list[int] = []
    j_start: list[int] = []
    j_end: list[int] = []
    j_load: list[float] = []
    previous_job: Job | None = None
    d_free = j_free = d_busy = j_busy = 0
    for act in actions:
        kind = act[0]
        if kind in (LOAD, STORE, RELOAD):
            i = len(d_end)
            if i >= dq:
                core = max(core, d_start[i - dq])
            submit = cost.dma_resubmit if kind == RELOAD else cost.dma_submit
            core += submit
            fw += submit
            direction = Direction.L1_TO_L2 if kind == STORE else Direction.L2_TO_L1
            s = max(core, d_free)
            # Beside the jobs queued so far at their port load's rate, then at the idle rate.
            idle = dma_cycles(direction, *act[1:], cfg, cost, cost.dma_beat_idle)
            dur = idle
            if s < j_free:
                k = len(j_end) - 1
                while k and j_start[k] > s and j_end[k - 1] > s:
                    k -= 1
                dur = dma_cycles(direction, *act[1:], cfg, cost, cost.dma_beat_beside(j_load[k]))
                if s + dur > j_free:
                    dur = j_free - s + math.ceil((1 - (j_free - s) / dur) * idle)
            d_free = s + dur
            d_busy += dur
            d_start.append(s)
            d_end.append(d_free)
        elif kind == JOB:
            i = len(j_end)
            if i >= jq:
                core = max(core, j_start[i - jq])
            core += cost.seq_job_push
            fw += cost.seq_job_push
            dur, beats = _engine_work(act[1], cfg, cost)
            j_load.append(beats / dur)
            if previous_job is not None and not reads_output_of(act[1], previous_job):
                # Pushed before the previous job's end: its fill overlaps that job's drain.
                fixed = cost.gemm_job if act[1].op == Op.GEMM else cost.att_job
                dur -= min(cost.job_overlap, fixed, max(0, j_free - core))
            previous_job = act[1]
            s = max(core, j_free)
            j_free = s + dur
            j_busy += dur
            j_start.append(s)
            j_end.append(j_free)
        elif kind == WAIT_DMA:
            if act[1]:
                core = max(core, d_end[act[1] - 1])
            core += cost.wait
            fw += cost.wait
        elif kind == WAIT_JOB:
            if act[1]:
                core = max(core, j_end[act[1] - 1])
            core += cost.wait
            fw += cost.wait
        elif kind == MARK:
            if marks is not None:
                marks.append(core)
        else:
            core += act[1]
            fw += act[1]
    return OpCycles(max(core, d_free, j_free), j_busy, d_busy, fw, len(j_end), len(d_end))


# --------------------------------------------------------------------------------------------
# Records and the runtime loop
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperandRecord:
    """One operand of an op record (see ``docs/deploy.md``, "Schedule records").

    The tile of loop indices ``(h, i, j)`` starts in L2 at
    ``l2_addr + h * l2_hstride + row0 * l2_pitch + col0`` and goes to slot ``s`` at
    ``l1_addr + s * l1_slot`` with row stride ``l1_pitch``.
    """

    l2_addr: int = 0
    l2_hstride: int = 0
    l1_addr: int = 0
    l1_slot: int = 0
    l2_pitch: int = 0
    l1_pitch: int = 0
    mode: int = UNUSED
    slots: int = 0


@dataclass(frozen=True)
class OpRecord:
    """The decoded form of one schedule record (packed by :mod:`tinyattn.sw.schedule`).

    ``GEMM`` / ``ATTENTION``: the op's job dimensions (per head), tiles, loop order and cache
    flag, the five operands (``a b c d p``) and one 8-byte field block per head: GEMM
    ``(res_y_mult, res_r_mult, res_shift, aff_shift)``, attention ``(qk mult, shift, add,
    av mult, shift, add)``. ``GATHER`` / ``FILL`` reuse the fields (``docs/deploy.md``).
    """

    kind: int
    flags: int
    order: int
    cache: bool
    heads: int
    m: int
    n: int
    k: int
    tm: int
    tn: int
    tiles: int
    operands: tuple[OperandRecord, ...]
    head_fields: tuple[tuple[int, ...], ...] = ()
    #: The slot of a ``DOUBLE`` operand that the first load (and the first output) uses:
    #: 0 or 1. Not in the packed record (engine ops run from the command stream); the
    #: schedule flips it where that lets the op's first tiles load during the previous op.
    first_slot: int = 0
    #: An attention op with ``FLAG_PER_HEAD`` run as one job over all heads per query tile
    #: (else one job per head, each reading its own record of the head table). Not packed.
    all_heads: bool = False

    def operand(self, key: str) -> OperandRecord:
        return self.operands[OPERAND_KEYS.index(key)]


def deps(kind: int, key: str, flags: int, all_heads: bool = False) -> str:
    """Loop indices (``h``, ``m``, ``n``) that select an operand's tile (``all_heads``: an
    attention op run as one job over all heads per query tile)."""
    if all_heads:
        return {"a": "m", "b": "", "c": "m", "d": "", "p": ""}[key]
    if kind == KIND_ATTENTION:
        return {"a": "hm", "b": "h", "c": "hm", "d": "h", "p": "h"}[key]
    if key == "p":
        return "m" if flags & FLAG_PER_ROW else "n"
    return {"a": "m", "b": "n", "c": "mn", "d": "mn"}[key]


def _rect(rec: OpRecord, key: str, i: int, j: int) -> tuple[int, int, int, int]:
    """``(row0, rows, col0, row_bytes)`` of an operand's tile ``(i, j)`` in its tensor."""
    m0, mr = i * rec.tm, min(rec.tm, rec.m - i * rec.tm)
    if rec.kind == KIND_ATTENTION:
        # All heads: their columns (rows of Vᵀ) side by side, and the head table.
        width = rec.k * (rec.heads if rec.all_heads else 1)
        if key == "p":  # the head table, or head h's record (its L2 head stride)
            return 0, rec.heads if rec.all_heads else 1, 0, 16
        if key in "ac":
            return m0, mr, 0, width
        return (0, rec.n, 0, width) if key == "b" else (0, width, 0, rec.n)
    n0, nc = j * rec.tn, min(rec.tn, rec.n - j * rec.tn)
    if key == "a":
        return m0, mr, 0, rec.k
    if key == "b":
        return n0, nc, 0, rec.k
    if key == "p":
        return (m0, mr, 0, 16) if rec.flags & FLAG_PER_ROW else (n0, nc, 0, 16)
    return m0, mr, n0, nc


def iterations(rec: OpRecord) -> list[tuple[int, int, int]]:
    """``(h, i, j)`` of every job of the op, in loop order."""
    tmc = _cdiv(rec.m, rec.tm)
    tnc = 1 if rec.kind == KIND_ATTENTION else _cdiv(rec.n, rec.tn)
    its = []
    for h in range(1 if rec.all_heads else rec.heads):
        if rec.order == ORDER_MN:
            its += [(h, i, j) for i in range(tmc) for j in range(tnc)]
        else:
            its += [(h, i, j) for j in range(tnc) for i in range(tmc)]
    return its


def _tile_operands(addr: dict[str, int], pitch: dict[str, int], keys: str) -> dict[str, int]:
    """The ``<key>_addr`` and ``<key>_stride`` job fields of operands ``keys``: where their
    tiles sit in L1 and their row pitch there."""
    fields = {}
    for key in keys:
        fields[f"{key}_addr"] = addr[key]
        fields[f"{key}_stride"] = pitch[key]
    return fields


def _job(rec: OpRecord, h: int, i: int, j: int, slot: dict[str, int]) -> Job:
    f = rec.head_fields[h]
    addr = {k: rec.operand(k).l1_addr + slot[k] * rec.operand(k).l1_slot for k in slot}
    pitch = {k: rec.operand(k).l1_pitch for k in slot}
    _, rows, _, _ = _rect(rec, "a" if rec.kind == KIND_ATTENTION else "c", i, j)
    if rec.all_heads:
        return Job(
            op=Op.ATTENTION,
            m=rows,
            n=rec.n,
            k=rec.k,
            heads=rec.heads,
            flags=FLAG_PER_HEAD,
            p_addr=addr["p"],
            **_tile_operands(addr, pitch, "abcd"),
            a_hstride=rec.k,
            b_hstride=rec.k,
            c_hstride=rec.k,
            d_hstride=rec.k * pitch["d"],
        )
    if rec.kind == KIND_ATTENTION:
        return Job(
            op=Op.ATTENTION,
            m=rows,
            n=rec.n,
            k=rec.k,
            heads=1,
            **_tile_operands(addr, pitch, "abcd"),
            flags=rec.flags,
            p_addr=addr["p"] if rec.flags & FLAG_PER_HEAD else 0,
            qk=(f[0], f[1], f[2]),
            av=(f[3], f[4], f[5]),
        )
    _, _, _, cols = _rect(rec, "c", i, j)
    residual = bool(rec.flags & FLAG_RESIDUAL)
    return Job(
        op=Op.GEMM,
        m=rows,
        n=cols,
        k=rec.k,
        flags=rec.flags,
        **_tile_operands(addr, pitch, "abcd" if residual else "abc"),
        p_addr=addr["p"],
        res_y_mult=f[0],
        res_r_mult=f[1],
        res_shift=f[2],
        aff_shift=f[3],
    )


def _transfer(rec: OpRecord, key: str, h: int, i: int, j: int, l1: int) -> tuple[int, ...]:
    o = rec.operand(key)
    row0, rows, col0, nbytes = _rect(rec, key, i, j)
    l2 = o.l2_addr + h * o.l2_hstride + row0 * o.l2_pitch + col0
    return (l2, l1, nbytes, rows, o.l2_pitch, o.l1_pitch)


def op_actions(rec: OpRecord, cost: CostModel) -> list[Action]:
    """The runtime loop of one GEMM / ATTENTION record, as actions (``docs/deploy.md``)::

        loads(0)
        for t in jobs:
            write job t's registers
            wait for every transfer submitted so far     # loads(t) and store(t-2)
            push job t
            if t > 0: wait for job t-1; store(t-1)
            if t + 1 < jobs: loads(t+1)                  # overlaps job t
        wait for the last job; store(last); wait for every transfer

    ``loads(t)`` loads each input whose tile changes at job ``t`` (a ``CACHED`` one only on
    the first outer iteration) into its next slot.

    The sequencer runs these actions as commands (:mod:`tinyattn.sw.stream`); its own work
    is timed by the ``seq_*`` constants of :class:`CostModel`: a STAMP per op, a job's
    staging WRITE, and (with :meth:`CostModel.sequencer`) each transfer and wait.
    """
    keys = [k for k in ("a", "b", "d", "p") if rec.operand(k).mode != UNUSED]
    var_pos = {"h": 0, "m": 1, "n": 2}
    dep_pos = {
        k: [var_pos[v] for v in deps(rec.kind, k, rec.flags, rec.all_heads)] for k in [*keys, "c"]
    }
    its = iterations(rec)
    last_key: dict[str, tuple[int, ...]] = {}
    loaded: dict[str, int] = dict.fromkeys(keys, 0)
    seen: dict[str, set[tuple[int, ...]]] = {k: set() for k in keys}
    slot_now: dict[str, int] = {}
    plan: list[tuple[list[Action], dict[str, int]]] = []
    for t, it in enumerate(its):
        loads: list[Action] = []
        for k in keys:
            o = rec.operand(k)
            key = tuple(it[p] for p in dep_pos[k])
            if last_key.get(k) == key:
                continue
            last_key[k] = key
            if o.mode == CACHED:
                slot_now[k] = key[-1]
                if key in seen[k]:
                    continue
                seen[k].add(key)
            else:
                slot_now[k] = (loaded[k] + rec.first_slot) % 2 if o.mode == DOUBLE else 0
            loaded[k] += 1
            l1 = o.l1_addr + slot_now[k] * o.l1_slot
            loads.append((LOAD, *_transfer(rec, k, *it, l1)))
        slots = dict(slot_now)
        slots["c"] = (t + rec.first_slot) % 2 if rec.operand("c").mode == DOUBLE else 0
        plan.append((loads, slots))

    def store(t: int) -> Action:
        c = rec.operand("c")
        return (STORE, *_transfer(rec, "c", *its[t], c.l1_addr + plan[t][1]["c"] * c.l1_slot))

    acts: list[Action] = [(CORE, cost.seq_op), *plan[0][0]]
    transfers = len(plan[0][0])
    for t, it in enumerate(its):
        acts.append((CORE, cost.seq_job_stage))  # the registers, before the tiles are in
        acts.append((WAIT_DMA, transfers))
        acts.append((JOB, _job(rec, *it, plan[t][1])))
        if t:
            acts.append((WAIT_JOB, t))
            acts.append(store(t - 1))
            transfers += 1
        if t + 1 < len(its):
            acts += plan[t + 1][0]
            transfers += len(plan[t + 1][0])
    acts.append((WAIT_JOB, len(its)))
    acts.append(store(len(its) - 1))
    acts.append((WAIT_DMA, transfers + 1))
    return acts


# --------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpPlan:
    """The chosen tiling of one op, its record (L2 addresses, L1 slots) and its prediction."""

    name: str
    kind: int
    jobs: tuple[EngineJob, ...]
    record: OpRecord
    arena: L1Arena
    cycles: OpCycles
    macs: int
    candidates: int  #: plans in the search space
    feasible: int  #: plans that fit L1
    simulated: int  #: plans timed (the rest were pruned by their lower bound)
    seconds: float

    @property
    def order(self) -> str:
        if self.kind == KIND_ATTENTION:
            return "m" if self.record.all_heads else "h,m"
        return "m,n" if self.record.order == ORDER_MN else "n,m"

    def modes(self) -> dict[str, str]:
        return {
            k: MODE_NAMES[o.mode]
            for k, o in zip(OPERAND_KEYS, self.record.operands, strict=True)
            if o.mode
        }

    def with_first_slot(self, first: int) -> OpPlan:
        """The same plan with its double buffers starting in slot ``first``."""
        return dataclasses.replace(self, record=dataclasses.replace(self.record, first_slot=first))

    def placed(self, addrs: dict[str, int]) -> OpPlan:
        """The same plan with buffer ``k`` moved to L1 address ``addrs[k]`` (the others stay);
        the tiles and slots do not change."""
        moved = {
            k: dataclasses.replace(b, addr=addrs.get(k, b.addr))
            for k, b in self.arena.buffers.items()
        }
        ops = tuple(
            dataclasses.replace(o, l1_addr=moved[k].addr) if k in moved else o
            for k, o in zip(OPERAND_KEYS, self.record.operands, strict=True)
        )
        arena = dataclasses.replace(self.arena, buffers=moved)
        return dataclasses.replace(
            self, record=dataclasses.replace(self.record, operands=ops), arena=arena
        )


def _sizes(dim: int, granule: int) -> list[int]:
    """Tile sizes that split ``dim`` into 1, 2, 3, ... balanced tiles (granule multiples)."""
    g = min(granule, dim)
    out = {min(dim, _up(_cdiv(dim, t), g)) for t in range(1, _cdiv(dim, g) + 1)}
    return sorted(out, reverse=True)


@dataclass(frozen=True)
class _Shape:
    """What a search depends on: the op's geometry and its L2 operands (addresses, pitches)."""

    kind: int
    m: int
    n: int
    k: int
    heads: int
    flags: int
    l2: tuple[tuple[int, int, int] | None, ...]  # per operand: (addr, pitch, hstride)
    fields: tuple[tuple[int, ...], ...]
    all_heads: bool = False


def _shape(jobs: Sequence[EngineJob], placements: dict[str, Placement]) -> _Shape:
    j0 = jobs[0]
    job = j0.job
    l2: list[tuple[int, int, int] | None] = []
    for key in OPERAND_KEYS:
        ops = [getattr(ej, key) for ej in jobs]
        if ops[0] is None:
            l2.append(None)
            continue
        addrs = [o.address(placements[o.tensor]) for o in ops]
        hstride = addrs[1] - addrs[0] if len(addrs) > 1 else 0
        if any(b - a != hstride for a, b in itertools.pairwise(addrs)):
            raise PlanError(f"{j0.op}: the heads' {key} operands are not evenly spaced in L2")
        pitch = PARAM_RECORD_BYTES if key == "p" else placements[ops[0].tensor].pitch
        l2.append((addrs[0], pitch, hstride))
    if job.op == Op.ATTENTION and job.flags & FLAG_PER_HEAD and len(jobs) == 1:
        # One job, all heads: their tiles are moved as one, so the heads must be adjacent.
        for key, o in (("a", j0.a), ("b", j0.b), ("c", j0.c), ("d", j0.d)):
            assert o is not None
            adjacent = (o.head_cols, o.head_rows) == ((job.k, 0) if key != "d" else (0, job.k))
            if job.heads > 1 and not adjacent:
                raise PlanError(
                    f"{j0.name}: its heads' {key} operands are not side by side (head stride "
                    f"{o.head_rows} rows + {o.head_cols} bytes, head dim {job.k})"
                )
        fields = ((*job.qk, *job.av),)
        return _Shape(
            KIND_ATTENTION, job.m, job.n, job.k, job.heads, job.flags, tuple(l2), fields, True
        )
    if job.op == Op.ATTENTION:
        fields = tuple((*ej.job.qk, *ej.job.av) for ej in jobs)
        for ej in jobs:
            if ej.job.heads != 1 or (ej.job.m, ej.job.n, ej.job.k) != (job.m, job.n, job.k):
                raise PlanError(f"{ej.name}: attention heads of one op must be alike")
        kind = KIND_ATTENTION
    else:
        fields = ((job.res_y_mult, job.res_r_mult, job.res_shift, job.aff_shift),)
        kind = KIND_GEMM
    return _Shape(kind, job.m, job.n, job.k, len(jobs), job.flags, tuple(l2), fields)


@dataclass
class _Candidate:
    tm: int
    tn: int
    order: int
    cache: bool
    buffers: list[tuple[str, int, int]] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)
    pitches: dict[str, int] = field(default_factory=dict)
    lower_bound: float = 0.0
    tiles: int = 0


def _candidates(s: _Shape, cfg: ClusterConfig, cost: CostModel) -> list[_Candidate]:
    """Every plan of the search space with its buffers, modes and a lower bound on cycles."""
    e = cfg.engine
    beat = cfg.dma.dma_bits // 8
    keys = [k for k, o in zip(OPERAND_KEYS, s.l2, strict=True) if o is not None]
    if s.kind == KIND_ATTENTION:
        combos = [(tm, s.n, ORDER_MN, False) for tm in _sizes(s.m, min(8, e.tile_m))]
    else:
        combos = []
        for tm in _sizes(s.m, min(8, e.tile_m)):
            for tn in _sizes(s.n, max(4, e.n_pe)):
                tmc, tnc = _cdiv(s.m, tm), _cdiv(s.n, tn)
                orders = [ORDER_MN] if tmc == 1 or tnc == 1 else [ORDER_MN, ORDER_NM]
                for order in orders:
                    combos.append((tm, tn, order, False))
                    if tmc > 1 and tnc > 1:
                        combos.append((tm, tn, order, True))
    out = []
    macs = s.m * s.n * s.k * (2 * s.heads if s.kind == KIND_ATTENTION else 1)
    for tm, tn, order, cache in combos:
        counts = {
            "h": 1 if s.all_heads else s.heads,
            "m": _cdiv(s.m, tm),
            "n": _cdiv(s.n, tn),
        }
        inner = "n" if order == ORDER_MN else "m"
        outer = "m" if inner == "n" else "n"
        c = _Candidate(tm, tn, order, cache)
        c.tiles = counts["h"] * counts["m"] * counts["n"]
        traffic = 0
        transfers = 0
        for k in keys:
            d = deps(s.kind, k, s.flags, s.all_heads)
            varying = [v for v in d if counts[v] > 1]
            rec = OpRecord(
                s.kind, s.flags, order, cache, s.heads, s.m, s.n, s.k, tm, tn, 1, (),
                all_heads=s.all_heads,
            )  # fmt: skip
            _, rows, _, nbytes = _rect(rec, k, 0, 0)
            pitch = 16 if k == "p" else _up(nbytes, 4)
            if not varying:
                mode, slots = ONCE, 1
            elif cache and d == inner:
                mode, slots = CACHED, counts[inner]
            else:
                mode, slots = DOUBLE, 2
            c.modes[k] = mode
            c.pitches[k] = pitch
            c.buffers.append((k, rows * pitch, slots))
            full = {"a": s.m * s.k, "b": s.n * s.k, "c": s.m * s.n, "d": s.m * s.n}.get(k, 0)
            if s.kind == KIND_ATTENTION:
                full = s.heads * (s.m * s.k if k in "ac" else s.n * s.k)
            if k == "p":
                full = (s.m if s.flags & FLAG_PER_ROW else s.n) * 16
                if s.kind == KIND_ATTENTION:
                    full = s.heads * 16
            reloads = counts[outer] if (d == inner and counts[inner] > 1 and not cache) else 1
            traffic += full * reloads
            loads = 1
            for v in "hmn":
                if v in d or (reloads > 1 and v == outer):
                    loads *= counts[v]
            transfers += loads
        c.buffers.sort(key=lambda b: "abdpc".index(b[0]))
        # Every job but the first may overlap the one before it (cost.job_overlap).
        engine_lb = macs / e.macs_per_cycle + c.tiles * (cost.gemm_job - cost.job_overlap)
        engine_lb += cost.job_overlap
        dma_lb = traffic / beat + transfers * cost.dma_load
        # The issuer, per job: its staging, push, two waits and its output's store; per load.
        per_job = cost.seq_job_stage + cost.seq_job_push + 2 * cost.wait + cost.dma_submit
        fw_lb = c.tiles * per_job + transfers * cost.dma_submit
        c.lower_bound = max(engine_lb, dma_lb, fw_lb)
        out.append(c)
    return out


def _record(s: _Shape, c: _Candidate, arena: L1Arena) -> OpRecord:
    ops = []
    for key, l2 in zip(OPERAND_KEYS, s.l2, strict=True):
        if l2 is None:
            ops.append(OperandRecord())
            continue
        buf = arena.buffers[key]
        ops.append(
            OperandRecord(
                l2_addr=l2[0],
                l2_hstride=l2[2],
                l1_addr=buf.addr,
                l1_slot=buf.slot_stride,
                l2_pitch=l2[1],
                l1_pitch=c.pitches[key],
                mode=c.modes[key],
                slots=buf.slots,
            )
        )
    return OpRecord(
        s.kind, s.flags, c.order, c.cache, s.heads, s.m, s.n, s.k, c.tm, c.tn, c.tiles,
        tuple(ops), s.fields, all_heads=s.all_heads,
    )  # fmt: skip


def split_heads(ej: EngineJob) -> list[EngineJob]:
    """The one-job-per-head form of an all-heads ``FLAG_PER_HEAD`` attention job: job ``h``
    runs head ``h`` (``heads = 1``) with record ``h`` of the head table."""
    j = ej.job
    assert ej.d is not None and ej.p is not None
    out = []
    for h in range(j.heads):

        def moved(o: Operand, h: int = h) -> Operand:
            row, col = o.row + h * o.head_rows, o.col + h * o.head_cols
            return dataclasses.replace(o, row=row, col=col, head_rows=0, head_cols=0)

        p = dataclasses.replace(ej.p, row=ej.p.row + h)
        out.append(
            dataclasses.replace(
                ej,
                name=f"{ej.name}.head{h}",
                job=j.replace(heads=1),
                a=moved(ej.a),
                b=moved(ej.b),
                c=moved(ej.c),
                d=moved(ej.d),
                p=p,
            )
        )
    return out


def plan_op(
    jobs: Sequence[EngineJob],
    placements: dict[str, Placement],
    cfg: ClusterConfig,
    capacity: int,
    cost: CostModel | None = None,
    *,
    memo: dict[object, tuple[int, int, int, bool]] | None = None,
) -> OpPlan:
    """The fastest plan of one op (a GEMM job, or the attention job(s) of an attention op).

    Exhaustive over tile sizes (balanced splits of M and N), loop orders and the cache
    choice; plans that do not fit ``capacity`` bytes of L1 are dropped, the rest timed by
    :func:`simulate` in the order of a lower bound (engine, DMA and firmware work), stopping
    when the bound passes the best time. Ties go to the smaller L1 footprint, then fewer jobs.

    ``memo`` maps what a search depends on (shape, flags, L2 pitches and beat offsets) to the
    choice made: ops of the same shape in other layers reuse it without a search.

    Raises :class:`PlanError` if not even the smallest tile fits, or if the engine would
    reject a job of the plan (e.g. more keys than ``max_seq``).
    """
    cost = cost or CostModel()
    t0 = time.perf_counter()
    name = jobs[0].op
    s = _shape(jobs, placements)
    cands = _candidates(s, cfg, cost)
    feasible = [c for c in cands if l1_footprint(c.buffers) <= capacity]
    if not feasible and s.all_heads and s.heads > 1:
        # Every head's K and Vᵀ at once do not fit: a head loop, one head's at a time.
        return plan_op(split_heads(jobs[0]), placements, cfg, capacity, cost, memo=memo)
    if not feasible:
        small = min(cands, key=lambda c: (l1_footprint(c.buffers), c.tiles))
        bufs = ", ".join(f"{k} {n}x{b:,}" for k, b, n in small.buffers)
        tile = f"{small.tm} queries" if s.kind == KIND_ATTENTION else f"{small.tm}x{small.tn}"
        raise PlanError(
            f"{name}: its smallest tile ({tile}) needs {l1_footprint(small.buffers):,} bytes of "
            f"L1 ({bufs}), but {capacity:,} are available"
        )
    memo_key = (
        s.kind, s.m, s.n, s.k, s.heads, s.flags, capacity,
        tuple(None if o is None else (o[0] % L2_ALIGN, o[1], o[2]) for o in s.l2),
    )  # fmt: skip
    if memo is not None and memo_key in memo:
        feasible = [c for c in feasible if (c.tm, c.tn, c.order, c.cache) == memo[memo_key]]
    feasible.sort(key=lambda c: (c.lower_bound, l1_footprint(c.buffers), c.tiles))
    best: tuple[tuple[int, int, int], _Candidate, OpRecord, L1Arena, OpCycles] | None = None
    simulated = 0
    for c in feasible:
        if best is not None and c.lower_bound > best[0][0]:
            break
        arena = plan_l1(name, c.buffers, capacity)
        rec = _record(s, c, arena)
        cyc = simulate(op_actions(rec, cost), cfg, cost)
        simulated += 1
        key = (cyc.total, arena.used, c.tiles)
        if best is None or key < best[0]:
            best = (key, c, rec, arena, cyc)
    assert best is not None
    _, c, rec, arena, cyc = best
    if memo is not None:
        memo[memo_key] = (c.tm, c.tn, c.order, c.cache)
    for act in op_actions(rec, cost):
        if act[0] == JOB:
            err = check_job(act[1], cfg)
            if err != JobError.NONE:
                j = act[1]
                raise PlanError(
                    f"{name}: the engine would reject its {j.m}x{j.n}x{j.k} job ({err.name}); "
                    f"engine limits: max_dim {cfg.engine.max_dim}, max_seq {cfg.engine.max_seq}, "
                    f"head dim <= vec_len {cfg.engine.vec_len}"
                )
    macs = sum(ej.macs for ej in jobs)
    return OpPlan(
        name, s.kind, tuple(jobs), rec, arena, cyc, macs, len(cands), len(feasible), simulated,
        time.perf_counter() - t0,
    )  # fmt: skip
