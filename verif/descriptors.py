"""DMA transfer descriptors as the benches mean them, and their reference semantics.

- :class:`Descriptor`: one 2-D transfer (the fields of ``hw.dma.descriptor_layout``;
  byte addresses, row length and strides in bytes);
- :func:`expected_error`: the validation the DMA must apply (docs/dma.md's priority
  order), the class it must report;
- :func:`apply_reference`: the effect of a valid transfer on an L1 image and an L2
  :class:`~tinyattn.verif.paged_memory.PagedMemory` (rows copied in order);
- :func:`random_descriptor`: a random valid descriptor for a configuration;
- :class:`ReadFence`: the bytes a transfer may read (its source rows, byte exact).

Used by the DMA, cluster and firmware benches and by the job layouts
(:mod:`tinyattn.verif.job_layouts`); nothing here touches a simulator.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.hw.dma import ALIGN_BYTES, Direction, DmaError
from tinyattn.verif.paged_memory import PagedMemory

__all__ = ["Descriptor", "ReadFence", "apply_reference", "expected_error", "random_descriptor"]


@dataclass(frozen=True)
class Descriptor:
    """One transfer as the bench means it (see ``descriptor_layout``)."""

    direction: int
    l2_addr: int
    l1_addr: int
    row_bytes: int
    rows: int
    l2_stride: int
    l1_stride: int

    def payload(self) -> dict[str, int]:
        return {
            "direction": self.direction,
            "l2_addr": self.l2_addr,
            "l1_addr": self.l1_addr,
            "row_bytes": self.row_bytes,
            "rows": self.rows,
            "l2_stride": self.l2_stride,
            "l1_stride": self.l1_stride,
        }

    def row_starts(self) -> Iterator[tuple[int, int]]:
        """(L2 address, L1 address) of each row, in order."""
        for i in range(self.rows):
            yield self.l2_addr + i * self.l2_stride, self.l1_addr + i * self.l1_stride

    def beats(self, beat_bytes: int) -> int:
        """Bus beats of the busier side: the ideal cycle count of the transfer."""
        src = dst = 0
        for l2, l1 in self.row_starts():
            for addr, acc in ((l2, "l2"), (l1, "l1")):
                n = (addr % beat_bytes + self.row_bytes + beat_bytes - 1) // beat_bytes
                if acc == "l2":
                    src += n
                else:
                    dst += n
        return max(src, dst)


def expected_error(d: Descriptor, cfg: ClusterConfig) -> DmaError:
    """The reference validation: the first fault in the documented priority order."""
    if d.rows == 0 or d.row_bytes == 0:
        return DmaError.ZERO_SIZE
    fields = (d.l1_addr, d.l2_addr, d.row_bytes, d.l1_stride, d.l2_stride)
    if any(v % ALIGN_BYTES for v in fields):
        return DmaError.MISALIGNED
    if d.l1_addr + (d.rows - 1) * d.l1_stride + d.row_bytes > cfg.memory.size_bytes:
        return DmaError.L1_RANGE
    if d.l2_addr + (d.rows - 1) * d.l2_stride + d.row_bytes > 1 << cfg.dma.l2_addr_bits:
        return DmaError.L2_RANGE
    return DmaError.NONE


def apply_reference(d: Descriptor, l1: np.ndarray, l2: PagedMemory) -> None:
    """The effect of a valid transfer: rows copied in order (later rows win on overlap)."""
    for a2, a1 in d.row_starts():
        if d.direction == Direction.L2_TO_L1:
            l1[a1 : a1 + d.row_bytes] = l2.read(a2, d.row_bytes)
        else:
            l2.write(a2, l1[a1 : a1 + d.row_bytes].copy())


def random_descriptor(
    rng: np.random.Generator, cfg: ClusterConfig, *, max_words: int | None = None
) -> Descriptor:
    """A valid descriptor: any word offsets, gapped/contiguous/overlapping rows."""
    lanes = cfg.dma.dma_bits // 32
    words = int(rng.integers(1, (max_words or 4 * lanes + 5) + 1))
    row_bytes = 4 * words
    rows = int(rng.integers(1, 7))

    def stride() -> int:
        p = rng.random()
        if p < 0.1:  # overlapping rows, including 0 (the same row again)
            return 4 * int(rng.integers(0, words + 1))
        if p < 0.35:
            return row_bytes
        return row_bytes + 4 * int(rng.integers(1, 2 * lanes + 3))

    l1_stride, l2_stride = stride(), stride()
    ext1 = (rows - 1) * l1_stride + row_bytes
    ext2 = (rows - 1) * l2_stride + row_bytes
    l1_size = cfg.memory.size_bytes
    if ext1 > l1_size:  # only with tiny L1s: fall back to contiguous rows
        l1_stride, ext1 = row_bytes, rows * row_bytes
    l1_addr = 4 * int(rng.integers(0, (l1_size - ext1) // 4 + 1))
    top = 1 << cfg.dma.l2_addr_bits
    window = min(top, 1 << 16)
    # Mostly low L2, sometimes right below the top of the L2 address space.
    base = 0 if rng.random() < 0.8 else top - window
    l2_addr = base + 4 * int(rng.integers(0, (window - ext2) // 4 + 1))
    direction = int(rng.integers(2))
    return Descriptor(direction, l2_addr, l1_addr, row_bytes, rows, l2_stride, l1_stride)


class ReadFence:
    """Where the DMA may read: the source rows of the given transfers, byte exact.

    The DMA must not read outside a transfer's source (an L2 may have side effects, and
    both sides have better uses for the bandwidth): L1 reads only words of the source
    rows, and an L2 read's ``be`` only bytes of them.
    """

    def __init__(self, descs: list[Descriptor]) -> None:
        self.l1_words: set[int] = set()
        spans = []
        for d in descs:
            for a2, a1 in d.row_starts():
                if d.direction == Direction.L1_TO_L2:
                    self.l1_words.update(range(a1, a1 + d.row_bytes, 4))
                else:
                    spans.append((a2, a2 + d.row_bytes))
        self.l2_spans: list[tuple[int, int]] = []
        for lo, hi in sorted(spans):
            if self.l2_spans and lo <= self.l2_spans[-1][1]:
                self.l2_spans[-1] = (self.l2_spans[-1][0], max(hi, self.l2_spans[-1][1]))
            else:
                self.l2_spans.append((lo, hi))
        self.l2_starts = [lo for lo, _ in self.l2_spans]

    def l1_ok(self, addr: int) -> bool:
        return addr in self.l1_words

    def l2_ok(self, addr: int, be: int) -> bool:
        i = 0
        while be:
            if be & 1:
                a = addr + i
                k = bisect.bisect_right(self.l2_starts, a) - 1
                if k < 0 or a >= self.l2_spans[k][1]:
                    return False
            be >>= 1
            i += 1
        return True
