"""The register map of the cluster peripherals, defined once in Python.

Everything that firmware sees of the engine, the DMA and the events comes from
:func:`register_map`: the RTL register block (:mod:`tinyattn.hw.regblock`), the C
header ``tinyattn_regs.h``, ``docs/registers.md`` and the SystemRDL file
(:mod:`tinyattn.sw.regmap_emit`). Nothing downstream re-derives an offset, a width
or a value.

The DSL, in the spirit of amaranth-soc's CSR registers:

- :class:`Field`: a bit range of a register with an :class:`Access` mode, a reset
  value, a description and a *binding* (``hw``) that says where the field's value
  comes from or goes to in the hardware;
- :class:`Register`: a 32-bit word made of fields;
- :class:`Block`: registers at word offsets inside a block of ``span`` bytes;
- :class:`MapBuilder`: places blocks at base offsets and validates the whole, giving a
  :class:`MemoryMap` (addresses are byte offsets from the register block's base).

Bindings (``Field.hw``)
-----------------------
- ``"const"``: a read-only constant equal to the field's reset value;
- ``"engine.<path>"`` / ``"dma.<path>"``: a member of the register block's ``engine``
  or ``dma`` interface (:func:`engine_control_signature`, :func:`dma_control_signature`),
  walked through stream and struct layouts, e.g. ``"engine.jobs.payload.qk.mult"``; an
  optional ``[lo:hi]`` bit slice selects part of a wider port (``"engine.macs[0:32]"``);
- ``"internal.<name>"``: a signal of the register block's own logic (push state,
  counters, events), declared with its width in :data:`INTERNAL`.

An ``RW`` field may drive an output (a staging register drives a payload field), an
``RO`` field reads an input, a constant or an internal source, a ``W1P`` field pulses
an output or an internal sink, a ``W1C`` field is set by an input or internal event.
The builder checks every binding: it exists, flows the right way and has the field's
width.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from amaranth.hdl import Shape
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import Flow, In, Out

from tinyattn.config import ClusterConfig

from . import job as _job
from .core_bus import L1_BASE, PERIPH_BASE, PRIVATE_BASE
from .dma import ALIGN_BYTES, Direction, Dma, DmaError
from .engine import status_layout
from .job import FLAGS_ALL, PARAM_RECORD_BYTES, JobError, Op
from .job_layout import job_layout
from .sequencer import SeqError, sequencer_control_signature

__all__ = [
    "DMA_CONTROL",
    "ENGINE_CONTROL",
    "EVENTS",
    "INTERNAL",
    "REGMAP_VERSION",
    "REG_BITS",
    "WORD_BYTES",
    "Access",
    "Block",
    "Constant",
    "EnumValue",
    "Field",
    "MapBuilder",
    "MappedRegister",
    "MemoryMap",
    "RegMapError",
    "Register",
    "dma_control_signature",
    "engine_control_signature",
    "host_signature",
    "register_map",
]

#: Version of the register map layout, (major, minor). Bump major when an offset or
#: a field moves, minor when something is added.
REGMAP_VERSION = (1, 2)
#: Registers are 32-bit words at word-aligned byte offsets.
REG_BITS = 32
WORD_BYTES = REG_BITS // 8

_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_KEY = re.compile(r"^(?P<path>[a-z_][a-z0-9_.]*)(\[(?P<lo>\d+):(?P<hi>\d+)\])?$")


class RegMapError(ValueError):
    """An invalid register map; the message names the block, register and field."""


class Access(enum.Enum):
    """Software access mode of a field."""

    RW = "RW"  #: read/write storage
    RO = "RO"  #: read-only; writes are ignored
    W1P = "W1P"  #: write 1 to pulse an action for one cycle; reads as 0
    W1C = "W1C"  #: set by hardware, sticky; write 1 to clear

    @property
    def readable(self) -> bool:
        """Reads return the field's state (``W1P`` fields read as 0)."""
        return self is not Access.W1P

    @property
    def writable(self) -> bool:
        """Writes have an effect."""
        return self is not Access.RO


@dataclass(frozen=True)
class EnumValue:
    """A named value of a field: a code (``Field.flags`` false) or a bit mask (true)."""

    name: str
    value: int
    desc: str = ""


@dataclass(frozen=True)
class Field:
    """A bit range of a register.

    ``offset`` is the LSB (bit 0 is the word's LSB); ``reset`` is the value after
    reset (for an ``RO`` field bound to an input, the value it reads while that input
    is at rest). ``values`` names the values the field takes (``flags``: bit masks that
    combine), and ``enum`` names that set of values in the header (``JOB_ERROR`` gives
    ``TINYATTN_JOB_ERROR_<VALUE>``). See the module docstring for ``hw``.
    """

    name: str
    offset: int
    width: int
    access: Access
    reset: int = 0
    desc: str = ""
    hw: str | None = None
    values: tuple[EnumValue, ...] = ()
    flags: bool = False
    enum: str = ""

    @property
    def msb(self) -> int:
        return self.offset + self.width - 1

    @property
    def mask(self) -> int:
        """The field's bits in place in the register word."""
        return ((1 << self.width) - 1) << self.offset

    @property
    def bits(self) -> str:
        """``"[msb:lsb]"``, or ``"[bit]"`` for a one-bit field."""
        return f"[{self.offset}]" if self.width == 1 else f"[{self.msb}:{self.offset}]"


@dataclass(frozen=True)
class Register:
    """A 32-bit register: its fields, and optional side effects.

    ``offset`` is in bytes from the block base; ``None`` places it in the word after
    the previous register of the block. ``read_action`` names an internal sink pulsed
    by every read (e.g. a latch), ``write_action`` one pulsed by every write (in the
    cycle of the write's ``gnt``). ``stall_while`` names an internal one-bit source:
    while it is high, writes to this register are held (``gnt`` stays low).
    """

    name: str
    desc: str
    fields: tuple[Field, ...]
    offset: int | None = None
    read_action: str | None = None
    write_action: str | None = None
    stall_while: str | None = None

    @property
    def reset(self) -> int:
        """The register word after reset (``W1P`` fields read 0)."""
        return sum(f.reset << f.offset for f in self.fields if f.access.readable)

    @property
    def readable(self) -> bool:
        return any(f.access.readable for f in self.fields)

    @property
    def writable(self) -> bool:
        return any(f.access.writable for f in self.fields)

    @property
    def access(self) -> str:
        """The access mode of all fields, or ``"mixed"``."""
        modes = {f.access for f in self.fields}
        return modes.pop().value if len(modes) == 1 else "mixed"


@dataclass(frozen=True)
class Block:
    """Registers of one function, ``span`` bytes of address space at a base offset."""

    name: str
    desc: str
    registers: tuple[Register, ...]
    span: int = 0x100


@dataclass(frozen=True)
class MappedRegister:
    """A register placed in the map: ``address = base + offset`` (bytes)."""

    block: Block
    register: Register
    base: int
    offset: int

    @property
    def address(self) -> int:
        return self.base + self.offset

    @property
    def name(self) -> str:
        """``BLOCK_REGISTER``, the name used by the header and the docs."""
        return f"{self.block.name}_{self.register.name}"

    @property
    def fields(self) -> tuple[Field, ...]:
        return self.register.fields


@dataclass(frozen=True)
class Constant:
    """A named constant for firmware (configuration, enum-like sizes)."""

    name: str
    value: int
    desc: str


@dataclass(frozen=True)
class MemoryMap:
    """The validated map. ``registers`` are in address order; ``size`` is a power of two."""

    name: str
    desc: str
    blocks: tuple[tuple[int, Block], ...]
    registers: tuple[MappedRegister, ...]
    constants: tuple[Constant, ...]
    size: int

    @property
    def addr_bits(self) -> int:
        """Byte address bits that cover the map."""
        return self.size.bit_length() - 1

    def register(self, block: str, name: str) -> MappedRegister:
        """The register ``block``/``name``; ``KeyError`` if there is none."""
        for reg in self.registers:
            if reg.block.name == block and reg.register.name == name:
                return reg
        raise KeyError(f"no register {block}_{name}")

    def field(self, block: str, reg: str, name: str) -> Field:
        """The field ``block``/``reg``/``name``; ``KeyError`` if there is none."""
        for f in self.register(block, reg).fields:
            if f.name == name:
                return f
        raise KeyError(f"no field {block}_{reg}.{name}")

    def fields(self) -> Iterator[tuple[MappedRegister, Field]]:
        """Every (register, field) pair, in address and bit order."""
        for reg in self.registers:
            for f in sorted(reg.fields, key=lambda f: f.offset):
                yield reg, f

    def enums(self) -> list[tuple[str, Field]]:
        """Each named value set once, with the first field that uses it (address order)."""
        seen: dict[str, Field] = {}
        for _, f in self.fields():
            if f.enum and f.enum not in seen:
                seen[f.enum] = f
        return list(seen.items())

    def base(self, block: str) -> int:
        for base, b in self.blocks:
            if b.name == block:
                return base
        raise KeyError(f"no block {block}")


# ---------------------------------------------------------------------------- bindings


@dataclass(frozen=True)
class _Internal:
    width: int
    kind: str  # "source" (read by fields) or "sink" (driven by fields)
    desc: str


#: The register block's own signals that fields may bind to (``"internal.<name>"``).
INTERNAL: dict[str, _Internal] = {
    "engine_push": _Internal(1, "sink", "push the staged job (held pending until accepted)"),
    "engine_push_pending": _Internal(1, "source", "a pushed job waits for the engine's queue"),
    "jobs_done": _Internal(REG_BITS, "source", "count of engine done events, wrapping"),
    "macs_latch": _Internal(1, "sink", "latch macs[63:32] into MACS_HI"),
    "macs_hi": _Internal(REG_BITS, "source", "macs[63:32] as latched by the last MACS_LO read"),
    "dma_push": _Internal(1, "sink", "push the staged descriptor (held pending until accepted)"),
    "dma_push_pending": _Internal(1, "source", "a pushed descriptor waits for the DMA's queue"),
    "dma_done_count": _Internal(REG_BITS, "source", "count of DMA done events, wrapping"),
    "engine_done": _Internal(1, "source", "engine done event"),
    "engine_error": _Internal(1, "source", "engine done event of a rejected job"),
    "dma_done": _Internal(1, "source", "DMA done event"),
    "dma_error": _Internal(1, "source", "DMA done event of a rejected descriptor"),
    "bus_error": _Internal(1, "source", "an access to an unmapped address"),
    "console_write": _Internal(1, "sink", "HOST_CONSOLE written: send its byte"),
    "exit_write": _Internal(1, "sink", "HOST_EXIT written: the run ends"),
}

#: Engine ports the register block connects to (its ``engine`` interface, flipped).
ENGINE_CONTROL = (
    "jobs",
    "clear",
    "done",
    "status",
    "busy_cycles",
    "stall_cycles",
    "idle_cycles",
    "macs",
)
#: DMA ports the register block connects to (its ``dma`` interface, flipped).
DMA_CONTROL = (
    "cmd",
    "clear",
    "error_ack",
    "done",
    "done_error",
    "busy",
    "queue_level",
    "error",
    "error_code",
)


def engine_control_signature(cfg: ClusterConfig) -> wiring.Signature:
    """The register block's side of :class:`~tinyattn.hw.engine.Engine`'s control ports.

    The members of :data:`ENGINE_CONTROL`, flipped: ``jobs`` carries
    :func:`~tinyattn.hw.job_layout.job_layout`, ``status``
    :func:`~tinyattn.hw.engine.status_layout`. Declared here rather than read from
    ``Engine(cfg)``, which also rejects configurations it cannot elaborate (e.g.
    ``vec_len < 16``), so that the map exists for every valid ``ClusterConfig``;
    ``tests/test_regmap.py`` checks that it equals the engine's own ports.
    """
    return wiring.Signature(
        {
            "jobs": Out(stream.Signature(job_layout(cfg))),
            "clear": Out(1),
            "done": In(1),
            "status": In(status_layout()),
            "busy_cycles": In(32),
            "stall_cycles": In(32),
            "idle_cycles": In(32),
            "macs": In(64),
        }
    )


def host_signature() -> wiring.Signature:
    """The register block's outputs to the host (a testbench, or an SoC around the cluster).

    ``console_valid`` is high for one cycle per byte written to ``HOST_CONSOLE``, with
    the byte on ``console_char``; there is no back-pressure. ``ended`` rises with the
    first write to ``HOST_EXIT`` and stays high until reset, ``exit_code`` holds the
    value written last.
    """
    return wiring.Signature(
        {
            "console_valid": Out(1),
            "console_char": Out(8),
            "ended": Out(1),
            "exit_code": Out(32),
        }
    )


def dma_control_signature(cfg: ClusterConfig) -> wiring.Signature:
    """The register block's side of :class:`~tinyattn.hw.dma.Dma`'s control ports."""
    return _flipped_subset(Dma, cfg, DMA_CONTROL)


def _flipped_subset(
    cls: type[wiring.Component], cfg: ClusterConfig, names: tuple[str, ...]
) -> wiring.Signature:
    # Only the signature is wanted: silence Amaranth's "created but never used" warning
    # before the constructor runs, so that it stays quiet when the constructor raises.
    component = cls.__new__(cls)
    component._MustUse__silence = True  # type: ignore[attr-defined]
    component.__init__(cfg)  # type: ignore[misc]
    members = component.signature.members
    return wiring.Signature({name: members[name].flip() for name in names})


def _port_shape(ports: wiring.Signature, path: str) -> tuple[Shape, Flow] | None:
    """Shape and flow (seen from the register block) of a dotted port path, else None."""
    parts = path.split(".")
    flat = {p: m for p, m in ports.members.flatten()}
    for cut in range(len(parts), 0, -1):
        member = flat.get(tuple(parts[:cut]))
        if member is None:
            continue
        if not member.is_port:
            return None
        shape = member.shape
        for name in parts[cut:]:
            if not isinstance(shape, data.StructLayout) or name not in shape.members:
                return None
            shape = shape[name].shape
        return Shape.cast(shape), member.flow
    return None


def parse_key(key: str) -> tuple[str, tuple[int, int] | None]:
    """Split a binding into its path and optional ``(lo, hi)`` bit slice."""
    match = _KEY.match(key)
    if not match:
        raise RegMapError(f"binding {key!r} is not of the form path[.path...][lo:hi]")
    lo, hi = match["lo"], match["hi"]
    return match["path"], (int(lo), int(hi)) if lo is not None else None


def _leaves(layout: data.Layout, prefix: str) -> Iterator[str]:
    for name, f in layout:
        if isinstance(f.shape, data.StructLayout):
            yield from _leaves(f.shape, f"{prefix}.{name}")
        else:
            yield f"{prefix}.{name}"


# ---------------------------------------------------------------------------- builder


class MapBuilder:
    """Places blocks at base offsets and validates them into a :class:`MemoryMap`.

    ``ports`` (a signature whose members are the register block's ``engine`` and
    ``dma`` interfaces, say) lets the builder check port bindings; ``internal`` declares
    the ``internal.<name>`` bindings.
    """

    def __init__(
        self,
        name: str,
        desc: str = "",
        *,
        ports: wiring.Signature | None = None,
        internal: dict[str, _Internal] | None = None,
    ) -> None:
        self.name = name
        self.desc = desc
        self.ports = ports
        self.internal = dict(INTERNAL if internal is None else internal)
        self._blocks: list[tuple[int, Block]] = []
        self._constants: list[Constant] = []

    def add(self, block: Block, base: int) -> MapBuilder:
        """Place ``block`` at byte offset ``base``."""
        self._blocks.append((base, block))
        return self

    def constant(self, name: str, value: int, desc: str) -> MapBuilder:
        """Add a firmware constant (emitted into the header as ``<MAP>_<NAME>``)."""
        self._constants.append(Constant(name, value, desc))
        return self

    # -- validation ------------------------------------------------------------------

    @staticmethod
    def _check_name(what: str, name: str) -> None:
        if not _NAME.match(name):
            raise RegMapError(f"{what} name {name!r}: must match [A-Z][A-Z0-9_]*")

    def _binding(self, where: str, key: str, width: int, driven: bool) -> None:
        """Check that ``key`` exists, flows the right way and is ``width`` bits wide.

        ``driven``: the field drives the binding (RW, W1P) rather than reading it.
        """
        path, sl = parse_key(key)
        head, _, rest = path.partition(".")
        if head == "internal":
            spec = self.internal.get(rest)
            if spec is None:
                raise RegMapError(f"{where}: unknown internal binding {key!r}")
            if (spec.kind == "sink") != driven:
                raise RegMapError(
                    f"{where}: internal {rest!r} is a {spec.kind}, the field "
                    f"{'drives' if driven else 'reads'} it"
                )
            bits = spec.width
        else:
            if self.ports is None:
                return
            found = _port_shape(self.ports, path)
            if found is None:
                raise RegMapError(f"{where}: binding {key!r} names no port of the register block")
            shape, flow = found
            if (flow == Flow.Out) != driven:
                raise RegMapError(
                    f"{where}: binding {key!r} is an {'output' if flow == Flow.Out else 'input'} "
                    f"of the register block, the field {'drives' if driven else 'reads'} it"
                )
            bits = shape.width
        if sl is not None:
            lo, hi = sl
            if not 0 <= lo < hi <= bits:
                raise RegMapError(f"{where}: slice [{lo}:{hi}] outside the {bits}-bit {path!r}")
            bits = hi - lo
        if bits != width:
            raise RegMapError(f"{where}: {width}-bit field bound to {bits}-bit {key!r}")

    def _check_field(self, where: str, f: Field) -> None:
        self._check_name("field", f.name)
        if not isinstance(f.access, Access):
            raise RegMapError(f"{where}: access {f.access!r} is not an Access")
        if f.width < 1 or f.offset < 0 or f.offset + f.width > REG_BITS:
            raise RegMapError(
                f"{where}: bits [{f.offset + f.width - 1}:{f.offset}] do not fit a "
                f"{REG_BITS}-bit register"
            )
        if not 0 <= f.reset < 1 << f.width:
            raise RegMapError(f"{where}: reset value {f.reset:#x} does not fit {f.width} bits")
        if f.access is Access.W1P and f.reset:
            raise RegMapError(f"{where}: a W1P field resets to 0, not {f.reset:#x}")
        if f.values and not f.enum:
            raise RegMapError(f"{where}: named values need an enum name")
        if f.enum:
            self._check_name(f"{where} enum", f.enum)
            if not f.values:
                raise RegMapError(f"{where}: enum {f.enum} has no values")
        names = set()
        for v in f.values:
            self._check_name(f"{where} value", v.name)
            if v.name in names:
                raise RegMapError(f"{where}: value name {v.name} twice")
            names.add(v.name)
            if not 0 <= v.value < 1 << f.width:
                raise RegMapError(
                    f"{where}: value {v.name} = {v.value} does not fit {f.width} bits"
                )
        if f.hw is None:
            if f.access is not Access.RW:
                raise RegMapError(f"{where}: a {f.access.value} field needs a binding (hw)")
            return
        if f.hw == "const":
            if f.access is not Access.RO:
                raise RegMapError(f"{where}: only RO fields can be constants")
            return
        self._binding(where, f.hw, f.width, driven=f.access in (Access.RW, Access.W1P))

    def build(self) -> MemoryMap:
        """Validate and place everything; raises :class:`RegMapError` on the first fault."""
        self._check_name("map", self.name.upper())
        placed: list[MappedRegister] = []
        block_names: set[str] = set()
        spans: list[tuple[int, int, str]] = []
        sinks: dict[str, str] = {}
        for base, block in self._blocks:
            self._check_name("block", block.name)
            if block.name in block_names:
                raise RegMapError(f"block {block.name} added twice")
            block_names.add(block.name)
            if block.span <= 0 or block.span % WORD_BYTES:
                raise RegMapError(f"block {block.name}: span {block.span:#x} is not whole words")
            if base < 0 or base % WORD_BYTES:
                raise RegMapError(f"block {block.name}: base {base:#x} is not word aligned")
            for lo, hi, other in spans:
                if base < hi and lo < base + block.span:
                    raise RegMapError(
                        f"block {block.name} [{base:#x}, {base + block.span:#x}) overlaps "
                        f"block {other} [{lo:#x}, {hi:#x})"
                    )
            spans.append((base, base + block.span, block.name))
            if not block.registers:
                raise RegMapError(f"block {block.name} has no registers")
            offsets: dict[int, str] = {}
            reg_names: set[str] = set()
            pulse_names: set[str] = set()
            offset = 0
            for reg in block.registers:
                where = f"{block.name}_{reg.name}"
                self._check_name("register", reg.name)
                if reg.name in reg_names:
                    raise RegMapError(f"{where}: register name used twice in block {block.name}")
                reg_names.add(reg.name)
                offset = offset if reg.offset is None else reg.offset
                if offset % WORD_BYTES:
                    raise RegMapError(f"{where}: offset {offset:#x} is not word aligned")
                if not 0 <= offset < block.span:
                    raise RegMapError(
                        f"{where}: offset {offset:#x} outside the block's span {block.span:#x}"
                    )
                if offset in offsets:
                    raise RegMapError(
                        f"{where}: offset {offset:#x} already holds {block.name}_{offsets[offset]}"
                    )
                offsets[offset] = reg.name
                if not reg.fields:
                    raise RegMapError(f"{where}: register has no fields")
                used = 0
                field_names: set[str] = set()
                for f in reg.fields:
                    fw = f"{where}.{f.name}"
                    self._check_field(fw, f)
                    if f.name in field_names:
                        raise RegMapError(f"{fw}: field name used twice")
                    field_names.add(f.name)
                    if used & f.mask:
                        other = next(g for g in reg.fields if g.mask & f.mask and g is not f)
                        raise RegMapError(f"{fw}: bits {f.bits} overlap field {other.name}")
                    used |= f.mask
                    if f.access is Access.W1P:
                        if f.name in pulse_names:
                            raise RegMapError(f"{fw}: W1P field name used twice in the block")
                        pulse_names.add(f.name)
                    if f.access in (Access.RW, Access.W1P) and f.hw is not None:
                        if f.hw in sinks:
                            raise RegMapError(f"{fw}: {f.hw!r} is already driven by {sinks[f.hw]}")
                        sinks[f.hw] = fw
                actions = (
                    (reg.read_action, "sink"),
                    (reg.write_action, "sink"),
                    (reg.stall_while, "source"),
                )
                for key, kind in actions:
                    if key is None:
                        continue
                    path, _ = parse_key(key)
                    spec = self.internal.get(path.removeprefix("internal."))
                    if not path.startswith("internal.") or spec is None or spec.kind != kind:
                        raise RegMapError(f"{where}: {key!r} is not an internal one-bit {kind}")
                    if spec.width != 1:
                        raise RegMapError(f"{where}: {key!r} is not one bit wide")
                placed.append(MappedRegister(block, reg, base, offset))
                offset += WORD_BYTES
        if not placed:
            raise RegMapError(f"map {self.name} has no blocks")
        placed.sort(key=lambda r: r.address)
        end = max(hi for _, hi, _ in spans)
        size = 1 << max(end - 1, 1).bit_length()
        enums: dict[str, tuple[EnumValue, ...]] = {}
        for reg in placed:
            for f in reg.fields:
                if f.enum and enums.setdefault(f.enum, f.values) != f.values:
                    raise RegMapError(
                        f"{reg.name}.{f.name}: enum {f.enum} defined twice, differently"
                    )
        const_names: set[str] = set()
        for c in self._constants:
            self._check_name("constant", c.name)
            if c.name in const_names:
                raise RegMapError(f"constant {c.name} defined twice")
            const_names.add(c.name)
            if not 0 <= c.value < 1 << 32:
                raise RegMapError(f"constant {c.name} = {c.value} does not fit 32 bits")
        return MemoryMap(
            self.name,
            self.desc,
            tuple(sorted(self._blocks, key=lambda b: b[0])),
            tuple(placed),
            tuple(self._constants),
            size,
        )


# ---------------------------------------------------------------------------- the map

_JOB_ERROR_DESC = {
    "NONE": "the job succeeded",
    "UNKNOWN_OP": "op is not GEMM or ATTENTION, or a flag the op does not have is set",
    "ZERO_DIM": "m, n, k or (attention) heads is 0",
    "DIM_LIMIT": "a dimension above max_dim; attention k > vec_len or n > max_seq",
    "GRANULE": "n or k not a multiple of 4; attention n not a multiple of n_pe",
    "MISALIGNED": "an address, stride or head stride of a used tensor is not a multiple of 4",
    "OUT_OF_RANGE": "a used tensor reaches beyond L1",
}
_OP_DESC = {"GEMM": "Y = epilogue(X . W^T + b)", "ATTENTION": "multi-head attention with ITAMax"}
_FLAG_DESC = {
    "RELU": "ReLU on the result",
    "RESIDUAL": "add the residual R (m, n) at d_addr",
    "AFFINE": "per-channel affine (NoNorm) from the parameter records",
    "PER_ROW": "parameters follow the rows of Y instead of its columns",
}
_DMA_ERROR_DESC = {
    "NONE": "no error",
    "ZERO_SIZE": "rows == 0 or row_bytes == 0",
    "MISALIGNED": "an address, row_bytes or a stride is not a multiple of 4",
    "L1_RANGE": "the L1 rectangle reaches beyond L1",
    "L2_RANGE": "the L2 rectangle reaches beyond 2**l2_addr_bits",
}
_DIRECTION_DESC = {"L2_TO_L1": "read L2, write L1", "L1_TO_L2": "read L1, write L2"}


def _enum_values(cls: type[enum.IntEnum], descs: dict[str, str]) -> tuple[EnumValue, ...]:
    if set(descs) != {m.name for m in cls}:
        raise RegMapError(f"descriptions of {cls.__name__} do not match its members")
    return tuple(EnumValue(m.name, int(m.value), descs[m.name]) for m in cls)


def _flag_values() -> tuple[EnumValue, ...]:
    values = tuple(
        EnumValue(name.removeprefix("FLAG_"), getattr(_job, name), _FLAG_DESC[name[5:]])
        for name in _job.__all__
        if name.startswith("FLAG_") and name[5:] not in _job.ATTENTION_FLAGS
    )
    if sum(v.value for v in values) != FLAGS_ALL:
        raise RegMapError("the FLAG_* constants of hw/job.py do not add up to FLAGS_ALL")
    return tuple(sorted(values, key=lambda v: v.value))


def _cluster_constants(cfg: ClusterConfig) -> list[tuple[str, int, str]]:
    e, mem, ic, d = cfg.engine, cfg.memory, cfg.interconnect, cfg.dma
    return [
        ("N_PE", e.n_pe, "dot-product units (also the ITAMax group)"),
        ("VEC_LEN", e.vec_len, "int8 lanes per unit"),
        ("ACC_BITS", e.acc_bits, "accumulator width in bits"),
        ("TILE_M", e.tile_m, "rows of X (queries) kept on chip per tile"),
        ("MAX_SEQ", e.max_seq, "most keys of an attention job"),
        ("MAX_DIM", e.max_dim, "largest m, n or k of a job"),
        ("JOB_QUEUE_DEPTH", e.job_queue_depth, "jobs the engine queues while one runs"),
        ("N_BANKS", mem.n_banks, "L1 banks (32-bit, word-interleaved)"),
        ("BANK_WORDS", mem.bank_words, "32-bit words per L1 bank"),
        ("N_CORES", ic.n_cores, "core ports of the cluster"),
        ("DMA_BITS", d.dma_bits, "width of the DMA's L2 port in bits"),
        ("DMA_QUEUE_DEPTH", d.queue_depth, "descriptors the DMA queues while one runs"),
        ("L2_ADDR_BITS", d.l2_addr_bits, "L2 byte address bits of the DMA"),
    ]


def _config_hash(cfg: ClusterConfig) -> int:
    return int(cfg.stable_hash()[:8], 16)


@functools.lru_cache(maxsize=32)
def register_map(cfg: ClusterConfig) -> MemoryMap:
    """The register map of the cluster peripherals for ``cfg`` (validated, cached).

    Blocks and byte offsets from the register block's base: ``CLUSTER`` 0x000
    (read-only configuration), ``ENGINE`` 0x100, ``DMA`` 0x200, ``EVENTS`` 0x300.
    """
    ports = wiring.Signature(
        {
            "engine": Out(engine_control_signature(cfg)),
            "dma": Out(dma_control_signature(cfg)),
            "host": Out(host_signature()),
            "seq": Out(sequencer_control_signature()),
        }
    )
    major, minor = REGMAP_VERSION
    b = MapBuilder(
        "tinyattn",
        "tinyattn cluster peripherals: configuration, attention engine, DMA, events",
        ports=ports,
    )
    b.add(_cluster_block(cfg), 0x000)
    b.add(_engine_block(ports), 0x100)
    b.add(_dma_block(ports), 0x200)
    b.add(_events_block(), 0x300)
    b.add(_host_block(), 0x400)
    b.add(_seq_block(ports), 0x500)
    b.constant("REGMAP_VERSION_MAJOR", major, "register map major version")
    b.constant("REGMAP_VERSION_MINOR", minor, "register map minor version")
    b.constant("CONFIG_HASH", _config_hash(cfg), "CLUSTER_CONFIG_HASH of this configuration")
    for name, value, desc in _cluster_constants(cfg):
        b.constant(name, value, desc)
    b.constant("L1_BYTES", cfg.memory.size_bytes, "L1 (TCDM) capacity in bytes")
    b.constant(
        "L1_BASE",
        L1_BASE,
        "core address of L1 byte 0; engine jobs and DMA descriptors use L1 offsets",
    )
    b.constant("REGS_BASE", PERIPH_BASE, "core address of this register block")
    b.constant("RISCV_CORES", cfg.core.count, "core ports 0 .. RISCV_CORES-1 carry a PicoRV32")
    b.constant("PRIVATE_BASE", PRIVATE_BASE, "core address of each core's private memory")
    b.constant("PRIVATE_BYTES", cfg.core.private_bytes, "private memory per core in bytes")
    b.constant("STACK_BYTES", cfg.core.stack_bytes, "stack reserved at the top of private memory")
    b.constant("DMA_ALIGN_BYTES", ALIGN_BYTES, "DMA addresses, row lengths, strides: multiple")
    b.constant("PARAM_RECORD_BYTES", PARAM_RECORD_BYTES, "bytes per GEMM parameter record")
    mm = b.build()
    _check_payload_coverage(mm, ports)
    return mm


RO, RW, W1P, W1C = Access.RO, Access.RW, Access.W1P, Access.W1C


class _Fields:
    """Makes fields whose width is the width of their binding."""

    def __init__(self, ports: wiring.Signature) -> None:
        self.ports = ports

    def width(self, key: str) -> int:
        path, sl = parse_key(key)
        if sl is not None:
            return sl[1] - sl[0]
        if path.startswith("internal."):
            return INTERNAL[path.removeprefix("internal.")].width
        found = _port_shape(self.ports, path)
        if found is None:
            raise RegMapError(f"register_map: binding {key!r} names no port")
        return found[0].width

    def __call__(
        self,
        name: str,
        offset: int,
        access: Access,
        hw: str,
        desc: str,
        values: tuple[EnumValue, ...] = (),
        flags: bool = False,
        enum: str = "",
    ) -> Field:
        return Field(name, offset, self.width(hw), access, 0, desc, hw, values, flags, enum)


def _const(name: str, value: int, desc: str) -> Register:
    return Register(name, desc, (Field("VALUE", 0, REG_BITS, RO, value, desc, "const"),))


def _cluster_block(cfg: ClusterConfig) -> Block:
    major, minor = REGMAP_VERSION
    version = (
        Field("MINOR", 0, 16, RO, minor, "minor version (additions)", "const"),
        Field("MAJOR", 16, 16, RO, major, "major version (moves)", "const"),
    )
    return Block(
        "CLUSTER",
        "Read-only configuration of this cluster, from the ClusterConfig it was generated for.",
        (
            Register("VERSION", "register map version", version),
            _const(
                "CONFIG_HASH",
                _config_hash(cfg),
                "first 8 hex digits of ClusterConfig.stable_hash(); compare with "
                "TINYATTN_CONFIG_HASH to check that firmware and hardware match",
            ),
            *(_const(name, value, desc) for name, value, desc in _cluster_constants(cfg)),
        ),
    )


def _engine_block(ports: wiring.Signature) -> Block:
    fld = _Fields(ports)
    pending = "internal.engine_push_pending"
    job = "engine.jobs.payload"

    def staging(name: str, desc: str, *fields: Field, offset: int | None = None) -> Register:
        return Register(name, desc, fields, offset=offset, stall_while=pending)

    def one(name: str, key: str, field_name: str, desc: str) -> Register:
        return staging(name, desc, fld(field_name, 0, RW, f"{job}.{key}", desc))

    def requant(name: str, key: str, what: str) -> Register:
        return staging(
            name,
            f"{what} requantization (attention jobs)",
            fld("MULT", 0, RW, f"{job}.{key}.mult", "multiplier, uint8"),
            fld("SHIFT", 8, RW, f"{job}.{key}.shift", "right shift, 0..31"),
            fld("ADD", 16, RW, f"{job}.{key}.add", "offset after the shift, int8 bit pattern"),
        )

    def counter(name: str, hw: str, desc: str, read_action: str | None = None) -> Register:
        return Register(name, desc, (fld("COUNT", 0, RO, hw, desc),), read_action=read_action)

    tensors = {
        "A": "X (GEMM) / Q (attention)",
        "B": "W^T (GEMM) / K (attention)",
        "C": "Y (GEMM) / O (attention)",
        "D": "R, the residual (GEMM) / V^T (attention)",
    }
    tensor_regs = []
    for t, what in tensors.items():
        lt = t.lower()
        tensor_regs += [
            one(f"JOB_{t}_ADDR", f"{lt}_addr", "ADDR", f"L1 byte address of {what}"),
            one(f"JOB_{t}_STRIDE", f"{lt}_stride", "STRIDE", f"row stride of {what}, bytes"),
            one(f"JOB_{t}_HSTRIDE", f"{lt}_hstride", "HSTRIDE", f"head stride of {what}, bytes"),
        ]
    status = (
        fld("BUSY", 0, RO, "engine.status.busy", "a job runs, one is queued, or a clear drains"),
        fld(
            "PUSH_PENDING",
            1,
            RO,
            pending,
            "a pushed job waits for room in the queue; writes to JOB_PUSH and the JOB_* "
            "staging registers are held (no gnt) meanwhile",
        ),
        fld(
            "ERROR_CODE",
            4,
            RO,
            "engine.status.error",
            "JobError of the last finished job (0: it succeeded)",
            values=_enum_values(JobError, _JOB_ERROR_DESC),
            enum="JOB_ERROR",
        ),
        fld(
            "QUEUED",
            8,
            RO,
            "engine.status.queued",
            "jobs waiting in the queue (the running one not counted)",
        ),
    )
    clear = fld(
        "CLEAR",
        0,
        W1P,
        "engine.clear",
        "soft clear: drops the queued jobs, the running one and a pending push",
    )
    push = fld(
        "PUSH",
        0,
        W1P,
        "internal.engine_push",
        "push the staged job; with the queue full it stays pending (STATUS.PUSH_PENDING) "
        "until the engine takes it",
    )
    op = fld(
        "OP",
        0,
        RW,
        f"{job}.op",
        "job kind (Op); 0 and 3 are rejected",
        values=_enum_values(Op, _OP_DESC),
        enum="OP",
    )
    flags = fld(
        "FLAGS",
        8,
        RW,
        f"{job}.flags",
        "GEMM epilogue flags; attention: 8 = PER_HEAD (qk/av per head from p_addr) or 0",
        values=_flag_values(),
        flags=True,
        enum="FLAG",
    )
    heads = fld("HEADS", 16, RW, f"{job}.heads", "attention heads (>= 1)")
    res = (
        fld("Y_MULT", 0, RW, f"{job}.res_y_mult", "multiplier of the result"),
        fld("R_MULT", 8, RW, f"{job}.res_r_mult", "multiplier of the residual"),
        fld("SHIFT", 16, RW, f"{job}.res_shift", "right shift of the sum"),
    )
    return Block(
        "ENGINE",
        "The attention engine: job staging registers, the push into its job queue, status "
        "and performance counters.",
        (
            Register("STATUS", "engine status", status),
            Register("CTRL", "engine control", (clear,)),
            Register(
                "JOB_PUSH", "push the staged job into the queue", (push,), stall_while=pending
            ),
            counter("JOBS_DONE", "internal.jobs_done", "done events (jobs finished or rejected)"),
            counter("BUSY_CYCLES", "engine.busy_cycles", "cycles with a job running"),
            counter(
                "STALL_CYCLES",
                "engine.stall_cycles",
                "busy cycles in which the array had work but issued no beat",
            ),
            counter("IDLE_CYCLES", "engine.idle_cycles", "cycles with no job running"),
            counter(
                "MACS_LO",
                "engine.macs[0:32]",
                "useful MACs of finished jobs, bits 31:0; a read latches bits 63:32 into MACS_HI",
                read_action="internal.macs_latch",
            ),
            counter(
                "MACS_HI",
                "internal.macs_hi",
                "useful MACs, bits 63:32, as latched by the last read of MACS_LO",
            ),
            # Staging starts at a round offset, after room for more status registers.
            staging(
                "JOB_OP", "job kind, epilogue flags, head count", op, flags, heads, offset=0x40
            ),
            one("JOB_M", "m", "M", "rows of X / queries"),
            one("JOB_N", "n", "N", "output channels (GEMM) / keys (attention)"),
            one("JOB_K", "k", "K", "reduction length (GEMM) / head dimension (attention)"),
            *tensor_regs,
            one("JOB_P_ADDR", "p_addr", "ADDR", "L1 byte address of the parameter records"),
            requant("JOB_QK", "qk", "Q.K^T"),
            requant("JOB_AV", "av", "P.V"),
            staging("JOB_RES", "residual add (GEMM with RESIDUAL)", *res),
            staging(
                "JOB_AFF",
                "per-channel affine (GEMM with AFFINE)",
                fld("SHIFT", 0, RW, f"{job}.aff_shift", "right shift after x * gamma + beta"),
            ),
        ),
    )


def _dma_block(ports: wiring.Signature) -> Block:
    fld = _Fields(ports)
    pending = "internal.dma_push_pending"
    cmd = "dma.cmd.payload"

    def staging(
        name: str,
        key: str,
        field_name: str,
        desc: str,
        offset: int | None = None,
        values: tuple[EnumValue, ...] = (),
        enum: str = "",
    ) -> Register:
        f = fld(field_name, 0, RW, f"{cmd}.{key}", desc, values=values, enum=enum)
        return Register(name, desc, (f,), offset=offset, stall_while=pending)

    status = (
        fld("BUSY", 0, RO, "dma.busy", "a transfer runs, one is queued, or a clear drains"),
        fld(
            "PUSH_PENDING",
            1,
            RO,
            pending,
            "a pushed descriptor waits for room in the queue; writes to PUSH and the staging "
            "registers are held (no gnt) meanwhile",
        ),
        fld(
            "ERROR",
            2,
            RO,
            "dma.error",
            "sticky: a descriptor was rejected since the last CLEAR or ERROR_ACK",
        ),
        fld(
            "ERROR_CODE",
            4,
            RO,
            "dma.error_code",
            "DmaError of the first rejected descriptor since then",
            values=_enum_values(DmaError, _DMA_ERROR_DESC),
            enum="DMA_ERROR",
        ),
        fld(
            "QUEUE_LEVEL",
            8,
            RO,
            "dma.queue_level",
            "descriptors waiting in the queue (the running one not counted)",
        ),
    )
    ctrl = (
        fld(
            "CLEAR",
            0,
            W1P,
            "dma.clear",
            "soft clear: drops the queue, the running transfer and a pending push; clears "
            "the error",
        ),
        fld("ERROR_ACK", 1, W1P, "dma.error_ack", "clears STATUS.ERROR and STATUS.ERROR_CODE"),
    )
    push = fld(
        "PUSH",
        0,
        W1P,
        "internal.dma_push",
        "push the staged descriptor; with the queue full it stays pending "
        "(STATUS.PUSH_PENDING) until the DMA takes it",
    )
    done = fld(
        "COUNT",
        0,
        RO,
        "internal.dma_done_count",
        "done events (transfers completed or rejected)",
    )
    return Block(
        "DMA",
        "The 2-D L2 <-> L1 DMA: descriptor staging registers, the push into its queue, "
        "status and a completion counter.",
        (
            Register("STATUS", "DMA status", status),
            Register("CTRL", "DMA control", ctrl),
            Register(
                "PUSH", "push the staged descriptor into the queue", (push,), stall_while=pending
            ),
            Register("DONE_COUNT", done.desc, (done,)),
            # Staging starts at a round offset, after room for more status registers.
            staging("L2_ADDR", "l2_addr", "ADDR", "L2 byte address of row 0", offset=0x20),
            staging("L1_ADDR", "l1_addr", "ADDR", "L1 byte address of row 0 (from the L1 base)"),
            staging("ROW_BYTES", "row_bytes", "BYTES", "bytes per row"),
            staging("ROWS", "rows", "ROWS", "number of rows"),
            staging("L2_STRIDE", "l2_stride", "STRIDE", "bytes from one row start to the next, L2"),
            staging("L1_STRIDE", "l1_stride", "STRIDE", "bytes from one row start to the next, L1"),
            staging(
                "DIRECTION",
                "direction",
                "DIRECTION",
                "transfer direction",
                values=_enum_values(Direction, _DIRECTION_DESC),
                enum="DMA_DIRECTION",
            ),
        ),
    )


#: The event flags, in bit order: (name, binding, description).
EVENTS = (
    ("ENGINE_DONE", "internal.engine_done", "an engine job finished or was rejected"),
    ("ENGINE_ERROR", "internal.engine_error", "an engine job was rejected"),
    ("DMA_DONE", "internal.dma_done", "a DMA transfer completed or was rejected"),
    ("DMA_ERROR", "internal.dma_error", "a DMA descriptor was rejected"),
    ("BUS_ERROR", "internal.bus_error", "an access to an unmapped register address"),
    ("SEQ_DONE", "seq.done", "the command sequencer stopped: its list ended, or an error"),
)


def _events_block() -> Block:
    status = tuple(Field(n, i, 1, W1C, 0, d, hw) for i, (n, hw, d) in enumerate(EVENTS))
    enable = tuple(Field(n, i, 1, RW, 0, f"enable {n}") for i, (n, _, _) in enumerate(EVENTS))
    return Block(
        "EVENTS",
        "Event flags and the interrupt line: irq = OR of (IRQ_STATUS & IRQ_ENABLE).",
        (
            Register(
                "IRQ_STATUS",
                "sticky event flags; write 1 to clear (an event in the same cycle wins)",
                status,
            ),
            Register("IRQ_ENABLE", "interrupt enables, one per IRQ_STATUS flag", enable),
        ),
    )


def _host_block() -> Block:
    return Block(
        "HOST",
        "The host side of a run: a console and the end-of-run register. In simulation "
        "the testbench collects the console and stops at HOST_EXIT; in an SoC they are "
        "the cluster's console_* and ended/exit_code ports.",
        (
            Register(
                "CONSOLE",
                "console output: each write sends the byte CHAR",
                (Field("CHAR", 0, 8, RW, 0, "the byte", "host.console_char"),),
                write_action="internal.console_write",
            ),
            Register(
                "EXIT",
                "end of run: a write ends the run with exit code CODE (0 = success)",
                (Field("CODE", 0, REG_BITS, RW, 0, "the exit code", "host.exit_code"),),
                write_action="internal.exit_write",
            ),
        ),
    )


_SEQ_ERROR_DESC = {
    "NONE": "the list reached END (or none ran yet)",
    "BAD_COMMAND": "an unknown op, a WRITE of no words, a misaligned register offset",
    "BAD_ADDRESS": "a list, jump or stamp address outside L1 or misaligned",
    "TIMEOUT": "a WAIT took longer than WAIT_LIMIT cycles",
    "HW_ERROR": "an engine job or a DMA descriptor was rejected while the list ran",
    "ABORTED": "CTRL.ABORT",
}


def _seq_block(ports: wiring.Signature) -> Block:
    fld = _Fields(ports)
    status = (
        fld("BUSY", 0, RO, "seq.busy", "a command list runs"),
        fld(
            "ERROR",
            4,
            RO,
            "seq.error",
            "why the last list stopped (until the next START)",
            values=_enum_values(SeqError, _SEQ_ERROR_DESC),
            enum="SEQ_ERROR",
        ),
    )
    ctrl = (
        fld("START", 0, W1P, "seq.start", "run the list at LIST (ignored while BUSY)"),
        fld("ABORT", 1, W1P, "seq.abort", "stop the running list after its bus access"),
    )

    def word(name: str, key: str, desc: str, reset: int = 0) -> Register:
        f = Field("VALUE", 0, REG_BITS, RW, reset, desc, f"seq.{key}")
        return Register(name, desc, (f,))

    return Block(
        "SEQ",
        "The command sequencer: runs a list of register writes and waits from L1 "
        "(docs/sequencer.md).",
        (
            Register("STATUS", "sequencer status", status),
            Register("CTRL", "sequencer control", ctrl),
            word("LIST", "list_addr", "L1 byte address of the list's first command"),
            word("JOB_BASE", "job_base", "WAIT base JOB_BASE: set to the engine ticket count"),
            word("DMA_BASE", "dma_base", "WAIT base DMA_BASE: set to the DMA ticket count"),
            word(
                "WAIT_LIMIT",
                "wait_limit",
                "most cycles one WAIT may take before TIMEOUT (0: no limit)",
                reset=1 << 20,
            ),
            Register(
                "PC",
                "L1 address of the command that ran last (where the list stopped)",
                (fld("ADDR", 0, RO, "seq.pc", "L1 byte address"),),
            ),
        ),
    )


def _check_payload_coverage(mm: MemoryMap, ports: wiring.Signature) -> None:
    """Every leaf of the job and descriptor payloads is driven by exactly one RW field."""
    driven = {f.hw for _, f in mm.fields() if f.access is Access.RW and f.hw}
    flat = dict(ports.members.flatten())
    for stream_path in ("engine.jobs", "dma.cmd"):
        member = flat[(*stream_path.split("."), "payload")]
        leaves = set(_leaves(data.Layout.cast(member.shape), f"{stream_path}.payload"))
        missing = sorted(leaves - driven)
        if missing:
            raise RegMapError(f"no staging register drives {', '.join(missing)}")
