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
    (``flush``) drops them; the next job must again fetch a whole tile ahead, not
    hang waiting for room that the dropped rows still took.
    """
    dut = ResidualFetcher(CFG)
    tile_m = CFG.engine.tile_m
    job = Job(op=Op.GEMM, m=4 * tile_m, n=16, k=16, flags=FLAG_RESIDUAL, d_stride=16)
    payload = job.payload()
    issued = []

    async def bench(ctx):
        for name, value in payload.items():
            field = getattr(dut.ctrl.job, name)
            if isinstance(value, dict):
                for sub, v in value.items():
                    ctx.set(getattr(field, sub), v)
            else:
                ctx.set(field, value)
        ctx.set(dut.outputs_full, 100)  # every earlier tile is in YBUF: fetch freely
        ctx.set(dut.request.ready, 1)
        for _job in range(2):
            ctx.set(dut.ctrl.active, 1)
            ctx.set(dut.ctrl.go, 1)
            count = 0
            for _ in range(4 * tile_m):
                ctx.set(dut.response.valid, ctx.get(dut.request.valid))  # one-cycle "memory"
                count += ctx.get(dut.request.valid)
                await ctx.tick()
            ctx.set(dut.response.valid, 0)
            issued.append(count)
            # The writer never took a row. Soft clear: stop, flush, back to idle.
            ctx.set(dut.ctrl.go, 0)
            await ctx.tick()
            ctx.set(dut.flush, 1)
            ctx.set(dut.ctrl.active, 0)
            await ctx.tick()
            ctx.set(dut.flush, 0)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert issued == [tile_m, tile_m], issued
