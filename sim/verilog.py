"""Verilog generation into build folders keyed by configuration and source.

``build/<top>-<config hash>-<source hash>/<module>.v``: a change of the
configuration or of any generator source (or of the Amaranth version) gives a
new folder, so a stale netlist is never simulated. Generation is safe when
several pytest-xdist workers ask for the same netlist: one writes it under a
file lock, the others wait and reuse it.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from amaranth.back import verilog
from tinyattn.hw.tops import build_top, verilog_module_name

from tinyattn.config import ClusterConfig

__all__ = ["build_root", "file_lock", "generate_verilog", "source_digest", "verilog_for"]

_PKG_ROOT = Path(__file__).resolve().parent.parent
# Everything whose change can change a netlist: the generators and the parameter object.
_SOURCE_GLOBS = ("hw/**/*.py", "tinyattn/config.py")


def build_root() -> Path:
    """``$TINYATTN_BUILD_DIR``, else ``./build``."""
    return Path(os.environ.get("TINYATTN_BUILD_DIR", "build")).resolve()


def source_digest() -> str:
    """12 hex digits over the generator sources and the Amaranth version."""
    h = hashlib.sha256()
    h.update(importlib.metadata.version("amaranth").encode())
    for pattern in _SOURCE_GLOBS:
        for path in sorted(_PKG_ROOT.glob(pattern)):
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
    folder = build_root() / f"{top}-{cfg.stable_hash()}-{source_digest()}"
    out = folder / f"{verilog_module_name(top)}.v"
    with file_lock(folder / ".lock"):
        if not out.exists():
            text = generate_verilog(top, cfg)
            tmp = out.with_suffix(".v.tmp")
            tmp.write_text(text)
            os.replace(tmp, out)
            (folder / "config.json").write_text(cfg.to_json())
    return out
