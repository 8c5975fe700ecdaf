"""Verilog generation into build folders keyed by configuration and source.

``<build root>/<top>-<config hash>-<source hash>/<module>.v``: a change of the
configuration or of any generator source (or of the Amaranth version) gives a
new folder, so a stale netlist is never simulated. Generation is safe when
several pytest-xdist workers ask for the same netlist: one writes it under a
file lock, the others wait and reuse it.

The build root and its helpers live in :mod:`tinyattn.cache` (re-exported here).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import os
from pathlib import Path

from amaranth.back import verilog

import tinyattn.config as _config_module
import tinyattn.hw as _hw_package
from tinyattn.cache import (
    build_location,
    build_root,
    cache_entries,
    file_lock,
    tag_cache_root,
    tree_bytes,
)
from tinyattn.config import ClusterConfig
from tinyattn.hw.tops import TOPS, build_top, verilog_module_name
from tinyattn.sim.progress import building

__all__ = [
    "build_location",
    "build_root",
    "cache_entries",
    "extra_verilog",
    "file_lock",
    "generate_verilog",
    "source_digest",
    "tree_bytes",
    "verilog_for",
    "verilog_sources",
]

# Found through the modules, not the checkout layout: an installed wheel (or a
# scratch copy, as the mutation runner makes) keeps ``config.py`` beside ``sim/``.
_HW_DIR = Path(_hw_package.__file__).resolve().parent
_CONFIG_PY = Path(_config_module.__file__).resolve()


def _hw_imports(path: Path) -> frozenset[str]:
    """Modules of tinyattn.hw that ``path`` imports (``from .x import``, ``from tinyattn.hw.x``)."""
    stat = path.stat()
    return _parsed_hw_imports(path, stat.st_mtime_ns, stat.st_size)


@functools.cache
def _parsed_hw_imports(path: Path, mtime_ns: int, size: int) -> frozenset[str]:
    # Keyed by the file's modification time and size: every bench run asks for the digest
    # of its top, and parsing the hw/ modules each time cost about 0.5 s a run.
    del mtime_ns, size
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level == 1:
                found.add(node.module.split(".")[0])
            elif node.module.startswith("tinyattn.hw."):
                found.add(node.module.split(".")[2])
    return frozenset(found)


def _hw_modules(top: str) -> set[str]:
    """The ``hw/`` modules that define ``top``: its own and those it imports, transitively."""
    hw = _HW_DIR
    todo, seen = [TOPS[top].module], set()
    while todo:
        name = todo.pop()
        if name in seen or not (hw / f"{name}.py").exists():
            continue
        seen.add(name)
        todo.extend(_hw_imports(hw / f"{name}.py"))
    return seen


def extra_verilog(top: str) -> list[Path]:
    """Verilog files the netlist of ``top`` instantiates but Amaranth does not emit.

    Today the one such file is PicoRV32's (:func:`tinyattn.hw.picorv32.verilog_source`),
    for every top that contains the control core.
    """
    if "picorv32" not in _hw_modules(top):
        return []
    from tinyattn.hw.picorv32 import verilog_source

    return [verilog_source()]


def source_digest(top: str) -> str:
    """12 hex digits over the sources that can change ``top``'s netlist.

    Those are the top's module in ``hw/`` and every ``hw/`` module it imports,
    transitively, plus ``tinyattn/config.py``, the Amaranth version and the
    :func:`extra_verilog` files, so an edit to an unrelated design does not
    invalidate this one's builds.
    """
    h = hashlib.sha256()
    h.update(importlib.metadata.version("amaranth").encode())
    # Hashed under their checkout names, whatever the layout, so a digest does not
    # depend on where tinyattn is installed.
    sources = [(f"hw/{name}.py", _HW_DIR / f"{name}.py") for name in sorted(_hw_modules(top))]
    sources.append(("tinyattn/config.py", _CONFIG_PY))
    for name, path in sources:
        h.update(name.encode())
        h.update(path.read_bytes())
    for path in extra_verilog(top):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def generate_verilog(top: str, cfg: ClusterConfig) -> str:
    """The Verilog text of top ``top`` for ``cfg``. Deterministic for equal inputs."""
    component = build_top(top, cfg)
    return verilog.convert(component, name=verilog_module_name(top), emit_src=False)


def verilog_for(top: str, cfg: ClusterConfig) -> Path:
    """Path of the cached netlist of ``top`` for ``cfg``, generating it when missing."""
    root = build_root()
    folder = root / f"{top}-{cfg.stable_hash()}-{source_digest(top)}"
    out = folder / f"{verilog_module_name(top)}.v"
    with file_lock(folder / ".lock"):
        tag_cache_root(root)
        if not out.exists():
            # A spinner on a terminal: a large configuration takes a minute or more.
            with building(f"generating {top} ({cfg.stable_hash()})"):
                text = generate_verilog(top, cfg)
            tmp = out.with_suffix(".v.tmp")
            tmp.write_text(text)
            os.replace(tmp, out)
            (folder / "config.json").write_text(cfg.to_json())
    return out


def verilog_sources(top: str, cfg: ClusterConfig) -> list[Path]:
    """Every Verilog file of ``top`` for ``cfg``: the cached netlist first, then copies of
    the :func:`extra_verilog` files in the same build folder (so a simulator or a
    synthesis flow needs nothing from site-packages)."""
    main = verilog_for(top, cfg)
    files = [main]
    with file_lock(main.parent / ".lock"):
        for src in extra_verilog(top):
            dst = main.parent / src.name
            if not dst.exists():
                tmp = dst.with_suffix(".v.tmp")
                tmp.write_bytes(src.read_bytes())
                os.replace(tmp, dst)
            files.append(dst)
    return files
