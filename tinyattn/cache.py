"""The build cache: where netlists, simulator builds and firmware builds are kept.

The build root (:func:`build_location`) is one place whatever the working folder:
``$TINYATTN_BUILD_DIR`` when set; else the checkout's ``build/`` when tinyattn runs from
its source checkout (an editable install: the folder with tinyattn's ``pyproject.toml``);
else the user's cache folder, ``$XDG_CACHE_HOME/tinyattn`` (default ``~/.cache/tinyattn``).
``tinyattn cache info`` shows it, ``tinyattn cache clear`` empties it.

Free of the HDL and of the simulators, so the firmware generator (``sw/``) shares the
cache without importing ``sim/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "build_location",
    "build_root",
    "cache_entries",
    "file_lock",
    "source_checkout",
    "tag_cache_root",
    "tree_bytes",
]

_PKG_ROOT = Path(__file__).resolve().parent.parent


def source_checkout() -> Path | None:
    """The source checkout tinyattn runs from (an editable install), or None when installed.

    That is the folder above the package sources that holds tinyattn's ``pyproject.toml``.
    """
    try:
        project = tomllib.loads((_PKG_ROOT / "pyproject.toml").read_text()).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return _PKG_ROOT if project.get("name") == "tinyattn" else None


def build_location() -> tuple[Path, str]:
    """The build root and why it is that one (for ``tinyattn cache info``)."""
    env = os.environ.get("TINYATTN_BUILD_DIR")
    if env:
        return Path(env).expanduser().resolve(), "TINYATTN_BUILD_DIR"
    checkout = source_checkout()
    if checkout is not None:
        return checkout / "build", "the source checkout's build folder"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec: ignore a relative value
        return Path(xdg) / "tinyattn", "XDG_CACHE_HOME"
    return Path.home() / ".cache" / "tinyattn", "the user cache folder (XDG default)"


def build_root() -> Path:
    """Where netlists, simulator builds and firmware builds are cached (see the module doc)."""
    return build_location()[0]


#: Names of what tinyattn writes into the build root: a top's folder
#: (``<top>-<config hash>-<source hash>``), firmware builds, ``tinyattn run``'s PNGs,
#: ``make bench``'s JSON, lock files and the cache tag.
_NETLIST_FOLDER = re.compile(r"[a-z0-9_]+-[0-9a-f]{12}-[0-9a-f]{12}")
_OUR_NAMES = re.compile(r"firmware|run-.+\.png|bench\.json|\..*\.lock|CACHEDIR\.TAG")


def cache_entries(root: Path) -> tuple[list[Path], list[Path]]:
    """The entries of ``root`` that tinyattn made, and the others (sorted by name).

    ``tinyattn cache clear`` removes only the first: a ``TINYATTN_BUILD_DIR`` that points
    at a shared folder loses nothing else.
    """
    if not root.is_dir():
        return [], []
    ours, others = [], []
    for entry in sorted(root.iterdir()):
        name = entry.name
        is_ours = (entry.is_dir() and _NETLIST_FOLDER.fullmatch(name)) or _OUR_NAMES.fullmatch(name)
        (ours if is_ours else others).append(entry)
    return ours, others


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (or of the file), symlinks not followed."""
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile by another run
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This folder is tinyattn's build cache (https://bford.info/cachedir/).\n"
    "# `tinyattn cache clear` empties it; every file in it is made again when needed.\n"
)


def tag_cache_root(root: Path) -> None:
    """Mark ``root`` as a cache folder for backup tools (CACHEDIR.TAG), once."""
    tag = root / "CACHEDIR.TAG"
    if not tag.exists():
        with contextlib.suppress(OSError):
            tag.write_text(_CACHEDIR_TAG)


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
