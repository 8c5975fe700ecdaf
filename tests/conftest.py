"""pytest set-up: simulator selection (``SIM=icarus|verilator|all``) and seeds."""

from __future__ import annotations

import os

import pytest

from tinyattn.sim.runner import selected_simulators, simulator_missing

_SKIPPED_SIMS: dict[str, str] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim" in metafunc.fixturenames:
        metafunc.parametrize("sim", selected_simulators())


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = {
        r.longrepr[2]
        for r in terminalreporter.stats.get("skipped", [])
        if isinstance(r.longrepr, tuple)
    }
    notes = sorted(s for s in skipped if "SIMULATOR MISSING" in s)
    if notes:
        terminalreporter.write_sep("!", "SIMULATOR CASES SKIPPED", red=True, bold=True)
        for note in notes:
            terminalreporter.write_line(note, red=True, bold=True)
