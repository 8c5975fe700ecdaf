"""The OBI models of ``tinyattn.verif.obi`` against each other, on fake ports (no simulator).

An initiator and a target share one port object (each drives its own side),
and the checker watches; broken initiators and targets must be reported with
the port, the cycle and the signal.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from tinyattn.verif.obi import (
    SIGNALS,
    CycleLoop,
    ObiChecker,
    ObiInitiator,
    ObiPort,
    ObiProtocolError,
    ObiTarget,
    ObiTransaction,
    obi_ports,
)


class FakeSignal:
    """Stands in for a cocotb handle: ``.value`` is a plain int."""

    def __init__(self) -> None:
        self.value = 0


def fake_dut(prefix: str, count: int) -> SimpleNamespace:
    dut = SimpleNamespace()
    for i in range(count):
        for sig in SIGNALS:
            setattr(dut, f"{prefix}__{i}__{sig}", FakeSignal())
    return dut


def run(loop: CycleLoop, cycles: int) -> None:
    for _ in range(cycles):
        loop.cycle += 1
        loop.drive_all(loop.cycle)
        loop.sample_all(loop.cycle)


def run_until_idle(loop: CycleLoop, *models: object, limit: int = 10_000) -> None:
    for _ in range(limit):
        if not any(m.busy for m in models):  # type: ignore[attr-defined]
            return
        run(loop, 1)
    raise AssertionError("models still busy")


def test_missing_signal_is_named() -> None:
    with pytest.raises(AttributeError, match=r"OBI port mem\[0\].*'mem__0__gnt'"):
        dut = fake_dut("mem", 1)
        del dut.mem__0__gnt
        obi_ports(dut, "mem", 1)


@pytest.mark.parametrize("latency", [1, 3])
def test_initiator_against_target(latency: int) -> None:
    rng = random.Random(7)
    ports = obi_ports(fake_dut("mem", 3), "mem", 3)
    mem = bytearray(256)
    inits = [ObiInitiator(p, rng=random.Random(i), idle=0.3) for i, p in enumerate(ports)]
    target = ObiTarget(ports, mem, base=0x100, rng=rng, withhold=0.4, latency=latency)
    checker = ObiChecker(ports, latency=latency)
    loop = CycleLoop(clk=None)
    loop.add(target, checker, *inits)
    # Each port writes its own words, then reads them back, byte enables included.
    expected = {}
    submitted: list[list[ObiTransaction]] = [[] for _ in inits]
    for i, init in enumerate(inits):
        for k in range(8):
            addr = 0x100 + 4 * (8 * i + k)
            submitted[i].append(init.write(addr, 0x11111111 * (k + 1), be=0xF))
            submitted[i].append(init.write(addr, 0xAB << 8, be=0b0010))
            expected[addr] = (0x11111111 * (k + 1) & ~0xFF00) | 0xAB00
    reads = [[init.read(0x100 + 4 * (8 * i + k)) for k in range(8)] for i, init in enumerate(inits)]
    for i in range(len(inits)):
        submitted[i] += reads[i]
    run_until_idle(loop, target, *inits)
    checker.finish()
    for i, init in enumerate(inits):
        assert init.completed == 24 and init.granted == 24
        assert list(init.responses) == submitted[i]  # in order, each once
        for txn in reads[i]:
            assert txn.done and txn.rdata == expected[txn.addr]
            assert txn.resp_cycle - txn.grant_cycle == latency
            assert txn.wait >= 0
        cycles = [t.resp_cycle for t in init.responses]
        assert cycles == sorted(cycles) and len(set(cycles)) == len(cycles)
    assert target.accepted == [24, 24, 24]
    assert int.from_bytes(mem[0:4], "little") == expected[0x100]
    assert max(init.wait_max for init in inits) > 0  # withholding did stall


def test_withhold_pattern_and_source() -> None:
    (port,) = obi_ports(fake_dut("p", 1), "p", 1)
    mem = bytearray(64)
    # Grant only on even cycles; the source supplies 5 writes then stops.
    target = ObiTarget([port], mem, withhold=lambda i, cycle: cycle % 2 == 1)
    made = iter(ObiTransaction(4 * k, True, k + 1) for k in range(5))
    init = ObiInitiator(port, source=lambda: next(made, None))
    checker = ObiChecker([port], latency=1, max_wait=1)
    loop = CycleLoop(clk=None)
    loop.add(target, checker, init)
    run(loop, 20)
    checker.finish()
    assert init.granted == 5 and all(t.grant_cycle % 2 == 0 for t in init.responses)
    assert [int.from_bytes(mem[4 * k : 4 * k + 4], "little") for k in range(5)] == [1, 2, 3, 4, 5]


class Scripted:
    """Drives a port's request side from a per-cycle script (to break the protocol)."""

    def __init__(self, port: ObiPort, script: dict[int, tuple[int, int, int]]) -> None:
        self.port = port
        self.ports = [port]
        self.script = script
        port.drives_request = True

    def drive(self, cycle: int) -> None:
        req, addr, wdata = self.script.get(cycle, (0, 0, 0))
        self.port.set("req", req)
        self.port.set("addr", addr)
        self.port.set("we", 1)
        self.port.set("wdata", wdata)

    def sample(self, cycle: int) -> None:
        pass


def _loop_with(script: dict[int, tuple[int, int, int]], **checker_args: object) -> CycleLoop:
    (port,) = obi_ports(fake_dut("core", 1), "core", 1)
    target = ObiTarget([port], bytearray(64), withhold=lambda i, cycle: cycle < 3)
    loop = CycleLoop(clk=None)
    loop.add(target, ObiChecker([port], **checker_args), Scripted(port, script))  # type: ignore[arg-type]
    return loop


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ({1: (1, 8, 5), 2: (1, 12, 5)}, r"core\[0\], cycle 2: addr 0x8 -> 0xc while req waited"),
        ({1: (1, 8, 5), 2: (1, 8, 6)}, r"cycle 2: wdata 0x5 -> 0x6"),
        ({1: (1, 8, 5)}, r"cycle 2: req dropped before gnt \(raised in cycle 1\)"),
        ({1: (1, 6, 5)}, r"cycle 1: addr 0x6 is not word aligned"),
    ],
)
def test_checker_catches_initiator_errors(
    script: dict[int, tuple[int, int, int]], message: str
) -> None:
    loop = _loop_with(script)
    with pytest.raises(ObiProtocolError, match=message):
        run(loop, 5)


def test_checker_enforces_max_wait() -> None:
    loop = _loop_with({c: (1, 8, 5) for c in range(1, 6)}, max_wait=1)
    with pytest.raises(ObiProtocolError, match=r"cycle 2: req waiting since cycle 1: no gnt"):
        run(loop, 5)


class BadTarget:
    """Answers with a chosen latency, or answers twice, or never."""

    def __init__(self, port: ObiPort, mode: str) -> None:
        self.port = port
        self.ports = [port]
        self.mode = mode
        self.due: list[int] = []
        port.drives_response = True

    def drive(self, cycle: int) -> None:
        self.port.set("gnt", 1)
        rvalid = cycle in self.due
        if self.mode == "x_rdata":
            self.port.set("rdata", 0)
            self.port.rdata = None  # what ObiPort.sample records for X bits
        self.port.set("rvalid", int(rvalid))

    def sample(self, cycle: int) -> None:
        if self.port.req and self.port.gnt:
            if self.mode == "late":
                self.due.append(cycle + 2)
            elif self.mode == "twice":
                self.due += [cycle + 1, cycle + 2]
            elif self.mode == "x_rdata":
                self.due.append(cycle + 1)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("late", r"cycle 2: no rvalid 1 cycle\(s\) after the gnt of cycle 1"),
        ("twice", r"cycle 3: rvalid without an outstanding request"),
        ("x_rdata", r"cycle 2: rdata has X or Z bits in the response to the read"),
        ("never", r"cycle 2: no rvalid"),
    ],
)
def test_checker_catches_target_errors(mode: str, message: str) -> None:
    (port,) = obi_ports(fake_dut("lane", 1), "lane", 1)
    init = ObiInitiator(port)
    init.read(0)
    loop = CycleLoop(clk=None)
    loop.add(BadTarget(port, mode), ObiChecker([port], latency=1))
    with pytest.raises(ObiProtocolError, match=message):
        # The initiator last, so that the checker reports before the initiator trips.
        loop.add(init)
        run(loop, 4)


def test_finish_reports_missing_responses() -> None:
    (port,) = obi_ports(fake_dut("lane", 1), "lane", 1)
    init = ObiInitiator(port)
    init.read(0)
    checker = ObiChecker([port])  # no fixed latency: only finish() can tell
    loop = CycleLoop(clk=None)
    loop.add(BadTarget(port, "never"), checker, init)
    run(loop, 3)
    with pytest.raises(
        ObiProtocolError, match=r"lane\[0\]: 1 accepted request\(s\) never answered"
    ):
        checker.finish()


def test_target_rejects_out_of_range() -> None:
    (port,) = obi_ports(fake_dut("m", 1), "m", 1)
    init = ObiInitiator(port)
    init.read(0x40)
    loop = CycleLoop(clk=None)
    loop.add(ObiTarget([port], bytearray(0x40)), init)
    with pytest.raises(ObiProtocolError, match=r"m\[0\], cycle 1: addr 0x40 is outside"):
        run(loop, 2)


def test_target_check_hook_sees_every_accepted_request() -> None:
    """``check`` runs once per accepted request, before it is performed; raising rejects it.

    The DMA bench's rules (a lane's address on its lane, full byte enables) are this hook.
    """
    ports = obi_ports(fake_dut("l1", 2), "l1", 2)
    mem = bytearray(64)
    seen: list[tuple[int, int, int, int]] = []

    def on_its_lane(lane: int, port: ObiPort, cycle: int) -> None:
        seen.append((lane, port.addr, port.we, cycle))
        if (port.addr // 4) % 2 != lane:
            raise AssertionError(f"lane {lane}: address {port.addr:#x} is not on lane {lane}")

    target = ObiTarget(ports, mem, rng=random.Random(3), withhold=0.5, check=on_its_lane)
    inits = [ObiInitiator(p) for p in ports]
    loop = CycleLoop(clk=None)
    loop.add(target, ObiChecker(ports, latency=1), *inits)
    inits[0].write(0x0, 0x12345678)
    inits[1].write(0x4, 0x9ABCDEF0)
    inits[0].read(0x8)
    run_until_idle(loop, target, *inits)
    assert sorted((lane, addr, we) for lane, addr, we, _ in seen) == [
        (0, 0x0, 1),
        (0, 0x8, 0),
        (1, 0x4, 1),
    ]
    assert (target.reads, target.writes) == (1, 2)
    # Performed only after the hook passed: the write that breaks the rule is not applied.
    inits[1].write(0x10, 0xFFFFFFFF)  # word 4 is lane 0's
    with pytest.raises(AssertionError, match=r"lane 1: address 0x10 is not on lane 1"):
        run_until_idle(loop, target, *inits)
    assert mem[0x10:0x14] == bytes(4)
