"""Parts of the engine on their own, in Amaranth's simulator (no Verilog build).

The engine's bench covers the parts together; these check contracts of one part that
the bench reaches only by chance.
"""

from __future__ import annotations

from amaranth.sim import Simulator

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.hw.engine_residual_fetcher import ResidualFetcher
from tinyattn.hw.job import FLAG_RESIDUAL, Job, Op

CFG = ClusterConfig(
    engine=EngineConfig(n_pe=4, vec_len=16, acc_bits=24, tile_m=8, max_seq=64),
    memory=MemoryConfig(n_banks=8, bank_words=512),
    dma=DmaConfig(dma_bits=128),
)


def test_residual_fetcher_recovers_from_a_soft_clear() -> None:
    """Rows held when a clear drops them no longer count against the next job's room.

    The fetcher holds up to ``tile_m`` residual rows ahead of the writer. A soft clear
    (``ctrl.reset``) drops them; the next job must again fetch a whole tile ahead, not
    hang waiting for room that the dropped rows still took.
    """
    dut = ResidualFetcher(CFG)
    tile_m = CFG.engine.tile_m
    job = Job(op=Op.GEMM, m=4 * tile_m, n=16, k=16, flags=FLAG_RESIDUAL, d_stride=16)
    payload = job.payload()
    issued = []

    async def bench(ctx):
        for name, value in payload.items():
            field = getattr(dut.ctrl.jobs[0], name)  # job 0 of the sequence: slot 0
            if isinstance(value, dict):
                for sub, v in value.items():
                    ctx.set(getattr(field, sub), v)
            else:
                ctx.set(field, value)
        ctx.set(dut.outputs_full, 100)  # every earlier tile is in YBUF: fetch freely
        ctx.set(dut.request.ready, 1)
        for _job in range(2):
            ctx.set(dut.ctrl.accepted, 1)
            ctx.set(dut.ctrl.go, 1)
            count = 0
            for _ in range(4 * tile_m):
                ctx.set(dut.response.valid, ctx.get(dut.request.valid))  # one-cycle "memory"
                count += ctx.get(dut.request.valid)
                await ctx.tick()
            ctx.set(dut.response.valid, 0)
            issued.append(count)
            # The writer never took a row. Soft clear: stop, reset, no job accepted.
            ctx.set(dut.ctrl.go, 0)
            await ctx.tick()
            ctx.set(dut.ctrl.reset, 1)
            ctx.set(dut.ctrl.accepted, 0)
            await ctx.tick()
            ctx.set(dut.ctrl.reset, 0)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert issued == [tile_m, tile_m], issued


def test_write_fence_waits_for_the_requests_before_each_mark() -> None:
    """A mark's job has landed once every lane answered the requests issued up to it.

    Random traffic on 4 lanes, each answering in order after a random delay; two marks
    may be pending. The model: per lane, the index of the last request issued at the
    mark; the mark has landed when every lane has answered that many.
    """
    import random

    from tinyattn.hw.engine_write_fence import WriteFence

    lanes = 4
    dut = WriteFence(lanes)
    seed = 5
    rng = random.Random(seed)
    checked = []

    async def bench(ctx):
        issued = [0] * lanes
        answered = [0] * lanes
        in_flight: list[list[int]] = [[] for _ in range(lanes)]  # answer cycle per request
        marks: list[list[int]] = []
        for cycle in range(3000):
            issue = [rng.random() < 0.4 and len(in_flight[i]) < 6 for i in range(lanes)]
            respond = [bool(in_flight[i]) and in_flight[i][0] <= cycle for i in range(lanes)]
            mark = len(marks) < 2 and rng.random() < 0.05
            landed = bool(marks) and all(answered[i] >= marks[0][i] for i in range(lanes))
            assert ctx.get(dut.landed) == landed, (cycle, marks, answered, seed)
            retire = landed and rng.random() < 0.5
            ctx.set(dut.issued, sum(b << i for i, b in enumerate(issue)))
            ctx.set(dut.responded, sum(b << i for i, b in enumerate(respond)))
            ctx.set(dut.mark, mark)
            ctx.set(dut.retire, retire)
            for i in range(lanes):
                if respond[i]:
                    in_flight[i].pop(0)
                    answered[i] += 1
                if issue[i]:
                    issued[i] += 1
                    last = in_flight[i][-1] if in_flight[i] else cycle
                    in_flight[i].append(max(last, cycle) + rng.randint(1, 6))
            if retire:
                marks.pop(0)
                checked.append(cycle)
            if mark:
                marks.append(list(issued))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(checked) > 20, f"only {len(checked)} marks retired (seed {seed})"
