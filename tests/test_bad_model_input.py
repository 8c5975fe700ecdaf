"""Bad input to the model side (config.json, ids, masks, calibration, --layers): one clear
ValueError naming what is wrong, never a NumPy error from deep inside or a silent default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from models import FIXTURE, small_config

from tinyattn import cli
from tinyattn.sw.mobilebert import (
    REQUIRED_KEYS,
    ConfigError,
    MobileBert,
    MobileBertConfig,
    attention,
)
from tinyattn.sw.report import load_source
from tinyattn.sw.report import main as report_main

SMALL = small_config(num_feedforward_networks=2, num_hidden_layers=1)


@pytest.fixture(scope="module")
def small() -> MobileBert:
    return MobileBert.synthetic(SMALL, seed=0, std=0.2)


def _config_without(tmp_path: Path, *keys: str) -> Path:
    d = json.loads((FIXTURE / "config.json").read_text())
    for key in keys:
        del d[key]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(d))
    return path


# ---- config.json: required keys ---------------------------------------------------------------


def test_the_fixture_config_has_every_required_key() -> None:
    assert set(REQUIRED_KEYS) <= json.loads((FIXTURE / "config.json").read_text()).keys()


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_missing_required_key_names_file_and_key(tmp_path: Path, key: str) -> None:
    path = _config_without(tmp_path, key)
    with pytest.raises(ConfigError, match=rf"required key '{key}' is missing; add it") as info:
        MobileBertConfig.from_json(path)
    assert info.value.field == key
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_layer_count_in_a_checkpoint_names_the_key(tmp_path: Path) -> None:
    """It used to become HF's 24 and surface as 'missing tensor encoder.layer.2...'."""
    _config_without(tmp_path, "num_hidden_layers")
    shutil.copy(FIXTURE / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(ConfigError, match=r"config\.json: required key 'num_hidden_layers'"):
        MobileBert.from_pretrained(tmp_path)


def test_from_dict_requires_the_keys_too() -> None:
    d = SMALL.to_dict()
    del d["vocab_size"]
    with pytest.raises(ConfigError, match=r"^config: required key 'vocab_size' .*: 30522\)$"):
        MobileBertConfig.from_dict(d)


def test_optional_keys_may_be_absent(tmp_path: Path) -> None:
    path = _config_without(
        tmp_path, "layer_norm_eps", "initializer_range", "true_hidden_size", "model_type"
    )
    cfg = MobileBertConfig.from_json(path)
    assert (cfg.true_hidden_size, cfg.num_hidden_layers) == (128, 2)
    assert MobileBertConfig.from_dict(SMALL.to_dict()) == SMALL


# ---- ids, token types and masks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"attention_mask": np.ones(7)},
            r"attention_mask must have shape \(B, S\) = \(1, 8\) like input_ids .*got \(7,\)",
        ),
        ({"attention_mask": np.ones((2, 8))}, r"attention_mask .* = \(1, 8\) .*got \(2, 8\)"),
        ({"attention_mask": np.full(8, 2)}, r"attention_mask must hold 0 .* or 1 .*\[2\]"),
        ({"token_type_ids": np.zeros(9, np.int64)}, r"token_type_ids .* = \(1, 8\) .*got \(9,\)"),
        ({"token_type_ids": np.zeros(8)}, r"token_type_ids must be integers, got dtype float64"),
        ({"token_type_ids": np.full(8, 2)}, r"token_type_ids out of range \[0, 2\): found 2\.\.2"),
    ],
)
def test_float_forward_rejects_bad_side_inputs(small: MobileBert, kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        small.forward(np.arange(8), **kwargs)


def test_batch_side_inputs_must_match_the_batch(small: MobileBert) -> None:
    ids = np.zeros((2, 8), np.int64)
    # (4, 4) has the right size: it used to be reshaped into (2, 8) without a word.
    with pytest.raises(ValueError, match=r"token_type_ids .* = \(2, 8\) .*got \(4, 4\)"):
        small.forward(ids, token_type_ids=np.zeros((4, 4), np.int64))
    with pytest.raises(ValueError, match=r"attention_mask .* = \(2, 8\) .*got \(16,\)"):
        small.forward(ids, attention_mask=np.ones(16))
    shared = small.forward(ids, attention_mask=np.r_[np.ones(6), np.zeros(2)])
    per_seq = small.forward(ids, attention_mask=np.tile(np.r_[np.ones(6), np.zeros(2)], (2, 1)))
    np.testing.assert_array_equal(shared[-1], per_seq[-1])


def test_attention_checks_its_mask() -> None:
    q = np.zeros((2, 8, 4), np.float32)
    with pytest.raises(ValueError, match=r"attention_mask .* = \(2, 8\) .*got \(8, 2\)"):
        attention(q, q, q, 2, np.ones((8, 2)))


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (np.zeros((0, 8), np.int64), r"input_ids must be a non-empty .* shape \(0, 8\)"),
        (np.zeros((2, 3, 4), np.int64), r"input_ids must be .* shape \(2, 3, 4\)"),
        (np.zeros(8, np.float32), r"input_ids must be .* dtype float32"),
        (np.array([1, 64]), r"input_ids out of range \[0, 64\): found 1\.\.64"),
        (np.array([-1, 3]), r"input_ids out of range \[0, 64\): found -1\.\.3"),
    ],
)
def test_bad_ids_float_and_integer_model(small: MobileBert, ids: np.ndarray, message: str):
    with pytest.raises(ValueError, match=message):
        small.forward(ids)
    qm = small.quantize(np.arange(16) % SMALL.vocab_size)
    with pytest.raises(ValueError, match=message):
        qm.forward(ids)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (
            np.zeros((0, 8), np.int64),
            r"calibration_ids must be a non-empty \(S,\) or \(B, S\) int array, got shape \(0, 8\)",
        ),
        (np.array([], np.int64), r"calibration_ids must be a non-empty .* shape \(0,\)"),
        (np.array([3, 99]), r"calibration_ids out of range \[0, 64\): found 3\.\.99"),
    ],
)
def test_calibration_ids_are_checked(small: MobileBert, ids: np.ndarray, message: str) -> None:
    """An empty batch used to fail with 'zero-size array to reduction operation minimum'."""
    with pytest.raises(ValueError, match=message):
        small.quantize(ids)


# ---- --layers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (100, r"^--layers 100: MobileBERT has 24 layers; use 1\.\.24$"),
        (25, r"^--layers 25: MobileBERT has 24 layers; use 1\.\.24$"),
        (0, r"^--layers 0: MobileBERT has 24 layers; use 1\.\.24$"),
        (-3, r"^--layers -3: "),
    ],
)
def test_synthetic_layers_beyond_mobilebert_are_refused(layers: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_source("synthetic", layers=layers)


def test_checkpoint_layers_beyond_its_own_are_refused() -> None:
    """The 2-layer fixture used to be returned whole for --layers 3."""
    with pytest.raises(ValueError, match=r"^--layers 3: the checkpoint .*mobilebert-2l has 2 "):
        load_source(str(FIXTURE), layers=3)
    assert load_source(str(FIXTURE), layers=1).config.num_hidden_layers == 1
    assert len(load_source(str(FIXTURE), layers=2).layers) == 2


def test_layers_on_the_command_lines_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert report_main(["synthetic", "--layers", "100", "--out", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "tinyattn quantize-report: error: --layers 100: MobileBERT has 24 layers; use 1..24\n"
    )
    argv = ["deploy", "synthetic", "--layers", "100", "--out", str(tmp_path / "d")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--layers 100: MobileBERT has 24 layers; use 1..24" in err
    assert not (tmp_path / "d").exists()
