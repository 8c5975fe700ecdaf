"""A deployed MobileBERT on the cluster RTL: the C runtime walks the schedule, bit-exact.

``tinyattn.sim.model_run`` builds ``verif/firmware/run_model.c`` with the runtime
(``sw/firmware/tinyattn_runtime.c``), writes the ids into the schedule's L2 image, runs it on
the cluster and reads the hidden states back from L2. Every hidden state must equal
``QuantizedMobileBert.forward`` bit for bit.

- a one-layer synthetic model on a small cluster with a 4 KiB L1, so that the plans use
  every buffering mode (``ONCE``, ``DOUBLE``, ``CACHED``) and several tiles per op, under
  Icarus and Verilator;
- the tiny model's schedule against the Verilog L2 and the cocotb L2 model, which must
  time it alike (Verilator);
- on the same cluster, a model whose attention has 4 heads of 16 at S = 16: every head's
  K and Vᵀ at once do not fit the L1, so the tiler falls back to the head loop (one
  ATTENTION job per head), under Verilator;
- the 2-layer fixture at S = 128 on the default cluster, under Verilator: the measured
  cycles per record are printed beside the prediction (only a loose bound is asserted).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from models import FIXTURE, calibration_ids, quantize_for_engine

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.sim.cosim import L2Timing, run_firmware
from tinyattn.sim.model_run import build_runtime, run_model
from tinyattn.sw.mobilebert import MobileBert, MobileBertConfig
from tinyattn.sw.quantize import QuantizedMobileBert
from tinyattn.sw.schedule import deploy
from tinyattn.sw.tiler import CACHED, DOUBLE, KIND_ATTENTION, ONCE

#: 4 x 16 engine (acc_bits 32, as the lowering requires), 4 KiB L1, 64-bit DMA.
TINY_CFG = ClusterConfig(
    engine=EngineConfig(n_pe=4, vec_len=16, tile_m=8, max_seq=64, max_dim=512),
    memory=MemoryConfig(n_banks=8, bank_words=128),
    dma=DmaConfig(dma_bits=64),
)
TINY = MobileBertConfig(
    vocab_size=64,
    # 48 x 64 FFN weights (3 KiB) do not fit beside their X tiles in 4 KiB: the tiler
    # splits both M and N and caches the inner operand, so every buffering mode runs.
    hidden_size=48,
    embedding_size=8,
    intra_bottleneck_size=16,
    num_attention_heads=2,
    intermediate_size=64,
    num_feedforward_networks=1,
    num_hidden_layers=1,
    max_position_embeddings=32,
)

#: TINY with 4 attention heads of 16 (a 64-wide bottleneck) and narrow hidden and FFN
#: layers: at S = 16, the K and Vᵀ of all heads (2 x 16 x 64 bytes) with the query and
#: output tiles exceed the 4 KiB L1, one head's fit.
HEAD_LOOP = dataclasses.replace(
    TINY,
    intra_bottleneck_size=64,
    num_attention_heads=4,
    hidden_size=16,
    intermediate_size=16,
    true_hidden_size=None,  # derived again from the bottleneck
)

needs_gcc = pytest.mark.skipif(
    shutil.which("riscv64-unknown-elf-gcc") is None,
    reason="riscv64-unknown-elf-gcc missing (make test installs gcc-riscv64-unknown-elf)",
)
pytestmark = [pytest.mark.sim, needs_gcc]


def _ids(seed: int, seq_len: int, vocab: int, types: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, seq_len, 11])
    return rng.integers(0, vocab, seq_len), rng.integers(0, types, seq_len)


def _synthetic(
    config: MobileBertConfig, model_seed: int, calib_seed: int, seq_len: int
) -> QuantizedMobileBert:
    """A synthetic model of ``config`` quantized for the engine (groups of 4) on 4 random
    calibration sequences of ``seq_len`` ids."""
    model = MobileBert.synthetic(config, seed=model_seed)
    calib = np.random.default_rng(calib_seed).integers(0, config.vocab_size, (4, seq_len))
    return quantize_for_engine(model, calib, group=4)


def test_tiny_model_bit_exact(sim: str, seed: int) -> None:
    q = _synthetic(TINY, model_seed=3, calib_seed=0, seq_len=32)
    ids, types = _ids(seed, 32, TINY.vocab_size, TINY.type_vocab_size)
    t0 = time.monotonic()
    out = run_model(q, TINY_CFG, ids, types, sim)  # raises ModelMismatchError unless bit-exact
    wall = time.monotonic() - t0
    sched = out.schedule
    modes = {o.mode for r in sched.records for o in r.operands}
    assert {ONCE, DOUBLE, CACHED} <= modes  # the plans exercise every buffering mode
    assert any(r.kind == KIND_ATTENTION and r.heads > 1 for r in sched.records)
    assert out.jobs == sched.total.jobs and out.transfers >= sched.total.transfers
    assert out.run.macs == sched.program.macs.total  # the engine's MAC counter
    assert len(out.record_cycles) == len(sched.records)
    print(
        f"\n{sim}: seed {seed}, {len(sched.records)} records, {out.jobs} jobs, "
        f"{out.cycles:,} cycles measured, {out.predicted:,} predicted; run {out.run.cycles:,} "
        f"cycles in {wall:.1f} s ({out.run.cycles_per_second:,.0f} cycles/s), "
        f"firmware {out.code_bytes:,} bytes"
    )


@pytest.mark.simulators("verilator")
def test_the_two_l2_models_time_alike(sim: str, seed: int, tmp_path: Path) -> None:
    """The tiny model's schedule against the Verilog L2 (``tinyattn_cluster_l2``, what a
    Verilator model run uses) and against the cocotb L2 model (what Icarus uses): the same
    console, cycle for cycle, and the same L2 afterwards. They parted by 26 cycles while the
    cocotb model lost a cycle on a request that came as it went to sleep."""
    q = _synthetic(TINY, model_seed=3, calib_seed=0, seq_len=32)
    ids, types = _ids(seed, 32, TINY.vocab_size, TINY.type_vocab_size)
    schedule = deploy(q, TINY_CFG, 32)
    fw = build_runtime(TINY_CFG, tmp_path)
    image = schedule.image_with_inputs(ids, types)
    runs = {
        name: run_firmware(TINY_CFG, fw, image, sim, l2=L2Timing(), rtl_l2=rtl_l2)
        for name, rtl_l2 in (("verilog", True), ("cocotb", False))
    }
    verilog, cocotb_l2 = runs["verilog"], runs["cocotb"]
    assert verilog.exit_code == cocotb_l2.exit_code == 0, verilog.console[-400:]
    assert verilog.l2 is not None and cocotb_l2.l2 is not None
    assert (verilog.cycles, verilog.counters) == (cocotb_l2.cycles, cocotb_l2.counters)
    assert verilog.console == cocotb_l2.console  # the per-record cycles the firmware prints
    assert np.array_equal(verilog.l2, cocotb_l2.l2)
    transfers = verilog.counters["dma_done_count"]
    print(f"\nboth L2 models: {verilog.cycles:,} cycles, {transfers} transfers")


@pytest.mark.simulators("verilator")
def test_attention_head_loop_bit_exact(sim: str, seed: int) -> None:
    """The tiler's fallback for an attention op whose heads do not fit L1 together: one
    ATTENTION job per head, run by the runtime's head loop, bit-exact (Verilator only; the
    cluster build is the one of the test above)."""
    q = _synthetic(HEAD_LOOP, model_seed=5, calib_seed=1, seq_len=16)
    ids, types = _ids(seed, 16, HEAD_LOOP.vocab_size, HEAD_LOOP.type_vocab_size)
    t0 = time.monotonic()
    out = run_model(q, TINY_CFG, ids, types, sim)  # raises unless bit-exact
    wall = time.monotonic() - t0
    [attention] = [r for r in out.schedule.records if r.kind == KIND_ATTENTION]
    # The head loop: one job per head and query tile, not one job over all heads.
    assert attention.heads == HEAD_LOOP.num_attention_heads and not attention.all_heads
    assert attention.tiles == attention.heads * -(-attention.m // attention.tm)
    assert out.jobs == out.schedule.total.jobs
    assert out.run.macs == out.schedule.program.macs.total
    print(
        f"\nhead loop: seed {seed}, {attention.heads} heads x {attention.tiles // attention.heads}"
        f" query tiles, {out.jobs} jobs, {out.cycles:,} cycles measured, {out.predicted:,} "
        f"predicted, {wall:.1f} s"
    )


@pytest.mark.simulators("verilator")
def test_fixture_bit_exact_default_cluster(sim: str, seed: int) -> None:
    """The 2-layer fixture at S = 128 on the default cluster (Verilator only)."""
    q = quantize_for_engine(MobileBert.from_pretrained(FIXTURE), calibration_ids())
    ids, types = _ids(seed, 128, q.config.vocab_size, q.config.type_vocab_size)
    cfg = ClusterConfig()
    t0 = time.monotonic()
    out = run_model(q, cfg, ids, types, sim)  # raises ModelMismatchError unless bit-exact
    wall = time.monotonic() - t0
    assert out.jobs == out.schedule.total.jobs
    assert out.run.macs == out.schedule.program.macs.total
    # Loose sanity: the RTL is neither impossibly fast nor wildly slower than the model.
    assert out.schedule.program.macs.total / cfg.engine.macs_per_cycle < out.cycles
    assert out.cycles < 20 * out.predicted
    lines = [f"{'kind':<28} {'measured':>10} {'predicted':>10} {'error':>7}"]
    for kind, (got, pred) in out.by_kind().items():
        lines.append(f"{kind:<28} {got:>10,} {pred:>10,} {got / pred - 1:>7.1%}")
    lines.append(
        f"{'total':<28} {out.cycles:>10,} {out.predicted:>10,} "
        f"{out.cycles / out.predicted - 1:>7.1%}; utilization {out.utilization:.1%}; engine "
        f"busy {out.run.counters['engine_busy_cycles']:,} of {out.run.cycles:,} run cycles; "
        f"{wall:.1f} s ({out.run.cycles_per_second:,.0f} cycles/s)"
    )
    print("\n" + "\n".join(lines))


@pytest.mark.simulators("verilator")
def test_a_bad_id_stops_the_gather(sim: str, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image whose ids escaped the host's check (a corrupted transfer, say): the runtime's
    gather refuses the id before indexing with it, finishes the loads it pushed and names
    the record (Verilator only: the check is in the firmware, not in the RTL)."""
    from tinyattn.sim.model_run import run_schedule
    from tinyattn.sw.schedule import Schedule, deploy

    q = _synthetic(TINY, model_seed=3, calib_seed=0, seq_len=32)
    sched = deploy(q, TINY_CFG, 32)
    ids, types = _ids(seed, 32, TINY.vocab_size, TINY.type_vocab_size)
    good = Schedule.image_with_inputs
    position = int(np.random.default_rng([seed, 5]).integers(1, 32))

    def corrupted(self: Schedule, *args: object) -> bytes:
        image = bytearray(good(self, *args))
        at = self.l2.placements["input_ids"].addr + 4 * position
        image[at : at + 4] = (TINY.vocab_size + 7).to_bytes(4, "little")
        return bytes(image)

    monkeypatch.setattr(Schedule, "image_with_inputs", corrupted)
    with pytest.raises(RuntimeError, match=r"(?s)exit code 259\b.*record 0 failed: status 3"):
        run_schedule(sched, ids, types, sim)
