"""``tinyattn sweep SPEC.toml --out DIR``: design-space sweeps, one Dask task per point.

A spec (TOML, :func:`load_spec`) names the configuration fields to vary (lists or ranges,
over the full grid or a seeded random sample of it), the workload each point runs and the
metrics to report:

- ``predict``: the tiler's cost model only (no simulator): MobileBERT deployed for the
  point's configuration, its predicted cycles in total and per layer;
- ``engine``: the engine benchmark (:func:`tinyattn.sim.benchmarks.engine.run_engine_bench`) under
  a simulator, measured cycles against the ideal;
- ``run``: ``tinyattn run`` (N layers of MobileBERT through the firmware on the cluster RTL),
  measured cycles, checked bit for bit against the integer model.

Every point gives one row (:data:`ROW_KEYS`): ``ok`` with its metrics, ``invalid`` with the
one-line reason (a configuration that fails validation, a model that does not fit), or
``failed`` (an error in the workload, a worker lost more often than Dask allows). Rows are
appended to ``DIR/rows.jsonl`` as the tasks finish (one JSON object a line, flushed and
fsynced), so an interrupted sweep keeps what it did, and a rerun with the same spec and
``--out`` evaluates only the points without a row (and the failed ones again: the last row
of a point is its result). At the end ``DIR/results.csv`` holds the
rows in point order, and ``DIR/pareto.png`` the Pareto front of throughput against area.

Execution (:func:`run_sweep`) is serial in this process, or on ``dask.distributed``: a
``LocalCluster`` of one single-threaded worker process per core by default, or the
scheduler at a given address. Only the client writes rows, each future exactly once, so a
worker that dies mid-task (Dask retries its task elsewhere, up to
``distributed.scheduler.allowed-failures`` times) cannot lose or duplicate a row. Netlists,
simulator builds and syntheses go through the build cache (:mod:`tinyattn.sim.verilog`), keyed
by config and source hash and safe under concurrent workers; see ``docs/sweep.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import itertools
import json
import logging
import math
import os
import shutil
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyattn.config import ClusterConfig, ConfigError

__all__ = [
    "AREA_MODES",
    "ROW_KEYS",
    "WORKLOADS",
    "Point",
    "Spec",
    "SweepResult",
    "SweepSpecError",
    "evaluate_point",
    "format_table",
    "load_spec",
    "pareto_front",
    "parse_spec",
    "plot_pareto",
    "read_rows",
    "run_sweep",
]

#: Workloads a point can run.
WORKLOADS = ("predict", "engine", "run")
#: Area of a point's engine: not measured, the per-part estimate, the coarse synthesis or the
#: full synthesis (:mod:`tinyattn.sim.area`).
AREA_MODES = ("none", "estimate", "coarse", "full")
SIMULATORS = ("verilator", "icarus")
ROWS_FILE = "rows.jsonl"
STATE_FILE = "sweep.json"
CSV_FILE = "results.csv"
PNG_FILE = "pareto.png"

#: Every row has these keys, in this order (``None`` where a metric does not apply).
ROW_KEYS = (
    "index",
    "id",
    "label",
    "point",
    "status",
    "reason",
    "config",
    "workload",
    "macs_per_cycle",
    "cycles",
    "cycles_per_layer",
    "predicted_cycles",
    "ideal_cycles",
    "utilization",
    "clock_mhz",
    "inferences_per_s",
    "gmac_per_s",
    "area_mode",
    "cells",
    "cells_per_mac",
    "l1_bytes",
    "buffer_bytes",
)

_SPEC_TABLES = ("sweep", "base", "vary", "workload", "metrics")
_SWEEP_KEYS = ("mode", "samples", "seed", "base_config")
_WORKLOAD_KEYS = ("kind", "model", "layers", "seq", "seed", "sim", "cases", "stalls")
_METRIC_KEYS = ("clock_mhz", "area")


class SweepSpecError(ValueError):
    """A bad sweep spec: one line naming the key, what is wrong and the fix."""


# -- the spec -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What each point runs (the ``[workload]`` table)."""

    kind: str = "predict"
    model: str = "synthetic"
    layers: int = 2
    seq: int = 128
    seed: int = 0
    sim: str = "verilator"
    #: Engine cases: ``(name, kind, m, n, k, heads)`` (``benchmarks.engine.ENGINE_CASES`` format).
    cases: tuple[tuple[str, str, int, int, int, int], ...] = ()
    stalls: tuple[float, ...] = (0.0,)


@dataclass(frozen=True)
class Point:
    """One configuration of the sweep: ``overrides`` on the base, as ``(field, value)``."""

    index: int
    overrides: tuple[tuple[str, Any], ...]

    @property
    def label(self) -> str:
        """``n_pe=16 vec_len=64 tile_m=64``: the varied fields, section names dropped."""
        return " ".join(f"{path.rsplit('.', 1)[-1]}={value}" for path, value in self.overrides)

    def config_dict(self, base: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        data = {section: dict(values) for section, values in base.items()}
        for path, value in self.overrides:
            section, name = path.split(".")
            data.setdefault(section, {})[name] = value
        return data

    def point_id(self, base: dict[str, dict[str, Any]]) -> str:
        """12 hex digits over the resolved settings (base and overrides), for resuming."""
        text = json.dumps(self.config_dict(base), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Spec:
    """A parsed sweep spec (:func:`parse_spec`)."""

    fields: tuple[tuple[str, tuple[Any, ...]], ...]
    base: dict[str, dict[str, Any]]
    mode: str = "grid"
    samples: int | None = None
    seed: int = 0
    workload: Workload = Workload()
    clock_mhz: float = 500.0
    area: str = "none"
    source: str = "spec"

    @property
    def grid_size(self) -> int:
        return math.prod(len(values) for _, values in self.fields)

    def points(self) -> list[Point]:
        """The points in grid order (the first field varies slowest); a random sample keeps
        ``samples`` distinct grid points drawn with ``seed``, still in grid order."""
        names = [path for path, _ in self.fields]
        grid = [
            Point(i, tuple(zip(names, combo, strict=True)))
            for i, combo in enumerate(itertools.product(*(v for _, v in self.fields)))
        ]
        if self.mode == "random":
            import numpy as np

            n = min(self.samples or 0, len(grid))
            keep = np.random.default_rng(self.seed).choice(len(grid), size=n, replace=False)
            grid = [grid[int(i)] for i in sorted(keep)]
        return grid

    def fingerprint(self) -> dict[str, Any]:
        """What must match for rows of an earlier run to count for this one: the workload
        and the metrics (the points themselves are keyed by their settings)."""
        return {
            "workload": dataclasses.asdict(self.workload),
            "clock_mhz": self.clock_mhz,
            "area": self.area,
        }


def _fail(key: str, what: str) -> SweepSpecError:
    return SweepSpecError(f"{key}: {what}")


def _known_fields() -> dict[str, set[str]]:
    from tinyattn.config import _SECTIONS

    return {name: {f.name for f in dataclasses.fields(cls)} for name, cls in _SECTIONS.items()}


def _check_field(key: str, path: str) -> None:
    known = _known_fields()
    parts = path.split(".")
    if len(parts) != 2 or parts[0] not in known:
        raise _fail(
            key,
            f"not a configuration field; name one as SECTION.FIELD with SECTION one of "
            f"{', '.join(known)} (e.g. engine.n_pe)",
        )
    if parts[1] not in known[parts[0]]:
        raise _fail(
            key,
            f"no such field in [{parts[0]}]; known fields are {', '.join(sorted(known[parts[0]]))}",
        )


def _int_value(key: str, value: Any) -> int:
    if type(value) is not int:
        raise _fail(key, f"{value!r} is not a whole number")
    return value


def _range(key: str, table: dict[str, Any]) -> tuple[int, ...]:
    """``{from = A, to = B, step = S}`` (inclusive, arithmetic) or ``{..., factor = F}``."""
    allowed = {"from", "to", "step", "factor"}
    for k in table:
        if k not in allowed:
            raise _fail(f"{key}.{k}", "unknown range key; a range is {from, to, step or factor}")
    if "from" not in table or "to" not in table:
        raise _fail(key, "a range needs from and to, e.g. {from = 8, to = 64, factor = 2}")
    if "step" in table and "factor" in table:
        raise _fail(key, "give step (arithmetic) or factor (geometric), not both")
    lo, hi = _int_value(f"{key}.from", table["from"]), _int_value(f"{key}.to", table["to"])
    if hi < lo:
        raise _fail(key, f"to = {hi} is below from = {lo}; use from <= to")
    values: list[int] = []
    if "factor" in table:
        factor = _int_value(f"{key}.factor", table["factor"])
        if factor < 2 or lo < 1:
            raise _fail(key, "a geometric range needs factor >= 2 and from >= 1")
        v = lo
        while v <= hi:
            values.append(v)
            v *= factor
    else:
        step = _int_value(f"{key}.step", table.get("step", 1))
        if step < 1:
            raise _fail(f"{key}.step", f"{step} must be >= 1")
        values = list(range(lo, hi + 1, step))
    return tuple(values)


def _flatten_vary(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``[vary]`` as ``(SECTION.FIELD, spec)``: dotted keys and sub-tables alike."""
    out = []
    for name, value in table.items():
        path = f"{prefix}{name}"
        is_range = isinstance(value, dict) and ("from" in value or "to" in value)
        if isinstance(value, dict) and not is_range and path.count(".") == 0:
            out += _flatten_vary(value, f"{path}.")
        else:
            out.append((path, value))
    return out


def parse_spec(data: dict[str, Any], source: str = "spec") -> Spec:
    """Check and resolve a spec's tables; :class:`SweepSpecError` names the first bad key."""
    for key in data:
        if key not in _SPEC_TABLES:
            raise _fail(key, f"unknown table; a spec has {', '.join(_SPEC_TABLES)}")
        if not isinstance(data[key], dict):
            raise _fail(key, f"must be a table ([{key}])")
    sweep = data.get("sweep", {})
    for key in sweep:
        if key not in _SWEEP_KEYS:
            raise _fail(f"sweep.{key}", f"unknown key; [sweep] has {', '.join(_SWEEP_KEYS)}")
    mode = sweep.get("mode", "grid")
    if mode not in ("grid", "random"):
        raise _fail("sweep.mode", f"{mode!r}: use 'grid' (every combination) or 'random'")
    samples = sweep.get("samples")
    if mode == "random":
        if samples is None:
            raise _fail("sweep.samples", "missing: a random sweep needs samples = N (N >= 1)")
        if _int_value("sweep.samples", samples) < 1:
            raise _fail("sweep.samples", f"{samples} must be >= 1")
    elif samples is not None:
        raise _fail("sweep.samples", "only for mode = 'random'; remove it or set the mode")
    seed = _int_value("sweep.seed", sweep.get("seed", 0))

    # The base configuration: a config file (relative to the spec) and/or a [base] table.
    base_cfg = ClusterConfig()
    if "base_config" in sweep:
        path = Path(str(sweep["base_config"]))
        if not path.is_absolute() and source != "spec":
            path = Path(source).parent / path
        try:
            base_cfg = ClusterConfig.load(path)
        except ConfigError as exc:
            raise _fail("sweep.base_config", str(exc)) from None
    base = base_cfg.to_dict()
    for section, values in data.get("base", {}).items():
        if not isinstance(values, dict):
            raise _fail(f"base.{section}", "must be a table of fields, e.g. [base.engine]")
        for name, value in values.items():
            _check_field(f"base.{section}.{name}", f"{section}.{name}")
            base[section][name] = value
    try:
        ClusterConfig.from_dict(base)
    except ConfigError as exc:
        raise _fail("base", f"the base configuration is invalid: {exc}") from None

    vary = data.get("vary", {})
    if not vary:
        raise _fail("vary", "missing or empty; name a field to vary, e.g. engine.n_pe = [8, 16]")
    fields = []
    for path, value in sorted(_flatten_vary(vary)):
        key = f"vary.{path}"
        _check_field(key, path)
        if isinstance(value, dict):
            values = _range(key, value)
        elif isinstance(value, list):
            values = tuple(value)
        else:
            raise _fail(key, f"{value!r}: give a list ([8, 16]) or a range ({{from, to, step}})")
        if not values:
            raise _fail(key, "no values; give at least one")
        if len(set(map(repr, values))) != len(values):
            raise _fail(key, "repeats a value; list each once")
        for v in values:
            if type(v) is not int:
                raise _fail(key, f"{v!r} is not a whole number (every field is an integer)")
        fields.append((path, values))
    grid = math.prod(len(v) for _, v in fields)
    if mode == "random" and samples > grid:
        raise _fail(
            "sweep.samples", f"{samples} is more than the {grid} grid points; use 1..{grid}"
        )

    w = data.get("workload", {})
    for key in w:
        if key not in _WORKLOAD_KEYS:
            raise _fail(
                f"workload.{key}", f"unknown key; [workload] has {', '.join(_WORKLOAD_KEYS)}"
            )
    kind = w.get("kind", "predict")
    if kind not in WORKLOADS:
        raise _fail("workload.kind", f"{kind!r}: use one of {', '.join(WORKLOADS)}")
    model = w.get("model", "synthetic")
    if not isinstance(model, str):
        raise _fail("workload.model", "must be a checkpoint folder or 'synthetic'")
    if model != "synthetic" and not model.startswith("stress:"):
        folder = Path(model)
        if not folder.is_absolute() and source != "spec" and not folder.is_dir():
            folder = Path(source).parent / folder
        if not folder.is_dir():
            raise _fail(
                "workload.model", f"{model}: no such checkpoint folder (or use 'synthetic')"
            )
        model = str(folder.resolve())
    layers = _int_value("workload.layers", w.get("layers", 2))
    if not 1 <= layers <= 24:
        raise _fail("workload.layers", f"{layers}: use 1..24 (MobileBERT has 24 layers)")
    seq = _int_value("workload.seq", w.get("seq", 128))
    if not 1 <= seq <= 512:
        raise _fail("workload.seq", f"{seq}: use 1..512 (MobileBERT's positions)")
    sim = w.get("sim", "verilator")
    if sim not in SIMULATORS:
        raise _fail("workload.sim", f"{sim!r}: use one of {', '.join(SIMULATORS)}")
    cases = _cases(w.get("cases")) if kind == "engine" else ()
    stalls = w.get("stalls", [0.0])
    if not isinstance(stalls, list) or not stalls:
        raise _fail("workload.stalls", "give a list of grant-stall probabilities, e.g. [0.0]")
    for p in stalls:
        if not isinstance(p, int | float) or isinstance(p, bool) or not 0 <= p < 1:
            raise _fail("workload.stalls", f"{p!r}: each must be a number, 0 <= p < 1")
    workload = Workload(
        kind=kind,
        model=model,
        layers=layers,
        seq=seq,
        seed=_int_value("workload.seed", w.get("seed", 0)),
        sim=sim,
        cases=cases,
        stalls=tuple(float(p) for p in stalls),
    )

    m = data.get("metrics", {})
    for key in m:
        if key not in _METRIC_KEYS:
            raise _fail(f"metrics.{key}", f"unknown key; [metrics] has {', '.join(_METRIC_KEYS)}")
    clock = m.get("clock_mhz", 500)
    if not isinstance(clock, int | float) or isinstance(clock, bool) or not clock > 0:
        raise _fail("metrics.clock_mhz", f"{clock!r}: give the clock in MHz, a number > 0")
    area = m.get("area", "none")
    if area not in AREA_MODES:
        raise _fail(
            "metrics.area",
            f"{area!r}: use 'none', 'estimate' (per-part model, instant), 'coarse' (coarse "
            "yosys synthesis, minutes) or 'full' (yosys synth, about an hour for the default "
            "engine)",
        )
    return Spec(
        fields=tuple(fields),
        base=base,
        mode=mode,
        samples=samples,
        seed=seed,
        workload=workload,
        clock_mhz=float(clock),
        area=area,
        source=source,
    )


def _cases(value: Any) -> tuple[tuple[str, str, int, int, int, int], ...]:
    """``workload.cases``: names of ``benchmarks.engine.ENGINE_CASES`` or tables
    ``{kind, m, n, k, heads}``; default all the reference cases."""
    from tinyattn.sim.benchmarks.engine import ENGINE_CASES

    known = {c[0]: c for c in ENGINE_CASES}
    if value is None:
        return tuple(ENGINE_CASES)
    if not isinstance(value, list) or not value:
        raise _fail("workload.cases", "give a list of case names or {kind, m, n, k} tables")
    out = []
    for i, case in enumerate(value):
        key = f"workload.cases[{i}]"
        if isinstance(case, str):
            if case not in known:
                raise _fail(key, f"{case!r}: no such case; known: {', '.join(known)}")
            out.append(known[case])
        elif isinstance(case, dict):
            for k in case:
                if k not in ("kind", "m", "n", "k", "heads"):
                    raise _fail(f"{key}.{k}", "unknown key; a case is {kind, m, n, k, heads}")
            kind = case.get("kind")
            if kind not in ("gemm", "attention"):
                raise _fail(f"{key}.kind", f"{kind!r}: use 'gemm' or 'attention'")
            dims = [_int_value(f"{key}.{d}", case.get(d, 1 if d == "heads" else 0))
                    for d in ("m", "n", "k", "heads")]  # fmt: skip
            if min(dims) < 1:
                raise _fail(key, "m, n and k (and heads) must be >= 1")
            m, n, k, heads = dims
            name = f"{kind} {m}x{k}x{n}" if kind == "gemm" else f"attention S={m} H={heads} D={k}"
            out.append((name, kind, m, n, k, heads))
        else:
            raise _fail(key, f"{case!r}: a case name or a {{kind, m, n, k}} table")
    return tuple(out)


def load_spec(path: str | Path) -> Spec:
    """Read and check a spec file (:class:`SweepSpecError` names the file and the key)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SweepSpecError(f"{path}: cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SweepSpecError(f"{path}: not a TOML file (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepSpecError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_spec(data, str(path))
    except SweepSpecError as exc:
        raise SweepSpecError(f"{path}: {exc}") from None


# -- one point ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _prepared(model: str, layers: int, seq: int, seed: int, group: int) -> Any:
    """:func:`tinyattn.sw.deploy_flow.prepare` once per worker process and ITAMax group
    (the point's ``n_pe``: the lowering refuses a model quantized for another group)."""
    from tinyattn.sw.deploy_flow import prepare

    try:
        return prepare(model, layers=layers, seq_len=seq, seed=seed, group=group)
    except ValueError as exc:
        # prepare names the CLI's option; here the spec's key is what to fix.
        raise ValueError(str(exc).replace(f"--seq {seq}:", f"workload.seq = {seq}:", 1)) from None


def _model_errors() -> tuple[type[BaseException], ...]:
    """What deploying a model raises when it does not fit a configuration."""
    from tinyattn.sw.lowering import LoweringError
    from tinyattn.sw.memplan import PlanError
    from tinyattn.sw.quantize import QuantizationError
    from tinyattn.sw.stream import StreamError

    return (LoweringError, PlanError, QuantizationError, StreamError)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _layer_cycles(names: Sequence[str], cycles: Sequence[int], layers: int) -> int:
    """Mean cycles of an encoder layer: the records named ``layer<i>.*``."""
    total = sum(c for n, c in zip(names, cycles, strict=True) if n.startswith("layer"))
    return round(total / layers)


def evaluate_point(
    point: dict[str, Any], base: dict[str, Any], workload: dict[str, Any], metrics: dict[str, Any]
) -> dict[str, Any]:
    """Run one point and return its row (:data:`ROW_KEYS`). This is the Dask task.

    ``point`` is ``{"index", "overrides"}``; the arguments are plain data so that a worker
    on another machine needs only tinyattn installed. Never raises for the point's own
    trouble: a configuration that fails validation or a model that does not fit is
    ``invalid``, any other error ``failed``, each with its one-line reason.
    """
    p = Point(point["index"], tuple((k, v) for k, v in point["overrides"]))
    w = Workload(**{**workload, "cases": tuple(tuple(c) for c in workload["cases"]),
                    "stalls": tuple(workload["stalls"])})  # fmt: skip
    clock_hz = metrics["clock_mhz"] * 1e6
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(
        index=p.index,
        id=p.point_id(base),
        label=p.label,
        point=dict(p.overrides),
        status="ok",
        reason="",
        workload=w.kind,
        clock_mhz=metrics["clock_mhz"],
        area_mode=metrics["area"],
    )
    try:
        cfg = ClusterConfig.from_dict(p.config_dict(base))
        cfg.check_for("engine" if w.kind == "engine" else "cluster_l2")
    except ConfigError as exc:
        row.update(status="invalid", reason=_one_line(exc))
        return row
    e = cfg.engine
    row.update(
        config=cfg.stable_hash(),
        macs_per_cycle=e.macs_per_cycle,
        l1_bytes=cfg.memory.size_bytes,
        buffer_bytes=e.buffer_bytes,
    )
    try:
        if w.kind == "engine":
            row.update(_engine(cfg, w, clock_hz))
        else:
            row.update(_model(cfg, w, clock_hz))
        if metrics["area"] != "none":
            from tinyattn.sim.area import engine_area

            area = engine_area(cfg, metrics["area"])
            row.update(cells=area["cells"], cells_per_mac=area["cells_per_mac"])
    except (ConfigError, *_model_errors()) as exc:
        row.update(status="invalid", reason=_one_line(exc))
    except Exception as exc:  # the point failed; the sweep goes on
        row.update(status="failed", reason=f"{type(exc).__name__}: {_one_line(exc)}")
    return row


def _engine(cfg: ClusterConfig, w: Workload, clock_hz: float) -> dict[str, Any]:
    from tinyattn.sim.benchmarks.engine import engine_bench_config, run_engine_bench

    records = run_engine_bench(
        engine_bench_config(cfg), sim=w.sim, stalls=w.stalls, cases=w.cases, seed=w.seed or 1
    )
    cycles = sum(r["cycles"] for r in records)
    ideal = sum(r["ideal_cycles"] for r in records)
    util = ideal / cycles
    return {
        "cycles": cycles,
        "ideal_cycles": ideal,
        "utilization": round(util, 4),
        "gmac_per_s": round(util * cfg.engine.macs_per_cycle * clock_hz / 1e9, 2),
    }


def _model(cfg: ClusterConfig, w: Workload, clock_hz: float) -> dict[str, Any]:
    from tinyattn.sw.schedule import deploy

    prepared = _prepared(w.model, w.layers, w.seq, w.seed, cfg.engine.n_pe)
    schedule = deploy(prepared.qmodel, cfg, w.seq)
    predicted = [c.total for c in schedule.predicted]
    layers = prepared.qmodel.config.num_hidden_layers
    if w.kind == "run":
        from tinyattn.sim.model_run import run_schedule

        run = run_schedule(schedule, prepared.input_ids, prepared.token_type_ids, w.sim)
        want = prepared.qmodel.forward(prepared.input_ids, prepared.token_type_ids)
        for name, got, (ref, _) in zip(prepared.qmodel.state_names, run.states, want, strict=True):
            if got.shape != ref.shape or (got != ref).any():
                raise RuntimeError(f"not bit-exact: {name} differs from the integer model")
        measured = list(run.record_cycles)
        cycles = run.cycles
    else:
        measured, cycles = predicted, sum(predicted)
    macs = schedule.program.macs.total
    ideal = macs / cfg.engine.macs_per_cycle
    util = ideal / cycles
    return {
        "cycles": cycles,
        "cycles_per_layer": _layer_cycles(schedule.names, measured, layers),
        "predicted_cycles": sum(predicted),
        "ideal_cycles": round(ideal),
        "utilization": round(util, 4),
        "inferences_per_s": round(clock_hz / cycles, 2),
        "gmac_per_s": round(macs * clock_hz / cycles / 1e9, 2),
    }


# -- rows on disk ---------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``rows.jsonl``; a last line cut short by an interrupt is ignored."""
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "id" in row:
            rows.append(row)
    return rows


class _RowFile:
    """Appends rows, one JSON line each, flushed and fsynced (an interrupt keeps them)."""

    def __init__(self, path: Path) -> None:
        # A line cut short by a kill gets its newline back, so the next row starts clean.
        if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            with path.open("a") as fh:
                fh.write("\n")
        self._fh = path.open("a")

    def append(self, row: dict[str, Any]) -> None:
        self._fh.write(json.dumps(row, sort_keys=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def _check_out(out: Path, spec: Spec) -> None:
    """``out`` holds nothing or a sweep of the same workload and metrics."""
    state = out / STATE_FILE
    want = spec.fingerprint()
    if state.exists():
        try:
            have = json.loads(state.read_text())
        except (OSError, json.JSONDecodeError):
            have = None
        if have != json.loads(json.dumps(want)):
            raise SweepSpecError(
                f"--out {out}: holds a sweep with another workload or metrics ({STATE_FILE}); "
                "use a new folder, or the spec that made it to resume"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(want, indent=2, sort_keys=True) + "\n")


# -- running --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: every point's row in point order, and what this run did."""

    rows: list[dict[str, Any]]
    evaluated: int
    skipped: int
    wall_s: float
    out: Path
    csv: Path
    png: Path | None


def _task_args(spec: Spec) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    workload = dataclasses.asdict(spec.workload)
    workload["cases"] = [list(c) for c in spec.workload.cases]
    workload["stalls"] = list(spec.workload.stalls)
    return spec.base, workload, {"clock_mhz": spec.clock_mhz, "area": spec.area}


def _failed_row(point: Point, spec: Spec, reason: str) -> dict[str, Any]:
    """The row of a point whose task never returned (workers lost)."""
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(
        index=point.index,
        id=point.point_id(spec.base),
        label=point.label,
        point=dict(point.overrides),
        status="failed",
        reason=reason,
        workload=spec.workload.kind,
        clock_mhz=spec.clock_mhz,
        area_mode=spec.area,
    )
    return row


def default_workers() -> int:
    """Workers of the default ``LocalCluster``: one per core."""
    return max(1, os.cpu_count() or 1)


def run_sweep(
    spec: Spec,
    out: str | Path,
    *,
    serial: bool = False,
    scheduler: str | None = None,
    client: Any = None,
    workers: int | None = None,
    progress: bool | None = None,
    plot: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Evaluate every point of ``spec`` without a row in ``out/rows.jsonl`` (or whose last
    row there is ``failed``) and return every point's row, in point order.

    ``serial`` runs the points here, one after the other; else on Dask: ``client`` (a
    ``distributed.Client``), or the scheduler at ``scheduler``, or a new ``LocalCluster`` of
    ``workers`` single-threaded processes (default: one per core). ``progress`` draws a
    tqdm bar of points done and left on stderr (default: when stderr is a terminal).
    """
    out = Path(out)
    t0 = time.monotonic()
    _check_out(out, spec)
    rows_path = out / ROWS_FILE
    points = spec.points()
    ids = {p.point_id(spec.base): p for p in points}
    # The last row of a point wins; a failed point (an error, workers lost) runs again.
    done = {r["id"]: r for r in read_rows(rows_path) if r["id"] in ids}
    done = {k: r for k, r in done.items() if r["status"] != "failed"}
    todo = [p for p in points if p.point_id(spec.base) not in done]
    if progress is None:
        progress = sys.stderr.isatty()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(points), initial=len(done), unit="point", desc="sweep",
                   file=sys.stderr, dynamic_ncols=True)  # fmt: skip
    writer = _RowFile(rows_path)

    def record(row: dict[str, Any]) -> None:
        writer.append(row)
        done[row["id"]] = row
        if bar is not None:
            bar.update(1)
        if on_row is not None:
            on_row(row)

    base, workload, metrics = _task_args(spec)
    try:
        if todo and serial:
            for p in todo:
                record(evaluate_point(_plain(p), base, workload, metrics))
        elif todo:
            _run_dask(spec, todo, (base, workload, metrics), record, scheduler, client, workers)
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    rows = [done[p.point_id(spec.base)] for p in points]
    csv_path = out / CSV_FILE
    csv_path.write_text(rows_csv(rows))
    png = None
    if plot:
        png = out / PNG_FILE
        plot_pareto(rows, png, _title(spec))
    return SweepResult(
        rows=rows,
        evaluated=len(todo),
        skipped=len(points) - len(todo),
        wall_s=time.monotonic() - t0,
        out=out,
        csv=csv_path,
        png=png,
    )


def _plain(p: Point) -> dict[str, Any]:
    return {"index": p.index, "overrides": [list(o) for o in p.overrides]}


def _run_dask(
    spec: Spec,
    todo: Sequence[Point],
    args: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
    record: Callable[[dict[str, Any]], None],
    scheduler: str | None,
    client: Any,
    workers: int | None,
) -> None:
    from distributed import Client, LocalCluster, as_completed

    own_client = own_cluster = None
    if client is None:
        if scheduler is not None:
            client = own_client = Client(scheduler)
        else:
            own_cluster = LocalCluster(
                n_workers=workers or default_workers(),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
                env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
            )
            client = own_client = Client(own_cluster)
    try:
        futures = {}
        for p in todo:
            # One task a point; the key names the point so the dashboard reads well, and
            # pure=False so that a rerun of the same point is never served a stale result.
            fut = client.submit(
                evaluate_point, _plain(p), *args, key=f"sweep-{p.point_id(spec.base)}",
                pure=False, retries=0,
            )  # fmt: skip
            futures[fut] = p
        for fut in as_completed(list(futures)):
            p = futures[fut]
            try:
                row = fut.result()
            except Exception as exc:  # KilledWorker: the point's workers died too often
                row = _failed_row(p, spec, f"{type(exc).__name__}: {_one_line(exc)}")
            record(row)
            fut.release()
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()


# -- reporting ------------------------------------------------------------------------------


def rows_csv(rows: Iterable[dict[str, Any]]) -> str:
    """The rows as CSV, :data:`ROW_KEYS` columns (``point`` as compact JSON)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ROW_KEYS)
    for r in rows:
        w.writerow([_csv_cell(k, r[k]) for k in ROW_KEYS])
    return buf.getvalue()


def _csv_cell(key: str, value: Any) -> Any:
    if key == "point":
        return json.dumps(value, sort_keys=True)
    return "" if value is None else value


def _throughput(row: dict[str, Any]) -> tuple[str, float | None]:
    if row["workload"] == "engine":
        return "GMAC/s", row["gmac_per_s"]
    return "inferences/s", row["inferences_per_s"]


def pareto_front(rows: Sequence[dict[str, Any]]) -> list[int]:
    """Indices (``row["index"]``) of the ``ok`` rows with area that no other row beats:
    none has at most its cells and more throughput, or fewer cells and as much."""
    pts = [
        (r["cells"], _throughput(r)[1], r["index"])
        for r in rows
        if r["status"] == "ok" and r["cells"] is not None and _throughput(r)[1] is not None
    ]
    front = []
    for cells, thr, idx in pts:
        beaten = any((c <= cells and t > thr) or (c < cells and t >= thr) for c, t, _ in pts)
        if not beaten:
            front.append(idx)
    return sorted(front)


def _fmt(value: Any, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table of the rows, in point order, Pareto-optimal rows starred."""
    front = set(pareto_front(rows))
    header = ["#", "configuration", "status", "cycles", "cycles/layer", "util",
              "inf/s", "GMAC/s", "cells", "cells/MAC", "L1 KiB", "buf KiB", ""]  # fmt: skip
    table = []
    for r in rows:
        table.append(
            [
                str(r["index"]),
                r["label"],
                r["status"],
                _fmt(r["cycles"], ","),
                _fmt(r["cycles_per_layer"], ","),
                "" if r["utilization"] is None else f"{r['utilization']:.1%}",
                _fmt(r["inferences_per_s"], ",.1f"),
                _fmt(r["gmac_per_s"], ",.1f"),
                _fmt(r["cells"], ","),
                _fmt(r["cells_per_mac"], ",.1f"),
                "" if r["l1_bytes"] is None else str(r["l1_bytes"] // 1024),
                "" if r["buffer_bytes"] is None else f"{r['buffer_bytes'] / 1024:g}",
                "*" if r["index"] in front else r["reason"],
            ]
        )
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h)
              for i, h in enumerate(header)]  # fmt: skip
    left = {1, 2, 12}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), "-" * len(line(header)), *(line(t) for t in table)])


def _title(spec: Spec) -> str:
    w = spec.workload
    if w.kind == "engine":
        what = f"engine benchmark on {w.sim}"
    else:
        what = f"MobileBERT ({w.model}, {w.layers} layers, S = {w.seq}), " + (
            "cost model" if w.kind == "predict" else f"measured on {w.sim}"
        )
    return f"{what}; {spec.clock_mhz:g} MHz; area: {spec.area}"


def _short_label(row: dict[str, Any]) -> str:
    """The varied values joined by ``/`` (the plot names the fields once)."""
    return "/".join(str(v) for v in row["point"].values())


def plot_pareto(rows: Sequence[dict[str, Any]], png: Path, title: str) -> bool:
    """Throughput against area, each point labelled with its configuration (its varied
    values, in the order the axis note names), the Pareto front red and joined. Points at
    the same place share one label. Byte-identical for equal rows (fixed metadata, no
    timestamps). Returns False (and writes a PNG saying so) when no row has both
    throughput and area."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok" and r["cells"] is not None
          and _throughput(r)[1] is not None]  # fmt: skip
    front = set(pareto_front(rows))
    with matplotlib.rc_context({"svg.hashsalt": "tinyattn", "font.size": 8}):
        fig, ax = plt.subplots(figsize=(11, 7), dpi=100)
        if ok:
            unit = _throughput(ok[0])[0]
            places: dict[tuple[int, float], list[dict[str, Any]]] = {}
            for r in ok:
                places.setdefault((r["cells"], _throughput(r)[1]), []).append(r)
            for (x, y), here in sorted(places.items()):
                on = any(r["index"] in front for r in here)
                ax.scatter([x], [y], s=34 if on else 16, c="tab:red" if on else "tab:blue",
                           zorder=3)  # fmt: skip
                ax.annotate(", ".join(_short_label(r) for r in here), (x, y),
                            textcoords="offset points", xytext=(5, -3 if on else 3),
                            fontsize=7 if on else 6, color="darkred" if on else "dimgray",
                            fontweight="bold" if on else "normal")  # fmt: skip
            fr = sorted((r["cells"], _throughput(r)[1]) for r in ok if r["index"] in front)
            if fr:
                ax.step([f[0] for f in fr], [f[1] for f in fr], where="post", c="tab:red",
                        lw=1, alpha=0.6, label="Pareto front")  # fmt: skip
                ax.legend(loc="lower right")
            fields = "/".join(k.rsplit(".", 1)[-1] for k in ok[0]["point"])
            ax.set_xlabel(f"engine area: yosys cells ({ok[0]['area_mode']})")
            ax.set_ylabel(unit)
            ax.grid(alpha=0.3)
            ax.text(0.01, 0.99, f"labels: {fields}", transform=ax.transAxes, va="top",
                    fontsize=8)  # fmt: skip
        else:
            ax.text(0.5, 0.5, "no point has both throughput and area\n(metrics.area = 'none'?)",
                    ha="center", va="center", transform=ax.transAxes)  # fmt: skip
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, metadata={"Software": None})
        plt.close(fig)
    return bool(ok)


def check_tools(spec: Spec) -> None:
    """Refuse a spec whose workload or area needs a tool this machine lacks (before any
    point runs). :class:`SweepSpecError` names the key. Workers elsewhere must have them too."""
    if spec.area in ("coarse", "full") and shutil.which("yosys") is None:
        raise _fail("metrics.area", f"{spec.area!r} needs yosys on PATH (apt install yosys)")
    if spec.workload.kind in ("engine", "run"):
        from tinyattn.sim.runner import simulator_missing

        missing = simulator_missing(spec.workload.sim)
        if missing:
            raise _fail("workload.sim", f"{spec.workload.sim}: {missing}")
    if spec.workload.kind == "run" and shutil.which("riscv64-unknown-elf-gcc") is None:
        raise _fail("workload.kind", "'run' needs riscv64-unknown-elf-gcc (make test installs it)")


def command(
    spec: Spec,
    out: Path,
    *,
    serial: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
) -> int:
    """``tinyattn sweep``: run, print the table and where the results are; exit status 0, or
    1 when a point failed (invalid points are results, not failures)."""
    check_tools(spec)
    points = spec.points()
    where = (
        "serially"
        if serial
        else f"on the Dask scheduler {scheduler}"
        if scheduler
        else f"on a Dask LocalCluster of {workers or default_workers()} workers"
    )
    print(
        f"tinyattn sweep: {len(points)} points ({spec.mode}, {len(spec.fields)} fields), "
        f"workload {spec.workload.kind}, area {spec.area}, {where}"
    )
    sys.stdout.flush()
    result = run_sweep(spec, out, serial=serial, scheduler=scheduler, workers=workers)
    print(format_table(result.rows))
    counts = {s: sum(r["status"] == s for r in result.rows) for s in ("ok", "invalid", "failed")}
    print(
        f"{counts['ok']} ok, {counts['invalid']} invalid, {counts['failed']} failed; "
        f"{result.evaluated} evaluated now, {result.skipped} done before; "
        f"{result.wall_s:.1f} s"
    )
    for path in (out / ROWS_FILE, result.csv, result.png):
        if path is not None:
            print(f"wrote {path}")
    return 1 if counts["failed"] else 0
