"""cocotb bench of the TCDM (``hw/tcdm.py``: the interconnect in front of the L1 banks).

Every narrow port and every wide lane is driven by an :class:`~tinyattn.verif.obi.ObiInitiator`
and watched by one :class:`~tinyattn.verif.obi.ObiChecker` (request stability,
``rvalid`` exactly one cycle after ``gnt``, and each port's documented
worst-case wait, :func:`~tinyattn.hw.interconnect.narrow_wait_bound` /
:func:`~tinyattn.hw.interconnect.wide_wait_bound`, checked every cycle). A
scoreboard keeps a reference L1: each granted write updates it, each granted
read takes its expected word from it, and the response must match, in order
per port. The reference starts from the banks' known initial contents (zero)
and carries over from test to test of a run, as the banks do; it never learns
a byte from a read, so a write that lands in a word no granted write touched
fails the next read there. It also checks that no bank is granted twice in a
cycle. :class:`BankCoverage` samples the interconnect's coverage model
(``verif/coverage.py``: same-bank collisions, wide-against-narrow conflicts and their
winner, waits up to the bound) every cycle and exports it into the run folder.

Tests
-----
- ``random_traffic``: random reads and writes (random byte enables) on every
  port, half of them in a small hot window so that ports collide and read each
  other's writes; wide lanes stream adjacent-word vectors, now and then
  scattered. Then every word written is read back, and the words never written
  (all of them at the small configurations and in the slow variant, a sample of
  4096 otherwise), which must still be zero.
- ``hammer``: every port requests one bank back to back. The longest waits
  must equal the bounds, ``N * (S + 1) - 1`` for a narrow port and
  ``W + (W - 1) // S`` for a wide lane (both are reached: this also catches a
  stall counter that lets the narrow side in too early). Two more phases:
  narrow ports alone (longest wait exactly ``N - 1``) and wide lanes alone
  (``W - 1``).
- ``conflict_free``: each port owns a bank; every request is granted at once.
- ``perf_uniform``, ``perf_single_bank``, ``perf_wide_stream``: throughput and
  waits for ``tinyattn.sim.benchmarks.interconnect`` (checked like the others).

Knobs (environment): ``TINYATTN_CYCLES`` (random traffic / hammer phase
length / perf size), ``TINYATTN_IDLE`` (comma-separated idle probabilities
drawn per port).
"""

from __future__ import annotations

import math
import os
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import cocotb

from tinyattn.config import ClusterConfig
from tinyattn.hw.interconnect import (
    bank_of,
    n_narrow,
    narrow_wait_bound,
    row_of,
    wide_wait_bound,
)
from tinyattn.verif.benches.common import (
    bench_config,
    bench_seed,
    env_int,
    start_clock_and_reset,
    write_metrics,
)
from tinyattn.verif.coverage import interconnect_coverage
from tinyattn.verif.obi import (
    BE_MASKS,
    CycleLoop,
    ObiChecker,
    ObiInitiator,
    ObiPort,
    ObiTransaction,
    obi_ports,
)

#: The reference L1 of this simulation run, shared by the tests of the run. The banks
#: start at zero (the netlist's initial contents: ``hw/l1.py`` builds them with
#: ``init=[]``) and keep their contents from one test to the next, so each test's
#: scoreboard continues from what the previous tests wrote. Nothing is ever learnt from
#: a read: a write that lands where no granted write went fails the next read there.
_REFERENCE_L1: list[int] | None = None


def reference_l1(cfg: ClusterConfig) -> list[int]:
    """The run's reference L1 (one int per word), zero before the first test."""
    global _REFERENCE_L1
    if _REFERENCE_L1 is None:
        _REFERENCE_L1 = [0] * (cfg.memory.size_bytes // 4)
    return _REFERENCE_L1


class TcdmScoreboard:
    """Reference L1 and the expected response of every accepted request, per port."""

    def __init__(self, cfg: ClusterConfig, ports: Sequence[ObiPort], seed: int) -> None:
        self.cfg = cfg
        self.ports = list(ports)
        self.seed = seed
        self.bank_mask = cfg.memory.n_banks - 1
        self.ref = reference_l1(cfg)
        # Per port: None for a write, (word, expected, grant cycle) for a read.
        self.expect: list[deque[tuple[int, int, int] | None]] = [deque() for _ in self.ports]
        self.touched: set[int] = set()
        self.granted = [0] * len(self.ports)
        self.reads_checked = 0
        self.writes = 0

    def drive(self, cycle: int) -> None:
        pass

    def sample(self, cycle: int) -> None:
        owner: dict[int, int] = {}
        ref, mask = self.ref, self.bank_mask
        for i, port in enumerate(self.ports):
            if port.rvalid:
                exp = self.expect[i]
                if not exp:
                    raise AssertionError(
                        f"{port.name}, cycle {cycle}: response without a request (seed {self.seed})"
                    )
                want = exp.popleft()
                if want is not None:
                    word, value, granted = want
                    got = port.rdata
                    if got != value:
                        raise AssertionError(
                            f"{port.name}, cycle {cycle}: read of {word * 4:#x} (bank "
                            f"{bank_of(self.cfg, word * 4)}, row {row_of(self.cfg, word * 4)}) "
                            f"granted in cycle {granted} returned "
                            f"{'X' if got is None else f'{got:#010x}'}, want {value:#010x} "
                            f"(seed {self.seed})"
                        )
                    self.reads_checked += 1
            if port.req and port.gnt:
                word = port.addr >> 2
                bank = word & mask
                if bank in owner:
                    raise AssertionError(
                        f"cycle {cycle}: bank {bank} granted to both "
                        f"{self.ports[owner[bank]].name} and {port.name} (seed {self.seed})"
                    )
                owner[bank] = i
                self.granted[i] += 1
                if port.we:
                    m = BE_MASKS[port.be]
                    ref[word] = (ref[word] & ~m) | (port.wdata & m)
                    self.touched.add(word)
                    self.writes += 1
                    self.expect[i].append(None)
                else:
                    self.expect[i].append((word, ref[word], cycle))

    def finish(self) -> None:
        for port, exp in zip(self.ports, self.expect, strict=True):
            assert not exp, f"{port.name}: {len(exp)} responses missing (seed {self.seed})"


class Traffic:
    """Random requests: a hot window (collisions, read-after-write) or anywhere in L1."""

    def __init__(
        self,
        cfg: ClusterConfig,
        rng: random.Random,
        *,
        hot: float = 0.5,
        writes: float = 0.5,
        scatter: float = 0.15,
    ) -> None:
        self.cfg = cfg
        self.rng = rng
        self.words = cfg.memory.size_bytes // 4
        self.hot_words = min(self.words, 2 * cfg.memory.n_banks)
        self.hot = hot
        self.writes = writes
        self.scatter = scatter
        self.lanes = cfg.engine.port_lanes
        self.enabled = True

    def word(self) -> int:
        rng = self.rng
        return rng.randrange(self.hot_words if rng.random() < self.hot else self.words)

    def op(self, word: int, we: bool) -> ObiTransaction:
        if not we:
            return ObiTransaction(word * 4)
        r = self.rng.random()
        be = 0xF if r < 0.5 else (0 if r < 0.52 else self.rng.randrange(1, 16))
        return ObiTransaction(word * 4, True, self.rng.getrandbits(32), be)

    def narrow_op(self) -> ObiTransaction | None:
        if not self.enabled:
            return None
        return self.op(self.word(), self.rng.random() < self.writes)

    def vector(self) -> list[ObiTransaction]:
        """One wide access: lane i at base + 4*i, or (``scatter``) anywhere."""
        we = self.rng.random() < self.writes
        if self.rng.random() < self.scatter:
            return [self.op(self.word(), we) for _ in range(self.lanes)]
        base = min(self.word(), self.words - self.lanes)
        return [self.op(base + i, we) for i in range(self.lanes)]


class WideFeeder:
    """Feeds the wide lanes with :meth:`Traffic.vector` accesses.

    Independent lanes (default): each lane takes its element of the next vector
    whenever it is free, so lanes drift apart as they get stalled. Lockstep: a
    vector starts on all lanes once every lane's previous request was granted,
    as an engine waiting for whole vectors would do; ``limit`` vectors at most.
    """

    def __init__(
        self,
        lanes: Sequence[ObiInitiator],
        make: Callable[[], list[ObiTransaction] | None],
        *,
        lockstep: bool = False,
        limit: int | None = None,
    ) -> None:
        self.lanes = list(lanes)
        self.make = make
        self.lockstep = lockstep
        self.limit = limit
        self.issued = 0
        self.first_cycle = -1
        self.vectors: deque[list[ObiTransaction]] = deque()
        self.offset = 0
        self.pos = [0] * len(self.lanes)
        if not lockstep:
            for i, lane in enumerate(self.lanes):
                lane.source = self._lane_source(i)

    def _lane_source(self, i: int) -> Callable[[], ObiTransaction | None]:
        def source() -> ObiTransaction | None:
            if len(self.vectors) > 64:  # forget the vectors every lane has taken
                low = min(self.pos)
                while self.offset < low:
                    self.vectors.popleft()
                    self.offset += 1
            k = self.pos[i] - self.offset
            if k == len(self.vectors):
                vec = self.make()
                if vec is None:
                    return None
                self.vectors.append(vec)
            self.pos[i] += 1
            return self.vectors[k][i]

        return source

    def detach(self) -> None:
        for lane in self.lanes:
            lane.source = None

    def drive(self, cycle: int) -> None:
        if not self.lockstep or (self.limit is not None and self.issued >= self.limit):
            return
        if all(lane.current is None and not lane.queue for lane in self.lanes):
            vec = self.make()
            if vec is not None:
                for lane, txn in zip(self.lanes, vec, strict=True):
                    lane.submit(txn)
                if self.issued == 0:
                    self.first_cycle = cycle
                self.issued += 1

    def sample(self, cycle: int) -> None:
        pass


class BankCoverage:
    """Samples the interconnect coverage model every cycle (after the scoreboard).

    Per bank: how many narrow ports and wide lanes request it and which side is granted;
    per grant: the port's wait, from the first cycle of its ``req`` (the same count the
    checker bounds). The database goes to ``coverage.xml`` in the run folder at the end
    of every test (:meth:`export`).
    """

    def __init__(self, cfg: ClusterConfig, ports: Sequence[ObiPort], n_narrow: int) -> None:
        self.model = interconnect_coverage(cfg)
        self.ports = list(ports)
        self.sides = ["narrow"] * n_narrow + ["wide"] * (len(self.ports) - n_narrow)
        self.n_banks = cfg.memory.n_banks
        #: Per port: the cycle its pending request started, None when it has none.
        self.since: list[int | None] = [None] * len(self.ports)

    def drive(self, cycle: int) -> None:
        pass

    def sample(self, cycle: int) -> None:
        requests: dict[int, list[int]] = {}  # bank -> [narrow, wide, granted side index]
        for i, port in enumerate(self.ports):
            if not port.req:
                continue
            side = self.sides[i]
            bank = (port.addr >> 2) % self.n_banks
            counts = requests.setdefault(bank, [0, 0, -1])
            counts[side == "wide"] += 1
            if self.since[i] is None:
                self.since[i] = cycle
            if port.gnt:
                counts[2] = side == "wide"
                self.model.sample_wait(side, cycle - self.since[i])
                self.since[i] = None
        for narrow, wide, granted in requests.values():
            winner = None if granted < 0 else ("wide" if granted else "narrow")
            self.model.sample_bank(narrow, wide, winner)

    def export(self) -> None:
        self.model.export()


class TcdmTB:
    """Owns the clock, reset, one initiator per port, the checker and the scoreboard."""

    def __init__(self, dut: Any, cfg: ClusterConfig, seed: int) -> None:
        self.dut = dut
        self.cfg = cfg
        self.seed = seed
        self.rng = random.Random(seed)
        self.n_narrow = n_narrow(cfg)
        self.n_wide = cfg.engine.port_lanes
        self.narrow = obi_ports(dut, "narrow", self.n_narrow)
        self.wide = obi_ports(dut, "wide", self.n_wide)
        self.ports = self.narrow + self.wide
        self.inits = [
            ObiInitiator(p, rng=random.Random(self.rng.getrandbits(32)), collect=False)
            for p in self.ports
        ]
        self.narrow_inits = self.inits[: self.n_narrow]
        self.wide_inits = self.inits[self.n_narrow :]
        self.bounds = [narrow_wait_bound(cfg)] * self.n_narrow + [wide_wait_bound(cfg)] * (
            self.n_wide
        )
        self.checker = ObiChecker(self.ports, latency=1, max_wait=self.bounds)
        self.board = TcdmScoreboard(cfg, self.ports, seed)
        self.coverage = BankCoverage(cfg, self.ports, self.n_narrow)
        self.loop = CycleLoop(dut.clk)
        # The checker first: a protocol error is reported before its consequences.
        self.loop.add(self.checker, self.board, self.coverage, *self.inits)

    async def reset(self) -> None:
        await start_clock_and_reset(self.dut)

    def set_idle(self, probabilities: Sequence[float]) -> None:
        """Give every port an idle probability drawn from ``probabilities``."""
        for init in self.inits:
            init.idle = self.rng.choice(list(probabilities))

    def busy(self) -> bool:
        return any(init.busy for init in self.inits)

    async def drain(self, what: str) -> None:
        """Stop all sources and run until every request is answered."""
        for init in self.inits:
            init.source = None
        await self.loop.run_until(lambda: not self.busy(), timeout=100_000, what=what)

    def check_accounting(self) -> None:
        """Every request granted once and answered once, seen alike by checker and models;
        then the coverage of the run so far is exported (every test ends here)."""
        self.checker.finish()
        self.board.finish()
        self.coverage.export()
        counts = zip(self.inits, self.checker.accepted, self.board.granted, strict=True)
        for init, accepted, granted in counts:
            name = init.port.name
            assert not init.busy, f"{name}: requests left over (seed {self.seed})"
            assert init.granted == init.completed, (
                f"{name}: {init.granted} granted, {init.completed} answered (seed {self.seed})"
            )
            assert accepted == granted, (
                f"{name}: the checker saw {accepted} handshakes, the scoreboard {granted}"
            )

    def port_stats(self) -> dict[str, dict[str, float]]:
        return {
            init.port.name: {
                "granted": init.granted,
                "mean_wait": round(init.wait_mean, 3),
                "max_wait": init.wait_max,
            }
            for init in self.inits
        }

    def reset_stats(self) -> None:
        for init in self.inits:
            init.reset_stats()


#: Words never written that ``random_traffic`` reads back, at most (a seeded sample; the
#: small configurations have fewer, so all of them); TINYATTN_READBACK_ALL=1: every one.
READBACK_UNTOUCHED = 4096


def _idle_choices() -> list[float]:
    raw = os.environ.get("TINYATTN_IDLE", "0,0.2,0.5,0.8")
    return [float(x) for x in raw.split(",")]


@cocotb.test()
async def random_traffic(dut: Any) -> None:
    """Random traffic on every port against the reference L1, then a full read-back."""
    cfg, seed = bench_config(), bench_seed()
    tb = TcdmTB(dut, cfg, seed)
    await tb.reset()
    cycles = env_int("TINYATTN_CYCLES", 2000)
    traffic = Traffic(cfg, tb.rng)
    tb.set_idle(_idle_choices())
    for init in tb.narrow_inits:
        init.source = traffic.narrow_op
    feeder = WideFeeder(tb.wide_inits, lambda: traffic.vector() if traffic.enabled else None)
    tb.loop.add(feeder)
    await tb.loop.run(cycles)
    traffic.enabled = False
    feeder.detach()
    await tb.drain("random traffic drained")
    random_stats = tb.port_stats()
    requests = sum(init.granted for init in tb.inits)

    # Read back through all ports (each read is checked): every word written and, up to
    # READBACK_UNTOUCHED of them (all of them with TINYATTN_READBACK_ALL=1, as the slow
    # variant runs), the words never written, which must still hold their initial zero.
    n_words = cfg.memory.size_bytes // 4
    untouched = [w for w in range(n_words) if w not in tb.board.touched]
    if not env_int("TINYATTN_READBACK_ALL", 0) and len(untouched) > READBACK_UNTOUCHED:
        untouched = tb.rng.sample(untouched, READBACK_UNTOUCHED)
    words = sorted([*tb.board.touched, *untouched])
    for k, word in enumerate(words):
        tb.inits[k % len(tb.inits)].read(word * 4)
    for init in tb.inits:
        init.idle = 0.0
    await tb.drain("read-back")
    tb.check_accounting()
    write_metrics(
        "random_traffic",
        {
            "cycles": cycles,
            "ports": len(tb.ports),
            "port_cycles": cycles * len(tb.ports),
            "requests": requests,
            "writes": tb.board.writes,
            "reads_checked": tb.board.reads_checked,
            "words_read_back": len(words),
            "words_written": len(tb.board.touched),
            "words_in_l1": n_words,
            "bounds": {"narrow": tb.bounds[0], "wide": tb.bounds[-1]},
            "per_port": random_stats,
            "seed": seed,
        },
    )


def _bank_source(
    cfg: ClusterConfig, rng: random.Random, bank: int, limit: int | None = None
) -> Callable[[], ObiTransaction | None]:
    """Back-to-back random reads and writes to random rows of ``bank``."""
    traffic = Traffic(cfg, rng)
    rows = cfg.memory.bank_words
    issued = 0

    def source() -> ObiTransaction | None:
        nonlocal issued
        if limit is not None and issued >= limit:
            return None
        issued += 1
        word = rng.randrange(rows) * cfg.memory.n_banks + bank
        return traffic.op(word, rng.random() < 0.5)

    return source


async def _hammer_phase(
    tb: TcdmTB, inits: Sequence[ObiInitiator], cycles: int
) -> dict[str, dict[str, float]]:
    bank = tb.rng.randrange(tb.cfg.memory.n_banks)
    tb.reset_stats()
    for init in tb.inits:
        init.idle = 0.0
    for init in inits:
        init.source = _bank_source(tb.cfg, random.Random(tb.rng.getrandbits(32)), bank)
    await tb.loop.run(cycles)
    await tb.drain("hammer phase drained")
    for init in inits:
        assert init.granted > 0, f"{init.port.name} starved at bank {bank} (seed {tb.seed})"
    return tb.port_stats()


@cocotb.test()
async def hammer(dut: Any) -> None:
    """Every port on one bank: the longest waits against the documented bounds."""
    cfg, seed = bench_config(), bench_seed()
    tb = TcdmTB(dut, cfg, seed + 1)
    await tb.reset()
    n, w, s = tb.n_narrow, tb.n_wide, cfg.interconnect.max_stall
    nb, wb = narrow_wait_bound(cfg), wide_wait_bound(cfg)
    # Long enough for every port to be served several times in the slowest rotation.
    cycles = max(env_int("TINYATTN_CYCLES", 2000) // 4, 4 * n * (s + 1) + 4 * w)
    results = {}
    expectations = {
        "all": (tb.inits, nb, wb),
        "narrow_only": (tb.narrow_inits, n - 1, None),
        "wide_only": (tb.wide_inits, None, w - 1),
    }
    for phase, (inits, want_narrow, want_wide) in expectations.items():
        stats = await _hammer_phase(tb, inits, cycles)
        active = {init.port.name for init in inits}
        narrow_max = max(
            (v["max_wait"] for k, v in stats.items() if k.startswith("narrow") and k in active),
            default=None,
        )
        wide_max = max(
            (v["max_wait"] for k, v in stats.items() if k.startswith("wide") and k in active),
            default=None,
        )
        results[phase] = {
            "cycles": cycles,
            "narrow_max_wait": narrow_max,
            "wide_max_wait": wide_max,
            "per_port": {k: v for k, v in stats.items() if k in active},
        }
        # The checker already enforced the bounds every cycle; these are the exact values.
        if want_narrow is not None:
            assert narrow_max == want_narrow, (
                f"hammer {phase}: longest narrow wait {narrow_max}, expected exactly "
                f"{want_narrow} (seed {seed})"
            )
        if want_wide is not None:
            assert wide_max == want_wide, (
                f"hammer {phase}: longest wide wait {wide_max}, expected exactly "
                f"{want_wide} (seed {seed})"
            )
    tb.check_accounting()
    write_metrics(
        "hammer",
        {
            "narrow_bound": nb,
            "wide_bound": wb,
            "narrow_bound_formula": f"N*(S+1)-1 = {n}*({s}+1)-1",
            "wide_bound_formula": f"W+(W-1)//S = {w}+({w}-1)//{s}",
            "phases": results,
            "seed": seed,
        },
    )


@cocotb.test()
async def conflict_free(dut: Any) -> None:
    """Each port owns a bank (as many ports as there are banks): every request at once."""
    cfg, seed = bench_config(), bench_seed()
    tb = TcdmTB(dut, cfg, seed + 2)
    await tb.reset()
    cycles = max(env_int("TINYATTN_CYCLES", 2000) // 4, 64)
    inits = list(tb.inits)
    tb.rng.shuffle(inits)
    inits = inits[: cfg.memory.n_banks]
    banks = tb.rng.sample(range(cfg.memory.n_banks), len(inits))
    for init in tb.inits:
        init.idle = 0.0
    for init, bank in zip(inits, banks, strict=True):
        init.source = _bank_source(cfg, random.Random(tb.rng.getrandbits(32)), bank)
    await tb.loop.run(cycles)
    await tb.drain("conflict-free traffic drained")
    for init in inits:
        assert init.wait_max == 0 and init.granted == cycles, (
            f"{init.port.name}: {init.granted} grants in {cycles} cycles, longest wait "
            f"{init.wait_max}; a port alone at its bank must be granted every cycle (seed {seed})"
        )
    tb.check_accounting()
    write_metrics("conflict_free", {"cycles": cycles, "ports": len(inits), "seed": seed})


# -- performance scenarios (for tinyattn.sim.benchmarks.interconnect) ----------------------


def _perf_record(
    tb: TcdmTB, name: str, cycles: int, ideal: int, inits: Sequence[ObiInitiator]
) -> dict[str, Any]:
    granted = sum(i.granted for i in inits)
    return {
        "name": name,
        "cycles": cycles,
        "ideal_cycles": ideal,
        "utilization": round(ideal / cycles, 4),
        "mean_wait": round(sum(i.wait_sum for i in inits) / max(granted, 1), 3),
        "max_wait": max(i.wait_max for i in inits),
        "per_port": {k: v for k, v in tb.port_stats().items() if v["granted"]},
    }


@cocotb.test()
async def perf_uniform(dut: Any) -> None:
    """Every port back to back at uniformly random addresses, R requests each."""
    cfg, seed = bench_config(), bench_seed()
    tb = TcdmTB(dut, cfg, seed + 3)
    await tb.reset()
    r = env_int("TINYATTN_CYCLES", 2000)
    traffic = Traffic(cfg, tb.rng, hot=0.0, scatter=1.0)
    for init in tb.inits:
        init.idle = 0.0
        init.source = _limited(traffic.narrow_op, r)
    cycles = await tb.loop.run_until(
        lambda: all(i.granted == r for i in tb.inits), timeout=100 * r, what="perf_uniform"
    )
    await tb.drain("perf_uniform drained")
    tb.check_accounting()
    p, b = len(tb.inits), cfg.memory.n_banks
    ideal = max(r, math.ceil(p * r / b))
    write_metrics("perf_uniform", _perf_record(tb, "uniform", cycles, ideal, tb.inits))


@cocotb.test()
async def perf_single_bank(dut: Any) -> None:
    """Every port back to back at one bank: the bank must stay busy every cycle."""
    cfg, seed = bench_config(), bench_seed()
    tb = TcdmTB(dut, cfg, seed + 4)
    await tb.reset()
    p = len(tb.inits)
    r = max(env_int("TINYATTN_CYCLES", 2000) // p, 1)
    bank = tb.rng.randrange(cfg.memory.n_banks)
    for init in tb.inits:
        init.idle = 0.0
        init.source = _bank_source(cfg, random.Random(tb.rng.getrandbits(32)), bank, limit=r)
    cycles = await tb.loop.run_until(
        lambda: all(i.granted == r for i in tb.inits), timeout=10 * p * r, what="perf_single_bank"
    )
    await tb.drain("perf_single_bank drained")
    tb.check_accounting()
    write_metrics("perf_single_bank", _perf_record(tb, "hammer", cycles, p * r, tb.inits))


@cocotb.test()
async def perf_wide_stream(dut: Any) -> None:
    """The wide port streams V adjacent-word vectors in lockstep; narrow ports 25% busy.

    Utilization is the wide port's: V vectors ideally take V cycles. This is the
    interconnect's share of the engine's memory stalls; the engine-level number
    needs the engine.
    """
    cfg, seed = bench_config(), bench_seed()
    tb = TcdmTB(dut, cfg, seed + 5)
    await tb.reset()
    v = env_int("TINYATTN_CYCLES", 2000)
    traffic = Traffic(cfg, tb.rng, hot=0.0, scatter=0.0)
    stream = Traffic(cfg, random.Random(tb.rng.getrandbits(32)), hot=0.0, scatter=0.0)
    for init in tb.narrow_inits:
        init.idle = 0.75
        init.source = traffic.narrow_op
    for init in tb.wide_inits:
        init.idle = 0.0
    feeder = WideFeeder(tb.wide_inits, stream.vector, lockstep=True, limit=v)
    tb.loop.add(feeder, first=True)  # queues a vector before the lanes drive
    await tb.loop.run_until(
        lambda: (
            feeder.issued == v and not any(i.current is not None or i.queue for i in tb.wide_inits)
        ),
        timeout=100 * v,
        what="perf_wide_stream",
    )
    cycles = tb.loop.cycle - feeder.first_cycle + 1
    traffic.enabled = False
    await tb.drain("perf_wide_stream drained")
    tb.check_accounting()
    record = _perf_record(tb, "wide_stream_bg25", cycles, v, tb.wide_inits)
    narrow = [i for i in tb.narrow_inits if i.granted]
    record["narrow_mean_wait"] = round(
        sum(i.wait_sum for i in narrow) / max(sum(i.granted for i in narrow), 1), 3
    )
    write_metrics("perf_wide_stream", record)


def _limited(
    make: Callable[[], ObiTransaction | None], limit: int
) -> Callable[[], ObiTransaction | None]:
    issued = 0

    def source() -> ObiTransaction | None:
        nonlocal issued
        if issued >= limit:
            return None
        issued += 1
        return make()

    return source
