"""The mutation runner: every mutant still applies, and a run tells a kill from a survivor."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from tinyattn.sim.mutants import (
    MUTANTS,
    Mutant,
    MutantError,
    apply_mutant,
    run_mutant,
    scratch_tree,
)
from tinyattn.sim.runner import simulator_missing

CHECKOUT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scratch_tree(CHECKOUT, tmp_path_factory.mktemp("mutants") / "src")


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_each_mutant_applies_once_and_changes_the_source(mutant: Mutant, tree: Path) -> None:
    source = CHECKOUT / mutant.path
    copy = next(tree.rglob(f"{Path(mutant.path).parent.name}/{source.name}"))
    original = copy.read_text()
    try:
        apply_mutant(mutant, tree, CHECKOUT)
        mutated = copy.read_text()
        assert mutated != original and mutant.mutated in mutated
    finally:
        copy.write_text(original)


def test_mutant_names_are_unique_and_cases_exist() -> None:
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)
    for m in MUTANTS:
        assert m.cases, m.name
        for case in m.cases:
            path, _, rest = case.partition("::")
            function = rest.split("[", 1)[0]
            text = (CHECKOUT / path).read_text()
            assert re.search(rf"^def {function}\(", text, re.M), (m.name, case)


def test_a_stale_snippet_is_named(tree: Path) -> None:
    stale = dataclasses.replace(MUTANTS[0], original="no such line in the design")
    with pytest.raises(MutantError, match=r"occurs 0 times in hw/compute_core\.py"):
        apply_mutant(stale, tree, CHECKOUT)


@pytest.mark.sim
def test_a_mutant_is_killed_and_a_harmless_change_survives(tmp_path: Path) -> None:
    """End to end on Icarus: the bench fails on a real bug and passes on a no-op edit."""
    missing = simulator_missing("icarus")
    if missing:
        pytest.skip(f"SIMULATOR MISSING: {missing}")
    rounding = next(m for m in MUTANTS if m.name == "requant-no-rounding")
    killed = run_mutant(rounding, CHECKOUT, tmp_path / "build")
    assert killed.outcome == "killed", killed
    assert "mismatch" in killed.message, killed
    harmless = dataclasses.replace(
        rounding,
        name="harmless",
        mutated="shifted = (s2_prod[i] + half) >> rq.shift  # same arithmetic",
    )
    survived = run_mutant(harmless, CHECKOUT, tmp_path / "build")
    assert survived.outcome == "survived", survived
