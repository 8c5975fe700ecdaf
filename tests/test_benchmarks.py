"""Benchmark plumbing (no simulation): bound, table, JSON records, the registry of
``tinyattn bench`` names, the report and the yosys run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyattn.config import ClusterConfig, EngineConfig
from tinyattn.sim.benchmarks import BENCHMARKS, selected
from tinyattn.sim.benchmarks.engine import ENGINE_CASES, attention_bound
from tinyattn.sim.benchmarks.output import BenchmarkReport, Column, format_table, write_json


def test_attention_bound() -> None:
    cfg = ClusterConfig()
    # Split-lane QK beats (qk_split 2 by default): two keys a unit per beat at k <= 32.
    assert attention_bound(cfg, 32) == 1.0
    assert abs(attention_bound(cfg, 16) - 2 / 3) < 1e-12  # 2 x 16 of the 64 lanes
    assert attention_bound(cfg, 64) == 1.0
    assert abs(attention_bound(cfg, 36) - 2 / (1 + 64 / 36)) < 1e-12
    # One key a beat: QKᵀ uses k of vec_len lanes.
    off = ClusterConfig(engine=EngineConfig(qk_split=1))
    assert abs(attention_bound(off, 32) - 2 / 3) < 1e-12
    four = ClusterConfig(engine=EngineConfig(qk_split=4))
    assert attention_bound(four, 16) == 1.0
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
        "attention S=128 H=4 D=32, one job, per-head parameters",
        "attention S=128 H=4 D=16",
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
    table = format_table(records, [Column("bound", fraction=True)])
    lines = table.splitlines()
    assert lines[0].split() == ["name", "cycles", "ideal_cycles", "utilization", "bound"]
    assert "97.5%" in lines[2] and "66.7%" in lines[3]
    out = tmp_path / "b.json"
    write_json(out, records)
    back = json.loads(out.read_text())
    assert back == records
    assert all({"name", "cycles", "ideal_cycles", "utilization"} <= set(r) for r in back)


def test_columns_print_as_declared_not_by_value() -> None:
    """A float column prints as a percentage only when declared a fraction: a mean wait
    of 0.603 cycles is "0.6", a bound of 0.5 is "50.0%", whatever the values' sizes."""
    records = [
        {"name": "narrow", "cycles": 2000, "ideal_cycles": 2000, "utilization": 1.0,
         "mean_wait": 0.603, "max_wait": 3, "bound": 0.5},
        {"name": "single bank", "cycles": 2000, "ideal_cycles": 500, "utilization": 0.25,
         "mean_wait": 7.25, "max_wait": 15, "bound": 1.0},
    ]  # fmt: skip
    lines = format_table(
        records, [Column("mean_wait"), Column("max_wait"), Column("bound", fraction=True)]
    ).splitlines()
    assert lines[2].split() == ["narrow", "2000", "2000", "100.0%", "0.6", "3", "50.0%"]
    assert lines[3].split() == ["single", "bank", "2000", "500", "25.0%", "7.2", "15", "100.0%"]
    with pytest.raises(TypeError, match=r"extra column 'mean_wait' is not a Column: .*fraction"):
        format_table(records, ["mean_wait"])  # type: ignore[list-item]


def test_interconnect_and_cluster_tables_print_waits_in_cycles(monkeypatch, capsys) -> None:
    """The benchmarks declare their columns: the interconnect's waits are cycles, the
    cluster's background load a fraction (records as the benches return them)."""
    from tinyattn.sim.benchmarks import cluster, interconnect

    waits = {"name": "perf_uniform", "cycles": 2000, "ideal_cycles": 1800,
             "utilization": 0.9, "mean_wait": 0.603, "max_wait": 4}  # fmt: skip
    loaded = {"name": "gemm bg25%", "cycles": 9000, "ideal_cycles": 8192,
              "utilization": 0.9102, "background": 0.25}  # fmt: skip
    monkeypatch.setattr(interconnect, "run_interconnect_bench", lambda cfg, sim: [dict(waits)])
    monkeypatch.setattr(cluster, "run_cluster_bench", lambda cfg, sim: [dict(loaded)])
    report = BenchmarkReport(synthesize=False)
    interconnect.report_interconnect(ClusterConfig(), "verilator", report)
    cluster.report_cluster(ClusterConfig(), "verilator", report)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["perf_uniform", "2000", "1800", "90.0%", "0.6", "4"] in rows
    assert ["gemm", "bg25%", "9000", "8192", "91.0%", "25.0%"] in rows
    assert not any("60.3%" in row for row in rows)


def test_registry_names_resolve_to_runners() -> None:
    """Every name of ``tinyattn bench`` resolves to runner functions ``(cfg, sim, report)``;
    ``all`` is every benchmark but the 2-layer model one, in the registry's order."""
    import inspect

    assert list(BENCHMARKS) == ["engine", "interconnect", "firmware", "model", "mobilebert"]
    assert [b.name for b in selected("all")] == ["engine", "interconnect", "firmware", "mobilebert"]
    assert [b.name for b in selected("model")] == ["model"]
    for benchmark in BENCHMARKS.values():
        runners = benchmark.runners()
        assert len(runners) == len(benchmark.runner_paths)
        for runner in runners:
            assert list(inspect.signature(runner).parameters) == ["cfg", "sim", "report"]
    with pytest.raises(KeyError, match="unknown benchmark 'gpu': choose from engine, "):
        selected("gpu")


def test_report_groups_records_and_finishes_background_work(capsys) -> None:
    report = BenchmarkReport()
    done: list[str] = []
    report.when_finished(lambda: done.append("first"), cancel=lambda: done.append("no"))
    report.table("engine", [{"name": "a", "cycles": 10, "ideal_cycles": 8, "utilization": 0.8}])
    report.add("model", [{"name": "b", "cycles": 5}])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "cycles", "ideal_cycles", "utilization"]
    assert out[2].split() == ["a", "10", "8", "80.0%"] and len(out) == 3  # add() prints nothing
    assert [r["group"] for r in report.records] == ["engine", "model"]
    assert [r["name"] for r in report.group("model")] == ["b"]
    report.finish()
    report.abort()  # nothing left to cancel
    assert done == ["first"]
    aborted = BenchmarkReport()
    aborted.when_finished(lambda: done.append("never"), cancel=lambda: done.append("cancelled"))
    aborted.abort()
    aborted.finish()
    assert done == ["first", "cancelled"]


FAKE_YOSYS = """#!/bin/sh
# Stands in for yosys: counts its runs, writes a log like `synth; stat` would.
echo run >> "{runs}"
while [ "$1" != "-l" ]; do shift; done
log="$2"
if [ -n "{fail}" ]; then echo "ERROR: {fail}" >&2; exit 1; fi
printf '   Number of cells:               7\\n' > "$log"
printf '=== design hierarchy ===\\n   Number of cells:            {cells}\\n' >> "$log"
"""


def _fake_yosys(tmp_path: Path, monkeypatch, cells: int = 0, fail: str = "") -> Path:
    from tinyattn.sim.benchmarks import engine

    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    runs = tmp_path / "runs"
    script = bindir / "yosys"
    script.write_text(FAKE_YOSYS.format(runs=runs, cells=cells, fail=fail))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    verilog = tmp_path / "top" / "tinyattn_engine.v"
    verilog.parent.mkdir(exist_ok=True)
    verilog.write_text("module tinyattn_engine; endmodule\n")
    monkeypatch.setattr(engine, "verilog_for", lambda top, cfg: verilog)
    return runs


def test_synthesis_counts_the_top_and_reuses_its_log(tmp_path: Path, monkeypatch) -> None:
    from tinyattn.sim.benchmarks.engine import Synthesis, cells_per_mac

    runs = _fake_yosys(tmp_path, monkeypatch, cells=716_800)
    cfg = ClusterConfig()
    area = cells_per_mac(cfg, "engine")
    assert area == {
        "top": "engine",
        "cells": 716_800,
        "macs_per_cycle": 1024,
        "cells_per_mac": 700.0,
    }
    assert Synthesis(cfg, "engine").result() == area
    assert runs.read_text().count("run") == 1  # the second call read the finished log


def test_synthesis_failure_names_the_top_and_the_error(tmp_path: Path, monkeypatch) -> None:
    from tinyattn.sim.benchmarks.engine import Synthesis

    _fake_yosys(tmp_path, monkeypatch, fail="syntax error near line 3")
    with pytest.raises(RuntimeError, match=r"yosys failed on engine.*syntax error near line 3"):
        Synthesis(ClusterConfig(), "engine").result()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="yosys is not installed"):
        Synthesis(ClusterConfig(), "engine")
