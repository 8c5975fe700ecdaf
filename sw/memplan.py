"""Memory plan: where every tensor of a lowered program lives in L2, and the per-op L1 arena.

**L2.** :func:`plan_l2` lays out one L2 image (from L2 address 0) in four sections:

1. ``schedule``: bytes reserved for the schedule header and records (``tinyattn.sw.schedule``);
2. ``inputs``: the token ids and token types, written per inference;
3. ``constants``: embedding tables, weights and parameter records, in program order;
4. ``activations``: every activation, placed by lifetime. A tensor is live from the first step
   that writes it to the last step that reads it (the kept tensors, by default the hidden
   states, to the end). Slots are reused once dead, first fit, so the plan is deterministic.
   A slot freed by step ``s`` is only reused by tensors first written after ``s``: a tiled job
   still loads tiles of its inputs while it stores tiles of its output.

Every tensor starts on an :data:`L2_ALIGN` boundary so that its rows start on a DMA beat.

**L1.** :func:`plan_l1` places the buffers of one op (each with one, two or more slots) from
L1 address 0; the top :func:`l1_reserved` bytes hold the record the runtime is executing.

A model or configuration that cannot fit is refused before anything runs, with a one-line
:class:`PlanError` naming the operation (or tensor), the bytes it needs and the bytes available.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tinyattn.config import ClusterConfig
from tinyattn.sw.lowering import EngineJob, Fill, Gather, Placement, Program, Tensor

__all__ = [
    "L1_ALIGN",
    "L2_ALIGN",
    "L1Arena",
    "L1Buffer",
    "L2Plan",
    "PlanError",
    "Region",
    "l1_capacity",
    "l1_reserved",
    "lifetimes",
    "plan_l1",
    "plan_l2",
]

#: Alignment of every L2 tensor: one beat of the widest DMA (512 bits).
L2_ALIGN = 64
#: Alignment of every L1 buffer slot: a DMA beat and a whole engine port beat at the defaults.
L1_ALIGN = 64


class PlanError(ValueError):
    """The program cannot be placed or tiled on the configuration; ``str()`` is one line."""


def _up(n: int, a: int) -> int:
    return -(-n // a) * a


# --------------------------------------------------------------------------------------------
# L2
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """One tensor of the L2 image: bytes ``[addr, addr + nbytes)``, live over steps ``live``.

    ``live`` is ``(first, last)`` step indices for activations, ``None`` for the rest.
    """

    name: str
    section: str
    addr: int
    nbytes: int
    live: tuple[int, int] | None = None


@dataclass(frozen=True)
class L2Plan:
    """The L2 image of a program: every tensor's :class:`Placement` and the section bounds."""

    placements: dict[str, Placement]
    regions: tuple[Region, ...]
    sections: dict[str, tuple[int, int]]  #: section -> (addr, bytes)
    size: int  #: bytes of the whole image
    activation_bytes: int  #: peak of the activation section (with reuse)
    activation_bytes_no_reuse: int  #: what a bump allocator would need

    def describe(self) -> str:
        lines = [f"{'section':<12} {'addr':>12} {'bytes':>12}"]
        for name, (addr, size) in self.sections.items():
            lines.append(f"{name:<12} {addr:>#12x} {size:>12,}")
        lines.append(
            f"L2 image {self.size:,} bytes; activations {self.activation_bytes:,} "
            f"(no reuse: {self.activation_bytes_no_reuse:,})"
        )
        return "\n".join(lines)


def _step_io(step: Fill | Gather | EngineJob) -> tuple[list[str], list[str]]:
    """(tensors read, tensors written) by one step."""
    if isinstance(step, Fill):
        return [], [step.dst]
    if isinstance(step, Gather):
        return [step.table, step.index], [step.dst]
    ops = step.operands()
    return [o.tensor for k, o in ops.items() if k != "c"], [ops["c"].tensor]


def lifetimes(program: Program, keep: Iterable[str] = ()) -> dict[str, tuple[int, int]]:
    """``(first write, last read)`` step of every activation; ``keep`` lives to the end."""
    end = len(program.steps)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, step in enumerate(program.steps):
        reads, writes = _step_io(step)
        for name in writes:
            first.setdefault(name, i)
            last[name] = max(last.get(name, i), i)
        for name in reads:
            if program.tensors[name].kind == "activation":
                if name not in first:
                    raise PlanError(f"{step.name}: reads {name} before any step writes it")
                last[name] = i
    for name in keep:
        if name not in first:
            raise PlanError(f"{name}: kept as an output, but no step writes it")
        last[name] = end
    return {n: (first[n], last[n]) for n in first}


@dataclass
class _FirstFit:
    """First-fit allocator over ``[0, top)``; the free list stays sorted and coalesced."""

    top: int = 0
    free: list[tuple[int, int]] = field(default_factory=list)  # (offset, size)

    def alloc(self, size: int) -> int:
        for i, (off, sz) in enumerate(self.free):
            if sz >= size:
                if sz == size:
                    del self.free[i]
                else:
                    self.free[i] = (off + size, sz - size)
                return off
        if self.free and self.free[-1][0] + self.free[-1][1] == self.top:
            off = self.free.pop()[0]  # grow the last hole instead of leaving it
        else:
            off = self.top
        self.top = off + size
        return off

    def release(self, off: int, size: int) -> None:
        self.free.append((off, size))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for o, s in self.free:
            if merged and merged[-1][0] + merged[-1][1] == o:
                merged[-1] = (merged[-1][0], merged[-1][1] + s)
            else:
                merged.append((o, s))
        self.free = merged


def plan_l2(
    program: Program,
    cfg: ClusterConfig,
    *,
    reserve: int = 0,
    keep: Sequence[str] | None = None,
) -> L2Plan:
    """Place every tensor of ``program`` in one L2 image that starts at L2 address 0.

    ``reserve`` bytes at address 0 are left for the schedule; ``keep`` (default: the
    program's outputs) are activations that stay live to the end, to be read back.

    Raises
    ------
    PlanError
        The image does not fit the ``2**dma.l2_addr_bits`` bytes the DMA can address; the
        message names the first tensor that ends past it.
    """
    keep = list(program.outputs if keep is None else keep)
    limit = 1 << cfg.dma.l2_addr_bits
    placements: dict[str, Placement] = {}
    regions: list[Region] = []
    sections: dict[str, tuple[int, int]] = {"schedule": (0, reserve)}
    top = _up(reserve, L2_ALIGN)

    def check(t: Tensor, end: int, what: str) -> None:
        if end > limit:
            raise PlanError(
                f"{t.name}: the L2 image needs at least {end:,} bytes ({what}), but the DMA's "
                f"L2 address space (dma.l2_addr_bits = {cfg.dma.l2_addr_bits}) has {limit:,}"
            )

    for section, kinds in (
        ("inputs", ("input",)),
        ("constants", ("embedding_table", "weight", "params")),
    ):
        start = top
        for t in program.tensors.values():
            if t.kind in kinds:
                check(t, top + t.nbytes, f"{section} up to this tensor")
                placements[t.name] = Placement(top, t.pitch)
                regions.append(Region(t.name, section, top, t.nbytes))
                top = _up(top + t.nbytes, L2_ALIGN)
        sections[section] = (start, top - start)

    life = lifetimes(program, keep)
    base = top
    arena = _FirstFit()
    acts = [t for t in program.tensors.values() if t.kind == "activation"]
    unused = [t.name for t in acts if t.name not in life]
    if unused:
        raise PlanError(f"{unused[0]}: an activation that no step writes")
    by_first: dict[int, list[Tensor]] = {}
    by_last: dict[int, list[Tensor]] = {}
    for t in acts:
        f, last = life[t.name]
        by_first.setdefault(f, []).append(t)
        by_last.setdefault(last, []).append(t)
    offsets: dict[str, int] = {}
    for i in range(len(program.steps) + 1):
        for t in by_first.get(i, []):
            offsets[t.name] = arena.alloc(_up(t.nbytes, L2_ALIGN))
            check(t, base + offsets[t.name] + t.nbytes, "activations live at its step")
        # Freed after the step: its own outputs never share memory with its inputs.
        for t in by_last.get(i, []):
            arena.release(offsets[t.name], _up(t.nbytes, L2_ALIGN))
    for t in acts:
        addr = base + offsets[t.name]
        placements[t.name] = Placement(addr, t.pitch)
        regions.append(Region(t.name, "activations", addr, t.nbytes, life[t.name]))
    sections["activations"] = (base, arena.top)
    size = base + arena.top
    return L2Plan(
        placements={n: placements[n] for n in program.tensors},
        regions=tuple(regions),
        sections=sections,
        size=size,
        activation_bytes=arena.top,
        activation_bytes_no_reuse=sum(_up(t.nbytes, L2_ALIGN) for t in acts),
    )


# --------------------------------------------------------------------------------------------
# L1
# --------------------------------------------------------------------------------------------


def l1_reserved(record_bytes: int) -> int:
    """Bytes at the top of L1 kept for the record being executed (fetched by DMA)."""
    return _up(record_bytes, L1_ALIGN)


def l1_capacity(cfg: ClusterConfig, record_bytes: int) -> int:
    """L1 bytes an op's buffers may use: all of L1 but the record area."""
    return cfg.memory.size_bytes - l1_reserved(record_bytes)


@dataclass(frozen=True)
class L1Buffer:
    """``slots`` slots of ``slot_bytes`` each (``L1_ALIGN`` apart), from ``addr``."""

    name: str
    addr: int
    slot_bytes: int
    slots: int

    @property
    def slot_stride(self) -> int:
        return _up(self.slot_bytes, L1_ALIGN)

    @property
    def end(self) -> int:
        return self.addr + self.slots * self.slot_stride

    def slot(self, i: int) -> int:
        return self.addr + i * self.slot_stride


@dataclass(frozen=True)
class L1Arena:
    """The L1 buffers of one op, from address 0, and the capacity they had to fit."""

    op: str
    buffers: dict[str, L1Buffer]
    used: int
    capacity: int


def l1_footprint(buffers: Sequence[tuple[str, int, int]]) -> int:
    """Bytes that :func:`plan_l1` needs for ``(name, slot_bytes, slots)`` buffers."""
    return sum(_up(b, L1_ALIGN) * s for _, b, s in buffers)


def _describe(buffers: Sequence[tuple[str, int, int]]) -> str:
    return ", ".join(f"{n} {s}x{b:,}" for n, b, s in buffers)


def plan_l1(op: str, buffers: Sequence[tuple[str, int, int]], capacity: int) -> L1Arena:
    """Place ``(name, slot_bytes, slots)`` buffers one after the other from L1 address 0.

    Raises :class:`PlanError` (one line: the op, the bytes needed and available) if they do
    not fit ``capacity``.
    """
    need = l1_footprint(buffers)
    if need > capacity:
        raise PlanError(
            f"{op}: needs {need:,} bytes of L1 ({_describe(buffers)}), but {capacity:,} are "
            "available"
        )
    placed: dict[str, L1Buffer] = {}
    addr = 0
    for name, slot_bytes, slots in buffers:
        placed[name] = L1Buffer(name, addr, slot_bytes, slots)
        addr = placed[name].end
    return L1Arena(op, placed, addr, capacity)
