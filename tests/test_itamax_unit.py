"""The ITAMax unit in Amaranth's simulator against golden.itamax (row-interleaved groups)."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from tinyattn.config import ClusterConfig, EngineConfig
from tinyattn.hw.itamax import ItaMax
from tinyattn.verif import golden


@pytest.mark.parametrize(
    ("n_pe", "rows", "keys", "spread"), [(4, 8, 64, 20), (4, 3, 16, 128), (8, 8, 64, 6)]
)
def test_itamax_unit_matches_golden(n_pe: int, rows: int, keys: int, spread: int) -> None:
    cfg = ClusterConfig(
        engine=EngineConfig(n_pe=n_pe, vec_len=16, acc_bits=24, tile_m=8, max_seq=64)
    )
    dut = ItaMax(cfg)
    rng = np.random.default_rng(n_pe * 100 + rows)
    logits = rng.integers(-spread, spread, (rows, keys)).clip(-128, 127)
    # The extremes: a fully masked row (every logit -128) and a saturated one.
    logits[0] = -128
    logits[-1] = 127 if rows > 1 else logits[-1]
    want = golden.itamax(logits, n_pe)
    blocks = keys // n_pe
    got_m = np.zeros(rows, dtype=np.int64)
    got_inv = np.zeros(rows, dtype=np.int64)

    async def bench(ctx):
        # The array's order: every row's group of block 0, then block 1, ...
        for b in range(blocks):
            for r in range(rows):
                ctx.set(dut.valid, 1)
                ctx.set(dut.row, r)
                ctx.set(dut.first, int(b == 0))
                ctx.set(dut.last, int(b == blocks - 1))
                for i in range(n_pe):
                    ctx.set(dut.logits[i], int(logits[r, b * n_pe + i]))
                await ctx.tick()
        ctx.set(dut.valid, 0)
        for r in range(rows):
            ctx.set(dut.read_row, r)
            await ctx.delay(1e-9)
            got_m[r] = ctx.get(dut.read_m)
            got_inv[r] = ctx.get(dut.read_inv)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    probs = np.right_shift(got_inv[:, None], np.minimum(got_m[:, None] - logits, 31))
    probs = np.where(got_m[:, None] - logits >= 8, 0, probs)
    np.testing.assert_array_equal(got_m, logits.max(axis=1), err_msg="row maxima")
    np.testing.assert_array_equal(probs, want.astype(np.int64), err_msg="probabilities")
