"""Functional coverage of the engine's jobs, the DMA's transfers and the interconnect's
bank conflicts (cocotb-coverage).

The model is built per configuration: a bin exists only when the configuration can
reach it (see :func:`engine_reachability`, :func:`dma_reachability` and
:func:`interconnect_reachability`), so "every bin hit" is a requirement a launcher can
assert. The bins are :class:`cocotb_coverage.coverage.CoverPoint` and ``CoverCross``
items in the library's global ``coverage_db``, under ``engine.``, ``dma.`` and
``interconnect.``; a bench samples the engine and DMA items where a job or a descriptor
**completes** (its ``done``), with what was true when it was pushed, the interconnect
items every cycle, and exports the database (``coverage.xml``) into its run folder.
The pytest launcher reads that file back with :func:`read_coverage` and
:func:`missing_bins`; nothing here imports cocotb, so the launcher side runs in plain
pytest.

Engine bins (one sample per completed job):

- ``kind``: GEMM, attention;
- ``flags``: the 16 epilogue flag combinations of a GEMM, and attention with its
  requantization in the job (``attention shared``) or per head (``attention per_head``,
  ``FLAG_PER_HEAD``);
- ``shape``: kind x m x n x k, each ragged or aligned: ``m`` against ``tile_m``, ``n``
  and ``k`` against ``vec_len`` (a GEMM unit is ``tile_m`` rows x ``vec_len`` channels,
  a chunk ``vec_len`` of the reduction; attention's keys are cut in ``vec_len`` chunks
  for P.V, its head dimension is one chunk);
- ``stall``: kind x the grant-withholding probability of the model L1 when the job was
  pushed: none (0), light (up to 0.35), heavy (above);
- ``occupancy``: kind x the engine's status when it was pushed: idle, or busy with
  0 .. ``job_queue_depth - 1`` jobs queued (a push needs room in the queue; ``busy`` is
  also high while jobs wait, so idle with jobs queued does not exist);
- ``error``: the code of every rejected job (all six classes);
- ``split``: the keys a unit scores per QK beat in an attention job (split-lane dot
  products, ``EngineConfig.split_for(k)``): each of 1 .. ``max_split`` a head dimension
  of the configuration reaches.

DMA bins (one sample per completed descriptor): ``transfer`` = direction x 1-D/2-D x
outcome (done, or the error class), and ``alignment`` = direction x beat-aligned / word
offsets, for the transfers that ran.

Interconnect bins (sampled every cycle at every bank, and at every grant):

- ``collision``: the requesters of one bank in one cycle, by side (narrow ports only,
  wide lanes only, both) x how many (2, 3 or more);
- ``conflict``: who won a bank that narrow ports and wide lanes requested in the same
  cycle: the wide side, or the narrow side (only once the bank's stall counter reached
  ``max_stall``);
- ``wait``: side x the wait of a granted request: granted at once, waited, or waited
  exactly the side's worst-case bound (the near miss: one cycle more is a failure).
"""

from __future__ import annotations

import ast
import itertools
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from cocotb_coverage.coverage import CoverCross, CoverPoint, coverage_db

from tinyattn.config import ClusterConfig
from tinyattn.hw.interconnect import n_narrow, narrow_wait_bound, wide_wait_bound
from tinyattn.hw.job import (
    FLAG_AFFINE,
    FLAG_PER_HEAD,
    FLAG_PER_ROW,
    FLAG_RELU,
    FLAG_RESIDUAL,
    PARAM_RECORD_BYTES,
    JobError,
    Op,
)

__all__ = [
    "COVERAGE_FILE",
    "DmaCoverage",
    "EngineCoverage",
    "InterconnectCoverage",
    "attention_flags_label",
    "bins_table",
    "dma_coverage",
    "dma_reachability",
    "engine_coverage",
    "engine_reachability",
    "flags_label",
    "interconnect_coverage",
    "interconnect_reachability",
    "missing_bins",
    "occupancy_label",
    "read_coverage",
    "split_label",
    "stall_class",
    "summary_line",
]

#: A coverage model class (:class:`EngineCoverage`, :class:`DmaCoverage`, ...).
_Model = TypeVar("_Model")

#: Name of the exported coverage database in a bench's run folder.
COVERAGE_FILE = "coverage.xml"

KINDS = ("gemm", "attention")
RAGGED, ALIGNED = "ragged", "aligned"
#: Stall classes and the withholding probability a bench uses to reach each.
STALL_RATES = {"none": 0.0, "light": 0.3, "heavy": 0.6}
_FLAG_NAMES = ((FLAG_RELU, "relu"), (FLAG_RESIDUAL, "residual"), (FLAG_AFFINE, "affine"),
               (FLAG_PER_ROW, "per_row"))  # fmt: skip
DMA_OUTCOMES = ("done", "zero size", "misaligned", "L1 range", "L2 range")
DMA_DIRECTIONS = ("L2->L1", "L1->L2")


def flags_label(flags: int) -> str:
    """``relu+affine``, or ``plain`` for no flag."""
    return "+".join(name for bit, name in _FLAG_NAMES if flags & bit) or "plain"


def attention_flags_label(flags: int) -> str:
    """``attention per_head`` (``FLAG_PER_HEAD``) or ``attention shared``."""
    return "attention per_head" if flags & FLAG_PER_HEAD else "attention shared"


ATTENTION_FLAG_BINS = (attention_flags_label(0), attention_flags_label(FLAG_PER_HEAD))


def stall_class(withhold: float) -> str:
    """none (0), light (up to 0.35) or heavy (above) grant withholding."""
    if withhold <= 0:
        return "none"
    return "light" if withhold <= 0.35 else "heavy"


def _drop(prefix: str) -> None:
    """Forget the items under ``prefix`` (a model rebuilt for another configuration)."""
    for name in [n for n in coverage_db if n == prefix or n.startswith(prefix + ".")]:
        del coverage_db[name]


def _apply(f: Callable[..., None], points: Sequence[Any], crosses: Sequence[Any]) -> Callable:
    # Crosses read the points' hits of the same call, so points run first (outermost).
    for item in [*crosses, *reversed(points)]:
        f = item(f)
    return f


# ------------------------------------------------------------------------------------- engine


def _ragged_classes(step: int, largest: int, granule: int = 1) -> list[str]:
    """The classes a dimension can take when it must be a multiple of ``granule`` in
    ``granule..largest``, against a tile of ``step``: ragged needs such a value that is no
    multiple of ``step`` (``granule`` itself is one unless ``step`` divides it), aligned a
    common multiple of both within ``largest``."""
    out = []
    if granule <= largest and granule % step:
        out.append(RAGGED)
    if math.lcm(step, granule) <= largest:
        out.append(ALIGNED)
    return out


def _shape_label(m: str, n: str, k: str) -> str:
    return f"m {m}, n {n}, k {k}"


def _busy_label(queued: int) -> str:
    return f"busy, {queued} queued"


def occupancy_label(busy: int, queued: int) -> str:
    """The engine's status at a push: ``idle`` or ``busy, <n> queued``."""
    return _busy_label(queued) if busy else "idle"


def _fits(cfg: ClusterConfig, nbytes: int) -> bool:
    return nbytes <= cfg.memory.size_bytes


def engine_reachability(cfg: ClusterConfig) -> dict[str, list[str]]:
    """Per kind and dimension, the raggedness classes the configuration can reach.

    A class is reachable when a valid job of that class exists: GEMM ``m`` in
    ``1..max_dim``, ``n`` and ``k`` multiples of 4 up to ``max_dim``; attention queries
    as GEMM ``m``, keys multiples of ``n_pe`` up to ``max_seq``, head dimension a
    multiple of 4 up to ``vec_len``; and the smallest such job must fit in L1 (X, Wᵀ,
    Y and the parameter records; Q, K, Vᵀ and O).
    """
    e = cfg.engine
    out: dict[str, list[str]] = {}
    gemm_m = _ragged_classes(e.tile_m, e.max_dim)
    if ALIGNED in gemm_m and not _fits(cfg, e.tile_m * (4 + 4) + 16 + 4 * PARAM_RECORD_BYTES):
        gemm_m.remove(ALIGNED)
    out["gemm m"] = gemm_m
    out["gemm n"] = _ragged_classes(e.vec_len, e.max_dim, 4)
    out["gemm k"] = _ragged_classes(e.vec_len, e.max_dim, 4)
    att_m = _ragged_classes(e.tile_m, e.max_dim)
    if ALIGNED in att_m and not _fits(cfg, 2 * e.tile_m * 4 + 2 * 4 * e.n_pe):
        att_m.remove(ALIGNED)
    out["attention m"] = att_m
    out["attention n"] = _ragged_classes(e.vec_len, e.max_seq, e.n_pe)
    out["attention k"] = _ragged_classes(e.vec_len, e.vec_len, 4)
    return out


@dataclass(frozen=True)
class _JobSample:
    kind: str | None  # None: a rejected job
    flags: str | None
    shape: str | None
    stall: str
    occupancy: str
    error: str | None
    split: str | None = None  # attention: split_label of its head dimension


class EngineCoverage:
    """The engine's coverage model for one configuration (see the module docstring)."""

    def __init__(self, cfg: ClusterConfig) -> None:
        _drop("engine")
        self.cfg = cfg
        e = cfg.engine
        self.reach = engine_reachability(cfg)
        self.shapes = {
            kind: [
                _shape_label(*c)
                for c in itertools.product(
                    self.reach[f"{kind} m"], self.reach[f"{kind} n"], self.reach[f"{kind} k"]
                )
            ]
            for kind in KINDS
        }
        self.depth = e.job_queue_depth
        self.occupancies = ["idle"] + [_busy_label(q) for q in range(self.depth)]
        self.errors = [err.name.lower() for err in JobError if err != JobError.NONE]
        self.splits = sorted(
            {split_label(e.split_for(k)) for k in range(4, e.vec_len + 1, 4)},
            key=lambda label: int(label.split()[1]),
        )
        points = [
            CoverPoint("engine.kind", xf=lambda s: s.kind, bins=list(KINDS)),
            CoverPoint(
                "engine.flags",
                xf=lambda s: s.flags,
                bins=[flags_label(f) for f in range(16)] + list(ATTENTION_FLAG_BINS),
            ),
            CoverPoint(
                "engine.shape_bins",
                xf=lambda s: s.shape,
                bins=[_shape_label(*c) for c in itertools.product((RAGGED, ALIGNED), repeat=3)],
            ),
            CoverPoint("engine.stall_bins", xf=lambda s: s.stall, bins=list(STALL_RATES)),
            CoverPoint("engine.queue", xf=lambda s: s.occupancy, bins=self.occupancies),
            CoverPoint("engine.error", xf=lambda s: s.error, bins=self.errors),
            CoverPoint("engine.split", xf=lambda s: s.split, bins=self.splits),
        ]
        shape_ign = [
            (kind, shape)
            for kind in KINDS
            for shape in points[2].detailed_coverage
            if shape not in self.shapes[kind]
        ]
        crosses = [
            CoverCross(
                "engine.shape", items=["engine.kind", "engine.shape_bins"], ign_bins=shape_ign
            ),
            CoverCross("engine.stall", items=["engine.kind", "engine.stall_bins"]),
            CoverCross("engine.occupancy", items=["engine.kind", "engine.queue"]),
        ]
        self._sample = _apply(_sample_engine_job, points, crosses)
        self._aimed_flags: set[int] = set()

    # -- sampling

    def shape_of(self, m: int, n: int, k: int) -> str:
        """``m ragged, n aligned, k ragged``: m against tile_m, n and k against vec_len."""
        e = self.cfg.engine
        return _shape_label(
            RAGGED if m % e.tile_m else ALIGNED,
            RAGGED if n % e.vec_len else ALIGNED,
            RAGGED if k % e.vec_len else ALIGNED,
        )

    def sample(self, job: Any, error: int, withhold: float, occupancy: str) -> None:
        """One completed job: its descriptor, its error code, the withholding probability
        and the engine's status when it was pushed (:func:`occupancy_label`)."""
        stall = stall_class(withhold)
        if error:
            s = _JobSample(None, None, None, stall, occupancy, JobError(error).name.lower())
        else:
            kind = "gemm" if job.op == Op.GEMM else "attention"
            self._aimed_flags.discard(job.flags)
            flags = flags_label(job.flags) if kind == "gemm" else attention_flags_label(job.flags)
            shape = self.shape_of(job.m, job.n, job.k)
            split = split_label(self.cfg.engine.split_for(job.k)) if kind == "attention" else None
            s = _JobSample(kind, flags, shape, stall, occupancy, None, split)
        self._sample(s)

    # -- closure-directed stimulus: a random choice among the bins not hit yet

    def _unhit(self, name: str) -> list[Any]:
        return [b for b, hits in coverage_db[name].detailed_coverage.items() if not hits]

    def pick_flags(self, rng: np.random.Generator) -> int:
        """Flags of a GEMM whose flag bin is not hit yet, preferring those no job still
        in flight aims at (jobs queued together are drawn before any completes), else
        any."""
        unhit = set(self._unhit("engine.flags"))
        choices = [f for f in range(16) if flags_label(f) in unhit]
        fresh = [f for f in choices if f not in self._aimed_flags]
        flags = int(rng.choice(fresh or choices or list(range(16))))
        self._aimed_flags.add(flags)
        return flags

    def flags_open(self) -> bool:
        """True while a GEMM flag bin is not hit."""
        return any(b not in ATTENTION_FLAG_BINS for b in self._unhit("engine.flags"))

    def pick_per_head(self, rng: np.random.Generator) -> bool:
        """Whether an attention job should have ``FLAG_PER_HEAD``: a form whose flag bin
        is not hit yet, else either."""
        unhit = [b for b in self._unhit("engine.flags") if b in ATTENTION_FLAG_BINS]
        choices = unhit or list(ATTENTION_FLAG_BINS)
        return choices[int(rng.integers(len(choices)))] == ATTENTION_FLAG_BINS[1]

    def pick_shape(self, kind: str, rng: np.random.Generator) -> tuple[bool, bool, bool]:
        """(m, n, k) raggedness of a ``kind`` job whose shape bin is not hit yet, else any
        reachable one; True = ragged."""
        unhit = [shape for k, shape in self._unhit("engine.shape") if k == kind]
        choices = unhit or self.shapes[kind]
        shape = choices[int(rng.integers(len(choices)))]
        m, n, k = (RAGGED in part for part in shape.split(", "))
        return m, n, k

    def pick_head_dim(self, k: int, rng: np.random.Generator) -> int:
        """An attention head dimension in ``k``'s shape class (ragged or aligned) whose split
        bin is not hit yet, if the class has one; else ``k``."""
        e = self.cfg.engine
        unhit = set(self._unhit("engine.split"))
        same_class = [
            d for d in range(4, e.vec_len + 1, 4) if (d % e.vec_len == 0) == (k == e.vec_len)
        ]
        choices = [d for d in same_class if split_label(e.split_for(d)) in unhit]
        return int(rng.choice(choices)) if choices else k

    def pick_stall(self, kind: str, rng: np.random.Generator, default: float) -> float:
        """A withholding probability for a ``kind`` job whose stall class is not hit yet,
        else ``default``."""
        unhit = [stall for k, stall in self._unhit("engine.stall") if k == kind]
        return STALL_RATES[unhit[int(rng.integers(len(unhit)))]] if unhit else default

    def occupancy_open(self, occupancy: str) -> list[str]:
        """The kinds whose bin at ``occupancy`` (:func:`occupancy_label`) is not hit yet."""
        return [k for k, a in self._unhit("engine.occupancy") if a == occupancy]

    def export(self, path: str | Path = COVERAGE_FILE) -> None:
        _export("engine", path)


def split_label(split: int) -> str:
    """The ``split`` bin of a QK beat scoring ``split`` keys a unit."""
    return f"split {split}"


def _sample_engine_job(sample: _JobSample) -> None:
    """The sampled function (the cover items wrap it)."""


#: The coverage models of this process, by class (see :func:`_process_model`).
_PROCESS_MODELS: dict[type, Any] = {}


def _process_model(cls: type[_Model], cfg: ClusterConfig) -> _Model:
    """The ``cls`` model of this process (one per simulation run: it collects the hits of
    every cocotb test of the run); rebuilt empty for another configuration."""
    model = _PROCESS_MODELS.get(cls)
    if model is None or model.cfg != cfg:
        model = _PROCESS_MODELS[cls] = cls(cfg)
    return model


def engine_coverage(cfg: ClusterConfig) -> EngineCoverage:
    """The engine model of this process (:func:`_process_model`)."""
    return _process_model(EngineCoverage, cfg)


# ---------------------------------------------------------------------------------------- DMA


def dma_reachability(cfg: ClusterConfig) -> dict[str, list[str]]:
    """What the DMA configuration can reach.

    Every direction, 1-D/2-D shape and error class is reachable in every configuration
    (an L2 range error needs an end past ``2**l2_addr_bits``, which a 32-bit sum of
    ``rows * l2_stride`` reaches even at 32 address bits). Word offsets inside a beat
    (a start, length or stride that is no multiple of the beat) need a beat wider than a
    word: ``dma_bits > 32``.
    """
    align = ["beat-aligned"] + (["word offsets"] if cfg.dma.dma_bits > 32 else [])
    return {"direction": list(DMA_DIRECTIONS), "shape": ["1-D", "2-D"],
            "outcome": list(DMA_OUTCOMES), "alignment": align}  # fmt: skip


@dataclass(frozen=True)
class _DmaSample:
    direction: str
    shape: str
    outcome: str
    alignment: str | None


class DmaCoverage:
    """The DMA's coverage model for one configuration (see the module docstring)."""

    def __init__(self, cfg: ClusterConfig) -> None:
        _drop("dma")
        self.cfg = cfg
        self.beat = cfg.dma.dma_bits // 8
        self.reach = dma_reachability(cfg)
        points = [
            CoverPoint("dma.direction", xf=lambda s: s.direction, bins=self.reach["direction"]),
            CoverPoint("dma.shape", xf=lambda s: s.shape, bins=self.reach["shape"]),
            CoverPoint("dma.outcome", xf=lambda s: s.outcome, bins=self.reach["outcome"]),
            CoverPoint("dma.align", xf=lambda s: s.alignment, bins=self.reach["alignment"]),
        ]
        crosses = [
            CoverCross("dma.transfer", items=["dma.direction", "dma.shape", "dma.outcome"]),
            CoverCross("dma.alignment", items=["dma.direction", "dma.align"]),
        ]
        self._sample = _apply(_sample_dma_transfer, points, crosses)

    def classify(self, d: Any, code: int) -> _DmaSample:
        direction = DMA_DIRECTIONS[d.direction]
        two_d = d.rows > 1 and (d.l1_stride != d.row_bytes or d.l2_stride != d.row_bytes)
        outcome = DMA_OUTCOMES[code]
        alignment = None
        if code == 0:
            fields = (d.l1_addr, d.l2_addr, d.row_bytes, d.l1_stride, d.l2_stride)
            alignment = "word offsets" if any(v % self.beat for v in fields) else "beat-aligned"
        return _DmaSample(direction, "2-D" if two_d else "1-D", outcome, alignment)

    def sample(self, d: Any, code: int) -> None:
        """One completed descriptor and its class (0: it ran)."""
        self._sample(self.classify(d, code))

    def unhit_transfers(self) -> list[tuple[str, str, str]]:
        return [b for b, hits in coverage_db["dma.transfer"].detailed_coverage.items() if not hits]

    def export(self, path: str | Path = COVERAGE_FILE) -> None:
        _export("dma", path)


def _sample_dma_transfer(sample: _DmaSample) -> None:
    """The sampled function (the cover items wrap it)."""


def dma_coverage(cfg: ClusterConfig) -> DmaCoverage:
    """The DMA model of this process (:func:`_process_model`)."""
    return _process_model(DmaCoverage, cfg)


# ------------------------------------------------------------------------------- interconnect

SIDES = ("narrow", "wide")
#: Who requested a bank in a collision: narrow ports only, wide lanes only, or both.
COLLISION_SIDES = ("narrow", "wide", "narrow+wide")
#: How many requesters a collision has (one requester is no collision).
CROWDS = ("2", "3+")
CONFLICT_WINNERS = ("wide won", "narrow won")
WAIT_CLASSES = ("at once", "waited", "at the bound")


def interconnect_reachability(cfg: ClusterConfig) -> dict[str, list[Any]]:
    """What the interconnect configuration can reach, with ``N = n_narrow`` narrow ports
    and ``W = port_lanes`` wide lanes (every configuration has ``N >= 2``, ``W >= 1``).

    - ``collision``: (side, crowd) when that side has as many ports: narrow needs
      ``N >= 2`` for 2 and ``N >= 3`` for 3+, wide ``W >= 2`` and ``W >= 3``, both sides
      together ``N + W`` (all ports may address one bank).
    - ``conflict``: both winners (the narrow side wins after ``max_stall`` consecutive
      wide wins, ``max_stall >= 1``).
    - ``wait``: per side, at once and at the bound always (the bounds are tight:
      ``docs/interconnect.md``); waited (1 up to the bound less one) when the bound is at
      least 2: always for a narrow port (``N * (S + 1) - 1 >= 3``), for a wide lane when
      ``W >= 2`` (a lane alone waits only for the narrow side, once).
    """
    sizes = {"narrow": n_narrow(cfg), "wide": cfg.engine.port_lanes}
    sizes["narrow+wide"] = sizes["narrow"] + sizes["wide"]
    collision = [
        (side, crowd)
        for side in COLLISION_SIDES
        for crowd in CROWDS
        if sizes[side] >= (2 if crowd == "2" else 3)
    ]
    bounds = {"narrow": narrow_wait_bound(cfg), "wide": wide_wait_bound(cfg)}
    wait = [(side, c) for side in SIDES for c in WAIT_CLASSES if c != "waited" or bounds[side] >= 2]
    return {"collision": collision, "conflict": list(CONFLICT_WINNERS), "wait": wait}


@dataclass(frozen=True)
class _CollisionSample:
    side: str
    crowd: str


@dataclass(frozen=True)
class _WaitSample:
    side: str
    wait: str


class InterconnectCoverage:
    """The interconnect's coverage model for one configuration (see the module docstring)."""

    def __init__(self, cfg: ClusterConfig) -> None:
        _drop("interconnect")
        self.cfg = cfg
        self.reach = interconnect_reachability(cfg)
        self.bounds = {"narrow": narrow_wait_bound(cfg), "wide": wide_wait_bound(cfg)}
        every_collision = itertools.product(COLLISION_SIDES, CROWDS)
        every_wait = itertools.product(SIDES, WAIT_CLASSES)
        self._collision = _apply(
            _sample_collision,
            [
                CoverPoint("interconnect.sides", xf=lambda s: s.side, bins=list(COLLISION_SIDES)),
                CoverPoint("interconnect.crowd", xf=lambda s: s.crowd, bins=list(CROWDS)),
            ],
            [
                CoverCross(
                    "interconnect.collision",
                    items=["interconnect.sides", "interconnect.crowd"],
                    ign_bins=[b for b in every_collision if b not in self.reach["collision"]],
                )
            ],
        )
        self._conflict = _apply(
            _sample_conflict,
            [CoverPoint("interconnect.conflict", xf=lambda w: w, bins=list(CONFLICT_WINNERS))],
            [],
        )
        self._wait = _apply(
            _sample_wait,
            [
                CoverPoint("interconnect.side", xf=lambda s: s.side, bins=list(SIDES)),
                CoverPoint("interconnect.wait_class", xf=lambda s: s.wait, bins=list(WAIT_CLASSES)),
            ],
            [
                CoverCross(
                    "interconnect.wait",
                    items=["interconnect.side", "interconnect.wait_class"],
                    ign_bins=[b for b in every_wait if b not in self.reach["wait"]],
                )
            ],
        )

    def sample_bank(self, narrow: int, wide: int, winner: str | None) -> None:
        """One bank in one cycle: its ``narrow`` and ``wide`` requesters (counts) and the
        side granted (``"narrow"``, ``"wide"``; None when nobody requested)."""
        crowd = narrow + wide
        if crowd < 2:
            return
        side = "narrow+wide" if narrow and wide else ("narrow" if narrow else "wide")
        self._collision(_CollisionSample(side, "2" if crowd == 2 else "3+"))
        if narrow and wide:
            if winner not in SIDES:
                raise ValueError(f"a contended bank was granted to {winner!r}, not a side")
            self._conflict(f"{winner} won")

    def sample_wait(self, side: str, wait: int) -> None:
        """One grant: the requesting ``side`` and its wait in cycles (0: granted at once)."""
        bound = self.bounds[side]
        if not 0 <= wait <= bound:
            raise ValueError(f"a {side} wait of {wait} cycles is outside 0..{bound}")
        c = "at once" if wait == 0 else ("at the bound" if wait == bound else "waited")
        self._wait(_WaitSample(side, c))

    def export(self, path: str | Path = COVERAGE_FILE) -> None:
        _export("interconnect", path)


def _sample_collision(sample: _CollisionSample) -> None:
    """The sampled function (the cover items wrap it)."""


def _sample_conflict(winner: str) -> None:
    """The sampled function (the cover items wrap it)."""


def _sample_wait(sample: _WaitSample) -> None:
    """The sampled function (the cover items wrap it)."""


def interconnect_coverage(cfg: ClusterConfig) -> InterconnectCoverage:
    """The interconnect model of this process (:func:`_process_model`)."""
    return _process_model(InterconnectCoverage, cfg)


# ------------------------------------------------------------------------- export and reading


def _export(prefix: str, path: str | Path) -> None:
    # Only this model's items: another model in the same process stays out of the file.
    others = {n: coverage_db.pop(n) for n in list(coverage_db) if not n.startswith(prefix)}
    try:
        coverage_db.export_to_xml(str(path))
    finally:
        coverage_db.update(others)


#: The reported (and required) items of each model: the crosses and the points that are
#: no cross's axis of their own.
REQUIRED = {
    "engine": ("kind", "flags", "shape", "stall", "occupancy", "error", "split"),
    "dma": ("transfer", "alignment"),
    "interconnect": ("collision", "conflict", "wait"),
}


def _label(raw: str) -> str:
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
    if isinstance(value, tuple):
        return " x ".join(map(str, value))
    return str(value)


def read_coverage(path: str | Path) -> dict[str, dict[str, int]]:
    """An exported database: ``{item: {bin label: hits}}`` for the required items of
    the model in it (``engine.flags``, ``dma.transfer``, ...)."""
    root = ET.parse(path).getroot()
    out: dict[str, dict[str, int]] = {}
    for elem in root.iter():
        name = elem.get("abs_name", "").removeprefix("top.")
        model, _, item = name.partition(".")
        if item in REQUIRED.get(model, ()):
            out[name] = {_label(b.get("bin", "")): int(b.get("hits", "0")) for b in elem}
    order = [f"{model}.{item}" for model, items in REQUIRED.items() for item in items]
    return {name: out[name] for name in order if name in out}


def missing_bins(cov: dict[str, dict[str, int]]) -> list[str]:
    """``item: bin`` for every bin never hit."""
    return [f"{item}: {b}" for item, bins in cov.items() for b, hits in bins.items() if not hits]


def summary_line(cov: dict[str, dict[str, int]]) -> str:
    """``58/58 bins (kind 2/2, flags 16/16, ...)``."""
    parts = []
    hit = total = 0
    for item, bins in cov.items():
        h = sum(1 for v in bins.values() if v)
        hit, total = hit + h, total + len(bins)
        parts.append(f"{item.partition('.')[2]} {h}/{len(bins)}")
    return f"{hit}/{total} bins ({', '.join(parts)})"


def bins_table(cov: dict[str, dict[str, int]]) -> Iterable[str]:
    """Every bin with its hits, one a line (for a log or a report)."""
    for item, bins in cov.items():
        for b, hits in bins.items():
            yield f"{item}: {b}: {hits}"
