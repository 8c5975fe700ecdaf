"""Integer MobileBERT (post-training quantization onto the golden ops) and its report."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from itamax_reference import itamax_reference
from models import FIXTURE, small_config

from tinyattn.sw.intops import HeadParams
from tinyattn.sw.mobilebert import MobileBert, MobileBertConfig
from tinyattn.sw.quantize import (
    AttentionOp,
    GemmOp,
    MultiplierError,
    QuantizationError,
    QuantizedMobileBert,
    float_trace,
    quantize_multiplier,
)
from tinyattn.sw.report import cosine_similarity, main, quantize_report

SEQ = 128

SMALL = small_config()


@pytest.fixture(scope="module")
def eval_ids() -> np.ndarray:
    return np.random.default_rng(200).integers(0, 512, (2, SEQ))


@pytest.fixture(scope="module")
def qmodel(model: MobileBert, calib_ids: np.ndarray) -> QuantizedMobileBert:
    return model.quantize(calib_ids)


# ---- the (mult, shift) helper ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        (1.0, (128, 7)),
        (0.75, (192, 8)),
        (3.0, (192, 6)),
        (255.0, (255, 0)),
        (0.5, (128, 8)),
        (2.0**-24, (128, 31)),
        (2.0**-31, (1, 31)),
        (200 / 2**13, (200, 13)),
    ],
)
def test_multiplier_exact_cases(ratio: float, expected: tuple[int, int]) -> None:
    assert quantize_multiplier(ratio) == expected
    mult, shift = expected
    assert mult / 2**shift == ratio


def test_multiplier_is_the_most_precise_pair() -> None:
    rng = np.random.default_rng(0)
    pairs = np.array([(m, s) for m in range(1, 256) for s in range(32)], dtype=np.float64)
    values = pairs[:, 0] / 2.0 ** pairs[:, 1]
    for ratio in np.exp(rng.uniform(math.log(2.0**-24), math.log(255.0), 300)):
        mult, shift = quantize_multiplier(ratio)
        assert 1 <= mult <= 255 and 0 <= shift <= 31
        err = abs(mult / 2**shift - ratio)
        assert err <= np.abs(values - ratio).min() * (1 + 1e-12)
        assert err <= ratio / 256


@pytest.mark.parametrize(
    ("ratio", "words"),
    [
        (0.0, "finite positive"),
        (-0.5, "finite positive"),
        (float("nan"), "finite positive"),
        (float("inf"), "finite positive"),
        (255.5, "too large"),
        (1000.0, "too large"),
        (1e-12, "too small"),
    ],
)
def test_multiplier_errors(ratio: float, words: str) -> None:
    with pytest.raises(MultiplierError, match=words):
        quantize_multiplier(ratio)
    assert issubclass(MultiplierError, ValueError)


# ---- accuracy on the fixture ------------------------------------------------------------------


def test_fixture_cosine_at_every_hidden_state(
    model: MobileBert, qmodel: QuantizedMobileBert, calib_ids: np.ndarray, eval_ids: np.ndarray
) -> None:
    # Evaluation sequences are not calibration sequences.
    assert not any(np.array_equal(e, c) for e in eval_ids for c in calib_ids)
    for ids in eval_ids:
        ref = model.forward(ids)
        approx = qmodel.dequantize(qmodel.forward(ids))
        assert len(approx) == len(ref) == 3
        cos = [cosine_similarity(r, a) for r, a in zip(ref, approx, strict=True)]
        # Measured 0.9999 / 0.9993 / 0.9989; issue 14: the fixture stays >= 0.998 everywhere.
        assert min(cos) >= 0.998, cos
        for r, a in zip(ref, approx, strict=True):
            assert np.abs(r - a).max() < 0.15 * np.abs(r).max()


def test_integer_outputs_are_int8_and_deterministic(
    model: MobileBert, qmodel: QuantizedMobileBert, calib_ids: np.ndarray, eval_ids: np.ndarray
) -> None:
    first = qmodel.forward(eval_ids[0])
    again = qmodel.forward(eval_ids[0])
    other = model.quantize(calib_ids).forward(eval_ids[0])  # calibration is deterministic too
    H = model.config.hidden_size
    for (q1, s1), (q2, s2), (q3, s3) in zip(first, again, other, strict=True):
        assert q1.dtype == np.int8 and q1.shape == (SEQ, H)
        # Per-channel scales on the residual stream (channel_scales=True, the default).
        assert isinstance(s1, np.ndarray) and s1.shape == (H,) and (s1 > 0).all()
        np.testing.assert_array_equal(q1, q2)
        np.testing.assert_array_equal(q1, q3)
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(s1, s3)
    every = qmodel.run(eval_ids[0], keep="all")
    assert all(t.dtype == np.int8 for t in every.values())
    assert set(qmodel.state_names) <= set(every)


def test_batch_forward_matches_single_sequences(
    qmodel: QuantizedMobileBert, eval_ids: np.ndarray
) -> None:
    batch = qmodel.forward(eval_ids)
    for b, ids in enumerate(eval_ids):
        for (qb, sb), (q1, s1) in zip(batch, qmodel.forward(ids), strict=True):
            np.testing.assert_array_equal(qb[b], q1)
            np.testing.assert_array_equal(sb, s1)


def test_token_type_ids(model: MobileBert, qmodel: QuantizedMobileBert, eval_ids: np.ndarray):
    tt = (np.arange(SEQ) >= SEQ // 2).astype(np.int64)
    ref = model.forward(eval_ids[0], token_type_ids=tt)
    approx = qmodel.forward_float(eval_ids[0], token_type_ids=tt)
    assert min(cosine_similarity(r, a) for r, a in zip(ref, approx, strict=True)) >= 0.99
    plain = qmodel.forward(eval_ids[0])
    assert not np.array_equal(plain[0][0], qmodel.forward(eval_ids[0], token_type_ids=tt)[0][0])


# ---- no float inside the integer layers -------------------------------------------------------


def _integer_value(path: str, value: object) -> None:
    if isinstance(value, np.ndarray):
        assert np.issubdtype(value.dtype, np.integer), f"{path} has dtype {value.dtype}"
    elif isinstance(value, tuple):
        assert all(type(v) is int for v in value), f"{path} = {value!r} is not a tuple of ints"
    else:
        assert value is None or type(value) in (int, bool, str), f"{path} = {value!r}"


def test_every_parameter_is_an_integer(qmodel: QuantizedMobileBert) -> None:
    seen = 0
    for path, value in qmodel.integer_arrays():
        _integer_value(path, value)
        seen += 1
    assert seen > 100
    for op in qmodel.ops():
        if isinstance(op, GemmOp):
            assert op.weight.dtype == np.int8 and op.bias.dtype == np.int32
            assert op.requant.mult.dtype == np.uint8 and op.requant.shift.max() <= 31
            if op.norm is not None:
                assert op.norm.gamma.dtype == np.int16 and op.norm.beta.dtype == np.int32
            if op.residual is not None:
                assert op.residual.y_mult.dtype == np.uint8
        else:
            for h in op.heads:
                assert 0 <= h.qk_requant[0] <= 255 and 0 <= h.qk_requant[1] <= 31
                assert -128 <= h.qk_requant[2] <= 127


def test_float_scales_never_reach_the_integer_path(
    qmodel: QuantizedMobileBert, eval_ids: np.ndarray
) -> None:
    """Poison every real scale with NaN (and the settings): integer outputs must not move.

    A float scale used inside an integer layer would turn into NaN, and NaN cast to an integer
    warns (turned into an error here) or gives garbage.
    """
    expected = qmodel.run(eval_ids[0], keep="all")
    poisoned = QuantizedMobileBert(
        qmodel.config,
        qmodel.embeddings,
        qmodel.layers,
        {k: np.full(np.shape(v), np.nan) for k, v in qmodel.scales.items()},
        qmodel.zero_points,
        dataclasses.replace(qmodel.settings, percentile=math.nan, epilogue_headroom=math.nan),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = poisoned.run(eval_ids[0], keep="all")
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert all(np.isnan(s).all() for _, s in poisoned.forward(eval_ids[0]))


# An independent scalar reference of the arithmetic contract (docs/arithmetic.md), in
# Python integers: it shares no code with the golden model, so a change to either that
# breaks the contract makes the replay fail (re-calling the golden ops with the op's own
# arguments, as this test did before, could not).


def _wrap(v: int, bits: int = 32) -> int:
    half = 1 << (bits - 1)
    return (v + half) % (1 << bits) - half


def _round_half_up(v: int, shift: int) -> int:
    """floor(v / 2**shift + 1/2), exactly."""
    return (2 * v + (1 << shift)) // (2 << shift)


def _sat8(v: int) -> int:
    return max(-128, min(127, v))


def _at(param: object, j: int) -> int:
    """A scalar or per-channel parameter's value for output channel ``j``."""
    a = np.asarray(param)
    return int(a) if a.ndim == 0 else int(a[j])


def _requant(acc: int, mult: object, shift: object, add: object, j: int) -> int:
    return _sat8(_round_half_up(_at(mult, j) * acc, _at(shift, j)) + _at(add, j))


def _ref_gemm_element(op: GemmOp, t: dict[str, np.ndarray], i: int, j: int) -> int:
    x = [int(v) for v in t[op.input][i]]
    w = [int(v) for v in op.weight[:, j]]
    acc = _wrap(sum(a * b for a, b in zip(x, w, strict=True)) + _wrap(_at(op.bias, j)))
    q = op.requant
    y = _requant(acc, q.mult, q.shift, q.add, j)
    if op.residual is not None:
        assert op.residual_input is not None
        r = op.residual
        res = int(t[op.residual_input][i, j])
        y = _sat8(_round_half_up(_at(r.y_mult, j) * y + _at(r.res_mult, j) * res, _at(r.shift, j)))
    if op.norm is not None:
        n = op.norm
        y = _sat8(_round_half_up(_at(n.gamma, j) * y + _at(n.beta, j), _at(n.shift, j)))
    return max(y, 0) if op.relu else y


def _dot(a: Sequence[int], b: Sequence[int]) -> int:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _ref_attention_row(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, h: HeadParams, group: int, i: int
) -> list[int]:
    qi = q[i].tolist()
    logits = [_requant(_wrap(_dot(qi, kr)), *h.qk_requant, 0) for kr in k.tolist()]
    p = itamax_reference(logits, group)
    return [_requant(_wrap(_dot(p, vc)), *h.av_requant, 0) for vc in v.T.tolist()]


def replay_with_reference(qm: QuantizedMobileBert, ids: np.ndarray, samples: int = 24) -> None:
    """Every op's output, fed the tensors it names, agrees with the scalar reference.

    Checks ``samples`` random elements of each GEMM output and one random query row of
    each attention head (all its columns), plus each op's dtype and shape.
    """
    t = qm.run(ids, keep="all")
    rng = np.random.default_rng(1234)
    for op in qm.ops():
        out = t[op.name]
        assert out.dtype == np.int8, op.name
        if isinstance(op, GemmOp):
            m, n = t[op.input].shape[0], op.weight.shape[1]
            assert out.shape == (m, n), (op.name, out.shape)
            for _ in range(samples):
                i, j = int(rng.integers(m)), int(rng.integers(n))
                want = _ref_gemm_element(op, t, i, j)
                assert out[i, j] == want, f"{op.name}[{i}, {j}] = {out[i, j]}, reference {want}"
        else:
            assert isinstance(op, AttentionOp)
            for h in op.heads:
                a, b = h.columns
                q, k, v = (t[name][:, a:b] for name in (op.query, op.key, op.value))
                i = int(rng.integers(q.shape[0]))
                want = _ref_attention_row(q, k, v, h, op.group, i)
                got = [int(x) for x in out[i, a:b]]
                assert got == want, f"{h.name} row {i}: {got} != reference {want}"


#: The former name, still used by the stress tests.
replay_with_golden = replay_with_reference


def test_op_graph_replays_with_the_reference(
    qmodel: QuantizedMobileBert, eval_ids: np.ndarray
) -> None:
    replay_with_reference(qmodel, eval_ids[0])
    names = [op.name for op in qmodel.ops()]
    assert len(names) == len(set(names))
    assert "layer0.ffn1.output" in names and "layer1.attention" in names
    assert qmodel.op("layer0.attention").heads[2].name == "layer0.attention.head2"
    produced = {"embeddings.input", "embeddings.position_type"}
    for op in qmodel.ops():  # each op reads only tensors produced before it
        assert set(op.inputs) <= produced, op.name
        produced.add(op.name)


def test_each_op_agrees_with_the_float_op(
    model: MobileBert, qmodel: QuantizedMobileBert, eval_ids: np.ndarray
) -> None:
    """Dequantized inputs through the float op ~= dequantized integer output (scales right)."""
    t = qmodel.run(eval_ids[0], keep="all")

    def real(name: str) -> np.ndarray:
        zp = qmodel.zero_points.get(name, 0)
        return (t[name].astype(np.float64) - zp) * qmodel.scales[name]

    weights = {"embeddings": (model.embeddings.transformation, model.embeddings.norm)}
    for i, L in enumerate(model.layers):
        p = f"layer{i}"
        weights[f"{p}.bottleneck.input"] = (L.bottleneck_input.dense, L.bottleneck_input.norm)
        b_att = L.bottleneck_attention
        weights[f"{p}.bottleneck.attention"] = (b_att.dense, b_att.norm)
        weights[f"{p}.attention.query"] = (L.query, None)
        weights[f"{p}.attention.key"] = (L.key, None)
        weights[f"{p}.attention.value"] = (L.value, None)
        weights[f"{p}.attention.output"] = (L.attention_output.dense, L.attention_output.norm)
        for j, f in enumerate(L.ffn):
            weights[f"{p}.ffn{j}.intermediate"] = (f.intermediate, None)
            weights[f"{p}.ffn{j}.output"] = (f.output.dense, f.output.norm)
        weights[f"{p}.intermediate"] = (L.intermediate, None)
        weights[f"{p}.output"] = (L.output.dense, L.output.norm)
        weights[f"{p}.output.bottleneck"] = (L.output_bottleneck.dense, L.output_bottleneck.norm)
    checked = 0
    for op in qmodel.ops():
        if isinstance(op, AttentionOp):
            d = (op.heads[0].columns[1] - op.heads[0].columns[0]) ** -0.5
            q, k, v = real(op.query), real(op.key), real(op.value)
            ref = np.empty_like(v)
            for h in op.heads:
                sl = slice(*h.columns)
                z = q[:, sl] @ k[:, sl].T * d
                e = np.exp(z - z.max(-1, keepdims=True))
                ref[:, sl] = e / e.sum(-1, keepdims=True) @ v[:, sl]
            tol = 0.2  # ITAMax: 8-bit probabilities, logits rounded to whole powers of two
        else:
            lin, norm = weights[op.name]
            ref = real(op.input) @ lin.weight.T.astype(np.float64) + lin.bias
            if op.residual_input is not None:
                ref = ref + real(op.residual_input)
            if norm is not None:
                ref = ref * norm.weight + norm.bias
            if op.relu:
                ref = np.maximum(ref, 0)
            tol = 0.05
        got = real(op.name)
        rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        assert rel < tol, (op.name, rel)
        checked += 1
    assert checked == len(qmodel.ops())


def test_requant_multipliers_are_exact(qmodel: QuantizedMobileBert) -> None:
    """Scales are snapped so that each (mult, shift) is the exact real ratio it stands for."""
    sc = qmodel.scales
    for op in qmodel.ops():
        if not isinstance(op, GemmOp):
            continue
        s_y = sc.get(f"{op.name}.dense", sc[op.name]) if op.norm is not None else sc[op.name]
        # The input's (per-channel) scale is folded into the weights: acc is at scale .acc.
        ratio = sc[f"{op.name}.acc"] / s_y
        q = op.requant
        np.testing.assert_allclose(q.mult / 2.0**q.shift, ratio, rtol=1e-12, err_msg=op.name)
        assert q.mult.min() >= 128 or q.shift.min() == 31  # full 8-bit precision
        if op.residual is not None:
            r, s_z = op.residual, sc[f"{op.name}.sum"]
            np.testing.assert_allclose(r.y_mult / 2.0**r.shift, s_y / s_z, rtol=1e-12)
            np.testing.assert_allclose(r.res_mult / 2.0**r.shift, sc[op.residual_input] / s_z)


def test_float_trace_matches_the_float_model(model: MobileBert, eval_ids: np.ndarray) -> None:
    trace = float_trace(model, eval_ids[0])
    states = model.forward(eval_ids[0])
    names = ["embeddings", "layer0.output.bottleneck", "layer1.output.bottleneck"]
    for name, ref in zip(names, states, strict=True):
        np.testing.assert_allclose(trace[name][0], ref, atol=1e-5)


def test_relu_zero_point_variant(model: MobileBert, calib_ids: np.ndarray, eval_ids: np.ndarray):
    qm = model.quantize(calib_ids, relu_zero_point=True)
    op = qm.op("layer0.intermediate")
    assert isinstance(op, GemmOp) and not op.relu and (op.requant.add == -128).all()
    replay_with_reference(qm, eval_ids[0])
    ref = model.forward(eval_ids[0])
    approx = qm.forward_float(eval_ids[0])
    assert min(cosine_similarity(r, a) for r, a in zip(ref, approx, strict=True)) >= 0.99


def test_bad_inputs_and_unsupported_models(model: MobileBert, qmodel: QuantizedMobileBert):
    with pytest.raises(ValueError, match="out of range"):
        qmodel.forward(np.array([0, 512]))
    with pytest.raises(ValueError, match="method"):
        model.quantize(np.arange(8), method="kl")
    cfg = dataclasses.replace(SMALL, normalization_type="layer_norm")
    with pytest.raises(QuantizationError, match="no_norm"):
        MobileBert.synthetic(cfg).quantize(np.arange(8))
    cfg = dataclasses.replace(SMALL, hidden_act="gelu")
    with pytest.raises(QuantizationError, match="ReLU"):
        MobileBert.synthetic(cfg).quantize(np.arange(8))


# ---- synthetic models and the report ---------------------------------------------------------


def test_small_synthetic_model_end_to_end() -> None:
    model = MobileBert.synthetic(SMALL, seed=3, std=0.2)
    rng = np.random.default_rng(4)
    qm = model.quantize(rng.integers(0, SMALL.vocab_size, (6, 16)), group=4)
    ids = rng.integers(0, SMALL.vocab_size, (2, 16))
    states = qm.forward(ids)
    assert len(states) == SMALL.num_hidden_layers + 1
    assert all(q.dtype == np.int8 and q.shape == (2, 16, SMALL.hidden_size) for q, _ in states)
    assert qm.op("layer1.attention").group == 4
    ref = model.forward(ids)
    cos = [cosine_similarity(r, a) for r, a in zip(ref, qm.dequantize(states), strict=True)]
    assert min(cos) >= 0.98, cos
    replay_with_reference(qm, ids[0])


def test_report_writes_png_and_returns_rows(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "sub" / "report.png"
    rows = quantize_report(str(FIXTURE), out_png=out, seq_len=64, seed=1)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert {"cosine", "max_abs_error", "float_max_abs", "name"} <= rows[0].keys()
    assert all(r["cosine"] >= 0.99 for r in rows)
    text = capsys.readouterr().out
    assert "cosine" in text and "layer 2" in text and str(out) in text


def test_report_synthetic_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "syn.png"
    argv = ["synthetic", "--out", str(out), "--seq-len", "32", "--seed", "5", "--layers", "2"]
    assert main(argv) == 0
    assert out.is_file()
    assert "layer 2" in capsys.readouterr().out


def test_report_cli_bad_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and "tinyattn quantize-report" in err
    assert not (tmp_path / "x.png").exists()
    assert main([str(FIXTURE), "--seq-len", "4096"]) == 2
    assert "seq_len" in capsys.readouterr().err


@pytest.mark.slow
def test_24_layer_synthetic_model() -> None:
    """Full mobilebert-uncased geometry through the integer path: time and final cosine."""
    model = MobileBert.synthetic(MobileBertConfig.mobilebert_uncased(), seed=0)
    calib = np.random.default_rng(1).integers(0, model.config.vocab_size, (4, SEQ))
    ids = np.random.default_rng(2).integers(0, model.config.vocab_size, SEQ)
    t0 = time.perf_counter()
    qm = model.quantize(calib)
    t1 = time.perf_counter()
    states = qm.forward(ids)
    t2 = time.perf_counter()
    cos = cosine_similarity(model.forward(ids)[-1], qm.dequantize(states)[-1])
    print(f"24 layers: quantize {t1 - t0:.2f} s, integer forward {t2 - t1:.2f} s, cos {cos:.5f}")
    assert len(states) == 25
    assert cos >= 0.99
