"""Memory-mapped registers, described once: fields, registers, blocks and the map builder.

A generic description, independent of what is emitted from it and of the cluster; the
cluster's own map is :mod:`tinyattn.hw.cluster_registers`. In the spirit of
amaranth-soc's CSR registers:

- :class:`Field`: a bit range of a register with an :class:`Access` mode, a reset
  value, a description and a *binding* (``hw``) that says where the field's value
  comes from or goes to in the hardware;
- :class:`Register`: a 32-bit word made of fields;
- :class:`Block`: registers at word offsets inside a block of ``span`` bytes;
- :class:`MapBuilder`: places blocks at base offsets and validates the whole, giving a
  :class:`MemoryMap` (addresses are byte offsets from the register block's base).

Bindings (``Field.hw``), typed objects
--------------------------------------
- :data:`CONSTANT`: a read-only constant equal to the field's reset value;
- a :class:`PortBinding`: a member of the register block's ports, walked through
  signatures and struct layouts by attribute from :class:`Ports`, e.g.
  ``ports.engine.jobs.payload.qk.mult``; slicing selects part of a wider port
  (``ports.engine.macs[0:32]``);
- an :class:`InternalSignal`: a signal of the register block's own logic (push state,
  counters, events) with its width and whether fields read or drive it; the map
  builder is given the ones the block has.

An ``RW`` field may drive an output (a staging register drives a payload field), an
``RO`` field reads an input, a constant or an internal source, a ``W1P`` field pulses
an output or an internal sink, a ``W1C`` field is set by an input or internal event.
The builder checks every binding: it is declared, flows the right way and has the
field's width.
"""

from __future__ import annotations

import copy
import enum
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from amaranth.hdl import Shape, ShapeLike
from amaranth.lib import data, wiring
from amaranth.lib.wiring import Flow

__all__ = [
    "CONSTANT",
    "REG_BITS",
    "WORD_BYTES",
    "Access",
    "Binding",
    "Block",
    "Constant",
    "ConstantBinding",
    "EnumValue",
    "Field",
    "InternalSignal",
    "MapBuilder",
    "MappedRegister",
    "MemoryMap",
    "PortBinding",
    "Ports",
    "RegMapError",
    "Register",
    "SignalKind",
]

#: Registers are 32-bit words at word-aligned byte offsets.
REG_BITS = 32
WORD_BYTES = REG_BITS // 8

_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


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
    ``TINYATTN_JOB_ERROR_<VALUE>``). ``hw`` is the field's :data:`Binding` (see the module
    docstring).
    """

    name: str
    offset: int
    width: int
    access: Access
    reset: int = 0
    desc: str = ""
    hw: Binding | None = None
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
    the previous register of the block. ``read_action`` is an internal one-bit sink
    pulsed by every read (e.g. a latch), ``write_action`` one pulsed by every write (in
    the cycle of the write's ``gnt``). ``stall_while`` is an internal one-bit source:
    while it is high, writes to this register are held (``gnt`` stays low).
    """

    name: str
    desc: str
    fields: tuple[Field, ...]
    offset: int | None = None
    read_action: InternalSignal | None = None
    write_action: InternalSignal | None = None
    stall_while: InternalSignal | None = None

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
    """The validated map. ``registers`` are in address order; ``size`` is a power of two;
    ``internal`` are the internal signals the map was built with."""

    name: str
    desc: str
    blocks: tuple[tuple[int, Block], ...]
    registers: tuple[MappedRegister, ...]
    constants: tuple[Constant, ...]
    size: int
    internal: tuple[InternalSignal, ...] = ()

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
class ConstantBinding:
    """The binding of a read-only constant: the field reads its reset value."""

    def __str__(self) -> str:
        return "const"


#: The one :class:`ConstantBinding`.
CONSTANT = ConstantBinding()


class SignalKind(enum.Enum):
    """Whether fields read an :class:`InternalSignal` or drive it."""

    SOURCE = "source"  #: read by fields (and by ``Register.stall_while``)
    SINK = "sink"  #: driven by fields (and pulsed by register actions)


@dataclass(frozen=True)
class InternalSignal:
    """A signal of the register block's own logic that fields and registers bind to."""

    name: str
    width: int
    kind: SignalKind
    desc: str

    def __str__(self) -> str:
        return f"internal.{self.name}"


@dataclass(frozen=True)
class PortBinding:
    """A port member of the register block, a struct field inside it, or a bit slice.

    ``path`` names the member and the fields inside it (``("engine", "jobs", "payload",
    "qk", "mult")``); ``bits`` is ``(lo, hi)`` for a slice. ``shape`` and ``flow`` (seen
    from the register block) come from the signature; equality is by path and slice.
    Made by :class:`Ports`; attribute access walks into a struct layout, slicing selects
    bits (``ports.engine.macs[0:32]``).
    """

    path: tuple[str, ...]
    bits: tuple[int, int] | None
    shape: ShapeLike = field(compare=False)
    flow: Flow = field(compare=False)

    @property
    def width(self) -> int:
        """Bits of the binding (of the slice, if sliced)."""
        if self.bits is not None:
            return self.bits[1] - self.bits[0]
        return Shape.cast(self.shape).width

    def __getattr__(self, name: str) -> PortBinding:
        shape = self.__dict__.get("shape")
        if name.startswith("_") or shape is None:
            raise AttributeError(name)
        if self.bits is not None:
            raise RegMapError(f"{self}: a bit slice has no field {name!r}")
        if not isinstance(shape, data.StructLayout) or name not in shape.members:
            raise RegMapError(f"binding {'.'.join((*self.path, name))!r} names no port")
        return PortBinding((*self.path, name), None, shape[name].shape, self.flow)

    def below(self, outer: tuple[str, ...]) -> tuple[str, ...] | None:
        """The path of this binding below ``outer`` (``("qk", "mult")`` for
        ``engine.jobs.payload.qk.mult`` below ``("engine", "jobs", "payload")``), or
        ``None`` when it is not strictly below it or is a bit slice."""
        n = len(outer)
        if self.bits is not None or len(self.path) <= n or self.path[:n] != outer:
            return None
        return self.path[n:]

    def __getitem__(self, bits: slice) -> PortBinding:
        width = Shape.cast(self.shape).width
        lo, hi = bits.start, bits.stop
        if self.bits is not None or bits.step is not None or lo is None or hi is None:
            raise RegMapError(f"{self}: slice with [lo:hi] once, e.g. [0:32]")
        if not 0 <= lo < hi <= width:
            raise RegMapError(f"slice [{lo}:{hi}] outside the {width}-bit {self}")
        return PortBinding(self.path, (lo, hi), self.shape, self.flow)

    def __str__(self) -> str:
        text = ".".join(self.path)
        return text if self.bits is None else f"{text}[{self.bits[0]}:{self.bits[1]}]"


#: What a field binds to (``Field.hw``).
Binding = ConstantBinding | InternalSignal | PortBinding


class Ports:
    """The register block's ports, for making :class:`PortBinding` s by attribute.

    ``Ports(signature).engine.jobs`` walks the signature's members (flows as seen from
    the register block); a port member gives a :class:`PortBinding`. A name that is no
    member raises :class:`RegMapError`.
    """

    def __init__(self, signature: wiring.Signature) -> None:
        self._members = dict(signature.members.flatten())
        self._path: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Ports | PortBinding:
        if name.startswith("_"):
            raise AttributeError(name)
        path = (*self._path, name)
        member = self._members.get(path)
        if member is None:
            raise RegMapError(f"binding {'.'.join(path)!r} names no port of the register block")
        if member.is_port:
            return PortBinding(path, None, member.shape, member.flow)
        inner = copy.copy(self)
        inner._path = path
        return inner


def payload_leaves(stream_binding: Ports) -> Iterator[PortBinding]:
    """Every leaf field of a stream's payload (``ports.engine.jobs``), as bindings."""
    payload = stream_binding.payload
    assert isinstance(payload, PortBinding), payload

    def walk(binding: PortBinding) -> Iterator[PortBinding]:
        if isinstance(binding.shape, data.StructLayout):
            for name in binding.shape.members:
                yield from walk(getattr(binding, name))
        else:
            yield binding

    yield from walk(payload)


# ---------------------------------------------------------------------------- builder


class MapBuilder:
    """Places blocks at base offsets and validates them into a :class:`MemoryMap`.

    ``internal`` are the register block's own signals that fields and registers may
    bind to; a binding to any other :class:`InternalSignal` is an error.
    """

    def __init__(
        self, name: str, desc: str = "", *, internal: Iterable[InternalSignal] = ()
    ) -> None:
        self.name = name
        self.desc = desc
        self.internal = tuple(internal)
        names = [s.name for s in self.internal]
        if len(set(names)) != len(names):
            raise RegMapError(f"map {name}: internal signal names repeat: {names}")
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

    def _binding(self, where: str, binding: Binding, width: int, driven: bool) -> None:
        """Check that ``binding`` is declared, flows the right way and is ``width`` bits.

        ``driven``: the field drives the binding (RW, W1P) rather than reading it.
        """
        if isinstance(binding, InternalSignal):
            if binding not in self.internal:
                raise RegMapError(f"{where}: unknown internal binding {str(binding)!r}")
            if (binding.kind is SignalKind.SINK) != driven:
                raise RegMapError(
                    f"{where}: internal {binding.name!r} is a {binding.kind.value}, the field "
                    f"{'drives' if driven else 'reads'} it"
                )
        elif isinstance(binding, PortBinding):
            if (binding.flow == Flow.Out) != driven:
                raise RegMapError(
                    f"{where}: binding {str(binding)!r} is an "
                    f"{'output' if binding.flow == Flow.Out else 'input'} of the register "
                    f"block, the field {'drives' if driven else 'reads'} it"
                )
        else:
            raise RegMapError(f"{where}: binding {binding!r} is not a Binding")
        if binding.width != width:
            raise RegMapError(
                f"{where}: {width}-bit field bound to {binding.width}-bit {str(binding)!r}"
            )

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
        if f.hw is CONSTANT:
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
        sinks: dict[Binding, str] = {}
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
                            raise RegMapError(
                                f"{fw}: {str(f.hw)!r} is already driven by {sinks[f.hw]}"
                            )
                        sinks[f.hw] = fw
                actions = (
                    (reg.read_action, SignalKind.SINK),
                    (reg.write_action, SignalKind.SINK),
                    (reg.stall_while, SignalKind.SOURCE),
                )
                for action, kind in actions:
                    if action is None:
                        continue
                    if (
                        not isinstance(action, InternalSignal)
                        or action not in self.internal
                        or action.kind is not kind
                    ):
                        raise RegMapError(
                            f"{where}: {str(action)!r} is not an internal one-bit {kind.value}"
                        )
                    if action.width != 1:
                        raise RegMapError(f"{where}: {str(action)!r} is not one bit wide")
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
            self.internal,
        )
