"""How the engine's parts share its wide L1 port: request streams, read tags, the arbiter.

Every part that touches L1 offers beats on a request stream (the
:class:`~tinyattn.hw.wide_port.WidePort` beat layout). The :class:`PortArbiter` grants
one stream a cycle, by fixed priority. Read beats return in issue order with the
:class:`ReadTag` of the part that asked for them; the engine routes each to that part's
``response`` stream (:func:`response_signature`), which has no ``ready``: a part always
takes its read data.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Signal, unsigned
from amaranth.lib import enum, stream, wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .wide_port import TAG_BITS, beat_layout

__all__ = [
    "PortArbiter",
    "ReadTag",
    "request_signature",
    "response_signature",
    "word_mask",
]


class ReadTag(enum.Enum, shape=unsigned(TAG_BITS)):
    """Which part a read beat belongs to (carried by the port from request to data)."""

    WEIGHTS = 0
    X = 1
    PARAMS = 2
    RESIDUAL = 3


def request_signature(cfg: ClusterConfig) -> stream.Signature:
    """A part's beats to the port (read or write, with a :class:`ReadTag`)."""
    return stream.Signature(beat_layout(cfg))


def response_signature(cfg: ClusterConfig) -> stream.Signature:
    """A part's read data: one beat of ``vec_len`` bytes, word ``i`` in bits ``32i..``."""
    return stream.Signature(unsigned(cfg.engine.vec_len * 8), always_ready=True)


def word_mask(m: Module, words: object, lanes: int) -> object:
    """The lane mask of a beat of ``words`` consecutive words from lane 0."""
    n = Signal(range(lanes + 1))
    m.d.comb += n.eq(words)
    return ((Const(1, lanes + 1) << n) - 1)[:lanes]


class PortArbiter(wiring.Component):
    """Fixed-priority arbiter of request streams onto the port.

    Ports
    -----
    requests : In(:func:`request_signature`).array(count)
        Request ``i`` wins over every request ``j > i``. A request is ``ready``
        in the cycle it wins and the port accepts it.
    beats : Out(:func:`request_signature`)
        To the port's ``beats``: valid while any request is.
    """

    def __init__(self, cfg: ClusterConfig, count: int) -> None:
        self._count = count
        super().__init__(
            {
                "requests": In(request_signature(cfg)).array(count),
                "beats": Out(request_signature(cfg)),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        taken = Const(0)
        for request in self.requests:
            win = request.valid & ~taken
            with m.If(win):
                m.d.comb += self.beats.payload.eq(request.payload)
            m.d.comb += request.ready.eq(win & self.beats.ready)
            taken = taken | request.valid
        m.d.comb += self.beats.valid.eq(taken)
        return m
