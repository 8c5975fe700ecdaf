"""The ITAMax unit in Amaranth's simulator against golden.itamax (row-interleaved groups)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from amaranth.sim import Simulator

from tinyattn.config import ClusterConfig, EngineConfig
from tinyattn.hw.itamax import ItaMax
from tinyattn.verif import golden

#: One beat's lane values: ``(block, row) -> logits of the unit's lanes``.
BeatLanes = Callable[[int, int], list[int]]


def _run_itamax(
    dut: ItaMax, rows: int, blocks: int, lanes: BeatLanes, groups: Callable[[int], int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Drive ``blocks`` blocks of ``rows`` rows into ``dut`` in the array's order (every
    row's beat of block 0, then block 1, ...), ``groups(block)`` groups a beat when given;
    then read back each row's maximum and inverse sum."""
    got_m = np.zeros(rows, dtype=np.int64)
    got_inv = np.zeros(rows, dtype=np.int64)

    async def bench(ctx):
        for b in range(blocks):
            for r in range(rows):
                ctx.set(dut.valid, 1)
                ctx.set(dut.row, r)
                ctx.set(dut.first, int(b == 0))
                ctx.set(dut.last, int(b == blocks - 1))
                if groups is not None:
                    ctx.set(dut.groups, groups(b))
                for i, value in enumerate(lanes(b, r)):
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
    return got_m, got_inv


def _check_against_golden(
    logits: np.ndarray, n_pe: int, got_m: np.ndarray, got_inv: np.ndarray, seed: int
) -> None:
    """The unit's per-row state gives golden.itamax's probabilities of ``logits``."""
    want = golden.itamax(logits, n_pe)
    probs = np.right_shift(got_inv[:, None], np.minimum(got_m[:, None] - logits, 31))
    probs = np.where(got_m[:, None] - logits >= 8, 0, probs)
    np.testing.assert_array_equal(got_m, logits.max(axis=1), err_msg=f"row maxima (seed {seed})")
    np.testing.assert_array_equal(
        probs, want.astype(np.int64), err_msg=f"probabilities (seed {seed})"
    )


@pytest.mark.parametrize(
    ("n_pe", "rows", "keys", "spread"), [(4, 8, 64, 20), (4, 3, 16, 128), (8, 8, 64, 6)]
)
def test_itamax_unit_matches_golden(n_pe: int, rows: int, keys: int, spread: int) -> None:
    cfg = ClusterConfig(
        engine=EngineConfig(n_pe=n_pe, vec_len=16, acc_bits=24, tile_m=8, max_seq=64)
    )
    seed = n_pe * 100 + rows
    rng = np.random.default_rng(seed)
    logits = rng.integers(-spread, spread, (rows, keys)).clip(-128, 127)
    # The extremes: a fully masked row (every logit -128) and a saturated one.
    logits[0] = -128
    logits[-1] = 127 if rows > 1 else logits[-1]

    def lanes(b: int, r: int) -> list[int]:
        return [int(v) for v in logits[r, b * n_pe : (b + 1) * n_pe]]

    got_m, got_inv = _run_itamax(ItaMax(cfg), rows, keys // n_pe, lanes, groups=None)
    _check_against_golden(logits, n_pe, got_m, got_inv, seed)


@pytest.mark.parametrize(
    ("n_pe", "split", "keys"), [(4, 2, 28), (4, 4, 64), (4, 4, 20), (8, 2, 48)]
)
def test_itamax_unit_chains_split_beats(n_pe: int, split: int, keys: int) -> None:
    """Split-lane QK beats: ``split`` groups of a row a cycle (fewer in a ragged last
    block), chained in key order, give golden's group-by-group state."""
    cfg = ClusterConfig(
        engine=EngineConfig(n_pe=n_pe, vec_len=32, acc_bits=24, tile_m=8, max_seq=64, qk_split=4)
    )
    rows = 5
    seed = n_pe * 1000 + split * 100 + keys
    rng = np.random.default_rng(seed)
    logits = rng.integers(-40, 40, (rows, keys)).clip(-128, 127)
    logits[1, -n_pe:] = 127  # the maximum in a ragged last block
    width = split * n_pe

    def groups(b: int) -> int:
        return min(split, keys // n_pe - b * split)

    def lanes(b: int, r: int) -> list[int]:
        # Lanes past the beat's groups carry stale values: they must not count.
        used = groups(b) * n_pe
        return [
            int(logits[r, b * width + i]) if i < used else 127
            for i in range(cfg.engine.max_split * n_pe)
        ]

    got_m, got_inv = _run_itamax(ItaMax(cfg), rows, -(-keys // width), lanes, groups)
    _check_against_golden(logits, n_pe, got_m, got_inv, seed)
