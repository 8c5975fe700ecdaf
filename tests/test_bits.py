"""Payload packing used by the benches, against Amaranth's own layout constants."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from tinyattn.config import EngineConfig
from tinyattn.hw.compute_core import operand_layout
from tinyattn.verif.bits import pack, unpack


def test_pack_matches_amaranth_const() -> None:
    cfg = EngineConfig(n_pe=4, vec_len=8, acc_bits=24)
    layout = operand_layout(cfg)
    rng = np.random.default_rng(0)
    value = {
        "x": rng.integers(0, 256, 8),
        "acc_in": rng.integers(-(2**23), 2**23, 4),
        "requant": [
            {"mult": 200, "shift": 31, "add": -128},
            {"mult": 0, "shift": 0, "add": 127},
            {"mult": 1, "shift": 5, "add": -1},
            {"mult": 255, "shift": 16, "add": 3},
        ],
        "x_signed": 1,
        "bank": 1,
        "relu": 0,
    }
    amaranth_value = {**value, "x": value["x"].tolist(), "acc_in": value["acc_in"].tolist()}
    raw = pack(layout, value)
    assert raw == layout.const(amaranth_value).as_value().value
    back = unpack(layout, raw)
    assert back["x"].tolist() == value["x"].tolist()
    assert back["acc_in"].tolist() == value["acc_in"].tolist()
    assert back["requant"] == value["requant"]


def test_pack_refuses_values_that_do_not_fit() -> None:
    layout = data.StructLayout({"a": signed(4), "b": data.ArrayLayout(unsigned(3), 2)})
    with pytest.raises(ValueError, match="does not fit"):
        pack(layout, {"a": 8})
    with pytest.raises(ValueError, match="do not fit"):
        pack(layout, {"b": [1, 8]})
    with pytest.raises(ValueError, match="2 elements"):
        pack(layout, {"b": [1]})
    back = unpack(layout, pack(layout, {"a": -8, "b": [7, 0]}))
    assert back["a"] == -8 and back["b"].tolist() == [7, 0]
