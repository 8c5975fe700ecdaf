"""The schedule: a lowered program as an L2 image of fixed-size records, and its executor.

:func:`build_schedule` joins the memory plan (:mod:`tinyattn.sw.memplan`) and the tiler
(:mod:`tinyattn.sw.tiler`): one **record** per engine op (a GEMM job, or the head jobs of one
attention op), per fused embedding gather and per fill, packed little endian into the L2 image
after a header (format in ``docs/deploy.md``, "Schedule records"). The C runtime walks the
records with a small loop nest, fetching each record into L1 by DMA, so the firmware does not
grow with the model.

:func:`execute_schedule` runs a schedule exactly as that runtime will: it fetches every record
from the L2 image into L1 by DMA, decodes the bytes, and performs the runtime loop's DMA
transfers (2-D, the descriptor rules of ``hw/dma.py``) and engine jobs
(:func:`tinyattn.verif.engine_model.run_job`) on an L1 image of the real size. A race checker
makes sure no job reads a tile whose DMA it did not wait for, and no DMA overwrites a buffer a
job that was not waited for uses. The hidden states are read back from L2; they equal
``QuantizedMobileBert.forward`` bit for bit. The per-record cycles are predicted by
:func:`tinyattn.sw.tiler.simulate` on the very actions executed.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.hw.dma_codes import ALIGN_BYTES, Direction
from tinyattn.hw.job import Job, JobError, Op
from tinyattn.sw.lowering import (
    ExecutionError,
    Fill,
    Gather,
    Program,
    input_values,
    lower,
)
from tinyattn.sw.memplan import (
    L2Plan,
    PlanError,
    l1_reserved,
    plan_l1,
    plan_l2,
)
from tinyattn.sw.placement import place_ops
from tinyattn.sw.quantize import QuantizedMobileBert
from tinyattn.sw.stream import (
    Stream,
    StreamLayout,
    build_stream,
    predict_stream,
    run_stream,
)
from tinyattn.sw.tiler import (
    CORE,
    JOB,
    KIND_ATTENTION,
    KIND_FILL,
    KIND_GATHER,
    KIND_GEMM,
    LOAD,
    ONCE,
    OPERAND_KEYS,
    RELOAD,
    STORE,
    WAIT_DMA,
    WAIT_JOB,
    ZERO_CYCLES,
    Action,
    CostModel,
    OpCycles,
    OperandRecord,
    OpPlan,
    OpRecord,
    op_actions,
    plan_op,
    simulate,
)
from tinyattn.verif.engine_model import job_extents, run_job

__all__ = [
    "HEADER_BYTES",
    "MAGIC",
    "Schedule",
    "ScheduleRun",
    "build_schedule",
    "deploy",
    "execute_schedule",
    "fill_actions",
    "gather_body",
    "gather_prefix",
    "pack_record",
    "record_bytes",
    "unpack_record",
]

MAGIC = 0x43534154  # "TASC" little endian
VERSION = 2
HEADER_BYTES = 128
#: magic .. image_bytes, then the stream: 68 bytes, padded to 128.
_HEADER = struct.Struct("<IHHIIIIIII" + "IIIIIIII")
#: Most bytes of each of the two L1 buffers the sequencer runs the stream from.
CHUNK_BYTES = 2048
#: Fewest: a chunk holds its prefetch, its tail and the largest command group (a job).
MIN_CHUNK_BYTES = 256


def chunk_bytes(cfg: ClusterConfig) -> int:
    """The stream's chunk size for ``cfg``: 1/32 of L1 as a power of two, within
    [``MIN_CHUNK_BYTES``, ``CHUNK_BYTES``]."""
    share = 1 << max(0, (cfg.memory.size_bytes // 32).bit_length() - 1)
    return max(MIN_CHUNK_BYTES, min(CHUNK_BYTES, share))


_REC_HEAD = struct.Struct("<BBBBHHHHHH")  # 16 bytes
_OPERAND = struct.Struct("<IIIIHHBBH")  # 24 bytes
_FIELDS = struct.Struct("<8B")  # 8 bytes per head
MAX_WRITES = 3  # gather writes per record: operand slots c, d, p
U16 = 0xFFFF


def record_bytes(max_heads: int) -> int:
    """Size of every record of a schedule whose largest attention op has ``max_heads``."""
    n = _REC_HEAD.size + len(OPERAND_KEYS) * _OPERAND.size + _FIELDS.size * max(1, max_heads)
    return -(-n // 16) * 16


def pack_record(rec: OpRecord, size: int, name: str = "") -> bytes:
    """``rec`` as ``size`` bytes (``docs/deploy.md``, "Schedule records")."""
    for label, v in (("m", rec.m), ("n", rec.n), ("k", rec.k), ("tm", rec.tm), ("tn", rec.tn),
                     ("tiles", rec.tiles)):  # fmt: skip
        if not 0 <= v <= U16:
            raise PlanError(f"{name}: record field {label} = {v} does not fit 16 bits")
    out = bytearray(size)
    loop = rec.order | (2 if rec.cache else 0) | (4 if rec.all_heads else 0)
    _REC_HEAD.pack_into(
        out, 0, rec.kind, rec.flags, loop, rec.heads, rec.m, rec.n, rec.k, rec.tm, rec.tn,
        rec.tiles,
    )  # fmt: skip
    for i, o in enumerate(rec.operands):
        if o.l2_pitch > U16 or o.l1_pitch > U16:
            raise PlanError(f"{name}: a row pitch of {max(o.l2_pitch, o.l1_pitch)} > 65535 bytes")
        _OPERAND.pack_into(
            out, _REC_HEAD.size + i * _OPERAND.size, o.l2_addr, o.l2_hstride, o.l1_addr,
            o.l1_slot, o.l2_pitch, o.l1_pitch, o.mode, o.slots, 0,
        )  # fmt: skip
    base = _REC_HEAD.size + len(OPERAND_KEYS) * _OPERAND.size
    if base + len(rec.head_fields) * _FIELDS.size > size:
        raise PlanError(f"{name}: {len(rec.head_fields)} heads do not fit a {size}-byte record")
    for h, f in enumerate(rec.head_fields):
        _FIELDS.pack_into(out, base + h * _FIELDS.size, *[v & 0xFF for v in (*f, 0, 0, 0, 0)][:8])
    return bytes(out)


def _s8(v: int) -> int:
    return v - 256 if v & 0x80 else v


def unpack_record(raw: bytes | np.ndarray) -> OpRecord:
    """The :class:`OpRecord` of packed bytes (the inverse of :func:`pack_record`)."""
    raw = bytes(raw)
    kind, flags, loop, heads, m, n, k, tm, tn, tiles = _REC_HEAD.unpack_from(raw, 0)
    ops = []
    for i in range(len(OPERAND_KEYS)):
        f = _OPERAND.unpack_from(raw, _REC_HEAD.size + i * _OPERAND.size)
        ops.append(OperandRecord(*f[:8]))
    base = _REC_HEAD.size + len(OPERAND_KEYS) * _OPERAND.size
    fields = []
    all_heads = kind == KIND_ATTENTION and bool(loop & 4)  # one field block: unused
    for h in range(1 if all_heads else heads if kind in (KIND_GEMM, KIND_ATTENTION) else 0):
        b = _FIELDS.unpack_from(raw, base + h * _FIELDS.size)
        if kind == KIND_ATTENTION:
            fields.append((b[0], b[1], _s8(b[2]), b[3], b[4], _s8(b[5])))
        else:
            fields.append(b[:4])
    if kind == KIND_GATHER:  # the loop byte holds the number of writes
        order, cache = loop, False
    else:
        order, cache = loop & 1, bool(loop & 2)
    return OpRecord(
        kind, flags, order, cache, heads, m, n, k, tm, tn, tiles, tuple(ops),
        tuple(fields), all_heads=all_heads,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Gathers and fills
# --------------------------------------------------------------------------------------------


def _gather_record(
    gathers: Sequence[Gather], program: Program, l2: L2Plan, capacity: int
) -> OpRecord:
    """One record for gathers of one table and index: the union of their positions is
    gathered once into L1 and written to each destination (the trigram's three shifted
    copies cost one row copy per token, not three)."""
    g0 = gathers[0]
    table = program.tensors[g0.table]
    pos0 = min(g.src_pos for g in gathers)
    pos1 = max(g.src_pos + g.count for g in gathers)
    count = pos1 - pos0
    spitch = -(-table.row_bytes // ALIGN_BYTES) * ALIGN_BYTES
    idx_bytes = count * 4
    name = g0.name
    try:
        arena = plan_l1(name, [("index", idx_bytes, 1), ("staging", spitch, 1)], capacity)
    except PlanError:
        raise PlanError(
            f"{name}: needs {idx_bytes + spitch:,} bytes of L1 (the {count} indices and one "
            f"table row), but {capacity:,} are available"
        ) from None
    chunk = min(count, (capacity - arena.buffers["staging"].addr) // spitch)
    tp, ip = l2.placements[g0.table], l2.placements[g0.index]
    writes = []
    for g in gathers:
        dp = l2.placements[g.dst]
        dst = dp.addr + g.dst_row * dp.pitch + g.dst_col
        writes.append(OperandRecord(dst, g.src_pos, 0, g.count, dp.pitch, 0, ONCE, 1))
    ops = (
        OperandRecord(
            tp.addr, table.rows, arena.buffers["staging"].addr, 0, tp.pitch, spitch, ONCE, 1
        ),
        OperandRecord(ip.addr + 4 * pos0, 0, arena.buffers["index"].addr, 0, 4, 4, ONCE, 1),
        *writes,
        *[OperandRecord()] * (MAX_WRITES - len(writes)),
    )
    return OpRecord(
        KIND_GATHER, int(g0.add_position), len(writes), False, 0, count, table.row_bytes, pos0,
        chunk, g0.index_pitch, -(-count // chunk), ops,
    )  # fmt: skip


def _fill_record(f: Fill, program: Program, l2: L2Plan) -> OpRecord:
    t = program.tensors[f.dst]
    dp = l2.placements[f.dst]
    dst = dp.addr + f.row * dp.pitch + f.col
    if f.col % ALIGN_BYTES or f.cols % ALIGN_BYTES:
        raise PlanError(f"{f.name}: a fill of bytes {f.col}..{f.col + f.cols} of {t.name} is not "
                        "4-byte aligned, so the DMA cannot write it")  # fmt: skip
    ops = (
        OperandRecord(0, 0, 0, 0, 0, 0, ONCE, 1),
        OperandRecord(),
        OperandRecord(dst, 0, 0, 0, dp.pitch, 0, ONCE, 1),
        OperandRecord(),
        OperandRecord(),
    )
    return OpRecord(KIND_FILL, f.value & 0xFF, 0, False, 0, f.rows, f.cols, 0, 0, 0, 1, ops)


def gather_prefix(rec: OpRecord, cost: CostModel) -> list[Action]:
    """Load the index values of a gather record into L1 and wait for them."""
    b = rec.operand("b")
    return [(CORE, cost.op), (LOAD, b.l2_addr, b.l1_addr, 4 * rec.m, 1, 4, 4), (WAIT_DMA, 1)]


def gather_body(rec: OpRecord, index: np.ndarray, cost: CostModel) -> list[Action]:
    """The row copies of a gather record, once the core has read its ``index`` values.

    Positions are handled in chunks of ``tm`` staging rows. Runs of positions whose table
    rows are consecutive become one 2-D transfer; then each write copies its positions of the
    chunk to L2 in one transfer. The DMA runs transfers in order, so a chunk's loads never
    overtake the previous chunk's writes of the same staging rows: no waits in between.
    """
    a = rec.operand("a")
    pos = rec.k + np.arange(rec.m, dtype=np.int64)
    rows = rec.tn * np.asarray(index, np.int64) + (pos if rec.flags & 1 else 0)
    acts: list[Action] = [(CORE, cost.gather_row * rec.m)]
    n = 0
    writes = [rec.operand(k) for k in ("c", "d", "p")[: rec.order]]
    for c0 in range(0, rec.m, rec.tm):
        c1 = min(rec.m, c0 + rec.tm)
        q = c0
        while q < c1:
            r = q + 1
            while r < c1 and rows[r] == rows[r - 1] + 1:
                r += 1
            src, dst = a.l2_addr + int(rows[q]) * a.l2_pitch, a.l1_addr + (q - c0) * a.l1_pitch
            kind = LOAD if q == c0 else RELOAD  # the chunk's later loads: ta_dma_resubmit
            acts.append((kind, src, dst, rec.n, r - q, a.l2_pitch, a.l1_pitch))
            n += 1
            q = r
        for w in writes:
            first, count = w.l2_hstride - rec.k, w.l1_slot  # positions relative to rec.k
            lo, hi = max(c0, first), min(c1, first + count)
            if lo < hi:
                acts.append((STORE, w.l2_addr + (lo - first) * w.l2_pitch,
                             a.l1_addr + (lo - c0) * a.l1_pitch, rec.n, hi - lo, w.l2_pitch,
                             a.l1_pitch))  # fmt: skip
                n += 1
    acts.append((WAIT_DMA, n))
    return acts


def fill_actions(rec: OpRecord, cost: CostModel) -> list[Action]:
    """Clear one row in L1 (core stores), then broadcast it to the rows (L1 stride 0)."""
    a, c = rec.operand("a"), rec.operand("c")
    return [
        (CORE, cost.op + cost.fill_word * (rec.n // 4)),
        (STORE, c.l2_addr, a.l1_addr, rec.n, rec.m, c.l2_pitch, 0),
        (WAIT_DMA, 1),
    ]


# --------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Schedule:
    """A program placed, tiled and packed: the L2 image and what it was made from.

    The first ``prologue`` records (gathers and fills, run by the core) are packed at
    ``records_addr + i * record_bytes`` of ``image``; the engine ops after them are the
    command ``stream`` the sequencer runs. ``names[i]`` is a record's op (or gather / fill)
    name, ``plans[i]`` its :class:`OpPlan` (``None`` for gathers and fills) and
    ``predicted[i]`` its cycles (a prologue record's fetch included; gathers with all-zero
    ids). ``cost`` times the core's work, ``cost.sequencer()`` the engine ops'.
    """

    program: Program
    cfg: ClusterConfig
    cost: CostModel
    l2: L2Plan
    image: bytes
    record_bytes: int
    records_addr: int
    l1_record_addr: int
    records: tuple[OpRecord, ...]
    names: tuple[str, ...]
    plans: tuple[OpPlan | None, ...]
    predicted: tuple[OpCycles, ...]
    prologue: int
    stream: Stream

    @property
    def total(self) -> OpCycles:
        out = ZERO_CYCLES
        for c in self.predicted:
            out = out + c
        return out

    def image_with_inputs(
        self, input_ids: np.ndarray | None, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        """A copy of :attr:`image` with one sequence's ids written in, as the host does
        before a run (``None``: zeros). ``ValueError`` for ids of the wrong shape."""
        l2 = np.frombuffer(bytearray(self.image), np.uint8)
        for name, values in input_values(self.program, input_ids, token_type_ids).items():
            p = self.l2.placements[name]
            l2[p.addr : p.addr + values.nbytes] = values.view(np.uint8)
        return l2

    def utilization(self, cycles: int | None = None) -> float:
        """Useful MACs / (cycles x peak MACs per cycle)."""
        total = self.total.total if cycles is None else cycles
        return self.program.macs.total / (total * self.cfg.engine.macs_per_cycle)

    def describe(self, blocks: Sequence[str] | None = None) -> str:
        """One line per record (optionally only those of ``blocks``), then the totals."""
        hdr = (
            f"{'op':<30} {'shape':>13} {'tiles':>9} {'jobs':>4} {'order':>5} {'buffers':<28} "
            f"{'L1 KiB':>6} {'engine':>7} {'DMA':>7} {'fw':>7} {'total':>7} {'bound':>8} "
            f"{'util':>5}"
        )
        lines = [hdr]
        steps = {s.name: s for s in self.program.steps}
        for name, rec, plan, cyc in zip(
            self.names, self.records, self.plans, self.predicted, strict=True
        ):
            block = steps[name].block if name in steps else name.split(".")[0]
            if blocks is not None and block not in blocks:
                continue
            if plan is None:
                kind = "gather" if rec.kind == KIND_GATHER else "fill"
                shape, tiles, order, bufs, kib, util = f"{rec.m}x{rec.n} B", "", "", kind, "", ""
            else:
                shape = f"{rec.m}x{rec.n}x{rec.k}" + (f"x{rec.heads}h" if rec.heads > 1 else "")
                tiles = f"{rec.tm}x{rec.tn}" if rec.kind == KIND_GEMM else f"{rec.tm}q"
                order = plan.order
                bufs = " ".join(f"{k}:{v}" for k, v in plan.modes().items())
                kib = f"{plan.arena.used / 1024:.1f}"
                mpc = self.cfg.engine.macs_per_cycle
                util = f"{plan.macs / (cyc.total * mpc):.0%}"
            lines.append(
                f"{name:<30} {shape:>13} {tiles:>9} {cyc.jobs:>4} {order:>5} {bufs:<28} "
                f"{kib:>6} {cyc.engine:>7,} {cyc.dma:>7,} {cyc.firmware:>7,} {cyc.total:>7,} "
                f"{cyc.bound:>8} {util:>5}"
            )
        t = self.total
        lines.append(
            f"{len(self.records)} records: {t.total:,} cycles predicted (engine {t.engine:,}, "
            f"DMA {t.dma:,}, firmware {t.firmware:,}), {self.program.macs.total:,} MACs, "
            f"utilization {self.utilization():.1%} of {self.cfg.engine.macs_per_cycle} MAC/cycle"
        )
        return "\n".join(lines)


def _groups(program: Program) -> list[tuple[str, list]]:
    """Steps grouped into records: fused gathers, fills, GEMM jobs, attention ops."""
    out: list[tuple[str, list]] = []
    for step in program.steps:
        prev = out[-1] if out else None
        if isinstance(step, Gather):
            key = (step.table, step.index, step.index_pitch, step.add_position)
            if prev and prev[0] == "gather" and len(prev[1]) < MAX_WRITES:
                g = prev[1][0]
                if (g.table, g.index, g.index_pitch, g.add_position) == key:
                    prev[1].append(step)
                    continue
            out.append(("gather", [step]))
        elif isinstance(step, Fill):
            out.append(("fill", [step]))
        elif (
            step.job.op == Op.ATTENTION
            and prev
            and prev[0] == "attention"
            and (prev[1][0].op == step.op)
        ):
            prev[1].append(step)
        else:
            out.append(("attention" if step.job.op == Op.ATTENTION else "gemm", [step]))
    return out


def _fetch_actions(rec_addr: int, l1_addr: int, size: int) -> list[Action]:
    return [(LOAD, rec_addr, l1_addr, size, 1, size, size), (WAIT_DMA, 1)]


def build_schedule(
    program: Program,
    cfg: ClusterConfig,
    cost: CostModel | None = None,
    *,
    keep: Sequence[str] | None = None,
) -> Schedule:
    """Place, tile and pack ``program`` for ``cfg``; refuse what cannot fit.

    Raises
    ------
    PlanError
        One line naming the op (or tensor), the bytes it needs and the bytes available: the
        L2 image beyond ``2**dma.l2_addr_bits``, or an op whose smallest tile does not fit L1;
        also a job the engine would reject (e.g. more keys than ``max_seq``).
    """
    cost = cost or CostModel()
    seq_cost = cost.sequencer()
    groups = _groups(program)
    prologue = 0
    while prologue < len(groups) and groups[prologue][0] in ("gather", "fill"):
        prologue += 1
    late = [g for g in groups[prologue:] if g[0] in ("gather", "fill")]
    if late:
        raise PlanError(
            f"{late[0][1][0].name}: a gather or fill after the first engine op; the core runs "
            "them before the sequencer starts"
        )
    max_heads = max((len(g) for kind, g in groups if kind == "attention"), default=1)
    size = record_bytes(max_heads)
    records_addr = HEADER_BYTES
    l2 = plan_l2(program, cfg, reserve=records_addr + prologue * size, keep=keep)
    n_ops = len(groups) - prologue
    l1_record_addr = cfg.memory.size_bytes - l1_reserved(size)
    chunk = chunk_bytes(cfg)
    l1_buffers = l1_record_addr - 2 * chunk
    stamps_l1 = l1_buffers - _up(4 * (n_ops + 1), 64)
    capacity = stamps_l1
    if capacity <= 0:
        need = cfg.memory.size_bytes - capacity
        raise PlanError(
            f"schedule: the record, the stream buffers and the stamps need {need:,} bytes "
            f"of L1, but it has {cfg.memory.size_bytes:,}"
        )
    records: list[OpRecord] = []
    names: list[str] = []
    plans: list[OpPlan | None] = []
    memo: dict[object, tuple[int, int, int, bool]] = {}
    for kind, steps in groups:
        if kind == "gather":
            records.append(_gather_record(steps, program, l2, capacity))
            plans.append(None)
        elif kind == "fill":
            records.append(_fill_record(steps[0], program, l2))
            plans.append(None)
        else:
            plan = plan_op(steps, l2.placements, cfg, capacity, seq_cost, memo=memo)
            records.append(plan.record)
            plans.append(plan)
        names.append(steps[0].op if kind in ("gemm", "attention") else steps[0].name)
    engine_plans = [p for p in plans[prologue:] if p is not None]
    if len(engine_plans) != len(plans) - prologue:
        raise AssertionError("gathers and fills come before the engine ops (checked above)")
    plans[prologue:] = place_ops(engine_plans, capacity, cfg, seq_cost)
    records[prologue:] = [p.record for p in plans[prologue:]]
    # The stamps (their size is known) before the stream, so that one build places both.
    stamps_l2 = _up(l2.size, 64)
    stream_addr = stamps_l2 + _up(4 * (n_ops + 1), 64)
    layout = StreamLayout(stream_addr, chunk, l1_buffers, stamps_l1, stamps_l2)
    stream = build_stream(records[prologue:], cfg, seq_cost, layout)
    image_bytes = stream_addr + stream.nbytes
    if image_bytes > 1 << cfg.dma.l2_addr_bits:
        raise PlanError(
            f"stream: the L2 image with the command stream needs {image_bytes:,} bytes, but "
            f"the DMA's L2 address space (dma.l2_addr_bits = {cfg.dma.l2_addr_bits}) has "
            f"{1 << cfg.dma.l2_addr_bits:,}"
        )
    image = bytearray(image_bytes)
    for i in range(prologue):
        image[records_addr + i * size : records_addr + (i + 1) * size] = pack_record(
            records[i], size, names[i]
        )
    image[stream_addr : stream_addr + stream.nbytes] = stream.words.astype("<u4").tobytes()
    _HEADER.pack_into(
        image, 0, MAGIC, VERSION, size, records_addr, prologue, l1_record_addr,
        program.seq_len, l2.placements["input_ids"].addr, l2.placements["token_type_ids"].addr,
        image_bytes, stream_addr, stream.chunks, chunk, l1_buffers, stream.jobs,
        stream.transfers, stamps_l2, n_ops + 1,
    )  # fmt: skip
    for t in program.tensors.values():
        if t.data is not None:
            p = l2.placements[t.name]
            raw = np.ascontiguousarray(t.data).view(np.uint8).reshape(t.rows, t.row_bytes)
            view = np.frombuffer(image, np.uint8, t.nbytes, p.addr).reshape(t.rows, t.pitch)
            view[:, : t.row_bytes] = raw
    predicted = []
    for i, rec in enumerate(records[:prologue]):
        fetch = _fetch_actions(records_addr + i * size, l1_record_addr, size)
        body = simulate(_actions_static(rec, cost), cfg, cost)
        predicted.append(simulate(fetch, cfg, cost) + body)
    predicted += _stream_cycles(stream, records[prologue:], cfg, seq_cost)
    return Schedule(
        program, cfg, cost, l2, bytes(image), size, records_addr, l1_record_addr,
        tuple(records), tuple(names), tuple(plans), tuple(predicted), prologue, stream,
    )  # fmt: skip


def _stream_cycles(
    stream: Stream, records: Sequence[OpRecord], cfg: ClusterConfig, cost: CostModel
) -> list[OpCycles]:
    """Each engine op's predicted cycles: the total from the whole stream's timing (STAMP to
    STAMP, so the overlap between ops counts once); busy cycles and counts of the op alone."""
    totals = predict_stream(stream, cfg, cost)
    out = []
    for total, rec in zip(totals, records, strict=True):
        alone = simulate(op_actions(rec, cost), cfg, cost)
        out.append(dataclasses.replace(alone, total=total))
    return out


def _actions_static(rec: OpRecord, cost: CostModel) -> list[Action]:
    """A record's actions for the prediction; gathers with all-zero index values."""
    if rec.kind == KIND_GATHER:
        pre = gather_prefix(rec, cost)
        body = gather_body(rec, np.zeros(rec.m, np.int64), cost)
        return pre + [_shift_wait(a, 1) for a in body]
    if rec.kind == KIND_FILL:
        return fill_actions(rec, cost)
    return op_actions(rec, cost)


def _up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _shift_wait(a: Action, n: int) -> Action:
    return (WAIT_DMA, a[1] + n) if a[0] == WAIT_DMA else a


def deploy(
    qmodel: QuantizedMobileBert, cfg: ClusterConfig, seq_len: int, cost: CostModel | None = None
) -> Schedule:
    """Lower ``qmodel`` for ``seq_len`` tokens and build its schedule on ``cfg``.

    Raises ``LoweringError`` or :class:`PlanError` (one line each) before anything runs.
    """
    return build_schedule(lower(qmodel, cfg, seq_len), cfg, cost)


# --------------------------------------------------------------------------------------------
# Executor
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleRun:
    """What :func:`execute_schedule` returns: the hidden states and the cycles per record."""

    states: list[np.ndarray]
    cycles: tuple[OpCycles, ...]
    names: tuple[str, ...]
    jobs: int
    transfers: int
    l2: np.ndarray  #: the L2 image after the run

    @property
    def total(self) -> OpCycles:
        out = ZERO_CYCLES
        for c in self.cycles:
            out = out + c
        return out


class _Machine:
    """DMA and engine over an L2 and an L1 image, with a race checker per action stream.

    Transfers and jobs take effect when submitted, in order. That equals the hardware's
    asynchronous result as long as no job touches L1 bytes of a transfer it has not waited
    for, and no transfer touches L1 bytes of a job not waited for: which is checked. The DMA
    and the engine each run their own queue in order, so transfers never race each other and
    jobs never race each other.
    """

    def __init__(self, l2: np.ndarray, l1: np.ndarray, cfg: ClusterConfig, name: str) -> None:
        self.l2, self.l1, self.cfg, self.name = l2, l1, cfg, name
        self.dmas: list[tuple[int, int, int, bool]] = []  # (index, lo, hi, writes L1)
        self.jobs_out: list[tuple[int, list[tuple[int, int]], list[tuple[int, int]]]] = []
        self.n_dma = self.n_job = 0
        self.total_jobs = self.total_transfers = 0

    def fail(self, what: str) -> None:
        raise ExecutionError(f"{self.name}: {what}")

    def run(self, actions: Sequence[Action]) -> None:
        self.n_dma = self.n_job = 0
        for a in actions:
            kind = a[0]
            if kind in (LOAD, STORE, RELOAD):
                self.transfer(Direction.L1_TO_L2 if kind == STORE else Direction.L2_TO_L1, *a[1:])
            elif kind == JOB:
                self.job(a[1])
            elif kind == WAIT_DMA:
                self.dmas = [d for d in self.dmas if d[0] >= a[1]]
            elif kind == WAIT_JOB:
                self.jobs_out = [j for j in self.jobs_out if j[0] >= a[1]]
        if self.dmas or self.jobs_out:
            self.fail("the record ends with transfers or jobs it did not wait for")

    def transfer(self, direction: int, l2a: int, l1a: int, nbytes: int, rows: int,
                 l2s: int, l1s: int) -> None:  # fmt: skip
        for v in (l1a, l2a, nbytes, l1s, l2s):
            if v % ALIGN_BYTES:
                self.fail(f"DMA descriptor misaligned ({l2a:#x}, {l1a:#x}, {nbytes}, {l2s}, {l1s})")
        if rows == 0 or nbytes == 0:
            self.fail("DMA descriptor of zero size")
        if rows > U16:
            self.fail(f"DMA descriptor of {rows} rows (the field has 16 bits)")
        lo, hi = l1a, l1a + (rows - 1) * l1s + nbytes
        if hi > self.l1.size:
            self.fail(f"DMA reaches L1 byte {hi} of {self.l1.size}")
        if l2a + (rows - 1) * l2s + nbytes > min(self.l2.size, 1 << self.cfg.dma.l2_addr_bits):
            self.fail(f"DMA reaches beyond L2 ({l2a:#x}, {rows} rows)")
        writes_l1 = direction == Direction.L2_TO_L1
        for _, rd, wr in self.jobs_out:
            for r0, r1 in wr + (rd if writes_l1 else []):
                if lo < r1 and r0 < hi:
                    self.fail(f"DMA at L1 {lo:#x}..{hi:#x} races a job that was not waited for")
        src, dst = (self.l2, self.l1) if writes_l1 else (self.l1, self.l2)
        sa, ss, da, ds = (l2a, l2s, l1a, l1s) if writes_l1 else (l1a, l1s, l2a, l2s)
        if ss == nbytes and ds == nbytes:
            dst[da : da + rows * nbytes] = src[sa : sa + rows * nbytes]
        else:
            for r in range(rows):  # in order: later rows win where destinations overlap
                dst[da + r * ds : da + r * ds + nbytes] = src[sa + r * ss : sa + r * ss + nbytes]
        self.dmas.append((self.n_dma, lo, hi, writes_l1))
        self.n_dma += 1
        self.total_transfers += 1

    def job(self, job: Job) -> None:
        ranges = job_extents(job)
        outs = [ranges.pop(k) for k in ("Y", "O") if k in ranges]
        ins = list(ranges.values())
        for o0, o1 in outs:
            for i0, i1 in ins:
                if o0 < i1 and i0 < o1:
                    self.fail("a job's output overlaps its input")
        for _, lo, hi, writes_l1 in self.dmas:
            for r0, r1 in ins + outs if writes_l1 else outs:
                if lo < r1 and r0 < hi:
                    self.fail(f"a job uses L1 {r0:#x}..{r1:#x} before its DMA was waited for")
        err = run_job(self.l1, job, self.cfg)
        if err != JobError.NONE:
            self.fail(f"the engine rejected a job ({err.name})")
        self.jobs_out.append((self.n_job, ins, outs))
        self.n_job += 1
        self.total_jobs += 1


def execute_schedule(
    schedule: Schedule,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray | None = None,
    *,
    cfg: ClusterConfig | None = None,
    cost: CostModel | None = None,
) -> ScheduleRun:
    """Run ``schedule`` on one sequence as the C runtime will; the hidden states and cycles.

    The image is copied to an L2 array and the ids written into it, as the host would; the L1
    is an array of ``cfg.memory.size_bytes``. Each record is fetched into L1 by DMA and
    decoded from those bytes, then its transfers and jobs run (see :class:`_Machine`). The
    hidden states (``program.outputs``) are read back from L2.

    Raises ``ValueError`` for ids of the wrong shape or range and ``ExecutionError`` for a
    rejected descriptor or job or a race between the DMA and the engine.
    """
    cfg = cfg or schedule.cfg
    cost = cost or schedule.cost
    program = schedule.program
    S = program.seq_len
    l2 = schedule.image_with_inputs(input_ids, token_type_ids)
    l1 = np.zeros(cfg.memory.size_bytes, np.uint8)
    head = _HEADER.unpack_from(bytes(l2[:HEADER_BYTES]))
    magic, version, size, rec_addr, count, l1_rec, seq = head[:7]
    stream_addr, chunks, chunk_bytes, l1_buffers = head[10:14]
    if magic != MAGIC or version != VERSION or seq != S:
        raise ExecutionError("schedule: bad header")
    index_names = {
        rec_i: step.index
        for rec_i, name in enumerate(schedule.names)
        for step in program.steps
        if isinstance(step, Gather) and step.name == name
    }
    cycles = []
    machine = _Machine(l2, l1, cfg, "schedule")
    for i in range(count):
        machine.name = schedule.names[i]
        fetch = _fetch_actions(rec_addr + i * size, l1_rec, size)
        machine.run(fetch)
        rec = unpack_record(l1[l1_rec : l1_rec + size])
        if rec.kind == KIND_GATHER:
            pre = gather_prefix(rec, cost)
            machine.run(pre)
            b = rec.operand("b")
            index = l1[b.l1_addr : b.l1_addr + 4 * rec.m].view("<i4").astype(np.int64)
            limit = rec.operand("a").l2_hstride // rec.tn
            if index.size and (index.min() < 0 or index.max() >= limit):
                raise ValueError(
                    f"{index_names.get(i, 'index')} values must be in [0, {limit}) for "
                    f"{schedule.names[i]}"
                )
            body = gather_body(rec, index, cost)
            machine.run(body)
            acts = pre + [_shift_wait(a, 1) for a in body]
        elif rec.kind == KIND_FILL:
            l1[0 : rec.n] = rec.flags  # the core writes the fill row
            acts = fill_actions(rec, cost)
            machine.run(acts)
        else:
            raise ExecutionError(f"{schedule.names[i]}: record kind {rec.kind} in the prologue")
        cycles.append(simulate(fetch, cfg, cost) + simulate(acts, cfg, cost))
    if chunks:
        machine.name = "stream"
        machine.run([(LOAD, stream_addr, l1_buffers, chunk_bytes, 1, chunk_bytes, chunk_bytes),
                     (WAIT_DMA, 1)])  # fmt: skip
        layout = StreamLayout(stream_addr, chunk_bytes, l1_buffers, 0, 0)
        machine.n_dma = machine.n_job = 0
        run_stream(machine, l1, cfg, layout, schedule.names[count:])
        cycles += _stream_cycles(schedule.stream, schedule.records[count:], cfg, cost.sequencer())
    states = []
    for name in program.outputs:
        t, p = program.tensors[name], schedule.l2.placements[name]
        view = l2[p.addr : p.addr + t.nbytes].reshape(t.rows, t.pitch)
        states.append(view[:, : t.row_bytes].copy().view(np.int8))
    return ScheduleRun(
        states, tuple(cycles), schedule.names, machine.total_jobs, machine.total_transfers, l2
    )
