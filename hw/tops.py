"""The generatable top-level designs, by the name the CLI and the benches use."""

from __future__ import annotations

from collections.abc import Callable

from amaranth.lib import wiring

from tinyattn.config import ClusterConfig

from .compute_core import ComputeCore

__all__ = ["TOPS", "build_top", "verilog_module_name"]

#: name -> (factory from the cluster config, one-line description)
TOPS: dict[str, tuple[Callable[[ClusterConfig], wiring.Component], str]] = {
    "compute_core": (
        lambda cfg: ComputeCore(cfg.engine),
        "the engine's dot-product array with bias and requantization",
    ),
}


def build_top(name: str, cfg: ClusterConfig) -> wiring.Component:
    """Instantiate top ``name`` for ``cfg``; an unknown name raises ``KeyError``."""
    if name not in TOPS:
        raise KeyError(f"unknown top {name!r}; known tops: {', '.join(TOPS)}")
    return TOPS[name][0](cfg)


def verilog_module_name(name: str) -> str:
    """The Verilog module name of top ``name``."""
    return f"tinyattn_{name}"
