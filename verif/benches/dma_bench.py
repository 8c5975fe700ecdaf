"""cocotb bench of the DMA (``hw/dma.py``) against a reference copy of both memories.

The bench plays the two memories around the DMA:

- :class:`L1Lanes`, the L1 behind the DMA's OBI lanes (random grant withholding);
- :class:`L2Model`, the L2 behind the request/response streams (random back-pressure
  on requests, random latency with many requests in flight, random gaps on responses).

Both check the protocol every cycle (requests stable until accepted, addresses on the
lane / beat grid, in range). Each transfer's ``done`` is matched in order with the
accepted descriptors; at that moment the L1 and L2 images must equal a reference copy
to which the bench applied every completed transfer row by row (:func:`apply_reference`),
so bytes outside the destination rectangle are checked too. A rejected descriptor must
report :func:`expected_error` and leave both memories untouched.

Signals are driven after the falling edge and sampled in the read-only phase before
the rising edge (the discipline of ``compute_core_bench``), so both simulators see the
same handshakes. Every failure names the seed.

Knobs (environment): ``TINYATTN_TRANSFERS`` (random transfers), ``TINYATTN_L2_LATENCY``
(largest extra L2 latency in cycles), ``TINYATTN_CLEARS`` (clear trials).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly

from tinyattn.config import ClusterConfig
from tinyattn.hw.dma import (
    ALIGN_BYTES,
    Direction,
    DmaError,
    descriptor_layout,
    l2_req_layout,
    l2_rsp_layout,
)
from tinyattn.verif.benches.common import (
    bench_config,
    bench_seed,
    env_int,
    start_clock_and_reset,
    write_metrics,
)
from tinyattn.verif.bits import pack, unpack
from tinyattn.verif.coverage import DMA_DIRECTIONS, DMA_OUTCOMES, dma_coverage

#: Cycles from a descriptor's acceptance to its ``done`` beyond one per beat, for an
#: unstalled transfer with the minimum L2 latency (a functional contract of the RTL).
MAX_OVERHEAD_CYCLES = 12


# -- descriptors and the reference ---------------------------------------------------------


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


class PagedMemory:
    """A sparse byte memory (L2 may span 4 GiB): 4 KiB pages made on first touch.

    A page's initial content is random but a function of (seed, page), so two instances
    with the same seed (the model and its reference) start out identical.
    """

    PAGE = 4096

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.pages: dict[int, np.ndarray] = {}

    def _page(self, index: int) -> np.ndarray:
        if index not in self.pages:
            rng = np.random.default_rng([self.seed, index])
            self.pages[index] = rng.integers(0, 256, self.PAGE, dtype=np.uint8)
        return self.pages[index]

    def read(self, addr: int, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.uint8)
        done = 0
        while done < n:
            page, off = divmod(addr + done, self.PAGE)
            k = min(n - done, self.PAGE - off)
            out[done : done + k] = self._page(page)[off : off + k]
            done += k
        return out

    def write(self, addr: int, data: np.ndarray) -> None:
        done = 0
        while done < len(data):
            page, off = divmod(addr + done, self.PAGE)
            k = min(len(data) - done, self.PAGE - off)
            self._page(page)[off : off + k] = data[done : done + k]
            done += k

    def copy(self) -> PagedMemory:
        other = PagedMemory(self.seed)
        other.pages = {k: v.copy() for k, v in self.pages.items()}
        return other

    def first_difference(self, other: PagedMemory) -> int | None:
        """Lowest address where the two differ, or None."""
        for index in sorted(set(self.pages) | set(other.pages)):
            diff = np.flatnonzero(self._page(index) != other._page(index))
            if diff.size:
                return index * self.PAGE + int(diff[0])
        return None


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


# -- bus models ----------------------------------------------------------------------------


class _Driver:
    """Writes a signal only when its value changes (saves simulator calls)."""

    def __init__(self) -> None:
        self._last: dict[int, int] = {}

    def set(self, handle: Any, value: int) -> None:
        key = id(handle)
        if self._last.get(key) != value:
            handle.value = value
            self._last[key] = value


class L1Lanes:
    """The L1 as the DMA's OBI lanes see it in the cluster (an OBI target per lane).

    A stand-in for the shared target model of ``verif/obi.py``: same role, same
    contract, so the bench can switch to it. ``mem`` is the L1 image (uint8). Each
    cycle every lane's ``gnt`` is withheld with probability ``stall``. A granted
    request is performed at once (a read returns the word as it is at the grant) and
    answered with ``rvalid`` (and ``rdata``) exactly one cycle later. Checks, as
    ``AssertionError``: ``req`` with ``addr``/``we``/``be``/``wdata`` stays stable until
    ``gnt``; addresses are word aligned, inside L1 and on their lane
    (``(addr // 4) % lanes == lane``); ``be`` is ``0b1111``; a read is allowed by
    ``fence()`` (when set).
    """

    def __init__(self, dut: Any, n_lanes: int, mem: np.ndarray, rng: np.random.Generator) -> None:
        names = ("req", "addr", "we", "be", "wdata", "gnt", "rvalid", "rdata")
        self.h = [{n: getattr(dut, f"l1__{j}__{n}") for n in names} for j in range(n_lanes)]
        self.n = n_lanes
        self.mem = mem
        self.rng = rng
        self.stall = 0.0
        self.drv = _Driver()
        self.gnt = [0] * n_lanes
        self.next_rsp: list[int | None] = [None] * n_lanes  # rdata to answer next cycle
        self.held: list[tuple[int, int, int, int] | None] = [None] * n_lanes
        self.reads = 0
        self.writes = 0
        self.fence: Callable[[], ReadFence] | None = None

    def drive(self) -> None:
        for j, h in enumerate(self.h):
            self.gnt[j] = int(self.stall == 0.0 or self.rng.random() >= self.stall)
            self.drv.set(h["gnt"], self.gnt[j])
            rsp = self.next_rsp[j]
            self.drv.set(h["rvalid"], int(rsp is not None))
            if rsp is not None:
                self.drv.set(h["rdata"], rsp)
            self.next_rsp[j] = None

    def sample(self) -> None:
        size = len(self.mem)
        for j, h in enumerate(self.h):
            if not h["req"].value:
                assert self.held[j] is None, f"L1 lane {j}: req dropped before gnt"
                continue
            req = (
                h["addr"].value.to_unsigned(),
                int(h["we"].value),
                h["be"].value.to_unsigned(),
                h["wdata"].value.to_unsigned(),
            )
            if self.held[j] is not None:
                assert req == self.held[j], (
                    f"L1 lane {j}: request changed before gnt: {self.held[j]} -> {req}"
                )
            addr, we, be, wdata = req
            assert addr % 4 == 0 and addr < size, f"L1 lane {j}: bad address {addr:#x}"
            assert (addr // 4) % self.n == j, f"L1 lane {j}: address {addr:#x} is not on lane {j}"
            assert be == 0b1111, f"L1 lane {j}: be {be:#06b}, want 0b1111"
            if not self.gnt[j]:
                self.held[j] = req
                continue
            self.held[j] = None
            if we:
                self.mem[addr : addr + 4] = np.frombuffer(wdata.to_bytes(4, "little"), np.uint8)
                self.writes += 1
                self.next_rsp[j] = 0
            else:
                if self.fence is not None and not self.fence().l1_ok(addr):
                    raise AssertionError(f"L1 lane {j}: read of {addr:#x}, outside the source")
                self.next_rsp[j] = int.from_bytes(self.mem[addr : addr + 4].tobytes(), "little")
                self.reads += 1

    def quiet(self) -> bool:
        """No request waiting for a grant and no response due."""
        return all(h is None for h in self.held) and all(r is None for r in self.next_rsp)


@dataclass
class _L2Pending:
    due: int
    rdata: int


class L2Model:
    """The L2 behind the DMA's request/response streams.

    ``ready`` on requests is low with probability ``req_stall`` (and while ``max_inflight``
    responses are owed). An accepted request is performed at once; its response (one per
    request, reads and writes, in order) becomes due 1 + ``latency`` cycles later, where
    ``latency`` is uniform in ``0..max_latency``, and is offered unless a random gap
    (probability ``rsp_gap``) holds it back. Checks: a request stays valid and unchanged
    until accepted; addresses are beat aligned and inside the L2 address space; ``be``
    is not empty; a read's ``be`` is allowed by ``fence()`` (when set).
    """

    def __init__(
        self, dut: Any, cfg: ClusterConfig, mem: PagedMemory, rng: np.random.Generator
    ) -> None:
        self.dut = dut
        self.mem = mem
        self.rng = rng
        self.beat = cfg.dma.dma_bits // 8
        self.top = 1 << cfg.dma.l2_addr_bits
        self.req_layout = l2_req_layout(cfg)
        self.rsp_layout = l2_rsp_layout(cfg)
        self.req_stall = 0.0
        self.rsp_gap = 0.0
        self.max_latency = 0
        self.fixed_latency: int | None = None  # when set, every response takes exactly this
        self.max_inflight = 32
        self.drv = _Driver()
        self.inflight: deque[_L2Pending] = deque()
        self.offered: _L2Pending | None = None
        self.ready = 0
        self.held: dict[str, int] | None = None
        self.last_due = 0
        self.reads = 0
        self.writes = 0
        self.peak_inflight = 0
        self.fence: Callable[[], ReadFence] | None = None

    def drive(self, cycle: int) -> None:
        d = self.dut
        self.ready = int(
            len(self.inflight) < self.max_inflight
            and (self.req_stall == 0.0 or self.rng.random() >= self.req_stall)
        )
        self.drv.set(d.l2_req__ready, self.ready)
        if (
            self.offered is None
            and self.inflight
            and self.inflight[0].due <= cycle
            and (self.rsp_gap == 0.0 or self.rng.random() >= self.rsp_gap)
        ):
            self.offered = self.inflight.popleft()
            self.drv.set(d.l2_rsp__payload, pack(self.rsp_layout, {"rdata": self.offered.rdata}))
        self.drv.set(d.l2_rsp__valid, int(self.offered is not None))

    def sample(self, cycle: int) -> None:
        d = self.dut
        if self.offered is not None and d.l2_rsp__ready.value:
            self.offered = None
        if not d.l2_req__valid.value:
            assert self.held is None, "L2 request: valid dropped before ready"
            return
        req = unpack(self.req_layout, d.l2_req__payload.value.to_unsigned())
        if self.held is not None:
            assert req == self.held, f"L2 request changed before ready: {self.held} -> {req}"
        addr, be = req["addr"], req["be"]
        assert addr % self.beat == 0, f"L2 request address {addr:#x} not beat aligned"
        assert addr + self.beat <= self.top, f"L2 request address {addr:#x} out of L2"
        assert be != 0, f"L2 request at {addr:#x} with empty be"
        if not self.ready:
            self.held = req
            return
        self.held = None
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
            lat = self.fixed_latency
        else:
            lat = int(self.rng.integers(0, self.max_latency + 1)) if self.max_latency else 0
        self.last_due = max(self.last_due, cycle + 1 + lat)
        self.inflight.append(_L2Pending(self.last_due, rdata))
        self.peak_inflight = max(self.peak_inflight, len(self.inflight))

    def quiet(self) -> bool:
        """Every request answered and every response taken."""
        return self.held is None and not self.inflight and self.offered is None


# -- the testbench -------------------------------------------------------------------------


@dataclass
class _Accepted:
    index: int  # submission order
    desc: Descriptor
    code: DmaError
    cycle: int  # acceptance cycle


@dataclass
class Done:
    index: int
    desc: Descriptor
    code: DmaError
    cycles: int  # from acceptance to done
    #: The class the hardware reported for this descriptor: ``NONE`` for ``done_error``
    #: low, else ``error_code`` in the done cycle when no earlier error was pending (the
    #: code is sticky, so a later error's own code is not visible); None otherwise.
    reported: DmaError | None = None


@dataclass
class DmaTB:
    """Owns the clock, the reset, the two memory models, the command driver and checks."""

    dut: Any
    cfg: ClusterConfig
    seed: int
    rng: np.random.Generator = field(init=False)
    cycle: int = 0

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.rng = np.random.default_rng(self.seed)
        self.beat = cfg.dma.dma_bits // 8
        self.l1_mem = self.rng.integers(0, 256, cfg.memory.size_bytes, dtype=np.uint8)
        self.l2_mem = PagedMemory(self.seed)
        self.ref_l1 = self.l1_mem.copy()
        self.ref_l2 = self.l2_mem.copy()
        self.l1 = L1Lanes(self.dut, cfg.dma.dma_bits // 32, self.l1_mem, self.rng)
        self.l2 = L2Model(self.dut, cfg, self.l2_mem, self.rng)
        self._fence_key: tuple[int, ...] = (-1,)
        self._fence = ReadFence([])
        self.l1.fence = self.l2.fence = self.fence
        self.drv = _Driver()
        self.pending: deque[tuple[int, Descriptor]] = deque()
        self.offer: tuple[int, Descriptor] | None = None
        self.cmd_gap = 0.0
        self.submitted = 0
        self.expected: deque[_Accepted] = deque()
        self.dones: list[Done] = []
        self.aborted: list[_Accepted] = []
        self.sticky: DmaError | None = None  # the error status the DMA must show
        self.clear_next = False
        self.ack_next = False
        self.busy = 0
        self.max_level = 0
        self.cmd_blocked = 0  # cycles a descriptor was offered and not taken
        self.hold_cmd = False  # the command driver offers nothing new while set
        self.dropped = 0  # accepted descriptors dropped by clear (no done)
        #: The coverage model (verif/coverage.py), sampled at every done, exported to the
        #: run folder; one per run, so it collects the hits of every test.
        self.coverage = dma_coverage(cfg)

    def fence(self) -> ReadFence:
        """Reads belong to the oldest accepted transfer not yet done (transfers run one
        after the other) or, while a clear drains, to the transfer it aborted."""
        owners = self.aborted[:1] + list(self.expected)[:1]
        key = tuple(a.index for a in owners)
        if key != self._fence_key:
            self._fence_key, self._fence = key, ReadFence([a.desc for a in owners])
        return self._fence

    def fail(self, msg: str) -> AssertionError:
        return AssertionError(f"{msg} (TINYATTN_SEED={bench_seed()}, cycle {self.cycle})")

    async def reset(self) -> None:
        d = self.dut
        for name in ("cmd__valid", "cmd__payload", "clear", "error_ack", "l2_rsp__valid"):
            getattr(d, name).value = 0
        d.l2_rsp__payload.value = 0
        d.l2_req__ready.value = 0
        for h in self.l1.h:
            h["gnt"].value = 0
            h["rvalid"].value = 0
            h["rdata"].value = 0
        await start_clock_and_reset(d)

    def stalls(
        self,
        l1: float = 0.0,
        l2_req: float = 0.0,
        l2_rsp: float = 0.0,
        latency: int = 0,
        cmd: float = 0.0,
    ) -> None:
        """Probabilities of a withheld grant / ready / response / descriptor per cycle."""
        self.l1.stall = l1
        self.l2.req_stall = l2_req
        self.l2.rsp_gap = l2_rsp
        self.l2.max_latency = latency
        self.cmd_gap = cmd

    def submit(self, d: Descriptor) -> int:
        """Queue ``d`` for the command driver; returns its submission index."""
        self.pending.append((self.submitted, d))
        self.submitted += 1
        return self.submitted - 1

    async def step(self) -> None:
        """One clock cycle: drive after the falling edge, sample in the read-only phase."""
        d = self.dut
        await FallingEdge(d.clk)
        self.cycle += 1
        if (
            self.offer is None
            and self.pending
            and not self.hold_cmd
            and (self.cmd_gap == 0.0 or self.rng.random() >= self.cmd_gap)
        ):
            self.offer = self.pending.popleft()
            self.drv.set(d.cmd__payload, pack(descriptor_layout, self.offer[1].payload()))
        self.drv.set(d.cmd__valid, int(self.offer is not None))
        clear, ack = self.clear_next, self.ack_next
        self.clear_next = self.ack_next = False
        self.drv.set(d.clear, int(clear))
        self.drv.set(d.error_ack, int(ack))
        self.l1.drive()
        self.l2.drive(self.cycle)

        await ReadOnly()
        if self.offer is not None:
            if d.cmd__ready.value:
                if clear:
                    raise self.fail("cmd accepted in a clear cycle")
                index, desc = self.offer
                self.expected.append(
                    _Accepted(index, desc, expected_error(desc, self.cfg), self.cycle)
                )
                self.offer = None
            else:
                self.cmd_blocked += 1
        try:
            self.l1.sample()
            self.l2.sample(self.cycle)
        except AssertionError as exc:  # a protocol checker: add the seed and the cycle
            raise self.fail(str(exc)) from None
        self.busy = int(d.busy.value)
        level = d.queue_level.value.to_unsigned()
        self.max_level = max(self.max_level, level)
        if level > self.cfg.dma.queue_depth:
            raise self.fail(f"queue_level {level} > queue_depth")
        if d.done.value:
            self._on_done(int(d.done_error.value))
        if ack:
            self.sticky = None
        if clear:
            self.aborted = list(self.expected)
            self.expected.clear()
            self.sticky = None

    def _on_done(self, done_error: int) -> None:
        d = self.dut
        if not self.expected:
            raise self.fail("done without an accepted descriptor")
        acc = self.expected.popleft()
        if done_error != (acc.code != DmaError.NONE):
            raise self.fail(
                f"transfer {acc.index}: done_error={done_error}, want code {acc.code.name} "
                f"for {acc.desc}"
            )
        err, code = int(d.error.value), d.error_code.value.to_unsigned()
        reported: DmaError | None = None
        if not done_error:
            reported = DmaError.NONE
        elif self.sticky is None:
            try:
                reported = DmaError(code)
            except ValueError:
                raise self.fail(f"transfer {acc.index}: error_code {code} is no DmaError") from None
        if acc.code == DmaError.NONE:
            apply_reference(acc.desc, self.ref_l1, self.ref_l2)
        elif self.sticky is None:
            self.sticky = acc.code
        want = self.sticky or DmaError.NONE
        if err != (want != DmaError.NONE) or code != want:
            raise self.fail(
                f"transfer {acc.index}: error={err} code={code}, want {want!r} for {acc.desc}"
            )
        self.check_memories(f"after transfer {acc.index} ({acc.code.name}) {acc.desc}")
        self.dones.append(Done(acc.index, acc.desc, acc.code, self.cycle - acc.cycle, reported))
        self.coverage.sample(acc.desc, acc.code)
        self.coverage.export()

    def check_memories(self, when: str) -> None:
        """Both memories equal the reference, byte for byte."""
        diff = np.flatnonzero(self.l1_mem != self.ref_l1)
        if diff.size:
            a = int(diff[0])
            raise self.fail(
                f"{when}: L1 differs at {a:#x} (+{diff.size - 1} more): "
                f"got {self.l1_mem[a]:#04x}, want {self.ref_l1[a]:#04x}"
            )
        a2 = self.l2_mem.first_difference(self.ref_l2)
        if a2 is not None:
            got, want = self.l2_mem.read(a2, 1)[0], self.ref_l2.read(a2, 1)[0]
            raise self.fail(f"{when}: L2 differs at {a2:#x}: got {got:#04x}, want {want:#04x}")

    async def run_until(self, cond: Callable[[], bool], limit: int, what: str) -> int:
        """Step until ``cond()``; returns the cycles taken. A hang is an error."""
        start = self.cycle
        while not cond():
            if self.cycle - start >= limit:
                raise self.fail(f"hang: {what} not reached after {limit} cycles")
            await self.step()
        return self.cycle - start

    async def drain(self, what: str, slack: int = 400) -> None:
        """Run until every submitted descriptor is done."""
        target = self.submitted
        limit = slack + 60 * sum(
            d.beats(self.beat) + 4 for d in [a.desc for a in self.expected] + self._queued()
        )
        await self.run_until(
            lambda: len(self.dones) + self.dropped >= target and not self.busy, limit, what
        )

    def _queued(self) -> list[Descriptor]:
        rest = [d for _, d in self.pending]
        return rest + ([self.offer[1]] if self.offer else [])

    async def clear(self) -> None:
        """Pulse ``clear``, wait until idle, and check that the buses are quiet.

        The destination of the transfer that was running is undefined afterwards: the
        reference takes the DMA's bytes there, and everything else must be unchanged.
        No new descriptor is offered from just before the clear until this check, so
        nothing else can touch that destination meanwhile.
        """
        self.hold_cmd = True
        await self.run_until(lambda: self.offer is None, 20000, "pending offer taken")
        self.clear_next = True
        await self.step()
        self.dropped += len(self.aborted)
        await self.step()  # busy as sampled in the clear cycle predates the clear
        await self.run_until(lambda: not self.busy, 2000, "idle after clear")
        await self.step()  # one more cycle: responses due now must not exist
        if not (self.l1.quiet() and self.l2.quiet()):
            raise self.fail("bus not quiet after clear completed")
        d = self.dut
        if d.queue_level.value.to_unsigned() or int(d.error.value) or int(d.busy.value):
            raise self.fail(
                f"status not idle after clear: queue_level {d.queue_level.value}, "
                f"error {d.error.value}, busy {d.busy.value}"
            )
        if self.aborted and self.aborted[0].code == DmaError.NONE:
            running = self.aborted[0].desc
            for a2, a1 in running.row_starts():
                n = running.row_bytes
                if running.direction == Direction.L2_TO_L1:
                    self.ref_l1[a1 : a1 + n] = self.l1_mem[a1 : a1 + n]
                else:
                    self.ref_l2.write(a2, self.l2_mem.read(a2, n))
        self.check_memories("after clear (outside the aborted destination)")
        self.aborted = []
        self.hold_cmd = False


async def make_tb(dut: Any, seed_offset: int = 0) -> DmaTB:
    cfg = bench_config()
    tb = DmaTB(dut, cfg, bench_seed() + seed_offset)
    await tb.reset()
    return tb


# -- tests ---------------------------------------------------------------------------------


@cocotb.test()
async def random_transfers(dut: Any) -> None:
    """Random 2-D transfers both ways, in batches that overflow the queue, random stalls."""
    tb = await make_tb(dut)
    n = env_int("TINYATTN_TRANSFERS", 40)
    max_lat = env_int("TINYATTN_L2_LATENCY", 8)
    rng = tb.rng
    while tb.submitted < n:
        tb.stalls(
            l1=float(rng.choice([0.0, 0.2, 0.5])),
            l2_req=float(rng.choice([0.0, 0.3, 0.5])),
            l2_rsp=float(rng.choice([0.0, 0.3])),
            latency=int(rng.integers(0, max_lat + 1)),
            cmd=float(rng.choice([0.0, 0.5])),
        )
        for _ in range(int(rng.integers(1, tb.cfg.dma.queue_depth + 3))):
            tb.submit(random_descriptor(rng, tb.cfg))
        await tb.drain(f"batch ending with transfer {tb.submitted - 1}")
    assert all(d.code == DmaError.NONE for d in tb.dones)
    write_metrics(
        "random_transfers",
        {
            "transfers": len(tb.dones),
            "cycles": tb.cycle,
            "l1_reads": tb.l1.reads,
            "l1_writes": tb.l1.writes,
            "l2_reads": tb.l2.reads,
            "l2_writes": tb.l2.writes,
            "l2_peak_inflight": tb.l2.peak_inflight,
            "seed": tb.seed,
        },
    )


@cocotb.test()
async def queue_back_to_back(dut: Any) -> None:
    """Descriptors queued while one runs: the queue fills, back-pressures, one done each."""
    tb = await make_tb(dut, 1)
    cfg = tb.cfg
    qd = cfg.dma.queue_depth
    tb.stalls(l1=0.5)  # a slow first transfer, so the others have to wait
    big = Descriptor(Direction.L2_TO_L1, 0x100, 0x40, 16 * tb.beat, 4, 20 * tb.beat, 16 * tb.beat)
    tb.submit(big)
    small = [random_descriptor(tb.rng, cfg, max_words=8) for _ in range(qd + 2)]
    for d in small:
        tb.submit(d)
    await tb.run_until(lambda: len(tb.dones) == 1, 5000, "first done")
    if tb.max_level != qd:
        raise tb.fail(f"queue level reached {tb.max_level}, want queue_depth {qd}")
    if tb.cmd_blocked == 0:
        raise tb.fail("a full queue never back-pressured cmd")
    tb.stalls()
    start = tb.cycle
    await tb.drain("queued transfers")
    order = [d.index for d in tb.dones]
    if order != list(range(len(small) + 1)):
        raise tb.fail(f"done order {order}")
    n_after = len(order) - 1
    cycles_after = tb.cycle - start
    beats_after = sum(d.beats(tb.beat) for d in small)
    write_metrics(
        "queue_back_to_back",
        {
            "queue_depth": qd,
            "transfers": len(order),
            "cycles_after_first": cycles_after,
            "beats_after_first": beats_after,
            "overhead_per_transfer": round((cycles_after - beats_after) / n_after, 2),
        },
    )


def _error_cases(cfg: ClusterConfig, beat: int) -> list[tuple[str, Descriptor, DmaError]]:
    """Each error class, the priorities between classes, and valid transfers right at the
    range limits: (what, descriptor, the class docs/dma.md's table gives it)."""
    l1 = cfg.memory.size_bytes
    top = 1 << cfg.dma.l2_addr_bits
    L2, L1 = Direction.L2_TO_L1, Direction.L1_TO_L2
    Z, M, R1, R2 = DmaError.ZERO_SIZE, DmaError.MISALIGNED, DmaError.L1_RANGE, DmaError.L2_RANGE
    rb = 2 * beat + 4
    return [
        ("zero rows", Descriptor(L2, 0, 0, rb, 0, rb, rb), Z),
        ("zero row_bytes", Descriptor(L1, 0, 0, 0, 3, rb, rb), Z),
        ("misaligned l1_addr", Descriptor(L2, 0, 2, rb, 1, rb, rb), M),
        ("misaligned l2_addr", Descriptor(L1, 1, 0, rb, 1, rb, rb), M),
        ("misaligned row_bytes", Descriptor(L2, 0, 0, rb + 2, 1, rb + 4, rb + 4), M),
        ("misaligned l1_stride", Descriptor(L2, 0, 0, 8, 2, 8, 6), M),
        ("misaligned l2_stride, one row", Descriptor(L1, 0, 0, 8, 1, 3, 8), M),
        ("L1: one word past the end", Descriptor(L2, 0, l1 - rb + 4, rb, 1, rb, rb), R1),
        ("L1: a global-looking address", Descriptor(L1, 0, 0x1000_0000, 4, 1, 4, 4), R1),
        ("L1: the last row is out", Descriptor(L2, 0, 0, 4, 3, 4, (l1 // 2) + 4), R1),
        ("L1: stride wraps in 32 bits", Descriptor(L2, 0, 0, 4, 2, 4, 0xFFFF_FFFC), R1),
        ("L2: one word past the end", Descriptor(L1, top - rb + 4, 0, rb, 1, rb, rb), R2),
        # L1 in range (stride 0); the L2 end passes 2**32: no 32-bit wrap.
        ("L2: rows * stride", Descriptor(L2, 0, 0, 4, 0xFFFF, 0x20000, 0), R2),
        ("priority: zero size over misaligned", Descriptor(L2, 0, 2, 0, 0, rb, rb), Z),
        ("priority: misaligned over L1 range", Descriptor(L2, 1, l1, rb, 1, rb, rb), M),
        (
            "priority: L1 range over L2 range",
            Descriptor(L1, min(top, (1 << 32) - 4), l1, rb, 1, rb, rb),
            R1,
        ),
        # Valid, right at the limits: must run.
        (
            "valid, ends at both tops",
            Descriptor(L2, top - rb, l1 - rb, rb, 1, rb, rb),
            DmaError.NONE,
        ),
        (
            "valid, 2 rows ending at both tops",
            Descriptor(L1, top - 2 * rb, l1 - 2 * rb, rb, 2, rb, rb),
            DmaError.NONE,
        ),
    ]


def coverage_error_case(cfg: ClusterConfig, direction: str, shape: str, outcome: str) -> Descriptor:
    """A bad descriptor of one (direction, 1-D/2-D, error class) bin of the coverage model
    and of no earlier class (1-D: one row; 2-D: rows with a stride that is not the row
    length)."""
    l1 = cfg.memory.size_bytes
    top = 1 << cfg.dma.l2_addr_bits
    d = DMA_DIRECTIONS.index(direction)
    two_d = shape == "2-D"
    cases = {
        "zero size": (
            Descriptor(d, 0, 0, 0, 3, 8, 8) if two_d else Descriptor(d, 0, 0, 8, 0, 8, 8)
        ),
        "misaligned": (
            Descriptor(d, 0, 0, 8, 2, 8, 6) if two_d else Descriptor(d, 0, 2, 8, 1, 8, 8)
        ),
        "L1 range": (
            Descriptor(d, 0, 0, 4, 3, 4, l1 // 2 + 4)
            if two_d
            else Descriptor(d, 0, l1 - 4, 8, 1, 8, 8)
        ),
        "L2 range": (
            Descriptor(d, top - 8, 0, 4, 2, 16, 4)
            if two_d
            else Descriptor(d, top - 4, 0, 8, 1, 8, 8)
        ),
    }
    return cases[outcome]


@cocotb.test()
async def errors_and_clear(dut: Any) -> None:
    """Every bad descriptor gets its code from the hardware; sticky status; clear recovers."""
    tb = await make_tb(dut, 2)
    cfg = tb.cfg
    rng = tb.rng
    cases = _error_cases(cfg, tb.beat)
    for what, d, code in cases:  # the case list against the bench's model of the rules
        assert expected_error(d, cfg) == code, f"{what}: the model says {expected_error(d, cfg)}"
    assert {code for _, _, code in cases} == set(DmaError), "the error cases miss a class"
    tb.stalls(l1=0.3, l2_req=0.3, latency=4)
    # Each case between two good transfers, the error status acknowledged before it, so
    # the code the hardware shows at its done is its own.
    reported: dict[str, DmaError | None] = {}
    for i, (what, bad, code) in enumerate(cases):
        tb.ack_next = True
        await tb.step()
        await tb.step()
        if int(tb.dut.error.value):
            raise tb.fail(f"error_ack did not clear the error status (before case {i})")
        tb.submit(random_descriptor(rng, cfg))
        index = tb.submit(bad)
        tb.submit(random_descriptor(rng, cfg))
        await tb.drain(f"error case {i} ({what}): {bad}")
        [done] = [d for d in tb.dones if d.index == index]
        if done.reported != code:
            raise tb.fail(f"case {what}: the DMA reported {done.reported!r}, want {code!r}")
        reported[what] = done.reported
    seen = set(reported.values())
    if seen != set(DmaError):
        raise tb.fail(f"error classes reported by the DMA: {sorted(seen)}")
    # Coverage closure: a bad descriptor for each (direction, 1-D/2-D, class) bin the
    # cases above left unhit, each checked like them (its own code at its done).
    for direction, shape, outcome in tb.coverage.unhit_transfers():
        if outcome == "done":
            continue
        bad = coverage_error_case(cfg, direction, shape, outcome)
        code = DmaError(DMA_OUTCOMES.index(outcome))
        got = tb.coverage.classify(bad, expected_error(bad, cfg))
        assert (got.direction, got.shape, got.outcome) == (direction, shape, outcome), got
        dut._log.info("coverage case %s %s %s: %s", direction, shape, outcome, bad)
        tb.ack_next = True
        await tb.step()
        await tb.step()
        index = tb.submit(bad)
        await tb.drain(f"coverage case {direction} {shape} {outcome}: {bad}")
        [done] = [d for d in tb.dones if d.index == index]
        if done.reported != code:
            raise tb.fail(f"{bad}: the DMA reported {done.reported!r}, want {code!r}")
    # Sticky: two errors of different classes without an acknowledgement in between; the
    # status keeps the first (checked at the second's done by the sticky model).
    first, second = cases[0][1], cases[7][1]
    tb.ack_next = True
    await tb.step()
    for d in (first, random_descriptor(rng, cfg), second):
        tb.submit(d)
    await tb.drain("two errors without error_ack")
    if tb.dut.error_code.value.to_unsigned() != cases[0][2]:
        raise tb.fail(
            f"sticky code {tb.dut.error_code.value} after two errors, want {cases[0][2]!r}"
        )
    tb.ack_next = True
    await tb.step()
    await tb.step()
    if int(tb.dut.error.value):
        raise tb.fail("error_ack did not clear the error status")

    # Clear in the middle of transfers, queued ones dropped, then a good one runs.
    clears = env_int("TINYATTN_CLEARS", 6)
    for trial in range(clears):
        tb.stalls(l1=0.3, l2_req=0.2, l2_rsp=0.2, latency=int(rng.integers(0, 9)))
        direction = trial % 2
        rows, row = 4, 8 * tb.beat + 4
        tb.submit(Descriptor(direction, 0x200 + 4 * trial, 4 * trial, row, rows, row + 8, row))
        tb.submit(random_descriptor(rng, cfg))
        tb.submit(_error_cases(cfg, tb.beat)[0][1])
        wait = int(rng.integers(2, 80))
        for _ in range(wait):
            await tb.step()
        await tb.clear()
        tb.submit(random_descriptor(rng, cfg))
        await tb.drain(f"recovery after clear {trial}")
    # Clear while idle, and clear in the cycle a descriptor is offered.
    await tb.clear()
    tb.submit(random_descriptor(rng, cfg))
    tb.stalls()
    tb.clear_next = True
    await tb.step()  # the descriptor is offered in this (clear) cycle: not taken
    if tb.aborted:
        raise tb.fail("a descriptor was accepted in the clear cycle")
    await tb.drain("transfer offered during clear")
    write_metrics("errors_and_clear", {"transfers": len(tb.dones), "clears": clears + 2})


@cocotb.test()
async def throughput(dut: Any) -> None:
    """Large unstalled transfers: cycles against the ideal of one beat per cycle."""
    tb = await make_tb(dut, 3)
    cfg = tb.cfg
    B = tb.beat
    size = min(16 * 1024, cfg.memory.size_bytes // 2)
    L2, L1 = Direction.L2_TO_L1, Direction.L1_TO_L2
    N = B // 4
    so, do = 4 * (N - 1), 4 * max(N - 2, 0)  # constant word offsets with s_off > d_off
    rows = size // (8 * B)
    # name: (descriptor, L2 latency, bound by the full-throughput contract)
    cases = {
        "1d_l2_to_l1": (Descriptor(L2, 0, 0, size, 1, size, size), 0, True),
        "1d_l1_to_l2": (Descriptor(L1, 0, 0, size, 1, size, size), 0, True),
        "2d_l2_to_l1": (Descriptor(L2, 0, 0, 4 * B, 2 * rows, 8 * B, 4 * B), 0, True),
        "2d_offsets_l2_to_l1": (Descriptor(L2, so, do, 4 * B, rows, 8 * B, 5 * B), 0, True),
        "2d_offsets_l1_to_l2": (Descriptor(L1, do, so, 4 * B, rows, 8 * B, 5 * B), 0, True),
        # Offsets that change from row to row: rows whose source starts later in its
        # beat than the destination and that need no flush cost one cycle more.
        "2d_varying_offsets_l1_to_l2": (
            Descriptor(L1, 4, 8 % B, 4 * B, rows, 8 * B, 4 * B + 4),
            0,
            False,
        ),
        "1d_l2_latency8": (Descriptor(L2, 0, 0, size, 1, size, size), 8, True),
    }
    metrics: dict[str, Any] = {"beat_bytes": B}
    for name, (d, lat, contract) in cases.items():
        tb.stalls()
        tb.l2.fixed_latency = lat
        tb.submit(d)
        await tb.drain(name)
        done = tb.dones[-1]
        ideal = d.beats(B)
        metrics[name] = {
            "bytes": d.rows * d.row_bytes,
            "cycles": done.cycles,
            "ideal": ideal,
            "efficiency": round(ideal / done.cycles, 4),
        }
        bound = ideal + MAX_OVERHEAD_CYCLES + lat
        if contract and done.cycles > bound:
            raise tb.fail(f"{name}: {done.cycles} cycles for {ideal} beats (> {bound})")
    tb.l2.fixed_latency = None
    write_metrics("throughput", metrics)
