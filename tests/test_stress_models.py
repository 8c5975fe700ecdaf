"""Stress models with trained-model statistics, and the integer path on them (issue 14).

Every accuracy check names its stress model, seed and mode in the failure message; the seeds
are fixed (0, 1, 2) so that a failure can be repeated with
``stress_model(layers=2, seed=SEED, spec=NAME)``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import numpy as np
import pytest
from test_mobilebert_quant import replay_with_golden

from tinyattn.config import ClusterConfig
from tinyattn.sw.calibration import METHODS, calibrated_range, mse_range
from tinyattn.sw.intops import GemmOp
from tinyattn.sw.lowering import lower, unify_epilogues
from tinyattn.sw.mobilebert import MobileBert, MobileBertConfig
from tinyattn.sw.quantize import QuantizationError, QuantizedMobileBert, float_trace
from tinyattn.sw.report import compare_states, quantize_report
from tinyattn.sw.stress_models import (
    STRESS_MODELS,
    StressSpec,
    outlier_channels,
    stress_model,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mobilebert-2l"
SEQ = 128
SEEDS = (0, 1, 2)
#: Presets with residual outliers x40 (4 of 512) and/or bottleneck outliers x20 (2 of 128),
#: normal or Student-t (df 4) weights, mixed or flat attention: cosine >= 0.99 everywhere.
MUST_HOLD = ("residual", "bottleneck", "outliers", "flat")


@functools.cache
def _model(name: str, model_seed: int, layers: int = 2) -> MobileBert:
    return stress_model(layers=layers, seed=model_seed, spec=name)


def _ids(model: MobileBert, model_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibration (4 x 128) and evaluation (2 x 128) ids, as ``quantize-report`` draws them."""
    V = model.config.vocab_size
    calib = np.random.default_rng([model_seed, 1]).integers(0, V, (4, SEQ))
    evaluation = np.random.default_rng([model_seed, 2]).integers(0, V, (2, SEQ))
    return calib, evaluation


def _quantize(model: MobileBert, calib: np.ndarray, engine: bool) -> QuantizedMobileBert:
    """``engine``: one residual triple and one NoNorm shift per op, as a GEMM job holds them
    (``unify_epilogues`` keeps the quantizer's adjustments and logit fits)."""
    if not engine:
        return model.quantize(calib)
    return unify_epilogues(model.quantize(calib, per_channel_epilogue=False))


def _cosines(model: MobileBert, q: QuantizedMobileBert, ids: np.ndarray) -> list[float]:
    rows = compare_states(model.forward(ids), q.forward_float(ids), [""] * len(q.state_names))
    return [r["cosine"] for r in rows]


# ---- the generator ------------------------------------------------------------------------


def test_stress_model_keeps_the_real_geometry_and_is_deterministic() -> None:
    m = _model("outliers", 0)
    assert m.config == MobileBertConfig.mobilebert_uncased(num_hidden_layers=2)
    again = stress_model(layers=2, seed=0, spec="outliers")
    other = stress_model(layers=2, seed=1, spec="outliers")
    a, b, c = m.state_dict(), again.state_dict(), other.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    k = "encoder.layer.0.intermediate.dense.weight"
    assert not np.array_equal(a[k], c[k])
    spec = STRESS_MODELS["outliers"]
    assert outlier_channels(m.config, spec, 0) != outlier_channels(m.config, spec, 1)
    with pytest.raises(ValueError, match="unknown stress model"):
        stress_model(layers=1, spec="nope")
    with pytest.raises(ValueError, match="gains"):
        stress_model(layers=1, spec=StressSpec(residual_gain=0.5))


@pytest.mark.parametrize("model_seed", SEEDS)
def test_outlier_channels_stand_out_in_every_hidden_state(model_seed: int) -> None:
    """The residual outliers are tens of times the typical channel at every layer (they neither
    vanish nor compound), and the bottleneck chain and the query/key input carry theirs."""
    m = _model("outliers", model_seed)
    spec = STRESS_MODELS["outliers"]
    ch = outlier_channels(m.config, spec, model_seed)
    assert len(ch.residual) == 4 and len(ch.bottleneck) == 2 and len(ch.attention) == 2
    _, ids = _ids(m, model_seed)
    trace = float_trace(m, ids)

    def ratio(name: str, channels: tuple[int, ...]) -> float:
        r = np.abs(trace[name]).reshape(-1, trace[name].shape[-1]).max(0)
        normal = np.delete(r, channels)
        return float(np.median(r[list(channels)]) / np.median(normal))

    for name in ("embeddings", "layer0.output.bottleneck", "layer1.output.bottleneck"):
        assert 10 <= ratio(name, ch.residual) <= 400, (model_seed, name)
    for i in range(2):
        for name in ("bottleneck.input", "attention.output", "ffn2.output", "output"):
            assert 5 <= ratio(f"layer{i}.{name}", ch.bottleneck) <= 200, (model_seed, name)
        assert 5 <= ratio(f"layer{i}.bottleneck.attention", ch.attention) <= 200, model_seed


def test_stream_stays_stationary_over_24_layers() -> None:
    m = stress_model(layers=24, seed=0, spec="outliers")
    states = m.forward(np.random.default_rng(3).integers(0, m.config.vocab_size, (1, SEQ)))
    top = [float(np.abs(s).max()) for s in states]
    assert max(top) < 4 * top[0], top  # random weights alone grow it 1e4-fold


def test_attention_modes_and_heavy_tails() -> None:
    """ "mixed": one very peaky head (one-hot rows whose maxima span more than the 256 int8
    logit steps), one peaky, two flat; weights heavy-tailed (Student-t, df 4)."""
    m = _model("outliers", 0)
    _, ids = _ids(m, 0)
    trace = float_trace(m, ids)
    pmax, span = [], []
    for h in range(4):
        z = trace[f"layer1.attention.head{h}.logits"]
        p = np.exp2(z - z.max(-1, keepdims=True))
        pmax.append(float(np.median((p / p.sum(-1, keepdims=True)).max(-1))))
        span.append(float(np.ptp(z.max(-1))))
    assert pmax[0] > 0.99 and span[0] > 256, (pmax, span)
    assert 0.2 < pmax[1] < 0.95 and pmax[2] < 0.05 and pmax[3] < 0.05, pmax
    z = float_trace(_model("flat", 0), ids)["layer1.attention.head0.logits"]
    assert float(z.std(-1).mean()) < 1.0
    w = m.state_dict()["encoder.layer.0.ffn.0.output.dense.weight"].astype(np.float64).ravel()
    kurtosis = float(np.mean((w - w.mean()) ** 4) / np.var(w) ** 2)
    normal = _model("residual", 0).state_dict()["encoder.layer.0.ffn.0.output.dense.weight"]
    n = normal.astype(np.float64).ravel()
    assert kurtosis > 5 and abs(np.mean(n**4) / np.var(n) ** 2 - 3) < 0.3, kurtosis


# ---- accuracy on the stress models --------------------------------------------------------


@pytest.mark.parametrize("engine", [False, True], ids=["golden", "engine"])
@pytest.mark.parametrize("name", MUST_HOLD)
def test_cosine_at_every_layer_on_stress_models(name: str, engine: bool) -> None:
    """Outliers x40 in the residual stream and x20 in the bottlenecks: cosine >= 0.99 at every
    hidden state, 2 layers, S = 128, three seeds; ``engine``: the epilogue as a job holds it."""
    for model_seed in SEEDS:
        m = _model(name, model_seed)
        calib, ids = _ids(m, model_seed)
        q = _quantize(m, calib, engine)
        cos = _cosines(m, q, ids)
        assert min(cos) >= 0.99, f"stress model {name!r} seed {model_seed} engine={engine}: {cos}"


@pytest.mark.parametrize("name", ["peaky", "heavy"])
def test_the_hardest_stress_models_stay_close(name: str) -> None:
    """Every head very peaky (logits spanning hundreds of ln 2 steps), or Student-t weights with
    3 degrees of freedom: the float model amplifies small errors; the documented floor is 0.98
    (measured minimum over 5 seeds: docs/quantization.md)."""
    for model_seed in SEEDS:
        m = _model(name, model_seed)
        calib, ids = _ids(m, model_seed)
        cos = _cosines(m, m.quantize(calib), ids)
        assert min(cos) >= 0.98, f"stress model {name!r} seed {model_seed}: {cos}"


def test_per_tensor_scales_fail_on_outliers() -> None:
    """The stress is real: without per-channel scales the residual outliers cost > 0.01."""
    m = _model("residual", 0)
    calib, ids = _ids(m, 0)
    cos = _cosines(m, m.quantize(calib, channel_scales=False), ids)
    assert min(cos) < 0.99, cos


@pytest.mark.parametrize("engine", [False, True], ids=["golden", "engine"])
def test_stress_model_runs_on_golden_ops_and_lowers(engine: bool) -> None:
    """Bit-exact replay with golden calls; the engine variant lowers to engine jobs."""
    m = _model("outliers", 1)
    calib, ids = _ids(m, 1)
    q = _quantize(m, calib, engine)
    replay_with_golden(q, ids[0])
    for _, value in q.integer_arrays():
        if isinstance(value, np.ndarray):
            assert np.issubdtype(value.dtype, np.integer)
    if engine:
        program = lower(q, ClusterConfig(), SEQ)
        assert len(program.steps) > 0


def test_plain_fixture_stays_above_0998_in_both_modes() -> None:
    model = MobileBert.from_pretrained(FIXTURE)
    calib = np.random.default_rng(100).integers(0, 512, (4, SEQ))
    ids = np.random.default_rng(200).integers(0, 512, (2, SEQ))
    for engine in (False, True):
        cos = _cosines(model, _quantize(model, calib, engine), ids)
        assert min(cos) >= 0.998, (engine, cos)


# ---- never refuse a range the hardware can clip; one line for a model it cannot hold ------


def _compounding(model: MobileBert) -> MobileBert:
    """Issue 14's experiments at once: 4 of 512 channels of every 512-wide NoNorm (weight and
    bias) x40, 2 of 128 of every 128-wide one x20. The outliers compound along the residual
    chains (values up to 1e15): the old quantizer refused it (multiplier ratio 1e11)."""
    t = model.state_dict()
    for k, v in t.items():
        if ".LayerNorm." in k:
            v = v.copy()
            v[[3, 100, 200, 300] if v.size == 512 else [5, 77]] *= 40 if v.size == 512 else 20
            t[k] = v
    return MobileBert.from_tensors(model.config, t)


def test_compounding_outliers_are_clipped_not_refused() -> None:
    model = _compounding(MobileBert.from_pretrained(FIXTURE))
    calib = np.random.default_rng(100).integers(0, 512, (4, SEQ))
    ids = np.random.default_rng(200).integers(0, 512, (1, SEQ))
    for engine in (False, True):
        q = _quantize(model, calib, engine)
        replay_with_golden(q, ids[0])
        sat = q.saturation(ids)
        assert set(sat) == {op.name for op in q.ops()}
        assert all(0.0 <= s["any"] <= 1.0 for s in sat.values())
        # Logits 1e12 steps of ln 2 apart: the multiplier is clipped at 255, not refused.
        assert any(a.what == "qk" and "> 255" in a.detail for a in q.adjustments)
        if engine:
            # One residual triple per op cannot add a residual 3e5 times smaller than the
            # dense output in the same op as normal channels: the residual stream's scale is
            # raised there, and said so.
            assert any(
                a.op == "layer1.output.bottleneck" and "one residual triple" in a.detail
                for a in q.adjustments
            )
        else:
            # Per channel, that channel drops the residual (below half a dense step).
            cos = _cosines(model, q, ids)
            assert min(cos) >= 0.99, cos  # measured 0.9999 / 0.9992 / 0.9988


def test_unrepresentable_models_get_one_line_naming_op_value_and_fix() -> None:
    base = _model("residual", 0)
    calib, _ = _ids(base, 0)
    t = base.state_dict()
    name = "encoder.layer.1.ffn.2.output.dense.weight"
    t[name] = t[name].copy()
    t[name][3, 4] = np.nan
    with pytest.raises(QuantizationError) as exc:
        MobileBert.from_tensors(base.config, t).quantize(calib)
    msg = str(exc.value)
    assert "\n" not in msg
    for word in ("layer1.ffn2.output", "nan", "fix the checkpoint"):
        assert word in msg, msg
    # A float model that overflows (float64, as calibration runs it): named where it happens.
    model = MobileBert.from_tensors(base.config, base.state_dict())
    norm = model.layers[0].bottleneck_input.norm
    object.__setattr__(norm, "weight", np.full(norm.weight.shape, 1e308))
    object.__setattr__(norm, "bias", np.full(norm.bias.shape, 1e308))
    with pytest.raises(QuantizationError) as exc:
        model.quantize(calib)
    msg = str(exc.value)
    assert "\n" not in msg and "layer0." in msg and "inf" in msg, msg


def test_saturation_counts_what_the_golden_model_clips() -> None:
    """The per-stage replay clips to the golden outputs; an op forced to saturate shows it."""
    m = _model("outliers", 2)
    calib, ids = _ids(m, 2)
    q = m.quantize(calib)
    sat = q.saturation(ids[:1])
    assert sat["embeddings"]["any"] < 0.01
    op = q.op("layer0.ffn0.output")
    assert isinstance(op, GemmOp)
    # 16 times the multiplier: most dense outputs leave the int8 range.
    shift = np.maximum(op.requant.shift.astype(np.int64) - 4, 0).astype(np.uint8)
    loud = dataclasses.replace(op, requant=dataclasses.replace(op.requant, shift=shift))
    layer0 = dataclasses.replace(
        q.layers[0],
        ffn=(dataclasses.replace(q.layers[0].ffn[0], output=loud), *q.layers[0].ffn[1:]),
    )
    q2 = QuantizedMobileBert(
        q.config, q.embeddings, [layer0, *q.layers[1:]], q.scales, q.zero_points, q.settings
    )
    assert q2.saturation(ids[:1])["layer0.ffn0.output"]["requant"] > 0.2


# ---- calibration methods -------------------------------------------------------------------


def test_calibration_methods() -> None:
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((4096, 3)))
    x[:, 2] = np.abs(rng.standard_t(2, 4096))
    for method in METHODS:
        r = calibrated_range(x, method, axis=0)
        assert r.shape == (3,) and np.all(r > 0) and np.all(r <= x.max(0))
        assert isinstance(calibrated_range(x, method), float)
    np.testing.assert_array_equal(calibrated_range(x, "maxabs", axis=0), x.max(0))
    p90 = calibrated_range(x, "percentile", percentile=90, axis=0)
    np.testing.assert_allclose(p90, np.percentile(x, 90, 0))
    mse = mse_range(x, 0)
    # With 127 steps the rounding noise is small: clipping pays only for a lone sample far
    # out among very many (here 1 at 3 among 100,000 in 0..1).
    lone = np.concatenate([rng.uniform(0, 1, 100_000), [3.0]])
    assert mse_range(lone) < 1.01

    def err(c: float, col: np.ndarray) -> float:
        s = c / 127
        return float(np.mean((col - np.minimum(np.rint(col / s), 127) * s) ** 2))

    for j in range(3):  # within 10 % of a brute-force search over 400 ranges
        grid = np.linspace(x[:, j].max() / 400, x[:, j].max(), 400)
        best = min(err(c, x[:, j]) for c in grid)
        assert err(mse[j], x[:, j]) <= 1.1 * best, j
    with pytest.raises(ValueError, match="method"):
        calibrated_range(x, "kl")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_quantizes_a_stress_model(method: str) -> None:
    m = _model("outliers", 0)
    calib, ids = _ids(m, 0)
    q = m.quantize(calib, method=method)
    assert q.settings.method == method
    cos = _cosines(m, q, ids)
    assert min(cos) >= 0.99, (method, cos)


# ---- the report ----------------------------------------------------------------------------


def test_report_prints_saturation_calibration_and_worst_channel(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rows = quantize_report(
        "stress:outliers", out_png=tmp_path / "r.png", seq_len=64, seed=3, layers=2
    )
    text = capsys.readouterr().out
    assert len(rows) == 3
    ops = {"embeddings"}
    for r in rows:
        assert {"saturation", "calibration", "worst_channel", "worst_channel_error"} <= r.keys()
        assert 0 <= r["worst_channel"] < 512 and r["worst_channel_error"] >= 0
        assert "maxabs" in r["calibration"]
        assert all(0.0 <= s <= 1.0 for s in r["saturation"].values())
    assert set(rows[0]["saturation"]) == ops
    layer_ops = set(rows[1]["saturation"])
    assert {"bottleneck.input", "attention", "attention.output", "ffn0.output"} <= layer_ops
    assert len(layer_ops) == 16 and set(rows[2]["saturation"]) == layer_ops
    assert "logit scale per head" in rows[1]["calibration"]
    assert text.count("saturated:") == 3 and text.count("calibration:") == 3
    assert "worst channel" in text and "stress:outliers" in text


def test_report_engine_mode_and_method(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = quantize_report(
        str(FIXTURE), out_png=tmp_path / "r.png", seq_len=32, seed=1, method="mse", engine=True
    )
    assert all("mse, one epilogue per op" in r["calibration"] for r in rows)
    assert min(r["cosine"] for r in rows) >= 0.99
    with pytest.raises(ValueError, match="stress:NAME"):
        quantize_report("stress:nope", out_png=tmp_path / "x.png")


@pytest.mark.slow
def test_24_layer_stress_model() -> None:
    """Full geometry, 24 layers, outliers x40 / x20, mixed attention, Student-t weights."""
    m = stress_model(layers=24, seed=0, spec="outliers")
    calib, ids = _ids(m, 0)
    for engine in (False, True):
        t0 = time.perf_counter()
        q = _quantize(m, calib, engine)
        cos = _cosines(m, q, ids)
        print(f"24-layer stress model, engine={engine}: {time.perf_counter() - t0:.1f} s, {cos}")
        # Measured (seed 0): final 0.9993 / 0.9991 (engine), lowest layer 0.9960 / 0.9952.
        assert cos[-1] >= 0.98, (engine, cos)
        assert min(cos) >= 0.99, (engine, cos)
