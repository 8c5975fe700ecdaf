"""Memory plan, tiler and schedule executor: bit-exact with the integer model, plans that fit."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from models import quantize_for_engine, synthetic_for_engine

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.hw.dma import Direction
from tinyattn.hw.job import JobError
from tinyattn.sw import stream as stream_mod
from tinyattn.sw.lowering import ExecutionError, LoweringError, Program, lower
from tinyattn.sw.memplan import PlanError, l1_reserved
from tinyattn.sw.mobilebert import MobileBert
from tinyattn.sw.quantize import QuantizedMobileBert
from tinyattn.sw.schedule import (
    Schedule,
    build_schedule,
    deploy,
    execute_schedule,
    pack_record,
    unpack_record,
)
from tinyattn.sw.stream import StreamError
from tinyattn.sw.tiler import JOB, KIND_ATTENTION, KIND_GEMM, LOAD, WAIT_DMA, op_actions
from tinyattn.verif.engine_model import check_job, job_tensors

CFG = ClusterConfig()
#: A small cluster the fixture still fits: 8 x 32 engine (head dim 32 = vec_len), 32-key
#: attention tiles of at most 64 keys, 32 KiB L1 in 16 banks, 64-bit DMA.
SMALL = ClusterConfig(
    engine=EngineConfig(n_pe=8, vec_len=32, tile_m=32, max_seq=64, max_dim=1024),
    memory=MemoryConfig(n_banks=16, bank_words=512),
    dma=DmaConfig(dma_bits=64),
)


@pytest.fixture(scope="module")
def qmodel(model: MobileBert, calib_ids: np.ndarray) -> QuantizedMobileBert:
    return quantize_for_engine(model, calib_ids)


@pytest.fixture(scope="module")
def qmodel_small(model: MobileBert, calib_ids: np.ndarray) -> QuantizedMobileBert:
    """Quantized for ITAMax groups of the small engine's n_pe = 8."""
    return quantize_for_engine(model, calib_ids, group=8)


def _check_bit_exact(
    q: QuantizedMobileBert, cfg: ClusterConfig, seq_len: int, seed: int
) -> Schedule:
    rng = np.random.default_rng([seed, seq_len, 7])
    ids = rng.integers(0, q.config.vocab_size, seq_len)
    types = rng.integers(0, q.config.type_vocab_size, seq_len)
    sched = deploy(q, cfg, seq_len)
    run = execute_schedule(sched, ids, types)
    want = q.forward(ids, types)
    assert len(run.states) == len(want) == len(q.state_names)
    for i, (name, g, (w, _)) in enumerate(zip(q.state_names, run.states, want, strict=True)):
        assert g.dtype == np.int8 and g.shape == w.shape, f"seed {seed}: state {i} ({name})"
        bad = int(np.count_nonzero(g != w))
        assert bad == 0, f"seed {seed}, S={seq_len}: state {i} ({name}) differs in {bad} values"
    # The executor times the actions it ran: for the engine ops that is the prediction.
    for rec, pred, got in zip(sched.records, sched.predicted, run.cycles, strict=True):
        if rec.kind in (KIND_GEMM, KIND_ATTENTION):
            assert pred == got
    assert run.jobs == sum(c.jobs for c in run.cycles)
    _check_plans_fit(sched)
    return sched


def _check_plans_fit(sched: Schedule) -> None:
    """Every chosen plan fits: buffers disjoint, below the record area, every job valid and
    inside the buffers of its op."""
    cfg = sched.cfg
    top = cfg.memory.size_bytes - l1_reserved(sched.record_bytes)
    assert sched.l1_record_addr == top
    for plan in sched.plans:
        if plan is None:
            continue
        bufs = sorted(plan.arena.buffers.values(), key=lambda b: b.addr)
        assert plan.arena.used <= plan.arena.capacity <= top, plan.name
        for a, b in itertools.pairwise(bufs):
            assert a.end <= b.addr, plan.name
        assert bufs[-1].end <= top, plan.name
        for act in op_actions(plan.record, sched.cost):
            if act[0] != JOB:
                continue
            assert check_job(act[1], cfg) == JobError.NONE, plan.name
            for _, addr, stride, _, _, rows, nbytes in job_tensors(act[1]):
                end = addr + (rows - 1) * stride + nbytes
                assert any(b.addr <= addr and end <= b.end for b in bufs), plan.name


# ---- bit-exact -----------------------------------------------------------------------------


@pytest.mark.parametrize("seq_len", [128, 64])
def test_fixture_default_config(qmodel: QuantizedMobileBert, seq_len: int, seed: int) -> None:
    _check_bit_exact(qmodel, CFG, seq_len, seed)


def test_fixture_small_config(qmodel_small: QuantizedMobileBert, seed: int) -> None:
    sched = _check_bit_exact(qmodel_small, SMALL, 64, seed)
    assert sched.cfg.memory.size_bytes == 32 * 1024


def test_attention_runs_as_a_head_loop_when_all_heads_do_not_fit(
    qmodel_small: QuantizedMobileBert, seed: int
) -> None:
    """SMALL with 128 keys: every head's K and Vᵀ (32 KiB) do not fit its L1, so each
    attention op runs one FLAG_PER_HEAD job per head and query tile, each reading its
    head's record of the table; still bit-exact."""
    cfg = dataclasses.replace(SMALL, engine=dataclasses.replace(SMALL.engine, max_seq=128))
    sched = _check_bit_exact(qmodel_small, cfg, 128, seed)
    attention = [r for r in sched.records if r.kind == KIND_ATTENTION]
    assert attention and all(not r.all_heads and r.heads == 4 for r in attention)
    # At S = 64 the same cluster runs each attention op as jobs over all four heads.
    small = _check_bit_exact(qmodel_small, SMALL, 64, seed)
    assert all(r.all_heads for r in small.records if r.kind == KIND_ATTENTION)


def test_synthetic_first_two_layers(seed: int) -> None:
    q = synthetic_for_engine(2)
    assert q.config.vocab_size == 30522
    _check_bit_exact(q, CFG, 128, seed)


@pytest.mark.slow
def test_synthetic_24_layers(seed: int) -> None:
    sched = _check_bit_exact(synthetic_for_engine(), CFG, 128, seed)
    assert len([p for p in sched.plans if p is not None]) == 1 + 24 * 16


# ---- refusals: one line naming the op, the bytes needed and available --------------------


def _one_line(exc: pytest.ExceptionInfo[Exception], *words: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


def test_refuses_an_l1_too_small(qmodel: QuantizedMobileBert) -> None:
    cfg = ClusterConfig(memory=MemoryConfig(n_banks=16, bank_words=64))  # 4 KiB
    with pytest.raises(PlanError) as exc:
        deploy(qmodel, cfg, 64)
    _one_line(exc, "embeddings:", "bytes of L1", "but 3,200 are available")


def test_refuses_an_l2_too_small(qmodel: QuantizedMobileBert) -> None:
    cfg = ClusterConfig(dma=DmaConfig(l2_addr_bits=16))
    with pytest.raises(PlanError) as exc:
        deploy(qmodel, cfg, 64)
    _one_line(exc, "the L2 image needs at least", "dma.l2_addr_bits = 16", "has 65,536")


def test_refuses_a_sequence_over_max_seq(qmodel_small: QuantizedMobileBert) -> None:
    with pytest.raises(LoweringError) as exc:
        deploy(qmodel_small, SMALL, 128)
    _one_line(exc, "sequence length 128", "max_seq 64")
    # A program lowered for a larger engine is refused by the tiler, before anything runs.
    program = lower(qmodel_small, dataclasses.replace(SMALL, engine=EngineConfig(n_pe=8)), 128)
    with pytest.raises(PlanError) as exc2:
        build_schedule(program, SMALL)
    _one_line(exc2, "layer0.attention:", "DIM_LIMIT", "max_seq 64")


# ---- plans ---------------------------------------------------------------------------------


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    bank_words=st.sampled_from([256, 512, 1024, 2048]),
    dma_bits=st.sampled_from([32, 64, 128, 256, 512]),
    tile_m=st.sampled_from([16, 32, 64, 128]),
    queue=st.integers(2, 4),
)
def test_chosen_plans_always_fit(
    qmodel: QuantizedMobileBert, bank_words: int, dma_bits: int, tile_m: int, queue: int
) -> None:
    """Over random L1 sizes, DMA widths, engine tiles and queues: plan, or refuse cleanly."""
    cfg = ClusterConfig(
        engine=EngineConfig(tile_m=tile_m, job_queue_depth=queue),
        memory=MemoryConfig(bank_words=bank_words),
        dma=DmaConfig(dma_bits=dma_bits, queue_depth=queue),
    )
    try:
        sched = deploy(qmodel, cfg, 64)
    except PlanError as exc:
        assert "\n" not in str(exc) and "L1" in str(exc)
        return
    _check_plans_fit(sched)


def test_records_round_trip(qmodel: QuantizedMobileBert) -> None:
    """The prologue's records are in the image; the engine ops' pack and unpack alike."""
    sched = deploy(qmodel, CFG, 128)
    assert sched.prologue == 4
    for i, rec in enumerate(sched.records):
        raw = pack_record(rec, sched.record_bytes)
        if i < sched.prologue:
            lo = sched.records_addr + i * sched.record_bytes
            assert sched.image[lo : lo + sched.record_bytes] == raw
        else:
            assert rec.kind in (KIND_GEMM, KIND_ATTENTION)
            # first_slot is the stream's business, not the record's (it is not packed).
            assert unpack_record(raw) == dataclasses.replace(rec, first_slot=0), sched.names[i]


def test_schedule_is_deterministic(qmodel: QuantizedMobileBert) -> None:
    a, b = deploy(qmodel, CFG, 128), deploy(qmodel, CFG, 128)
    assert a.image == b.image and a.names == b.names and a.predicted == b.predicted


def test_activations_share_l2_only_when_dead(qmodel: QuantizedMobileBert) -> None:
    sched = deploy(qmodel, CFG, 128)
    l2 = sched.l2
    acts = [r for r in l2.regions if r.live is not None]
    for i, a in enumerate(acts):
        for b in acts[i + 1 :]:
            if a.addr < b.addr + b.nbytes and b.addr < a.addr + a.nbytes:
                assert a.live[1] < b.live[0] or b.live[1] < a.live[0], (a, b)
    assert l2.activation_bytes < l2.activation_bytes_no_reuse / 3
    # Sections do not overlap and the image ends with the activations.
    spans = sorted(l2.sections.values())
    for (a0, a1), (b0, _) in itertools.pairwise(spans):
        assert a0 + a1 <= b0
    assert l2.size == sum(l2.sections["activations"])


def test_search_is_fast_and_reported(qmodel: QuantizedMobileBert) -> None:
    sched = deploy(qmodel, CFG, 128)
    plans = [p for p in sched.plans if p is not None]
    worst = max(plans, key=lambda p: p.seconds)
    searched = [p for p in plans if p.simulated > 1]
    print(
        f"\nslowest search: {worst.name} {worst.seconds * 1e3:.1f} ms over {worst.candidates} "
        f"plans ({worst.feasible} fit, {worst.simulated} timed); {len(searched)} searches"
    )
    assert all(p.candidates >= p.feasible >= p.simulated >= 1 for p in plans)


def test_race_checker_catches_a_missing_wait(
    qmodel: QuantizedMobileBert, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the wait for its tiles, a job would read L1 the DMA is still writing."""

    def no_dma_waits(rec, cost):  # type: ignore[no-untyped-def]
        acts = op_actions(rec, cost)
        return [a for a in acts[:-1] if a[0] != WAIT_DMA] + acts[-1:]

    monkeypatch.setattr(stream_mod, "op_actions", no_dma_waits)
    sched = deploy(qmodel, CFG, 64)  # its command stream lacks the waits
    with pytest.raises(ExecutionError, match="before its DMA was waited for"):
        execute_schedule(sched, np.zeros(64, np.int64))


def test_stream_checker_catches_an_unwaited_chunk(
    qmodel: QuantizedMobileBert, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk that jumps to the next before its load is done is refused."""

    def load_late(self):  # type: ignore[no-untyped-def]
        """The next chunk's load at the end of this one, and a WAIT for nothing."""
        i, lay, n = len(self.chunks), self.layout, self.layout.chunk_bytes
        load = (LOAD, lay.l2_addr + (i + 1) * n, lay.buffer(i + 1), n, 1, n, n)
        self.cur += self.list().transfer(stream_mod._transfer(Direction.L2_TO_L1, *load[1:])).words
        self.transfers += 1
        self.actions.append(load)
        self.chunks.append(self.cur + self.list().wait_dma(0).jump(lay.buffer(i + 1)).words)
        self.cur = []

    monkeypatch.setattr(stream_mod, "_TAIL_WORDS", 14)
    monkeypatch.setattr(stream_mod._Writer, "_open", lambda self: None)
    monkeypatch.setattr(stream_mod._Writer, "_close", load_late)
    sched = deploy(qmodel, CFG, 64)
    with pytest.raises(StreamError, match="enters a chunk whose DMA was not waited for"):
        execute_schedule(sched, np.zeros(64, np.int64))


def test_execute_checks_its_inputs(qmodel: QuantizedMobileBert) -> None:
    sched = deploy(qmodel, CFG, 64)
    with pytest.raises(ValueError, match="input_ids must be 64 integers"):
        execute_schedule(sched, np.zeros(128, np.int64))
    with pytest.raises(ValueError, match=r"input_ids values must be in \[0, 512\)"):
        execute_schedule(sched, np.full(64, 512))
    with pytest.raises(ValueError, match=r"token_type_ids values must be in \[0, 2\)"):
        execute_schedule(sched, np.zeros(64, np.int64), np.full(64, 2))


def test_describe_names_every_op(qmodel: QuantizedMobileBert) -> None:
    sched = deploy(qmodel, CFG, 128)
    text = sched.describe()
    program: Program = sched.program
    for job in program.jobs():
        assert job.op in text
    assert "utilization" in text.splitlines()[-1]
