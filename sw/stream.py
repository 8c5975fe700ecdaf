"""The engine ops of a schedule as one command stream for the sequencer, and its executor.

The control core is far too slow to stage every job and transfer of MobileBERT itself
(hundreds of cycles each on PicoRV32). So :func:`build_stream` turns the runtime loop of
every engine op (:func:`tinyattn.sw.tiler.op_actions`: loads, jobs, stores and the waits
between them) into commands for the cluster's sequencer (``docs/sequencer.md``), and the
firmware starts it once for the whole model.

The stream sits in L2 as ``chunks`` of ``chunk_bytes``. The sequencer runs it from two L1
buffers: the first command of chunk ``i`` is the DMA that loads chunk ``i + 1`` into the
other buffer, and its last two wait for that DMA and jump there. Chunk 0 is loaded by the
firmware. Before each op a STAMP writes the cycles since START to the op's word of the
stamp area in L1; a last STAMP closes the last op, and a DMA copies the stamps to L2, where
the host reads each op's measured cycles.

Waits count transfers and jobs from the stream's start: the firmware sets ``SEQ_DMA_BASE``
and ``SEQ_JOB_BASE`` to its tickets when it starts the sequencer.

:func:`run_stream` is the executor's sequencer: it reads the commands from the L1 image as
the hardware does, keeps a register file, and turns each push into a transfer or a job on the
executor's machine, each wait into a wait, so the race checker judges the stream itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.hw.cluster_registers import register_map
from tinyattn.hw.dma_codes import ALIGN_BYTES, Direction
from tinyattn.hw.job import Job
from tinyattn.hw.registers import MemoryMap, PortBinding
from tinyattn.hw.sequencer import SeqOp
from tinyattn.sw.command_list import CommandList
from tinyattn.sw.memplan import PlanError
from tinyattn.sw.tiler import (
    CORE,
    JOB,
    LOAD,
    MARK,
    STORE,
    WAIT_DMA,
    WAIT_JOB,
    Action,
    CostModel,
    OpRecord,
    op_actions,
    simulate,
)
from tinyattn.verif.engine_model import job_extents

__all__ = ["Stream", "StreamError", "StreamLayout", "build_stream", "predict_stream", "run_stream"]

#: Words that close a chunk: WAIT for the next chunk's DMA, JUMP to it.
_TAIL_WORDS = 4


@dataclass(frozen=True)
class StreamLayout:
    """Where the stream lives: its chunks in L2, the two L1 buffers, the stamps."""

    l2_addr: int  #: chunk 0; chunk i at l2_addr + i * chunk_bytes
    chunk_bytes: int
    l1_buffers: int  #: buffer 0; buffer 1 follows at + chunk_bytes
    stamps_l1: int  #: one word per op, and one more for the end
    stamps_l2: int

    def buffer(self, i: int) -> int:
        return self.l1_buffers + (i % 2) * self.chunk_bytes


@dataclass(frozen=True)
class Stream:
    """The command stream of the engine ops: ``chunks + 1`` chunks of words in L2 (the
    last one zero: the last chunk's prefetch loads it), ``jobs`` and ``transfers`` pushed."""

    layout: StreamLayout
    words: np.ndarray  #: uint32, (chunks + 1) * chunk_bytes / 4
    chunks: int
    jobs: int
    transfers: int
    ops: int
    #: What the commands do, as :func:`tinyattn.sw.tiler.simulate` actions numbered over
    #: the whole stream, with a ``MARK`` at every STAMP.
    actions: tuple[Action, ...] = ()

    @property
    def nbytes(self) -> int:
        return self.words.size * 4


class _Writer:
    """Appends command groups to chunks; a group never straddles two chunks. ``actions``
    mirrors what the commands do, numbered over the whole stream, for :func:`simulate`."""

    def __init__(self, cfg: ClusterConfig, layout: StreamLayout, cost: CostModel) -> None:
        self.cfg, self.layout, self.cost = cfg, layout, cost
        self.chunk_words = layout.chunk_bytes // 4
        self.chunks: list[list[int]] = []
        self.cur: list[int] = []
        self.transfers = self.jobs = 0
        self.prefetch = 0  # the ticket of the current chunk's prefetch
        self.actions: list[Action] = []
        self._open()

    def list(self) -> CommandList:
        return CommandList(self.cfg)

    def _open(self) -> None:
        i = len(self.chunks)
        lay = self.layout
        nbytes = lay.chunk_bytes
        load = (LOAD, lay.l2_addr + (i + 1) * nbytes, lay.buffer(i + 1), nbytes, 1, nbytes, nbytes)
        self.cur = list(self.list().transfer(_transfer(Direction.L2_TO_L1, *load[1:])).words)
        self.transfers += 1
        self.actions.append(load)
        self.prefetch = self.transfers

    def _close(self) -> None:
        i = len(self.chunks)
        tail = self.list().wait_dma(self.prefetch).jump(self.layout.buffer(i + 1)).words
        self.chunks.append(self.cur + tail)
        self.actions += [(WAIT_DMA, self.prefetch), (CORE, self.cost.seq_wait)]
        self._open()

    def add(self, words: list[int], action: Action | None = None) -> None:
        if len(self.cur) + len(words) + _TAIL_WORDS > self.chunk_words:
            self._close()
            if len(self.cur) + len(words) + _TAIL_WORDS > self.chunk_words:
                raise PlanError(
                    f"stream: a command group of {4 * len(words)} bytes does not fit a "
                    f"{self.layout.chunk_bytes}-byte chunk"
                )
        self.cur += words
        if action is not None:
            self.actions.append(action)
            if action[0] in (LOAD, STORE):
                self.transfers += 1
            elif action[0] == JOB:
                self.jobs += 1

    def transfer(self, act: Action) -> int:
        """Push the LOAD / STORE ``act``; returns the stream's transfer count after it."""
        d = Direction.L1_TO_L2 if act[0] == STORE else Direction.L2_TO_L1
        self.add(self.list().transfer(_transfer(d, *act[1:])).words, act)
        return self.transfers

    def wait_dma(self, count: int) -> None:
        self.add(self.list().wait_dma(count).words, (WAIT_DMA, count))

    def wait_jobs(self, count: int) -> None:
        self.add(self.list().wait_jobs(count).words, (WAIT_JOB, count))

    def stamp(self, l1_addr: int) -> None:
        self.add(self.list().stamp(l1_addr).words, (MARK,))
        self.actions.append((CORE, self.cost.seq_op))

    def finish(self, end: list[int]) -> list[list[int]]:
        if len(self.cur) + len(end) > self.chunk_words:
            self._close()
        self.chunks.append(self.cur + end)
        return self.chunks


def _transfer(
    direction: int, l2: int, l1: int, nbytes: int, rows: int = 1,
    l2_stride: int | None = None, l1_stride: int | None = None,
) -> SimpleNamespace:  # fmt: skip
    """A descriptor (the ``Transfer`` protocol of :mod:`tinyattn.sw.c_tables`)."""
    return SimpleNamespace(
        direction=direction, l2_addr=l2, l1_addr=l1, row_bytes=nbytes, rows=rows,
        l2_stride=nbytes if l2_stride is None else l2_stride,
        l1_stride=nbytes if l1_stride is None else l1_stride,
    )  # fmt: skip


Span = tuple[int, int]


def _span(addr: int, nbytes: int, rows: int, stride: int) -> Span:
    return addr, addr + (rows - 1) * stride + nbytes


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def split_around(load: Action, store: Action) -> list[tuple[Action, bool]]:
    """``load`` cut into pieces, each flagged ``True`` when it reads no L2 byte of ``store``.

    Rows that read none of the stored bytes form whole-row pieces; in the others, the
    columns before and after the stored ones (rounded out to the DMA's alignment) are
    pieces of their own. Consecutive rows with the same cut share a piece, so a tile whose
    last rows or last columns were stored last keeps the rest independent."""
    _, l2, l1, nbytes, rows, l2s, l1s = load[:7]
    s_addr, s_bytes, s_rows, s_stride = store[1], store[3], store[4], store[5]

    def dependent(i: int) -> tuple[int, int] | None:
        a = l2 + i * l2s
        if s_rows == 1 or s_stride <= 0:
            hit = [0] if s_addr < a + nbytes and a < s_addr + s_bytes else []
        else:  # store rows j with s_addr + j * s_stride in (a - s_bytes, a + nbytes)
            lo = max(0, -(-(a - s_bytes + 1 - s_addr) // s_stride))
            hi = min(s_rows - 1, (a + nbytes - 1 - s_addr) // s_stride)
            hit = [lo, hi] if lo <= hi else []
        if not hit:
            return None
        first = max(s_addr + hit[0] * s_stride, a) - a
        last = min(s_addr + hit[-1] * s_stride + s_bytes, a + nbytes) - a
        if first >= last:
            return None
        return first // ALIGN_BYTES * ALIGN_BYTES, min(
            nbytes, -(-last // ALIGN_BYTES) * ALIGN_BYTES
        )

    pieces: list[tuple[Action, bool]] = []
    for cut, group in itertools.groupby(range(rows), key=dependent):
        run = list(group)
        c0, c1 = cut or (nbytes, nbytes)
        for lo, hi, independent in ((0, c0, True), (c0, c1, False), (c1, nbytes, True)):
            if hi > lo:
                at = run[0]
                piece = (LOAD, l2 + at * l2s + lo, l1 + at * l1s + lo, hi - lo, len(run), l2s, l1s)
                pieces.append((piece, independent))
    return pieces


def _split_after_store(acts: list[Action], store: Action) -> list[Action]:
    """``acts`` (an op's actions) with each first load cut by :func:`split_around` against
    ``store``, the previous op's last store: the independent pieces can then load while
    that op finishes, and only the rest waits for the store. The op's transfer counts in
    its DMA waits follow the extra transfers."""
    out: list[Action] = [acts[0]]
    extra: list[tuple[int, int]] = []  # (transfer index in the op, transfers added there)
    for n, ld in enumerate(acts[1 : _first_loads(acts)]):
        pieces = split_around(ld, store)
        out += [piece for piece, _ in pieces]
        if len(pieces) > 1:
            extra.append((n, len(pieces) - 1))
    for act in acts[_first_loads(acts) :]:
        if act[0] == WAIT_DMA and act[1]:
            act = (WAIT_DMA, act[1] + sum(k for n, k in extra if n < act[1]))
        out.append(act)
    return out


def _first_loads(acts: list[Action]) -> int:
    """The end of ``loads(0)`` in ``op_actions``' list: the actions before the first job's
    staging (after the op's own leading CORE action)."""
    i = 1
    while acts[i][0] == LOAD:
        i += 1
    return i


def _hoist_points(acts: list[Action]) -> dict[int, tuple[list[Span], list[Action]]]:
    """Where the next op's first loads may be pushed in ``acts`` (an op's actions): before
    action ``i``, a load that misses the L1 ``busy`` and the L2 bytes of ``stores``.

    The earlier point follows the push of the last job, while the one before it still runs:
    loads there have two jobs' time but must miss both. The later one comes before the
    wait for the last job, as the last job runs."""
    jobs = [i for i, act in enumerate(acts) if act[0] == JOB]
    last_wait = max(i for i, act in enumerate(acts) if act[0] == WAIT_JOB)
    stores = [act for act in acts if act[0] == STORE]
    last = list(job_extents(acts[jobs[-1]][1]).values())
    points = {last_wait: (last, stores[-1:])}
    if len(jobs) > 1:
        before = list(job_extents(acts[jobs[-2]][1]).values())
        points[jobs[-1] + 1] = (before + last, stores[-2:])
    return points


def build_stream(
    records: Sequence[OpRecord], cfg: ClusterConfig, cost: CostModel, layout: StreamLayout
) -> Stream:
    """The command stream that runs ``records`` (engine ops) in order, as ``op_actions``
    gives their loops, with the next op's first tiles loaded early where they can be.

    Op ``r + 1``'s first loads are first cut around op ``r``'s last store
    (:func:`split_around`). While op ``r`` finishes, each piece is pushed at the first of
    :func:`_hoist_points` where it touches no L1 byte of the jobs still to run and no L2 byte
    of the stores still to push (:mod:`tinyattn.sw.placement` moves buffers to make room).
    Nothing else is reordered; an op's final wait for all its transfers is left to the
    next op's waits, which the DMA's in-order queue makes equivalent.
    """
    w = _Writer(cfg, layout, cost)
    acts = [op_actions(rec, cost) for rec in records]
    for r in range(1, len(acts)):
        last_store = next(x for x in reversed(acts[r - 1]) if x[0] == STORE)
        acts[r] = _split_after_store(acts[r], last_store)
    early: dict[tuple[int, int], int] = {}  # (op, action index) -> transfer count after it
    for r, a in enumerate(acts):
        w.stamp(layout.stamps_l1 + 4 * r)
        jobs0 = w.jobs
        after = [w.transfers]  # after[n]: the stream's count after the op's n-th transfer
        points = _hoist_points(a) if r + 1 < len(acts) else {}
        for i, act in enumerate(a):
            kind = act[0]
            if i in points:
                busy, stores = points[i]
                nxt = acts[r + 1]
                for j in range(1, _first_loads(nxt)):
                    if (r + 1, j) in early:
                        continue
                    ld = nxt[j]
                    l1 = _span(ld[2], ld[3], ld[4], ld[6])
                    reads_store = any(not free for st in stores for _, free in split_around(ld, st))
                    if not any(_overlaps(l1, b) for b in busy) and not reads_store:
                        early[(r + 1, j)] = w.transfer(ld)
            if kind in (LOAD, STORE):
                after.append(early[(r, i)] if (r, i) in early else w.transfer(act))
            elif kind == JOB:
                w.add(w.list().job(act[1]).words, act)
            elif kind == WAIT_DMA and act[1]:
                if i == len(a) - 1 and r + 1 < len(acts):
                    continue  # the next op's waits cover it (in-order DMA)
                # after[0]: what earlier ops pushed (their last store follows our early
                # loads), so that a job never overwrites L1 a store has still to read.
                w.wait_dma(max(after[: act[1] + 1]))
            elif kind == WAIT_JOB and act[1]:
                w.wait_jobs(jobs0 + act[1])
            elif kind == CORE and i:
                w.actions.append(act)
    n = len(records)
    w.stamp(layout.stamps_l1 + 4 * n)
    w.transfer((STORE, layout.stamps_l2, layout.stamps_l1, 4 * (n + 1), 1, 4 * (n + 1),
                4 * (n + 1)))  # fmt: skip
    end = w.list().wait_dma(w.transfers).end().words
    w.actions.append((WAIT_DMA, w.transfers))
    chunks = w.finish(end)
    words = np.zeros((len(chunks) + 1) * w.chunk_words, np.uint32)
    for i, chunk in enumerate(chunks):
        words[i * w.chunk_words : i * w.chunk_words + len(chunk)] = chunk
    return Stream(layout, words, len(chunks), w.jobs, w.transfers, n, tuple(w.actions))


def predict_stream(stream: Stream, cfg: ClusterConfig, cost: CostModel) -> list[int]:
    """Predicted cycles of each op of the stream: from its STAMP to the next (the last op
    to the final STAMP), the stream timed as a whole by :func:`simulate`."""
    marks: list[int] = []
    simulate(stream.actions, cfg, cost, marks)
    return [b - a for a, b in itertools.pairwise(marks)]


# --------------------------------------------------------------------------------------------
# Executor
# --------------------------------------------------------------------------------------------


class StreamError(ValueError):
    """The stream does something the sequencer would refuse, or races its own chunks."""


def _fields(
    mm: MemoryMap, block: str, payload: tuple[str, ...], regs: dict[int, int]
) -> dict[str, int]:
    """The payload leaves (``"qk.mult"`` -> value) that the staging registers hold;
    ``payload`` is the path of the stream payload they are bound below."""
    out: dict[str, int] = {}
    for reg in mm.registers:
        if reg.block.name != block or reg.register.stall_while is None:
            continue
        value = regs.get(reg.address, 0)
        for f in reg.fields:
            path = f.hw.below(payload) if isinstance(f.hw, PortBinding) else None
            if path:
                out[".".join(path)] = (value & f.mask) >> f.offset
    return out


def _job_from(fields: dict[str, int]) -> Job:
    def s8(v: int) -> int:
        return v - 256 if v & 0x80 else v

    plain = {k: v for k, v in fields.items() if "." not in k}
    qk = (fields["qk.mult"], fields["qk.shift"], s8(fields["qk.add"]))
    av = (fields["av.mult"], fields["av.shift"], s8(fields["av.add"]))
    return Job(**plain, qk=qk, av=av)


def run_stream(
    machine: object, l1: np.ndarray, cfg: ClusterConfig, layout: StreamLayout,
    names: Sequence[str],
) -> None:  # fmt: skip
    """Run the stream whose chunk 0 is in ``l1``'s buffer 0 on the executor's ``machine``
    (``tinyattn.sw.schedule._Machine``). ``names`` are the ops', for messages: the STAMPs
    mark where each op starts.

    Raises ``ExecutionError`` (from the machine) or :class:`StreamError`.
    """
    mm = register_map(cfg)
    reg = {r.name: r.address for r in mm.registers}
    words = l1.view("<u4")
    regs: dict[int, int] = {}
    pc, op = layout.buffer(0), -1
    m = machine  # the executor's machine: transfer(), job(), dmas, jobs_out, name
    while True:
        if pc % 4 or pc + 4 > l1.size:
            raise StreamError(f"stream: the sequencer would read L1 {pc:#x}")
        header = int(words[pc // 4])
        code, count, off = header >> 28, (header >> 16) & 0xFFF, header & 0xFFF
        operands = [int(v) for v in words[pc // 4 + 1 : pc // 4 + 1 + (count or 1)]]
        if code == SeqOp.END:
            break
        if code == SeqOp.WRITE:
            for i, value in enumerate(operands[:count]):
                a = off + 4 * i
                regs[a] = value
                if a == reg["DMA_PUSH"]:
                    d = _fields(mm, "DMA", ("dma", "cmd", "payload"), regs)
                    m.transfer(  # type: ignore[attr-defined]
                        d["direction"], d["l2_addr"], d["l1_addr"], d["row_bytes"], d["rows"],
                        d["l2_stride"], d["l1_stride"],
                    )  # fmt: skip
                elif a == reg["ENGINE_JOB_PUSH"]:
                    m.job(_job_from(_fields(mm, "ENGINE", ("engine", "jobs", "payload"), regs)))  # type: ignore[attr-defined]
            pc += 4 * (1 + count)
        elif code == SeqOp.WAIT:
            target = operands[0]
            if off == reg["DMA_DONE_COUNT"]:
                m.dmas = [d for d in m.dmas if d[0] >= target]  # type: ignore[attr-defined]
            elif off == reg["ENGINE_JOBS_DONE"]:
                m.jobs_out = [j for j in m.jobs_out if j[0] >= target]  # type: ignore[attr-defined]
            else:
                raise StreamError(f"stream: a WAIT at {pc:#x} polls register {off:#x}")
            pc += 8
        elif code == SeqOp.JUMP:
            target = operands[0]
            for _, lo, hi, writes_l1 in m.dmas:  # type: ignore[attr-defined]
                if writes_l1 and lo < target + layout.chunk_bytes and target < hi:
                    raise StreamError(
                        f"stream: the jump at {pc:#x} to {target:#x} enters a chunk whose DMA "
                        "was not waited for"
                    )
            pc = target
        elif code == SeqOp.STAMP:
            op += 1
            if op < len(names):
                m.name = names[op]  # type: ignore[attr-defined]
            l1[operands[0] : operands[0] + 4] = 0
            pc += 8
        else:
            raise StreamError(f"stream: word {header:#010x} at L1 {pc:#x} is no command")
    if m.dmas or m.jobs_out:  # type: ignore[attr-defined]
        raise StreamError("stream: it ends with transfers or jobs it did not wait for")
