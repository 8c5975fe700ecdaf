"""The L2 model of ``tinyattn.verif.l2_model`` on fake stream handles (no simulator).

A scripted requester plays the DMA: it offers requests on ``l2_req`` (holding each
until ``ready``, as the stream rule asks) and takes every response on ``l2_rsp``. The
model must perform writes under their byte enables, answer reads and writes in order
with the configured latency, respect ``max_inflight``, and reject broken requests.
"""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest

from tinyattn.config import ClusterConfig, DmaConfig
from tinyattn.hw.dma import l2_req_layout, l2_rsp_layout
from tinyattn.verif.bits import pack, unpack
from tinyattn.verif.l2_model import L2Model
from tinyattn.verif.obi import CycleLoop
from tinyattn.verif.paged_memory import PagedMemory
from tinyattn.verif.streams import StreamProtocolError

CFG = ClusterConfig(dma=DmaConfig(dma_bits=64, l2_addr_bits=16))
BEAT = CFG.dma.dma_bits // 8


class FakeValue(int):
    """A signal value: an int that also answers cocotb's ``to_unsigned``."""

    def to_unsigned(self) -> int:
        return int(self)


class FakeSignal:
    """Stands in for a cocotb handle; what is written reads back as a :class:`FakeValue`."""

    def __init__(self) -> None:
        self._value = FakeValue(0)

    @property
    def value(self) -> FakeValue:
        return self._value

    @value.setter
    def value(self, v: int) -> None:
        self._value = FakeValue(int(v))


def fake_dut() -> SimpleNamespace:
    names = [f"{s}__{p}" for s in ("l2_req", "l2_rsp") for p in ("valid", "ready", "payload")]
    return SimpleNamespace(**{name: FakeSignal() for name in names})


class Requester:
    """The DMA side: offers ``requests`` in order, each held until ready; collects responses.

    ``drop_valid_at``: a cycle in which an offered request is withdrawn (a broken DMA).
    """

    def __init__(self, dut: SimpleNamespace, requests: list[dict[str, int]]) -> None:
        self.dut = dut
        self.layout, self.rsp_layout = l2_req_layout(CFG), l2_rsp_layout(CFG)
        self.todo = deque(requests)
        self.current: dict[str, int] | None = None
        self.accepted: list[int] = []  # cycle of each accepted request
        self.responses: list[tuple[int, int]] = []  # (cycle, rdata)
        self.drop_valid_at: int | None = None

    def drive(self, cycle: int) -> None:
        d = self.dut
        if self.current is None and self.todo:
            self.current = self.todo.popleft()
            d.l2_req__payload.value = pack(self.layout, self.current)
        d.l2_req__valid.value = int(self.current is not None and cycle != self.drop_valid_at)
        d.l2_rsp__ready.value = 1

    def sample(self, cycle: int) -> None:
        d = self.dut
        if d.l2_req__valid.value and d.l2_req__ready.value:
            self.accepted.append(cycle)
            self.current = None
        if d.l2_rsp__valid.value:
            rsp = unpack(self.rsp_layout, d.l2_rsp__payload.value.to_unsigned())
            self.responses.append((cycle, rsp["rdata"]))


def run(loop: CycleLoop, cycles: int) -> None:
    for _ in range(cycles):
        loop.cycle += 1
        loop.drive_all(loop.cycle)
        loop.sample_all(loop.cycle)


def setup(
    requests: list[dict[str, int]], seed: int = 5
) -> tuple[L2Model, Requester, CycleLoop, PagedMemory]:
    dut = fake_dut()
    mem = PagedMemory(seed)
    model = L2Model(dut, CFG, mem, np.random.default_rng(seed))
    requester = Requester(dut, requests)
    loop = CycleLoop(clk=None)
    loop.add(requester, model)
    return model, requester, loop, mem


def test_in_order_responses_latency_and_byte_enables() -> None:
    before = PagedMemory(5)
    old = int.from_bytes(before.read(0x40, BEAT).tobytes(), "little")
    requests = [
        {"addr": 0x40, "we": 1, "be": 0b0000_1111, "wdata": 0x1122334455667788},
        {"addr": 0x40, "we": 0, "be": 0xFF, "wdata": 0},
        {"addr": 0x80, "we": 0, "be": 0x01, "wdata": 0},
    ]
    model, requester, loop, mem = setup(requests)
    model.fixed_latency = 3
    run(loop, 30)
    assert model.quiet() and (model.reads, model.writes) == (2, 1)
    # The write took only its enabled (low) bytes; the read after it sees them.
    written = (old & ~0xFFFF_FFFF) | 0x5566_7788
    assert int.from_bytes(mem.read(0x40, BEAT).tobytes(), "little") == written
    want_second = int.from_bytes(before.read(0x80, BEAT).tobytes(), "little")
    assert [rdata for _, rdata in requester.responses] == [0, written, want_second]
    # Each response 1 + 3 cycles after its request, and in order.
    for accepted, (answered, _) in zip(requester.accepted, requester.responses, strict=True):
        assert answered - accepted == 4


def test_stalls_and_max_inflight() -> None:
    requests = [{"addr": BEAT * i, "we": 0, "be": 0xFF, "wdata": 0} for i in range(40)]
    model, requester, loop, _ = setup(requests, seed=9)
    model.req_stall, model.rsp_gap, model.max_latency, model.max_inflight = 0.3, 0.3, 6, 4
    run(loop, 400)
    assert len(requester.responses) == 40 and model.quiet()
    assert model.peak_inflight == 4  # never more owed than allowed, and it got there
    assert len(requester.accepted) == 40
    assert requester.accepted[-1] - requester.accepted[0] > 40  # ready was withheld


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"addr": 0x44, "we": 0, "be": 0xFF, "wdata": 0}, "not beat aligned"),
        ({"addr": 0x10000 - BEAT, "we": 1, "be": 0, "wdata": 0}, "empty be"),
    ],
)
def test_bad_requests_are_named(request_: dict[str, int], message: str) -> None:
    _, _, loop, _ = setup([request_])
    with pytest.raises(AssertionError, match=message):
        run(loop, 3)


def test_valid_dropped_before_ready_is_caught() -> None:
    model, requester, loop, _ = setup([{"addr": 0, "we": 0, "be": 0xFF, "wdata": 0}])
    model.req_stall = 0.99  # the first cycles are refused, so the request waits
    requester.drop_valid_at = 2
    with pytest.raises(StreamProtocolError, match=r"stream l2_req, cycle 2: valid dropped"):
        run(loop, 5)
