"""Benchmarks: measured cycles against the ideal, one module per benchmark."""

from .engine import (
    ENGINE_CASES,
    Synthesis,
    attention_bound,
    cells_per_mac,
    engine_bench_config,
    format_table,
    run_engine_bench,
    write_json,
)

__all__ = [
    "ENGINE_CASES",
    "Synthesis",
    "attention_bound",
    "cells_per_mac",
    "engine_bench_config",
    "format_table",
    "run_engine_bench",
    "write_json",
]
