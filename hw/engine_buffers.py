"""The engine's on-chip buffers: where its parts meet.

====== ========================== ================= =================
buffer holds                      written by        read by
====== ========================== ================= =================
XBUF   two chunks of operand rows X fetcher         issuer
ACC    a unit's partial sums      collector         issuer
LOGITS a QK unit's logits         collector         issuer (PV)
YBUF   two units of output rows   collector         writer
====== ========================== ================= =================

The engine owns the memories; the parts get their ports (``ReadPort.Signature`` /
``WritePort.Signature`` of :mod:`amaranth.lib.memory`), described once here.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import unsigned
from amaranth.lib.memory import Memory, ReadPort, WritePort

from tinyattn.config import ClusterConfig

__all__ = ["Buffer", "acc_blocks", "engine_buffers", "logit_words"]


def acc_blocks(cfg: ClusterConfig) -> int:
    """Blocks of ``n_pe`` columns in a GEMM tile or a PV unit (``vec_len`` columns)."""
    return cfg.engine.vec_len // cfg.engine.n_pe


def logit_words(cfg: ClusterConfig) -> int:
    """LOGITS words (``vec_len`` logits each) per query row."""
    return max(1, cfg.engine.max_seq // cfg.engine.vec_len)


@dataclass(frozen=True)
class Buffer:
    """One buffer's geometry: ``depth`` words of ``width`` bits, written in ``granularity`` bits."""

    depth: int
    width: int
    granularity: int | None = None

    @property
    def addr_width(self) -> int:
        return (self.depth - 1).bit_length()

    def memory(self) -> Memory:
        return Memory(shape=unsigned(self.width), depth=self.depth, init=[])

    def read_signature(self) -> ReadPort.Signature:
        """A synchronous read port, as the memory presents it (``In`` for the reader)."""
        return ReadPort.Signature(addr_width=self.addr_width, shape=unsigned(self.width))

    def write_signature(self) -> WritePort.Signature:
        """A write port, as the memory presents it (``In`` for the writer)."""
        return WritePort.Signature(
            addr_width=self.addr_width, shape=unsigned(self.width), granularity=self.granularity
        )


def engine_buffers(cfg: ClusterConfig) -> dict[str, Buffer]:
    """``xbuf``, ``acc``, ``logits`` and ``ybuf`` for ``cfg`` (see the module docstring)."""
    e = cfg.engine
    row_bits = e.vec_len * 8
    return {
        # Row r of slot s at Cat(r, s).
        "xbuf": Buffer(2 * e.tile_m, row_bits),
        # Row r, block b at r * acc_blocks + b.
        "acc": Buffer(e.tile_m * acc_blocks(cfg), e.n_pe * e.acc_bits),
        # Row r, word w at r * logit_words + w; one n_pe group of logits a write.
        "logits": Buffer(e.tile_m * logit_words(cfg), row_bits, granularity=e.n_pe * 8),
        # Row r of slot s at Cat(r, s); one n_pe block of bytes a write.
        "ybuf": Buffer(2 * e.tile_m, row_bits, granularity=e.n_pe * 8),
    }
