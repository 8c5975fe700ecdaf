"""The functional coverage model (``verif/coverage.py``): reachability per configuration,
sampling into the right bins, the exported database read back, closure-directed picks, and
the launcher's failure naming the unhit bins, the configuration and the seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from coverage_summary import check_coverage
from test_dma_rtl import CONFIGS as DMA_CONFIGS
from test_engine_rtl import CONFIGS as ENGINE_CONFIGS
from test_interconnect_rtl import CONFIGS as TCDM_CONFIGS

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig
from tinyattn.hw.dma import Direction, DmaError
from tinyattn.hw.job import FLAG_AFFINE, FLAG_PER_HEAD, FLAG_RELU, Job, JobError, Op
from tinyattn.verif.coverage import (
    DmaCoverage,
    EngineCoverage,
    InterconnectCoverage,
    dma_reachability,
    engine_reachability,
    interconnect_reachability,
    missing_bins,
    occupancy_label,
    read_coverage,
    summary_line,
)
from tinyattn.verif.engine_jobs import attention_dims, gemm_dims

BOTH = ["ragged", "aligned"]


def _export_and_read(
    model: EngineCoverage | DmaCoverage | InterconnectCoverage, folder: Path
) -> tuple[dict[str, dict[str, int]], set[str]]:
    """Export ``model``'s database into ``folder``, read it back: the bins per item and the
    set of hit bins as ``"item: bin"``."""
    path = folder / "coverage.xml"
    model.export(path)
    cov = read_coverage(path)
    hit = {f"{item}: {b}" for item, bins in cov.items() for b, n in bins.items() if n}
    return cov, hit


@pytest.mark.parametrize("name", list(ENGINE_CONFIGS))
def test_tested_engines_reach_every_class(name: str) -> None:
    assert all(v == BOTH for v in engine_reachability(ENGINE_CONFIGS[name]).values())


def test_reachability_follows_the_configuration() -> None:
    # n_pe == vec_len: attention keys are multiples of vec_len, never ragged.
    square = ClusterConfig(engine=EngineConfig(n_pe=16, vec_len=16, acc_bits=24, tile_m=8))
    reach = engine_reachability(square)
    assert reach["attention n"] == ["aligned"]
    assert reach["gemm n"] == BOTH and reach["attention k"] == BOTH
    # vec_len == 4: n and k (multiples of 4) are always whole chunks.
    narrow = ClusterConfig(engine=EngineConfig(n_pe=4, vec_len=4, acc_bits=24, tile_m=8))
    reach = engine_reachability(narrow)
    assert reach["gemm n"] == reach["gemm k"] == reach["attention k"] == ["aligned"]
    assert reach["gemm m"] == BOTH
    model = EngineCoverage(narrow)
    assert len(model.shapes["gemm"]) == 2 and len(model.shapes["attention"]) == 2
    # Split-lane QK beats: one key a beat only, as vec_len / n_pe = 1 (a LOGITS word).
    assert model.splits == ["split 1"]
    assert EngineCoverage(ENGINE_CONFIGS["4x16"]).splits == ["split 1", "split 2", "split 4"]
    assert EngineCoverage(ClusterConfig(engine=EngineConfig(qk_split=2))).splits == [
        "split 1",
        "split 2",
    ]
    # A deeper queue: one more occupancy bin per kind.
    deep = ClusterConfig(engine=EngineConfig(job_queue_depth=4))
    assert EngineCoverage(deep).occupancies == ["idle"] + [f"busy, {q} queued" for q in range(4)]
    # DMA: word offsets inside a beat need a beat wider than a word.
    assert dma_reachability(DMA_CONFIGS["32b-4KiB"][0])["alignment"] == ["beat-aligned"]
    wide = dma_reachability(ClusterConfig(dma=DmaConfig(dma_bits=64)))
    assert wide["alignment"] == ["beat-aligned", "word offsets"]


def test_engine_bins_and_export(tmp_path) -> None:
    cfg = ENGINE_CONFIGS["4x16"]
    model = EngineCoverage(cfg)
    e = cfg.engine
    gemm = Job(op=Op.GEMM, m=e.tile_m, n=12, k=2 * e.vec_len, flags=FLAG_RELU | FLAG_AFFINE)
    model.sample(gemm, 0, 0.0, occupancy_label(0, 0))
    attention = Job(op=Op.ATTENTION, m=3, n=e.vec_len, k=8, heads=2)
    model.sample(attention, 0, 0.6, occupancy_label(1, 1))
    model.sample(gemm, int(JobError.GRANULE), 0.3, "idle")  # rejected: only its error bin
    cov, hit = _export_and_read(model, tmp_path)
    assert hit == {
        "engine.kind: gemm",
        "engine.kind: attention",
        "engine.flags: relu+affine",
        "engine.flags: attention shared",
        "engine.shape: gemm x m aligned, n ragged, k aligned",
        "engine.shape: attention x m ragged, n aligned, k ragged",
        "engine.stall: gemm x none",
        "engine.stall: attention x heavy",
        "engine.occupancy: gemm x idle",
        "engine.occupancy: attention x busy, 1 queued",
        "engine.error: granule",
        "engine.split: split 2",  # k = 8 <= vec_len / 2: two keys a unit per QK beat
    }
    assert len(missing_bins(cov)) == 57 - 12
    assert summary_line(cov).startswith("12/57 bins (kind 2/2, flags 2/18, shape 2/16,")


def test_directed_picks_close_the_engine_bins() -> None:
    """16 GEMMs and 8 attention jobs drawn by the picks hit every flag, shape and split bin
    (both attention forms: requantization in the job and per head)."""
    cfg = ENGINE_CONFIGS["8x32"]
    model = EngineCoverage(cfg)
    rng = np.random.default_rng(3)
    flags = [model.pick_flags(rng) for _ in range(16)]  # drawn before any completes
    assert sorted(flags) == list(range(16))
    for f in flags:
        ragged = model.pick_shape("gemm", rng)
        m, n, k = gemm_dims(cfg, rng, ragged)
        assert model.shape_of(m, n, k) == ", ".join(
            f"{d} {'ragged' if r else 'aligned'}" for d, r in zip("mnk", ragged, strict=True)
        )
        model.sample(Job(op=Op.GEMM, m=m, n=n, k=k, flags=f), 0, 0.3, "idle")
    for _ in range(8):
        m, n, k = attention_dims(cfg, rng, model.pick_shape("attention", rng))
        flags = FLAG_PER_HEAD if model.pick_per_head(rng) else 0
        k = model.pick_head_dim(k, rng)
        model.sample(Job(op=Op.ATTENTION, m=m, n=n, k=k, heads=1, flags=flags), 0, 0.3, "idle")
    from cocotb_coverage.coverage import coverage_db

    for item in ("engine.flags", "engine.shape", "engine.split"):
        assert all(coverage_db[item].detailed_coverage.values()), item


def test_dma_bins(tmp_path) -> None:
    model = DmaCoverage(DMA_CONFIGS["64b-16KiB"][0])
    from tinyattn.verif.descriptors import Descriptor

    one_row = Descriptor(Direction.L2_TO_L1, 0, 0, 64, 1, 64, 64)
    contiguous = Descriptor(Direction.L1_TO_L2, 4, 0, 64, 4, 64, 64)  # 1-D, a word offset
    gapped = Descriptor(Direction.L1_TO_L2, 0, 0, 64, 4, 64, 72)  # 2-D
    model.sample(one_row, 0)
    model.sample(contiguous, 0)
    model.sample(gapped, int(DmaError.L1_RANGE))
    cov, hit = _export_and_read(model, tmp_path)
    assert hit == {
        "dma.transfer: L2->L1 x 1-D x done",
        "dma.transfer: L1->L2 x 1-D x done",
        "dma.transfer: L1->L2 x 2-D x L1 range",
        "dma.alignment: L2->L1 x beat-aligned",
        "dma.alignment: L1->L2 x word offsets",
    }
    assert summary_line(cov) == "5/24 bins (transfer 3/20, alignment 2/4)"


def test_interconnect_reachability_follows_the_ports() -> None:
    # b2: 2 narrow ports (1 core, 1 DMA lane) and 1 wide lane: no wide collision, and a
    # lone wide lane waits at most once (its bound is 1), so never "waited" below it.
    reach = interconnect_reachability(TCDM_CONFIGS["b2-c1-d32-v4-s1"][0])
    assert reach["collision"] == [("narrow", "2"), ("narrow+wide", "2"), ("narrow+wide", "3+")]
    assert reach["conflict"] == ["wide won", "narrow won"]
    assert ("wide", "waited") not in reach["wait"] and len(reach["wait"]) == 5
    # b4: 3 narrow ports, 2 wide lanes: a wide pair but no wide crowd of 3.
    reach = interconnect_reachability(TCDM_CONFIGS["b4-c2-d32-v8-s2"][0])
    assert ("wide", "2") in reach["collision"] and ("wide", "3+") not in reach["collision"]
    assert len(reach["collision"]) == 5 and len(reach["wait"]) == 6
    # The default: 24 narrow ports, 16 wide lanes: every bin.
    reach = interconnect_reachability(ClusterConfig())
    assert len(reach["collision"]) == 6 and len(reach["wait"]) == 6


def test_interconnect_bins_and_export(tmp_path) -> None:
    cfg = TCDM_CONFIGS["b4-c2-d32-v8-s2"][0]  # bounds: narrow 3 * 3 - 1 = 8, wide 2 + 0 = 2
    model = InterconnectCoverage(cfg)
    model.sample_bank(1, 0, "narrow")  # one requester: no collision
    model.sample_bank(0, 0, None)
    model.sample_bank(2, 0, "narrow")
    model.sample_bank(1, 1, "wide")
    model.sample_bank(2, 1, "narrow")
    model.sample_wait("narrow", 0)
    model.sample_wait("narrow", 8)
    model.sample_wait("wide", 1)
    with pytest.raises(ValueError, match=r"a wide wait of 3 cycles is outside 0\.\.2"):
        model.sample_wait("wide", 3)
    with pytest.raises(ValueError, match="granted to None"):
        model.sample_bank(1, 1, None)
    cov, hit = _export_and_read(model, tmp_path)
    assert hit == {
        "interconnect.collision: narrow x 2",
        "interconnect.collision: narrow+wide x 2",
        "interconnect.collision: narrow+wide x 3+",
        "interconnect.conflict: wide won",
        "interconnect.conflict: narrow won",
        "interconnect.wait: narrow x at once",
        "interconnect.wait: narrow x at the bound",
        "interconnect.wait: wide x waited",
    }
    assert summary_line(cov) == "8/13 bins (collision 3/5, conflict 2/2, wait 3/6)"


def test_an_unhit_bin_fails_naming_configuration_and_seed(tmp_path) -> None:
    model = InterconnectCoverage(TCDM_CONFIGS["b2-c1-d32-v4-s1"][0])
    model.sample_bank(1, 1, "wide")
    model.export(tmp_path / "coverage.xml")
    recorded: list[tuple[str, object]] = []
    with pytest.raises(pytest.fail.Exception) as failure:
        check_coverage(
            lambda k, v: recorded.append((k, v)), tmp_path, "interconnect b2-c1-d32-v4-s1 x", 7
        )
    message = str(failure.value)
    assert message.startswith("interconnect b2-c1-d32-v4-s1 x (seed 7): 8 reachable")
    assert "interconnect.conflict: narrow won" in message
    assert "interconnect.collision: narrow+wide x 2" not in message  # hit
    assert recorded == [
        ("functional_coverage", "interconnect b2-c1-d32-v4-s1 x, seed 7: 2/10 bins "
         "(collision 1/3, conflict 1/2, wait 0/5)")
    ]  # fmt: skip
