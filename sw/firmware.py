"""Build firmware for the cluster's RISC-V control core (PicoRV32, rv32imc).

The SDK is in ``sw/firmware/``: ``crt0.S``, the HAL (``tinyattn_hal.h``), the console
(``tinyattn_console.h``), the four memory functions GCC may call, and ``hello.c``.
:func:`build_firmware` compiles it with the user's sources for one configuration,
against the ``tinyattn_regs.h`` and the linker script generated for that
configuration, with Debian's ``riscv64-unknown-elf-gcc``; no libc.

- :func:`linker_script`: private memory at ``PRIVATE_BASE``, the stack at its top
  (``core.stack_bytes``), and an ASSERT that refuses code and data reaching the stack;
- :func:`build_firmware`: a :class:`FirmwareImage` (ELF, the image as 32-bit words from
  address 0, sizes). Builds are cached under ``build/firmware/<hash>/`` by a hash of
  everything that goes in, so a repeated call does not run the compiler;
- :class:`FirmwareError`: every failure, with a message that says what to do.

``python -m tinyattn.sw.firmware [--config FILE] --out DIR SOURCE...`` builds from the
command line and prints the sizes.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyattn.cache import build_root, file_lock
from tinyattn.config import ClusterConfig
from tinyattn.hw.cluster_registers import register_map
from tinyattn.sw.regmap_emit import HEADER_NAME, c_header

__all__ = [
    "CFLAGS",
    "RV32_GCC",
    "SDK_DIR",
    "SDK_SOURCES",
    "FirmwareError",
    "FirmwareImage",
    "FirmwareSizes",
    "build_firmware",
    "exit_code_names",
    "linker_script",
    "rv32_gcc",
]

SDK_DIR = Path(__file__).resolve().parent / "firmware"
#: Linked into every image, in this order (crt0 places itself at address 0 anyway).
SDK_SOURCES = ("crt0.S", "tinyattn_hal.c", "tinyattn_console.c", "tinyattn_string.c")
RV32_GCC = "riscv64-unknown-elf-gcc"
ARCH = ("-march=rv32imc", "-mabi=ilp32")
#: C flags of every firmware source; ``cflags`` of :func:`build_firmware` come after them.
CFLAGS = (
    "-std=c99",
    "-pedantic",
    "-Os",
    "-g",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-ffreestanding",
    "-ffunction-sections",  # with --gc-sections: unused HAL functions cost nothing
    "-fdata-sections",
)
LINKER_SCRIPT_NAME = "link.ld"
INSTALL_HINT = (
    "install it with `apt-get install gcc-riscv64-unknown-elf` "
    "(`make test` does that when it may use apt)"
)
# The ASSERT's text, also how a too-large image is recognized in the linker's output.
_FIT_MESSAGE = "tinyattn firmware: code + data + bss reach into the stack"
# What marks the first line worth quoting in a compiler or linker failure.
_PROBLEM = re.compile(r"\berror:|undefined reference|multiple definition|cannot find")
# Lines of compiler output quoted in an error.
_ERROR_LINES = 8


class FirmwareError(RuntimeError):
    """A firmware build failed; the first line of the message says why."""


@dataclass(frozen=True)
class FirmwareSizes:
    """Bytes of the image as ``size`` counts them (text includes read-only data)."""

    text: int
    data: int
    bss: int
    private_bytes: int  # the core's private memory
    stack_bytes: int  # reserved at its top

    @property
    def total(self) -> int:
        return self.text + self.data + self.bss

    @property
    def percent(self) -> float:
        """``total`` as a percentage of the private memory."""
        return 100.0 * self.total / self.private_bytes

    @property
    def free(self) -> int:
        """Bytes left between the end of .bss and the stack."""
        return self.private_bytes - self.stack_bytes - self.total

    def __str__(self) -> str:
        return (
            f"text {self.text} + data {self.data} + bss {self.bss} = {self.total} bytes, "
            f"{self.percent:.1f}% of {self.private_bytes} bytes private memory "
            f"({self.stack_bytes} of them stack, {self.free} free)"
        )


@dataclass(frozen=True)
class FirmwareImage:
    """A linked firmware.

    ``words`` is the image to load into private memory: 32-bit little-endian words
    from address 0 (``PRIVATE_BASE``) up to the end of .data, read-only. ``.bss`` is
    not in it: crt0 zeroes it. ``hex`` holds the same words, one per line, for
    ``$readmemh``; ``bin`` the same bytes.
    """

    name: str
    elf: Path
    bin: Path
    hex: Path
    sizes: FirmwareSizes
    build_hash: str
    config_hash: str
    words: np.ndarray = field(repr=False, compare=False)

    def image_bytes(self) -> bytes:
        return self.words.astype("<u4").tobytes()


# ---------------------------------------------------------------------------- linker script


def _origin(cfg: ClusterConfig) -> int:
    return next(c.value for c in register_map(cfg).constants if c.name == "PRIVATE_BASE")


def _hex32(value: int) -> str:
    return f"0x{value:08X}"


def _script(cfg: ClusterConfig, *, checked: bool) -> str:
    consts = {c.name: c.value for c in register_map(cfg).constants}
    origin, length = consts["PRIVATE_BASE"], consts["PRIVATE_BYTES"]
    if not checked:
        # Only to measure a program that does not fit: room for anything below L1.
        length = consts["L1_BASE"] - origin
    assertion = (
        f'ASSERT(__bss_end <= __stack_limit, "{_FIT_MESSAGE} (core.stack_bytes = '
        f'{cfg.core.stack_bytes} at the top of core.private_bytes = {cfg.core.private_bytes})")'
        if checked
        else "/* unchecked: used only to measure a program that does not fit */"
    )
    return f"""\
/*
 * link.ld: linker script of tinyattn firmware for configuration {cfg.stable_hash()}.
 * Generated by tinyattn.sw.firmware from the configuration; do not edit.
 *
 * The whole image, .data included, is loaded into the core's private memory before
 * reset: nothing is copied at start-up, crt0 only zeroes .bss. The stack is the top
 * core.stack_bytes of the private memory and grows down towards .bss.
 */
OUTPUT_ARCH(riscv)
ENTRY(_start)

MEMORY
{{
    PRIVATE (rwx) : ORIGIN = {_hex32(origin)}, LENGTH = {_hex32(length)}
}}

__stack_bytes = {_hex32(cfg.core.stack_bytes)};
__stack_top = ORIGIN(PRIVATE) + LENGTH(PRIVATE);
__stack_limit = __stack_top - __stack_bytes;

/* The cluster's address map (tinyattn_regs.h has the same values). */
__tinyattn_l1_base = {_hex32(consts["L1_BASE"])};
__tinyattn_l1_bytes = {_hex32(consts["L1_BYTES"])};
__tinyattn_regs_base = {_hex32(consts["REGS_BASE"])};

SECTIONS
{{
    .text :
    {{
        KEEP(*(.text.start))    /* crt0: _start at address 0, the IRQ vector at 0x10 */
        *(.text .text.*)
    }} > PRIVATE

    .rodata : ALIGN(4)
    {{
        *(.rodata .rodata.*)
        *(.srodata .srodata.*)
    }} > PRIVATE

    .data : ALIGN(4)
    {{
        *(.data .data.*)
        /* gp reaches 2 KiB either side: the small data and .bss below. */
        __global_pointer$ = . + 0x800;
        *(.sdata .sdata.*)
    }} > PRIVATE

    .bss : ALIGN(4)
    {{
        __bss_start = .;
        *(.sbss .sbss.*)
        *(.bss .bss.*)
        *(COMMON)
        . = ALIGN(4);
        __bss_end = .;
    }} > PRIVATE

    /DISCARD/ : {{ *(.comment) *(.note .note.*) *(.eh_frame .eh_frame_hdr) }}
}}

{assertion}
"""


def linker_script(cfg: ClusterConfig) -> str:
    """The linker script for ``cfg``: the private memory, the stack at its top, the
    L1 and register bases of the map, and an ASSERT that fails the link with a clear
    message when code, data and bss reach into the stack."""
    return _script(cfg, checked=True)


# ---------------------------------------------------------------------------- ELF


@dataclass(frozen=True)
class _Section:
    name: str
    kind: int
    flags: int
    size: int


_SHF_WRITE, _SHF_ALLOC = 0x1, 0x2
_SHT_NOBITS = 8
_PT_LOAD = 1


def _read_elf(path: Path) -> tuple[list[_Section], list[tuple[int, bytes]]]:
    """Sections, and the (address, bytes) of every loadable segment with file contents."""
    raw = path.read_bytes()
    if raw[:4] != b"\x7fELF" or raw[4] != 1 or raw[5] != 1:
        raise FirmwareError(f"{path}: not a 32-bit little-endian ELF file")
    (phoff, shoff) = struct.unpack_from("<II", raw, 0x1C)
    (phentsize, phnum, shentsize, shnum, shstrndx) = struct.unpack_from("<HHHHH", raw, 0x2A)
    headers = [struct.unpack_from("<10I", raw, shoff + i * shentsize) for i in range(shnum)]
    strtab = headers[shstrndx][4]

    def name(offset: int) -> str:
        end = raw.index(b"\0", strtab + offset)
        return raw[strtab + offset : end].decode()

    sections = [_Section(name(h[0]), h[1], h[2], h[5]) for h in headers]
    segments = []
    for i in range(phnum):
        kind, offset, _vaddr, paddr, filesz, _memsz, _flags, _align = struct.unpack_from(
            "<8I", raw, phoff + i * phentsize
        )
        if kind == _PT_LOAD and filesz:
            segments.append((paddr, raw[offset : offset + filesz]))
    return sections, segments


def _sizes(cfg: ClusterConfig, sections: list[_Section]) -> FirmwareSizes:
    text = data = bss = 0
    for s in sections:
        if not s.flags & _SHF_ALLOC:
            continue
        if s.kind == _SHT_NOBITS:
            bss += s.size
        elif s.flags & _SHF_WRITE:
            data += s.size
        else:
            text += s.size
    return FirmwareSizes(text, data, bss, cfg.core.private_bytes, cfg.core.stack_bytes)


def _image_words(segments: list[tuple[int, bytes]], origin: int) -> np.ndarray:
    end = max((addr + len(chunk) for addr, chunk in segments), default=origin)
    image = bytearray((end - origin + 3) // 4 * 4)
    for addr, chunk in segments:
        image[addr - origin : addr - origin + len(chunk)] = chunk
    words = np.frombuffer(bytes(image), dtype="<u4").astype(np.uint32)
    words.flags.writeable = False
    return words


# ---------------------------------------------------------------------------- build


def rv32_gcc() -> str:
    """Path of ``riscv64-unknown-elf-gcc``, or a :class:`FirmwareError` saying how to get it."""
    exe = shutil.which(RV32_GCC)
    if exe is None:
        raise FirmwareError(f"{RV32_GCC} is not on PATH: {INSTALL_HINT}")
    return exe


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def _failed(what: str, output: str) -> FirmwareError:
    """``what failed: <first error>`` on one line, then the tool's next lines."""
    # ld prefixes its messages with its full path; collect2 only sums up.
    lines = [re.sub(r"^\S*/ld: ", "ld: ", ln) for ln in output.splitlines() if ln.strip()]
    start = next(
        (i for i, ln in enumerate(lines) if _PROBLEM.search(ln) and not ln.startswith("collect2:")),
        0,
    )
    quoted = lines[start : start + _ERROR_LINES] or ["(no output)"]
    return FirmwareError("\n".join([f"{what} failed: {quoted[0].strip()}", *quoted[1:]]))


@functools.lru_cache(maxsize=4)
def _gcc_version(gcc: str) -> str:
    return _run([gcc, "--version"], Path.cwd()).stdout.partition("\n")[0]


def _build_hash(
    gcc: str, header: str, script: str, sources: list[Path], cflags: Sequence[str]
) -> str:
    h = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        h.update(f"{label}\0{len(data)}\0".encode())
        h.update(data)

    add("builder", Path(__file__).read_bytes())
    add("gcc", _gcc_version(gcc).encode())
    add("flags", json.dumps([*ARCH, *CFLAGS, *cflags]).encode())
    add(HEADER_NAME, header.encode())
    add(LINKER_SCRIPT_NAME, script.encode())
    for path in [*(SDK_DIR / s for s in SDK_SOURCES), *sorted(SDK_DIR.glob("*.h"))]:
        add(f"sdk/{path.name}", path.read_bytes())
    folders = []
    for path in sources:
        add(f"src/{path}", path.read_bytes())
        if path.parent not in folders:
            folders.append(path.parent)
    # Headers beside the user's sources and in -I folders may be included; they count too.
    folders += [Path(f[2:]) for f in cflags if f.startswith("-I") and Path(f[2:]) not in folders]
    for folder in folders:
        for header_path in sorted(folder.glob("*.h")):
            add(f"inc/{header_path}", header_path.read_bytes())
    return h.hexdigest()[:16]


def _compile(gcc: str, src: Path, obj: Path, includes: list[Path], cflags: Sequence[str]) -> None:
    flags = [*ARCH, "-g"] if src.suffix == ".S" else [*ARCH, *CFLAGS, *cflags]
    cmd = [gcc, *flags, *(f"-I{d}" for d in includes), "-c", str(src), "-o", str(obj)]
    run = _run(cmd, obj.parent)
    if run.returncode != 0:
        raise _failed(f"compiling {src.name}", run.stderr)


def _link(gcc: str, objs: list[Path], script: Path, elf: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        gcc,
        *ARCH,
        "-nostdlib",
        f"-T{script}",
        "-Wl,--gc-sections",
        "-Wl,--no-warn-rwx-segments",  # one region holds code and data, by design
        f"-Wl,-Map={elf.with_suffix('.map')}",
        *map(str, objs),
        "-lgcc",  # 64-bit division and the like
        "-o",
        str(elf),
    ]
    return _run(cmd, elf.parent)


def _too_big(
    cfg: ClusterConfig, gcc: str, name: str, objs: list[Path], folder: Path
) -> FirmwareError:
    """Links again without the limit to measure, and says by how much it does not fit."""
    script = folder / "measure.ld"
    script.write_text(_script(cfg, checked=False))
    elf = folder / f"{name}.measure.elf"
    run = _link(gcc, objs, script, elf)
    if run.returncode != 0:
        return _failed(f"linking {name}", run.stderr)
    sizes = _sizes(cfg, _read_elf(elf)[0])
    room = cfg.core.private_bytes - cfg.core.stack_bytes
    return FirmwareError(
        f"{name} does not fit: text {sizes.text} + data {sizes.data} + bss {sizes.bss} = "
        f"{sizes.total} bytes, but {cfg.core.private_bytes} bytes of private memory less "
        f"{cfg.core.stack_bytes} of stack leave {room} (over by {sizes.total - room}); "
        "shrink the program or raise core.private_bytes"
    )


def _build(
    cfg: ClusterConfig,
    gcc: str,
    name: str,
    sources: list[Path],
    cflags: Sequence[str],
    header: str,
    script: str,
    folder: Path,
) -> None:
    """Compile and link into ``folder``; the stamp file is written last."""
    for stale in folder.glob("*"):
        if stale.name != ".lock":
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink()
    (folder / HEADER_NAME).write_text(header)
    (folder / LINKER_SCRIPT_NAME).write_text(script)
    objs = []
    all_sources = [*(SDK_DIR / s for s in SDK_SOURCES), *sources]
    for i, src in enumerate(all_sources):
        obj = folder / f"{i:02d}_{src.stem}.o"
        includes = [folder, SDK_DIR, src.parent]
        _compile(gcc, src, obj, includes, cflags)
        objs.append(obj)
    elf = folder / f"{name}.elf"
    run = _link(gcc, objs, folder / LINKER_SCRIPT_NAME, elf)
    if run.returncode != 0:
        if _FIT_MESSAGE in run.stderr or "overflowed by" in run.stderr:
            raise _too_big(cfg, gcc, name, objs, folder)
        raise _failed(f"linking {name}", run.stderr)
    words = _image_words(_read_elf(elf)[1], _origin(cfg))
    (folder / f"{name}.bin").write_bytes(words.astype("<u4").tobytes())
    (folder / f"{name}.hex").write_text("".join(f"{int(w):08x}\n" for w in words))
    (folder / "done").write_text("")


def build_firmware(
    cfg: ClusterConfig,
    sources: Sequence[Path],
    out_dir: Path,
    *,
    cflags: Sequence[str] = (),
) -> FirmwareImage:
    """Build ``sources`` with the SDK for ``cfg`` and copy the results into ``out_dir``.

    Parameters
    ----------
    cfg : ClusterConfig
        The configuration: ``tinyattn_regs.h`` and the linker script come from it.
    sources : sequence of Path
        The program's C (or ``.S``) files; the first names the image (``hello.c`` gives
        ``hello.elf``). Their folders are on the include path.
    out_dir : Path
        Receives ``<name>.elf``, ``.bin``, ``.hex``, ``.map``, ``tinyattn_regs.h`` and
        ``link.ld``.
    cflags : sequence of str
        Extra C flags (e.g. ``-DNAME=1``), after the SDK's; not used for ``.S`` files.

    Raises
    ------
    FirmwareError
        No compiler, no sources, a compile or link error, or an image that does not fit.
    """
    paths = [Path(s).resolve() for s in sources]
    if not paths:
        raise FirmwareError("build_firmware: no sources given")
    for path in paths:
        if not path.is_file():
            raise FirmwareError(f"firmware source {path} does not exist")
    gcc = rv32_gcc()
    name = paths[0].stem
    header = c_header(cfg)
    script = linker_script(cfg)
    build_hash = _build_hash(gcc, header, script, paths, cflags)
    folder = build_root() / "firmware" / build_hash
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / ".lock"):
        if not (folder / "done").exists():
            _build(cfg, gcc, name, paths, cflags, header, script, folder)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for file in (
        HEADER_NAME,
        LINKER_SCRIPT_NAME,
        *(f"{name}.{x}" for x in ("elf", "bin", "hex", "map")),
    ):
        shutil.copyfile(folder / file, out_dir / file)
    sections, segments = _read_elf(out_dir / f"{name}.elf")
    return FirmwareImage(
        name=name,
        elf=out_dir / f"{name}.elf",
        bin=out_dir / f"{name}.bin",
        hex=out_dir / f"{name}.hex",
        sizes=_sizes(cfg, sections),
        build_hash=build_hash,
        config_hash=cfg.stable_hash(),
        words=_image_words(segments, _origin(cfg)),
    )


def exit_code_names() -> dict[int, str]:
    """The SDK's own exit codes (``TA_EXIT_*`` of ``tinyattn_console.h``) by value."""
    text = (SDK_DIR / "tinyattn_console.h").read_text()
    return {
        int(value, 16): name
        for name, value in re.findall(r"#define (TA_EXIT_\w+) (0x[0-9A-Fa-f]+)u", text)
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build sources for a configuration and print the sizes."""
    p = argparse.ArgumentParser(prog="python -m tinyattn.sw.firmware", description=__doc__)
    p.add_argument("sources", nargs="+", type=Path, help="C or .S files; the first names the image")
    p.add_argument("--config", metavar="FILE", help="configuration (TOML); default: reference")
    p.add_argument("--out", metavar="DIR", type=Path, required=True, help="output folder")
    p.add_argument("--cflag", action="append", default=[], help="extra C flag (repeatable)")
    args = p.parse_args(argv)
    cfg = ClusterConfig.load(args.config) if args.config else ClusterConfig()
    try:
        image = build_firmware(cfg, args.sources, args.out, cflags=args.cflag)
    except FirmwareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{image.elf}: {image.sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
