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


@pytest.mark.parametrize(
    ("n_pe", "split", "keys"), [(4, 2, 28), (4, 4, 64), (4, 4, 20), (8, 2, 48)]
)
def test_itamax_unit_chains_split_beats(n_pe: int, split: int, keys: int) -> None:
    """Split-lane QK beats: ``split`` groups of a row a cycle (fewer in a ragged last
    block), chained in key order, give golden's group-by-group state."""
    cfg = ClusterConfig(
        engine=EngineConfig(n_pe=n_pe, vec_len=32, acc_bits=24, tile_m=8, max_seq=64, qk_split=4)
    )
    dut = ItaMax(cfg)
    rows = 5
    seed = n_pe * 1000 + split * 100 + keys
    rng = np.random.default_rng(seed)
    logits = rng.integers(-40, 40, (rows, keys)).clip(-128, 127)
    logits[1, -n_pe:] = 127  # the maximum in a ragged last block
    want = golden.itamax(logits, n_pe)
    width = split * n_pe
    blocks = -(-keys // width)
    got_m = np.zeros(rows, dtype=np.int64)
    got_inv = np.zeros(rows, dtype=np.int64)

    async def bench(ctx):
        for b in range(blocks):
            groups = min(split, keys // n_pe - b * split)
            for r in range(rows):
                ctx.set(dut.valid, 1)
                ctx.set(dut.row, r)
                ctx.set(dut.first, int(b == 0))
                ctx.set(dut.last, int(b == blocks - 1))
                ctx.set(dut.groups, groups)
                # Lanes past the beat's groups carry stale values: they must not count.
                for i in range(cfg.engine.max_split * n_pe):
                    key = b * width + i
                    value = int(logits[r, key]) if i < groups * n_pe else 127
                    ctx.set(dut.logits[i], value)
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
    np.testing.assert_array_equal(got_m, logits.max(axis=1), err_msg=f"row maxima (seed {seed})")
    np.testing.assert_array_equal(
        probs, want.astype(np.int64), err_msg=f"probabilities (seed {seed})"
    )
