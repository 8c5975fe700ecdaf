"""Where each engine op's L1 buffers go, so that the next op's first tiles load early.

The tiler (:func:`tinyattn.sw.tiler.plan_op`) picks each op's tiles and buffer sizes on its
own; their L1 addresses are free. :func:`tinyattn.sw.stream.build_stream` loads an op's
first tiles while the previous op finishes, but only the pieces that miss the L1 of that
op's last jobs and the L2 bytes of its last store (:func:`tinyattn.sw.stream.split_around`
cuts a load around the store). :func:`place_ops` therefore moves each op's buffers, stacked
in every order from the bottom of L1 up and from the top down, with double buffers starting
in either slot, so that the pieces worth the most DMA cycles miss the previous op's last
job; and it looks one op ahead, since where an op's last job sits decides what the next
op can load early.

Everything is in bytes of L1. Scores depend only on relative geometry (buffer sizes, offsets
in buffers, the previous job's L1), so the layers of a model share them through a memo.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from tinyattn.config import ClusterConfig
from tinyattn.hw.dma_codes import Direction
from tinyattn.sw.stream import split_around
from tinyattn.sw.tiler import (
    JOB,
    LOAD,
    STORE,
    Action,
    CostModel,
    OpPlan,
    dma_cycles,
    op_actions,
)
from tinyattn.verif.engine_model import job_extents

__all__ = ["place_ops"]

#: Placements of an op (the best ones that leave the next op a different L1) that are tried
#: against the next op.
_LOOKAHEAD = 10

Span = tuple[int, int]


@dataclass(frozen=True)
class _Geometry:
    """What placing one op depends on, relative to its own buffers.

    ``pieces[first]``: the pieces of its first loads that read no L2 byte of the previous
    op's last store, as ``(buffer, offset, extent, DMA cycles)``; ``holds[first]``: the L1
    of its last job as ``(buffer, offset, extent)``; double buffers start in slot ``first``.
    """

    sizes: tuple[tuple[str, int], ...]
    pieces: tuple[tuple[tuple[str, int, int, int], ...], ...]
    holds: tuple[tuple[tuple[str, int, int], ...], ...]


def _geometry(
    plan: OpPlan, prev_store: Action | None, cfg: ClusterConfig, cost: CostModel
) -> _Geometry:
    bufs = plan.arena.buffers

    def buffer_of(addr: int) -> str:
        return next(k for k, b in bufs.items() if b.addr <= addr < b.end)

    pieces, holds = [], []
    for first in (0, 1):
        acts = op_actions(plan.with_first_slot(first).record, cost)
        mine = []
        for a in acts[1:]:
            if a[0] != LOAD:
                break
            key = buffer_of(a[2])
            cuts = split_around(a, prev_store) if prev_store else [(a, True)]
            for ld, independent in cuts:
                if independent:
                    extent = (ld[4] - 1) * ld[6] + ld[3]
                    cycles = dma_cycles(Direction.L2_TO_L1, *ld[1:7], cfg, cost)
                    mine.append((key, ld[2] - bufs[key].addr, extent, cycles))
        pieces.append(tuple(mine))
        last = next(a[1] for a in reversed(acts) if a[0] == JOB)
        holds.append(
            tuple(
                (buffer_of(lo), lo - bufs[buffer_of(lo)].addr, hi - lo)
                for lo, hi in job_extents(last).values()
            )
        )
    sizes = tuple(sorted((k, b.end - b.addr) for k, b in bufs.items()))
    return _Geometry(sizes, tuple(pieces), tuple(holds))


@functools.cache
def _arrangements(sizes: tuple[tuple[str, int], ...], capacity: int) -> tuple[dict[str, int], ...]:
    """Buffer addresses: every order, the first ``split`` stacked up from 0, the rest down
    from ``capacity``. Stacked from 0 in name order comes first (ties keep it)."""
    out = []
    for order in itertools.permutations(k for k, _ in sizes):
        for split in range(len(order), -1, -1):
            size = dict(sizes)
            addrs, lo, hi = {}, 0, capacity
            for k in order[:split]:
                addrs[k], lo = lo, lo + size[k]
            for k in order[split:]:
                hi -= size[k]
                addrs[k] = hi
            out.append(addrs)
    return tuple(out)


@functools.cache
def _ranked(
    geo: _Geometry, busy: tuple[Span, ...], capacity: int
) -> tuple[tuple[int, int, int], ...]:
    """``(early cycles, arrangement, first)`` for every placement against ``busy`` (the L1
    of the previous op's last job), the most first (ties in arrangement order): the DMA
    cycles of the first-load pieces that miss ``busy``."""

    @functools.cache
    def early(key: str, addr: int, first: int) -> int:
        return sum(
            cycles
            for k, offset, extent, cycles in geo.pieces[first]
            if k == key
            and not any(addr + offset < b1 and b0 < addr + offset + extent for b0, b1 in busy)
        )

    arrangements = _arrangements(geo.sizes, capacity)
    scored = [
        (sum(early(k, a, f) for k, a in addrs.items()), i, f)
        for i, addrs in enumerate(arrangements)
        for f in (0, 1)
    ]
    return tuple(sorted(scored, key=lambda x: (-x[0], x[1], x[2])))


def _held(geo: _Geometry, addrs: dict[str, int], first: int) -> tuple[Span, ...]:
    return tuple(sorted((addrs[k] + off, addrs[k] + off + n) for k, off, n in geo.holds[first]))


def place_ops(
    plans: Sequence[OpPlan], capacity: int, cfg: ClusterConfig, cost: CostModel
) -> list[OpPlan]:
    """``plans`` (consecutive engine ops) with their buffers moved for early first loads.

    The first op keeps its addresses. Each later op takes, of its ``_LOOKAHEAD`` best
    placements against its predecessor's last job (distinct in the L1 their own last job
    holds), the one whose early cycles plus the next op's best early cycles after it are
    the most.
    """
    if not plans:
        return []
    stores = [next(a for a in reversed(op_actions(p.record, cost)) if a[0] == STORE) for p in plans]
    geos = [_geometry(p, stores[i - 1] if i else None, cfg, cost) for i, p in enumerate(plans)]
    out = [plans[0]]
    first0 = plans[0].record.first_slot
    own0 = {k: b.addr for k, b in plans[0].arena.buffers.items()}
    busy = _held(geos[0], own0, first0)
    for r in range(1, len(plans)):
        geo = geos[r]
        arrangements = _arrangements(geo.sizes, capacity)
        ranked = _ranked(geo, busy, capacity)
        choice = ranked[0]
        if r + 1 < len(plans):
            # Early cycles of this op plus the best of the next one, over the first
            # _LOOKAHEAD placements that leave the next op a different L1.
            seen: set[tuple[Span, ...]] = set()
            options = []
            for score, i, f in ranked:
                held = _held(geo, arrangements[i], f)
                if held in seen:
                    continue
                seen.add(held)
                ahead = _ranked(geos[r + 1], held, capacity)[0][0]
                options.append((score + ahead, -len(options), (score, i, f)))
                if len(options) == _LOOKAHEAD:
                    break
            choice = max(options)[2]
        _, i, f = choice
        out.append(plans[r].placed(arrangements[i]).with_first_slot(f))
        busy = _held(geo, arrangements[i], f)
    return out
