"""cocotb bench of the compute core (``hw/compute_core.py``) against the golden model.

Every operand beat's result (raw accumulators and requantized int8) is checked
bit for bit against :func:`tinyattn.verif.golden.dot_array` and
:func:`tinyattn.verif.golden.requantize`, under random stalls on the operand
stream, random back-pressure on the result stream, and random weight writes
into the banks while beats are in flight. Split-lane beats (QKᵀ with a short head
dimension, ``split = log2 s``) and segment weight writes are mixed in where the
configuration builds them: segment ``g`` of unit ``j`` is the dot product of the
beat's first ``vec_len / s`` lanes with lanes ``g * vec_len / s ..`` of the unit's
weights, requantized with unit ``j``'s parameters.

The streams are :mod:`tinyattn.verif.streams` models in the shared
:class:`~tinyattn.verif.obi.CycleLoop`: driven after the falling edge and sampled in
the read-only phase, so a handshake seen by the bench is exactly the one the design
sees on that edge, under Icarus and Verilator alike; the result sink also checks
that the core holds a result until it is taken.

Knobs (environment, set by the launcher): ``TINYATTN_BEATS``,
``TINYATTN_STALL_IN`` / ``TINYATTN_STALL_OUT`` (probability that a new beat is
held back / that ``ready`` is low in a cycle), ``TINYATTN_WEIGHT_WRITES``
(probability of a weight write per cycle).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from tinyattn.config import EngineConfig
from tinyattn.hw.compute_core import (
    PIPELINE_DEPTH,
    operand_layout,
    result_layout,
    weight_layout,
)
from tinyattn.verif import golden
from tinyattn.verif.benches.common import (
    bench_config,
    bench_seed,
    env_float,
    env_int,
    start_clock_and_reset,
    write_metrics,
)
from tinyattn.verif.obi import CycleLoop
from tinyattn.verif.streams import StreamSink, StreamSource, random_pauses


@dataclass
class OperandBeat:
    """One operand beat as the bench means it (unpacked)."""

    x: np.ndarray  # (vec_len,) int8 or uint8 values
    x_signed: bool
    bank: int
    acc_in: np.ndarray  # (n_pe,) signed acc_bits
    mult: np.ndarray  # (n_pe,)
    shift: np.ndarray
    add: np.ndarray
    relu: bool
    split: int = 0  # log2 of the dot products a unit computes (split-lane beat)

    def payload(self) -> dict[str, Any]:
        return {
            "x": self.x & 0xFF,
            "acc_in": self.acc_in,
            "requant": [
                {"mult": int(m), "shift": int(s), "add": int(a)}
                for m, s, a in zip(self.mult, self.shift, self.add, strict=True)
            ],
            "x_signed": int(self.x_signed),
            "bank": self.bank,
            "relu": int(self.relu),
            "split": self.split,
        }


@dataclass
class WeightWrite:
    """One weight write: unit ``unit`` of bank ``bank``, or with ``split`` only segment
    ``segment`` of it (from ``w``'s first ``vec_len >> split`` lanes)."""

    bank: int
    unit: int
    w: np.ndarray
    split: int = 0
    segment: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "w": self.w,
            "unit": self.unit,
            "bank": self.bank,
            "split": self.split,
            "segment": self.segment,
        }


def random_beat(cfg: EngineConfig, rng: np.random.Generator) -> OperandBeat:
    """A beat whose requantization lands mostly in range, sometimes saturates or wraps."""
    x_signed = bool(rng.integers(2))
    x = rng.integers(-128, 128, cfg.vec_len) if x_signed else rng.integers(0, 256, cfg.vec_len)
    lim = 1 << (cfg.acc_bits - 1)
    # Typical |dot| is about 74 * 74 * sqrt(vec_len) (uniform int8 lanes).
    typical_dot = 74 * 74 * np.sqrt(cfg.vec_len)
    if rng.random() < 0.1:  # near the wrap boundary
        edge = rng.choice([-lim, lim - 1], cfg.n_pe)
        acc_in = edge - np.sign(edge) * rng.integers(0, 1 << 16, cfg.n_pe)
    else:
        span = int(4 * typical_dot)
        acc_in = rng.integers(-span, span + 1, cfg.n_pe)
    mult = rng.integers(0, 256, cfg.n_pe)
    # Aim the shift so that mult * acc >> shift is of int8 size, with jitter;
    # now and then anything, to cover saturation.
    typical = 2 * typical_dot * np.maximum(mult, 1)
    shift = np.clip(np.round(np.log2(typical / 64)) + rng.integers(-2, 3, cfg.n_pe), 0, 31)
    wild = rng.random(cfg.n_pe) < 0.1
    shift = np.where(wild, rng.integers(0, 32, cfg.n_pe), shift).astype(np.int64)
    # A third of the beats split-lane where the core has the mode (int8 queries, acc_in 0).
    max_log2 = cfg.max_split.bit_length() - 1
    split = int(rng.integers(1, max_log2 + 1)) if max_log2 and rng.random() < 1 / 3 else 0
    if split:
        x_signed = True
        x = rng.integers(-128, 128, cfg.vec_len)
        acc_in = np.zeros(cfg.n_pe, dtype=np.int64)
    return OperandBeat(
        x=x.astype(np.int64),
        x_signed=x_signed,
        bank=int(rng.integers(2)),
        acc_in=np.asarray(acc_in, dtype=np.int64),
        mult=mult,
        shift=shift,
        add=rng.integers(-128, 128, cfg.n_pe),
        relu=bool(rng.random() < 0.3),
        split=split,
    )


def expected_result(
    cfg: EngineConfig, beat: OperandBeat, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Golden result of ``beat`` with weight bank contents ``weights`` (2, n_pe, vec_len).

    ``y`` has ``s * n_pe`` values (segment-major); ``acc`` is left out of split beats
    (their whole-unit sums mean nothing).
    """
    if beat.split:
        segments = 1 << beat.split
        lanes = cfg.vec_len // segments
        zero = np.zeros((1, cfg.n_pe), dtype=np.int64)
        accs = [
            golden.dot_array(
                beat.x[None, :lanes],
                weights[beat.bank][:, g * lanes : (g + 1) * lanes],
                zero,
                cfg.acc_bits,
            )[0]
            for g in range(segments)
        ]
        y = np.concatenate([golden.requantize(a, beat.mult, beat.shift, beat.add) for a in accs])
        if beat.relu:
            y = golden.relu(y)
        return {"y": y.astype(np.int64)}
    acc = golden.dot_array(beat.x[None, :], weights[beat.bank], beat.acc_in[None, :], cfg.acc_bits)[
        0
    ]
    y = golden.requantize(acc, beat.mult, beat.shift, beat.add)
    if beat.relu:
        y = golden.relu(y)
    return {"acc": acc, "y": y.astype(np.int64)}


class ComputeCoreTB:
    """Owns the clock, reset and the three stream models of the compute core."""

    def __init__(self, dut: Any, cfg: EngineConfig, seed: int) -> None:
        self.dut = dut
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.w_layout = weight_layout(cfg)
        self.op_layout = operand_layout(cfg)
        self.res_layout = result_layout(cfg)
        # The bench's model of the two weight banks.
        self.weights = np.zeros((2, cfg.n_pe, cfg.vec_len), dtype=np.int64)

    async def reset(self) -> None:
        d = self.dut
        d.weights__valid.value = 0
        d.weights__payload.value = 0
        d.operands__valid.value = 0
        d.operands__payload.value = 0
        d.results__ready.value = 0
        await start_clock_and_reset(d)

    def random_weight_write(self) -> WeightWrite:
        """A whole unit, or (where the core splits) one segment of it."""
        rng, cfg = self.rng, self.cfg
        w = rng.integers(-128, 128, cfg.vec_len)
        max_log2 = cfg.max_split.bit_length() - 1
        split = int(rng.integers(0, max_log2 + 1))
        segment = int(rng.integers(1 << split))
        return WeightWrite(int(rng.integers(2)), int(rng.integers(cfg.n_pe)), w, split, segment)

    async def run(
        self,
        beats: list[OperandBeat],
        *,
        stall_in: float,
        stall_out: float,
        weight_writes: float,
        preload: bool = True,
    ) -> tuple[int, list[dict[str, np.ndarray]]]:
        """Stream ``beats`` through and check every result against the golden model.

        With ``preload`` every unit of both banks is first written with random
        weights (one write a cycle, not counted). Returns the cycles from the
        first beat offered to the last result taken, and the results in order.
        Raises ``AssertionError`` on the first mismatch.
        """
        d, cfg, rng = self.dut, self.cfg, self.rng
        if preload:
            await self.load_weights(rng.integers(-128, 128, (2, cfg.n_pe, cfg.vec_len)))

        expected: deque[tuple[int, dict[str, np.ndarray]]] = deque()
        results: list[dict[str, np.ndarray]] = []

        def accepted(item: tuple[int, OperandBeat], cycle: int) -> None:
            # The beat samples the banks as they are before this edge's weight write.
            index, beat = item
            expected.append((index, expected_result(cfg, beat, self.weights)))

        def received(got: dict[str, np.ndarray], cycle: int) -> None:
            assert expected, f"cycle {cycle}: a result without an accepted operand beat"
            index, want = expected.popleft()
            got = {"acc": got["acc"], "y": got["y"][: want["y"].size]}
            for key in want:
                if not np.array_equal(got[key], want[key]):
                    raise AssertionError(
                        f"beat {index}: {key} mismatch\n got  {got[key].tolist()}\n"
                        f" want {want[key].tolist()}\n beat {beats[index]}"
                    )
            results.append(got)

        operands: StreamSource[tuple[int, OperandBeat]] = StreamSource(
            d,
            "operands",
            self.op_layout,
            encode=lambda item: item[1].payload(),
            pause=random_pauses(rng, stall_in),
            on_accept=accepted,
        )
        operands.push(*enumerate(beats))
        sink = StreamSink(
            d, "results", self.res_layout, pause=random_pauses(rng, stall_out), on_receive=received
        )
        loop = CycleLoop(d.clk)
        # Sampled in this order: a write lands after the beat of the same edge read the banks.
        loop.add(operands, sink, *self._weight_writer(weight_writes))
        cycles = await loop.run_until(
            lambda: len(results) == len(beats),
            timeout=50 * (len(beats) + 10) + 1000,
            what=f"hang: {len(beats)} results",
        )
        await FallingEdge(d.clk)
        d.operands__valid.value = 0
        d.weights__valid.value = 0
        return cycles, results

    def _weight_writer(self, probability: float) -> list[StreamSource]:
        """A source of random weight writes, one a cycle with ``probability`` (none at 0)."""
        if probability <= 0.0:
            return []
        return [
            StreamSource(
                self.dut,
                "weights",
                self.w_layout,
                encode=WeightWrite.payload,
                pause=random_pauses(self.rng, 1.0 - probability),
                refill=self.random_weight_write,
                on_accept=self._write_landed,
            )
        ]

    def _write_landed(self, write: WeightWrite, cycle: int) -> None:
        lanes = self.cfg.vec_len >> write.split
        start = write.segment * lanes
        self.weights[write.bank, write.unit, start : start + lanes] = write.w[:lanes]

    async def load_weights(self, banks: np.ndarray) -> None:
        """Write ``banks`` (2, n_pe, vec_len) into the core, one unit a cycle."""
        writes = [WeightWrite(b, u, banks[b, u]) for b in range(2) for u in range(self.cfg.n_pe)]
        source = StreamSource(
            self.dut,
            "weights",
            self.w_layout,
            encode=WeightWrite.payload,
            on_accept=self._write_landed,
        )
        source.push(*writes)
        loop = CycleLoop(self.dut.clk)
        loop.add(source)
        cycles = await loop.run_until(lambda: source.idle, timeout=4 * len(writes), what="writes")
        # The weight port never back-pressures: one write taken every cycle.
        assert cycles == len(writes), f"{len(writes)} weight writes took {cycles} cycles"
        await FallingEdge(self.dut.clk)
        self.dut.weights__valid.value = 0


@cocotb.test()
async def random_stalls(dut: Any) -> None:
    """Random beats, random stalls both sides, random weight writes in flight."""
    cfg = bench_config().engine
    seed = bench_seed()
    tb = ComputeCoreTB(dut, cfg, seed)
    await tb.reset()
    n = env_int("TINYATTN_BEATS", 200)
    beats = [random_beat(cfg, tb.rng) for _ in range(n)]
    cycles, _ = await tb.run(
        beats,
        stall_in=env_float("TINYATTN_STALL_IN", 0.3),
        stall_out=env_float("TINYATTN_STALL_OUT", 0.3),
        weight_writes=env_float("TINYATTN_WEIGHT_WRITES", 0.1),
    )
    write_metrics("random_stalls", {"beats": n, "cycles": cycles, "seed": seed})


@cocotb.test()
async def full_throughput(dut: Any) -> None:
    """Without stalls the core accepts a beat every cycle and answers after PIPELINE_DEPTH."""
    cfg = bench_config().engine
    tb = ComputeCoreTB(dut, cfg, bench_seed() + 1)
    await tb.reset()
    n = env_int("TINYATTN_BEATS", 200)
    beats = [random_beat(cfg, tb.rng) for _ in range(n)]
    cycles, _ = await tb.run(beats, stall_in=0.0, stall_out=0.0, weight_writes=0.0)
    assert cycles == n + PIPELINE_DEPTH, (
        f"{n} beats took {cycles} cycles, want {n + PIPELINE_DEPTH}"
    )
    write_metrics("full_throughput", {"beats": n, "cycles": cycles})


@cocotb.test()
async def gemm_tile(dut: Any) -> None:
    """``Y = ReLU(requant(X · W + b))`` for X (M, 2*vec_len), W (2*vec_len, n_pe).

    The two K chunks sit in the two weight banks; pass 1 starts from the bias
    and returns raw partial sums, pass 2 adds the second chunk to them and
    requantizes. The result is compared with :func:`golden.gemm` as a whole.
    """
    cfg = bench_config().engine
    seed = bench_seed()
    tb = ComputeCoreTB(dut, cfg, seed)
    rng = tb.rng
    await tb.reset()
    m, k, n = env_int("TINYATTN_ROWS", 64), 2 * cfg.vec_len, cfg.n_pe
    x = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    bias = rng.integers(-(1 << 16), 1 << 16, n)
    mult = rng.integers(64, 256, n)
    # Put the outputs in int8 range: |acc| is about 74 * 74 * sqrt(K).
    shift = np.full(n, int(np.round(np.log2(2 * 74 * 74 * np.sqrt(k) * 160 / 64))))
    add = rng.integers(-16, 17, n)
    await tb.load_weights(np.stack([w[: cfg.vec_len].T, w[cfg.vec_len :].T]))

    def beats(chunk: int, acc_in: np.ndarray) -> list[OperandBeat]:
        return [
            OperandBeat(
                x=x[row, chunk * cfg.vec_len : (chunk + 1) * cfg.vec_len],
                x_signed=True,
                bank=chunk,
                acc_in=acc_in[row],
                mult=mult,
                shift=shift,
                add=add,
                relu=True,
            )
            for row in range(m)
        ]

    opts = {"stall_in": 0.0, "stall_out": 0.0, "weight_writes": 0.0, "preload": False}
    cycles1, partial = await tb.run(beats(0, np.tile(bias, (m, 1))), **opts)
    cycles2, final = await tb.run(beats(1, np.stack([r["acc"] for r in partial])), **opts)
    y = np.stack([r["y"] for r in final])
    want = golden.gemm(
        x, w, bias, mult=mult, shift=shift, add=add, relu_en=True, acc_bits=cfg.acc_bits
    )
    mismatches = int(np.count_nonzero(y != want))
    assert mismatches == 0, (
        f"{mismatches} of {y.size} outputs differ from golden.gemm (seed {seed})"
    )
    assert np.count_nonzero(want) > y.size // 4, "test vector too degenerate: mostly zeros"
    cycles = cycles1 + cycles2
    macs = m * k * n
    ideal = macs // cfg.macs_per_cycle
    write_metrics(
        "gemm_tile",
        {
            "m": m,
            "k": k,
            "n": n,
            "checked": int(y.size),
            "cycles": cycles,
            "ideal_cycles": ideal,
            "macs": macs,
            "utilization": ideal / cycles,
            "seed": seed,
        },
    )
