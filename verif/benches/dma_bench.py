"""cocotb bench of the DMA (``hw/dma.py``) against a reference copy of both memories.

The bench plays the two memories around the DMA, all agents of one
:class:`~tinyattn.verif.obi.CycleLoop` (drive after the falling edge, sample in the
read-only phase, so both simulators see the same handshakes):

- the L1 behind the DMA's OBI lanes: the shared target model
  :class:`~tinyattn.verif.obi.ObiTarget` (random grant withholding, response one cycle
  after the grant) under :class:`~tinyattn.verif.obi.ObiChecker`, plus the DMA's own
  rules per accepted request (address on its lane, full byte enables, reads only of the
  running transfer's source);
- the L2 behind the request/response streams: :class:`~tinyattn.verif.l2_model.L2Model`
  (random back-pressure on requests, random latency with many requests in flight,
  random gaps on responses; request streams checked by the shared stream sink);
- the descriptor stream: a :class:`~tinyattn.verif.streams.StreamSource` with random
  gaps.

Each transfer's ``done`` is matched in order with the accepted descriptors; at that
moment the L1 and L2 images must equal a reference copy to which the bench applied
every completed transfer row by row (:func:`~tinyattn.verif.descriptors.apply_reference`),
so bytes outside the destination rectangle are checked too. A rejected descriptor must
report :func:`~tinyattn.verif.descriptors.expected_error` and leave both memories
untouched. Every failure names the seed and the cycle.

Knobs (environment): ``TINYATTN_TRANSFERS`` (random transfers), ``TINYATTN_L2_LATENCY``
(largest extra L2 latency in cycles), ``TINYATTN_CLEARS`` (clear trials).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cocotb
import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.hw.dma import Direction, DmaError, descriptor_layout
from tinyattn.verif.benches.common import (
    bench_config,
    bench_seed,
    env_int,
    start_clock_and_reset,
    write_metrics,
)
from tinyattn.verif.coverage import DMA_DIRECTIONS, DMA_OUTCOMES, dma_coverage
from tinyattn.verif.descriptors import (
    Descriptor,
    ReadFence,
    apply_reference,
    expected_error,
    random_descriptor,
)
from tinyattn.verif.l2_model import L2Model
from tinyattn.verif.obi import CycleLoop, ObiChecker, ObiPort, ObiTarget, obi_ports
from tinyattn.verif.paged_memory import PagedMemory
from tinyattn.verif.streams import StreamSource

#: Cycles from a descriptor's acceptance to its ``done`` beyond one per beat, for an
#: unstalled transfer with the minimum L2 latency (a functional contract of the RTL).
MAX_OVERHEAD_CYCLES = 12


class DmaBenchError(AssertionError):
    """A check of this bench failed; the message already names the seed and the cycle."""


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


class DmaTB:
    """Owns the clock, the reset, the bus models, the descriptor source and the checks.

    Every Verilog port name of the DMA appears here and nowhere else in the bench (the
    class constants and :meth:`__init__`), so a renamed port changes one spot. The bench
    itself is the last agent of the cycle loop: it drives the ``clear`` and
    ``error_ack`` pulses and samples the status and ``done``.
    """

    #: The DMA's streams and OBI lanes (Verilog name prefixes).
    CMD = "control__cmd"
    L1_LANES = "l1"
    L2_REQUESTS = "l2_req"
    L2_RESPONSES = "l2_rsp"

    def __init__(self, dut: Any, cfg: ClusterConfig, seed: int) -> None:
        self.dut = dut
        self.cfg = cfg
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.beat = cfg.dma.dma_bits // 8
        self.n_lanes = cfg.dma.dma_bits // 32
        # The DMA's control and status pins.
        self.clear_pin, self.error_ack_pin = dut.control__clear, dut.control__error_ack
        self.busy_pin, self.queue_level_pin = dut.control__busy, dut.control__queue_level
        self.done_pin, self.done_error_pin = dut.control__done, dut.control__done_error
        self.error_pin, self.error_code_pin = dut.control__error, dut.control__error_code
        # The memories and their reference copies. l1_mem is a view of the L1 model's
        # bytes: the model writes them, the bench compares them.
        self.l1_bytes = bytearray(self.rng.integers(0, 256, cfg.memory.size_bytes, np.uint8))
        self.l1_mem = np.frombuffer(self.l1_bytes, dtype=np.uint8)
        self.l2_mem = PagedMemory(self.seed)
        self.ref_l1 = self.l1_mem.copy()
        self.ref_l2 = self.l2_mem.copy()
        self._fence_key: tuple[int, ...] = (-1,)
        self._fence = ReadFence([])
        self.l1_stall = 0.0  # probability that a lane's gnt is withheld in a cycle
        self.cmd_gap = 0.0  # probability that the next descriptor is held back a cycle
        self.hold_cmd = False  # the descriptor source offers nothing new while set
        # The models, in the order they draw from the shared rng each cycle.
        self.cmd: StreamSource[tuple[int, Descriptor]] = StreamSource(
            dut,
            self.CMD,
            descriptor_layout,
            encode=lambda item: item[1].payload(),
            pause=self._hold_descriptor,
            on_accept=self._on_accept,
        )
        self.lanes = obi_ports(dut, self.L1_LANES, self.n_lanes)
        self.l1 = ObiTarget(
            self.lanes, self.l1_bytes, withhold=self._withhold_grant, check=self._check_l1
        )
        self.l1_checker = ObiChecker(self.lanes, latency=1)
        self.l2 = L2Model(
            dut, cfg, self.l2_mem, self.rng, requests=self.L2_REQUESTS, responses=self.L2_RESPONSES
        )
        self.l2.fence = self.fence
        self.loop = CycleLoop(dut.clk)
        self.loop.add(self.cmd, self.l1, self.l1_checker, self.l2, self)
        self.submitted = 0
        self.expected: deque[_Accepted] = deque()
        self.dones: list[Done] = []
        self.aborted: list[_Accepted] = []
        self.sticky: DmaError | None = None  # the error status the DMA must show
        self.clear_next = False  # pulse clear in the next cycle
        self.ack_next = False  # pulse error_ack in the next cycle
        self._clear_now = self._ack_now = False
        self.busy = 0
        self.max_level = 0
        self.cmd_blocked = 0  # cycles a descriptor was offered and not taken
        self.dropped = 0  # accepted descriptors dropped by clear (no done)
        #: The coverage model (verif/coverage.py), sampled at every done, exported to the
        #: run folder; one per run, so it collects the hits of every test.
        self.coverage = dma_coverage(cfg)

    @property
    def cycle(self) -> int:
        """Cycles run since the loop started (see :class:`~tinyattn.verif.obi.CycleLoop`)."""
        return self.loop.cycle

    def fence(self) -> ReadFence:
        """Reads belong to the oldest accepted transfer not yet done (transfers run one
        after the other) or, while a clear drains, to the transfer it aborted."""
        owners = self.aborted[:1] + list(self.expected)[:1]
        key = tuple(a.index for a in owners)
        if key != self._fence_key:
            self._fence_key, self._fence = key, ReadFence([a.desc for a in owners])
        return self._fence

    def fail(self, msg: str) -> DmaBenchError:
        return DmaBenchError(f"{msg} (TINYATTN_SEED={bench_seed()}, cycle {self.cycle})")

    # -- the models' callbacks ------------------------------------------------------------

    def _hold_descriptor(self) -> bool:
        """No new descriptor this cycle: none queued, held for a clear, or a random gap."""
        return (
            not self.cmd.queue
            or self.hold_cmd
            or (self.cmd_gap != 0.0 and self.rng.random() < self.cmd_gap)
        )

    def _withhold_grant(self, lane: int, cycle: int) -> bool:
        return self.l1_stall != 0.0 and self.rng.random() < self.l1_stall

    def _check_l1(self, lane: int, port: ObiPort, cycle: int) -> None:
        """The DMA's own rules for an accepted L1 request (beyond the OBI contract)."""
        addr = port.addr
        if (addr // 4) % self.n_lanes != lane:
            raise AssertionError(f"L1 lane {lane}: address {addr:#x} is not on lane {lane}")
        if port.be != 0b1111:
            raise AssertionError(f"L1 lane {lane}: be {port.be:#06b}, want 0b1111")
        if not port.we and not self.fence().l1_ok(addr):
            raise AssertionError(f"L1 lane {lane}: read of {addr:#x}, outside the source")

    def _on_accept(self, item: tuple[int, Descriptor], cycle: int) -> None:
        if self._clear_now:
            raise self.fail("cmd accepted in a clear cycle")
        index, desc = item
        self.expected.append(_Accepted(index, desc, expected_error(desc, self.cfg), cycle))

    # -- the bench as the loop's last agent -----------------------------------------------

    def drive(self, cycle: int) -> None:
        self._clear_now, self._ack_now = self.clear_next, self.ack_next
        self.clear_next = self.ack_next = False
        self.clear_pin.value = int(self._clear_now)
        self.error_ack_pin.value = int(self._ack_now)

    def sample(self, cycle: int) -> None:
        if self.cmd.current is not None:  # offered and not taken
            self.cmd_blocked += 1
        self.busy = int(self.busy_pin.value)
        level = self.queue_level_pin.value.to_unsigned()
        self.max_level = max(self.max_level, level)
        if level > self.cfg.dma.queue_depth:
            raise self.fail(f"queue_level {level} > queue_depth")
        if self.done_pin.value:
            self._on_done(int(self.done_error_pin.value))
        if self._ack_now:
            self.sticky = None
        if self._clear_now:
            self.aborted = list(self.expected)
            self.expected.clear()
            self.sticky = None

    # -- running ----------------------------------------------------------------------------

    async def reset(self) -> None:
        self.clear_pin.value = 0
        self.error_ack_pin.value = 0
        await start_clock_and_reset(self.dut)

    def stalls(
        self,
        l1: float = 0.0,
        l2_req: float = 0.0,
        l2_rsp: float = 0.0,
        latency: int = 0,
        cmd: float = 0.0,
    ) -> None:
        """Probabilities of a withheld grant / ready / response / descriptor per cycle."""
        self.l1_stall = l1
        self.l2.req_stall = l2_req
        self.l2.rsp_gap = l2_rsp
        self.l2.max_latency = latency
        self.cmd_gap = cmd

    def submit(self, d: Descriptor) -> int:
        """Queue ``d`` for the descriptor source; returns its submission index."""
        self.cmd.push((self.submitted, d))
        self.submitted += 1
        return self.submitted - 1

    async def step(self) -> None:
        """One clock cycle of every agent; a failed model check gets the seed and cycle."""
        try:
            await self.loop.step()
        except DmaBenchError:
            raise
        except AssertionError as exc:  # a protocol checker or model
            raise self.fail(str(exc)) from None

    def bus_quiet(self) -> bool:
        """No L1 request on a lane or response due, and the L2 quiet."""
        return not self.l1.busy and not any(p.req for p in self.lanes) and self.l2.quiet()

    def _on_done(self, done_error: int) -> None:
        if not self.expected:
            raise self.fail("done without an accepted descriptor")
        acc = self.expected.popleft()
        if done_error != (acc.code != DmaError.NONE):
            raise self.fail(
                f"transfer {acc.index}: done_error={done_error}, want code {acc.code.name} "
                f"for {acc.desc}"
            )
        err, code = int(self.error_pin.value), self.error_code_pin.value.to_unsigned()
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
        rest = [d for _, d in self.cmd.queue]
        return rest + ([self.cmd.current[1]] if self.cmd.current else [])

    async def clear(self) -> None:
        """Pulse ``clear``, wait until idle, and check that the buses are quiet.

        The destination of the transfer that was running is undefined afterwards: the
        reference takes the DMA's bytes there, and everything else must be unchanged.
        No new descriptor is offered from just before the clear until this check, so
        nothing else can touch that destination meanwhile.
        """
        self.hold_cmd = True
        await self.run_until(lambda: self.cmd.current is None, 20000, "pending offer taken")
        self.clear_next = True
        await self.step()
        self.dropped += len(self.aborted)
        await self.step()  # busy as sampled in the clear cycle predates the clear
        await self.run_until(lambda: not self.busy, 2000, "idle after clear")
        await self.step()  # one more cycle: responses due now must not exist
        if not self.bus_quiet():
            raise self.fail("bus not quiet after clear completed")
        level, error, busy = self.queue_level_pin.value, self.error_pin.value, self.busy_pin.value
        if level.to_unsigned() or int(error) or int(busy):
            raise self.fail(
                f"status not idle after clear: queue_level {level}, error {error}, busy {busy}"
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
        if int(tb.error_pin.value):
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
    if tb.error_code_pin.value.to_unsigned() != cases[0][2]:
        raise tb.fail(
            f"sticky code {tb.error_code_pin.value} after two errors, want {cases[0][2]!r}"
        )
    tb.ack_next = True
    await tb.step()
    await tb.step()
    if int(tb.error_pin.value):
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
