"""The L2 memory behind a DMA's request/response streams, as a cycle-loop agent.

:class:`L2Model` plays the memory outside the cluster for the DMA, cluster and firmware
benches. It is built from the shared stream models of :mod:`tinyattn.verif.streams`:
a :class:`~tinyattn.verif.streams.StreamSink` takes the requests (and checks that each
stays valid and unchanged until accepted), a
:class:`~tinyattn.verif.streams.StreamSource` offers the responses. Add it to the
bench's :class:`~tinyattn.verif.obi.CycleLoop`; it drives after the falling edge and
samples in the read-only phase like every other agent.

Contract of the modelled L2 (``hw.dma.l2_req_layout`` / ``l2_rsp_layout``, one beat of
``dma_bits`` per request):

- requests are accepted unless ``ready`` is withheld (probability ``req_stall`` per
  cycle, and always while ``max_inflight`` responses are owed);
- an accepted request is performed at once on the :class:`PagedMemory` (a write under
  its byte enables); its response (one per request, reads and writes, in order) is due
  1 + ``latency`` cycles later, ``latency`` uniform in ``0..max_latency`` (or exactly
  ``fixed_latency`` when set), and offered unless a random gap (probability
  ``rsp_gap``) holds it back a cycle;
- checks (``AssertionError``): addresses beat aligned and inside the L2 address space,
  ``be`` not empty, a read's bytes allowed by ``fence()`` when set.

Every random draw comes from the ``rng`` the bench passes, in a fixed order per cycle
(ready, then response gap in the drive phase; latency in the sample phase).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.hw.dma import l2_req_layout, l2_rsp_layout
from tinyattn.verif.descriptors import ReadFence
from tinyattn.verif.paged_memory import PagedMemory
from tinyattn.verif.streams import StreamSink, StreamSource

__all__ = ["L2Model"]


@dataclass(slots=True)
class _Response:
    due: int  # first cycle it may be offered
    rdata: int


class L2Model:
    """The L2 behind the streams ``<requests>`` (in) and ``<responses>`` (out).

    Knobs (change them between cycles): ``req_stall``, ``rsp_gap``, ``max_latency``,
    ``fixed_latency``, ``max_inflight``, ``fence``. Statistics: ``reads``, ``writes``,
    ``peak_inflight`` (responses owed at once, at most).
    """

    def __init__(
        self,
        dut: Any,
        cfg: ClusterConfig,
        mem: PagedMemory,
        rng: np.random.Generator,
        *,
        requests: str = "l2_req",
        responses: str = "l2_rsp",
    ) -> None:
        self.mem = mem
        self.rng = rng
        self.beat = cfg.dma.dma_bits // 8
        self.top = 1 << cfg.dma.l2_addr_bits
        self.req_stall = 0.0
        self.rsp_gap = 0.0
        self.max_latency = 0
        self.fixed_latency: int | None = None  # when set, every response takes exactly this
        self.max_inflight = 32
        self.fence: Callable[[], ReadFence] | None = None
        self.inflight: deque[_Response] = deque()  # owed, not offered yet
        self.cycle = 0
        self.last_due = 0
        self.reads = 0
        self.writes = 0
        self.peak_inflight = 0
        self.requests = StreamSink(
            dut, requests, l2_req_layout(cfg), pause=self._refuse, on_receive=self._perform
        )
        self.responses: StreamSource[_Response] = StreamSource(
            dut,
            responses,
            l2_rsp_layout(cfg),
            encode=lambda rsp: {"rdata": rsp.rdata},
            pause=self._hold_response,
            refill=self._next_response,
        )

    # -- the stream models' callbacks ---------------------------------------------------

    def _refuse(self) -> bool:
        """``ready`` low this cycle: too many responses owed, or a random stall."""
        return not (
            len(self.inflight) < self.max_inflight
            and (self.req_stall == 0.0 or self.rng.random() >= self.req_stall)
        )

    def _due(self) -> bool:
        return bool(self.inflight) and self.inflight[0].due <= self.cycle

    def _hold_response(self) -> bool:
        """No response offered this cycle: none due, or a random gap."""
        return not self._due() or (self.rsp_gap != 0.0 and self.rng.random() < self.rsp_gap)

    def _next_response(self) -> _Response | None:
        return self.inflight.popleft() if self._due() else None

    def _perform(self, req: dict[str, Any], cycle: int) -> None:
        """An accepted request: check it, apply it, and owe its response."""
        addr, be = req["addr"], req["be"]
        if addr % self.beat:
            raise AssertionError(f"L2 request address {addr:#x} not beat aligned")
        if addr + self.beat > self.top:
            raise AssertionError(f"L2 request address {addr:#x} out of L2")
        if be == 0:
            raise AssertionError(f"L2 request at {addr:#x} with empty be")
        rdata = 0
        if req["we"]:
            old = self.mem.read(addr, self.beat)
            new = np.frombuffer(req["wdata"].to_bytes(self.beat, "little"), np.uint8)
            mask = np.array([(be >> i) & 1 for i in range(self.beat)], dtype=bool)
            self.mem.write(addr, np.where(mask, new, old))
            self.writes += 1
        else:
            if self.fence is not None and not self.fence().l2_ok(addr, be):
                raise AssertionError(f"L2 read at {addr:#x} be {be:#x}: outside the source")
            rdata = int.from_bytes(self.mem.read(addr, self.beat).tobytes(), "little")
            self.reads += 1
        if self.fixed_latency is not None:
            latency = self.fixed_latency
        else:
            latency = int(self.rng.integers(0, self.max_latency + 1)) if self.max_latency else 0
        self.last_due = max(self.last_due, cycle + 1 + latency)
        self.inflight.append(_Response(self.last_due, rdata))
        self.peak_inflight = max(self.peak_inflight, len(self.inflight))

    # -- the cycle-loop agent -------------------------------------------------------------

    def drive(self, cycle: int) -> None:
        self.cycle = cycle
        self.requests.drive(cycle)
        self.responses.drive(cycle)

    def sample(self, cycle: int) -> None:
        self.responses.sample(cycle)
        self.requests.sample(cycle)

    def quiet(self) -> bool:
        """Every request answered and every response taken (none waiting for ``ready``)."""
        return self.requests.waiting is None and not self.inflight and self.responses.idle

    def sleep(self) -> None:
        """Drop ``ready`` and the response ``valid`` (only when :meth:`quiet`): a bench that
        stops running the model while the DMA has no L2 traffic calls this first."""
        assert self.quiet(), "L2Model.sleep with traffic in flight"
        self.requests.ready.value = 0
        self.responses.valid.value = 0
