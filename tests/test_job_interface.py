"""The job interface: plain Python for the software side, its Amaranth views for the RTL."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from amaranth.hdl import unsigned

from tinyattn.config import ClusterConfig, EngineConfig
from tinyattn.hw.job import (
    HEAD_RECORD_BYTES,
    HEAD_RECORD_FIELDS,
    PARAM_RECORD_BYTES,
    PARAM_RECORD_FIELDS,
    Op,
    job_fields,
    pack_head_params,
    pack_params,
    unpack_head_params,
    unpack_params,
)
from tinyattn.hw.job_layout import JobOp, head_record_layout, job_layout, param_record_layout


def test_op_and_its_hdl_enum_agree() -> None:
    assert {op.name: op.value for op in Op} == {op.name: op.value for op in JobOp}
    assert JobOp.as_shape() == unsigned(job_fields(ClusterConfig())["op"])


def test_job_layout_is_built_from_job_fields() -> None:
    for cfg in (ClusterConfig(), ClusterConfig(engine=EngineConfig(max_dim=4096))):
        layout = job_layout(cfg)
        fields = job_fields(cfg)
        assert list(layout.members) == list(fields)
        for name, width in fields.items():
            shape = layout.members[name]
            if isinstance(width, dict):
                assert {k: v.width for k, v in shape.members.items()} == width
            else:
                assert shape == unsigned(width)


def test_param_record_layout_matches_the_record() -> None:
    layout = param_record_layout()
    assert layout.size == PARAM_RECORD_BYTES * 8
    for name, (offset, width, signed) in PARAM_RECORD_FIELDS.items():
        field = layout[name]
        assert (field.offset, field.shape.width, field.shape.signed) == (offset, width, signed)


def test_pack_unpack_and_the_layout_agree() -> None:
    rng = np.random.default_rng(0)
    n = 9
    want = {
        "bias": rng.integers(-(1 << 31), 1 << 31, n),
        "mult": rng.integers(0, 256, n),
        "shift": rng.integers(0, 32, n),
        "add": rng.integers(-128, 128, n),
        "gamma": rng.integers(-(1 << 15), 1 << 15, n),
        "beta": rng.integers(-(1 << 31), 1 << 31, n),
    }
    raw = pack_params(**want)
    assert len(raw) == n * PARAM_RECORD_BYTES
    got = unpack_params(raw, n)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    # The RTL's view of the same bytes.
    layout = param_record_layout()
    for i in range(n):
        record = layout.from_bits(int.from_bytes(raw[16 * i : 16 * (i + 1)], "little"))
        for name in want:
            assert getattr(record, name) == want[name][i], (i, name)


def test_head_record_packs_as_its_layout_on_the_parameter_records_bits() -> None:
    """The per-head table: pack/unpack round trip, the RTL's view of the same bytes, and
    every field on bits the parameter record uses (the engine keeps it in that file)."""
    layout = head_record_layout()
    assert layout.size == HEAD_RECORD_BYTES * 8 == PARAM_RECORD_BYTES * 8
    used = set()
    for offset, width, _ in PARAM_RECORD_FIELDS.values():
        used |= set(range(offset, offset + width))
    for name, (offset, width, signed) in HEAD_RECORD_FIELDS.items():
        field = layout[name]
        assert (field.offset, field.shape.width, field.shape.signed) == (offset, width, signed)
        assert set(range(offset, offset + width)) <= used, name
    rng = np.random.default_rng(1)
    heads = 5

    def requant() -> tuple[int, int, int]:
        return int(rng.integers(0, 256)), int(rng.integers(0, 32)), int(rng.integers(-128, 128))

    qk = [requant() for _ in range(heads)]
    av = [requant() for _ in range(heads)]
    raw = pack_head_params(qk, av)
    assert len(raw) == heads * HEAD_RECORD_BYTES
    assert unpack_head_params(raw, heads) == list(zip(qk, av, strict=True))
    for h in range(heads):
        record = layout.from_bits(int.from_bytes(raw[16 * h : 16 * (h + 1)], "little"))
        got = [getattr(record, f"{w}_{p}") for w in ("qk", "av") for p in ("mult", "shift", "add")]
        assert got == [*qk[h], *av[h]], h


def test_software_side_imports_without_amaranth() -> None:
    """The golden job model and the firmware generator do not pull in the HDL."""
    code = (
        "import sys\n"
        "import tinyattn.hw.job, tinyattn.verif.engine_model, tinyattn.sw.lowering\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'amaranth')\n"
        "assert not loaded, loaded\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
