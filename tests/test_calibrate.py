"""The calibrated cost model times the runtime's work as hand-computed, and the comparison sums.

No simulator runs here: the RTL comparison is ``tinyattn bench model``
(:func:`tinyattn.sim.benchmarks.model.run_model_bench`).
"""

from __future__ import annotations

import math

from tinyattn.config import ClusterConfig
from tinyattn.hw.dma import Direction
from tinyattn.sim.calibrate import compare, op_kind
from tinyattn.sw.tiler import (
    CORE,
    JOB,
    KIND_GEMM,
    LOAD,
    ONCE,
    STORE,
    WAIT_DMA,
    WAIT_JOB,
    CostModel,
    OperandRecord,
    OpRecord,
    dma_cycles,
    engine_cycles,
    engine_port_load,
    op_actions,
    simulate,
)

CFG = ClusterConfig()
COST = CostModel()


def _one_tile_gemm() -> OpRecord:
    """A 64x64x64 GEMM in one job, every operand ONCE (a, b, c, p)."""
    ops = (
        OperandRecord(0x1000, 0, 0x0000, 0, 64, 64, ONCE, 1),
        OperandRecord(0x3000, 0, 0x1000, 0, 64, 64, ONCE, 1),
        OperandRecord(0x5000, 0, 0x2000, 0, 64, 64, ONCE, 1),
        OperandRecord(),
        OperandRecord(0x7000, 0, 0x3000, 0, 16, 16, ONCE, 1),
    )
    return OpRecord(KIND_GEMM, 0, 0, False, 1, 64, 64, 64, 64, 64, 1, ops, ((0, 0, 0, 0),))


def test_one_job_record_by_hand() -> None:
    """One tile as the sequencer runs it: stamp, three loads, stage, wait, push, wait, store,
    wait."""
    rec = _one_tile_gemm()
    c = COST.sequencer()
    acts = op_actions(rec, c)
    kinds = [a[0] for a in acts]
    assert kinds == [CORE, LOAD, LOAD, LOAD, CORE, WAIT_DMA, JOB, WAIT_JOB, STORE, WAIT_DMA]
    # The issuer, action by action (the queues never fill: 3 transfers, 1 job). No transfer
    # runs beside the job, so all move a beat at the idle rate.
    idle = c.dma_beat_idle
    t = c.seq_op
    d_free = 0
    for l2, l1, row in ((0x1000, 0x0000, 64), (0x3000, 0x1000, 64), (0x7000, 0x3000, 16)):
        t += c.seq_dma_submit
        dur = dma_cycles(Direction.L2_TO_L1, l2, l1, row, 64, row, row, CFG, c, idle)
        d_free = max(t, d_free) + dur
    t += c.seq_job_stage
    t = max(t, d_free) + c.seq_wait
    t += c.seq_job_push
    job_end = t + engine_cycles(acts[6][1], CFG, c)
    t = max(t, job_end) + c.seq_wait
    t += c.seq_dma_submit
    dur = dma_cycles(Direction.L1_TO_L2, 0x5000, 0x2000, 64, 64, 64, 64, CFG, c, idle)
    d_free = max(t, d_free) + dur
    t = max(t, d_free) + c.seq_wait
    got = simulate(acts, CFG, c)
    assert got.total == t
    issuer = c.seq_op + 4 * c.seq_dma_submit + c.seq_job_stage + c.seq_job_push
    assert got.firmware == issuer + 3 * c.seq_wait
    assert (got.jobs, got.transfers) == (1, 4)


def test_jobs_between_pay_their_commands() -> None:
    """Each job after the first adds its staging and push, two waits, the previous output's
    store and its own loads (a record of 2 tiles of N)."""
    rec = _one_tile_gemm()
    two = OpRecord(KIND_GEMM, 0, 0, False, 1, 64, 64, 64, 64, 32, 2, rec.operands,
                   rec.head_fields)  # fmt: skip
    c = COST.sequencer()
    one = simulate(op_actions(rec, c), CFG, c)
    got = simulate(op_actions(two, c), CFG, c)
    # b and p become per-tile loads (still ONCE in the record: one slot, reloaded).
    extra = c.seq_job_stage + c.seq_job_push + 2 * c.seq_wait + 3 * c.seq_dma_submit
    assert got.firmware - one.firmware == extra


def test_a_transfer_beside_a_job_moves_at_its_port_rate() -> None:
    """A load pushed while a job runs moves its beats at the rate that the job's L1 port
    load leaves the DMA, and at the idle rate once the job is done."""
    c = COST.sequencer()
    job = next(a[1] for a in op_actions(_one_tile_gemm(), c) if a[0] == JOB)
    beside = c.dma_beat_beside(engine_port_load(job, CFG, c))
    assert beside > c.dma_beat_idle
    job_end = c.seq_job_push + engine_cycles(job, CFG, c)
    for rows in (2, 200):  # within the job, and well past its end
        load = (LOAD, 0x8000, 0x9000, 64, rows, 64, 64)
        got = simulate([(JOB, job), load, (WAIT_DMA, 1)], CFG, c)
        start = c.seq_job_push + c.seq_dma_submit
        slow = dma_cycles(Direction.L2_TO_L1, *load[1:], CFG, c, beside)
        if start + slow <= job_end:
            end = start + slow
        else:
            idle = dma_cycles(Direction.L2_TO_L1, *load[1:], CFG, c, c.dma_beat_idle)
            end = job_end + math.ceil((1 - (job_end - start) / slow) * idle)
        assert got.total == max(end + c.seq_wait, job_end), rows
        assert got.dma == end - start


def test_compare_sums_per_kind() -> None:
    class _Sched:  # what compare reads of a Schedule
        names = ("embeddings", "layer0.attention.query", "layer1.attention.query")
        records = (_one_tile_gemm(),) * 3
        predicted = ()

    cmp = compare(_Sched(), [100, 200, 300], [110, 190, 300])  # type: ignore[arg-type]
    rows = {r.kind: r for r in cmp.ops}
    assert rows["attention.query"].measured == 500 and rows["attention.query"].predicted == 490
    assert abs(rows["embeddings"].error - 0.1) < 1e-12
    assert cmp.records[0].kind == "gemm" and cmp.records[0].records == 3
    assert (cmp.total.measured, cmp.total.predicted) == (600, 600)
    assert cmp.worst.kind == "embeddings"
    assert op_kind("layer12.ffn0.output") == "ffn0.output"
    assert "total" in cmp.format()
