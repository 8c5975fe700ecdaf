"""Command lists for the cluster's command sequencer: encoding and decoding.

The sequencer (``hw/sequencer.py``, ``docs/sequencer.md``) runs a list of 32-bit
words from L1: register writes, waits on a counter register, jumps and time stamps.
:class:`CommandList` builds one by register name, so that a list reads like the
firmware it replaces; :func:`decode` turns words back into :class:`Command` objects
(for the executor, the tests and error messages).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.hw.cluster_registers import register_map
from tinyattn.hw.job import Job
from tinyattn.hw.registers import MemoryMap, PortBinding
from tinyattn.hw.sequencer import SeqOp, WaitBase

__all__ = [
    "MAX_WRITE",
    "Command",
    "CommandList",
    "CommandListError",
    "decode",
    "job_registers",
    "transfer_registers",
]

#: Most words one WRITE command carries (its 12-bit count).
MAX_WRITE = (1 << 12) - 1
_REG_MASK = (1 << 12) - 1


class CommandListError(ValueError):
    """A list that the sequencer would refuse, or words that are not a list."""


@dataclass(frozen=True)
class Command:
    """One decoded command: ``op``, its L1 byte ``addr``, and its fields.

    WRITE: ``reg`` and ``values``; WAIT: ``reg``, ``base`` and ``delta``; JUMP and
    STAMP: ``target`` (an L1 address).
    """

    op: SeqOp
    addr: int
    reg: int = 0
    values: tuple[int, ...] = ()
    base: WaitBase = WaitBase.ZERO
    delta: int = 0
    target: int = 0

    @property
    def words(self) -> int:
        return {SeqOp.WRITE: 1 + len(self.values), SeqOp.END: 1}.get(self.op, 2)


class CommandList:
    """A command list under construction; words are appended in order.

    Registers are named as in the C header without the prefix, e.g. ``"ENGINE_JOB_M"``
    or ``"DMA_PUSH"``: ``block_register``.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        self.map: MemoryMap = register_map(cfg)
        self._offsets = {r.name: r.address for r in self.map.registers}
        self.words: list[int] = []

    def offset(self, register: str) -> int:
        """Byte offset of ``register`` in the register window."""
        try:
            return self._offsets[register]
        except KeyError:
            raise CommandListError(f"no register {register!r} in the register map") from None

    def write(self, register: str, *values: int) -> CommandList:
        """Write ``values`` to ``register`` and the registers after it, in address order."""
        if not values:
            raise CommandListError(f"a WRITE to {register} needs at least one value")
        start = self.offset(register)
        for i in range(0, len(values), MAX_WRITE):
            chunk = values[i : i + MAX_WRITE]
            self.words.append(_header(SeqOp.WRITE, start + 4 * i, len(chunk)))
            self.words.extend(_u32(v, f"a value for {register}") for v in chunk)
        return self

    def write_many(self, items: Iterable[tuple[str, int]]) -> CommandList:
        """Write each ``(register, value)``; runs of consecutive registers share a WRITE."""
        run: list[int] = []
        run_start = -1
        for register, value in items:
            off = self.offset(register)
            if run and off == run_start + 4 * len(run) and len(run) < MAX_WRITE:
                run.append(value)
                continue
            if run:
                self._write_at(run_start, run)
            run, run_start = [value], off
        if run:
            self._write_at(run_start, run)
        return self

    def _write_at(self, offset: int, values: list[int]) -> None:
        self.words.append(_header(SeqOp.WRITE, offset, len(values)))
        self.words.extend(_u32(v, f"a value for offset {offset:#x}") for v in values)

    def wait(self, register: str, delta: int, base: WaitBase = WaitBase.ZERO) -> CommandList:
        """Wait until ``register - (base + delta)`` is >= 0 (signed 32-bit)."""
        self.words.append(_header(SeqOp.WAIT, self.offset(register), int(base)))
        self.words.append(_u32(delta, "a WAIT delta"))
        return self

    def wait_jobs(self, done: int) -> CommandList:
        """Wait until ``done`` jobs pushed since the list's start have finished."""
        return self.wait("ENGINE_JOBS_DONE", done, WaitBase.JOB_BASE)

    def wait_dma(self, done: int) -> CommandList:
        """Wait until ``done`` transfers pushed since the list's start have finished."""
        return self.wait("DMA_DONE_COUNT", done, WaitBase.DMA_BASE)

    def jump(self, l1_addr: int) -> CommandList:
        self.words += [_header(SeqOp.JUMP, 0, 0), _u32(l1_addr, "a JUMP address")]
        return self

    def stamp(self, l1_addr: int) -> CommandList:
        """Write the cycles since START to ``l1_addr``."""
        self.words += [_header(SeqOp.STAMP, 0, 0), _u32(l1_addr, "a STAMP address")]
        return self

    def end(self) -> CommandList:
        self.words.append(_header(SeqOp.END, 0, 0))
        return self

    def job(self, job: Job) -> CommandList:
        """Stage every field of ``job`` and push it (it waits for room in the queue)."""
        self.write_many(job_registers(self.map, job))
        return self.write("ENGINE_JOB_PUSH", 1)

    def transfer(self, t: object) -> CommandList:
        """Stage the DMA descriptor ``t`` (a ``Transfer``) and push it."""
        self.write_many(transfer_registers(self.map, t))
        return self.write("DMA_PUSH", 1)

    def to_bytes(self) -> bytes:
        return np.asarray(self.words, dtype="<u4").tobytes()

    def __len__(self) -> int:
        return len(self.words)


def _header(op: SeqOp, reg: int, field: int) -> int:
    return (int(op) << 28) | (field << 16) | (reg & _REG_MASK)


def _u32(value: int, what: str) -> int:
    value = int(value)
    if not -(1 << 31) <= value < 1 << 32:
        raise CommandListError(f"{what} ({value}) does not fit 32 bits")
    return value & 0xFFFF_FFFF


def decode(words: Sequence[int] | np.ndarray, addr: int = 0) -> list[Command]:
    """Decode a list laid out from L1 byte address ``addr`` up to its END.

    JUMPs are not followed: the words must be one straight run ending in END.
    Raises :class:`CommandListError` where the sequencer would stop with an error.
    """
    out: list[Command] = []
    words = [int(w) for w in words]
    i = 0
    while True:
        if i >= len(words):
            raise CommandListError(f"the list at {addr:#x} ends without END")
        where = addr + 4 * i
        w = words[i]
        code, field, reg = w >> 28, (w >> 16) & 0xFFF, w & _REG_MASK
        try:
            op = SeqOp(code)
        except ValueError:
            raise CommandListError(
                f"word {w:#010x} at {where:#x}: no command has op {code}"
            ) from None
        if op is SeqOp.END:
            out.append(Command(op, where))
            return out
        if op in (SeqOp.WRITE, SeqOp.WAIT) and reg % 4:
            raise CommandListError(f"command at {where:#x}: register offset {reg:#x} misaligned")
        n = field if op is SeqOp.WRITE else 1
        if n == 0:
            raise CommandListError(f"WRITE at {where:#x} has no words")
        if i + 1 + n > len(words):
            raise CommandListError(f"command at {where:#x} runs past the end of the list")
        operands = tuple(words[i + 1 : i + 1 + n])
        if op is SeqOp.WRITE:
            out.append(Command(op, where, reg=reg, values=operands))
        elif op is SeqOp.WAIT:
            if field & 3 == 3:
                raise CommandListError(f"WAIT at {where:#x} has base 3")
            out.append(Command(op, where, reg=reg, base=WaitBase(field & 3), delta=operands[0]))
        else:
            out.append(Command(op, where, target=operands[0]))
        i += 1 + n


def _staging_values(
    mm: MemoryMap, block: str, payload: tuple[str, ...], value_of: object
) -> list[tuple[str, int]]:
    """``(register, value)`` for each staging register of ``block``, in address order.

    A field bound below the stream payload ``payload`` (a port path, e.g. ``("dma", "cmd",
    "payload")``), at ``<path>``, takes ``value_of("<path>")`` (dotted); the register value
    is its fields ORed at their offsets, each masked to its width.
    """
    out = []
    for reg in mm.registers:
        if reg.block.name != block or reg.register.stall_while is None:
            continue
        value, bound = 0, False
        for f in reg.fields:
            path = f.hw.below(payload) if isinstance(f.hw, PortBinding) else None
            if path:
                v = int(value_of(".".join(path)))  # type: ignore[operator]
                if not 0 <= v < 1 << f.width and not -(1 << (f.width - 1)) <= v < 0:
                    raise CommandListError(
                        f"{reg.name}.{f.name} = {v} does not fit its {f.width} bits"
                    )
                value |= (v & f.mask >> f.offset) << f.offset
                bound = True
        if bound:
            out.append((reg.name, value))
    return out


def job_registers(mm: MemoryMap, job: Job) -> list[tuple[str, int]]:
    """The ``ENGINE_JOB_*`` staging register values that describe ``job``."""
    payload = job.payload()

    def value_of(path: str) -> int:
        v: object = payload
        for part in path.split("."):
            v = v[part]  # type: ignore[index]
        return int(v)  # type: ignore[call-overload]

    return _staging_values(mm, "ENGINE", ("engine", "jobs", "payload"), value_of)


def transfer_registers(mm: MemoryMap, t: object) -> list[tuple[str, int]]:
    """The ``DMA_*`` staging register values of the descriptor ``t``."""
    return _staging_values(mm, "DMA", ("dma", "cmd", "payload"), lambda key: getattr(t, key))
