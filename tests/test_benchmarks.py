"""Benchmark plumbing (no simulation): bound, table and JSON records."""

from __future__ import annotations

import json
from pathlib import Path

from tinyattn.config import ClusterConfig, EngineConfig
from tinyattn.sim.benchmarks import ENGINE_CASES, attention_bound, format_table, write_json


def test_attention_bound() -> None:
    cfg = ClusterConfig()
    assert abs(attention_bound(cfg, 32) - 2 / 3) < 1e-12
    assert attention_bound(cfg, 64) == 1.0
    small = ClusterConfig(
        engine=EngineConfig(n_pe=4, vec_len=16, acc_bits=24, tile_m=8, max_seq=64)
    )
    assert attention_bound(small, 16) == 1.0


def test_cases_are_the_issue_workloads() -> None:
    names = [c[0] for c in ENGINE_CASES]
    assert names == [
        "gemm 128x512x128",
        "gemm 128x128x512",
        "attention S=128 H=4 D=32",
        "attention S=64 H=4 D=32",
    ]
    # GEMM names read M x K x N with Y (M, N): the case tuples are (m, n, k).
    assert ENGINE_CASES[0][2:5] == (128, 128, 512)
    assert ENGINE_CASES[1][2:5] == (128, 512, 128)


def test_table_and_json(tmp_path: Path) -> None:
    records = [
        {"name": "gemm a", "cycles": 8400, "ideal_cycles": 8192, "utilization": 0.9752},
        {"name": "attention b", "cycles": 2000, "ideal_cycles": 1024, "utilization": 0.512,
         "bound": 0.6667},
    ]  # fmt: skip
    table = format_table(records, ["bound"])
    lines = table.splitlines()
    assert lines[0].split() == ["name", "cycles", "ideal_cycles", "utilization", "bound"]
    assert "97.5%" in lines[2] and "66.7%" in lines[3]
    out = tmp_path / "b.json"
    write_json(out, records)
    back = json.loads(out.read_text())
    assert back == records
    assert all({"name", "cycles", "ideal_cycles", "utilization"} <= set(r) for r in back)
