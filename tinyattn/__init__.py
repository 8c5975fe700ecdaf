"""tinyattn: a generator for a tinyML transformer cluster (see README.md).

``__version__`` is the installed distribution's version (``pyproject.toml``); when the
package runs from a source tree that is not installed, it is read from that tree's
``pyproject.toml``, and is ``"0+unknown"`` when neither is available.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

__all__ = ["__version__"]


def _version() -> str:
    try:
        return importlib.metadata.version("tinyattn")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
        project = tomllib.loads(text).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return "0+unknown"
    if project.get("name") == "tinyattn" and isinstance(project.get("version"), str):
        return project["version"]
    return "0+unknown"


def __getattr__(name: str) -> str:
    """``__version__``, looked up at first use (not at every import of a submodule)."""
    if name == "__version__":
        version = _version()
        globals()["__version__"] = version
        return version
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
