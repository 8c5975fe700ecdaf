"""Per-configuration simulator plans for the bench launchers."""

from __future__ import annotations

import pytest

from tinyattn.sim.runner import selected_simulators


def plan_cases(plan: dict[tuple[str, str], object]) -> list:
    """``pytest.param(name, sim)`` for each ``(configuration, simulator)`` key of a bench
    launcher's plan whose simulator ``SIM`` selects, with ids ``<sim>-<name>``: for
    ``@pytest.mark.parametrize(("name", "sim"), plan_cases(PLAN), indirect=["sim"])``.
    A pair missing from the plan does not run (the launcher says why)."""
    sims = selected_simulators()
    return [
        pytest.param(name, sim, id=f"{sim}-{name}")
        for sim in sims
        for name, plan_sim in plan
        if plan_sim == sim
    ]
