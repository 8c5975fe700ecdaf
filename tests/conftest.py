"""pytest set-up: simulator selection (``SIM=icarus|verilator|all``, narrowed per test by
``@pytest.mark.simulators(...)``), seeds, what a missing tool does, Hypothesis profiles,
per-test timeouts and the run order (the long simulations first).

**Missing tools.** On a developer machine a missing simulator or compiler is a loud skip,
listed again at the end of the run under a red banner. When ``CI`` is set (any value but
``""``, ``0``, ``false``, ``no``) the same case **fails**, naming what is missing: a CI run
that skipped the simulations would otherwise look green. A skip counts as "missing tool"
when its reason says so (``MISSING``, ``missing`` or ``not installed``), whichever test file
raised it.

**Hypothesis.** Two profiles: ``dev`` (the default: ``deadline=None``, since a slow
machine must not turn a property into a failure) and ``ci`` (loaded when ``CI`` is set:
also ``derandomize=True`` and no example database, so a CI run draws the same examples
every time). ``HYPOTHESIS_PROFILE`` picks one explicitly.

**Timeouts** (pytest-timeout, ``signal`` method, so a hung simulator is killed with its
test and the worker lives on). The budget is per test, setup included, and sized to the
slowest case of each kind measured (``docs/verification.md``, "CI mode, timeouts and
Hypothesis"): :data:`TIMEOUTS`. A test's own ``@pytest.mark.timeout`` wins;
``TINYATTN_TIMEOUT_SCALE`` multiplies all of them (a slower machine), and an explicit
``--timeout=N`` (or ``PYTEST_TIMEOUT``) replaces them all; ``--timeout=0`` turns them off
(a debugger session).
"""

from __future__ import annotations

import os

# One BLAS thread per process, set before NumPy loads its BLAS. `make test` runs two xdist
# workers and their simulators on two cores; OpenBLAS's own threads on top oversubscribe
# them (the stress-model tests ran 2.4 times slower). An explicit setting wins.
for _blas_threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas_threads, "1")

import re

import numpy as np
import pytest
from coverage_summary import pytest_configure  # noqa: F401 (functional coverage summary)
from hypothesis import settings as hypothesis_settings
from models import FIXTURE, calibration_ids

from tinyattn.sim.runner import selected_simulators, simulator_missing
from tinyattn.sw.mobilebert import MobileBert

_SKIPPED_SIMS: dict[str, str] = {}


def in_ci() -> bool:
    """True when the ``CI`` environment variable is set to a true-ish value."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# ---------------------------------------------------------------------------- Hypothesis

hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.register_profile(
    "ci", deadline=None, derandomize=True, database=None, print_blob=True
)
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if in_ci() else "dev")
)


# ---------------------------------------------------------------------------- simulators


def _parametrizes_sim(metafunc: pytest.Metafunc) -> bool:
    """True when the test's own ``parametrize`` names ``sim`` (a per-configuration plan)."""
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if "sim" in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim" not in metafunc.fixturenames or _parametrizes_sim(metafunc):
        return
    sims = selected_simulators()
    # `@pytest.mark.simulators("verilator")`: the test runs under those only (its docstring
    # or module says why); under SIM=icarus it is then an empty parameter set, a skip.
    only = metafunc.definition.get_closest_marker("simulators")
    if only is not None:
        sims = [s for s in sims if s in only.args]
    # indirect: the value goes through the `sim` fixture below, which skips (or,
    # under CI, fails) a missing simulator; a direct parametrization would bypass it.
    metafunc.parametrize("sim", sims, indirect=True)


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    missing = simulator_missing(name)
    if missing:
        _SKIPPED_SIMS[name] = missing
        pytest.skip(f"SIMULATOR MISSING: {missing}")
    return name


@pytest.fixture
def seed() -> int:
    """``TINYATTN_SEED`` or 1; a failing bench names it so the run can be repeated."""
    return int(os.environ.get("TINYATTN_SEED", "1"))


# ---------------------------------------------------------------------------- missing tools

#: A skip reason that says a tool or package is missing.
_MISSING_TOOL = re.compile(r"MISSING|missing|not installed")


def _skip_reason(report: pytest.TestReport) -> str | None:
    if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2])
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    reason = _skip_reason(report)
    if reason is None or not in_ci() or not _MISSING_TOOL.search(reason):
        return
    if hasattr(report, "wasxfail"):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"CI is set, so a missing tool fails the run instead of skipping it.\n"
        f"What is missing: {reason.removeprefix('Skipped: ')}"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    notes = sorted(
        {
            reason
            for r in terminalreporter.stats.get("skipped", [])
            if (reason := _skip_reason(r)) is not None and _MISSING_TOOL.search(reason)
        }
    )
    if notes:
        terminalreporter.write_sep("!", "CASES SKIPPED: TOOLS MISSING", red=True, bold=True)
        for note in notes:
            terminalreporter.write_line(note, red=True, bold=True)
        terminalreporter.write_line(
            "(with CI set these cases fail instead of skipping)", red=True, bold=True
        )


# ---------------------------------------------------------------------------- timeouts and order

#: Per-test budgets in seconds, by kind: about 3x to 15x the slowest case measured, on a
#: machine loaded far beyond `make test -n 2` (docs/verification.md, "CI mode, ...").
TIMEOUTS = {
    # Python only (models, tiler, quantizer, C compiles, Verilator lint): slowest 41 s.
    "python": 600,
    # A bench under Icarus: slowest single run seen 663 s (8x32 engine, load 15).
    "icarus": 2400,
    # A bench under Verilator: a cold build of the default cluster (54 s quiet, 308 s
    # loaded) plus its run (229 s loaded), and a worker may first wait for the other
    # worker's build of the same netlist.
    "verilator": 1800,
    # `make test-slow`: the large sweeps and the 24-layer model.
    "slow": 7200,
}


def _timeout_kind(item: pytest.Item) -> str:
    if item.get_closest_marker("slow"):
        return "slow"
    params = getattr(item, "callspec", None)
    sim = params.params.get("sim") if params is not None else None
    if sim in TIMEOUTS:
        return sim
    if item.get_closest_marker("sim"):
        return "verilator"  # a simulator test without the fixture: Verilator, the slower build
    return "python"


#: Test ids naming a configuration whose simulation takes a minute or more.
_LARGE_CONFIG = re.compile(r"default|\b16x64\b|\b8x32\b")


def _cost_rank(item: pytest.Item) -> int:
    """0: a simulation of a large configuration, 1: another simulation, 2: Python only."""
    if item.get_closest_marker("sim") is None:
        return 2
    return 0 if _LARGE_CONFIG.search(item.nodeid) else 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Longest first: the xdist workers (`make test` adds --dist worksteal) then end
    # together on the many short cases instead of one waiting for a late simulation.
    items.sort(key=_cost_rank)  # stable: file order within a rank
    if config.getoption("timeout", None) is not None or os.environ.get("PYTEST_TIMEOUT"):
        return  # an explicit --timeout (0: none) or PYTEST_TIMEOUT applies to every test
    scale = float(os.environ.get("TINYATTN_TIMEOUT_SCALE", "1"))
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIMEOUTS[_timeout_kind(item)] * scale))


# -- the MobileBERT checkpoint fixture shared by the model tests (helpers: tests/models.py) --


@pytest.fixture(scope="module")
def model() -> MobileBert:
    """The 2-layer MobileBERT checkpoint fixture, in float."""
    return MobileBert.from_pretrained(FIXTURE)


@pytest.fixture(scope="module")
def calib_ids() -> np.ndarray:
    """The fixture's calibration batch (:func:`models.calibration_ids`)."""
    return calibration_ids()
