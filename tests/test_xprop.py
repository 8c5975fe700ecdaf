"""X propagation under Verilator: benches built with ``--x-assign unique --x-initial unique``.

Verilator is two-state. Its default here (``--x-assign fast --x-initial fast``) gives an
uninitialized flop or memory word, an explicit X and an out-of-range array read one fixed
value, which can hide a design that reads one before writing it. ``run_bench(...,
x_seed=N)`` builds with ``unique`` instead and runs with ``+verilator+rand+reset+2
+verilator+seed+N``: each such read returns a random value drawn from ``N``
(``sim/runner.py``). Icarus shows X natively; these tests are Verilator only.

- A positive control: a register that nothing initializes reads 0 in the default build
  and seed-dependent values in the X build, so the mode is really on.
- The engine (4x16) and the cluster (small: PicoRV32 included, whose registers have no
  reset) run their benches in that mode, at a fixed X seed and at a fresh random one.
  The seed is printed and named in any failure; ``TINYATTN_X_SEED=N`` repeats a run
  (it then replaces the random one).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tinyattn.config import ClusterConfig
from tinyattn.sim.cosim import PUBLIC
from tinyattn.sim.runner import X_SEED_ENV, failure_report, run_bench
from tinyattn.sim.verilog import build_root, file_lock
from tinyattn.verif.bench_configs import CLUSTER_CONFIGS, ENGINE_CONFIGS

# X randomization is a Verilator feature (Icarus is four-state: X stays X).
pytestmark = [pytest.mark.sim, pytest.mark.simulators("verilator")]

#: The small configurations of test_engine_rtl.py ("4x16") and test_cluster_rtl.py
#: ("small"): the same netlists (the X builds are their own simulator builds).
ENGINE_SMALL = ENGINE_CONFIGS["4x16"]
CLUSTER_SMALL = CLUSTER_CONFIGS["small"]

ENGINE_BENCH = "tinyattn.verif.benches.engine_bench"
CLUSTER_BENCH = "tinyattn.verif.benches.cluster_bench"
ENGINE_TESTS = ["gemm_random", "gemm_soft_clear", "attention_random", "mixed_queue"]
CLUSTER_TESTS = ["address_map", "firmware_jobs"]
#: The fixed X seed (any value >= 1; Verilator's 0 means "pick one").
FIXED_X_SEED = 12345


def _x_seed(kind: str) -> int:
    if kind == "fixed":
        return FIXED_X_SEED
    env = os.environ.get(X_SEED_ENV, "").strip()
    return int(env) if env else random.SystemRandom().randrange(1, 2**31)


PROBE_V = """\
module xprobe(input clk, input rst, output [31:0] q, output [31:0] m);
  reg [31:0] r;          // no initializer, no reset: an uninitialized flop
  reg [31:0] mem [0:3];  // an uninitialized memory
  assign q = r;
  assign m = mem[2];
endmodule
"""

PROBE_BENCH = """\
import json

import cocotb
from cocotb.triggers import Timer


@cocotb.test()
async def read_x(dut):
    await Timer(1, unit="ns")
    with open("probe.json", "w") as fh:
        json.dump({"q": int(dut.q.value), "m": int(dut.m.value)}, fh)
"""


def test_uninitialized_state_reads_random_values(
    sim: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe's Verilog lives in the build cache under its own hash, so a second run
    # reuses its two builds (the simulator build is keyed by its sources' folder).
    probe_dir = build_root() / f"xprobe-{hashlib.sha256(PROBE_V.encode()).hexdigest()[:12]}"
    probe_dir.mkdir(parents=True, exist_ok=True)
    probe_v = probe_dir / "xprobe.v"
    with file_lock(probe_dir / ".lock"):
        if not probe_v.exists() or probe_v.read_text() != PROBE_V:
            probe_v.write_text(PROBE_V)
    (tmp_path / "xprobe_bench.py").write_text(textwrap.dedent(PROBE_BENCH))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(X_SEED_ENV, raising=False)

    def probe(x_seed: int | None) -> dict[str, int]:
        result = run_bench(
            "engine",  # only the configuration JSON; the wrapper is the design
            ENGINE_SMALL,
            "xprobe_bench",
            sim,
            wrapper=("xprobe", [probe_v]),
            x_seed=x_seed,
        )
        assert result.ok, failure_report(result, 1)
        return json.loads((result.test_dir / "probe.json").read_text())

    assert probe(None) == {"q": 0, "m": 0}  # the default build: X reads as 0
    first, second, again = probe(1), probe(2), probe(1)
    assert first == again  # one seed, one set of values: a failure can be repeated
    assert first != second  # another seed draws other values
    assert any(v != 0 for v in (*first.values(), *second.values()))


def _bench_with_random_x(
    sim: str,
    kind: str,
    seed: int,
    what: str,
    *,
    top: str,
    cfg: ClusterConfig,
    bench: str,
    tests: list[str],
    env: dict[str, str],
    **options: Any,
) -> None:
    """Run ``tests`` of ``bench`` on ``top`` with X randomized (``kind``'s seed): all pass."""
    x_seed = _x_seed(kind)
    print(f"{what}, X randomization seed {x_seed} (repeat: {X_SEED_ENV}={x_seed})")
    result = run_bench(
        top, cfg, bench, sim, seed=seed, testcase=tests, env=env, x_seed=x_seed, **options
    )
    assert result.x_seed == x_seed
    assert result.ok, failure_report(result, seed)
    assert set(result.passed) == set(tests), result.passed


@pytest.mark.parametrize("kind", ["fixed", "random"])
def test_engine_with_random_x(sim: str, kind: str, seed: int) -> None:
    _bench_with_random_x(
        sim, kind, seed, "engine 4x16",
        top="engine", cfg=ENGINE_SMALL, bench=ENGINE_BENCH, tests=ENGINE_TESTS,
        env={"TINYATTN_JOBS": "8"},
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["fixed", "random"])
def test_cluster_with_random_x(sim: str, kind: str, seed: int) -> None:
    _bench_with_random_x(
        sim, kind, seed, "cluster small",
        top="cluster", cfg=CLUSTER_SMALL, bench=CLUSTER_BENCH, tests=CLUSTER_TESTS,
        env={"TINYATTN_ROUNDS": "3"}, public=PUBLIC,
    )  # fmt: skip
