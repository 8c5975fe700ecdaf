"""The golden job model: its checks, and its results against the golden primitives."""

from __future__ import annotations

import numpy as np
import pytest

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.hw.job import (
    FLAG_PER_HEAD,
    FLAG_PER_ROW,
    Job,
    JobError,
    Op,
    pack_params,
    unpack_head_params,
    unpack_params,
)
from tinyattn.verif import golden
from tinyattn.verif.engine_jobs import Allocator, random_attention, random_gemm
from tinyattn.verif.engine_model import check_job, read_matrix, run_job, write_matrix

CFG = ClusterConfig(
    engine=EngineConfig(n_pe=4, vec_len=16, acc_bits=24, tile_m=8, max_seq=64),
    memory=MemoryConfig(n_banks=8, bank_words=512),
    dma=DmaConfig(dma_bits=128),
)


def fresh(seed: int) -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, CFG.memory.size_bytes, dtype=np.uint8), rng


def test_gemm_job_is_golden_gemm_and_touches_only_y() -> None:
    mem, rng = fresh(1)
    job = random_gemm(mem, CFG, rng, m=9, n=20, k=36, flags=0)
    before = mem.copy()
    assert run_job(mem, job, CFG) == JobError.NONE
    x = read_matrix(before, job.a_addr, job.a_stride, 9, 36)
    wt = read_matrix(before, job.b_addr, job.b_stride, 20, 36)
    p = unpack_params(before[job.p_addr : job.p_addr + 20 * 16], 20)
    want = golden.gemm(x, wt.T, p["bias"], mult=p["mult"], shift=p["shift"], add=p["add"],
                       acc_bits=24)  # fmt: skip
    assert np.array_equal(read_matrix(mem, job.c_addr, job.c_stride, 9, 20), want)
    changed = np.flatnonzero(mem != before)
    y_bytes = {job.c_addr + r * job.c_stride + c for r in range(9) for c in range(20)}
    assert set(changed.tolist()) <= y_bytes


def test_per_row_gemm_gives_the_transpose() -> None:
    """Vᵀ = (Wv, X) with per-row parameters equals (X, Wv) per-channel, transposed."""
    mem, rng = fresh(2)
    s, e, d = 12, 32, 8
    alloc = Allocator(mem.size, rng)
    x_addr, x_stride = alloc.matrix(s, e)
    w_addr, w_stride = alloc.matrix(d, e)
    write_matrix(mem, x_addr, x_stride, rng.integers(-128, 128, (s, e)))
    write_matrix(mem, w_addr, w_stride, rng.integers(-128, 128, (d, e)))
    p_addr = alloc.take(d * 16)
    params = pack_params(rng.integers(-999, 999, d), rng.integers(1, 255, d), np.full(d, 10),
                         rng.integers(-5, 5, d))  # fmt: skip
    mem[p_addr : p_addr + d * 16] = np.frombuffer(params, np.uint8)
    v_addr, v_stride = alloc.matrix(s, d)
    vt_addr, vt_stride = alloc.matrix(d, s)
    v_job = Job(op=Op.GEMM, m=s, n=d, k=e, a_addr=x_addr, a_stride=x_stride, b_addr=w_addr,
                b_stride=w_stride, c_addr=v_addr, c_stride=v_stride, p_addr=p_addr)  # fmt: skip
    vt_job = Job(op=Op.GEMM, m=d, n=s, k=e, flags=FLAG_PER_ROW, a_addr=w_addr, a_stride=w_stride,
                 b_addr=x_addr, b_stride=x_stride, c_addr=vt_addr, c_stride=vt_stride,
                 p_addr=p_addr)  # fmt: skip
    assert run_job(mem, v_job, CFG) == JobError.NONE
    assert run_job(mem, vt_job, CFG) == JobError.NONE
    v = read_matrix(mem, v_addr, v_stride, s, d)
    assert np.array_equal(read_matrix(mem, vt_addr, vt_stride, d, s), v.T)


def test_attention_job_is_golden_attention_per_head() -> None:
    mem, rng = fresh(3)
    job = random_attention(mem, CFG, rng, m=10, n=24, k=8, heads=3)
    before = mem.copy()
    assert run_job(mem, job, CFG) == JobError.NONE
    for h in range(3):
        q = read_matrix(before, job.a_addr + h * job.a_hstride, job.a_stride, 10, 8)
        k = read_matrix(before, job.b_addr + h * job.b_hstride, job.b_stride, 24, 8)
        vt = read_matrix(before, job.d_addr + h * job.d_hstride, job.d_stride, 8, 24)
        want = golden.attention_head(q, k, vt.T, qk_requant=job.qk, av_requant=job.av, group=4,
                                     acc_bits=24)  # fmt: skip
        got = read_matrix(mem, job.c_addr + h * job.c_hstride, job.c_stride, 10, 8)
        assert np.array_equal(got, want)


def test_per_head_attention_uses_each_heads_record() -> None:
    """FLAG_PER_HEAD: head h is the one-head job with record h's qk/av (not the job's)."""
    mem, rng = fresh(6)
    job = random_attention(mem, CFG, rng, m=10, n=24, k=8, heads=3, per_head=True)
    assert job.flags == FLAG_PER_HEAD
    table = unpack_head_params(mem[job.p_addr : job.p_addr + 3 * 16], 3)
    assert len({rq for rq in table}) == 3, "the random table must differ per head"
    before = mem.copy()
    assert run_job(mem, job, CFG) == JobError.NONE
    for h, (qk, av) in enumerate(table):
        one = before.copy()
        head = job.replace(
            flags=0, heads=1, qk=qk, av=av,
            a_addr=job.a_addr + h * job.a_hstride, b_addr=job.b_addr + h * job.b_hstride,
            c_addr=job.c_addr + h * job.c_hstride, d_addr=job.d_addr + h * job.d_hstride,
        )  # fmt: skip
        assert run_job(one, head, CFG) == JobError.NONE
        want = read_matrix(one, head.c_addr, job.c_stride, 10, 8)
        got = read_matrix(mem, head.c_addr, job.c_stride, 10, 8)
        assert np.array_equal(got, want), h


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"flags": FLAG_PER_HEAD | 1}, JobError.UNKNOWN_OP),
        ({"p_addr": None}, JobError.MISALIGNED),  # the table 2 bytes off
        ({"p_addr": CFG.memory.size_bytes - 2 * 16 + 4}, JobError.OUT_OF_RANGE),
        ({"p_addr": CFG.memory.size_bytes - 2 * 16}, JobError.NONE),  # the exact edge
    ],
)
def test_per_head_attention_checks_its_table(change: dict, code: JobError) -> None:
    mem, rng = fresh(7)
    job = random_attention(mem, CFG, rng, m=4, n=16, k=8, heads=2, per_head=True)
    assert check_job(job, CFG) == JobError.NONE
    if change.get("p_addr", 0) is None:
        change = {"p_addr": job.p_addr + 2}
    assert check_job(job.replace(**change), CFG) == code
    # Without the flag the table is not read: a misaligned p_addr is no error.
    assert check_job(job.replace(flags=0, p_addr=job.p_addr + 2), CFG) == JobError.NONE


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"op": 0}, JobError.UNKNOWN_OP),
        ({"op": 3}, JobError.UNKNOWN_OP),
        ({"n": 0}, JobError.ZERO_DIM),
        ({"k": 8192}, JobError.DIM_LIMIT),
        ({"n": 6}, JobError.GRANULE),
        ({"b_stride": 6}, JobError.MISALIGNED),
        ({"p_addr": 2}, JobError.MISALIGNED),
        ({"c_addr": CFG.memory.size_bytes - 4}, JobError.OUT_OF_RANGE),
        # The largest addresses the (one bit wider) address field holds: a code, not an error.
        ({"a_addr": 2 * CFG.memory.size_bytes - 4}, JobError.OUT_OF_RANGE),
        ({"b_stride": (1 << 24) - 4}, JobError.OUT_OF_RANGE),
    ],
)
def test_gemm_checks(change: dict, code: JobError) -> None:
    mem, rng = fresh(4)
    job = random_gemm(mem, CFG, rng, m=4, n=8, k=8, flags=0)
    assert check_job(job, CFG) == JobError.NONE
    before = mem.copy()
    assert run_job(mem, job.replace(**change), CFG) == code
    assert np.array_equal(mem, before), "a rejected job must not write"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"flags": 1}, JobError.UNKNOWN_OP),
        ({"heads": 0}, JobError.ZERO_DIM),
        ({"k": 20}, JobError.DIM_LIMIT),
        ({"n": 68}, JobError.DIM_LIMIT),
        ({"n": 18}, JobError.GRANULE),
        ({"a_hstride": 2}, JobError.MISALIGNED),
        ({"c_hstride": None}, JobError.OUT_OF_RANGE),  # head 1 of O just past L1
    ],
)
def test_attention_checks(change: dict, code: JobError) -> None:
    mem, rng = fresh(5)
    job = random_attention(mem, CFG, rng, m=4, n=16, k=8, heads=2)
    assert check_job(job, CFG) == JobError.NONE
    if change.get("c_hstride", 0) is None:
        change = {"c_hstride": CFG.memory.size_bytes - job.c_addr}
    assert check_job(job.replace(**change), CFG) == code


SIZE = CFG.memory.size_bytes  # 16384: addresses are 15-bit fields (0..32767)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"a_addr": -4},
            r"Job\.a_addr = -4 does not fit its 15-bit register field: use 0\.\.32767",
        ),
        ({"p_addr": 2 * SIZE}, r"Job\.p_addr = 32768 .* use 0\.\.32767"),
        ({"b_stride": -4}, r"Job\.b_stride = -4 .* 24-bit .* use 0\.\.16777215"),
        ({"c_hstride": 1 << 24}, r"Job\.c_hstride = 16777216 .* use 0\.\.16777215"),
        ({"d_stride": -8}, r"Job\.d_stride = -8"),
        ({"m": -1}, r"Job\.m = -1 .* 16-bit .* use 0\.\.65535"),
        ({"k": 1 << 16}, r"Job\.k = 65536"),
        ({"heads": 256}, r"Job\.heads = 256 .* use 0\.\.255"),
        ({"op": 4}, r"Job\.op = 4 .* 2-bit .* use 0\.\.3"),
        ({"flags": 16}, r"Job\.flags = 16 .* 4-bit .* use 0\.\.15"),
        ({"flags": -1}, r"Job\.flags = -1"),
        ({"qk": (256, 0, 0)}, r"Job\.qk\.mult = 256 .* use 0\.\.255"),
        ({"av": (1, 32, 0)}, r"Job\.av\.shift = 32 .* use 0\.\.31"),
        ({"qk": (1, 0, 128)}, r"Job\.qk\.add = 128 .* signed 8-bit .* use -128\.\.127"),
        ({"av": (1, 0)}, r"Job\.av = \(1, 0\): must be a \(mult, shift, add\) triple"),
        ({"res_shift": 32}, r"Job\.res_shift = 32 .* 5-bit"),
        ({"aff_shift": -1}, r"Job\.aff_shift = -1"),
        ({"res_y_mult": 256}, r"Job\.res_y_mult = 256"),
        ({"n": 8.0}, r"Job\.n = 8\.0 is not an integer: use 0\.\.65535"),
    ],
)
def test_a_field_its_register_cannot_hold_is_a_value_error(change: dict, message: str) -> None:
    """Negative or too wide: firmware cannot write it, so no JobError code; L1 untouched."""
    mem, rng = fresh(6)
    job = random_gemm(mem, CFG, rng, m=4, n=8, k=8, flags=0)
    before = mem.copy()
    with pytest.raises(ValueError, match=message):
        check_job(job.replace(**change), CFG)
    with pytest.raises(ValueError, match=message):
        run_job(mem, job.replace(**change), CFG)
    assert np.array_equal(mem, before), "a job with a bad field must not write"


def test_negative_attention_head_stride_is_a_value_error() -> None:
    """A negative head stride used to read heads 1.. from the end of L1 (NumPy wraps)."""
    mem, rng = fresh(7)
    job = random_attention(mem, CFG, rng, m=4, n=16, k=8, heads=2)
    with pytest.raises(ValueError, match=r"Job\.a_hstride = -8 "):
        run_job(mem, job.replace(a_hstride=-8), CFG)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros(SIZE - 4, np.uint8), r"1-D uint8 array of 16384 bytes .* shape \(16380,\)"),
        (np.zeros(SIZE, np.int8), r"1-D uint8 array of 16384 bytes .* dtype int8"),
        (np.zeros((SIZE // 4, 4), np.uint8), r"1-D .* shape \(4096, 4\) dtype uint8"),
        (bytearray(SIZE), r"1-D .* got bytearray"),
    ],
)
def test_run_job_rejects_a_wrong_image(image: object, message: str) -> None:
    mem, rng = fresh(8)
    job = random_gemm(mem, CFG, rng, m=4, n=8, k=8, flags=0)
    with pytest.raises(ValueError, match=r"run_job: the L1 image must be a " + message):
        run_job(image, job, CFG)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-4, 8, 2, 4), r"read_matrix: addr = -4, must be an integer >= 0"),
        ((0, -8, 2, 4), r"read_matrix: stride = -8"),
        ((0, 8, -1, 4), r"read_matrix: rows = -1"),
        ((SIZE - 8, 8, 2, 4), r"2x4 bytes at 16376 with stride 8 reach byte 16387, beyond the "),
    ],
)
def test_read_matrix_outside_the_image(args: tuple[int, int, int, int], message: str) -> None:
    mem, _ = fresh(9)
    with pytest.raises(ValueError, match=message):
        read_matrix(mem, *args)


def test_write_matrix_checks_place_and_values() -> None:
    mem, _ = fresh(10)
    before = mem.copy()
    with pytest.raises(ValueError, match=r"write_matrix: addr = -4"):
        write_matrix(mem, -4, 4, np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match=r"write_matrix: 2x4 bytes at 16380 .* beyond"):
        write_matrix(mem, SIZE - 4, 4, np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match=r"values span 0\.\.200, outside int8 -128\.\.127"):
        write_matrix(mem, 0, 4, np.array([[0, 200]]))
    with pytest.raises(ValueError, match=r"2-D integer array, got shape \(4,\)"):
        write_matrix(mem, 0, 4, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"dtype float64"):
        write_matrix(mem, 0, 4, np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"the L1 image must be a 1-D uint8 array, got .*int64"):
        write_matrix(mem.astype(np.int64), 0, 4, np.zeros((1, 4), np.int64))
    assert np.array_equal(mem, before)
