"""The firmware SDK (``sw/firmware/``) and its builder (``tinyattn.sw.firmware``).

- rv32 (Debian's ``riscv64-unknown-elf-gcc``; skipped loudly when it is missing):
  ``hello.c`` and a program that calls every HAL function build with ``-Werror``; the
  image starts with crt0 (IRQ vector 0x10 holds ``ebreak``); the sizes add up; the linker
  script carries the configuration; a program too large for the private memory, or one
  whose .bss reaches the stack, is refused with the sizes; a compile error quotes the
  compiler; builds are cached and deterministic.
- host (gcc, no simulator): the HAL, the console and ``hello.c`` run against a fake
  register block that logs every access and models the queues, the done counters and
  the events. The log is checked against the register map: the registers each job and
  descriptor writes and their values, the queue-room wait (the fake starts full and
  fails a push into a full queue), the race-free sleep (clear, test, waitirq), tickets,
  the polling waits, soft clear, errors, counters, printf and the exit codes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pytest

from tinyattn.config import ClusterConfig, CoreConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.hw.cluster_registers import register_map
from tinyattn.hw.dma import Direction
from tinyattn.hw.job import FLAG_AFFINE, FLAG_PER_HEAD, FLAG_RELU, FLAG_RESIDUAL, Job, Op
from tinyattn.hw.registers import MemoryMap, PortBinding
from tinyattn.sw import firmware
from tinyattn.sw.firmware import (
    SDK_DIR,
    FirmwareError,
    build_firmware,
    exit_code_names,
    linker_script,
)
from tinyattn.sw.regmap_emit import HEADER_NAME, c_header

SMALL = ClusterConfig(
    engine=EngineConfig(n_pe=4, vec_len=16, acc_bits=24, tile_m=8, max_seq=64, job_queue_depth=3),
    memory=MemoryConfig(n_banks=8, bank_words=512),
    dma=DmaConfig(dma_bits=32, queue_depth=3, l2_addr_bits=20),
)
CONFIGS = {"small": SMALL, "default": ClusterConfig()}
HELLO = SDK_DIR / "hello.c"
HOST_FLAGS = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2"]


@pytest.fixture
def rv32() -> str:
    if shutil.which(firmware.RV32_GCC) is None:
        pytest.skip(
            f"!!! {firmware.RV32_GCC} MISSING: the rv32 firmware builds did NOT run; "
            "install it with `apt-get install gcc-riscv64-unknown-elf` (`make test` does) !!!"
        )
    return firmware.RV32_GCC


def _objdump(elf: Path, *args: str) -> str:
    exe = shutil.which("riscv64-unknown-elf-objdump")
    if exe is None:
        pytest.skip(
            "!!! riscv64-unknown-elf-objdump MISSING (binutils-riscv64-unknown-elf): "
            "the image checks did NOT run !!!"
        )
    return subprocess.run([exe, *args, str(elf)], capture_output=True, text=True, check=True).stdout


def _symbols(elf: Path) -> dict[str, int]:
    out = _objdump(elf, "-t")
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and re.fullmatch(r"[0-9a-f]{8}", parts[0]):
            found[parts[-1]] = int(parts[0], 16)
    return found


# ---------------------------------------------------------------------------- rv32 builds


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hello_builds_for_rv32(rv32: str, name: str, tmp_path: Path) -> None:
    cfg = CONFIGS[name]
    image = build_firmware(cfg, [HELLO], tmp_path)
    s = image.sizes
    # crt0, ta_init, the console and hello itself: a few KiB of code, almost no data.
    assert 800 < s.text < 4096, s
    assert s.data < 64 and s.bss < 64, s
    assert s.total == s.text + s.data + s.bss
    assert s.private_bytes == cfg.core.private_bytes and s.stack_bytes == cfg.core.stack_bytes
    assert s.percent == pytest.approx(100 * s.total / cfg.core.private_bytes)
    assert s.free == cfg.core.private_bytes - cfg.core.stack_bytes - s.total
    # The image is .text, .rodata and .data from address 0; .bss is zeroed by crt0.
    assert image.words.dtype == np.uint32
    assert 0 <= len(image.words) * 4 - (s.text + s.data) < 8  # alignment padding only
    assert image.bin.read_bytes() == image.image_bytes()
    hex_words = [int(w, 16) for w in image.hex.read_text().split()]
    assert hex_words == [int(w) for w in image.words]
    for produced in (
        image.elf,
        tmp_path / HEADER_NAME,
        tmp_path / "link.ld",
        tmp_path / "hello.map",
    ):
        assert produced.is_file(), produced
    assert (tmp_path / HEADER_NAME).read_text() == c_header(cfg)
    assert f"{cfg.core.private_bytes} bytes private memory" in str(s)

    # crt0: a jump at 0, ebreak at the IRQ vector 0x10, the entry point at 0.
    disassembly = _objdump(image.elf, "-d")
    assert re.search(r"^\s+0:\s+\w+\s+j\s", disassembly, re.M), disassembly[:800]
    assert re.search(r"^\s+10:\s+9002\s+ebreak", disassembly, re.M), disassembly[:800]
    assert image.words[4] & 0xFFFF == 0x9002  # c.ebreak
    syms = _symbols(image.elf)
    assert syms["_start"] == 0
    assert syms["__stack_top"] == cfg.core.private_bytes
    assert syms["__bss_end"] <= cfg.core.private_bytes - cfg.core.stack_bytes
    # --gc-sections dropped the HAL functions hello does not call.
    assert "ta_init" in syms and "ta_job_submit" not in syms


API_USE = r"""
#include "tinyattn_hal.h"

/* Calls every function of the HAL and the console once, so that all of it is linked. */
int main(void)
{
    ta_job_t job = {0};
    ta_dma_t dma = {0};
    ta_errors_t errors;
    ta_perf_t perf;
    uint64_t t0 = ta_cycles64();

    ta_init();
    job.op = TINYATTN_OP_GEMM;
    job.flags = TINYATTN_FLAG_RESIDUAL | TINYATTN_FLAG_AFFINE;
    ta_job_wait(ta_job_submit(&job));
    job.op = TINYATTN_OP_ATTENTION;
    job.heads = 2;
    ta_job_wait_poll(ta_job_submit(&job));
    ta_job_stage(&job);
    ta_job_wait(ta_job_push());
    ta_job_wait_all();
    ta_dma_wait(ta_dma_submit(&dma));
    ta_dma_wait_poll(ta_dma_submit(&dma));
    ta_dma_wait_all();
    TA_CHECK(ta_job_done(ta_job_last()) && ta_dma_done(ta_dma_last()));
    ta_engine_clear();
    ta_dma_clear();
    if (ta_errors_read(&errors))
        ta_errors_clear();
    ta_perf_read(&perf);
    ta_printf("%lu %p %c\n", (unsigned long)(ta_cycles64() - t0), TA_L1(64), 'x');
    ta_puts("done");
    return (int)(perf.macs + ta_engine_macs() + ta_cycles());
}
"""


def test_every_hal_function_links_for_rv32(rv32: str, tmp_path: Path) -> None:
    src = tmp_path / "api_use.c"
    src.write_text(API_USE)
    image = build_firmware(ClusterConfig(), [src], tmp_path / "out")
    syms = _symbols(image.elf)
    for fn in ("ta_job_submit", "ta_job_stage", "ta_job_push", "ta_dma_submit", "ta_errors_read",
               "ta_engine_clear"):  # fmt: skip
        assert fn in syms, fn
    disassembly = _objdump(image.elf, "-d")
    # PicoRV32's waitirq: custom-0, funct3 4, funct7 4, rs1 = rs2 = x0.
    waitirq = [
        int(m, 16)
        for m in re.findall(r"^\s+[0-9a-f]+:\s+([0-9a-f]{8})\s", disassembly, re.M)
        if int(m, 16) & 0xFFFFF07F == 0x0800400B
    ]
    assert waitirq, "no waitirq instruction in the HAL"
    assert "rdcycleh" in disassembly and "rdcycle\t" in disassembly
    assert image.sizes.total < 8192, image.sizes


def test_linker_script_encodes_the_config(rv32: str, tmp_path: Path) -> None:
    cfg = ClusterConfig(core=CoreConfig(private_bytes=4096, stack_bytes=512))
    script = linker_script(cfg)
    assert "ORIGIN = 0x00000000, LENGTH = 0x00001000" in script
    assert "__stack_bytes = 0x00000200;" in script
    consts = {c.name: c.value for c in register_map(cfg).constants}
    assert f"__tinyattn_l1_base = 0x{consts['L1_BASE']:08X};" in script
    assert f"__tinyattn_regs_base = 0x{consts['REGS_BASE']:08X};" in script
    assert f"__tinyattn_l1_bytes = 0x{consts['L1_BYTES']:08X};" in script
    assert "ASSERT(__bss_end <= __stack_limit" in script
    assert cfg.stable_hash() in script
    assert linker_script(cfg) == script  # deterministic
    assert "LENGTH = 0x00008000" in linker_script(ClusterConfig())

    image = build_firmware(cfg, [HELLO], tmp_path)
    assert image.sizes.private_bytes == 4096
    syms = _symbols(image.elf)
    assert syms["__stack_top"] == 4096
    assert syms["__stack_limit"] == 4096 - 512
    assert syms["__tinyattn_regs_base"] == consts["REGS_BASE"]


def test_oversized_code_is_refused(rv32: str, tmp_path: Path) -> None:
    src = tmp_path / "big.c"
    src.write_text(
        "#include <stdint.h>\n"
        "const uint8_t table[40000] = {1};\n"
        "volatile int i = 12345;\n"
        "int main(void) { return table[i]; }\n"
    )
    with pytest.raises(FirmwareError) as info:
        build_firmware(ClusterConfig(), [src], tmp_path / "out")
    msg = str(info.value)
    assert msg.startswith("big does not fit: text "), msg
    text = int(re.search(r"text (\d+)", msg)[1])  # type: ignore[index]
    assert text >= 40000
    assert "32768 bytes of private memory less 4096 of stack leave 28672" in msg
    over = int(re.search(r"over by (\d+)", msg)[1])  # type: ignore[index]
    total = int(re.search(r"= (\d+) bytes", msg)[1])  # type: ignore[index]
    assert over == total - 28672 > 0
    assert "\n" not in msg


def test_bss_reaching_the_stack_is_refused(rv32: str, tmp_path: Path) -> None:
    # Fits the memory, but not beside the stack: only the linker script's ASSERT sees it.
    src = tmp_path / "buffers.c"
    src.write_text(
        "#include <stdint.h>\n"
        "static volatile uint8_t buffer[3050];\n"
        "int main(void) { buffer[7] = 1; return buffer[3049]; }\n"
    )
    cfg = ClusterConfig(core=CoreConfig(private_bytes=4096, stack_bytes=1024))
    with pytest.raises(FirmwareError, match=r"^buffers does not fit: .* bss 30\d\d ") as info:
        build_firmware(cfg, [src], tmp_path / "out")
    assert "4096 bytes of private memory less 1024 of stack leave 3072" in str(info.value)
    # The same program fits a stack of 512 bytes.
    ok = ClusterConfig(core=CoreConfig(private_bytes=4096, stack_bytes=512))
    assert build_firmware(ok, [src], tmp_path / "ok").sizes.bss >= 3050


def test_compile_errors_quote_the_compiler(rv32: str, tmp_path: Path) -> None:
    src = tmp_path / "broken.c"
    src.write_text("int main(void)\n{\n    return undefined_thing;\n}\n")
    with pytest.raises(FirmwareError) as info:
        build_firmware(ClusterConfig(), [src], tmp_path / "out")
    msg = str(info.value)
    first = msg.splitlines()[0]
    assert first.startswith("compiling broken.c failed: "), msg
    assert "broken.c:3" in first and "error" in first and "undefined_thing" in first, msg

    # A link error names the missing symbol.
    src.write_text("void nowhere(void);\nint main(void)\n{\n    nowhere();\n    return 0;\n}\n")
    with pytest.raises(
        FirmwareError, match=r"^linking broken failed: .*undefined reference to `nowhere'"
    ):
        build_firmware(ClusterConfig(), [src], tmp_path / "out")

    # -Werror: a warning fails the build as well.
    src.write_text("int main(void)\n{\n    int unused;\n    return 0;\n}\n")
    with pytest.raises(FirmwareError, match=r"unused variable"):
        build_firmware(ClusterConfig(), [src], tmp_path / "out")


def test_missing_compiler_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(firmware.shutil, "which", lambda name: None)
    with pytest.raises(FirmwareError) as info:
        build_firmware(ClusterConfig(), [HELLO], tmp_path)
    msg = str(info.value)
    assert "riscv64-unknown-elf-gcc is not on PATH" in msg
    assert "apt-get install gcc-riscv64-unknown-elf" in msg and "make test" in msg
    with pytest.raises(FirmwareError, match="does not exist"):
        build_firmware(ClusterConfig(), [tmp_path / "nothing.c"], tmp_path)
    with pytest.raises(FirmwareError, match="no sources"):
        build_firmware(ClusterConfig(), [], tmp_path)


def test_builds_are_cached_and_deterministic(
    rv32: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TINYATTN_BUILD_DIR", str(tmp_path / "build-a"))
    first = build_firmware(ClusterConfig(), [HELLO], tmp_path / "a")
    cached = tmp_path / "build-a" / "firmware" / first.build_hash
    assert (cached / "hello.elf").is_file()

    def no_compiler(*args: object) -> None:
        raise AssertionError("the compiler ran for a cached build")

    with monkeypatch.context() as m:
        m.setattr(firmware, "_compile", no_compiler)
        again = build_firmware(ClusterConfig(), [HELLO], tmp_path / "a2")
    assert (again.build_hash, again.sizes) == (first.build_hash, first.sizes)
    assert np.array_equal(again.words, first.words)

    # Any input changes the hash: flags, configuration.
    other = build_firmware(ClusterConfig(), [HELLO], tmp_path / "b", cflags=["-DHELLO_EXIT_CODE=7"])
    assert other.build_hash != first.build_hash
    small = build_firmware(SMALL, [HELLO], tmp_path / "c")
    assert small.build_hash != first.build_hash

    # Built again from scratch: the same ELF byte for byte; elsewhere the same image.
    elf = first.elf.read_bytes()
    shutil.rmtree(cached)
    assert build_firmware(ClusterConfig(), [HELLO], tmp_path / "d").elf.read_bytes() == elf
    monkeypatch.setenv("TINYATTN_BUILD_DIR", str(tmp_path / "build-b"))
    moved = build_firmware(ClusterConfig(), [HELLO], tmp_path / "e")
    assert moved.build_hash == first.build_hash
    assert moved.hex.read_text() == first.hex.read_text()


def test_included_headers_are_part_of_the_cache_key(rv32: str, tmp_path: Path) -> None:
    """A generated header in an -I folder (a scenario's tables) changes the build."""
    src, inc = tmp_path / "src", tmp_path / "inc"
    src.mkdir()
    inc.mkdir()
    (src / "prog.c").write_text('#include "value.h"\nint main(void) { return VALUE; }\n')
    (inc / "value.h").write_text("#define VALUE 1\n")
    first = build_firmware(SMALL, [src / "prog.c"], tmp_path / "a", cflags=[f"-I{inc}"])
    (inc / "value.h").write_text("#define VALUE 2\n")
    second = build_firmware(SMALL, [src / "prog.c"], tmp_path / "b", cflags=[f"-I{inc}"])
    assert second.build_hash != first.build_hash
    assert not np.array_equal(second.words, first.words)


def test_exit_codes_are_read_from_the_header() -> None:
    names = exit_code_names()
    assert names[0] == "TA_EXIT_OK"
    assert names[0xE0000001] == "TA_EXIT_CHECK"
    assert names[0xE0000002] == "TA_EXIT_CONFIG"


# ---------------------------------------------------------------------------- host runs

FAKE_H = r"""
/* fake.h: routes every register access of the SDK into the fake register block. */
#ifndef FAKE_H
#define FAKE_H
#include <stdint.h>

uint32_t fake_read(uint32_t offset);
void fake_write(uint32_t offset, uint32_t value);
#define TINYATTN_REG_READ(base, offset) ((void)(base), fake_read(offset))
#define TINYATTN_REG_WRITE(base, offset, value) \
    ((void)(base), fake_write((offset), (uint32_t)(value)))

struct fake_queue {
    uint32_t running, level, pending, done, depth, event;
    uint32_t foreign; /* outstanding from before ta_init: they finish without counting */
};
extern struct fake_queue fake_engine, fake_dma;
extern uint32_t fake_regs[], fake_irq_status, fake_engine_error, fake_dma_error;
extern int fake_polling;  /* the done counters move on at every read, waitirq is an error */
extern unsigned fake_advance; /* what moves on while the core sleeps: 1 engine, 2 DMA */
extern const char *fake_scenario;
#endif
"""

FAKE_C = r"""
/* fake.c: a register block for host runs. Every access is logged on stdout:
   "R <offset> <value>", "W <offset> <value>", "WAITIRQ", "EXIT <code>". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tinyattn_hal.h"

#define E(name) TINYATTN_##name

/* Both queues start full, so that the first push must wait for room: the engine with
   `depth` jobs queued behind a running one, the DMA with depth - 1 queued and a pending
   push. The done counters start at 5 and 7 and count only what the HAL pushed. */
struct fake_queue fake_engine = {1, E(JOB_QUEUE_DEPTH), 0, 5, E(JOB_QUEUE_DEPTH),
                                 E(EVENTS_IRQ_STATUS_ENGINE_DONE_MASK), 1 + E(JOB_QUEUE_DEPTH)};
struct fake_queue fake_dma = {1, E(DMA_QUEUE_DEPTH) - 1, 1, 7, E(DMA_QUEUE_DEPTH),
                              E(EVENTS_IRQ_STATUS_DMA_DONE_MASK), 1 + E(DMA_QUEUE_DEPTH)};
uint32_t fake_regs[E(REGS_SIZE) / 4];
uint32_t fake_irq_status, fake_engine_error, fake_dma_error;
int fake_polling;
unsigned fake_advance = 3u;
const char *fake_scenario = "";
static uint32_t irq_enable, macs_latch;
static int macs_latched;

int firmware_main(void);

static void violation(const char *what)
{
    printf("VIOLATION %s\n", what);
    exit(3);
}

/* The running job (transfer) finishes; the next one starts, a pending push enters. */
static void finish_one(struct fake_queue *q)
{
    if (!q->running)
        return;
    if (q->foreign)
        q->foreign--;
    else
        q->done++;
    fake_irq_status |= q->event;
    if (q->level) {
        q->level--;
        if (q->pending) {
            q->pending = 0;
            q->level++;
        }
    } else {
        q->running = 0;
    }
}

static void push(struct fake_queue *q, const char *what)
{
    if (q->level + q->pending >= q->depth)
        violation(what);
    if (q->running)
        q->level++;
    else
        q->running = 1;
}

static void clear(struct fake_queue *q)
{
    q->running = q->level = q->pending = q->foreign = 0;
}

static uint32_t status(const struct fake_queue *q, uint32_t busy_shift, uint32_t pending_shift,
                       uint32_t level_shift)
{
    return (uint32_t)(q->running || q->level) << busy_shift | q->pending << pending_shift
           | q->level << level_shift;
}

uint32_t fake_read(uint32_t offset)
{
    uint32_t v;

    switch (offset) {
    case E(CLUSTER_CONFIG_HASH_OFFSET):
        v = strcmp(fake_scenario, "wrong_config") ? E(CONFIG_HASH) : 0x12345678u;
        break;
    case E(ENGINE_STATUS_OFFSET):
        v = status(&fake_engine, E(ENGINE_STATUS_BUSY_SHIFT), E(ENGINE_STATUS_PUSH_PENDING_SHIFT),
                   E(ENGINE_STATUS_QUEUED_SHIFT))
            | fake_engine_error << E(ENGINE_STATUS_ERROR_CODE_SHIFT);
        break;
    case E(ENGINE_JOBS_DONE_OFFSET):
        if (fake_polling)
            finish_one(&fake_engine);
        v = fake_engine.done;
        break;
    case E(DMA_STATUS_OFFSET):
        v = status(&fake_dma, E(DMA_STATUS_BUSY_SHIFT), E(DMA_STATUS_PUSH_PENDING_SHIFT),
                   E(DMA_STATUS_QUEUE_LEVEL_SHIFT))
            | (fake_dma_error ? E(DMA_STATUS_ERROR_MASK) : 0u)
            | fake_dma_error << E(DMA_STATUS_ERROR_CODE_SHIFT);
        break;
    case E(DMA_DONE_COUNT_OFFSET):
        if (fake_polling)
            finish_one(&fake_dma);
        v = fake_dma.done;
        break;
    case E(EVENTS_IRQ_STATUS_OFFSET):
        v = fake_irq_status;
        break;
    case E(EVENTS_IRQ_ENABLE_OFFSET):
        v = irq_enable;
        break;
    case E(ENGINE_MACS_LO_OFFSET):
        v = 0x89ABCDEFu;
        macs_latch = 0x12u;
        macs_latched = 1;
        break;
    case E(ENGINE_MACS_HI_OFFSET):
        if (!macs_latched)
            violation("MACS_HI read before MACS_LO");
        v = macs_latch;
        macs_latched = 0;
        break;
    default:
        v = fake_regs[offset / 4];
    }
    printf("R %03x %08x\n", (unsigned)offset, (unsigned)v);
    return v;
}

void fake_write(uint32_t offset, uint32_t value)
{
    printf("W %03x %08x\n", (unsigned)offset, (unsigned)value);
    switch (offset) {
    case E(ENGINE_JOB_PUSH_OFFSET):
        push(&fake_engine, "a job pushed into a full queue");
        break;
    case E(DMA_PUSH_OFFSET):
        push(&fake_dma, "a descriptor pushed into a full queue");
        break;
    case E(ENGINE_CTRL_OFFSET):
        if (value & E(ENGINE_CTRL_CLEAR_MASK))
            clear(&fake_engine);
        break;
    case E(DMA_CTRL_OFFSET):
        if (value & E(DMA_CTRL_CLEAR_MASK))
            clear(&fake_dma);
        if (value & (E(DMA_CTRL_CLEAR_MASK) | E(DMA_CTRL_ERROR_ACK_MASK)))
            fake_dma_error = 0;
        break;
    case E(EVENTS_IRQ_STATUS_OFFSET):
        fake_irq_status &= ~value;
        break;
    case E(EVENTS_IRQ_ENABLE_OFFSET):
        irq_enable = value;
        break;
    case E(HOST_EXIT_OFFSET):
        printf("EXIT %08x\n", (unsigned)value);
        exit(0);
    default:
        fake_regs[offset / 4] = value;
    }
}

uint32_t ta_waitirq(void)
{
    printf("WAITIRQ\n");
    if (fake_polling)
        violation("waitirq in a polling wait");
    if (!(fake_irq_status & irq_enable)) {
        /* Asleep until an enabled event: the engine and the DMA each finish one. */
        if (fake_advance & 1u)
            finish_one(&fake_engine);
        if (fake_advance & 2u)
            finish_one(&fake_dma);
        if (!(fake_irq_status & irq_enable))
            violation("asleep for ever: no enabled event can come");
    }
    return 1u << 3;
}

static uint32_t now;

uint32_t ta_cycles(void)
{
    return now += 100u;
}

uint64_t ta_cycles64(void)
{
    return now += 100u;
}

int main(int argc, char **argv)
{
    fake_scenario = argc > 1 ? argv[1] : "";
#include "reset_values.inc"
    if (!strcmp(fake_scenario, "bad_n_pe"))
        fake_regs[E(CLUSTER_N_PE_OFFSET) / 4] = 99u;
    ta_exit((uint32_t)firmware_main()); /* as crt0 does */
}
"""

SCENARIOS_C = r"""
/* scenarios.c: the HAL driven as firmware would, one scenario per run. */
#include <stdio.h>
#include <string.h>

#include "tinyattn_hal.h"

void *sdk_memset(void *dst, int c, size_t n);
void *sdk_memcpy(void *dst, const void *src, size_t n);
void *sdk_memmove(void *dst, const void *src, size_t n);
int sdk_memcmp(const void *a, const void *b, size_t n);

static const ta_job_t jobs[] = {
@JOBS@
};
static const ta_dma_t descriptors[] = {
@DESCRIPTORS@
};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void submit(void)
{
    unsigned i;

    /* While jobs are submitted only the engine moves on, so that the DMA is still full
       when descriptors are; each room wait sleeps once. */
    fake_advance = 1u;
    for (i = 0; i < COUNT(jobs); i++) {
        printf("MARK job %u\n", i);
        printf("TICKET %u\n", (unsigned)ta_job_submit(&jobs[i]));
    }
    fake_advance = 2u;
    for (i = 0; i < COUNT(descriptors); i++) {
        printf("MARK dma %u\n", i);
        printf("TICKET %u\n", (unsigned)ta_dma_submit(&descriptors[i]));
    }
    fake_advance = 3u;
    printf("MARK wait\n");
    ta_job_wait_all();
    ta_dma_wait(ta_dma_last());
    printf("MARK done\n");
    printf("DONE %d %d\n", ta_job_done(ta_job_last()), ta_dma_done(ta_dma_last()));

    uint32_t job = ta_job_submit(&jobs[0]);
    uint32_t dma = ta_dma_submit(&descriptors[0]);
    fake_polling = 1;
    printf("MARK poll\n");
    ta_job_wait_poll(job);
    ta_dma_wait_poll(dma);
    fake_polling = 0;

    printf("MARK more\n");
    ta_job_submit(&jobs[1]);
    ta_dma_submit(&descriptors[1]);
    printf("MARK clear\n");
    ta_engine_clear();
    ta_dma_clear();
    printf("MARK after\n");
    printf("TICKET %u\n", (unsigned)ta_job_submit(&jobs[0]));
    printf("TICKET %u\n", (unsigned)ta_dma_submit(&descriptors[0]));
}

/* ta_job_submit's halves: stage (room wait, staging writes), then push. */
static void split(void)
{
    printf("MARK stage\n");
    ta_job_stage(&jobs[0]);
    printf("MARK push\n");
    printf("TICKET %u\n", (unsigned)ta_job_push());
    printf("MARK submit\n");
    printf("TICKET %u\n", (unsigned)ta_job_submit(&jobs[0]));
}

static void errors(void)
{
    ta_errors_t e;
    int any;

    fake_irq_status = TINYATTN_EVENTS_IRQ_STATUS_ENGINE_ERROR_MASK
                      | TINYATTN_EVENTS_IRQ_STATUS_BUS_ERROR_MASK;
    fake_engine_error = TINYATTN_JOB_ERROR_MISALIGNED;
    fake_dma_error = TINYATTN_DMA_ERROR_L1_RANGE;
    any = ta_errors_read(&e);
    printf("ERRORS %u %u %u %u %d\n", (unsigned)e.engine_rejected, (unsigned)e.engine_code,
           (unsigned)e.dma_code, (unsigned)e.bus, any);
    printf("MARK clear\n");
    ta_errors_clear();
    printf("MARK after\n");
    any = ta_errors_read(&e);
    printf("ERRORS %u %u %u %u %d\n", (unsigned)e.engine_rejected, (unsigned)e.engine_code,
           (unsigned)e.dma_code, (unsigned)e.bus, any);
}

static void perf(void)
{
    ta_perf_t p;

    fake_regs[TINYATTN_ENGINE_BUSY_CYCLES_OFFSET / 4] = 1000u;
    fake_regs[TINYATTN_ENGINE_STALL_CYCLES_OFFSET / 4] = 20u;
    fake_regs[TINYATTN_ENGINE_IDLE_CYCLES_OFFSET / 4] = 300u;
    ta_perf_read(&p);
    printf("PERF %u %u %u %llu\n", (unsigned)p.busy, (unsigned)p.stall, (unsigned)p.idle,
           (unsigned long long)p.macs);
}

static void string(void)
{
    unsigned char a[16], b[16];
    unsigned i;

    sdk_memset(a, 0xA5, sizeof a);
    for (i = 0; i < sizeof a; i++)
        TA_CHECK(a[i] == 0xA5);
    for (i = 0; i < sizeof b; i++)
        b[i] = (unsigned char)i;
    TA_CHECK(sdk_memcpy(a, b, sizeof a) == a && sdk_memcmp(a, b, sizeof a) == 0);
    sdk_memmove(a + 2, a, 10); /* overlapping, forwards */
    TA_CHECK(a[2] == 0 && a[11] == 9 && a[12] == 12);
    sdk_memmove(b, b + 3, 10); /* overlapping, backwards */
    TA_CHECK(b[0] == 3 && b[9] == 12 && b[10] == 10);
    TA_CHECK(sdk_memcmp(a, b, 1) < 0 && sdk_memcmp(b, a, 1) > 0 && sdk_memcmp(a, b, 0) == 0);
    printf("STRING ok\n");
}

int firmware_main(void)
{
    ta_init();
    printf("MARK main\n");
    if (!strcmp(fake_scenario, "submit"))
        submit();
    else if (!strcmp(fake_scenario, "split"))
        split();
    else if (!strcmp(fake_scenario, "errors"))
        errors();
    else if (!strcmp(fake_scenario, "perf"))
        perf();
    else if (!strcmp(fake_scenario, "string"))
        string();
    else if (!strcmp(fake_scenario, "printf")) {
        @PRINTF@;
        ta_printf("%p|%p\n", (void *)0x1234, (void *)0);
    }
    else if (!strcmp(fake_scenario, "check"))
        TA_CHECK(fake_polling == 42);
    else
        return 99;
    return 0;
}
"""

# ta_printf against Python's % (which ignores the 'l' modifier, as it must here).
PRINTF_FORMAT = (
    "[%d|%i|%u|%x|%X|%5d|%-5d|%05d|%c|%3c|%s|%8s|%-4s|%%|%ld|%lu|%lx|%08X|%d|%u|%s|%3d]\\n"
)
PRINTF_ARGS = [
    ("-42", -42),
    ("7", 7),
    ("4000000000u", 4000000000),
    ("0xbeefu", 0xBEEF),
    ("0xbeefu", 0xBEEF),
    ("42", 42),
    ("42", 42),
    ("-42", -42),
    ("'z'", "z"),
    ("'y'", "y"),
    ('"str"', "str"),
    ('"pad"', "pad"),
    ('"ab"', "ab"),
    ("-123456789L", -123456789),
    ("4000000000UL", 4000000000),
    ("0xdeadbeefUL", 0xDEADBEEF),
    ("0xABCDu", 0xABCD),
    ("(-2147483647 - 1)", -2147483648),
    ("0u", 0),
    ('""', ""),
    ("12345", 12345),
]


def _c_job(job: Job) -> str:
    parts = []
    for f in fields(job):
        v = getattr(job, f.name)
        if isinstance(v, tuple):
            parts.append(f".{f.name} = {{{v[0]}, {v[1]}, {v[2]}}}")
        else:
            parts.append(f".{f.name} = {int(v)}u")
    return "    {" + ", ".join(parts) + "},"


@dataclass(frozen=True)
class Descriptor:
    l2_addr: int
    l1_addr: int
    row_bytes: int
    rows: int
    l2_stride: int
    l1_stride: int
    direction: int


# Every field non-zero and distinct, so that a register written by mistake shows.
_ALL = dict(
    a_addr=0x100,
    a_stride=0x104,
    a_hstride=0x1000,
    b_addr=0x200,
    b_stride=0x208,
    b_hstride=0x2000,
    c_addr=0x300,
    c_stride=0x30C,
    c_hstride=0x3000,
    d_addr=0x400,
    d_stride=0x410,
    d_hstride=0x4000,
    p_addr=0x500,
    qk=(200, 17, -3),
    av=(100, 31, 127),
    res_y_mult=3,
    res_r_mult=250,
    res_shift=30,
    aff_shift=9,
)
JOBS = [
    Job(op=Op.GEMM, m=64, n=128, k=256, heads=1, flags=FLAG_RELU | FLAG_RESIDUAL, **_ALL),
    Job(op=Op.GEMM, m=8, n=4, k=12, heads=0, flags=FLAG_AFFINE, **_ALL),
    Job(op=Op.ATTENTION, m=32, n=64, k=16, heads=2, **_ALL),
    Job(op=Op.ATTENTION, m=16, n=16, k=4, heads=1, **{**_ALL, "qk": (1, 0, -128)}),
    Job(op=Op.ATTENTION, m=32, n=64, k=32, heads=4, flags=FLAG_PER_HEAD, **_ALL),
    Job(op=3, m=1, n=4, k=4, heads=1, **_ALL),  # an unknown op: pushed for the engine to reject
]
DESCRIPTORS = [
    Descriptor(0x8000_0000, 0x40, 64, 3, 256, 68, Direction.L2_TO_L1),
    Descriptor(0x0001_2340, 0x1F00, 4, 1, 0, 0, Direction.L1_TO_L2),
]


def _expected_job_registers(job: Job) -> set[str]:
    """What the HAL writes: the registers of the tensors and options the job uses."""
    regs = {"JOB_OP", "JOB_M", "JOB_N", "JOB_K"}
    regs |= {f"JOB_{t}_{r}" for t in "ABC" for r in ("ADDR", "STRIDE")}
    if job.op == Op.GEMM:
        regs.add("JOB_P_ADDR")
        if job.flags & FLAG_RESIDUAL:
            regs |= {"JOB_D_ADDR", "JOB_D_STRIDE", "JOB_RES"}
        if job.flags & FLAG_AFFINE:
            regs.add("JOB_AFF")
    elif job.op == Op.ATTENTION:
        regs |= {"JOB_D_ADDR", "JOB_D_STRIDE"}
        # With FLAG_PER_HEAD the head table replaces the job's own requantization.
        regs |= {"JOB_P_ADDR"} if job.flags & FLAG_PER_HEAD else {"JOB_QK", "JOB_AV"}
        if job.heads > 1:
            regs |= {f"JOB_{t}_HSTRIDE" for t in "ABCD"}
    return regs


def _job_register_values(mm: MemoryMap, job: Job) -> dict[str, int]:
    """Every ENGINE staging register's value for ``job``, through the map's bindings."""
    payload = job.payload()
    values = {}
    for reg in mm.registers:
        bound = [
            (f, path)
            for f in reg.fields
            if isinstance(f.hw, PortBinding) and (path := f.hw.below(("engine", "jobs", "payload")))
        ]
        if reg.block.name != "ENGINE" or not bound:
            continue
        value = 0
        for f, path in bound:
            v: object = payload
            for part in path:
                v = v[part]  # type: ignore[index]
            value |= (int(v) & ((1 << f.width) - 1)) << f.offset  # type: ignore[call-overload]
        values[reg.register.name] = value
    return values


@dataclass(frozen=True)
class Access:
    kind: str  # R, W, WAITIRQ
    offset: int = 0
    value: int = 0


@dataclass
class Run:
    """A host run's output: the accesses per MARK section, other lines, console, exit."""

    sections: dict[str, list[Access]]
    lines: list[str]
    console: str
    exit_code: int | None
    violations: list[str]

    def accesses(self) -> Iterator[Access]:
        for section in self.sections.values():
            yield from section


def _parse(stdout: str, console_offset: int) -> Run:
    sections: dict[str, list[Access]] = {"start": []}
    current = sections["start"]
    lines, console, violations = [], [], []
    exit_code = None
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("R", "W"):
            offset, value = (int(x, 16) for x in rest.split())
            current.append(Access(word, offset, value))
            if word == "W" and offset == console_offset:
                console.append(chr(value))
        elif word == "WAITIRQ":
            current.append(Access("WAITIRQ"))
        elif word == "MARK":
            current = sections.setdefault(rest, [])
        elif word == "EXIT":
            exit_code = int(rest, 16)
        elif word == "VIOLATION":
            violations.append(rest)
        else:
            lines.append(line)
    return Run(sections, lines, "".join(console), exit_code, violations)


class Host:
    """A host build of the SDK against the fake register block, for one configuration."""

    def __init__(self, cfg: ClusterConfig, folder: Path) -> None:
        self.cfg = cfg
        self.mm = register_map(cfg)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / HEADER_NAME).write_text(c_header(cfg))
        (folder / "fake.h").write_text(FAKE_H)
        (folder / "fake.c").write_text(FAKE_C)
        resets = []
        for reg in self.mm.registers:
            name = f"TINYATTN_{reg.block.name}_{reg.register.name}"
            resets.append(f"    fake_regs[{name}_OFFSET / 4] = {name}_RESET;")
        (folder / "reset_values.inc").write_text("\n".join(resets) + "\n")
        printf = 'ta_printf("' + PRINTF_FORMAT + '", ' + ", ".join(a for a, _ in PRINTF_ARGS) + ")"
        scenarios = (
            SCENARIOS_C.replace("@JOBS@", "\n".join(_c_job(j) for j in JOBS))
            .replace(
                "@DESCRIPTORS@",
                "\n".join(
                    "    {" + ", ".join(f"{int(getattr(d, f.name))}u" for f in fields(d)) + "},"
                    for d in DESCRIPTORS
                ),
            )
            .replace("@PRINTF@", printf)
        )
        (folder / "scenarios.c").write_text(scenarios)
        sdk = [SDK_DIR / "tinyattn_hal.c", SDK_DIR / "tinyattn_console.c"]
        self.scenarios = self._link("scenarios", [folder / "scenarios.c", *sdk, self._string()])
        # hello's main becomes firmware_main, which the fake's main calls as crt0 would.
        hello = folder / "hello.o"
        self._gcc(["-c", "-Dmain=firmware_main", str(HELLO), "-o", str(hello)])
        self.hello = self._link("hello", [hello, *sdk])

    def _string(self) -> Path:
        """tinyattn_string.c as a host object, its functions renamed beside libc's."""
        obj = self.folder / "string.o"
        renames = [f"-D{fn}=sdk_{fn}" for fn in ("memset", "memcpy", "memmove", "memcmp")]
        self._gcc(
            ["-c", "-fno-builtin", *renames, str(SDK_DIR / "tinyattn_string.c"), "-o", str(obj)]
        )
        return obj

    def _gcc(self, args: list[str]) -> None:
        includes = [f"-I{self.folder}", f"-I{SDK_DIR}", "-include", str(self.folder / "fake.h")]
        cmd = ["gcc", *HOST_FLAGS, *includes, *args]
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert run.returncode == 0 and not run.stderr, f"{' '.join(cmd)}\n{run.stderr}"

    def _link(self, name: str, sources: list[Path]) -> Path:
        exe = self.folder / name
        self._gcc([str(self.folder / "fake.c"), *map(str, sources), "-o", str(exe)])
        return exe

    def run(self, scenario: str, exe: Path | None = None) -> Run:
        proc = subprocess.run(
            [str(exe or self.scenarios), scenario], capture_output=True, text=True, timeout=60
        )
        console = self.addr("HOST", "CONSOLE")
        result = _parse(proc.stdout, console)
        assert not result.violations, f"{scenario}: {result.violations}\n{proc.stdout[-3000:]}"
        assert proc.returncode == 0, proc.stderr
        return result

    def addr(self, block: str, name: str) -> int:
        return self.mm.register(block, name).address

    def mask(self, block: str, name: str, *fnames: str) -> int:
        out = 0
        for fname in fnames:
            f = self.mm.field(block, name, fname)
            out |= ((1 << f.width) - 1) << f.offset
        return out

    def get(self, value: int, block: str, name: str, fname: str) -> int:
        f = self.mm.field(block, name, fname)
        return (value >> f.offset) & ((1 << f.width) - 1)


@pytest.fixture(scope="module", params=list(CONFIGS))
def host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Host:
    if shutil.which("gcc") is None:
        pytest.skip(
            "!!! host gcc MISSING: the HAL checks against the fake registers did NOT run !!!"
        )
    name = request.param
    return Host(CONFIGS[name], tmp_path_factory.mktemp(f"host-{name}"))


def _check_sleeps(host: Host, accesses: list[Access]) -> None:
    """Every waitirq comes after clearing the done flags and then testing the condition."""
    done = host.mask("EVENTS", "IRQ_STATUS", "ENGINE_DONE", "DMA_DONE")
    tests = {
        host.addr("ENGINE", "STATUS"),
        host.addr("ENGINE", "JOBS_DONE"),
        host.addr("DMA", "STATUS"),
        host.addr("DMA", "DONE_COUNT"),
    }
    irq_status = host.addr("EVENTS", "IRQ_STATUS")
    for i, a in enumerate(accesses):
        if a.kind == "WAITIRQ":
            test, clear = accesses[i - 1], accesses[i - 2]
            assert test.kind == "R" and test.offset in tests, accesses[i - 3 : i + 1]
            assert clear == Access("W", irq_status, done), accesses[i - 3 : i + 1]


def test_host_init(host: Host) -> None:
    run = host.run("perf")
    start = run.sections["start"]
    reads = [a.offset for a in start if a.kind == "R"]
    assert host.addr("CLUSTER", "CONFIG_HASH") in reads and host.addr("CLUSTER", "VERSION") in reads
    enable = host.mask("EVENTS", "IRQ_ENABLE", "ENGINE_DONE", "DMA_DONE")
    assert start[-1] == Access("W", host.addr("EVENTS", "IRQ_ENABLE"), enable)
    assert run.exit_code == 0


def test_host_submit_jobs_and_dma(host: Host) -> None:
    run = host.run("submit")
    mm = host.mm
    _check_sleeps(host, list(run.accesses()))
    depth = {"ENGINE": host.cfg.engine.job_queue_depth, "DMA": host.cfg.dma.queue_depth}
    level = {"ENGINE": "QUEUED", "DMA": "QUEUE_LEVEL"}
    push = {"ENGINE": host.addr("ENGINE", "JOB_PUSH"), "DMA": host.addr("DMA", "PUSH")}
    staging = {
        "ENGINE": {host.addr("ENGINE", n): n for n in _job_register_values(mm, JOBS[0])},
        "DMA": {
            host.addr("DMA", n): n
            for n in (
                "L2_ADDR",
                "L1_ADDR",
                "ROW_BYTES",
                "ROWS",
                "L2_STRIDE",
                "L1_STRIDE",
                "DIRECTION",
            )
        },
    }

    def check_push(section: list[Access], block: str) -> dict[str, int]:
        """The room wait, then the staging writes, then one push; returns the writes."""
        status = host.addr(block, "STATUS")
        first = next(
            i for i, a in enumerate(section) if a.kind == "W" and a.offset in staging[block]
        )
        tests = [a for a in section[:first] if a.kind == "R" and a.offset == status]
        # The fake starts full: the first room test fails, the HAL sleeps, the last passes.
        assert any(a.kind == "WAITIRQ" for a in section[:first])
        for a in tests:
            room = has_room(a.value, block)
            assert room == (a is tests[-1]), (block, hex(a.value))
        writes = section[first:]
        assert writes[-1] == Access("W", push[block], 1)
        assert all(a.kind == "W" for a in writes)
        values = {staging[block][a.offset]: a.value for a in writes[:-1]}
        assert len(values) == len(writes) - 1, "a register written twice"
        return values

    def has_room(status: int, block: str) -> bool:
        queued = host.get(status, block, "STATUS", level[block])
        pending = host.get(status, block, "STATUS", "PUSH_PENDING")
        return queued + pending < depth[block]

    tickets = [int(line.split()[1]) for line in run.lines if line.startswith("TICKET")]
    for i, job in enumerate(JOBS):
        written = check_push(run.sections[f"job {i}"], "ENGINE")
        expected = _job_register_values(mm, job)
        assert set(written) == _expected_job_registers(job), (i, job)
        for name, value in written.items():
            assert value == expected[name], (i, name, hex(value), hex(expected[name]))
    for i, d in enumerate(DESCRIPTORS):
        written = check_push(run.sections[f"dma {i}"], "DMA")
        assert written == {
            "L2_ADDR": d.l2_addr,
            "L1_ADDR": d.l1_addr,
            "ROW_BYTES": d.row_bytes,
            "ROWS": d.rows,
            "L2_STRIDE": d.l2_stride,
            "L1_STRIDE": d.l1_stride,
            "DIRECTION": d.direction,
        }
    # Tickets count on from the done counters as ta_init found them (5 and 7).
    n_jobs, n_dma = len(JOBS), len(DESCRIPTORS)
    assert tickets[:n_jobs] == list(range(6, 6 + n_jobs))
    assert tickets[n_jobs : n_jobs + n_dma] == list(range(8, 8 + n_dma))

    # The waits end exactly when the counter reaches the last ticket.
    wait = run.sections["wait"]
    for counter, last in (("ENGINE", "JOBS_DONE"), ("DMA", "DONE_COUNT")):
        reads = [a.value for a in wait if a.kind == "R" and a.offset == host.addr(counter, last)]
        target = tickets[n_jobs - 1] if counter == "ENGINE" else tickets[n_jobs + n_dma - 1]
        assert reads[-1] >= target and all(r < target for r in reads[:-1]), (counter, reads)
    assert any(a.kind == "WAITIRQ" for a in wait)
    assert "DONE 1 1" in run.lines

    # Polling: reads only, no sleep and no IRQ_STATUS write.
    poll = run.sections["poll"]
    assert poll and all(a.kind == "R" for a in poll)

    # Soft clear: CLEAR, BUSY polled to 0, the tickets restart from the counters.
    clear = run.sections["clear"]
    assert Access("W", host.addr("ENGINE", "CTRL"), host.mask("ENGINE", "CTRL", "CLEAR")) in clear
    assert Access("W", host.addr("DMA", "CTRL"), host.mask("DMA", "CTRL", "CLEAR")) in clear
    jobs_done = [a.value for a in clear if a.offset == host.addr("ENGINE", "JOBS_DONE")][-1]
    dma_done = [a.value for a in clear if a.offset == host.addr("DMA", "DONE_COUNT")][-1]
    assert tickets[-2:] == [jobs_done + 1, dma_done + 1]
    assert run.exit_code == 0


def test_host_stage_then_push(host: Host) -> None:
    """``ta_job_stage`` waits for room and writes the registers; ``ta_job_push`` only pushes;
    ``ta_job_submit`` is the two in a row."""
    run = host.run("split")
    _check_sleeps(host, list(run.accesses()))
    push = Access("W", host.addr("ENGINE", "JOB_PUSH"), 1)
    stage = run.sections["stage"]
    assert any(a.kind == "WAITIRQ" for a in stage)  # the fake starts with a full queue
    assert push not in stage
    names = {host.addr("ENGINE", n): n for n in _job_register_values(host.mm, JOBS[0])}
    written = {names[a.offset]: a.value for a in stage if a.kind == "W" and a.offset in names}
    assert written == {
        n: v
        for n, v in _job_register_values(host.mm, JOBS[0]).items()
        if n in _expected_job_registers(JOBS[0])
    }
    assert run.sections["push"] == [push]
    submit = [a for a in run.sections["submit"] if a.kind == "W" and a.offset in names]
    engine = [a for a in run.sections["submit"] if a in submit or a == push]
    assert engine == [*submit, push]  # then HOST_EXIT
    assert {names[a.offset]: a.value for a in submit} == written
    tickets = [int(line.split()[1]) for line in run.lines if line.startswith("TICKET")]
    assert tickets == [6, 7]  # on from the done counter (5)
    assert run.exit_code == 0


def test_host_errors(host: Host) -> None:
    run = host.run("errors")
    errors = [line for line in run.lines if line.startswith("ERRORS")]
    misaligned, l1_range = 5, 3  # JOB_ERROR_MISALIGNED, DMA_ERROR_L1_RANGE
    assert errors == [f"ERRORS 1 {misaligned} {l1_range} 1 1", f"ERRORS 0 {misaligned} 0 0 0"]
    error_flags = host.mask("EVENTS", "IRQ_STATUS", "ENGINE_ERROR", "DMA_ERROR", "BUS_ERROR")
    assert [a for a in run.sections["clear"]] == [
        Access("W", host.addr("DMA", "CTRL"), host.mask("DMA", "CTRL", "ERROR_ACK")),
        Access("W", host.addr("EVENTS", "IRQ_STATUS"), error_flags),
    ]


def test_host_perf_counters(host: Host) -> None:
    run = host.run("perf")
    assert f"PERF 1000 20 300 {0x12_89ABCDEF}" in run.lines
    reads = [a.offset for a in run.sections["main"] if a.kind == "R"]
    assert reads.index(host.addr("ENGINE", "MACS_LO")) < reads.index(host.addr("ENGINE", "MACS_HI"))


def test_host_printf(host: Host) -> None:
    run = host.run("printf")
    expected = PRINTF_FORMAT.replace("\\n", "\n") % tuple(v for _, v in PRINTF_ARGS)
    digits = 2 * 8  # a host pointer
    expected += f"0x{0x1234:0{digits}x}|0x{0:0{digits}x}\n"
    assert run.console == expected


def test_host_memory_functions(host: Host) -> None:
    assert "STRING ok" in host.run("string").lines


def test_host_exit_paths(host: Host) -> None:
    check = host.run("check")
    source = (host.folder / "scenarios.c").read_text().splitlines()
    line = next(i + 1 for i, text in enumerate(source) if "TA_CHECK(fake_polling" in text)
    assert check.console == f"{host.folder}/scenarios.c:{line}: check failed: fake_polling == 42\n"
    assert check.exit_code == 0xE0000001

    wrong = host.run("wrong_config")
    assert wrong.exit_code == 0xE0000002
    assert "the hardware is configuration 12345678" in wrong.console
    assert f"built for {host.cfg.stable_hash()[:8]}" in wrong.console
    assert host.addr("EVENTS", "IRQ_ENABLE") not in {a.offset for a in wrong.accesses()}

    assert host.run("no such scenario").exit_code == 99  # main's return value, via ta_exit


def test_host_hello(host: Host) -> None:
    run = host.run("", host.hello)
    cfg = host.cfg
    assert run.console.startswith(
        f"hello from tinyattn {cfg.stable_hash()[:8]}: {cfg.engine.n_pe}x{cfg.engine.vec_len} "
        f"engine, {cfg.memory.size_bytes // 1024} KiB L1, {cfg.core.private_bytes // 1024} KiB"
    ), run.console
    assert "0 of 13 configuration registers differ" in run.console
    assert run.exit_code == 0

    bad = host.run("bad_n_pe", host.hello)
    assert f"CLUSTER_N_PE = 99, tinyattn_regs.h says {cfg.engine.n_pe}\n" in bad.console
    assert bad.exit_code == 1
