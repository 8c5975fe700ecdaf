"""The golden model: hand-checked cases, properties against independent references,
and the measured error of ITAMax against the float softmax (stated in docs/arithmetic.md)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from itamax_reference import itamax_reference

from tinyattn.verif import golden

int8s = st.integers(-128, 127)


# -- requantize ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("acc", "mult", "shift", "add", "want"),
    [
        (100, 1, 1, 0, 50),
        (3, 1, 1, 0, 2),  # 1.5 rounds half up to 2
        (-3, 1, 1, 0, -1),  # -1.5 rounds half up to -1
        (-5, 1, 1, 0, -2),  # -2.5 -> -2
        (7, 3, 0, 0, 21),  # shift 0: no rounding term
        (1000, 1, 0, 0, 127),  # saturates high
        (-1000, 1, 0, 0, -128),  # saturates low
        (100, 200, 8, -10, 68),  # 20000/256 = 78.125 -> 78, + -10
        (120, 1, 0, 10, 127),  # the add can push into saturation
        (2**31 - 1, 255, 31, 0, 127),  # extremes do not overflow
    ],
)
def test_requantize_hand_checked(acc: int, mult: int, shift: int, add: int, want: int) -> None:
    assert int(golden.requantize(acc, mult, shift, add)) == want


@given(
    acc=st.integers(-(2**31), 2**31 - 1),
    mult=st.integers(0, 255),
    shift=st.integers(0, 31),
    add=int8s,
)
def test_requantize_matches_exact_rational(acc: int, mult: int, shift: int, add: int) -> None:
    exact = math.floor(Fraction(mult * acc, 2**shift) + Fraction(1, 2)) + add
    assert int(golden.requantize(acc, mult, shift, add)) == max(-128, min(127, exact))


def test_requantize_rejects_out_of_range_parameters() -> None:
    with pytest.raises(ValueError, match=r"mult must lie in 0\.\.255"):
        golden.requantize(1, 256, 0)
    with pytest.raises(ValueError, match=r"shift must lie in 0\.\.31"):
        golden.requantize(1, 1, 32)
    with pytest.raises(TypeError, match="integer array"):
        golden.requantize(np.array([1.5]), 1, 0)


@given(y=int8s, r=int8s, ym=st.integers(0, 255), rm=st.integers(0, 255), s=st.integers(0, 31))
def test_residual_add_matches_exact_rational(y: int, r: int, ym: int, rm: int, s: int) -> None:
    exact = math.floor(Fraction(ym * y + rm * r, 2**s) + Fraction(1, 2))
    assert int(golden.residual_add(y, r, ym, rm, s)) == max(-128, min(127, exact))


@given(
    y=int8s,
    g=st.integers(-(2**15), 2**15 - 1),
    b=st.integers(-(2**31), 2**31 - 1),
    s=st.integers(0, 31),
)
def test_affine_matches_exact_rational(y: int, g: int, b: int, s: int) -> None:
    exact = math.floor(Fraction(g * y + b, 2**s) + Fraction(1, 2))
    assert int(golden.affine(y, g, b, s)) == max(-128, min(127, exact))


def test_wrap_is_twos_complement() -> None:
    assert golden.wrap(2**31, 32) == -(2**31)
    assert golden.wrap(-(2**31) - 1, 32) == 2**31 - 1
    assert golden.wrap(9, 4) == 9 - 16
    assert golden.wrap(7, 4) == 7
    assert golden.wrap(-8, 4) == -8


# -- GEMM --------------------------------------------------------------------------


def test_gemm_hand_checked() -> None:
    x = np.array([[1, 2], [-3, 4]])
    w = np.array([[5, -6, 0], [7, 8, 1]])
    # X.W = [[19, 10, 2], [13, 50, 4]]; + bias [1, 0, -2] = [[20, 10, 0], [14, 50, 2]]
    y = golden.gemm(x, w, [1, 0, -2], mult=[1, 2, 3], shift=1, add=[0, 0, -1])
    # per column: *1/2, *2/2, *3/2 rounded half up, then add
    assert y.tolist() == [[10, 10, -1], [7, 50, 2]]
    assert golden.gemm(
        x, w, [1, 0, -2], mult=[1, 2, 3], shift=1, add=[0, 0, -1], relu_en=True
    ).tolist() == [[10, 10, 0], [7, 50, 2]]


def test_gemm_epilogue_order() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (5, 7))
    w = rng.integers(-128, 128, (7, 4))
    res = rng.integers(-128, 128, (5, 4))
    r = golden.Residual(res, 100, 60, 7)
    a = golden.Affine(np.array([300, -200, 100, 50]), np.array([0, 5, 1000, -77]), 8)
    y = golden.gemm(x, w, 9, mult=50, shift=12, add=3, residual=r, norm=a, relu_en=True)
    step = golden.requantize(x @ w + 9, 50, 12, 3)
    step = golden.residual_add(step, res, 100, 60, 7)
    step = golden.affine(step, a.gamma, a.beta, 8)
    assert np.array_equal(y, golden.relu(step))


def test_gemm_accumulator_wraps_to_acc_bits() -> None:
    x = np.full((1, 64), 127)
    w = np.full((64, 1), 127)  # 64 * 16129 = 1032256 > 2**19
    acc = golden.dot_array(x, w.T, 0, acc_bits=20)
    assert int(acc[0, 0]) == 1032256 - 2**20
    assert int(golden.gemm(x, w, 0, acc_bits=20)[0, 0]) == -128


@settings(max_examples=50, deadline=None)
@given(
    x=hnp.arrays(np.int64, st.tuples(st.integers(1, 6), st.integers(1, 40)), elements=int8s),
    data=st.data(),
)
def test_dot_array_matches_python_loop(x: np.ndarray, data: st.DataObject) -> None:
    n_units = data.draw(st.integers(1, 5))
    w = data.draw(hnp.arrays(np.int64, (n_units, x.shape[1]), elements=int8s))
    acc_in = data.draw(
        hnp.arrays(np.int64, (x.shape[0], n_units), elements=st.integers(-(2**23), 2**23 - 1))
    )
    got = golden.dot_array(x, w, acc_in, acc_bits=24)
    for m in range(x.shape[0]):
        for j in range(n_units):
            total = int(acc_in[m, j]) + sum(
                int(a) * int(b) for a, b in zip(x[m], w[j], strict=True)
            )
            total = (total + 2**23) % 2**24 - 2**23
            assert got[m, j] == total


def test_matmul_exact_falls_back_when_float_would_round() -> None:
    a = np.array([[2**40, 1]])
    b = np.array([[2**20], [1]])
    assert golden.matmul_exact(a, b)[0, 0] == 2**60 + 1


# -- ITAMax ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "group", "want"),
    [
        ([0, 0, 0, 0], 2, [63, 63, 63, 63]),  # s = 1024, inv = 63
        ([10, 9, 8, 7], 2, [136, 68, 34, 17]),  # s = 256+128+64+32 = 480, inv = 136
        ([0, 0, 2, 1], 2, [31, 31, 127, 63]),  # max rises: s = (512 >> 2) + 256 + 128 = 512
        ([5, -128, -128, -128], 4, [255, 0, 0, 0]),  # lone maximum gets 255
        ([-128, -128], 1, [127, 127]),  # the all-minimum row
    ],
)
def test_itamax_hand_checked(row: list[int], group: int, want: list[int]) -> None:
    assert golden.itamax(np.array([row]), group)[0].tolist() == want


@settings(max_examples=200, deadline=None)
@given(row=st.lists(int8s, min_size=1, max_size=80), group=st.integers(1, 20))
def test_itamax_matches_scalar_recurrence(row: list[int], group: int) -> None:
    assert golden.itamax(np.array(row), group).tolist() == itamax_reference(row, group)


@settings(max_examples=100, deadline=None)
@given(
    x=hnp.arrays(
        np.int64,
        st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 48)),
        elements=st.integers(-100, 100),
    ),
    group=st.sampled_from([1, 4, 16]),
    shift=st.integers(-27, 27),
)
def test_itamax_properties(x: np.ndarray, group: int, shift: int) -> None:
    p = golden.itamax(x, group)
    assert p.dtype == np.uint8 and p.shape == x.shape
    # Adding a constant to every logit of a row changes nothing.
    assert np.array_equal(golden.itamax(x + shift, group), p)
    # Larger logits never get smaller probabilities.
    order = np.argsort(x, axis=-1, kind="stable")
    assert np.all(np.diff(np.take_along_axis(p.astype(int), order, axis=-1), axis=-1) >= 0)
    # The row maximum gets inv = floor(65280 / s) >= 127 when fewer than 256 logits tie.
    assert np.all(p.max(axis=-1) >= 65280 // (256 * x.shape[-1] + 1))


#: Measured bound of |itamax / 255 - softmax| (see docs/arithmetic.md), with
#: logits in ITAMax units (one step = one power of two: softmax(x * ln 2)).
ITAMAX_RANDOM_ERROR_BOUND = 0.0125


@pytest.mark.parametrize("length", [16, 64, 128, 512])
@pytest.mark.parametrize("spread", [4, 16, 64, 128])
def test_itamax_error_against_float_softmax(length: int, spread: int) -> None:
    rng = np.random.default_rng(length * 1000 + spread)
    x = rng.integers(-spread, spread, (500, length)).clip(-128, 127)
    p = golden.itamax(x, 16) / 255
    z = np.exp2(x - x.max(axis=-1, keepdims=True))
    f = z / z.sum(axis=-1, keepdims=True)
    assert np.abs(p - f).max() <= ITAMAX_RANDOM_ERROR_BOUND


def test_itamax_worst_case_truncation_is_as_documented() -> None:
    # 511 logits nine steps below the maximum contribute 256 >> 9 = 0 each: the
    # maximum gets all the mass (255) while the float softmax gives it 256/511.5.
    row = np.array([[0] + [-9] * 511])
    p = golden.itamax(row, 16)
    assert p[0, 0] == 255 and p[0, 1:].max() == 0


# -- attention ---------------------------------------------------------------------


def test_attention_head_hand_checked() -> None:
    q = np.array([[1], [0]])
    k = np.array([[3], [1]])
    v = np.array([[10], [-20]])
    # QK^T = [[3, 1], [0, 0]]; requant (1, 0, 0) keeps it; itamax group 2:
    # row 0: s = 256 + 64 = 320, inv = 204, p = [204, 51]; row 1: s = 512, inv = 127, p = [127, 127]
    # P.V = [[2040 - 1020], [1270 - 2540]] = [[1020], [-1270]]; requant (1, 4, 0): /16 round
    out = golden.attention_head(q, k, v, qk_requant=(1, 0, 0), av_requant=(1, 4, 0), group=2)
    assert out.tolist() == [[64], [-79]]


def test_attention_head_composes_the_primitives() -> None:
    rng = np.random.default_rng(7)
    q, k, v = (rng.integers(-128, 128, (32, 8)) for _ in range(3))
    out = golden.attention_head(q, k, v, qk_requant=(37, 12, 1), av_requant=(90, 13, -2), group=4)
    logits = golden.requantize(q @ k.T, 37, 12, 1)
    probs = golden.itamax(logits, 4).astype(np.int64)
    assert np.array_equal(out, golden.requantize(probs @ v, 90, 13, -2))
