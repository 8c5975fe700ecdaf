"""pytest plugin: check a bench run's functional coverage and print a summary at the end.

A launcher calls :func:`check_coverage` after a bench run: it reads the coverage database
the bench exported into its run folder (``verif/coverage.py``), attaches a one-line
summary to the test report (``record_property``: user properties travel with the report,
also from pytest-xdist workers) and, when ``required``, fails naming every bin never hit,
the configuration and the seed. At the end of the session the summary lines of every
test are printed under a ``functional coverage`` banner.

Registered from ``tests/conftest.py`` by importing :func:`pytest_configure`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tinyattn.verif.coverage import COVERAGE_FILE, missing_bins, read_coverage, summary_line

#: Name of the user property that carries a run's summary line.
PROPERTY = "functional_coverage"


def check_coverage(
    record_property: Callable[[str, object], None],
    test_dir: Path,
    what: str,
    seed: int,
    *,
    required: bool = True,
) -> dict[str, dict[str, int]]:
    """Read ``test_dir``'s coverage, record its summary line, and (if ``required``)
    fail when a bin was never hit. ``what`` names the bench, configuration and simulator.
    """
    path = Path(test_dir) / COVERAGE_FILE
    assert path.exists(), f"{what} (seed {seed}): the bench wrote no {COVERAGE_FILE} in {test_dir}"
    cov = read_coverage(path)
    assert cov, f"{what} (seed {seed}): {path} holds no coverage items"
    missing = missing_bins(cov)
    note = "" if required else " [not required: a partial plan]"
    record_property(PROPERTY, f"{what}, seed {seed}: {summary_line(cov)}{note}")
    if required and missing:
        pytest.fail(
            f"{what} (seed {seed}): {len(missing)} reachable coverage bins never hit "
            f"(database {path}):\n  " + "\n  ".join(missing),
            pytrace=False,
        )
    return cov


class CoverageSummary:
    """Prints every test's coverage line at the end of the session."""

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        lines = set()
        for reports in terminalreporter.stats.values():
            for report in reports:
                for name, value in getattr(report, "user_properties", ()):
                    if name == PROPERTY and getattr(report, "when", "call") == "call":
                        lines.add(str(value))
        if lines:
            terminalreporter.write_sep("=", "functional coverage")
            for line in sorted(lines):
                terminalreporter.write_line(line)


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("tinyattn-coverage-summary"):
        config.pluginmanager.register(CoverageSummary(), "tinyattn-coverage-summary")
