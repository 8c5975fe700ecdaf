"""Op boundaries: a first load cut around the previous op's last store, the placement that
lets those pieces load early, and the stream that pushes them while the previous op runs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyattn.config import ClusterConfig
from tinyattn.hw.dma import ALIGN_BYTES
from tinyattn.sw.deploy_flow import prepare
from tinyattn.sw.schedule import Schedule, deploy
from tinyattn.sw.stream import split_around
from tinyattn.sw.tiler import JOB, LOAD, MARK, STORE, op_actions
from tinyattn.verif.engine_model import job_extents

L2_BYTES = 1 << 14


def _bytes_of(act: tuple, size: int = L2_BYTES) -> np.ndarray:
    """A mask of the L2 bytes that a LOAD / STORE action touches."""
    mask = np.zeros(size, bool)
    _, l2, _, nbytes, rows, l2_stride = act[:6]
    for r in range(rows):
        mask[l2 + r * l2_stride : l2 + r * l2_stride + nbytes] = True
    return mask


def _l1_hits(act: tuple, size: int = L2_BYTES) -> np.ndarray:
    """How often each L1 byte is written by a LOAD action."""
    hits = np.zeros(size, int)
    _, _, l1, nbytes, rows, _, l1_stride = act[:7]
    for r in range(rows):
        hits[l1 + r * l1_stride : l1 + r * l1_stride + nbytes] += 1
    return hits


def _check_cut(load: tuple, store: tuple) -> list[tuple[tuple, bool]]:
    pieces = split_around(load, store)
    stored = _bytes_of(store)
    # The pieces write exactly the load's L1 bytes, once each, from the same L2 bytes.
    assert np.array_equal(sum(_l1_hits(p) for p, _ in pieces), _l1_hits(load))
    assert np.array_equal(np.logical_or.reduce([_bytes_of(p) for p, _ in pieces]), _bytes_of(load))
    for piece, independent in pieces:
        assert piece[0] == LOAD and piece[4] >= 1 and piece[3] > 0
        assert all(v % ALIGN_BYTES == 0 for v in piece[1:4]), piece
        # Independent pieces read no stored byte; the rest read at least one.
        assert (not (_bytes_of(piece) & stored).any()) == independent, (piece, independent)
    return pieces


def test_a_tile_whose_last_columns_were_stored_last() -> None:
    """The 32 x 512 X tile of an FFN output op after the intermediate op stored columns
    448..511 of all 128 rows: only those columns of the tile wait for the store."""
    pitch = 512
    store = (STORE, 448, 0, 64, 16, pitch, 64)
    load = (LOAD, 0, 0, 512, 16, pitch, 512)
    pieces = _check_cut(load, store)
    assert [(p[3], p[4], ok) for p, ok in pieces] == [(448, 16, True), (64, 16, False)]


def test_a_tile_whose_last_rows_were_stored_last() -> None:
    store = (STORE, 24 * 128, 0, 128, 8, 128, 128)
    load = (LOAD, 0, 0, 128, 32, 128, 128)
    pieces = _check_cut(load, store)
    assert [(p[4], ok) for p, ok in pieces] == [(24, True), (8, False)]


def test_a_tile_the_store_missed_is_one_piece() -> None:
    store = (STORE, 8192, 0, 256, 4, 256, 256)
    load = (LOAD, 0, 64, 256, 16, 256, 256)
    assert _check_cut(load, store) == [(load, True)]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.integers(0, 63), st.integers(1, 32), st.integers(1, 12), st.integers(0, 16),
    st.integers(0, 63), st.integers(1, 32), st.integers(1, 12), st.integers(0, 16),
)  # fmt: skip
def test_any_cut_covers_the_load_once(
    l_addr: int, l_words: int, l_rows: int, l_extra: int,
    s_addr: int, s_words: int, s_rows: int, s_extra: int,
) -> None:  # fmt: skip
    """Random word-aligned geometries (strides at least a row, or any for one row)."""
    load = (LOAD, 4 * l_addr, 4 * l_addr, 4 * l_words, l_rows, 4 * (l_words + l_extra),
            4 * (l_words + l_extra))  # fmt: skip
    store = (STORE, 4 * s_addr, 0, 4 * s_words, s_rows, 4 * (s_words + s_extra),
             4 * s_words)  # fmt: skip
    _check_cut(load, store)


# ---- the stream over a real model ----------------------------------------------------------


@pytest.fixture(scope="module")
def schedule() -> Schedule:
    p = prepare("synthetic", layers=1, seq_len=128)
    return deploy(p.qmodel, ClusterConfig(), 128)


def _segments(sched: Schedule) -> list[list[tuple]]:
    """The stream's actions of each engine op, from its STAMP to the next."""
    acts = sched.stream.actions
    marks = [i for i, a in enumerate(acts) if a[0] == MARK]
    return [list(acts[a:b]) for a, b in itertools.pairwise(marks)]


def _hoisted(sched: Schedule, r: int) -> list[tuple]:
    """The loads of op ``r + 1``'s first tiles that the stream pushes while op ``r`` runs."""
    records = sched.records[sched.prologue :]
    mine = {a[1:] for a in op_actions(records[r], sched.cost.sequencer()) if a[0] == LOAD}
    nxt = _first_l1(records[r + 1], sched)
    return [a for a in _segments(sched)[r] if a[0] == LOAD and a[1:] not in mine and a[2] in nxt]


def _first_l1(rec: object, sched: Schedule) -> set[int]:
    acts = op_actions(rec, sched.cost.sequencer())  # type: ignore[arg-type]
    out = set()
    for a in acts[1:]:
        if a[0] != LOAD:
            break
        out |= set(range(a[2], a[2] + (a[4] - 1) * a[6] + a[3], ALIGN_BYTES))
    return out


def test_most_first_loads_go_while_the_previous_op_runs(schedule: Schedule) -> None:
    """Deterministic: most first-tile pieces are pushed before their op begins."""
    segments = _segments(schedule)
    early = total = 0
    for r in range(1, len(segments)):
        own = segments[r]
        first_job = next(i for i, a in enumerate(own) if a[0] == JOB)
        hoisted = len(_hoisted(schedule, r - 1))
        early += hoisted
        total += hoisted + sum(1 for a in own[:first_job] if a[0] == LOAD)
    assert early >= 0.6 * total, f"{early} of {total} first-load pieces pushed early"


def test_hoisted_loads_miss_the_last_job_of_the_op_they_overlap(schedule: Schedule) -> None:
    """A piece pushed while an op runs never lands on the L1 of that op's last job."""
    records = schedule.records[schedule.prologue :]
    for r in range(len(records) - 1):
        own = op_actions(records[r], schedule.cost.sequencer())
        busy = list(job_extents([a for a in own if a[0] == JOB][-1][1]).values())
        for a in _hoisted(schedule, r):
            lo, hi = a[2], a[2] + (a[4] - 1) * a[6] + a[3]
            assert not any(lo < b1 and b0 < hi for b0, b1 in busy), (r, a)


def test_boundaries_cost_little(schedule: Schedule) -> None:
    """The predicted gap between ops stays small: the layer runs within 8% of its engine
    time (deterministic cycle model; it was 11% before first loads moved early)."""
    total = sum(c.total for c in schedule.predicted[schedule.prologue :])
    engine = sum(c.engine for c in schedule.predicted[schedule.prologue :])
    assert total <= 1.08 * engine, f"{total:,} cycles for {engine:,} of engine work"
