"""Reusable cocotb 2.x models of OBI ports: initiator driver, target memory, protocol checker.

The port contract is the one of :mod:`tinyattn.hw.obi` (signals ``req``, ``gnt``,
``addr``, ``we``, ``be``, ``wdata``, ``rvalid``, ``rdata``; 32-bit words). In the
Verilog a port is a group of signals ``<prefix>__<signal>``; an Amaranth array
of ports gives ``<prefix>__<i>__<signal>`` (e.g. ``wide__3__req``).
:func:`obi_ports` finds them.

How the pieces fit
------------------
One :class:`CycleLoop` per clock runs every model, so the per-cycle Python work
is one coroutine, not one per port. Each cycle it

1. waits for the falling edge and calls ``drive(cycle)`` on every agent (the
   models write their outputs: an initiator ``req``/``addr``/...; a target
   ``gnt``/``rvalid``/``rdata``);
2. waits for the read-only phase before the rising edge, snapshots every
   :class:`ObiPort` once (:meth:`ObiPort.sample`), and calls ``sample(cycle)`` on
   every agent (they see exactly the values the design sees on that edge).

This drive-after-falling-edge / sample-in-read-only discipline behaves
identically on Icarus and Verilator. An agent is any object with ``drive`` and
``sample`` methods and an optional ``ports`` list; benches add their own (a
scoreboard, a traffic generator) to the same loop.

Cycle numbers count falling edges since the loop was created (the first cycle
run is 1). A handshake ``req & gnt`` sampled in cycle ``c`` is "granted in
``c``"; its response is expected ``latency`` cycles later (1 inside the cluster).

Models
------
- :class:`ObiInitiator`: a queue of :class:`ObiTransaction`; random idle
  cycles between requests; holds ``req`` and the request fields stable until
  ``gnt``; matches responses in order and records wait statistics.
- :class:`ObiTarget`: a memory (a shared ``bytearray``) serving one or many
  ports, with random grant withholding per port and cycle and a fixed response
  latency; stands in for the L1 in front of the engine.
- :class:`ObiChecker`: the protocol checker, one instance for many ports;
  raises :class:`ObiProtocolError` naming the port, cycle and signal.

Example (the engine's wide port against a model L1)::

    loop = CycleLoop(dut.clk)
    lanes = obi_ports(dut, "mem", cfg.engine.port_lanes)
    l1 = ObiTarget(lanes, bytearray(cfg.memory.size_bytes), rng=random.Random(seed),
                   withhold=0.3)
    loop.add(l1, ObiChecker(lanes, latency=1))
    loop.start()      # runs in the background for the rest of the test
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.task import Task
from cocotb.triggers import FallingEdge, ReadOnly

__all__ = [
    "BE_MASKS",
    "CycleAgent",
    "CycleLoop",
    "ObiChecker",
    "ObiInitiator",
    "ObiPort",
    "ObiProtocolError",
    "ObiTarget",
    "ObiTransaction",
    "drive_idle",
    "obi_ports",
]

SIGNALS = ("req", "addr", "we", "be", "wdata", "gnt", "rvalid", "rdata")

#: ``BE_MASKS[be]``: the 32-bit mask of the bytes enabled by ``be``.
BE_MASKS = tuple(sum(0xFF << (8 * i) for i in range(4) if be >> i & 1) for be in range(16))


class ObiProtocolError(AssertionError):
    """A violation of the OBI contract; the message names port, cycle, time and signal."""


def _when(cycle: int) -> str:
    try:
        return f"cycle {cycle} ({get_sim_time('ns'):.0f} ns)"
    except Exception:  # not inside a simulator (unit tests with fake ports)
        return f"cycle {cycle}"


def _fail(port: str, cycle: int, message: str) -> ObiProtocolError:
    return ObiProtocolError(f"OBI port {port}, {_when(cycle)}: {message}")


def _reader(handle: Any) -> Callable[[], int]:
    """A fast integer read of ``handle``; raises ``ValueError`` on X or Z bits.

    cocotb's ``handle.value`` builds a Logic/LogicArray on every read; reading the
    simulator's binary string directly is several times faster, which matters
    with tens of ports sampled every cycle. Falls back to the public API when
    the simulator object is not reachable.
    """
    raw = getattr(handle, "_handle", None)
    getter = getattr(raw, "get_signal_val_binstr", None)
    if getter is None:
        return lambda: int(handle.value)
    return lambda: int(getter(), 2)


@dataclass(slots=True, eq=False)
class ObiTransaction:
    """One OBI request and, once done, its response.

    ``addr`` is a byte address (word aligned); ``be`` and ``wdata`` matter for
    writes only. The models fill in the cycles (see the module docstring for
    their numbering) and ``rdata`` of a read.
    """

    addr: int
    we: bool = False
    wdata: int = 0
    be: int = 0xF
    tag: Any = None
    rdata: int | None = None
    issue_cycle: int = -1
    grant_cycle: int = -1
    resp_cycle: int = -1

    @property
    def done(self) -> bool:
        """The response has arrived."""
        return self.resp_cycle >= 0

    @property
    def wait(self) -> int:
        """Cycles from the first cycle of ``req`` to the cycle of ``gnt`` (0 = at once)."""
        return self.grant_cycle - self.issue_cycle


class ObiPort:
    """The signal handles of one OBI port and their values in the current cycle.

    The attributes ``req``, ``addr``, ``we``, ``be``, ``wdata``, ``gnt``,
    ``rvalid`` and ``rdata`` hold this cycle's values as ints after
    :meth:`sample`. A model that drives one side of the port sets
    ``drives_request`` or ``drives_response``: the values it drove are then
    taken as they were driven, without reading them back. ``gnt`` is only
    meaningful with ``req`` (it is not read while ``req`` is low), and
    ``rdata`` only with ``rvalid``; ``rdata`` is None when it has X or Z bits
    (legal in the response to a write). X or Z on any other signal raises
    :class:`ObiProtocolError`.
    """

    def __init__(self, dut: Any, prefix: str, name: str | None = None) -> None:
        self.name = name or prefix
        self.prefix = prefix
        handles = {}
        for sig in SIGNALS:
            path = f"{prefix}__{sig}"
            try:
                handles[sig] = getattr(dut, path)
            except AttributeError:
                raise AttributeError(
                    f"OBI port {self.name}: the design has no signal {path!r}"
                ) from None
        self.handles = handles
        self._read = {sig: _reader(h) for sig, h in handles.items()}
        self.drives_request = False
        self.drives_response = False
        self.req = self.addr = self.we = self.be = self.wdata = 0
        self.gnt = self.rvalid = 0
        self.rdata: int | None = 0

    def __repr__(self) -> str:
        return f"ObiPort({self.name!r})"

    def set(self, sig: str, value: int) -> None:
        """Drive ``sig`` and record the value (for a model owning that side)."""
        self.handles[sig].value = value
        setattr(self, sig, value)

    def sample(self, cycle: int) -> None:
        """Read this cycle's values (call in the read-only phase)."""
        rd = self._read
        sig = "req"
        try:
            if not self.drives_request:
                self.req = rd["req"]()
                if self.req:
                    sig = "addr"
                    self.addr = rd["addr"]()
                    sig = "we"
                    self.we = rd["we"]()
                    sig = "be"
                    self.be = rd["be"]()
                    sig = "wdata"
                    self.wdata = rd["wdata"]()
            if not self.drives_response:
                sig = "gnt"
                self.gnt = rd["gnt"]() if self.req else 0
                sig = "rvalid"
                self.rvalid = rd["rvalid"]()
                if self.rvalid:
                    try:
                        self.rdata = rd["rdata"]()
                    except ValueError:
                        # Legal in the response to a write; ObiChecker flags it for reads.
                        self.rdata = None
        except ValueError:
            value = self.handles[sig].value
            raise _fail(self.name, cycle, f"{sig} is {value!s} (X or Z)") from None


def obi_ports(dut: Any, prefix: str, count: int | None = None) -> list[ObiPort]:
    """The ports ``<prefix>__0`` .. ``<prefix>__<count-1>`` (an Amaranth array of ports).

    With ``count=None`` a single port ``<prefix>__<signal>`` is returned as a
    one-element list. Ports are named ``prefix[i]`` in error messages.
    """
    if count is None:
        return [ObiPort(dut, prefix)]
    return [ObiPort(dut, f"{prefix}__{i}", name=f"{prefix}[{i}]") for i in range(count)]


class CycleAgent(Protocol):
    """What :class:`CycleLoop` calls every cycle."""

    def drive(self, cycle: int) -> None: ...

    def sample(self, cycle: int) -> None: ...


class CycleLoop:
    """One coroutine per clock that runs all agents (see the module docstring)."""

    def __init__(self, clk: Any) -> None:
        self.clk = clk
        self.cycle = 0
        self.agents: list[CycleAgent] = []
        self.ports: list[ObiPort] = []
        self._task: Task[None] | None = None

    def add(self, *agents: CycleAgent, first: bool = False) -> None:
        """Run ``agents`` every cycle, in the order added; their ``ports`` get sampled.

        With ``first`` they run before the agents added so far: a traffic source
        that queues requests into initiators must drive before them to have its
        requests on the ports in the same cycle.
        """
        if first:
            self.agents[:0] = agents
        else:
            self.agents.extend(agents)
        for agent in agents:
            for port in getattr(agent, "ports", ()):
                if port not in self.ports:
                    self.ports.append(port)

    async def step(self) -> None:
        """Run one cycle: drive after the falling edge, sample in the read-only phase."""
        await FallingEdge(self.clk)
        await self.finish_cycle()

    async def finish_cycle(self) -> None:
        """Run the cycle whose falling edge the caller has just awaited (a bench that woke
        on that edge and found work)."""
        self.cycle += 1
        self.drive_all(self.cycle)
        await ReadOnly()
        self.sample_all(self.cycle)

    def drive_all(self, cycle: int) -> None:
        """The drive phase of ``cycle``: every agent's ``drive``."""
        for agent in self.agents:
            agent.drive(cycle)

    def sample_all(self, cycle: int) -> None:
        """The sample phase of ``cycle``: snapshot every port, then every agent's ``sample``."""
        for port in self.ports:
            port.sample(cycle)
        for agent in self.agents:
            agent.sample(cycle)

    async def run(self, cycles: int) -> None:
        """Run ``cycles`` cycles in the calling coroutine."""
        for _ in range(cycles):
            await self.step()

    async def run_until(self, done: Callable[[], bool], *, timeout: int, what: str) -> int:
        """Run until ``done()`` is true after a cycle; return the cycles run.

        Raises ``AssertionError`` naming ``what`` after ``timeout`` cycles.
        """
        start = self.cycle
        while not done():
            if self.cycle - start >= timeout:
                raise AssertionError(f"timeout: {what} not reached after {timeout} cycles")
            await self.step()
        return self.cycle - start

    def start(self) -> Task[None]:
        """Run forever in a background task (for benches whose own coroutine drives the DUT)."""

        async def forever() -> None:
            while True:
                await self.step()

        if self._task is None:
            self._task = cocotb.start_soon(forever())
        return self._task

    def stop(self) -> None:
        """Cancel the background task started by :meth:`start`."""
        if self._task is not None:
            self._task.cancel()
            self._task = None


class ObiInitiator:
    """Drives one OBI port from a queue of transactions.

    Parameters
    ----------
    port : the port to drive (its request side).
    rng : random source for the idle cycles (default ``random.Random(0)``).
    idle : probability, per cycle, of not starting the next queued request.
    source : called when the queue is empty and a request could start; returns
        the next transaction or None. Lets long benches generate on the fly.
    collect : keep completed transactions in :attr:`responses` (in order).

    A request starts in a cycle (``issue_cycle``), stays on the port unchanged
    until granted (``grant_cycle``) and completes with the next ``rvalid``
    (``resp_cycle``; ``rdata`` of a read is filled in). The next request can
    start in the cycle after the grant, before the response. Statistics:
    ``granted``, ``completed``, ``wait_sum``, ``wait_max`` (see
    :attr:`ObiTransaction.wait`).
    """

    def __init__(
        self,
        port: ObiPort,
        *,
        rng: random.Random | None = None,
        idle: float = 0.0,
        source: Callable[[], ObiTransaction | None] | None = None,
        collect: bool = True,
        on_grant: Callable[[ObiTransaction], None] | None = None,
        on_response: Callable[[ObiTransaction], None] | None = None,
    ) -> None:
        self.port = port
        self.ports = [port]
        self.rng = rng or random.Random(0)
        self.idle = idle
        self.source = source
        self.collect = collect
        self.on_grant = on_grant
        self.on_response = on_response
        self.queue: deque[ObiTransaction] = deque()
        self.current: ObiTransaction | None = None
        self.outstanding: deque[ObiTransaction] = deque()
        self.responses: deque[ObiTransaction] = deque()
        self.granted = 0
        self.completed = 0
        self.wait_sum = 0
        self.wait_max = 0
        port.drives_request = True
        port.set("req", 0)

    # -- queueing ----------------------------------------------------------------

    def submit(self, txn: ObiTransaction) -> ObiTransaction:
        """Queue ``txn``; returns it (its fields fill in as it progresses)."""
        if txn.addr & 3:
            raise ValueError(f"{self.port.name}: address {txn.addr:#x} is not word aligned")
        self.queue.append(txn)
        return txn

    def read(self, addr: int, *, tag: Any = None) -> ObiTransaction:
        """Queue a read of the word at byte address ``addr``."""
        return self.submit(ObiTransaction(addr, False, tag=tag))

    def write(self, addr: int, data: int, be: int = 0xF, *, tag: Any = None) -> ObiTransaction:
        """Queue a write of ``data`` under byte enables ``be`` to byte address ``addr``."""
        return self.submit(ObiTransaction(addr, True, data & 0xFFFFFFFF, be, tag=tag))

    @property
    def busy(self) -> bool:
        """Requests queued, on the port, or waiting for their response."""
        return bool(self.queue or self.current is not None or self.outstanding)

    @property
    def wait_mean(self) -> float:
        """Mean wait of the granted requests, in cycles."""
        return self.wait_sum / self.granted if self.granted else 0.0

    def reset_stats(self) -> None:
        """Zero ``granted``, ``completed``, ``wait_sum`` and ``wait_max``."""
        self.granted = self.completed = self.wait_sum = self.wait_max = 0

    # -- agent -------------------------------------------------------------------

    def drive(self, cycle: int) -> None:
        port = self.port
        if self.current is None:
            txn = None
            if self.idle == 0.0 or self.rng.random() >= self.idle:
                if self.queue:
                    txn = self.queue.popleft()
                elif self.source is not None:
                    txn = self.source()
            if txn is not None:
                txn.issue_cycle = cycle
                self.current = txn
                port.set("addr", txn.addr)
                port.set("we", int(txn.we))
                port.set("be", txn.be)
                port.set("wdata", txn.wdata)
                if not port.req:
                    port.set("req", 1)
            elif port.req:
                port.set("req", 0)

    def sample(self, cycle: int) -> None:
        port = self.port
        # Responses belong to requests granted in earlier cycles: handle them first.
        if port.rvalid:
            if not self.outstanding:
                raise _fail(port.name, cycle, "rvalid without an outstanding request")
            txn = self.outstanding.popleft()
            txn.resp_cycle = cycle
            if not txn.we:
                txn.rdata = port.rdata
            self.completed += 1
            if self.collect:
                self.responses.append(txn)
            if self.on_response is not None:
                self.on_response(txn)
        txn = self.current
        if txn is not None and port.gnt:
            txn.grant_cycle = cycle
            wait = cycle - txn.issue_cycle
            self.wait_sum += wait
            if wait > self.wait_max:
                self.wait_max = wait
            self.granted += 1
            self.outstanding.append(txn)
            self.current = None
            if self.on_grant is not None:
                self.on_grant(txn)


class ObiTarget:
    """A memory behind one or many OBI ports, with random grant withholding.

    Parameters
    ----------
    ports : the ports to serve (their response side is driven).
    mem : the contents, shared by all ports; byte ``i`` is address ``base + i``,
        words are little endian.
    base : byte address of ``mem[0]``.
    rng : random source for withholding (default ``random.Random(0)``).
    withhold : probability that ``gnt`` is low for a port in a cycle, either one
        float for all ports, or a callable ``(port_index, cycle) -> bool`` (True =
        withhold) for deterministic patterns.
    latency : cycles from ``gnt`` to ``rvalid`` (fixed; 1 as in the L1).
    check : called as ``check(port_index, port, cycle)`` for every accepted request
        (``req & gnt``) before it is performed; raises to reject it. Benches add
        their own rules here (a DMA lane's address on its lane, full byte enables,
        reads only of a transfer's source).

    ``gnt`` is driven independently of ``req`` (OBI allows ``gnt`` without
    ``req``; the handshake is ``req & gnt``). A read returns the contents at its
    grant cycle, before the writes granted in the same cycle; writes of one
    cycle apply in port order. An address outside ``mem`` or not word aligned
    raises :class:`ObiProtocolError`. ``accepted[i]`` counts port ``i``'s requests;
    ``reads`` and ``writes`` count them by kind over all ports.
    """

    def __init__(
        self,
        ports: Sequence[ObiPort],
        mem: bytearray,
        *,
        base: int = 0,
        rng: random.Random | None = None,
        withhold: float | Callable[[int, int], bool] = 0.0,
        latency: int = 1,
        check: Callable[[int, ObiPort, int], None] | None = None,
    ) -> None:
        if latency < 1:
            raise ValueError(f"latency = {latency}: OBI responses come at least 1 cycle after gnt")
        self.ports = list(ports)
        self.mem = mem
        self.base = base
        self.rng = rng or random.Random(0)
        self.withhold = withhold
        self.latency = latency
        self.check = check
        self.accepted = [0] * len(self.ports)
        self.reads = 0
        self.writes = 0
        self._pending: list[deque[tuple[int, int]]] = [deque() for _ in self.ports]
        for port in self.ports:
            port.drives_response = True
            port.set("gnt", 0)
            port.set("rvalid", 0)
            port.set("rdata", 0)

    def drive(self, cycle: int) -> None:
        withhold, rng = self.withhold, self.rng
        for i, port in enumerate(self.ports):
            if callable(withhold):
                gnt = 0 if withhold(i, cycle) else 1
            else:
                gnt = 0 if withhold and rng.random() < withhold else 1
            if gnt != port.gnt:
                port.set("gnt", gnt)
            pending = self._pending[i]
            if pending and pending[0][0] == cycle:
                _, data = pending.popleft()
                port.set("rvalid", 1)
                port.set("rdata", data)
            elif port.rvalid:
                port.set("rvalid", 0)

    def sample(self, cycle: int) -> None:
        mem, base = self.mem, self.base
        writes = []
        for i, port in enumerate(self.ports):
            if not (port.req and port.gnt):
                continue
            offset = port.addr - base
            if port.addr & 3 or not 0 <= offset <= len(mem) - 4:
                raise _fail(
                    port.name,
                    cycle,
                    f"addr {port.addr:#x} is outside the target memory "
                    f"[{base:#x}, {base + len(mem):#x}) or not word aligned",
                )
            if self.check is not None:
                self.check(i, port, cycle)
            self.accepted[i] += 1
            data = 0
            if port.we:
                writes.append((offset, port.be, port.wdata))
                self.writes += 1
            else:
                data = int.from_bytes(mem[offset : offset + 4], "little")
                self.reads += 1
            self._pending[i].append((cycle + self.latency, data))
        for offset, be, wdata in writes:
            for k in range(4):
                if be >> k & 1:
                    mem[offset + k] = wdata >> (8 * k) & 0xFF

    @property
    def busy(self) -> bool:
        """Responses still to be sent."""
        return any(self._pending)


class _CheckState:
    __slots__ = ("accepted", "longest", "outstanding", "responses", "waiting", "waiting_since")

    def __init__(self) -> None:
        self.waiting: tuple[int, int, int, int] | None = None
        self.waiting_since = 0
        self.longest = 0  # the longest wait for gnt seen (cycles)
        self.outstanding: deque[tuple[int, int]] = deque()  # (grant cycle, we)
        self.accepted = 0
        self.responses = 0


class ObiChecker:
    """OBI protocol checker for many ports; raises :class:`ObiProtocolError`.

    Checks, every cycle and for every port:

    - ``addr`` is word aligned while ``req`` is high;
    - once ``req`` is high it stays high, with ``addr``, ``we``, ``be`` and
      ``wdata`` unchanged, until ``gnt``;
    - every ``rvalid`` answers an accepted request (none lost, none extra), and
      ``rdata`` has no X or Z bits when it answers a read;
    - with ``latency`` set, ``rvalid`` comes exactly ``latency`` cycles after
      ``gnt``;
    - with ``max_wait`` set (one int, or one per port), no request waits more
      than that many cycles for ``gnt`` (see :attr:`ObiTransaction.wait`); the
      longest wait seen per port is :attr:`longest_wait`.

    :meth:`finish` checks that no response is missing at the end of a test.
    """

    def __init__(
        self,
        ports: Sequence[ObiPort],
        *,
        latency: int | None = None,
        max_wait: int | Sequence[int] | None = None,
    ) -> None:
        self.ports = list(ports)
        self.latency = latency
        if max_wait is None or isinstance(max_wait, int):
            self.max_wait: list[int | None] = [max_wait] * len(self.ports)
        else:
            if len(max_wait) != len(self.ports):
                raise ValueError(
                    f"max_wait has {len(max_wait)} entries for {len(self.ports)} ports"
                )
            self.max_wait = list(max_wait)
        self.state = [_CheckState() for _ in self.ports]

    def drive(self, cycle: int) -> None:
        pass

    def sample(self, cycle: int) -> None:
        latency = self.latency
        for port, st, max_wait in zip(self.ports, self.state, self.max_wait, strict=True):
            if port.rvalid:
                if not st.outstanding:
                    raise _fail(port.name, cycle, "rvalid without an outstanding request")
                granted, was_write = st.outstanding.popleft()
                if not was_write and port.rdata is None:
                    raise _fail(
                        port.name,
                        cycle,
                        f"rdata has X or Z bits in the response to the read granted in "
                        f"cycle {granted}",
                    )
                if latency is not None and cycle - granted != latency:
                    raise _fail(
                        port.name,
                        cycle,
                        f"rvalid {cycle - granted} cycles after the gnt of cycle {granted}, "
                        f"the latency is {latency}",
                    )
                st.responses += 1
            if latency is not None and st.outstanding and st.outstanding[0][0] + latency <= cycle:
                raise _fail(
                    port.name,
                    cycle,
                    f"no rvalid {latency} cycle(s) after the gnt of cycle {st.outstanding[0][0]}",
                )
            if st.waiting is not None:
                if not port.req:
                    raise _fail(
                        port.name,
                        cycle,
                        f"req dropped before gnt (raised in cycle {st.waiting_since})",
                    )
                now = (port.addr, port.we, port.be, port.wdata)
                if now != st.waiting:
                    changed = [
                        f"{sig} {old:#x} -> {new:#x}"
                        for sig, old, new in zip(
                            ("addr", "we", "be", "wdata"), st.waiting, now, strict=True
                        )
                        if old != new
                    ]
                    raise _fail(
                        port.name,
                        cycle,
                        f"{', '.join(changed)} while req waited for gnt "
                        f"(since cycle {st.waiting_since})",
                    )
            if port.req:
                if port.addr & 3:
                    raise _fail(port.name, cycle, f"addr {port.addr:#x} is not word aligned")
                if port.gnt:
                    st.outstanding.append((cycle, port.we))
                    st.accepted += 1
                    if st.waiting is not None and cycle - st.waiting_since > st.longest:
                        st.longest = cycle - st.waiting_since
                    st.waiting = None
                else:
                    if st.waiting is None:
                        st.waiting = (port.addr, port.we, port.be, port.wdata)
                        st.waiting_since = cycle
                    if max_wait is not None and cycle - st.waiting_since >= max_wait:
                        raise _fail(
                            port.name,
                            cycle,
                            f"req waiting since cycle {st.waiting_since}: no gnt within "
                            f"{max_wait} cycles (the bound)",
                        )
            else:
                st.waiting = None

    def finish(self) -> None:
        """Raise if a port still waits for a response or for ``gnt``."""
        for port, st in zip(self.ports, self.state, strict=True):
            if st.outstanding:
                raise ObiProtocolError(
                    f"OBI port {port.name}: {len(st.outstanding)} accepted request(s) "
                    f"never answered (granted in cycle {st.outstanding[0][0]} and later)"
                )

    @property
    def accepted(self) -> list[int]:
        """Accepted requests per port."""
        return [st.accepted for st in self.state]

    @property
    def longest_wait(self) -> list[int]:
        """The longest wait for ``gnt`` seen per port (cycles, 0 = always granted at once)."""
        return [st.longest for st in self.state]


def drive_idle(ports: Iterable[ObiPort]) -> None:
    """Drive ``req = 0`` on every port (e.g. before reset)."""
    for port in ports:
        port.set("req", 0)
