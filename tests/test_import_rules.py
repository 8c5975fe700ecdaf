"""Import rules between the packages, checked on the source with ``ast`` (nothing is
imported), but for the Amaranth-free half of ``sw/``, which is imported in a subprocess.

- ``hw/`` imports only ``tinyattn.config``, other ``hw/`` modules, the standard library and
  the third-party packages listed in :data:`HW_THIRD_PARTY`. The netlist cache of
  ``sim/verilog.py`` relies on this: its source hash covers a top's ``hw/`` modules (found by
  following their imports), ``tinyattn/config.py`` and the Amaranth version, nothing else.
  An ``hw/`` module that imported ``tinyattn.sw`` (say) could change a netlist without
  changing its build folder's name, and a stale netlist would be simulated.
- ``tinyattn/config.py`` imports no other tinyattn module (same reason: its text is hashed
  alone).
- Every ``hw/`` import of another ``hw/`` module is one that the source hash follows
  (``sim/verilog.py::_hw_imports``): ``from . import x`` or ``import tinyattn.hw.x`` alone
  would escape it.
- ``verif/golden.py``, the arithmetic contract, imports only NumPy and the standard library.
- ``sw/`` never imports ``tinyattn.sim`` (the driver generator must not need the simulator
  harness; the build cache it shares is :mod:`tinyattn.cache`).
- The modules of ``sw/`` that plan a deployment (lowering, memory plan, tiler, C tables,
  quantization, ...) import no Amaranth, directly or through ``hw/``: they take the DMA's
  codes from ``hw/dma_codes.py`` and the job format from ``hw/job.py``, both plain Python.
  Only the modules in :data:`SW_REGISTER_MAP_USERS` may load it. Checked by importing
  them in a fresh interpreter, so an import hidden in another module counts too.
- ``sim/benchmarks/__init__.py`` (the registry of ``tinyattn bench`` names, which
  ``tinyattn/cli.py`` imports at startup) imports only the standard library when it runs;
  the benchmark modules, and through them the simulator harness, load when a benchmark
  runs. Imports under ``if TYPE_CHECKING:`` are exempt from this rule only.

Imports inside functions count as well as module-level ones.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tinyattn.sim import verilog

ROOT = Path(__file__).resolve().parent.parent
HW = ROOT / "hw"

#: Third-party top-level packages ``hw/`` may import, and why each is safe for the cache.
HW_THIRD_PARTY = {
    "amaranth": "its version is part of the source hash",
    "numpy": "hw/job.py packs job records for the benches and firmware; no netlist uses it",
    "pythondata_cpu_picorv32": "only to locate picorv32.v, whose bytes are in the source hash",
}

#: The ``sw/`` modules that may load Amaranth, and why: the register map
#: (``hw/cluster_registers.py``) binds its fields to the Amaranth signatures of the units'
#: control ports, and the sequencer's command codes are an Amaranth enum. Every other
#: ``sw/`` module must import without Amaranth.
SW_REGISTER_MAP_USERS = {
    "command_list": "encodes register writes and sequencer commands (register map, SeqOp)",
    "firmware": "emits the register header of the firmware build (register map)",
    "regmap_emit": "generates the register docs, header and SystemRDL (register map)",
    "stream": "encodes the engine ops as register accesses (register map, SeqOp)",
    "placement": "cuts loads around stores with sw/stream.py's split_around",
    "schedule": "builds the command stream (sw/stream.py)",
    "deploy_flow": "builds the firmware (sw/firmware.py) and the schedule",
}

#: Source folders and the packages they are (pyproject's package-dir mapping).
FOLDERS = {"hw": "tinyattn.hw", "sw": "tinyattn.sw", "verif": "tinyattn.verif",
           "sim": "tinyattn.sim", "tinyattn": "tinyattn"}  # fmt: skip
PACKAGES = set(FOLDERS.values())


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``; relative ones resolved
    against ``path``'s package (``hw/x.py``'s ``from .y import z`` is ``tinyattn.hw.y``)."""
    folders = path.relative_to(ROOT).parts[:-1]  # sim/benchmarks/x.py: tinyattn.sim.benchmarks
    package = ".".join([FOLDERS[folders[0]], *folders[1:]])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module in PACKAGES:  # from . import x / from tinyattn.hw import x: modules
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return found


def _py_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names or module == "__future__"


def test_the_rules_see_every_package() -> None:
    """The walks below find the files they are meant to check (a moved folder fails here)."""
    assert len(_py_files(HW)) >= 10
    assert len(_py_files(ROOT / "sw")) >= 5
    assert (ROOT / "verif" / "golden.py").is_file()


@pytest.mark.parametrize("path", _py_files(HW), ids=lambda p: p.name)
def test_hw_imports_only_config_hw_and_allowed_packages(path: Path) -> None:
    bad = []
    for line, module in _imports(path):
        top = module.split(".")[0]
        if module == "tinyattn.config" or module.startswith("tinyattn.hw"):
            continue
        if _is_stdlib(module) or top in HW_THIRD_PARTY:
            continue
        bad.append(f"{path.name}:{line}: import of {module}")
    assert not bad, (
        "hw/ may import only tinyattn.config, hw/, the standard library and "
        f"{sorted(HW_THIRD_PARTY)} (the netlist cache in sim/verilog.py hashes no other "
        "source):\n" + "\n".join(bad)
    )


def test_config_imports_no_other_tinyattn_module() -> None:
    path = ROOT / "tinyattn" / "config.py"
    bad = [f"config.py:{ln}: {m}" for ln, m in _imports(path) if m.split(".")[0] == "tinyattn"]
    assert not bad, "tinyattn/config.py is hashed alone; it must not import:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", _py_files(HW), ids=lambda p: p.name)
def test_the_source_hash_follows_every_hw_import(path: Path) -> None:
    """The modules ``sim/verilog.py`` follows from ``path`` are all the ``hw/`` modules it
    imports, in whatever form (a module that a form hides from the hash would not rebuild
    the netlists that depend on it)."""
    imported = {
        module.split(".")[2]
        for _, module in _imports(path)
        if module.startswith("tinyattn.hw.") and (HW / f"{module.split('.')[2]}.py").exists()
    }
    followed = {name for name in verilog._hw_imports(path) if (HW / f"{name}.py").exists()}
    assert imported == followed, (
        f"hw/{path.name} imports {sorted(imported)}; the source hash follows {sorted(followed)}"
    )


def test_golden_imports_only_numpy() -> None:
    path = ROOT / "verif" / "golden.py"
    bad = [
        f"golden.py:{line}: {module}"
        for line, module in _imports(path)
        if not (_is_stdlib(module) or module.split(".")[0] == "numpy")
    ]
    assert not bad, "verif/golden.py may import only NumPy and the standard library:\n" + (
        "\n".join(bad)
    )


def test_sw_never_imports_sim() -> None:
    found = {
        (path.name, module): line
        for path in _py_files(ROOT / "sw")
        for line, module in _imports(path)
        if module == "tinyattn.sim" or module.startswith("tinyattn.sim.")
    }
    broken = sorted(f"sw/{f}:{line}: {m}" for (f, m), line in found.items())
    assert not broken, "sw/ must not import tinyattn.sim:\n" + "\n".join(broken)


#: Imports each module named in argv in turn, in one fresh interpreter, and prints, as
#: JSON, the first one after which ``amaranth`` is loaded (or null) and the ``hw/``
#: modules loaded by then.
_IMPORT_PROBE = """
import importlib, json, sys
first = None
for name in sys.argv[1:]:
    importlib.import_module(name)
    if "amaranth" in sys.modules:
        first = name
        break
hw = sorted(m for m in sys.modules if m.startswith("tinyattn.hw."))
print(json.dumps({"first": first, "hw": hw}))
"""


def test_sw_plans_without_amaranth(tmp_path: Path) -> None:
    """Every ``sw/`` module but :data:`SW_REGISTER_MAP_USERS` imports without Amaranth."""
    modules = {p.stem for p in _py_files(ROOT / "sw") if p.stem != "__init__"}
    assert set(SW_REGISTER_MAP_USERS) <= modules, "a listed module no longer exists"
    plain = [
        "tinyattn.sw",
        *(f"tinyattn.sw.{m}" for m in sorted(modules - set(SW_REGISTER_MAP_USERS))),
    ]
    assert "tinyattn.sw.tiler" in plain and "tinyattn.sw.c_tables" in plain
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, *plain],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    probe = json.loads(out)
    assert probe["first"] is None, (
        f"importing {probe['first']} loads amaranth (hw modules loaded: {probe['hw']}); "
        "sw/ plans without the HDL: take the DMA's codes from tinyattn.hw.dma_codes and "
        "the job format from tinyattn.hw.job, or list the module in SW_REGISTER_MAP_USERS "
        "with the reason it needs the register map"
    )
    assert "tinyattn.hw.dma" not in probe["hw"]  # the codes, not the DMA


def test_benchmark_registry_imports_only_the_standard_library() -> None:
    path = ROOT / "sim" / "benchmarks" / "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    type_checking = {
        id(inner)
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    bad = [
        f"sim/benchmarks/__init__.py:{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        and id(node) not in type_checking
        and not all(_is_stdlib(alias.name) for alias in node.names)
        and not (isinstance(node, ast.ImportFrom) and _is_stdlib(node.module or ""))
    ]
    assert not bad, (
        "the benchmark registry is imported by the command line at startup and may import "
        "only the standard library (runners load by name):\n" + "\n".join(bad)
    )
