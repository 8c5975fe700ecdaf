"""Stream models for the benches: a source and a sink of ``lib.stream`` valid/ready ports.

Both are :class:`~tinyattn.verif.obi.CycleLoop` agents: they drive after the falling
edge and sample in the read-only phase, so a handshake they record is the one the
design sees on the coming rising edge. A port ``<prefix>`` is the flattened triple
``<prefix>__valid``, ``<prefix>__ready`` and ``<prefix>__payload`` that Amaranth emits
for a stream member of a component's signature. Payloads are packed and unpacked with
the member's ``lib.data`` layout (:mod:`tinyattn.verif.bits`).

Pauses come from a callable asked once a cycle (:func:`random_pauses`, :func:`never`),
so a bench states its stall pattern in one place.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

from tinyattn.verif.bits import pack, unpack

__all__ = ["StreamProtocolError", "StreamSink", "StreamSource", "never", "random_pauses"]

T = TypeVar("T")


class StreamProtocolError(AssertionError):
    """The design broke the stream rule: valid dropped or payload changed before ready."""


def never() -> bool:
    """A pause pattern that never pauses."""
    return False


def random_pauses(rng: np.random.Generator, probability: float) -> Callable[[], bool]:
    """Pause each cycle with ``probability``, drawn from ``rng`` (seeded by the bench)."""
    if not 0.0 <= probability < 1.0:
        raise ValueError(f"pause probability {probability}: use 0 <= p < 1")
    return lambda: probability > 0.0 and bool(rng.random() < probability)


class StreamSource(Generic[T]):
    """Offers items on the design's input stream ``prefix``, in order.

    An offered item stays on the port, valid high and payload unchanged, until the
    design takes it (the ``lib.stream`` rule); ``valid`` is low and the payload 0
    until the first offer. Before offering a new item the source
    asks ``pause()``; True holds it back a cycle. Items come from :meth:`push`, and
    when none is queued from ``refill()`` if given (None: nothing to offer).
    ``encode`` turns an item into what :func:`~tinyattn.verif.bits.pack` takes.
    ``on_accept(item, cycle)`` runs in the sample phase of the accepting cycle.
    """

    def __init__(
        self,
        dut: Any,
        prefix: str,
        layout: Any,
        *,
        encode: Callable[[T], Any] = lambda item: item,
        pause: Callable[[], bool] = never,
        refill: Callable[[], T | None] | None = None,
        on_accept: Callable[[T, int], None] | None = None,
    ) -> None:
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.layout = layout
        self.encode = encode
        self.pause = pause
        self.refill = refill
        self.on_accept = on_accept
        self.queue: deque[T] = deque()
        self.current: T | None = None
        self.accepted = 0
        self.valid.value = 0
        self.payload.value = 0  # no X on the design's inputs before the first offer

    def push(self, *items: T) -> None:
        """Queue ``items`` behind those already queued."""
        self.queue.extend(items)

    @property
    def idle(self) -> bool:
        """Nothing offered and nothing queued."""
        return self.current is None and not self.queue

    def drive(self, cycle: int) -> None:
        if self.current is None and not self.pause():
            item = self.queue.popleft() if self.queue else None
            if item is None and self.refill is not None:
                item = self.refill()
            if item is not None:
                self.current = item
                self.payload.value = pack(self.layout, self.encode(item))
        self.valid.value = int(self.current is not None)

    def sample(self, cycle: int) -> None:
        if self.current is not None and self.ready.value:
            item, self.current = self.current, None
            self.accepted += 1
            if self.on_accept is not None:
                self.on_accept(item, cycle)


class StreamSink:
    """Takes items from the design's output stream ``prefix`` and checks its rule.

    ``ready`` is low in the cycles ``pause()`` says. Once the design raises ``valid``
    it must hold it, with the same payload, until the cycle the sink is ready:
    a break raises :class:`StreamProtocolError` naming the port and the cycle.
    ``on_receive(payload, cycle)`` gets each item unpacked with ``layout``.
    """

    def __init__(
        self,
        dut: Any,
        prefix: str,
        layout: Any,
        *,
        pause: Callable[[], bool] = never,
        on_receive: Callable[[dict[str, Any], int], None] | None = None,
    ) -> None:
        self.name = prefix
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.layout = layout
        self.pause = pause
        self.on_receive = on_receive
        self.received = 0
        self._ready_now = False
        self._waiting: int | None = None  # raw payload offered and not yet taken
        self.ready.value = 0

    @property
    def waiting(self) -> int | None:
        """The raw payload offered and not taken yet (the design must hold it), or None."""
        return self._waiting

    def drive(self, cycle: int) -> None:
        self._ready_now = not self.pause()
        self.ready.value = int(self._ready_now)

    def sample(self, cycle: int) -> None:
        valid = bool(self.valid.value)
        raw = self.payload.value.to_unsigned() if valid else None
        if self._waiting is not None and raw != self._waiting:
            what = "valid dropped" if raw is None else "payload changed"
            raise StreamProtocolError(f"stream {self.name}, cycle {cycle}: {what} before ready")
        if valid and self._ready_now:
            self._waiting = None
            self.received += 1
            if self.on_receive is not None:
                self.on_receive(unpack(self.layout, raw), cycle)
        else:
            self._waiting = raw
