"""Pieces every cocotb bench shares: configuration from the launcher, clock and reset."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from tinyattn.config import ClusterConfig

__all__ = [
    "bench_config",
    "bench_seed",
    "env_float",
    "env_int",
    "start_clock_and_reset",
    "write_metrics",
]

CLOCK_PERIOD_NS = 10


def bench_config() -> ClusterConfig:
    """The configuration the launcher passed in ``TINYATTN_CONFIG`` (JSON)."""
    raw = os.environ.get("TINYATTN_CONFIG")
    return ClusterConfig.from_dict(json.loads(raw)) if raw else ClusterConfig()


def bench_seed() -> int:
    return int(os.environ.get("TINYATTN_SEED", "1"))


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


async def start_clock_and_reset(dut: Any, cycles: int = 3) -> None:
    """Start the clock on ``dut.clk`` and hold the synchronous ``dut.rst`` for ``cycles``."""
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0


def write_metrics(name: str, values: dict[str, Any]) -> None:
    """Merge ``values`` under ``name`` into ``metrics.json`` in the run folder."""
    path = Path("metrics.json")
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics[name] = values
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    cocotb.log.info("metrics %s: %s", name, values)
