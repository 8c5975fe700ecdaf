"""Verilog generation into build folders keyed by configuration and source.

``build/<top>-<config hash>-<source hash>/<module>.v``: a change of the
configuration or of any generator source (or of the Amaranth version) gives a
new folder, so a stale netlist is never simulated. Generation is safe when
several pytest-xdist workers ask for the same netlist: one writes it under a
file lock, the others wait and reuse it.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import importlib.metadata
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from amaranth.back import verilog

from tinyattn.config import ClusterConfig
from tinyattn.hw.tops import TOPS, build_top, verilog_module_name

__all__ = ["build_root", "file_lock", "generate_verilog", "source_digest", "verilog_for"]

_PKG_ROOT = Path(__file__).resolve().parent.parent


def build_root() -> Path:
    """``$TINYATTN_BUILD_DIR``, else ``./build``."""
    return Path(os.environ.get("TINYATTN_BUILD_DIR", "build")).resolve()


def _hw_imports(path: Path) -> set[str]:
    """Modules of tinyattn.hw that ``path`` imports (``from .x import``, ``from tinyattn.hw.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level == 1:
                found.add(node.module.split(".")[0])
            elif node.module.startswith("tinyattn.hw."):
                found.add(node.module.split(".")[2])
    return found


def source_digest(top: str) -> str:
    """12 hex digits over the sources that can change ``top``'s netlist.

    Those are the top's module in ``hw/`` and every ``hw/`` module it imports,
    transitively, plus ``tinyattn/config.py`` and the Amaranth version, so an
    edit to an unrelated design does not invalidate this one's builds.
    """
    hw = _PKG_ROOT / "hw"
    todo, seen = [TOPS[top].module], set()
    while todo:
        name = todo.pop()
        if name in seen or not (hw / f"{name}.py").exists():
            continue
        seen.add(name)
        todo.extend(_hw_imports(hw / f"{name}.py"))
    h = hashlib.sha256()
    h.update(importlib.metadata.version("amaranth").encode())
    sources = [*(hw / f"{name}.py" for name in sorted(seen)), _PKG_ROOT / "tinyattn" / "config.py"]
    for path in sources:
        h.update(str(path.relative_to(_PKG_ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if needed) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def generate_verilog(top: str, cfg: ClusterConfig) -> str:
    """The Verilog text of top ``top`` for ``cfg``. Deterministic for equal inputs."""
    component = build_top(top, cfg)
    return verilog.convert(component, name=verilog_module_name(top), emit_src=False)


def verilog_for(top: str, cfg: ClusterConfig) -> Path:
    """Path of the cached netlist of ``top`` for ``cfg``, generating it when missing."""
    folder = build_root() / f"{top}-{cfg.stable_hash()}-{source_digest(top)}"
    out = folder / f"{verilog_module_name(top)}.v"
    with file_lock(folder / ".lock"):
        if not out.exists():
            text = generate_verilog(top, cfg)
            tmp = out.with_suffix(".v.tmp")
            tmp.write_text(text)
            os.replace(tmp, out)
            (folder / "config.json").write_text(cfg.to_json())
    return out
