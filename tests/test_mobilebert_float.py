"""Float NumPy MobileBERT: fidelity to the HF reference fixture, loading errors, synthetic."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from models import FIXTURE, small_config
from safetensors.numpy import load_file, save_file

from tinyattn.sw.mobilebert import (
    CheckpointError,
    ConfigError,
    MobileBert,
    MobileBertConfig,
    attention,
    embeddings_forward,
    expected_tensor_shapes,
    layer_norm,
    no_norm,
)

TOL = 1e-4

SMALL = small_config()


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "reference.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def fixture_tensors() -> dict[str, np.ndarray]:
    return load_file(str(FIXTURE / "model.safetensors"))


def _write_checkpoint(folder: Path, tensors: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURE / "config.json", folder / "config.json")
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


# ---- fidelity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compute_dtype", [np.float32, np.float64])
def test_fixture_hidden_states_match_hf(reference, compute_dtype) -> None:
    model = MobileBert.from_pretrained(FIXTURE, compute_dtype=compute_dtype)
    states = model.forward(reference["input_ids"])
    assert len(states) == model.config.num_hidden_layers + 1 == 3
    for i, state in enumerate(states):
        ref = reference[f"hidden_state_{i}"]
        assert state.dtype == np.float32
        assert state.shape == ref.shape == (128, 512)
        err = float(np.max(np.abs(state - ref)))
        assert err < TOL, f"hidden_state_{i}: max abs error {err:.3g}"


def test_fixture_tensor_names_are_exactly_the_hf_ones(fixture_tensors) -> None:
    cfg = MobileBertConfig.from_json(FIXTURE / "config.json")
    shapes = expected_tensor_shapes(cfg)
    assert set(shapes) == set(fixture_tensors)
    for name, shape in shapes.items():
        assert fixture_tensors[name].shape == shape, name


def test_weights_are_structured_float32(fixture_tensors) -> None:
    model = MobileBert.from_pretrained(FIXTURE)
    assert model.embeddings.word.dtype == np.float32
    assert model.embeddings.transformation.weight.shape == (512, 384)
    layer = model.layers[1]
    assert layer.bottleneck_input.dense.weight.shape == (128, 512)
    assert layer.bottleneck_attention.norm.kind == "no_norm"
    assert layer.value.weight.shape == (128, 512)
    assert len(layer.ffn) == 3
    assert layer.output_bottleneck.dense.weight.shape == (512, 128)
    np.testing.assert_array_equal(
        layer.ffn[2].output.dense.weight,
        fixture_tensors["encoder.layer.1.ffn.2.output.dense.weight"].astype(np.float32),
    )


def test_prefixed_checkpoint_with_pooler_loads(tmp_path, fixture_tensors, reference) -> None:
    tensors = {f"mobilebert.{k}": v for k, v in fixture_tensors.items()}
    tensors["mobilebert.pooler.dense.weight"] = np.zeros((512, 512), np.float16)
    tensors["cls.predictions.bias"] = np.zeros(512, np.float16)
    tensors["mobilebert.embeddings.position_ids"] = np.arange(128)[None]
    model = MobileBert.from_pretrained(_write_checkpoint(tmp_path / "ckpt", tensors))
    ids = reference["input_ids"][0, :32]
    np.testing.assert_array_equal(
        model.forward(ids)[-1], MobileBert.from_pretrained(FIXTURE).forward(ids)[-1]
    )


# ---- errors -----------------------------------------------------------------------------------


def test_missing_tensor_is_named(tmp_path, fixture_tensors) -> None:
    name = "encoder.layer.1.ffn.1.output.LayerNorm.bias"
    tensors = {k: v for k, v in fixture_tensors.items() if k != name}
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")) as info:
        MobileBert.from_pretrained(_write_checkpoint(tmp_path / "ckpt", tensors))
    assert info.value.tensor == name
    assert info.value.expected == (128,)
    assert "(128,)" in str(info.value)


def test_misshaped_tensor_is_named_with_shapes(tmp_path, fixture_tensors) -> None:
    name = "encoder.layer.0.attention.self.value.weight"
    tensors = dict(fixture_tensors)
    tensors[name] = np.zeros((128, 128), np.float16)
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")) as info:
        MobileBert.from_pretrained(_write_checkpoint(tmp_path / "ckpt", tensors))
    assert (info.value.expected, info.value.found) == ((128, 512), (128, 128))
    assert "(128, 512)" in str(info.value) and "(128, 128)" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_extra_layer_in_checkpoint_is_rejected(tmp_path, fixture_tensors) -> None:
    tensors = dict(fixture_tensors)
    tensors["encoder.layer.2.intermediate.dense.bias"] = np.zeros(512, np.float16)
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.2\.intermediate"):
        MobileBert.from_pretrained(_write_checkpoint(tmp_path / "ckpt", tensors))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_attention_heads", 3),
        ("hidden_size", 0),
        ("vocab_size", "512"),
        ("normalization_type", "batch_norm"),
        ("hidden_act", "mish"),
        ("trigram_input", "yes"),
        ("layer_norm_eps", -1.0),
        ("true_hidden_size", 512),
        ("model_type", "bert"),
    ],
)
def test_bad_config_value_names_field(field, value) -> None:
    d = json.loads((FIXTURE / "config.json").read_text())
    d[field] = value
    with pytest.raises(ConfigError, match=field) as info:
        MobileBertConfig.from_dict(d)
    assert info.value.field == field


def test_bad_config_json_in_checkpoint(tmp_path, fixture_tensors) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(FIXTURE / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(ConfigError, match="config"):
        MobileBert.from_pretrained(folder)  # missing config.json
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="parse"):
        MobileBert.from_pretrained(folder)
    d = json.loads((FIXTURE / "config.json").read_text())
    d["intermediate_size"] = -4
    (folder / "config.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="intermediate_size"):
        MobileBert.from_pretrained(folder)


def test_missing_weights_file(tmp_path) -> None:
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        MobileBert.from_pretrained(tmp_path)


def test_bad_inputs_raise() -> None:
    model = MobileBert.synthetic(SMALL, seed=0)
    with pytest.raises(ValueError, match="out of range"):
        model.forward(np.array([1, 64]))
    with pytest.raises(ValueError, match="max_position"):
        model.forward(np.zeros(17, np.int64))
    with pytest.raises(ValueError, match="int"):
        model.forward(np.zeros(4, np.float32))


# ---- synthetic --------------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed() -> None:
    ids = np.arange(16) * 3 % SMALL.vocab_size
    a = MobileBert.synthetic(SMALL, seed=1).forward(ids)
    b = MobileBert.synthetic(SMALL, seed=1).forward(ids)
    c = MobileBert.synthetic(SMALL, seed=2).forward(ids)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert all(not np.allclose(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"normalization_type": "layer_norm", "hidden_act": "gelu"},
        {"trigram_input": False},
        {"trigram_input": False, "embedding_size": 32},
        {"use_bottleneck": False, "num_feedforward_networks": 1},
        {"use_bottleneck_attention": True},
        {"key_query_shared_bottleneck": False, "intra_bottleneck_size": 32},
        {"num_hidden_layers": 1, "num_attention_heads": 4, "hidden_act": "gelu_new"},
    ],
)
def test_synthetic_any_small_geometry(overrides) -> None:
    cfg = dataclasses.replace(SMALL, true_hidden_size=None, **overrides)
    model = MobileBert.synthetic(cfg, seed=3)
    assert set(model.state_dict()) == set(expected_tensor_shapes(cfg))
    states = model.forward(np.array([5, 9, 1, 63, 0, 7]))
    assert len(states) == cfg.num_hidden_layers + 1
    for s in states:
        assert s.shape == (6, cfg.hidden_size) and s.dtype == np.float32
        assert np.all(np.isfinite(s))
    f32 = states
    model.compute_dtype = np.dtype(np.float64)
    np.testing.assert_allclose(model.forward(np.array([5, 9, 1, 63, 0, 7]))[-1], f32[-1], atol=1e-5)


def test_synthetic_full_geometry_is_well_behaved() -> None:
    full = MobileBertConfig.mobilebert_uncased()
    assert (full.num_hidden_layers, full.vocab_size, full.true_hidden_size) == (24, 30522, 128)
    shapes = expected_tensor_shapes(full)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 24_581_888  # HF, without pooler
    cfg = MobileBertConfig.mobilebert_uncased(vocab_size=1024)  # 24 layers, small vocab: fast
    model = MobileBert.synthetic(cfg, seed=0)
    assert model.num_parameters == 24_581_888 - (30522 - 1024) * 128
    states = model.forward(np.arange(16) * 911 % cfg.vocab_size)
    assert len(states) == 25
    for s in states:
        assert s.shape == (16, 512)
        assert np.all(np.isfinite(s)) and float(np.abs(s).max()) < 10.0
        assert float(s.std()) > 1e-3


def test_save_pretrained_round_trip(tmp_path) -> None:
    model = MobileBert.synthetic(SMALL, seed=4)
    model.save_pretrained(tmp_path / "m")
    loaded = MobileBert.from_pretrained(tmp_path / "m")
    assert loaded.config == SMALL
    ids = np.array([1, 2, 3, 4])
    for x, y in zip(model.forward(ids), loaded.forward(ids), strict=True):
        np.testing.assert_array_equal(x, y)


def test_batch_matches_single_sequences() -> None:
    model = MobileBert.synthetic(SMALL, seed=5)
    ids = np.array([[1, 2, 3, 4, 5], [9, 8, 7, 6, 5]])
    tt = np.array([[0, 0, 1, 1, 1], [0, 1, 0, 1, 0]])
    batch = model.forward(ids, token_type_ids=tt)
    assert batch[-1].shape == (2, 5, 32)
    for b in range(2):
        single = model.forward(ids[b], token_type_ids=tt[b])
        for x, y in zip(batch, single, strict=True):
            np.testing.assert_allclose(x[b], y, atol=1e-6)
    np.testing.assert_array_equal(model.forward(ids[:1])[-1], model.forward(ids[0])[-1])
    assert model.forward_batch(ids[0])[-1].shape == (1, 5, 32)


def test_attention_mask_hides_masked_keys() -> None:
    model = MobileBert.synthetic(SMALL, seed=6, std=0.2)
    ids = np.array([3, 1, 4, 1, 5, 9])
    mask = np.array([1, 1, 1, 1, 0, 1])
    tt = np.zeros(6, np.int64)
    tt2 = tt.copy()
    tt2[4] = 1  # token type only changes position 4's embedding (trigram mixes words only)
    a = model.forward(ids, token_type_ids=tt, attention_mask=mask)[-1]
    b = model.forward(ids, token_type_ids=tt2, attention_mask=mask)[-1]
    keep = mask.astype(bool)
    np.testing.assert_allclose(a[keep], b[keep], atol=1e-6)
    assert not np.allclose(a[4], b[4])
    np.testing.assert_array_equal(
        model.forward(ids, attention_mask=np.ones(6))[-1], model.forward(ids)[-1]
    )


# ---- building blocks --------------------------------------------------------------------------


def test_trigram_embedding_is_local() -> None:
    model = MobileBert.synthetic(SMALL, seed=7)
    ids = np.array([[4, 8, 15, 16, 23, 42]])
    changed = ids.copy()
    changed[0, 3] = 60
    a = embeddings_forward(model.embeddings, model.config, ids)
    b = embeddings_forward(model.embeddings, model.config, changed)
    differs = np.any(np.abs(a - b) > 0, axis=-1)[0]
    assert differs.tolist() == [False, False, True, True, True, False]


def test_attention_matches_per_head_loop() -> None:
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 5, 12)) for _ in range(3))
    out = attention(q, k, v, num_heads=3)
    for b in range(2):
        for h in range(3):
            sl = slice(4 * h, 4 * h + 4)
            s = q[b, :, sl] @ k[b, :, sl].T / 2.0
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            np.testing.assert_allclose(out[b, :, sl], p @ v[b, :, sl], atol=1e-12)


def test_norms() -> None:
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((3, 8)), rng.standard_normal(8), rng.standard_normal(8)
    np.testing.assert_allclose(no_norm(x, w, b), x * w + b)
    ln = layer_norm(x, w, b, 1e-5)
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(ln, ref, atol=1e-12)
