"""The command sequencer in Amaranth's simulator, against a bus model with random grants.

The bus model holds an L1 and a register file. ``COUNTER`` (a register offset) counts
up by itself every few cycles, so that WAITs really wait. Every access is logged with
its cycle, which is what the checks read: the writes, their order, and that nothing
after a WAIT happens before the counter reached the target.
"""

from __future__ import annotations

import os
import random

import pytest
from amaranth.sim import Simulator

from tinyattn.config import ClusterConfig, MemoryConfig
from tinyattn.hw.core_bus import L1_BASE, PERIPH_BASE
from tinyattn.hw.sequencer import CommandSequencer, SeqError
from tinyattn.sw.command_list import CommandList, CommandListError, decode

CFG = ClusterConfig(memory=MemoryConfig(n_banks=16, bank_words=64))  # 4 KiB of L1
L1_BYTES = CFG.memory.size_bytes
COUNTER = 0x10C  # ENGINE_JOBS_DONE: the list's waits poll it
SEED = int(os.environ.get("TINYATTN_SEED", "1"))


class SequencerBench:
    """Runs one list on a fresh sequencer; ``log`` holds (cycle, 'r'/'w', addr, data)."""

    def __init__(
        self,
        words: list[int],
        *,
        list_addr: int = 0x100,
        seed: int = SEED,
        counter_every: int = 7,
        job_base: int = 0,
        wait_limit: int = 0,
        abort_at: int | None = None,
        hw_error_at: int | None = None,
    ) -> None:
        self.dut = CommandSequencer(CFG)
        self.l1 = {list_addr + 4 * i: w for i, w in enumerate(words)}
        self.regs: dict[int, int] = {}
        self.log: list[tuple[int, str, int, int]] = []
        self.rng = random.Random(seed)
        self.list_addr, self.job_base, self.wait_limit = list_addr, job_base, wait_limit
        self.counter_every, self.abort_at, self.hw_error_at = counter_every, abort_at, hw_error_at
        self.counter_at: list[int] = []  # the counter's value in each cycle
        self.error: SeqError | None = None
        self.done_cycle = -1

    def read(self, addr: int) -> int:
        if addr >= PERIPH_BASE:
            off = addr - PERIPH_BASE
            return self.counter_at[-1] if off == COUNTER else self.regs.get(off, 0)
        return self.l1.get(addr - L1_BASE, 0)

    def run(self, max_cycles: int = 5000) -> SequencerBench:
        dut = self.dut

        async def bench(ctx):
            ctx.set(dut.control.list_addr, self.list_addr)
            ctx.set(dut.control.job_base, self.job_base)
            ctx.set(dut.control.wait_limit, self.wait_limit)
            ctx.set(dut.control.start, 1)
            await ctx.tick()
            ctx.set(dut.control.start, 0)
            response = None
            for cycle in range(max_cycles):
                counter = cycle // self.counter_every
                self.counter_at.append(counter)
                ctx.set(dut.control.abort, int(cycle == self.abort_at))
                ctx.set(dut.hw_error, int(cycle == self.hw_error_at))
                gnt = self.rng.random() < 0.7
                ctx.set(dut.bus.gnt, int(gnt))
                if response is not None:
                    ctx.set(dut.bus.rvalid, 1)
                    ctx.set(dut.bus.rdata, response)
                else:
                    ctx.set(dut.bus.rvalid, 0)
                response = None
                if ctx.get(dut.control.done):
                    self.error = SeqError(ctx.get(dut.control.error))
                    self.done_cycle = cycle
                    return
                if ctx.get(dut.bus.req) and gnt:
                    addr, we = ctx.get(dut.bus.addr), ctx.get(dut.bus.we)
                    if we:
                        data = ctx.get(dut.bus.wdata)
                        self.log.append((cycle, "w", addr, data))
                        if addr >= PERIPH_BASE:
                            self.regs[addr - PERIPH_BASE] = data
                        else:
                            self.l1[addr - L1_BASE] = data
                        response = 0
                    else:
                        response = self.read(addr)
                        self.log.append((cycle, "r", addr, response))
                await ctx.tick()
            raise AssertionError(f"no done within {max_cycles} cycles (seed {SEED})")

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()
        return self

    def writes(self) -> list[tuple[int, int]]:
        return [(a, d) for _, kind, a, d in self.log if kind == "w"]


def test_writes_waits_jump_and_stamp() -> None:
    cl = CommandList(CFG)
    cl.write("ENGINE_JOB_M", 5, 6, 7)
    cl.write_many([("DMA_L2_ADDR", 0x40), ("DMA_L1_ADDR", 0x80), ("DMA_ROWS", 3)])
    cl.wait_jobs(4)  # job_base 2 + 4: the counter must reach 6
    cl.write("ENGINE_JOB_PUSH", 1)
    cl.jump(0x400)
    jumped = CommandList(CFG).stamp(0x800).write("HOST_EXIT", 9).end()
    bench = SequencerBench(cl.words, job_base=2)
    for i, w in enumerate(jumped.words):
        bench.l1[0x400 + 4 * i] = w
    bench.run()
    assert bench.error is SeqError.NONE, f"seed {SEED}"
    reg = cl.offset
    assert bench.writes()[:7] == [
        (PERIPH_BASE + reg("ENGINE_JOB_M"), 5),
        (PERIPH_BASE + reg("ENGINE_JOB_N"), 6),
        (PERIPH_BASE + reg("ENGINE_JOB_K"), 7),
        (PERIPH_BASE + reg("DMA_L2_ADDR"), 0x40),
        (PERIPH_BASE + reg("DMA_L1_ADDR"), 0x80),
        (PERIPH_BASE + reg("DMA_ROWS"), 3),
        (PERIPH_BASE + reg("ENGINE_JOB_PUSH"), 1),
    ]
    push_cycle = next(c for c, k, a, _ in bench.log if k == "w" and a == PERIPH_BASE + 0x108)
    assert bench.counter_at[push_cycle] >= 6, "the push came before the WAIT was over"
    polls = [c for c, k, a, _ in bench.log if k == "r" and a == PERIPH_BASE + COUNTER]
    assert bench.counter_at[polls[-1]] >= 6 and bench.counter_at[polls[0]] < 6
    stamp = bench.l1[0x800]
    assert 0 < stamp <= bench.done_cycle + 1
    assert bench.regs[reg("HOST_EXIT")] == 9
    # The decoder reads the list back as it was written.
    ops = [c.op.name for c in decode(jumped.words, 0x400)]
    assert ops == ["STAMP", "WRITE", "END"]


@pytest.mark.parametrize(
    ("words", "error"),
    [
        ([0x0000_0000], SeqError.BAD_COMMAND),  # zeroed memory is not a list
        ([0x6000_0000], SeqError.BAD_COMMAND),  # op 6
        ([0x1000_0140], SeqError.BAD_COMMAND),  # WRITE of no words
        ([0x1001_0142, 1], SeqError.BAD_COMMAND),  # misaligned register
        ([0x2003_010C, 0], SeqError.BAD_COMMAND),  # WAIT base 3
        ([0x3000_0000, 0x2], SeqError.BAD_ADDRESS),  # misaligned jump
        ([0x3000_0000, L1_BYTES], SeqError.BAD_ADDRESS),  # jump outside L1
        ([0x4000_0000, L1_BYTES + 4], SeqError.BAD_ADDRESS),  # stamp outside L1
    ],
)
def test_bad_lists_stop_with_their_error(words: list[int], error: SeqError) -> None:
    bench = SequencerBench([*words, 0x5000_0000]).run()
    assert bench.error is error, f"seed {SEED}"
    assert not [w for w in bench.writes() if w[0] >= PERIPH_BASE], f"wrote registers (seed {SEED})"


def test_bad_start_address_and_running_off_l1() -> None:
    assert SequencerBench([0x5000_0000], list_addr=L1_BYTES).run().error is SeqError.BAD_ADDRESS
    assert SequencerBench([0x5000_0000], list_addr=0x102).run().error is SeqError.BAD_ADDRESS
    # A WRITE whose words would run past the end of L1.
    bench = SequencerBench([0x1004_0144, 1], list_addr=L1_BYTES - 8).run()
    assert bench.error is SeqError.BAD_ADDRESS


def test_timeout_abort_and_hw_error() -> None:
    never = CommandList(CFG).wait_jobs(1_000_000).end().words
    bench = SequencerBench(never, wait_limit=50).run()
    assert bench.error is SeqError.TIMEOUT and 50 <= bench.done_cycle < 80, f"seed {SEED}"
    bench = SequencerBench(never, abort_at=30).run()
    assert bench.error is SeqError.ABORTED and bench.done_cycle < 40, f"seed {SEED}"
    many = CommandList(CFG).write("ENGINE_JOB_M", *range(1, 40)).end().words
    bench = SequencerBench(many, hw_error_at=20).run()
    assert bench.error is SeqError.HW_ERROR and len(bench.writes()) < 39, f"seed {SEED}"


def test_encoder_refuses_what_the_sequencer_would() -> None:
    with pytest.raises(CommandListError, match="no register 'ENGINE_JOB_Q'"):
        CommandList(CFG).write("ENGINE_JOB_Q", 1)
    with pytest.raises(CommandListError, match="does not fit 32 bits"):
        CommandList(CFG).write("ENGINE_JOB_M", 1 << 32)
    with pytest.raises(CommandListError, match="ends without END"):
        decode(CommandList(CFG).write("ENGINE_JOB_M", 1).words)
    with pytest.raises(CommandListError, match="no command has op 0"):
        decode([0, 0x5000_0000])
