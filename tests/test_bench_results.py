"""How a cocotb run's results become a pytest outcome: a skipped cocotb test is not a pass.

cocotb writes an xUnit file with a ``<skipped>`` element for a test that skipped (a
``skip=True`` decorator, or ``pytest.skip`` inside the test). ``run_bench`` reads it into
``BenchResult``: that test is ``False`` in ``passed`` and named in ``skipped``, ``ok`` is
false, and ``failure_report`` says it skipped, so a launcher's ``assert result.ok`` fails.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.sim.runner import BenchResult, _read_results, failure_report, run_bench

#: test_regblock_rtl.py's small configuration: the same netlist, so the same builds.
SMALL = ClusterConfig(
    engine=EngineConfig(n_pe=4, vec_len=16, acc_bits=24, tile_m=8, max_seq=64, job_queue_depth=3),
    memory=MemoryConfig(n_banks=8, bank_words=512),
    dma=DmaConfig(dma_bits=32, queue_depth=3, l2_addr_bits=20),
)

XUNIT = """\
<testsuites name="results">
  <testsuite name="all" package="all" tests="4" failures="1" errors="1" skipped="1">
    <testcase name="good" classname="m" time="0.1"><properties/></testcase>
    <testcase name="bad" classname="m" time="0.1"><failure message="x"/><properties/></testcase>
    <testcase name="died" classname="m" time="0.1"><error message="y"/><properties/></testcase>
    <testcase name="skip" classname="m" time="0.0">
      <skipped message="Test was skipped"/><properties/>
    </testcase>
  </testsuite>
</testsuites>
"""


def test_xunit_skipped_is_not_passed(tmp_path: Path) -> None:
    path = tmp_path / "results.xml"
    path.write_text(XUNIT)
    passed, skipped = _read_results(path)
    assert passed == {"good": True, "bad": False, "died": False, "skip": False}
    assert skipped == ("skip",)


def test_a_skip_alone_makes_the_result_not_ok(tmp_path: Path) -> None:
    only_skip = BenchResult({"a": True, "b": False}, tmp_path, {}, skipped=("b",))
    assert not only_skip.ok
    report = failure_report(only_skip, seed=7)
    assert "skipped inside the bench (not a pass): b" in report and "seed 7" in report
    assert "failed:" not in report  # nothing failed: the report does not pretend it did
    assert BenchResult({"a": True}, tmp_path, {}).ok
    assert not BenchResult({}, tmp_path, {}).ok  # no test ran at all


SKIPPING_BENCH = """
import cocotb
import pytest


@cocotb.test()
async def runs(dut):
    pass


@cocotb.test(skip=True)
async def skip_decorated(dut):
    raise AssertionError("never runs")


@cocotb.test()
async def skip_raised(dut):
    pytest.skip("this configuration cannot run it")
"""


@pytest.mark.sim
def test_a_cocotb_skip_fails_the_launcher(
    sim: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end on the small register block: both ways of skipping inside cocotb."""
    (tmp_path / "skipping_bench.py").write_text(textwrap.dedent(SKIPPING_BENCH))
    monkeypatch.syspath_prepend(str(tmp_path))  # the runner passes sys.path to the simulator
    # The whole module: a test the launcher names explicitly runs even with skip=True.
    result = run_bench("regblock", SMALL, "skipping_bench", sim)
    assert result.passed == {"runs": True, "skip_decorated": False, "skip_raised": False}
    assert set(result.skipped) == {"skip_decorated", "skip_raised"}
    assert not result.ok
    assert "skip_decorated, skip_raised" in failure_report(result, 1)
