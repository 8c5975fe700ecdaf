"""Per-configuration simulator plans for the bench launchers."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from tinyattn.sim.runner import selected_simulators


def plan_cases(plan: Iterable[tuple[str, str]]) -> list:
    """``pytest.param(name, sim)`` for each ``(configuration, simulator)`` pair of a bench
    launcher's plan (a dict keyed by the pairs, or a sequence of them) whose simulator
    ``SIM`` selects, with ids ``<sim>-<name>``: for
    ``@pytest.mark.parametrize(("name", "sim"), plan_cases(PLAN), indirect=["sim"])``.
    A pair missing from the plan does not run (the launcher says why)."""
    sims = selected_simulators()
    pairs = list(plan)
    return [
        pytest.param(name, sim, id=f"{sim}-{name}")
        for sim in sims
        for name, plan_sim in pairs
        if plan_sim == sim
    ]
