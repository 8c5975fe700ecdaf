"""Artifacts generated from the register map: C header, Markdown reference, SystemRDL.

All three walk :func:`tinyattn.hw.cluster_registers.register_map` and nothing else, so they agree
with the RTL register block and with each other. The output depends only on the
configuration: no dates, no paths, ordered iteration, so equal configurations give
byte-identical files.

- :func:`c_header`: ``tinyattn_regs.h``, C99: offsets, field shifts/widths/masks, reset
  values, the configuration constants, the named field values, and ``static inline``
  accessors taking the register block's base pointer (PULP ``hal_*.h`` style);
- :func:`markdown`: ``docs/registers.md``, one table per block;
- :func:`systemrdl`: ``tinyattn.rdl`` for users' own register tools;
- :func:`write_all`: the three files into a folder (used by ``tinyattn generate``).

``python -m tinyattn.sw.regmap_emit [--config FILE] [--docs PATH] [--out DIR]``
regenerates ``docs/registers.md`` (default configuration) or writes all three.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tinyattn.config import ClusterConfig
from tinyattn.hw.cluster_registers import register_map
from tinyattn.hw.registers import CONSTANT, REG_BITS, Access, Field, MappedRegister, MemoryMap

__all__ = [
    "HEADER_NAME",
    "MARKDOWN_NAME",
    "SYSTEMRDL_NAME",
    "CFunction",
    "c_functions",
    "c_header",
    "c_macros",
    "markdown",
    "systemrdl",
    "write_all",
]

HEADER_NAME = "tinyattn_regs.h"
MARKDOWN_NAME = "registers.md"
SYSTEMRDL_NAME = "tinyattn.rdl"
PREFIX = "TINYATTN"
#: Constants that are addresses or bit patterns, written in hex.
HEX_CONSTANTS = frozenset({"CONFIG_HASH", "L1_BASE", "REGS_BASE"})

_C_KEYWORDS = frozenset(
    (
        *("auto", "break", "case", "char", "const", "continue", "default", "do", "double"),
        *("else", "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long"),
        *("register", "restrict", "return", "short", "signed", "sizeof", "static", "struct"),
        *("switch", "typedef", "union", "unsigned", "void", "volatile", "while"),
    )
)


# ---------------------------------------------------------------------------- C names


def _hex(value: int, digits: int = 8) -> str:
    return f"0x{value:0{digits}X}u"


def _constant(mm: MemoryMap, name: str) -> int:
    return next(c.value for c in mm.constants if c.name == name)


def _param(name: str) -> str:
    p = name.lower()
    return f"{p}_" if p in _C_KEYWORDS else p


def _multi(reg: MappedRegister) -> bool:
    """Registers with several fields (or a narrow one) get per-field helpers."""
    return len(reg.fields) > 1


def _writable_fields(reg: MappedRegister) -> list[Field]:
    return [f for f in reg.fields if f.access is Access.RW]


@dataclass(frozen=True)
class CFunction:
    """One ``static inline`` accessor of the header: name, return type, parameters."""

    register: str  # BLOCK_REGISTER it belongs to
    name: str
    returns: str
    params: tuple[tuple[str, str], ...]  # (type, name)
    body: tuple[str, ...]  # statements, one a line
    comment: str

    def declaration(self) -> str:
        params = ", ".join(f"{t}{n}" if t.endswith("*") else f"{t} {n}" for t, n in self.params)
        head = f"static inline {self.returns} {self.name}("
        if len(head) + len(params) + 1 > 100:
            params = ",\n    ".join(p.strip() for p in params.split(","))
            return f"{head}\n    {params})"
        return f"{head}{params or 'void'})"


def c_macros(mm: MemoryMap) -> list[tuple[str, int, str]]:
    """Every ``#define`` of the header with a numeric value: (name, value, comment)."""
    out: list[tuple[str, int, str]] = []
    out.append((f"{PREFIX}_REGS_SIZE", mm.size, "bytes of address space of the register block"))
    for c in mm.constants:
        out.append((f"{PREFIX}_{c.name}", c.value, c.desc))
    for name, f in mm.enums():
        for v in f.values:
            out.append((f"{PREFIX}_{name}_{v.name}", v.value, v.desc))
    for base, block in mm.blocks:
        out.append((f"{PREFIX}_{block.name}_BASE", base, f"offset of the {block.name} block"))
    for reg in mm.registers:
        r = f"{PREFIX}_{reg.name}"
        out.append((f"{r}_OFFSET", reg.address, reg.register.desc))
        out.append((f"{r}_RESET", reg.register.reset, "value after reset"))
        for f in reg.fields:
            out.append((f"{r}_{f.name}_SHIFT", f.offset, ""))
            out.append((f"{r}_{f.name}_WIDTH", f.width, ""))
            out.append((f"{r}_{f.name}_MASK", f.mask, ""))
            out.append((f"{r}_{f.name}_RESET", f.reset, ""))
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"register map gives clashing C macro names: {', '.join(dup)}")
    return out


def c_functions(mm: MemoryMap) -> list[CFunction]:
    """Every ``static inline`` accessor of the header, in header order."""
    base = ("volatile void *", "base")
    funcs: list[CFunction] = []
    for reg in mm.registers:
        r, low = f"{PREFIX}_{reg.name}", reg.name.lower()
        if reg.register.readable:
            funcs.append(
                CFunction(
                    reg.name,
                    f"tinyattn_{low}_read",
                    "uint32_t",
                    (base,),
                    (f"return TINYATTN_REG_READ(base, {r}_OFFSET);",),
                    f"Read {reg.name}.",
                )
            )
        if any(f.access in (Access.RW, Access.W1C) for f in reg.fields):
            funcs.append(
                CFunction(
                    reg.name,
                    f"tinyattn_{low}_write",
                    "void",
                    (base, ("uint32_t", "value")),
                    (f"TINYATTN_REG_WRITE(base, {r}_OFFSET, value);",),
                    f"Write {reg.name}"
                    + (" (1 clears a flag)." if reg.register.access == "W1C" else "."),
                )
            )
        if _multi(reg):
            for f in reg.fields:
                if f.access.readable:
                    funcs.append(
                        CFunction(
                            reg.name,
                            f"tinyattn_{low}_{f.name.lower()}_get",
                            "uint32_t",
                            (("uint32_t", "value"),),
                            (_wrap(f"return (value & {r}_{f.name}_MASK) >> {r}_{f.name}_SHIFT;"),),
                            f"{reg.name}.{f.name} {f.bits} from a register value.",
                        )
                    )
            wf = _writable_fields(reg)
            if len(wf) > 1:
                body = ["uint32_t value = 0u;"]
                for f in wf:
                    p = f"{r}_{f.name}"
                    body.append(_wrap(f"value |= ({_param(f.name)} << {p}_SHIFT) & {p}_MASK;"))
                body.append("return value;")
                funcs.append(
                    CFunction(
                        reg.name,
                        f"tinyattn_{low}_pack",
                        "uint32_t",
                        tuple(("uint32_t", _param(f.name)) for f in wf),
                        tuple(line for chunk in body for line in chunk.split("\n")),
                        f"{reg.name} value from its fields.",
                    )
                )
        for f in reg.fields:
            if f.access is Access.W1P:
                name = f"tinyattn_{reg.block.name.lower()}_{f.name.lower()}"
                funcs.append(
                    CFunction(
                        reg.name,
                        name,
                        "void",
                        (base,),
                        (f"TINYATTN_REG_WRITE(base, {r}_OFFSET, {r}_{f.name}_MASK);",),
                        f"{reg.name}.{f.name}: {f.desc}.",
                    )
                )
    names = [f.name for f in funcs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"register map gives clashing C function names: {', '.join(dup)}")
    return funcs


def _wrap(statement: str) -> str:
    """Break a statement before its last operator when it would pass 100 columns."""
    if len(statement) + 4 <= 100:
        return statement
    for op in (" >> ", " & "):
        head, sep, tail = statement.rpartition(op)
        if sep:
            return f"{head}\n    {op.strip()} {tail}"
    return statement


def _comment(text: str, indent: str = "") -> list[str]:
    """A C block comment wrapped at 90 columns."""
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > 86 - len(indent):
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    if len(lines) == 1:
        return [f"{indent}/* {lines[0]} */"]
    return [f"{indent}/*", *(f"{indent} * {x}" for x in lines), f"{indent} */"]


def _define(name: str, value: str, comment: str = "") -> str:
    """``#define NAME VALUE``, with the comment beside it, or above it when too long."""
    line = f"#define {name} {value}"
    if not comment:
        return line
    beside = f"{line:<52}/* {comment} */"
    if len(beside) <= 100:
        return beside
    return "\n".join([*_comment(comment), line])


def c_header(cfg: ClusterConfig) -> str:
    """The text of ``tinyattn_regs.h`` for ``cfg``."""
    mm = register_map(cfg)
    macros = {n: (v, c) for n, v, c in c_macros(mm)}
    out: list[str] = [
        "/*",
        f" * {HEADER_NAME}: register map of the tinyattn cluster peripherals.",
        " *",
        f" * Generated by tinyattn from hw/cluster_registers.py for configuration "
        f"{cfg.stable_hash()}.",
        " * Do not edit: `tinyattn generate` writes it again.",
        " *",
        " * Offsets are bytes from the base of the register block; every register is a",
        " * 32-bit word. The accessors take that base as a pointer. Define",
        " * TINYATTN_REG_READ(base, offset) and TINYATTN_REG_WRITE(base, offset, value)",
        " * before including this file to route the accesses elsewhere (for example to a",
        " * co-simulation backend). docs/registers.md describes every register.",
        " */",
        "#ifndef TINYATTN_REGS_H",
        "#define TINYATTN_REGS_H",
        "",
        "#include <stdint.h>",
        "",
        "#ifndef TINYATTN_REG_READ",
        "#define TINYATTN_REG_READ(base, offset) \\",
        "    (*(volatile uint32_t *)((volatile uint8_t *)(base) + (offset)))",
        "#endif",
        "#ifndef TINYATTN_REG_WRITE",
        "#define TINYATTN_REG_WRITE(base, offset, value) \\",
        "    (*(volatile uint32_t *)((volatile uint8_t *)(base) + (offset)) = (uint32_t)(value))",
        "#endif",
        "",
        "/* ---- Configuration ----------------------------------------------------------- */",
        "",
        _define(f"{PREFIX}_REGS_SIZE", _hex(mm.size), macros[f"{PREFIX}_REGS_SIZE"][1]),
    ]
    for c in mm.constants:
        value = _hex(c.value) if c.name in HEX_CONSTANTS else f"{c.value}u"
        out.append(_define(f"{PREFIX}_{c.name}", value, c.desc))
    out += [
        "",
        "/* ---- Field values ------------------------------------------------------------ */",
    ]
    for name, f in mm.enums():
        users = ", ".join(f"{r.name}.{g.name}" for r, g in mm.fields() if g.enum == name)
        kind = "bit masks, combine with |" if f.flags else "codes"
        out += ["", *_comment(f"{name}: {users} ({kind})")]
        for v in f.values:
            value = _hex(v.value, 1) if f.flags else f"{v.value}u"
            out.append(_define(f"{PREFIX}_{name}_{v.name}", value, v.desc))
    out += [
        "",
        "/* ---- Blocks ------------------------------------------------------------------ */",
    ]
    out.append("")
    for base, block in mm.blocks:
        out.append(_define(f"{PREFIX}_{block.name}_BASE", _hex(base, 3), f"{block.name} block"))
    funcs = c_functions(mm)
    by_reg: dict[str, list[CFunction]] = {}
    for fn in funcs:
        by_reg.setdefault(fn.register, []).append(fn)
    for base, block in mm.blocks:
        out += ["", *_comment(f"==== {block.name} (base {_hex(base, 3)}): {block.desc}")]
        for reg in (r for r in mm.registers if r.block is block):
            r = f"{PREFIX}_{reg.name}"
            out += ["", *_comment(f"{reg.name} ({reg.register.access}): {reg.register.desc}")]
            out.append(_define(f"{r}_OFFSET", _hex(reg.address, 3)))
            out.append(_define(f"{r}_RESET", _hex(reg.register.reset)))
            for f in sorted(reg.fields, key=lambda f: f.offset):
                p = f"{r}_{f.name}"
                out.append(_define(f"{p}_SHIFT", f"{f.offset}u", f"{f.bits} {f.access.value}"))
                out.append(_define(f"{p}_WIDTH", f"{f.width}u"))
                out.append(_define(f"{p}_MASK", _hex(f.mask)))
                out.append(_define(f"{p}_RESET", _hex(f.reset, 1)))
            for fn in by_reg.get(reg.name, []):
                body = [f"    {line}" if line else "" for b in fn.body for line in b.split("\n")]
                out += ["", *_comment(fn.comment), fn.declaration(), "{", *body, "}"]
    out += ["", "#endif /* TINYATTN_REGS_H */", ""]
    _check_all_emitted(out, macros, funcs)
    return "\n".join(out)


def _check_all_emitted(lines: list[str], macros: dict, funcs: list[CFunction]) -> None:
    text = "\n".join(lines)
    missing = [n for n in macros if f"#define {n} " not in text]
    missing += [f.name for f in funcs if f"{f.name}(" not in text]
    if missing:
        raise AssertionError(f"header generator lost {', '.join(missing)}")


# ---------------------------------------------------------------------------- Markdown


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _reset(f: Field) -> str:
    return str(f.reset) if f.width == 1 else f"{f.reset:#x}"


def markdown(cfg: ClusterConfig) -> str:
    """The text of ``docs/registers.md`` for ``cfg``."""
    mm = register_map(cfg)
    e, mem, d = cfg.engine, cfg.memory, cfg.dma
    out = [
        "# Registers",
        "",
        "<!-- Generated from hw/cluster_registers.py by `python -m tinyattn.sw.regmap_emit "
        "--docs "
        "docs/registers.md`. Do not edit: tests/test_regmap.py checks that it is current. -->",
        "",
        "The peripheral registers of the cluster: the attention engine, the DMA and the "
        "events, plus read-only configuration. They are defined once, in "
        "`hw/cluster_registers.py` (with the description language of `hw/registers.py`), "
        "and everything else is generated from that definition: the RTL register block "
        "(`hw/regblock.py`, top `regblock`), the C header `tinyattn_regs.h`, this page and "
        "the SystemRDL file `tinyattn.rdl`. `tinyattn generate` writes the header, this "
        "page and the SystemRDL file beside the Verilog, for the configuration given.",
        "",
        f"This page shows the default configuration (`{cfg.stable_hash()}`: {e.n_pe} x "
        f"{e.vec_len} engine, {mem.size_bytes // 1024} KiB L1, {d.dma_bits}-bit DMA). "
        "Some field widths follow the configuration: the L1 address fields "
        "(`log2(L1 bytes) + 1` bits), the dimension fields, `QUEUED` and `QUEUE_LEVEL`.",
        "",
        "## Overview",
        "",
        "Addresses are byte offsets from the base of the register block. Registers are "
        f"32-bit words; the block decodes {mm.addr_bits} address bits "
        f"({mm.size:#x} bytes). In the cluster the cores see the block at "
        f"`{_constant(mm, 'REGS_BASE'):#010x}` (`TINYATTN_REGS_BASE`) and L1 at "
        f"`{_constant(mm, 'L1_BASE'):#010x}` (`TINYATTN_L1_BASE`); the engine's job "
        "registers and the DMA's L1 address take offsets into L1, not core addresses.",
        "",
        "| block | base | registers | contents |",
        "|---|---|---|---|",
    ]
    for base, block in mm.blocks:
        n = sum(1 for r in mm.registers if r.block is block)
        out.append(f"| `{block.name}` | `{base:#05x}` | {n} | {_md(block.desc)} |")
    out += [
        "",
        f"{len(mm.registers)} registers in all.",
        "",
        "**Access modes.**",
        "",
        "| mode | read | write |",
        "|---|---|---|",
        "| `RW` | the stored value | stores the bytes whose byte enable is set |",
        "| `RO` | the value of the hardware (or a constant) | ignored |",
        "| `W1P` | 0 | a 1 pulses the action for one cycle, in the cycle after the write's "
        "`gnt`; 0 does nothing |",
        "| `W1C` | the sticky flag | a 1 clears the flag; an event in the same cycle wins |",
        "",
        "Byte enables apply to every writable field: a `W1P` or `W1C` bit acts only when "
        "its byte is enabled.",
        "",
    ]
    out += _BUS_AND_FIRMWARE.format(bits=mm.addr_bits).splitlines()
    for base, block in mm.blocks:
        out += ["", f"## {block.name} (base `{base:#05x}`)", "", _md(block.desc), ""]
        held = [r.name for r in mm.registers if r.block is block and r.register.stall_while]
        if held:
            out += [
                f"Writes to the registers marked *(held)* ({len(held)}: `{held[0]}` ... "
                f"`{held[-1]}`) wait for `gnt` while `{block.name}_STATUS.PUSH_PENDING` is set.",
                "",
            ]
        out += [
            "| address | register / field | bits | access | reset | description |",
            "|---|---|---|---|---|---|",
        ]
        for reg in (r for r in mm.registers if r.block is block):
            held = "&nbsp;(held)" if reg.register.stall_while else ""
            desc = _md(reg.register.desc)
            out.append(
                f"| `{reg.address:#05x}` | **{reg.name}** | | {reg.register.access}{held} | "
                f"`{reg.register.reset:#010x}` | {desc} |"
            )
            for f in sorted(reg.fields, key=lambda f: f.offset):
                desc = _md(f.desc) if f.desc != reg.register.desc else ""
                if f.enum:
                    desc += f" (values: `{f.enum}`)"
                out.append(
                    f"| | `{f.name}` | `{f.bits}` | {f.access.value} | `{_reset(f)}` | {desc} |"
                )
    out += ["", "## Field values", ""]
    for name, f in mm.enums():
        users = ", ".join(f"`{r.name}.{g.name}`" for r, g in mm.fields() if g.enum == name)
        kind = "bit masks that combine" if f.flags else "codes"
        out += [f"**`{name}`** ({kind}; {users}; `TINYATTN_{name}_<NAME>` in the header):", ""]
        out += ["| value | name | meaning |", "|---|---|---|"]
        for v in f.values:
            value = f"{v.value:#x}" if f.flags else str(v.value)
            out.append(f"| {value} | `{v.name}` | {_md(v.desc)} |")
        out.append("")
    out += _CONNECT.format(ports=_port_table(cfg), bits=mm.addr_bits).splitlines()
    out += ["", *_VERIFICATION.splitlines()]
    return "\n".join(out).rstrip("\n") + "\n"


_BUS_AND_FIRMWARE = """\
## Bus contract

The block is an OBI target (`bus`): 32-bit words, `addr[1:0]` ignored.

- **Response.** `rvalid` comes exactly one cycle after `gnt`, for reads and writes.
- **Grant.** `gnt` is high, with one exception: a write to the engine's `JOB_*` staging
  registers or `JOB_PUSH` waits (no `gnt`) while `ENGINE_STATUS.PUSH_PENDING` is set, and
  so does a write to the DMA's staging registers or `PUSH` while
  `DMA_STATUS.PUSH_PENDING` is set. Reads are never held.
- **Unmapped addresses.** An access to an address that holds no register (a gap or
  beyond the map, within the {bits} decoded bits) reads 0, writes nothing, and sets the
  sticky `EVENTS_IRQ_STATUS.BUS_ERROR`, which can raise `irq` when enabled.
- **Read-only registers.** Writes to `RO` fields are ignored and set no error.

## Firmware rules

**Pushing a job or a descriptor.**

1. Wait for room: `QUEUED + PUSH_PENDING < JOB_QUEUE_DEPTH` in `ENGINE_STATUS` (for the
   DMA: `QUEUE_LEVEL + PUSH_PENDING < DMA_QUEUE_DEPTH` in `DMA_STATUS`). Both depths are
   in `CLUSTER` and in the header (`TINYATTN_JOB_QUEUE_DEPTH`, `TINYATTN_DMA_QUEUE_DEPTH`).
2. Write the staging registers. They keep their values after a push, so only the fields
   that change need writing for the next job.
3. Write 1 to `ENGINE_JOB_PUSH.PUSH` (`DMA_PUSH.PUSH`).

The staging registers drive the engine's `jobs` payload (the DMA's `cmd` payload)
directly. A push offers that payload from the cycle after the write. When the queue is
full, the push stays pending (`PUSH_PENDING` = 1) until the queue takes it. Nothing is
lost: a push is never dropped, except by a `CLEAR` of the same unit. While a push is
pending, writes to that unit's staging registers and push register wait for `gnt`, so the
offered payload cannot change. A firmware that skips step 1 therefore stalls on the bus
until there is room, but stays correct. The engine and the DMA always make progress, so
the wait ends.

**Clear.**

- `ENGINE_CTRL.CLEAR` drops the queued jobs, the running job and a pending push. Then
  wait for `ENGINE_STATUS.BUSY` = 0. A push made before the drain is over stays pending
  until `BUSY` falls, because the engine would drop jobs taken while it drains.
- `DMA_CTRL.CLEAR` drops the queue, the running transfer and a pending push, and clears
  the error. The DMA takes descriptors again from the next cycle.
- `DMA_CTRL.ERROR_ACK` clears `DMA_STATUS.ERROR` / `ERROR_CODE` only.

**Completion.**

- `ENGINE_JOBS_DONE` and `DMA_DONE_COUNT` count every done event (successful or
  rejected) since reset and wrap at 2^32. Wait for "job N finished" by comparing them,
  rather than catching a pulse. A clear does not reset them. Jobs and descriptors
  dropped by a clear never count.
- `ENGINE_STATUS.ERROR_CODE` is the `JOB_ERROR` code of the last finished job.
  `DMA_STATUS.ERROR` / `ERROR_CODE` are sticky from the first rejected descriptor.

**64-bit MAC counter.** Read `ENGINE_MACS_LO` first: the read latches bits 63:32 into
`ENGINE_MACS_HI`, which the next read returns. The pair is consistent even when the
count changes between the two reads. The 32-bit cycle counters (`BUSY_CYCLES`,
`STALL_CYCLES`, `IDLE_CYCLES`) count from reset and wrap.

**Interrupts.**

- `irq` = OR of (`EVENTS_IRQ_STATUS` & `EVENTS_IRQ_ENABLE`).
- The flags are set by the events: `ENGINE_DONE` by every engine done, `ENGINE_ERROR` by
  a done with a non-zero error code, `DMA_DONE`, `DMA_ERROR` by a done with
  `done_error`, and `BUS_ERROR`.
- Clear a flag by writing 1 to it.
- In an interrupt handler, read `IRQ_STATUS`, write the same value back to clear what
  was seen, then handle it. An event that arrives after the read stays set.

**Configuration check.** `CLUSTER_CONFIG_HASH` holds the first 8 hex digits of the
configuration's `stable_hash()`. Firmware built against a header compares it with
`TINYATTN_CONFIG_HASH` at start-up, which catches a header from another configuration."""


_CONNECT = """\
## Connecting the block in the cluster top

The block's `engine` and `dma` ports are the engine's and the DMA's control signatures
(`engine_control_signature` in `hw/engine_controller.py`, `dma_control_signature` in
`hw/dma.py`), seen from the block; `Engine` and `Dma` have the same signatures flipped,
as their `control` ports:

{ports}

In the cluster top:

```python
from amaranth.lib import wiring

from tinyattn.hw.regblock import RegBlock

m.submodules.regs = regs = RegBlock(cfg)
m.submodules.engine = engine = Engine(cfg)
m.submodules.dma = dma = Dma(cfg)
wiring.connect(m, regs.engine, engine.control)
wiring.connect(m, regs.dma, dma.control)
wiring.connect(m, periph_port, regs.bus)   # the decoded OBI port of the cores
```

**Notes for the cluster top.**

- `bus` has `addr_bits` = {bits} by default, which covers the map. Give the decoded offset
  within the peripheral window, or pass `RegBlock(cfg, addr_bits=...)` to decode more
  bits (addresses above the map are unmapped).
- There is one target port. With several cores, arbitrate in front of it. `gnt` is a
  function of the current request only (the block keeps no state for a waiting
  request), so the arbiter may serve another core while a write waits on a pending
  push; each core's own request must stay stable until its `gnt`. Reads are never
  held, so status polling from other cores goes on.
- In co-simulation the firmware uses core port 0.

## Generated files

| file | generator | written by |
|---|---|---|
| `tinyattn_regblock.v` | `hw/regblock.py` | `tinyattn generate --top regblock` |
| `tinyattn_regs.h` | `c_header` | `tinyattn generate` (any top) |
| `registers.md` (this page) | `markdown` | `tinyattn generate`; `regmap_emit --docs` |
| `tinyattn.rdl` | `systemrdl` | `tinyattn generate` |

The generators are in `sw/regmap_emit.py`; `python -m tinyattn.sw.regmap_emit --docs
docs/registers.md` rewrites this page.

In the header, each register `R` has `TINYATTN_R_OFFSET` and `TINYATTN_R_RESET`. Each
field `F` has `_SHIFT`, `_WIDTH`, `_MASK` (in place) and `_RESET`. The accessors:

- `tinyattn_r_read(base)` and `tinyattn_r_write(base, value)`;
- `tinyattn_r_f_get(value)` for a field of a multi-field register;
- `tinyattn_r_pack(fields...)`;
- one function per action: `tinyattn_engine_push(base)`, `tinyattn_engine_clear(base)`,
  `tinyattn_dma_push(base)`, `tinyattn_dma_clear(base)`, `tinyattn_dma_error_ack(base)`.

`base` is a `volatile void *` to the register block."""


def _port_table(cfg: ClusterConfig) -> str:
    """The block's engine and DMA ports, from the signatures the RTL uses."""
    from amaranth.hdl import Shape
    from amaranth.lib import data
    from amaranth.lib.wiring import Flow

    from tinyattn.hw.dma import dma_control_signature
    from tinyattn.hw.engine import engine_control_signature

    rows = ["| block port | connects to | dir (block) | shape |", "|---|---|---|---|"]
    for prefix, unit, sig in (
        ("engine", "Engine", engine_control_signature(cfg)),
        ("dma", "Dma", dma_control_signature(cfg)),
    ):
        for name, member in sig.members.items():
            direction = "out" if member.flow == Flow.Out else "in"
            if member.is_signature:
                payload = member.signature.members["payload"].shape
                shape = f"stream of a {data.Layout.cast(payload).size}-bit payload"
            elif isinstance(member.shape, data.Layout):
                shape = ", ".join(f"`{n}` {f.shape.width}" for n, f in member.shape)
            else:
                width = Shape.cast(member.shape).width
                shape = f"{width} bit{'s' if width > 1 else ''}"
            rows.append(f"| `{prefix}.{name}` | `{unit}.control.{name}` | {direction} | {shape} |")
    rows.append("| `bus` | the decoded peripheral port of the cores | OBI target | 32-bit |")
    rows.append("| `irq` | the cluster's interrupt / event line | out | 1 bit |")
    return "\n".join(rows)


_VERIFICATION = """\
## Verification

- **Map** (`tests/test_regmap.py`):
  - every validation error of the builder;
  - the payload coverage, field widths and named values against `hw/job.py` and
    `hw/dma.py`;
  - the block's ports against `Engine(cfg)` and `Dma(cfg)`, connected with
    `wiring.connect` in a cluster-like top;
  - byte-identical artifacts, including across interpreters, and this page being
    current;
  - the SystemRDL compiled with `systemrdl-compiler` and compared register by register.
- **Header** (`tests/test_headers_compile.py`):
  - a file that calls every accessor compiles with `-std=c99 -Wall -Wextra -Werror
    -pedantic` under the host gcc and `riscv64-unknown-elf-gcc -march=rv32imc
    -mabi=ilp32 -ffreestanding`;
  - a host program prints every macro and runs the accessors on a RAM image, and the
    output is compared with the map.
- **RTL** (`verif/benches/regblock_bench.py`, `tests/test_regblock_rtl.py`):
  - Icarus and Verilator, a small and the default configuration;
  - a reference model built from the map predicts every output in every cycle: `gnt`
    of a waiting request, both streams and their payloads, the pulses, `irq`, and every
    read response;
  - the tests cover reset values, RW with byte enables, RO and unmapped accesses, inputs
    mirrored while they change, the MACS latch, W1P pulses, pending pushes against full
    queues (held writes, nothing lost, CLEAR, the engine's drain), events and `irq`, and
    1500 random operations with back-pressure and random bus idle cycles;
  - each of the 13 mutants of `hw/regblock.py` in `tinyattn mutants` makes the bench
    fail (`docs/verification.md`, "Mutation testing"). They cover W1C priority, byte
    enables of RW and W1P fields, the write hold, a lost pending push, CLEAR not
    dropping a push, the drain hold, the MACS latch, BUS_ERROR, irq enables, the
    counters, engine errors and write-response data."""


# ---------------------------------------------------------------------------- SystemRDL


def _rdl_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rdl_props(f: Field) -> list[str]:
    if f.access is Access.RW:
        return ["sw = rw;", "hw = r;"]
    if f.access is Access.RO:
        return ["sw = r;", "hw = na;"] if f.hw is CONSTANT else ["sw = r;", "hw = w;"]
    if f.access is Access.W1P:
        return ["sw = w;", "hw = r;", "singlepulse = true;"]
    return ["sw = rw;", "hw = na;", "onwrite = woclr;", "hwset = true;"]


def systemrdl(cfg: ClusterConfig) -> str:
    """The text of ``tinyattn.rdl`` for ``cfg`` (SystemRDL 2.0)."""
    mm = register_map(cfg)
    out = [
        f"// {SYSTEMRDL_NAME}: register map of the tinyattn cluster peripherals (SystemRDL 2.0).",
        f"// Generated by tinyattn from hw/cluster_registers.py for configuration "
        f"{cfg.stable_hash()}.",
        "// Do not edit: `tinyattn generate` writes it again.",
        "",
    ]
    for name, f in mm.enums():
        if f.flags:
            continue
        out.append(f"enum {name.lower()}_e {{")
        for v in f.values:
            out.append(f"    {v.name} = {f.width}'d{v.value} {{ desc = {_rdl_str(v.desc)}; }};")
        out += ["};", ""]
    out += [
        f"addrmap {mm.name} {{",
        f"    name = {_rdl_str(mm.name)};",
        f"    desc = {_rdl_str(mm.desc)};",
        f"    default regwidth = {REG_BITS};",
        f"    default accesswidth = {REG_BITS};",
        "    addressing = regalign;",
    ]
    for base, block in mm.blocks:
        out += ["", "    regfile {", f"        name = {_rdl_str(block.name)};"]
        out.append(f"        desc = {_rdl_str(block.desc)};")
        for reg in (r for r in mm.registers if r.block is block):
            desc = reg.register.desc
            if reg.register.stall_while:
                desc += "; writes wait (no gnt) while a push is pending"
            out += ["", "        reg {", f"            desc = {_rdl_str(desc)};"]
            for f in sorted(reg.fields, key=lambda f: f.offset):
                props = [*_rdl_props(f), f"desc = {_rdl_str(f.desc)};"]
                if f.enum and not f.flags:
                    props.append(f"encode = {f.enum.lower()}_e;")
                out.append("            field {")
                out += [f"                {p}" for p in props]
                out.append(f"            }} {f.name}[{f.msb}:{f.offset}] = {f.width}'h{f.reset:X};")
            out.append(f"        }} {reg.register.name} @ {reg.offset:#x};")
        out.append(f"    }} {block.name} @ {base:#x};")
    out += ["};", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------- files


def write_all(cfg: ClusterConfig, out: str | Path) -> list[Path]:
    """Write ``tinyattn_regs.h``, ``registers.md`` and ``tinyattn.rdl`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (
        (HEADER_NAME, c_header(cfg)),
        (MARKDOWN_NAME, markdown(cfg)),
        (SYSTEMRDL_NAME, systemrdl(cfg)),
    ):
        path = out / name
        path.write_text(text)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: regenerate ``docs/registers.md`` or write all files."""
    p = argparse.ArgumentParser(prog="python -m tinyattn.sw.regmap_emit", description=__doc__)
    p.add_argument("--config", metavar="FILE", help="configuration (TOML); default: reference")
    p.add_argument("--docs", metavar="PATH", help="write the Markdown reference to PATH")
    p.add_argument("--out", metavar="DIR", help="write header, Markdown and SystemRDL to DIR")
    args = p.parse_args(argv)
    cfg = ClusterConfig.load(args.config) if args.config else ClusterConfig()
    if args.docs:
        Path(args.docs).write_text(markdown(cfg))
        print(f"wrote {args.docs}")
    if args.out:
        for path in write_all(cfg, args.out):
            print(f"wrote {path}")
    if not (args.docs or args.out):
        p.error("nothing to do: give --docs and/or --out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
