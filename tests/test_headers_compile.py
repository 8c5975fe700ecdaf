"""``tinyattn_regs.h`` compiles warning-free (host gcc, rv32 gcc) and says what the map says.

- Every ``static inline`` accessor is called from a small C file, compiled with
  ``-std=c99 -Wall -Wextra -Werror -pedantic`` by the host gcc and by the rv32 gcc
  (``-march=rv32imc -mabi=ilp32 -ffreestanding``).
- A host program compiled against the header prints every offset, reset, field
  shift/width/mask, constant and named value, and exercises the accessors on a RAM
  image of the register block; the test compares all of it with the Python map, so the
  header and the map cannot drift apart.

The rv32 gcc is Debian's ``gcc-riscv64-unknown-elf``. When it is missing, the test tries
``apt-get install`` (as root, like ``make test`` does for Icarus) and otherwise skips
with a loud reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.hw.cluster_registers import register_map
from tinyattn.hw.registers import Access, MemoryMap
from tinyattn.sim.verilog import file_lock
from tinyattn.sw.regmap_emit import HEADER_NAME, CFunction, c_functions, c_header

SMALL = ClusterConfig(
    engine=EngineConfig(n_pe=4, vec_len=16, acc_bits=24, tile_m=8, max_seq=64, job_queue_depth=3),
    memory=MemoryConfig(n_banks=8, bank_words=512),
    dma=DmaConfig(dma_bits=32, queue_depth=3, l2_addr_bits=20),
)
CONFIGS = {"small": SMALL, "default": ClusterConfig()}

WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
RV32_GCC = "riscv64-unknown-elf-gcc"
RV32 = ["-march=rv32imc", "-mabi=ilp32", "-ffreestanding"]


def _rv32_gcc() -> str:
    """The rv32 compiler; installs it with apt when missing and allowed, else skips loudly."""
    exe = shutil.which(RV32_GCC)
    if exe:
        return exe
    reason = f"{RV32_GCC} is not installed"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        with file_lock(Path("build") / ".apt.lock"):
            exe = shutil.which(RV32_GCC)
            if exe is None:
                env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
                run = subprocess.run(
                    "apt-get update -qq && apt-get install -y -qq gcc-riscv64-unknown-elf",
                    shell=True,
                    capture_output=True,
                    text=True,
                    env=env,
                    check=False,
                )
                exe = shutil.which(RV32_GCC)
                if exe is None:
                    reason += f" and apt-get could not install it: {run.stderr.strip()[-300:]}"
        if exe:
            return exe
    else:
        reason += " and this user cannot apt-get install gcc-riscv64-unknown-elf"
    pytest.skip(f"!!! RV32 GCC MISSING: {reason}; the rv32 compile check did NOT run !!!")


def _compile(cc: str, flags: list[str], source: Path, out: Path, *, link: bool = False) -> None:
    cmd = [cc, *flags, f"-I{source.parent}", str(source), "-o", str(out)]
    if not link:
        cmd.insert(1, "-c")
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert run.returncode == 0 and not run.stderr, f"{' '.join(cmd)}\n{run.stderr}"


def _call(fn: CFunction, index: int) -> str:
    args = [
        "base" if t.endswith("*") else f"acc + {index + i}u" for i, (t, _) in enumerate(fn.params)
    ]
    call = f"{fn.name}({', '.join(args)})"
    return f"    acc += {call};" if fn.returns != "void" else f"    {call};"


def usage_source(mm: MemoryMap) -> str:
    """A C file that calls every accessor of the header once."""
    lines = [
        f'#include "{HEADER_NAME}"',
        "",
        "uint32_t tinyattn_use_all(volatile void *base);",
        "",
        "uint32_t tinyattn_use_all(volatile void *base)",
        "{",
        "    uint32_t acc = 0u;",
    ]
    lines += [_call(fn, i) for i, fn in enumerate(c_functions(mm))]
    lines += ["    return acc;", "}", ""]
    return "\n".join(lines)


def _header_dir(tmp_path: Path, cfg: ClusterConfig) -> Path:
    (tmp_path / HEADER_NAME).write_text(c_header(cfg))
    return tmp_path


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_accessor_is_used(name: str) -> None:
    """The usage file calls exactly the functions the header defines."""
    cfg = CONFIGS[name]
    header = c_header(cfg)
    defined = set(re.findall(r"static inline \w+ (\w+)\(", header))
    assert defined == {fn.name for fn in c_functions(register_map(cfg))}
    assert len(defined) > 100


@pytest.mark.parametrize("name", list(CONFIGS))
def test_header_compiles_on_the_host(name: str, tmp_path: Path) -> None:
    cfg = CONFIGS[name]
    d = _header_dir(tmp_path, cfg)
    src = d / "use_all.c"
    src.write_text(usage_source(register_map(cfg)))
    _compile("gcc", WARN, src, d / "use_all.o")
    # The header alone, included twice: the include guards hold.
    twice = d / "twice.c"
    twice.write_text(f'#include "{HEADER_NAME}"\n#include "{HEADER_NAME}"\nint x;\n')
    _compile("gcc", WARN, twice, d / "twice.o")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_header_compiles_for_rv32(name: str, tmp_path: Path) -> None:
    cc = _rv32_gcc()
    cfg = CONFIGS[name]
    d = _header_dir(tmp_path, cfg)
    src = d / "use_all.c"
    src.write_text(usage_source(register_map(cfg)))
    _compile(cc, [*RV32, *WARN], src, d / "use_all.o")
    objdump = shutil.which("riscv64-unknown-elf-objdump")
    if objdump:
        info = subprocess.run(
            [objdump, "-f", str(d / "use_all.o")], capture_output=True, text=True, check=True
        ).stdout
        assert "elf32-littleriscv" in info, info


# ---------------------------------------------------------------------------- values


def expected(mm: MemoryMap) -> dict[str, int]:
    """Every numeric macro of the header by name, straight from the map."""
    want = {"TINYATTN_REGS_SIZE": mm.size}
    want |= {f"TINYATTN_{c.name}": c.value for c in mm.constants}
    for name, f in mm.enums():
        want |= {f"TINYATTN_{name}_{v.name}": v.value for v in f.values}
    want |= {f"TINYATTN_{block.name}_BASE": base for base, block in mm.blocks}
    for reg in mm.registers:
        r = f"TINYATTN_{reg.name}"
        want[f"{r}_OFFSET"] = reg.address
        want[f"{r}_RESET"] = reg.register.reset
        for f in reg.fields:
            want[f"{r}_{f.name}_SHIFT"] = f.offset
            want[f"{r}_{f.name}_WIDTH"] = f.width
            want[f"{r}_{f.name}_MASK"] = f.mask
            want[f"{r}_{f.name}_RESET"] = f.reset
    return want


def dump_source(mm: MemoryMap, names: list[str]) -> str:
    """A host program: prints every macro, then exercises the accessors on a RAM image."""
    words = mm.size // 4
    lines = [
        "#include <stdio.h>",
        f'#include "{HEADER_NAME}"',
        "",
        f"static uint32_t regs[{words}];",
        "",
        "static void clear_regs(void)",
        "{",
        f"    unsigned i;\n    for (i = 0; i < {words}u; i++) regs[i] = 0u;",
        "}",
        "",
        "int main(void)",
        "{",
        "    volatile void *base = regs;",
        "    unsigned i;",
        "    (void)base;",
    ]
    lines += [f'    printf("M {n} %lu\\n", (unsigned long)({n}));' for n in names]
    for reg in mm.registers:
        low = reg.name.lower()
        if any(f.access in (Access.RW, Access.W1C) for f in reg.fields):
            # write: the word lands at the register's offset
            lines += [
                "    clear_regs();",
                f"    tinyattn_{low}_write(base, 0x{reg.address:08X}u ^ 0xA5A5A5A5u);",
                f'    for (i = 0; i < {words}u; i++) if (regs[i]) printf("W {reg.name} %u '
                f'%lu\\n", i * 4u, (unsigned long)regs[i]);',
            ]
        if reg.register.readable:
            lines += [
                "    clear_regs();",
                f"    regs[{reg.address // 4}] = 0x{reg.address:08X}u ^ 0x5A5A5A5Au;",
                f'    printf("R {reg.name} %lu\\n", (unsigned long)tinyattn_{low}_read(base));',
            ]
        if len(reg.fields) > 1:
            for f in reg.fields:
                if f.access.readable:
                    lines.append(
                        f'    printf("G {reg.name}.{f.name} %lu\\n", (unsigned long)'
                        f"tinyattn_{low}_{f.name.lower()}_get(0xDEADBEEFu));"
                    )
            rw = [f for f in reg.fields if f.access is Access.RW]
            if len(rw) > 1:
                args = ", ".join(
                    f"0x{0x9E3779B9 * (i + 1) & 0xFFFFFFFF:08X}u" for i in range(len(rw))
                )
                lines.append(
                    f'    printf("P {reg.name} %lu\\n", '
                    f"(unsigned long)tinyattn_{low}_pack({args}));"
                )
        for f in reg.fields:
            if f.access is Access.W1P:
                fn = f"tinyattn_{reg.block.name.lower()}_{f.name.lower()}"
                lines += [
                    "    clear_regs();",
                    f"    {fn}(base);",
                    f'    for (i = 0; i < {words}u; i++) if (regs[i]) printf("A {fn} %u %lu\\n", '
                    "i * 4u, (unsigned long)regs[i]);",
                ]
    lines += ["    return 0;", "}", ""]
    return "\n".join(lines)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_header_values_match_the_map(name: str, tmp_path: Path) -> None:
    cfg = CONFIGS[name]
    mm = register_map(cfg)
    want = expected(mm)
    d = _header_dir(tmp_path, cfg)
    src = d / "dump.c"
    src.write_text(dump_source(mm, sorted(want)))
    exe = d / "dump"
    _compile("gcc", WARN, src, exe, link=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    got: dict[str, list[tuple[str, ...]]] = {}
    for line in out.splitlines():
        kind, *rest = line.split()
        got.setdefault(kind, []).append(tuple(rest))
    assert {n: int(v) for n, v in got["M"]} == want
    writes = {(n, int(off), int(v)) for n, off, v in got.get("W", [])}
    reads = {n: int(v) for n, v in got.get("R", [])}
    gets = {n: int(v) for n, v in got.get("G", [])}
    packs = {n: int(v) for n, v in got.get("P", [])}
    actions = {(n, int(off), int(v)) for n, off, v in got.get("A", [])}
    want_w, want_r, want_g, want_p, want_a = set(), {}, {}, {}, set()
    for reg in mm.registers:
        if any(f.access in (Access.RW, Access.W1C) for f in reg.fields):
            want_w.add((reg.name, reg.address, reg.address ^ 0xA5A5A5A5))
        if reg.register.readable:
            want_r[reg.name] = reg.address ^ 0x5A5A5A5A
        if len(reg.fields) > 1:
            for f in reg.fields:
                if f.access.readable:
                    want_g[f"{reg.name}.{f.name}"] = (0xDEADBEEF & f.mask) >> f.offset
            rw = [f for f in reg.fields if f.access is Access.RW]
            if len(rw) > 1:
                want_p[reg.name] = sum(
                    ((0x9E3779B9 * (i + 1) & 0xFFFFFFFF) << f.offset) & f.mask
                    for i, f in enumerate(rw)
                )
        for f in reg.fields:
            if f.access is Access.W1P:
                fn = f"tinyattn_{reg.block.name.lower()}_{f.name.lower()}"
                want_a.add((fn, reg.address, f.mask))
    assert writes == want_w
    assert reads == want_r
    assert gets == want_g
    assert packs == want_p
    assert actions == want_a
